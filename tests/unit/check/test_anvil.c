/* Unit tests for anvil: per-client rates with a fake clock. Each case is a
 * table of steps (count an event, read a rate, read the table's size),
 * run against a fresh table: the limit is met exactly at N + 1, the
 * window slides, clients and rules are counted apart, IPv6 clients are
 * /64 networks, the least recently used client is the one evicted, and
 * quiet clients are swept. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "check/anvil.h"

#define W ANVIL_WINDOW_MS

enum op { END, HIT, RATE, SIZE };

struct step {
    enum op op;
    const char *addr; /* HIT, RATE */
    enum anvil_rule rule;
    uint64_t t;    /* the fake clock, ms */
    unsigned want; /* the rate (HIT, RATE) or the size (SIZE) */
};

struct anvil_case {
    const char *name;
    size_t max;  /* clients; 0: ANVIL_CLIENTS */
    unsigned v6; /* ipv6 prefix; 0: 64 */
    struct step steps[24];
};

#define C ANVIL_CONNECT
#define M ANVIL_MAIL
#define R ANVIL_RCPT

static const struct anvil_case cases[] = {
    /* A limit of 3 refuses the 4th connection: the rate is exact in the
     * client's first minute. */
    {.name = "limit at N+1",
     .steps = {{HIT, "192.0.2.1", C, 0, 1},
               {HIT, "192.0.2.1", C, 10, 2},
               {HIT, "192.0.2.1", C, 20, 3},
               {HIT, "192.0.2.1", C, 30, 4},
               {HIT, "192.0.2.1", C, W - 1, 5},
               {RATE, "192.0.2.1", C, W - 1, 5}}},
    /* The first minute's 4 events fade out over the second minute
     * (weighted, rounded up), then are gone. */
    {.name = "window slides",
     .steps = {{HIT, "192.0.2.1", M, 0, 1},
               {HIT, "192.0.2.1", M, 1, 2},
               {HIT, "192.0.2.1", M, 2, 3},
               {HIT, "192.0.2.1", M, 3, 4},
               {RATE, "192.0.2.1", M, W, 4}, /* the second bucket begins: all 4 still count */
               {RATE, "192.0.2.1", M, W + W / 4, 3}, /* 4 x 3/4 */
               {RATE, "192.0.2.1", M, W + W / 2, 2},
               {RATE, "192.0.2.1", M, 2 * W - 1, 1}, /* 4 x 1/60000, rounded up */
               {HIT, "192.0.2.1", M, W + W / 2, 3},  /* 2 + one new */
               {RATE, "192.0.2.1", M, 2 * W,
                1}, /* the third bucket: only the new one, weighted 1 */
               {RATE, "192.0.2.1", M, 2 * W + W / 2, 1},
               {RATE, "192.0.2.1", M, 3 * W, 0}, /* two quiet windows: nothing left */
               {HIT, "192.0.2.1", M, 10 * W, 1}}},
    /* Limits are per client: another address starts at 1. */
    {.name = "clients apart",
     .steps = {{HIT, "127.0.0.5", C, 0, 1},
               {HIT, "127.0.0.5", C, 0, 2},
               {HIT, "127.0.0.5", C, 0, 3},
               {HIT, "127.0.0.5", C, 0, 4},
               {HIT, "127.0.0.6", C, 0, 1},
               {RATE, "127.0.0.7", C, 0, 0},
               {SIZE, NULL, C, 0, 2}}},
    /* Connections, messages and recipients are counted apart. */
    {.name = "rules apart",
     .steps = {{HIT, "192.0.2.9", C, 0, 1},
               {HIT, "192.0.2.9", M, 0, 1},
               {HIT, "192.0.2.9", R, 0, 1},
               {HIT, "192.0.2.9", R, 0, 2},
               {HIT, "192.0.2.9", R, 0, 3},
               {RATE, "192.0.2.9", C, 0, 1},
               {RATE, "192.0.2.9", M, 0, 1},
               {RATE, "192.0.2.9", R, 0, 3}}},
    /* IPv6: one /64 is one client; IPv4-mapped addresses are the IPv4
     * client. */
    {.name = "ipv6 /64",
     .steps = {{HIT, "2001:db8:1:2::1", R, 0, 1},
               {HIT, "2001:db8:1:2:ffff:ffff:ffff:fffe", R, 0, 2},
               {HIT, "2001:db8:1:3::1", R, 0, 1},
               {HIT, "::ffff:192.0.2.1", R, 0, 1},
               {HIT, "192.0.2.1", R, 0, 2},
               {HIT, "192.0.2.2", R, 0, 1},
               {SIZE, NULL, R, 0, 4}}},
    {.name = "ipv6 /128",
     .v6 = 128,
     .steps = {{HIT, "2001:db8:1:2::1", R, 0, 1},
               {HIT, "2001:db8:1:2::2", R, 0, 1},
               {HIT, "2001:db8:1:2::1", R, 0, 2}}},
    /* Three clients at most: a new one evicts the least recently used (B),
     * not A, used again since. */
    {.name = "lru evicts the least recent",
     .max = 3,
     .steps = {{HIT, "10.0.0.1", M, 0, 1}, /* A */
               {HIT, "10.0.0.2", M, 1, 1}, /* B */
               {HIT, "10.0.0.3", M, 2, 1}, /* C */
               {HIT, "10.0.0.1", M, 3, 2}, /* A again */
               {HIT, "10.0.0.4", M, 4, 1}, /* D: B goes */
               {SIZE, NULL, M, 4, 3},
               {RATE, "10.0.0.2", M, 4, 0},
               {RATE, "10.0.0.1", M, 4, 2},
               {RATE, "10.0.0.3", M, 4, 1},
               {HIT, "10.0.0.2", M, 5, 1}, /* B is new again; C goes */
               {RATE, "10.0.0.3", M, 5, 0},
               {RATE, "10.0.0.1", M, 5, 2}}},
    /* A client that keeps coming survives a stream of new clients through
     * a small table, and meets its limit. */
    {.name = "the busy client stays",
     .max = 2,
     .steps = {{HIT, "10.9.9.9", R, 0, 1},
               {HIT, "10.0.0.1", R, 1, 1},
               {HIT, "10.9.9.9", R, 2, 2},
               {HIT, "10.0.0.2", R, 3, 1},
               {HIT, "10.9.9.9", R, 4, 3},
               {HIT, "10.0.0.3", R, 5, 1},
               {HIT, "10.9.9.9", R, 6, 4},
               {SIZE, NULL, R, 6, 2},
               {RATE, "10.0.0.1", R, 6, 0}}},
    /* Clients quiet for two windows are freed as the table is used. */
    {.name = "quiet clients are swept",
     .steps = {{HIT, "10.0.0.1", C, 0, 1},
               {HIT, "10.0.0.2", C, 10, 1},
               {HIT, "10.0.0.3", C, 2 * W - 1, 1},
               {SIZE, NULL, C, 2 * W - 1, 3},
               {HIT, "10.0.0.4", C, 2 * W + 10, 1}, /* 1 and 2 are stale: swept */
               {SIZE, NULL, C, 2 * W + 10, 2},
               {RATE, "10.0.0.3", C, 2 * W + 10, 1}}},
};

static void
sockaddr_of(const char *s, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(s, ':') != NULL) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

        sin6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, s, &sin6->sin6_addr), 1);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;

        sin->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, s, &sin->sin_addr), 1);
    }
}

static void
test_anvil_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct anvil_case *tc = &cases[i];
        struct anvil *a = anvil_new(tc->max ? tc->max : ANVIL_CLIENTS, W, 0x5eed + i);
        unsigned v6 = tc->v6 ? tc->v6 : 64;

        for (size_t j = 0; j < sizeof(tc->steps) / sizeof(tc->steps[0]); j++) {
            const struct step *s = &tc->steps[j];
            struct sockaddr_storage ss;
            unsigned got = 0;

            if (s->op == END)
                break;
            if (s->addr != NULL)
                sockaddr_of(s->addr, &ss);
            if (s->op == HIT)
                got = anvil_hit(a, (struct sockaddr *)&ss, v6, s->rule, s->t);
            else if (s->op == RATE)
                got = anvil_rate(a, (struct sockaddr *)&ss, v6, s->rule, s->t);
            else
                got = (unsigned)anvil_size(a);
            if (got != s->want)
                fail_msg("%s, step %zu (%s %s t=%llu): got %u, want %u", tc->name, j + 1,
                         s->op == HIT    ? "hit"
                         : s->op == RATE ? "rate"
                                         : "size",
                         s->addr ? s->addr : "-", (unsigned long long)s->t, got, s->want);
        }
        anvil_free(a);
    }
}

/* Many more clients than the table holds: it never grows past its bound,
 * and the most recent ones are the ones kept. */
static void
test_anvil_bounded(void **state)
{
    struct anvil *a = anvil_new(100, W, 1);
    struct sockaddr_in sin = {.sin_family = AF_INET};

    (void)state;
    for (uint32_t i = 0; i < 10000; i++) {
        sin.sin_addr.s_addr = htonl(0x0a000000u + i);
        assert_int_equal(anvil_hit(a, (struct sockaddr *)&sin, 64, ANVIL_CONNECT, i), 1);
        assert_true(anvil_size(a) <= 100);
    }
    assert_int_equal(anvil_size(a), 100);
    sin.sin_addr.s_addr = htonl(0x0a000000u + 9999);
    assert_int_equal(anvil_rate(a, (struct sockaddr *)&sin, 64, ANVIL_CONNECT, 10000), 1);
    sin.sin_addr.s_addr = htonl(0x0a000000u + 9900);
    assert_int_equal(anvil_rate(a, (struct sockaddr *)&sin, 64, ANVIL_CONNECT, 10000), 1);
    sin.sin_addr.s_addr = htonl(0x0a000000u + 9899);
    assert_int_equal(anvil_rate(a, (struct sockaddr *)&sin, 64, ANVIL_CONNECT, 10000), 0);
    anvil_free(a);
    anvil_free(NULL);
}

static void
test_anvil_rule_names(void **state)
{
    (void)state;
    assert_string_equal(anvil_rule_name(ANVIL_CONNECT), "connection_rate_limit");
    assert_string_equal(anvil_rule_name(ANVIL_MAIL), "message_rate_limit");
    assert_string_equal(anvil_rule_name(ANVIL_RCPT), "recipient_rate_limit");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anvil_cases),
        cmocka_unit_test(test_anvil_bounded),
        cmocka_unit_test(test_anvil_rule_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
