/* Unit tests for dsnparam (issue 18): xtext both ways, and each RFC 3461
 * parameter's syntax, table-driven: {input, want ok, want decoded}. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "msg/dsnparam.h"

struct text_case {
    const char *in;
    bool ok;
    const char *want;
};

static void
test_xtext_decode(void **state)
{
    static const struct text_case cases[] = {
        {"abc", true, "abc"},     {"a+2Bb", true, "a+b"},
        {"+3D+20x", true, "= x"}, {"+7E", true, "~"},
        {"", true, ""},           {"a+2b", false, NULL}, /* RFC 3461 4: hexchar is upper case */
        {"a+2", false, NULL},                            /* cut short */
        {"a+", false, NULL},      {"a+G0", false, NULL},
        {"a=b", false, NULL},                               /* '=' must be encoded */
        {"a b", false, NULL},                               /* SP must be encoded */
        {"a+0Ab", false, NULL},                             /* decodes to a control */
        {"a+7F", false, NULL},    {"a+C3+A9", false, NULL}, /* not ASCII */
        {"a\x80", false, NULL},
    };
    char out[64];
    size_t len;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = dsn_xtext_decode(cases[i].in, strlen(cases[i].in), out, sizeof(out), &len);

        print_message("xtext %s\n", cases[i].in);
        assert_int_equal(rc == 0, cases[i].ok);
        if (cases[i].ok) {
            assert_string_equal(out, cases[i].want);
            assert_int_equal(len, strlen(cases[i].want));
        }
    }
    /* no room: refused, never cut */
    assert_int_not_equal(dsn_xtext_decode("abcdef", 6, out, 6, &len), 0);
    assert_int_equal(dsn_xtext_decode("abcdef", 6, out, 7, &len), 0);
}

static void
test_xtext_encode(void **state)
{
    char out[64], back[64];
    const char *s = "a+b=c d\x01~";

    (void)state;
    assert_int_equal(dsn_xtext_encode(s, strlen(s), out, sizeof(out)), strlen("a+2Bb+3Dc+20d+01~"));
    assert_string_equal(out, "a+2Bb+3Dc+20d+01~");
    assert_int_equal(dsn_xtext_encode("ab", 2, out, 3), 2);
    assert_int_equal(dsn_xtext_encode("a+", 2, out, 4), 0); /* "a+2B" needs 5 */
    assert_int_equal(dsn_xtext_encode("", 0, out, sizeof(out)), 0);
    /* round trip of every printable octet */
    for (int c = 0x20; c < 0x7f; c++) {
        char one = (char)c;
        size_t n = dsn_xtext_encode(&one, 1, out, sizeof(out));

        assert_true(n == 1 || n == 3);
        assert_int_equal(dsn_xtext_decode(out, n, back, sizeof(back), NULL), 0);
        assert_int_equal(back[0], one);
    }
}

static void
test_notify(void **state)
{
    static const struct {
        const char *in;
        bool ok;
        unsigned want;
    } cases[] = {
        {"NEVER", true, DSN_NOTIFY_NEVER},
        {"never", true, DSN_NOTIFY_NEVER},
        {"SUCCESS", true, DSN_NOTIFY_SUCCESS},
        {"FAILURE,DELAY", true, DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY},
        {"delay,Success,FAILURE", true, DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY},
        {"", false, 0},
        {"NEVER,SUCCESS", false, 0},
        {"SUCCESS,NEVER", false, 0},
        {"SUCCESS,", false, 0},
        {",SUCCESS", false, 0},
        {"SUCCESS,,DELAY", false, 0},
        {"DELAY,DELAY", false, 0},
        {"SUCCESS DELAY", false, 0},
        {"ALWAYS", false, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned bits = 99;
        int rc = dsn_notify_parse(cases[i].in, strlen(cases[i].in), &bits);

        print_message("notify %s\n", cases[i].in);
        assert_int_equal(rc == 0, cases[i].ok);
        if (cases[i].ok)
            assert_int_equal(bits, cases[i].want);
        else
            assert_int_equal(bits, 99); /* untouched */
    }
    assert_string_equal(dsn_notify_name(DSN_NOTIFY_NEVER), "NEVER");
    assert_string_equal(dsn_notify_name(DSN_NOTIFY_DELAY | DSN_NOTIFY_SUCCESS), "SUCCESS,DELAY");
    assert_string_equal(dsn_notify_name(0), "");
}

static void
test_ret_envid(void **state)
{
    enum dsn_ret r = DSN_RET_NONE;
    char out[DSN_ENVID_MAX + 1];
    char big[DSN_ENVID_MAX + 2];

    (void)state;
    assert_int_equal(dsn_ret_parse("hdrs", 4, &r), 0);
    assert_int_equal(r, DSN_RET_HDRS);
    assert_int_equal(dsn_ret_parse("FULL", 4, &r), 0);
    assert_int_equal(r, DSN_RET_FULL);
    assert_int_not_equal(dsn_ret_parse("FUL", 3, &r), 0);
    assert_int_not_equal(dsn_ret_parse("", 0, &r), 0);
    assert_int_equal(dsn_envid_parse("QQ+2B1", 6, out, sizeof(out)), 0);
    assert_string_equal(out, "QQ+1");
    assert_int_not_equal(dsn_envid_parse("", 0, out, sizeof(out)), 0);
    memset(big, 'x', sizeof(big));
    assert_int_equal(dsn_envid_parse(big, DSN_ENVID_MAX, out, sizeof(out)), 0);
    assert_int_not_equal(dsn_envid_parse(big, DSN_ENVID_MAX + 1, out, sizeof(out)), 0);
    assert_int_not_equal(dsn_envid_parse("a b", 3, out, sizeof(out)), 0);
}

static void
test_orcpt(void **state)
{
    static const struct text_case cases[] = {
        {"rfc822;a@b.test", true, "rfc822;a@b.test"},
        {"RFC822;a+2Bx@b.test", true, "rfc822;a+x@b.test"},
        {"x-local;anything", true, "x-local;anything"},
        {"utf-8;j\xc3\xb6rg@b.test", true, "utf-8;j\xc3\xb6rg@b.test"},
        {"utf-8;j\\x{F6}rg@b.test", true, "utf-8;j\\x{F6}rg@b.test"},
        {"a@b.test", false, NULL},
        {";a@b.test", false, NULL},
        {"rfc822;", false, NULL},
        {"rfc 822;a@b", false, NULL},
        {"rfc822;a+4@b", false, NULL},
        {"rfc822;a=b", false, NULL},
        {"rfc822;\xc3\xb6@b", false, NULL}, /* raw UTF-8 only in utf-8 */
        {"utf-8;a\\x{}b", false, NULL},
        {"utf-8;a\\x{1234567}b", false, NULL},
        {"utf-8;a\\xb", false, NULL},
        {"utf-8;a+b", false, NULL},
        {"utf-8;\xc3", false, NULL},
        {"utf-8;", false, NULL},
    };
    char out[DSN_ORCPT_MAX + 1], big[DSN_ORCPT_MAX + 2];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = dsn_orcpt_parse(cases[i].in, strlen(cases[i].in), out, sizeof(out));

        print_message("orcpt %s\n", cases[i].in);
        assert_int_equal(rc == 0, cases[i].ok);
        if (cases[i].ok)
            assert_string_equal(out, cases[i].want);
    }
    memcpy(big, "rfc822;", 7);
    memset(big + 7, 'x', sizeof(big) - 7);
    assert_int_equal(dsn_orcpt_parse(big, DSN_ORCPT_MAX, out, sizeof(out)), 0);
    assert_int_not_equal(dsn_orcpt_parse(big, DSN_ORCPT_MAX + 1, out, sizeof(out)), 0);
}

static void
test_orcpt_format(void **state)
{
    char out[128];

    (void)state;
    /* built from the recipient when the sender gave none, as Postfix */
    assert_int_equal(dsn_orcpt_format(NULL, "a+b@c.test", out, sizeof(out)),
                     strlen("rfc822;a+2Bb@c.test"));
    assert_string_equal(out, "rfc822;a+2Bb@c.test");
    assert_true(dsn_orcpt_format("", "j\xc3\xb6rg@c.test", out, sizeof(out)) > 0);
    assert_string_equal(out, "utf-8;j\xc3\xb6rg@c.test");
    assert_true(dsn_orcpt_format("rfc822;x=y@c.test", "a@c.test", out, sizeof(out)) > 0);
    assert_string_equal(out, "rfc822;x+3Dy@c.test");
    assert_true(dsn_orcpt_format("utf-8;j\\x{F6}rg@c.test", "a@c.test", out, sizeof(out)) > 0);
    assert_string_equal(out, "utf-8;j\\x{F6}rg@c.test");
    assert_int_equal(dsn_orcpt_format(NULL, "a@c.test", out, 10), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xtext_decode), cmocka_unit_test(test_xtext_encode),
        cmocka_unit_test(test_notify),       cmocka_unit_test(test_ret_envid),
        cmocka_unit_test(test_orcpt),        cmocka_unit_test(test_orcpt_format),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
