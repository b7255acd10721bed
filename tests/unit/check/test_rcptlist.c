/* Unit tests for rcptlist: a recipients_source file's lines and an LDAP
 * attribute's values, validated and packed (issue 18). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "check/rcptlist.h"

static void
test_rcptlist_valid(void **state)
{
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"alice@example.org", true},
        {"@example.org", true},
        {"\"a@b\"@example.org", true},
        {"a.b+tag@sub.example.org", true},
        {"user@xn--bcher-kva.example", true},
        {"", false},
        {"alice", false},
        {"alice@", false},
        {"alice@example..org", false},
        {"alice@.example.org", false},
        {"alice@example.org.", false},
        {"al ice@example.org", false},
        {"<alice@example.org>", false},
        {"alice@exa$mple.org", false},
        {"a@b,c@d", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(rcptlist_valid(cases[i].s, strlen(cases[i].s)), cases[i].ok);
}

static void
test_rcptlist_parse(void **state)
{
    const char *text = "# users\n\nalice@example.org\n  Bob@Example.org \r\n@catch.example\n";
    struct rcptlist l;
    char err[128] = "";
    const char *p;

    (void)state;
    rcptlist_init(&l);
    assert_int_equal(rcptlist_parse(&l, text, strlen(text), err, sizeof(err)), 0);
    assert_int_equal(l.n, 3);
    p = l.buf;
    assert_string_equal(p, "alice@example.org");
    p += strlen(p) + 1;
    assert_string_equal(p, "Bob@Example.org");
    p += strlen(p) + 1;
    assert_string_equal(p, "@catch.example");
    rcptlist_free(&l);
}

static void
test_rcptlist_broken(void **state)
{
    static const struct {
        const char *text, *err;
    } cases[] = {
        {"", "empty file"},
        {"alice@example.org", "no newline at the end"},
        {"alice@example.org\nbob\n", "line 2: not an address"},
        {"# only\n\nnot an address\n", "line 3: not an address"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rcptlist l;
        char err[128] = "";

        rcptlist_init(&l);
        assert_int_equal(rcptlist_parse(&l, cases[i].text, strlen(cases[i].text), err, sizeof(err)),
                         MXD_EINVAL);
        assert_non_null(strstr(err, cases[i].err));
        rcptlist_free(&l);
    }
}

static void
test_rcptlist_digest(void **state)
{
    struct rcptlist a, b;
    char da[17], db[17];

    (void)state;
    rcptlist_init(&a);
    rcptlist_init(&b);
    assert_int_equal(rcptlist_add(&a, "x@example.org", 13), 0);
    assert_int_equal(rcptlist_add(&b, "x@example.org", 13), 0);
    rcptlist_digest(&a, da);
    rcptlist_digest(&b, db);
    assert_string_equal(da, db);
    assert_int_equal(rcptlist_add(&b, "y@example.org", 13), 0);
    rcptlist_digest(&b, db);
    assert_string_not_equal(da, db);
    assert_int_equal(rcptlist_add(&b, "nope", 4), MXD_EINVAL);
    assert_int_equal(b.n, 2);
    rcptlist_free(&a);
    rcptlist_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rcptlist_valid),
        cmocka_unit_test(test_rcptlist_parse),
        cmocka_unit_test(test_rcptlist_broken),
        cmocka_unit_test(test_rcptlist_digest),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
