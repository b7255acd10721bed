/* Unit tests for the scheduler's arithmetic: deliver_backoff (retries) and
 * deliver_pace_* (issue 18: slow start and release_rate). */
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

/* Issue 18: a table of events and the connection limit after each. */
enum { ACC, BACK, INIT };

static void
test_issue18_pace_window(void **state)
{
    static const struct {
        int ev;
        unsigned max, want;
    } steps[] = {
        {INIT, 20, 2}, /* at most 2 until the primary accepted a message */
        {INIT, 1, 1},  /* never past the destination's limit */
        {ACC, 20, 3},  {ACC, 20, 4},  {ACC, 20, 5}, {ACC, 20, 6},
        {BACK, 20, 3},                /* a 4xx, 421 or failed connection halves it */
        {BACK, 20, 1}, {BACK, 20, 1}, /* never below 1 */
        {ACC, 20, 2},  {ACC, 4, 3},   {ACC, 4, 4},  {ACC, 4, 4}, /* capped at max */
        {ACC, 3, 3},                                             /* a smaller limit wins at once */
    };
    struct deliver_pace p;

    (void)state;
    deliver_pace_init(&p);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        if (steps[i].ev == ACC)
            deliver_pace_accepted(&p, steps[i].max);
        else if (steps[i].ev == BACK)
            deliver_pace_backoff(&p);
        print_message("step %zu: window %u\n", i, p.window);
        assert_int_equal(deliver_pace_limit(&p, steps[i].max), steps[i].want);
    }
    /* the primary comes back: slow start again */
    deliver_pace_init(&p);
    assert_int_equal(deliver_pace_limit(&p, 20), 2);
}

static void
test_issue18_pace_rate(void **state)
{
    struct deliver_pace p;
    unsigned started = 0;

    (void)state;
    deliver_pace_init(&p);
    /* no cap: always now */
    assert_int_equal(deliver_pace_rate(&p, 0, 5), 0);
    assert_int_equal(deliver_pace_rate(&p, 0, 5), 0);
    /* 10/s: one now, the next 100 ms later, not before */
    assert_int_equal(deliver_pace_rate(&p, 10, 1000000), 0);
    assert_int_equal(deliver_pace_rate(&p, 10, 1000000), 100000);
    assert_int_equal(deliver_pace_rate(&p, 10, 1050000), 50000);
    assert_int_equal(deliver_pace_rate(&p, 10, 1100000), 0);
    /* a timer 3 ms late keeps the pace: the next is due at 1.2 s */
    assert_int_equal(deliver_pace_rate(&p, 10, 1203000), 0);
    assert_int_equal(deliver_pace_rate(&p, 10, 1203000), 97000);
    /* after an idle minute, no burst: one, then a full gap */
    assert_int_equal(deliver_pace_rate(&p, 10, 61000000), 0);
    assert_int_equal(deliver_pace_rate(&p, 10, 61000001), 99999);
    /* polled every millisecond for 10 s at 50/s: 500 starts */
    deliver_pace_init(&p);
    for (uint64_t t = 0; t < 10000000; t += 1000)
        started += deliver_pace_rate(&p, 50, t) == 0;
    assert_int_equal(started, 500);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_table),
        cmocka_unit_test(test_backoff_monotonic),
        cmocka_unit_test(test_issue18_pace_window),
        cmocka_unit_test(test_issue18_pace_rate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
