/* deliver_calc: the scheduler's arithmetic, pure so it can be tested:
 * retry backoff. Owns nothing; any thread. */
#include "deliver/deliver_calc.h"

uint64_t
deliver_backoff(unsigned attempts, uint64_t retry_min_s, uint64_t retry_max_s, double rand01)
{
    uint64_t delay = retry_min_s > 0 ? retry_min_s : 1;
    uint64_t jitter;

    /* attempts counts the failures so far (>= 1 here): retry_min after the
     * first, doubling after each further one, never past retry_max. */
    for (unsigned i = 1; i < attempts && delay < retry_max_s; i++)
        delay = delay > UINT64_MAX / 2 ? UINT64_MAX : delay * 2;
    if (delay > retry_max_s)
        delay = retry_max_s;
    /* Up to 10% more, so deferred mail does not come back in lock step. */
    if (rand01 < 0)
        rand01 = 0;
    if (rand01 > 1)
        rand01 = 1;
    jitter = (uint64_t)((double)delay * 0.1 * rand01);
    return jitter > UINT64_MAX - delay ? UINT64_MAX : delay + jitter;
}
