/* Unit tests for iptab: connections counted per client, where an IPv6
 * client is its /N prefix (issue 14: one /64 is one client) and an IPv4
 * client its whole address, in either form. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/iptab.h"

static struct sockaddr_storage
sa(const char *text)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(text, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
    }
    return ss;
}

/* Counts for a then b, each added once, under prefix: b's count is 2 when
 * they are one client. */
static unsigned
second_count(const char *a, const char *b, unsigned prefix)
{
    struct iptab *t = iptab_new();
    struct sockaddr_storage x = sa(a), y = sa(b);
    unsigned n;

    assert_int_equal(iptab_inc(t, (struct sockaddr *)&x, prefix), 1);
    n = iptab_inc(t, (struct sockaddr *)&y, prefix);
    iptab_dec(t, (struct sockaddr *)&y, prefix);
    iptab_dec(t, (struct sockaddr *)&x, prefix);
    /* Both gone: the entry was freed and counting starts again. */
    assert_int_equal(iptab_inc(t, (struct sockaddr *)&x, prefix), 1);
    iptab_dec(t, (struct sockaddr *)&x, prefix);
    iptab_free(t);
    return n;
}

static const struct {
    const char *name, *a, *b;
    unsigned prefix;
    unsigned want; /* 2: one client, 1: two */
} cases[] = {
    {"same /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", 64, 2},
    {"next /64", "2001:db8:1:2::1", "2001:db8:1:3::1", 64, 1},
    {"same address", "2001:db8::1", "2001:db8::1", 64, 2},
    {"/128: every address", "2001:db8:1:2::1", "2001:db8:1:2::2", 128, 1},
    {"/48", "2001:db8:1:2::1", "2001:db8:1:ffff::1", 48, 2},
    {"/48 differs", "2001:db8:1::1", "2001:db8:2::1", 48, 1},
    {"/56 mid-octet", "2001:db8:0:1200::1", "2001:db8:0:12ff::1", 56, 2},
    {"/60 mid-nibble", "2001:db8:0:1210::1", "2001:db8:0:121f::1", 60, 2},
    {"/60 next nibble", "2001:db8:0:1210::1", "2001:db8:0:1220::1", 60, 1},
    {"IPv4 whole", "192.0.2.1", "192.0.2.2", 64, 1},
    {"IPv4 same", "192.0.2.1", "192.0.2.1", 64, 2},
    {"IPv4-mapped is IPv4", "192.0.2.1", "::ffff:192.0.2.1", 64, 2},
    {"IPv4-mapped whole", "::ffff:192.0.2.1", "::ffff:192.0.2.2", 64, 1},
    {"IPv4-mapped not in ::/64", "::ffff:192.0.2.1", "::1", 64, 1},
    {"::1 and ::2 one /64", "::1", "::2", 64, 2},
};

static void
test_iptab_issue14_ipv6_prefix(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned got = second_count(cases[i].a, cases[i].b, cases[i].prefix);

        if (got != cases[i].want)
            fail_msg("%s: %s then %s under /%u counted %u, want %u", cases[i].name, cases[i].a,
                     cases[i].b, cases[i].prefix, got, cases[i].want);
    }
}

static void
test_iptab_counts(void **state)
{
    struct iptab *t = iptab_new();
    struct sockaddr_storage x = sa("2001:db8::1"), y = sa("2001:db8::2"), z = sa("198.51.100.7");

    (void)state;
    for (unsigned i = 1; i <= 5; i++)
        assert_int_equal(iptab_inc(t, (struct sockaddr *)(i % 2 ? &x : &y), 64), i);
    assert_int_equal(iptab_inc(t, (struct sockaddr *)&z, 64), 1);
    iptab_dec(t, (struct sockaddr *)&x, 64);
    assert_int_equal(iptab_inc(t, (struct sockaddr *)&y, 64), 5);
    iptab_free(t); /* with entries left: freed too */
}

/* The key other per-client tables use: the same rule. */
static void
test_iptab_key(void **state)
{
    unsigned char k1[IPTAB_KEY_LEN], k2[IPTAB_KEY_LEN];
    struct sockaddr_storage a = sa("2001:db8:1:2:3:4:5:6"), b = sa("2001:db8:1:2::");
    struct sockaddr_storage c = sa("192.0.2.9"), d = sa("::ffff:192.0.2.9");

    (void)state;
    iptab_key((struct sockaddr *)&a, 64, k1);
    iptab_key((struct sockaddr *)&b, 64, k2);
    assert_memory_equal(k1, k2, IPTAB_KEY_LEN);
    iptab_key((struct sockaddr *)&a, 128, k1);
    assert_memory_not_equal(k1, k2, IPTAB_KEY_LEN);
    iptab_key((struct sockaddr *)&c, 64, k1);
    iptab_key((struct sockaddr *)&d, 16, k2);
    assert_memory_equal(k1, k2, IPTAB_KEY_LEN);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iptab_issue14_ipv6_prefix),
        cmocka_unit_test(test_iptab_counts),
        cmocka_unit_test(test_iptab_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
