/*
 * test_greylist: the greylisting triplet (client network or SPF domain,
 * normalised sender, recipient) and who is spared greylisting, table-driven.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/addr.h"
#include "base/conf.h"
#include "check/greylist.h"
#include "sockaddr_of.h"

static void
test_client(void **state)
{
    static const struct {
        const char *ip, *spf, *want;
    } cases[] = {
        {"192.0.2.77", NULL, "net:192.0.2.0/24"},
        {"192.0.2.1", "", "net:192.0.2.0/24"},
        {"::ffff:198.51.100.9", NULL, "net:198.51.100.0/24"},
        {"2001:db8:1:2:aaaa:bbbb:cccc:dddd", NULL, "net:2001:db8:1:2::/64"},
        {"2001:db8::1", NULL, "net:2001:db8::/64"},
        {"192.0.2.77", "Mail.Example.ORG", "spf:mail.example.org"},
        {"2001:db8::1", "example.org", "spf:example.org"},
    };
    char out[GREYLIST_CLIENT_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sockaddr_storage ss = sa_of(cases[i].ip);

        greylist_client((const struct sockaddr *)&ss, cases[i].spf, out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("%s %s: got %s want %s", cases[i].ip, cases[i].spf ? cases[i].spf : "-", out,
                     cases[i].want);
    }
}

static void
test_client_long_domain(void **state)
{
    char domain[300], out[GREYLIST_CLIENT_MAX];
    struct sockaddr_storage ss = sa_of("192.0.2.1");

    (void)state;
    memset(domain, 'a', sizeof(domain) - 1);
    domain[sizeof(domain) - 1] = '\0';
    greylist_client((const struct sockaddr *)&ss, domain, out);
    assert_int_equal(strlen(out), GREYLIST_CLIENT_MAX - 1);
    assert_memory_equal(out, "spf:aaa", 7);
}

static void
test_sender(void **state)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"", ""},
        {"Alice@Example.ORG", "alice@example.org"},
        {"alice+news@example.org", "alice@example.org"},
        {"+x@example.org", "+x@example.org"},
        {"bounce-12345-678@lists.example", "bounce-#-#@lists.example"},
        {"bounce.12345@lists.example", "bounce.#@lists.example"},
        {"user123@example.org", "user123@example.org"},
        {"msg_42@example.org", "msg_42@example.org"},
        {"42@example.org", "#@example.org"},
        {"prvs=1234abcdef=alice@example.org", "alice@example.org"},
        {"PRVS=0123ABCDEF=Bob+x@example.org", "bob@example.org"},
        {"SRS0=HHH1=TT=orig.example=alice@fwd.example", "srs0=#=#=orig.example=alice@fwd.example"},
        {"SRS1=xyz=fwd1.example==HHH=TT=orig.example=alice@fwd2.example",
         "srs1=#=fwd1.example==#=#=orig.example=alice@fwd2.example"},
        {"srs0=@x.example", "srs0=@x.example"},
        {"\"Quoted 123\"@example.org", "\"quoted 123\"@example.org"},
        {"list-bounces+user=example.test@lists.example", "list-bounces@lists.example"},
    };
    char out[ADDR_PATH_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        greylist_sender(cases[i].in, out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("%s: got %s want %s", cases[i].in, out, cases[i].want);
    }
}

static void
test_rcpt(void **state)
{
    char out[ADDR_PATH_MAX];

    (void)state;
    greylist_rcpt("User+Tag@Example.TEST", out);
    assert_string_equal(out, "user+tag@example.test");
}

static struct addr
rcpt_of(const char *path)
{
    struct addr a;
    size_t used;

    assert_int_equal(addr_parse_path(path, strlen(path), false, false, &a, &used), ADDR_OK);
    return a;
}

static void
test_skip(void **state)
{
    static const char text[] = "[server]\nhostname = mx.example.test\ndatabase = /tmp/x.db\n"
                               "trusted_networks = 192.0.2.0/24, 2001:db8::/32\n"
                               "[domain grey.test]\ngreylist = on\n"
                               "[domain plain.test]\n";
    static const struct {
        const char *ip, *rcpt;
        bool client_trusted;
        enum greylist_skip want;
    } cases[] = {
        {"198.51.100.1", "<a@grey.test>", false, GREYLIST_APPLIES},
        {"198.51.100.1", "<a@GREY.test>", false, GREYLIST_APPLIES},
        {"198.51.100.1", "<a@plain.test>", false, GREYLIST_OFF},
        {"198.51.100.1", "<a@elsewhere.test>", false, GREYLIST_OFF},
        {"198.51.100.1", "<a@[192.0.2.1]>", false, GREYLIST_OFF},
        {"198.51.100.1", "<postmaster>", false, GREYLIST_POSTMASTER},
        {"198.51.100.1", "<PostMaster@grey.test>", false, GREYLIST_POSTMASTER},
        {"192.0.2.200", "<a@grey.test>", false, GREYLIST_TRUSTED_NETWORK},
        {"::ffff:192.0.2.200", "<a@grey.test>", false, GREYLIST_TRUSTED_NETWORK},
        {"2001:db8:5::1", "<a@grey.test>", false, GREYLIST_TRUSTED_NETWORK},
        {"198.51.100.1", "<a@grey.test>", true, GREYLIST_CLIENT_TRUSTED},
        {"198.51.100.1", "<a@plain.test>", true, GREYLIST_OFF},
    };
    struct conf *c = NULL;
    char *err = NULL;

    (void)state;
    if (conf_parse_string(text, "t.conf", &c, &err) != 0)
        fail_msg("%s", err);
    assert_true(c->domains[0].greylist);
    assert_false(c->domains[1].greylist);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sockaddr_storage ss = sa_of(cases[i].ip);
        struct addr a = rcpt_of(cases[i].rcpt);
        enum greylist_skip got =
            greylist_skip(c, (const struct sockaddr *)&ss, cases[i].client_trusted, &a);

        if (got != cases[i].want)
            fail_msg("%s %s: got %s want %s", cases[i].ip, cases[i].rcpt, greylist_skip_name(got),
                     greylist_skip_name(cases[i].want));
    }
    assert_string_equal(greylist_skip_name((enum greylist_skip)99), "unknown");
    conf_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client), cmocka_unit_test(test_client_long_domain),
        cmocka_unit_test(test_sender), cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_skip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
