/* Unit tests for pregreet.c: the pre-greet wait as the load grows
 * (table-driven): greet_wait up to 70% of max_connections, the stress wait
 * from 90% on, a straight line in between, never longer than greet_wait. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "check/pregreet.h"

struct wait_case {
    const char *name;
    uint64_t wait_ms, stress_ms;
    size_t open, max;
    uint64_t want;
};

static const struct wait_case cases[] = {
    {"idle", 6000, 2000, 1, 10000, 6000},
    {"at 70%", 6000, 2000, 7000, 10000, 6000},
    {"just past 70%", 6000, 2000, 7001, 10000, 5998},
    {"at 80%: half way", 6000, 2000, 8000, 10000, 4000},
    {"at 85%", 6000, 2000, 8500, 10000, 3000},
    {"just below 90%", 6000, 2000, 8999, 10000, 2002},
    {"at 90%", 6000, 2000, 9000, 10000, 2000},
    {"full", 6000, 2000, 10000, 10000, 2000},
    {"over the limit", 6000, 2000, 20000, 10000, 2000},
    {"small server, 7 of 10", 6000, 2000, 7, 10, 6000},
    {"small server, 8 of 10", 6000, 2000, 8, 10, 4000},
    {"small server, 9 of 10", 6000, 2000, 9, 10, 2000},
    {"one connection allowed", 6000, 2000, 1, 1, 2000},
    {"stress longer than wait", 1000, 2000, 10000, 10000, 1000},
    {"stress longer, half way", 1000, 2000, 8000, 10000, 1000},
    {"no max", 6000, 2000, 500, 0, 6000},
    {"equal waits", 3000, 3000, 8500, 10000, 3000},
    {"huge numbers", 60000, 1000, 9000000, 10000000, 1000},
    {"huge, half way", 60000, 0, 8000000, 10000000, 30000},
};

static void
test_pregreet_wait_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct wait_case *c = &cases[i];
        uint64_t got = pregreet_wait_ms(c->wait_ms, c->stress_ms, c->open, c->max);

        if (got != c->want)
            fail_msg("%s: pregreet_wait_ms(%llu, %llu, %zu, %zu) = %llu, want %llu", c->name,
                     (unsigned long long)c->wait_ms, (unsigned long long)c->stress_ms, c->open,
                     c->max, (unsigned long long)got, (unsigned long long)c->want);
    }
}

/* The wait never grows with the load. */
static void
test_pregreet_wait_monotonic(void **state)
{
    uint64_t last = UINT64_MAX;

    (void)state;
    for (size_t open = 0; open <= 1200; open++) {
        uint64_t w = pregreet_wait_ms(6000, 2000, open, 1000);

        assert_true(w <= last);
        assert_true(w >= 2000 && w <= 6000);
        last = w;
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pregreet_wait_table),
        cmocka_unit_test(test_pregreet_wait_monotonic),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
