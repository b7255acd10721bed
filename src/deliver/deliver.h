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

/* Issue 22: whether r, of the message m being accepted now, goes into the
 * queue held instead of queued: its domain is a backup domain whose
 * primary the watcher knows is down (the state in which deliver would
 * fail it at once, without a connection: deliver__dest_run). Then
 * r->held_reply and r->held_next are what that failed attempt would
 * record, logged and counted as it would be. Loop thread. */
bool deliver_hold_at_accept(struct deliver *d, const struct store_msg *m, struct store_rcpt *r);

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

/* ---- what outbound TLS applies to a domain (mxctl tls-policy) ---------- */

#define DELIVER_TLS_HOPS_MAX 16

struct deliver_tls_hop {
    char host[256]; /* MX host, configured host, address or socket path */
    unsigned port;  /* 0: a unix socket */
    char state[16]; /* TLSA: "secure", "none", "bogus", "error" */
    size_t records; /* secure: TLSA records, and how many are usable for SMTP */
    size_t usable;
    char why[200];
};

struct deliver_tls_report {
    char domain[256];
    char role[16];      /* "backup", "local" (LMTP), "remote" (not ours: DSNs to it) */
    enum conf_tls mode; /* the policy */
    char policy[16];    /* its name */
    char source[300];   /* where it comes from */
    char ca_file[256];  /* verify: "" for the system store */
    char next_hop[300]; /* "primary = mx", "lmtp = ..." */
    char mx[16];        /* the MX answer's DNSSEC verdict, or "-" */
    size_t nhops;
    struct deliver_tls_hop hops[DELIVER_TLS_HOPS_MAX];
    char applies[400];    /* what the policy makes of the records, in words */
    char requiretls[300]; /* what becomes of a REQUIRETLS message (RFC 8689) */
    char mta_sts[300];    /* the MTA-STS policy known for the domain now, its age */
    bool sts_enforce;     /* an enforce policy is in force: MX hosts get verified TLS */
};

/* r is owned by the callback (free()). */
typedef void (*deliver_tls_report_cb)(void *arg, struct deliver_tls_report *r);

/* Looks up what applies to domain now (MX, addresses and TLSA through the
 * validating resolver); cb on the loop thread, maybe from inside this
 * call (nothing to look up). domain is copied. */
void deliver_tls_report_async(struct deliver *d, const char *domain, deliver_tls_report_cb cb,
                              void *arg);

#endif
