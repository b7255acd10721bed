/* Unit tests for the pure parts of DMARC and DKIM (table-driven):
 * dmarc_record.c (RFC 7489 6.3, 6.4, 6.6.3 step 6, 6.6.4), psl.c (the
 * public suffix algorithm on a small list) and dkim_body.c (the canonical
 * body lengths of RFC 6376 3.4.3 and 3.4.4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/util.h"
#include "check/dkim_body.h"
#include "check/dmarc_record.h"
#include "check/psl.h"

struct rec_case {
    const char *name, *txt;
    bool dmarc;                  /* dmarc_record_is_dmarc */
    int rc;                      /* dmarc_record_parse */
    const char *formatted;       /* when rc is 0 */
    enum dmarc_policy fail, sub; /* the policy for the domain, for a subdomain (sample 0) */
};

static const struct rec_case rec_cases[] = {
    {"minimal", "v=DMARC1; p=reject", true, 0, "v=DMARC1; p=reject; adkim=r; aspf=r",
     DMARC_P_REJECT, DMARC_P_REJECT},
    {"no space", "v=DMARC1;p=none", true, 0, "v=DMARC1; p=none; adkim=r; aspf=r", DMARC_P_NONE,
     DMARC_P_NONE},
    {"WSP around = and ;", "v = DMARC1 ; p = quarantine ;", true, 0,
     "v=DMARC1; p=quarantine; adkim=r; aspf=r", DMARC_P_QUARANTINE, DMARC_P_QUARANTINE},
    {"tag name case", "V=DMARC1; P=Reject; SP=None", true, 0,
     "v=DMARC1; p=reject; adkim=r; aspf=r; sp=none", DMARC_P_REJECT, DMARC_P_NONE},
    {"strict", "v=DMARC1; p=reject; adkim=s; aspf=s", true, 0,
     "v=DMARC1; p=reject; adkim=s; aspf=s", DMARC_P_REJECT, DMARC_P_REJECT},
    {"unknown tags ignored", "v=DMARC1; x=1; p=reject; foo", true, 0,
     "v=DMARC1; p=reject; adkim=r; aspf=r", DMARC_P_REJECT, DMARC_P_REJECT},
    {"pct 0", "v=DMARC1; p=reject; pct=0", true, 0, "v=DMARC1; p=reject; adkim=r; aspf=r",
     DMARC_P_QUARANTINE, DMARC_P_QUARANTINE},
    {"pct over 100 ignored", "v=DMARC1; p=reject; pct=101", true, 0,
     "v=DMARC1; p=reject; adkim=r; aspf=r", DMARC_P_REJECT, DMARC_P_REJECT},
    {"bad adkim ignored", "v=DMARC1; p=reject; adkim=x", true, 0,
     "v=DMARC1; p=reject; adkim=r; aspf=r", DMARC_P_REJECT, DMARC_P_REJECT},
    {"p prefix (libopendmarc took it)", "v=DMARC1; p=rej", true, MXD_EINVAL, NULL, 0, 0},
    {"no p", "v=DMARC1; sp=reject", true, MXD_EINVAL, NULL, 0, 0},
    {"bad sp", "v=DMARC1; p=reject; sp=bogus", true, MXD_EINVAL, NULL, 0, 0},
    {"no p, rua: p=none (6.6.3 6.1)", "v=DMARC1; rua=mailto:a@b.example", true, 0,
     "v=DMARC1; p=none; adkim=r; aspf=r", DMARC_P_NONE, DMARC_P_NONE},
    {"no p, rua not a URI", "v=DMARC1; rua=nothing", true, MXD_EINVAL, NULL, 0, 0},
    {"version not first", "p=reject; v=DMARC1", false, MXD_EINVAL, NULL, 0, 0},
    {"version value case", "v=dmarc1; p=reject", false, MXD_EINVAL, NULL, 0, 0},
    {"version DMARC10", "v=DMARC10; p=reject", false, MXD_EINVAL, NULL, 0, 0},
    {"version alone", "v=DMARC1", true, MXD_EINVAL, NULL, 0, 0},
    {"spf record", "v=spf1 -all", false, MXD_EINVAL, NULL, 0, 0},
    {"empty", "", false, MXD_EINVAL, NULL, 0, 0},
};

static void
test_records(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rec_cases) / sizeof(rec_cases[0]); i++) {
        const struct rec_case *c = &rec_cases[i];
        struct dmarc_record r;
        const char *why = NULL;
        char buf[128];
        int rc;

        print_message("%s\n", c->name);
        assert_int_equal(dmarc_record_is_dmarc(c->txt, strlen(c->txt)), c->dmarc);
        rc = dmarc_record_parse(c->txt, strlen(c->txt), &r, &why);
        assert_int_equal(rc, c->rc);
        if (rc != 0) {
            assert_non_null(why);
            continue;
        }
        dmarc_record_format(&r, buf, sizeof(buf));
        assert_string_equal(buf, c->formatted);
        assert_int_equal(dmarc_record_policy(&r, false, 0), c->fail);
        assert_int_equal(dmarc_record_policy(&r, true, 0), c->sub);
    }
}

static void
test_pct_sample(void **state)
{
    struct dmarc_record r;
    const char *why;

    (void)state;
    assert_int_equal(dmarc_record_parse("v=DMARC1; p=reject; pct=50", 26, &r, &why), 0);
    assert_int_equal(dmarc_record_policy(&r, false, 49), DMARC_P_REJECT);
    assert_int_equal(dmarc_record_policy(&r, false, 50), DMARC_P_QUARANTINE);
    assert_int_equal(dmarc_record_parse("v=DMARC1; p=none; pct=0", 23, &r, &why), 0);
    assert_int_equal(dmarc_record_policy(&r, false, 99), DMARC_P_NONE);
}

static const char list[] = "// a comment\n"
                           "com\n"
                           "uk.com\n"
                           "*.kobe.jp\n"
                           "!city.kobe.jp\n"
                           "jp\n"
                           "kobe.jp\n"
                           "  \n"
                           "公司.cn\n"
                           "cn\n";

static void
test_psl(void **state)
{
    static const struct {
        const char *name, *org;
    } cases[] = {
        {"com", NULL},
        {"example.com", "example.com"},
        {"a.b.example.com", "example.com"},
        {"uk.com", NULL},
        {"a.example.uk.com", "example.uk.com"},
        {"c.kobe.jp", NULL},
        {"b.c.kobe.jp", "b.c.kobe.jp"},
        {"a.b.c.kobe.jp", "b.c.kobe.jp"},
        {"city.kobe.jp", "city.kobe.jp"},
        {"www.city.kobe.jp", "city.kobe.jp"},
        {"example", NULL},
        {"a.example", "a.example"},
        {"食狮.公司.cn", "食狮.公司.cn"},
        {"公司.cn", NULL},
        {"", NULL},
        {".com", NULL},
        {"a..com", NULL},
        {"example.com.", NULL},
    };
    struct psl *p = psl_new(list, sizeof(list) - 1);
    char out[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = psl_org_domain(p, cases[i].name, out, sizeof(out));

        print_message("%s\n", cases[i].name);
        if (cases[i].org == NULL) {
            assert_int_equal(rc, MXD_ENOENT);
        } else {
            assert_int_equal(rc, 0);
            assert_string_equal(out, cases[i].org);
        }
    }
    assert_int_equal(psl_org_domain(p, "a.example.com", out, 5), MXD_ENOENT); /* too small */
    psl_free(p);
}

static void
test_dkim_body(void **state)
{
    static const struct {
        const char *msg;
        uint64_t simple, relaxed;
    } cases[] = {
        {"A: b\r\n\r\n", 2, 0},                       /* empty body */
        {"A: b\r\n\r\n\r\n\r\n", 2, 0},               /* only empty lines */
        {"A: b\r\n\r\nhi\r\n", 4, 4},                 /* one line */
        {"A: b\r\n\r\nhi\r\n\r\n\r\n", 4, 4},         /* trailing empty lines */
        {"A: b\r\n\r\nhi", 4, 4},                     /* no CRLF at the end */
        {"A: b\r\n\r\nh  i \t\r\n\r\nx\r\n", 13, 10}, /* WSP runs, tails */
        {"A: b\r\n\r\n  \r\n", 4, 0},                 /* a line of WSP */
        {"A: b\r\n folded\r\n\r\n.\r\n", 3, 3},       /* folded header */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dkim_body b, one;
        size_t len = strlen(cases[i].msg);

        print_message("case %zu\n", i);
        dkim_body_init(&b);
        dkim_body_feed(&b, cases[i].msg, len);
        assert_int_equal(dkim_body_simple(&b), cases[i].simple);
        assert_int_equal(dkim_body_relaxed(&b), cases[i].relaxed);
        dkim_body_init(&one); /* octet by octet: the same */
        for (size_t j = 0; j < len; j++)
            dkim_body_feed(&one, cases[i].msg + j, 1);
        assert_int_equal(dkim_body_simple(&one), cases[i].simple);
        assert_int_equal(dkim_body_relaxed(&one), cases[i].relaxed);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_pct_sample),
        cmocka_unit_test(test_psl),
        cmocka_unit_test(test_dkim_body),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
