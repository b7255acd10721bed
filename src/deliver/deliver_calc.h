/* deliver_calc: the scheduler's arithmetic, pure (no loop, no store). */
#ifndef MXD_DELIVER_CALC_H
#define MXD_DELIVER_CALC_H

#include <stdint.h>

/* Seconds to wait before attempt number attempts+1 after a temporary
 * failure: retry_min doubled per earlier attempt, capped at retry_max, plus
 * up to 10% jitter from rand01 (0..1). Pure. */
uint64_t deliver_backoff(unsigned attempts, uint64_t retry_min_s, uint64_t retry_max_s,
                         double rand01);

/* Paced release to a backup domain's primary (issue 18): slow start, as
 * TCP's congestion window. window: connections allowed now; it starts at
 * DELIVER_PACE_START (and again each time the primary comes back), grows
 * by one per message the primary accepted up to the destination's limit,
 * and halves (never below 1) on a 4xx, a 421 or a connection that failed. */
#define DELIVER_PACE_START 2

struct deliver_pace {
    unsigned window;
    uint64_t next_us; /* release_rate: when the next message may start (loop time, us) */
};

void deliver_pace_init(struct deliver_pace *p);
/* A message accepted (some recipient got 2xx); max: the destination's limit. */
void deliver_pace_accepted(struct deliver_pace *p, unsigned max);
/* A temporary failure: 4xx to the transaction, 421, a lost or refused connection. */
void deliver_pace_backoff(struct deliver_pace *p);
/* The connections allowed now: the window, never past max. */
unsigned deliver_pace_limit(const struct deliver_pace *p, unsigned max);
/* release_rate (messages per second, 0: no cap): 0 when a message may start
 * at now_us (and it is counted), else the microseconds to wait first. */
uint64_t deliver_pace_rate(struct deliver_pace *p, unsigned rate, uint64_t now_us);

#endif
