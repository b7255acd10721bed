/* anvil: owns a table of clients in order of use (base/clru: keyed hash,
 * least recently used evicted first): {client key, its current minute's
 * counts and the minute before}. One thread (the loop's, in practice); pure: no clock, no
 * I/O; allocation failures panic (xmalloc).
 *
 * The window: two buckets per client, like Postfix's anvil starting at the
 * client's first event (so a burst from a new client falls in one bucket),
 * each window_ms long. An event goes into the current bucket; when it is
 * over, its counts become the previous bucket's (or both are cleared when
 * a whole bucket went by without an event). The rate is
 *
 *     current + ceil(previous * (window - elapsed) / window)
 *
 * where elapsed is the time since the current bucket began: the previous
 * minute's events weighted by the share of it still inside the sliding
 * window, as if they came evenly spread. The bound: the true count of
 * events in the last window_ms lies between current and current + previous,
 * and so does the estimate; N + 1 events in one bucket (N + 1 events of a
 * new client within window_ms) always give a rate of N + 1. Across a bucket
 * boundary the estimate can be off by at most the previous bucket's count:
 * a client kept under a limit N gets at most N events per bucket counted
 * below the limit, so at most 2N in any window_ms in the worst case of
 * timing (the bound Postfix's fixed window has), and N for a steady sender.
 * Rounding up errs by less than one event, towards the limit.
 *
 * Bounded memory: at most max_clients entries; a new client when the table
 * is full evicts the least recently used one. A client hammering past its
 * limit is used constantly and is never the one evicted; to push it out,
 * max_clients other clients must come between two of its events. Entries
 * whose counts have run out (no event for two windows) are freed from the
 * tail as the table is used, so a quiet table shrinks. Every operation is
 * O(1) (clru). */
#include "check/anvil.h"

#include <stdlib.h>
#include <string.h>

#include "base/clru.h"
#include "base/iptab.h"
#include "base/util.h"

struct anvil_client {
    struct clru_entry h; /* first: the table's entry is ours */
    uint64_t start_ms;   /* the current bucket began */
    uint32_t cur[ANVIL_NRULES], old[ANVIL_NRULES];
};

struct anvil {
    struct clru *t;
    uint64_t window_ms;
};

static const char *const rule_names[] = {
#define ANVIL_RULE_NAME(id, name) name,
    ANVIL_RULES(ANVIL_RULE_NAME)
#undef ANVIL_RULE_NAME
};

const char *
anvil_rule_name(enum anvil_rule rule)
{
    return (unsigned)rule < ANVIL_NRULES ? rule_names[rule] : "?";
}

struct anvil *
anvil_new(size_t max_clients, uint64_t window_ms, uint64_t seed)
{
    struct anvil *a;

    if (max_clients == 0 || window_ms == 0)
        mxd_panic("anvil_new: max_clients and window_ms must be > 0");
    a = xcalloc(1, sizeof(*a));
    a->t = clru_new(max_clients, sizeof(struct anvil_client), seed);
    a->window_ms = window_ms;
    return a;
}

void
anvil_free(struct anvil *a)
{
    if (a == NULL)
        return;
    clru_free(a->t);
    free(a);
}

size_t
anvil_size(const struct anvil *a)
{
    return clru_size(a->t);
}

/* No event for two windows: its counts are all zero now. */
static bool
stale(const struct anvil *a, const struct anvil_client *e, uint64_t now_ms)
{
    return now_ms >= e->start_ms && now_ms - e->start_ms >= 2 * a->window_ms;
}

/* Moves e's buckets on to now_ms. */
static void
roll(const struct anvil *a, struct anvil_client *e, uint64_t now_ms)
{
    if (now_ms < e->start_ms || now_ms - e->start_ms < a->window_ms)
        return; /* (a clock that went back: the current bucket goes on) */
    if (now_ms - e->start_ms < 2 * a->window_ms) {
        memcpy(e->old, e->cur, sizeof(e->old));
        e->start_ms += a->window_ms;
    } else {
        memset(e->old, 0, sizeof(e->old));
        e->start_ms = now_ms;
    }
    memset(e->cur, 0, sizeof(e->cur));
}

/* The estimate (file comment); e rolled on to now_ms. */
static unsigned
rate(const struct anvil *a, const struct anvil_client *e, enum anvil_rule rule, uint64_t now_ms)
{
    uint64_t w = a->window_ms;
    uint64_t elapsed = now_ms > e->start_ms ? now_ms - e->start_ms : 0;
    uint64_t r = e->cur[rule] + ((uint64_t)e->old[rule] * (w - elapsed) + w - 1) / w;

    return r > UINT32_MAX ? UINT32_MAX : (unsigned)r;
}

unsigned
anvil_hit(struct anvil *a, const struct sockaddr *sa, unsigned v6_prefix, enum anvil_rule rule,
          uint64_t now_ms)
{
    unsigned char key[IPTAB_KEY_LEN];
    struct anvil_client *e;
    bool added;

    if ((unsigned)rule >= ANVIL_NRULES)
        mxd_panic("anvil_hit: rule %d", (int)rule);
    iptab_key(sa, v6_prefix, key);
    e = (struct anvil_client *)clru_put(a->t, key, &added);
    if (added)
        e->start_ms = now_ms;
    roll(a, e, now_ms);
    if (e->cur[rule] < UINT32_MAX)
        e->cur[rule]++;
    /* Sweep: at most two entries with nothing left to count. */
    for (int i = 0; i < 2; i++) {
        struct anvil_client *old = (struct anvil_client *)clru_oldest(a->t);

        if (old == e || !stale(a, old, now_ms))
            break;
        clru_drop(a->t, &old->h);
    }
    return rate(a, e, rule, now_ms);
}

unsigned
anvil_rate(const struct anvil *a, const struct sockaddr *sa, unsigned v6_prefix,
           enum anvil_rule rule, uint64_t now_ms)
{
    unsigned char key[IPTAB_KEY_LEN];
    struct anvil_client *e, copy;

    if ((unsigned)rule >= ANVIL_NRULES)
        return 0;
    iptab_key(sa, v6_prefix, key);
    e = (struct anvil_client *)clru_peek(a->t, key);
    if (e == NULL)
        return 0;
    copy = *e;
    roll(a, &copy, now_ms);
    return rate(a, &copy, rule, now_ms);
}
