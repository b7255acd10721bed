/* deliver_calc: the scheduler's arithmetic, pure so it can be tested:
 * retry backoff, the release pacing (slow start, release_rate). Owns
 * nothing; any thread. */
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

void
deliver_pace_init(struct deliver_pace *p)
{
    p->window = DELIVER_PACE_START;
    p->next_us = 0;
}

void
deliver_pace_accepted(struct deliver_pace *p, unsigned max)
{
    if (p->window < max)
        p->window++;
}

void
deliver_pace_backoff(struct deliver_pace *p)
{
    p->window = p->window > 2 ? p->window / 2 : 1;
}

unsigned
deliver_pace_limit(const struct deliver_pace *p, unsigned max)
{
    unsigned w = p->window > 0 ? p->window : 1;

    return w < max ? w : max;
}

uint64_t
deliver_pace_rate(struct deliver_pace *p, unsigned rate, uint64_t now_us)
{
    uint64_t gap;

    if (rate == 0)
        return 0;
    gap = 1000000 / rate;
    if (p->next_us > now_us)
        return p->next_us - now_us;
    /* a timer that fired a little late keeps the pace (no drift); after an
     * idle time there is no burst: the next one a full gap from now */
    p->next_us = (now_us - p->next_us < gap ? p->next_us : now_us) + gap;
    return 0;
}
