/* Unit tests for deliver_backoff: the retry arithmetic of the scheduler. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "deliver/deliver_calc.h"

struct backoff_case {
    unsigned attempts;
    uint64_t min, max;
    double rand01;
    uint64_t want;
};

static const struct backoff_case backoff_cases[] = {
    /* retry_min 60, retry_max 3600: 60, 120, 240, ... capped at 3600 */
    {1, 60, 3600, 0.0, 60},
    {2, 60, 3600, 0.0, 120},
    {3, 60, 3600, 0.0, 240},
    {6, 60, 3600, 0.0, 1920},
    {7, 60, 3600, 0.0, 3600},
    {50, 60, 3600, 0.0, 3600},
    {1000000, 60, 3600, 0.0, 3600},
    /* jitter: at most 10% on top */
    {1, 60, 3600, 1.0, 66},
    {1, 60, 3600, 0.5, 63},
    {7, 60, 3600, 1.0, 3960},
    {1, 60, 3600, 7.0, 66},  /* clamped */
    {1, 60, 3600, -1.0, 60}, /* clamped */
    /* degenerate configurations */
    {0, 60, 3600, 0.0, 60},
    {3, 0, 3600, 0.0, 4},
    {3, 600, 60, 0.0, 60},
    {64, 1, UINT64_MAX, 0.0, 1ull << 63},
    {70, 1, UINT64_MAX, 0.0, UINT64_MAX},
    {70, 1, UINT64_MAX, 1.0, UINT64_MAX}, /* jitter saturates */
};

static void
test_backoff_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(backoff_cases) / sizeof(backoff_cases[0]); i++) {
        const struct backoff_case *c = &backoff_cases[i];

        print_message("case %zu: attempts=%u\n", i, c->attempts);
        assert_int_equal(deliver_backoff(c->attempts, c->min, c->max, c->rand01), c->want);
    }
}

/* The delay never decreases as failures accumulate. */
static void
test_backoff_monotonic(void **state)
{
    uint64_t prev = 0;

    (void)state;
    for (unsigned a = 1; a < 100; a++) {
        uint64_t v = deliver_backoff(a, 30, 86400, 0.0);

        assert_true(v >= prev);
        assert_true(v <= 86400);
        prev = v;
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_table),
        cmocka_unit_test(test_backoff_monotonic),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
