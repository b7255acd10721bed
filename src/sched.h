/* sched: the delivery scheduler: picks due recipients from the store and
 * hands them to LMTP sessions, records the outcomes, retries with backoff. */
#ifndef MXD_SCHED_H
#define MXD_SCHED_H

#include <stdint.h>

#include <uv.h>

#include "conf.h"
#include "store.h"
#include "util.h"

struct sched;

/* Starts the scheduler (it looks for due work at once: start-up resumes
 * whatever was queued or in flight). conf and store are borrowed. */
int sched_start(uv_loop_t *loop, const struct conf *conf, struct store *store,
                struct sched **out) MXD_WUR;

/* New work may be due (a message was committed, an operator flushed):
 * look again soon. Cheap; calls coalesce. */
void sched_kick(struct sched *s);

/* Stops picking, lets deliveries in flight finish or abort them, records
 * their outcomes, then calls cb. */
void sched_stop(struct sched *s, void (*cb)(void *arg), void *arg);

struct sched_stats {
    uint64_t delivered;
    uint64_t deferred;
    uint64_t bounced;
    uint64_t sessions; /* LMTP connections made */
    uint64_t in_flight; /* recipients being delivered now */
};

void sched_get_stats(const struct sched *s, struct sched_stats *out);

/* Seconds to wait before attempt number attempts+1 after a temporary
 * failure: retry_min doubled per earlier attempt, capped at retry_max, plus
 * up to 10% jitter from rand01 (0..1). Pure. */
uint64_t sched_backoff(unsigned attempts, uint64_t retry_min_s, uint64_t retry_max_s,
                       double rand01);

#endif
