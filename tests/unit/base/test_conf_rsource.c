/* Unit tests for conf_rsource: recipients_source values, file: and
 * ldap:// URLs (RFC 4516), parsed or refused with a reason (issue 18). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/conf_value.h"

static void
test_rsource_good(void **state)
{
    struct conf_rsource r;
    const char *why = NULL;

    (void)state;
    memset(&r, 0, sizeof(r));
    assert_int_equal(conf__parse_rsource("file:/etc/mxd/users", NULL, &r, &why), 0);
    assert_false(r.ldap);
    assert_string_equal(r.path, "/etc/mxd/users");
    assert_string_equal(r.text, "file:/etc/mxd/users");
    assert_int_equal(conf__parse_rsource("ldap://ldap.example.org/ou=people,dc=example,dc=org"
                                         "?mail?sub?(%26(objectClass=inetOrgPerson)(mail=*))",
                                         NULL, &r, &why),
                     0);
    assert_true(r.ldap);
    assert_null(r.path);
    assert_string_equal(r.host, "ldap.example.org");
    assert_int_equal(r.port, 389);
    assert_string_equal(r.base, "ou=people,dc=example,dc=org");
    assert_string_equal(r.attr, "mail");
    assert_int_equal(r.scope, CONF_LDAP_SUB);
    assert_string_equal(r.filter, "(&(objectClass=inetOrgPerson)(mail=*))");
    assert_int_equal(conf__parse_rsource("ldap://[::1]:3389/dc=x?mail", NULL, &r, &why), 0);
    assert_string_equal(r.host, "::1");
    assert_int_equal(r.port, 3389);
    assert_int_equal(r.scope, CONF_LDAP_BASE); /* RFC 4516: the default */
    assert_string_equal(r.filter, "(objectClass=*)");
    assert_int_equal(conf__parse_rsource("ldap://127.0.0.1:1/?mail?one", NULL, &r, &why), 0);
    assert_string_equal(r.base, "");
    assert_int_equal(r.scope, CONF_LDAP_ONE);
    conf__rsource_free(&r);
}

static void
test_rsource_bad(void **state)
{
    static const struct {
        const char *s, *why;
    } cases[] = {
        {"/etc/users", "want file:/path"},
        {"file:users", "absolute path"},
        {"file:", "absolute path"},
        {"ldaps://h/dc=x?mail", "want file:/path"},
        {"ldap://", "needs a host"},
        {"ldap:///dc=x?mail", "needs a host"},
        {"ldap://h", "needs /base"},
        {"ldap://h:0/dc=x?mail", "bad LDAP port"},
        {"ldap://h:65536/dc=x?mail", "bad LDAP port"},
        {"ldap://h:/dc=x?mail", "bad LDAP port"},
        {"ldap://[::1/dc=x?mail", "unclosed ["},
        {"ldap://bad_host!/dc=x?mail", "bad LDAP host"},
        {"ldap://h/dc=x", "one attribute"},
        {"ldap://h/dc=x?mail,cn", "one attribute"},
        {"ldap://h/dc=x?mail?deep", "LDAP scope"},
        {"ldap://h/dc=x?mail?sub?mail=*", "bad LDAP filter"},
        {"ldap://h/dc=x?mail?sub?(mail=*))", "bad LDAP filter"},
        {"ldap://h/dc=x?mail?sub?(a=b)(c=d)", "bad LDAP filter"},
        {"ldap://h/dc=x?mail?sub?(a=b)?!bindname=x", "extensions"},
        {"ldap://h/dc=%4?mail", "%-escape"},
        {"ldap://h/dc=%00?mail", "%-escape"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf_rsource r;
        const char *why = NULL;

        memset(&r, 0, sizeof(r));
        assert_int_equal(conf__parse_rsource(cases[i].s, NULL, &r, &why), MXD_EINVAL);
        assert_non_null(why);
        if (strstr(why, cases[i].why) == NULL)
            fail_msg("%s: got '%s', want '%s'", cases[i].s, why, cases[i].why);
        assert_null(r.text);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsource_good),
        cmocka_unit_test(test_rsource_bad),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
