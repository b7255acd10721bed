/*
 * test_dnsbl: DNSBL and DNSWL screening's pure parts, table-driven: the
 * dnsbl_sites item syntax (names, filters with ranges and lists, weights)
 * and its errors; the answer filter; query names for IPv4, IPv6 and
 * IPv4-mapped clients; records that never list (127.255.255.x, outside
 * 127/8); scores summed across lists with the top list for the reply; the
 * reply map; and the config keys' FILE:LINE errors.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/conf.h"
#include "check/dnsbl.h"
#include "sockaddr_of.h"

#define BASE "[server]\nhostname = mx.example.test\ndatabase = /var/lib/mxd/queue.db\n"

static void
a_of(const char *ip, unsigned char a[4])
{
    assert_int_equal(inet_pton(AF_INET, ip, a), 1);
}

static void
test_site_parse(void **state)
{
    static const struct {
        const char *in, *name;
        int weight;
        const char *yes[4], *no[4]; /* records through and refused by the filter */
    } cases[] = {
        {"zen.example", "zen.example", 1, {"127.0.0.2", "127.1.2.3"}, {NULL}},
        {"Zen.Example.*3", "zen.example", 3, {"127.0.0.2"}, {NULL}},
        {"bl.example=127.0.0.[2..11]*2",
         "bl.example",
         2,
         {"127.0.0.2", "127.0.0.11", "127.0.0.7"},
         {"127.0.0.1", "127.0.0.12", "127.0.1.2"}},
        {"wl.example=127.0.[0..255].[1;3;5..6]*-5",
         "wl.example",
         -5,
         {"127.0.9.1", "127.0.0.3", "127.0.255.6"},
         {"127.0.0.2", "127.0.0.4", "127.1.0.1"}},
        {" a.example = 127.0.0.4 * +7 ", "a.example", 7, {"127.0.0.4"}, {"127.0.0.5"}},
        {"b.example=[0..255].[0..255].[0..255].[0..255]", "b.example", 1, {"1.2.3.4"}, {NULL}},
        {"c.example=127.0.0.[4;2]*100000", "c.example", 100000, {"127.0.0.2"}, {"127.0.0.3"}},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf_dnsbl_site s;
        const char *why = NULL;
        unsigned char a[4];

        assert_int_equal(conf_dnsbl_site_parse(cases[i].in, &s, &why), 0);
        assert_string_equal(s.name, cases[i].name);
        assert_ptr_equal(s.display, s.name);
        assert_int_equal(s.weight, cases[i].weight);
        for (size_t j = 0; j < 4 && cases[i].yes[j] != NULL; j++) {
            a_of(cases[i].yes[j], a);
            assert_true(conf_dnsbl_filter_match(&s, a));
        }
        for (size_t j = 0; j < 4 && cases[i].no[j] != NULL; j++) {
            a_of(cases[i].no[j], a);
            assert_false(conf_dnsbl_filter_match(&s, a));
        }
        conf_dnsbl_site_free(&s);
    }
}

static void
test_site_errors(void **state)
{
    static const struct {
        const char *in, *why;
    } cases[] = {
        {"", "missing list name"},
        {"=127.0.0.2", "missing list name"},
        {"bad_name.example", "not a valid list name"},
        {"1.2.3.4", "not a valid list name"},
        {"a.example=127.0.0", "bad answer filter"},
        {"a.example=127.0.0.2.5", "bad answer filter"},
        {"a.example=127.0.0.256", "bad answer filter"},
        {"a.example=127.0.0.[5..2]", "bad answer filter"},
        {"a.example=127.0.0.[2", "bad answer filter"},
        {"a.example=127.0.0.[2;]", "bad answer filter"},
        {"a.example=127.0.0.[]", "bad answer filter"},
        {"a.example=127.0.0.0002", "bad answer filter"},
        {"a.example=", "bad answer filter"},
        {"a.example*0", "bad weight"},
        {"a.example*", "bad weight"},
        {"a.example*x", "bad weight"},
        {"a.example*100001", "bad weight"},
        {"a.example*99999999999999999999", "bad weight"},
        {"a.example*--2", "bad weight"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf_dnsbl_site s;
        const char *why = NULL;

        if (conf_dnsbl_site_parse(cases[i].in, &s, &why) == 0)
            fail_msg("'%s' parsed", cases[i].in);
        assert_non_null(why);
        if (strstr(why, cases[i].why) == NULL)
            fail_msg("'%s': want '%s', got '%s'", cases[i].in, cases[i].why, why);
    }
}

static void
test_query_name(void **state)
{
    static const struct {
        const char *ip, *want;
    } cases[] = {
        {"192.0.2.99", "99.2.0.192.bl.example"},
        {"127.0.0.2", "2.0.0.127.bl.example"},
        {"::ffff:198.51.100.7", "7.100.51.198.bl.example"},
        {"2001:db8:1:2::abcd",
         "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example"},
    };
    char out[DNSBL_QNAME_MAX];
    struct sockaddr_storage ss;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ss = sa_of(cases[i].ip);
        assert_int_equal(dnsbl_query_name((struct sockaddr *)&ss, "bl.example", out, sizeof(out)),
                         0);
        assert_string_equal(out, cases[i].want);
    }
    /* too small a buffer, another family */
    ss = sa_of("2001:db8::1");
    assert_int_equal(dnsbl_query_name((struct sockaddr *)&ss, "bl.example", out, 70), MXD_EINVAL);
    ss = sa_of("192.0.2.1");
    assert_int_equal(dnsbl_query_name((struct sockaddr *)&ss, "bl.example", out, 12), MXD_EINVAL);
    ss.ss_family = AF_UNIX;
    assert_int_equal(dnsbl_query_name((struct sockaddr *)&ss, "bl.example", out, sizeof(out)),
                     MXD_EINVAL);
}

static void
test_ptr_and_names(void **state)
{
    char out[DNSBL_QNAME_MAX];
    struct sockaddr_storage ss = sa_of("192.0.2.20");

    (void)state;
    assert_int_equal(dnsbl_ptr_name((struct sockaddr *)&ss, out, sizeof(out)), 0);
    assert_string_equal(out, "20.2.0.192.in-addr.arpa");
    ss = sa_of("::ffff:192.0.2.20");
    assert_int_equal(dnsbl_ptr_name((struct sockaddr *)&ss, out, sizeof(out)), 0);
    assert_string_equal(out, "20.2.0.192.in-addr.arpa");
    ss = sa_of("2001:db8::20");
    assert_int_equal(dnsbl_ptr_name((struct sockaddr *)&ss, out, sizeof(out)), 0);
    assert_string_equal(out,
                        "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    assert_true(dnsbl_name_ok("mail.example.org"));
    assert_true(dnsbl_name_ok("a-1_b.x"));
    assert_true(dnsbl_name_ok("localhost"));
    assert_false(dnsbl_name_ok(""));
    assert_false(dnsbl_name_ok("a..b"));
    assert_false(dnsbl_name_ok(".a"));
    assert_false(dnsbl_name_ok("a."));
    assert_false(dnsbl_name_ok("a b.example"));
    assert_false(dnsbl_name_ok("a\\032b.example"));
    assert_false(dnsbl_name_ok("x(y).example"));
    assert_false(
        dnsbl_name_ok("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example"));
}

static void
test_records(void **state)
{
    static const struct {
        const char *site, *a;
        enum dnsbl_record want;
    } cases[] = {
        {"zen.example", "127.0.0.2", DNSBL_LISTED},
        {"zen.example", "127.0.0.1", DNSBL_LISTED},
        {"zen.example", "127.255.255.254", DNSBL_LIST_ERROR},
        {"zen.example", "127.255.255.252", DNSBL_LIST_ERROR},
        {"zen.example", "10.0.0.2", DNSBL_LIST_ERROR},
        {"zen.example", "0.0.0.0", DNSBL_LIST_ERROR},
        {"any.example=[0..255].[0..255].[0..255].[0..255]", "127.255.255.254", DNSBL_LIST_ERROR},
        {"any.example=[0..255].[0..255].[0..255].[0..255]", "192.0.2.1", DNSBL_LIST_ERROR},
        {"bl.example=127.0.0.[2..11]", "127.0.0.12", DNSBL_FILTERED},
        {"bl.example=127.0.0.[2..11]", "127.0.0.10", DNSBL_LISTED},
        {"bl.example=127.255.[0..255].[0..255]", "127.255.1.2", DNSBL_LISTED},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf_dnsbl_site s;
        const char *why;
        unsigned char a[4];

        assert_int_equal(conf_dnsbl_site_parse(cases[i].site, &s, &why), 0);
        a_of(cases[i].a, a);
        if (dnsbl_record_judge(&s, a) != cases[i].want)
            fail_msg("%s %s: %s", cases[i].site, cases[i].a,
                     dnsbl_record_name(dnsbl_record_judge(&s, a)));
        conf_dnsbl_site_free(&s);
    }
    assert_string_equal(dnsbl_record_name(DNSBL_LIST_ERROR), "list-error");
}

static void
test_score(void **state)
{
    const char *text = BASE "dnsbl_sites = zen.example*3, bl.example=127.0.0.[2..11]*2, "
                            "key.dq.example*4, wl.example*-5\n"
                            "dnsbl_reply_map = key.dq.example=public.example\n";
    struct conf *c = NULL;
    char *err = NULL;
    unsigned char rec[3][4];
    char text_out[512];
    bool error;

    (void)state;
    assert_int_equal(conf_parse_string(text, "t.conf", &c, &err), 0);
    assert_int_equal(c->ndnsbl_sites, 4);
    assert_string_equal(c->dnsbl_sites[2].name, "key.dq.example");
    assert_string_equal(c->dnsbl_sites[2].display, "public.example");
    assert_string_equal(c->dnsbl_sites[0].display, "zen.example");
    assert_int_equal(c->dnsbl_threshold, 1);
    assert_int_equal(c->dnsbl_allowlist_threshold, -1);
    assert_int_equal(c->dnsbl_action, CONF_DNSBL_REJECT);
    assert_int_equal(c->dnsbl_timeout_ms, 5000);
    assert_false(c->fcrdns);

    /* zen lists (127.0.0.2), bl answers 127.0.0.12 (filtered), the
     * private list lists with an error record beside */
    struct dnsbl_score s = {0};
    a_of("127.0.0.2", rec[0]);
    dnsbl_score_add(&s, c->dnsbl_sites, 0,
                    dnsbl_site_listed(&c->dnsbl_sites[0], rec[0], 1, &error));
    assert_false(error);
    a_of("127.0.0.12", rec[0]);
    dnsbl_score_add(&s, c->dnsbl_sites, 1,
                    dnsbl_site_listed(&c->dnsbl_sites[1], rec[0], 1, &error));
    assert_false(error);
    assert_int_equal(s.score, 3);
    a_of("127.255.255.254", rec[0]);
    a_of("127.0.0.4", rec[1]);
    dnsbl_score_add(&s, c->dnsbl_sites, 2,
                    dnsbl_site_listed(&c->dnsbl_sites[2], rec[0], 2, &error));
    assert_true(error);
    assert_int_equal(s.score, 7);
    assert_int_equal(s.nlisted, 2);
    assert_int_equal(s.top, 2);
    dnsbl_reply_text(text_out, sizeof(text_out), "192.0.2.9", &c->dnsbl_sites[s.top]);
    assert_string_equal(
        text_out, "5.7.1 Service unavailable; client [192.0.2.9] blocked using public.example");
    assert_null(strstr(text_out, "key.dq"));
    /* the allowlist brings it down; an error record alone lists nothing */
    a_of("127.0.0.2", rec[0]);
    dnsbl_score_add(&s, c->dnsbl_sites, 3,
                    dnsbl_site_listed(&c->dnsbl_sites[3], rec[0], 1, &error));
    assert_int_equal(s.score, 2);
    assert_int_equal(s.nlisted, 2);
    a_of("127.255.255.254", rec[0]);
    assert_false(dnsbl_site_listed(&c->dnsbl_sites[0], rec[0], 1, &error));
    assert_true(error);
    assert_false(dnsbl_site_listed(&c->dnsbl_sites[0], rec[0], 0, &error));
    assert_false(error);
    conf_free(c);
}

/* ---- config keys: FILE:LINE errors ---- */

static void
test_conf_ok(void **state)
{
    const char *text = BASE "dnsbl_sites = a.example\n"
                            "dnsbl_threshold = 5\ndnsbl_allowlist_threshold = -3\n"
                            "dnsbl_action = enforce\ndnsbl_timeout = 2s\n"
                            "fcrdns = on\nfcrdns_weight = 2\n";
    struct conf *c = NULL;
    char *err = NULL;

    (void)state;
    assert_int_equal(conf_parse_string(text, "t.conf", &c, &err), 0);
    assert_int_equal(c->dnsbl_threshold, 5);
    assert_int_equal(c->dnsbl_allowlist_threshold, -3);
    assert_int_equal(c->dnsbl_action, CONF_DNSBL_ENFORCE);
    assert_int_equal(c->dnsbl_timeout_ms, 2000);
    assert_true(c->fcrdns);
    assert_int_equal(c->fcrdns_weight, 2);
    conf_free(c);
}

static void
test_conf_errors(void **state)
{
    static const struct {
        const char *text;
        const char *want; /* the whole "t.conf:LINE: ..." prefix of a line */
    } cases[] = {
        {BASE "dnsbl_sites = a.example, b.example=127.0.0\n",
         "t.conf:4: dnsbl_sites: bad answer filter"},
        {BASE "dnsbl_sites = a.example*0\n", "t.conf:4: dnsbl_sites: bad weight"},
        {BASE "dnsbl_sites = a.example,,b.example\n", "t.conf:4: dnsbl_sites: empty item"},
        {BASE "dnsbl_sites = a.example\ndnsbl_reply_map = b.example=pub.example\n",
         "t.conf:5: dnsbl_reply_map: 'b.example' is not a list"},
        {BASE "dnsbl_reply_map = b.example\n", "t.conf:4: dnsbl_reply_map: want list=public-name"},
        {BASE "dnsbl_threshold = 0\n", "t.conf:4: dnsbl_threshold: want an integer from 1"},
        {BASE "dnsbl_allowlist_threshold = 0\n",
         "t.conf:4: dnsbl_allowlist_threshold: want an integer from -1000000 to -1"},
        {BASE "dnsbl_allowlist_threshold = x\n", "t.conf:4: dnsbl_allowlist_threshold: want"},
        {BASE "dnsbl_action = drop\n", "t.conf:4: dnsbl_action: want reject|enforce|ignore"},
        {BASE "dnsbl_timeout = 0\n", "t.conf:4: dnsbl_timeout: must be greater than zero"},
        {BASE "fcrdns_weight = 2\n", "t.conf:4: fcrdns_weight: needs fcrdns = on"},
        {BASE "fcrdns_weight = -100001\nfcrdns = on\n", "t.conf:4: fcrdns_weight: want"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf *c = NULL;
        char *err = NULL;

        assert_int_equal(conf_parse_string(cases[i].text, "t.conf", &c, &err), MXD_ECONFIG);
        assert_null(c);
        if (err == NULL || strstr(err, cases[i].want) == NULL)
            fail_msg("want '%s' in:\n%s", cases[i].want, err ? err : "(none)");
        free(err);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_site_parse), cmocka_unit_test(test_site_errors),
        cmocka_unit_test(test_query_name), cmocka_unit_test(test_ptr_and_names),
        cmocka_unit_test(test_records),    cmocka_unit_test(test_score),
        cmocka_unit_test(test_conf_ok),    cmocka_unit_test(test_conf_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
