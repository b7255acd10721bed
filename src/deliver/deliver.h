/* deliver: the delivery scheduler: picks due recipients from the store and
 * hands them to LMTP sessions, records the outcomes, retries with backoff. */
#ifndef MXD_DELIVER_H
#define MXD_DELIVER_H

#include <stdint.h>

#include <uv.h>

#include "base/conf.h"
#include "base/util.h"
#include "store/store.h"

struct deliver;

/* Starts the scheduler (it looks for due work at once: start-up resumes
 * whatever was queued or in flight). conf and store are borrowed. */
int deliver_start(uv_loop_t *loop, const struct conf *conf, struct store *store,
                  struct deliver **out) MXD_WUR;

/* Reload: routing, retry times and lifetimes come from conf from now on.
 * The previous conf must stay alive while d runs: destinations already
 * made (an LMTP server, a backup domain's primaries, the bounce relay)
 * point into it and keep its endpoints until restart. */
void deliver_set_conf(struct deliver *d, const struct conf *conf);

/* New work may be due (a message was committed, an operator flushed):
 * look again soon. Cheap; calls coalesce. */
void deliver_kick(struct deliver *s);

/* Makes the held and deferred mail of one domain due now (ETRN, the
 * primary watcher), then kicks. */
void deliver_flush_domain(struct deliver *s, const char *domain);

/* Stops picking, lets deliveries in flight finish or abort them, records
 * their outcomes, then calls cb. */
void deliver_stop(struct deliver *s, void (*cb)(void *arg), void *arg);

struct deliver_stats {
    uint64_t delivered;
    uint64_t deferred;
    uint64_t bounced;
    uint64_t sessions;  /* LMTP connections made */
    uint64_t in_flight; /* recipients being delivered now */
};

void deliver_get_stats(const struct deliver *s, struct deliver_stats *out);

#endif
