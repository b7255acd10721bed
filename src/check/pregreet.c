/* pregreet: the pre-greet test's wait under load (pregreet.h). Owns
 * nothing; any thread; pure. */
#include "check/pregreet.h"

uint64_t
pregreet_wait_ms(uint64_t wait_ms, uint64_t stress_ms, size_t open, size_t max)
{
    uint64_t o = (uint64_t)open * 10, lo = (uint64_t)max * PREGREET_LOAD_LOW,
             hi = (uint64_t)max * PREGREET_LOAD_HIGH;

    if (stress_ms > wait_ms)
        stress_ms = wait_ms;
    if (max == 0 || o <= lo)
        return wait_ms;
    if (o >= hi)
        return stress_ms;
    /* o - lo < hi - lo = 2 max: the product stays far below 2^64 for any
     * wait a config can hold (a day in ms times 2e7 connections) */
    return wait_ms - (wait_ms - stress_ms) * (o - lo) / (hi - lo);
}
