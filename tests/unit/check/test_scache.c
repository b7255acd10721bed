/* Unit tests for scache.c: the screening's cache of passes: an unknown
 * client, merging (each test keeps the later expiry), least recently used
 * eviction (a get counts as a use), IPv6 networks as one client, and the
 * test names. */
#include <sys/socket.h>

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
#include "check/scache.h"

static void
key4(const char *ip, unsigned char key[IPTAB_KEY_LEN])
{
    struct sockaddr_in sin = {.sin_family = AF_INET};

    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    iptab_key((const struct sockaddr *)&sin, 64, key);
}

static void
key6(const char *ip, unsigned prefix, unsigned char key[IPTAB_KEY_LEN])
{
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};

    assert_int_equal(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
    iptab_key((const struct sockaddr *)&sin6, prefix, key);
}

static void
test_scache_unknown_and_put(void **state)
{
    struct scache *c = scache_new(4, 42);
    unsigned char k[IPTAB_KEY_LEN];
    int64_t until[SCREEN_NTESTS] = {0}, got[SCREEN_NTESTS];

    (void)state;
    key4("192.0.2.1", k);
    assert_false(scache_get(c, k, got));
    /* "looked up, nothing": an entry with no pass */
    scache_put(c, k, until);
    assert_true(scache_get(c, k, got));
    assert_int_equal(got[SCREEN_PREGREET], 0);
    until[SCREEN_PREGREET] = 1000;
    scache_put(c, k, until);
    assert_true(scache_get(c, k, got));
    assert_int_equal(got[SCREEN_PREGREET], 1000);
    /* an older answer (a store lookup that was slower) never moves it back */
    until[SCREEN_PREGREET] = 500;
    scache_put(c, k, until);
    assert_true(scache_get(c, k, got));
    assert_int_equal(got[SCREEN_PREGREET], 1000);
    assert_int_equal(scache_size(c), 1);
    scache_free(c);
}

static void
test_scache_lru(void **state)
{
    struct scache *c = scache_new(3, 7);
    unsigned char a[IPTAB_KEY_LEN], b[IPTAB_KEY_LEN], d[IPTAB_KEY_LEN], e[IPTAB_KEY_LEN];
    int64_t until[SCREEN_NTESTS] = {0}, got[SCREEN_NTESTS];

    (void)state;
    key4("192.0.2.1", a);
    key4("192.0.2.2", b);
    key4("192.0.2.3", d);
    key4("192.0.2.4", e);
    until[SCREEN_PREGREET] = 1;
    scache_put(c, a, until);
    scache_put(c, b, until);
    scache_put(c, d, until);
    assert_true(scache_get(c, a, got)); /* a is now the most recent: b is the oldest */
    scache_put(c, e, until);
    assert_int_equal(scache_size(c), 3);
    assert_false(scache_get(c, b, got));
    assert_true(scache_get(c, a, got));
    assert_true(scache_get(c, d, got));
    assert_true(scache_get(c, e, got));
    scache_free(c);
}

static void
test_scache_ipv6_network(void **state)
{
    struct scache *c = scache_new(16, 1);
    unsigned char k1[IPTAB_KEY_LEN], k2[IPTAB_KEY_LEN], k3[IPTAB_KEY_LEN];
    int64_t until[SCREEN_NTESTS] = {0}, got[SCREEN_NTESTS];

    (void)state;
    key6("2001:db8:1:2::1", 64, k1);
    key6("2001:db8:1:2:ffff::9", 64, k2);
    key6("2001:db8:1:3::1", 64, k3);
    until[SCREEN_PREGREET] = 99;
    scache_put(c, k1, until);
    assert_true(scache_get(c, k2, got)); /* the same /64 */
    assert_int_equal(got[SCREEN_PREGREET], 99);
    assert_false(scache_get(c, k3, got));
    scache_free(c);
}

/* Many clients through a small cache: never more than its bound, and the
 * most recent ones are all there. */
static void
test_scache_bound(void **state)
{
    struct scache *c = scache_new(100, 3);
    int64_t until[SCREEN_NTESTS] = {0}, got[SCREEN_NTESTS];
    unsigned char k[IPTAB_KEY_LEN];
    char ip[32];

    (void)state;
    for (int i = 0; i < 5000; i++) {
        snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        key4(ip, k);
        until[SCREEN_PREGREET] = i;
        scache_put(c, k, until);
        assert_true(scache_size(c) <= 100);
    }
    for (int i = 4900; i < 5000; i++) {
        snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        key4(ip, k);
        assert_true(scache_get(c, k, got));
        assert_int_equal(got[SCREEN_PREGREET], i);
    }
    scache_free(c);
}

static void
test_scache_test_names(void **state)
{
    (void)state;
    assert_string_equal(screen_test_name(SCREEN_PREGREET), "pregreet");
    assert_int_equal(screen_test_find("pregreet"), SCREEN_PREGREET);
    assert_string_equal(screen_test_name(SCREEN_DNSBL), "dnsbl");
    assert_int_equal(screen_test_find("dnsbl"), SCREEN_DNSBL);
    assert_int_equal(screen_test_find("nope"), -1);
    assert_string_equal(screen_test_name(SCREEN_NTESTS), "?");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scache_unknown_and_put), cmocka_unit_test(test_scache_lru),
        cmocka_unit_test(test_scache_ipv6_network),    cmocka_unit_test(test_scache_bound),
        cmocka_unit_test(test_scache_test_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
