/* store: durable queue (SQLite, or PostgreSQL shared by a cluster of nodes;
 * store/sdb.h) behind a writer thread with group commit. */
#ifndef MXD_STORE_H
#define MXD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"
#include "msg/dsnparam.h"
#include "store/sdb.h"

struct store;
struct uv_loop_s;

struct store_rcpt {
    char *address;   /* "local@domain" as received (owned) */
    char *domain;    /* lower-cased domain, for routing (owned) */
    unsigned notify; /* RCPT ... NOTIFY= bits (DSN_NOTIFY_*), 0 when not given */
    char *orcpt;     /* RCPT ... ORCPT= "type;address" decoded (owned), or NULL */
    /* Held at accept (issue 22): a backup domain whose primary the watcher
     * knows is down. The row a failed first attempt would leave (held,
     * attempts 1, next_attempt held_next, held_reply as its last reply),
     * written at once instead of queued, claimed, tried and deferred. NULL:
     * queued as usual (and always under the message's hold_reason). */
    char *held_reply;
    int64_t held_next;
};

/* One accepted message. Every pointer is owned by the struct. */
struct store_msg {
    char qid[24];
    int64_t received;  /* unix seconds */
    char *client_addr; /* numeric IP, "192.0.2.1" or "2001:db8::1" */
    char *helo;
    char *sender;     /* "" for the null sender <> */
    bool smtputf8;    /* MAIL ... SMTPUTF8 */
    bool utf8_needed; /* smtputf8, and the envelope or header is not ASCII */
    bool body_8bit;   /* BODY=8BITMIME */
    unsigned hops;    /* Received: fields in the stored message, ours included */
    struct store_rcpt *rcpts;
    size_t nrcpts;
    char *header; /* trace header(s) prepended to the stored body; may be NULL */
    size_t header_len;
    char *spool_path; /* file holding the first spool_len octets of the body, or NULL */
    uint64_t spool_len;
    char *body; /* the rest of the body, in memory; may be NULL */
    size_t body_len;
    /* The store's own (NULL when handed over): a large body on SQLite, made
     * durable in <database dir>/bodies under this path, holds the spool_len
     * octets past the header (spool file and memory; spool_path NULL then). */
    char *body_file;
    /* Quarantined (a content filter said so): every recipient is stored
     * held, with this reason as its last reply, until `mxctl release`;
     * NULL: queued as usual. */
    char *hold_reason;
    /* RFC 3461 (schema 007) */
    enum dsn_ret ret; /* MAIL ... RET= */
    char *envid;      /* MAIL ... ENVID=, decoded (owned), or NULL */
    bool return_auth; /* SPF pass for the MAIL FROM domain, or an aligned DKIM pass */
    /* RFC 8689 (schema 010) */
    bool requiretls;   /* MAIL ... REQUIRETLS */
    bool tls_optional; /* "TLS-Required: No" in the header, without REQUIRETLS */
    /* The client, for XFORWARD (schema 011) */
    char *client_name;    /* verified reverse DNS name, or NULL */
    unsigned client_port; /* its TCP port */
    bool esmtp;           /* it said EHLO, not HELO */
};

/* Frees msg and everything it owns (does not unlink the spool file). NULL ok. */
void store_msg_free(struct store_msg *msg);

/* status: 0 committed (msg_id is the new messages.id), or a negative MXD_E*;
 * after a failure nothing of the message is in the database. */
typedef void (*store_commit_cb)(void *arg, int status, int64_t msg_id);
/* status: 0 the address is in the recipients table (itself or its @domain
 * catch-all), MXD_ENOENT it is not, MXD_ESTORE the lookup failed. */
typedef void (*store_lookup_cb)(void *arg, int status);
typedef void (*store_closed_cb)(void *arg);

/* Where the queue is and, in cluster mode, who this node is. Copied. */
struct store_config {
    struct sdb_params db;
    const char *node_name; /* cluster (PostgreSQL): this node's name; NULL: the hostname */
    int64_t lease_s;       /* cluster: a node's claim on a recipient lasts this long unrenewed */
};

/* A SQLite store at path, for tests and tools. */
#define STORE_CONFIG_SQLITE(file_)                                                                 \
    ((struct store_config){.db = {.engine = SDB_SQLITE, .path = (file_)}})

/*
 * Opens the database (sdb_open) and starts the writer and reader threads.
 * Loop thread, at start-up (blocks while the schema is applied). On failure
 * returns MXD_E* and *err (caller frees) says why.
 */
int store_open(struct uv_loop_s *loop, const struct store_config *cfg, struct store **out,
               char **err) MXD_WUR;

/*
 * Queues msg (store takes ownership) for the next group commit. cb runs on
 * the loop thread once the transaction holding it has committed
 * (synchronous=FULL) or failed. Whatever happens, the store unlinks
 * msg->spool_path when it is done with it. After store_close() was called,
 * cb runs with MXD_ECLOSING and nothing is stored.
 */
void store_commit_async(struct store *st, struct store_msg *msg, store_commit_cb cb, void *arg);

/* Looks address (and "@" domain) up in the recipients table on the reader
 * thread; cb runs on the loop thread. Strings are copied. */
void store_rcpt_lookup_async(struct store *st, const char *address, const char *domain,
                             store_lookup_cb cb, void *arg);

/*
 * Finishes every queued job (their callbacks run), stops the threads, closes
 * the database cleanly and then calls cb on the loop thread; after cb the
 * store is freed and its uv handles closed.
 */
void store_close(struct store *st, store_closed_cb cb, void *arg);

struct store_stats {
    uint64_t commits;   /* messages committed */
    uint64_t failures;  /* messages whose commit failed */
    uint64_t batches;   /* transactions committed */
    uint64_t max_batch; /* most messages in one transaction */
    /* PostgreSQL: deferrals and holds recorded by the batched statement
     * (store_pgbatch.c), committed */
    uint64_t batched_outcomes;
};

/* Counters since store_open (loop thread). */
void store_get_stats(const struct store *st, struct store_stats *out);

/* ---- delivery and operator actions ------------------------------------ */

/* Recipient states, as stored in message_rcpts.state. */
#define STORE_RCPT_STATES(X)                                                                       \
    X(QUEUED, "queued")                                                                            \
    X(DEFERRED, "deferred") X(HELD, "held") X(DELIVERED, "delivered") X(BOUNCED, "bounced")
#define STORE_RCPT_ENUM(e, s) STORE_RCPT_##e,
enum store_rcpt_state { STORE_RCPT_STATES(STORE_RCPT_ENUM) };
#undef STORE_RCPT_ENUM
const char *store_rcpt_state_name(enum store_rcpt_state s);

/* A recipient due for delivery. */
struct store_drcpt {
    int64_t id; /* message_rcpts.id */
    char *address;
    char *domain;
    unsigned attempts;
    unsigned notify; /* DSN_NOTIFY_* bits, 0: not given */
    char *orcpt;     /* "type;address" as the sender gave it, or NULL */
};

/* A message with (some of) its due recipients; a list, oldest first. */
struct store_dmsg {
    struct store_dmsg *next;
    int64_t id; /* messages.id */
    char qid[24];
    int64_t received;
    char *sender; /* "" for <> */
    uint64_t size;
    bool smtputf8;
    bool utf8_needed; /* it cannot go to a next hop without SMTPUTF8 */
    bool body_8bit;
    unsigned hops;     /* Received: fields in the stored message (RFC 5321 6.3) */
    enum dsn_ret ret;  /* RFC 3461 RET= */
    char *envid;       /* RFC 3461 ENVID=, decoded, or NULL */
    bool return_auth;  /* the return path was authenticated at accept */
    bool warned;       /* the delay warning went out */
    bool requiretls;   /* RFC 8689 MAIL ... REQUIRETLS (schema 010) */
    bool tls_optional; /* RFC 8689 5 "TLS-Required: No", without REQUIRETLS */
    /* where it came from (schema 011), for XFORWARD; all owned */
    char *client_addr;
    char *helo;
    char *client_name;  /* NULL: none verified */
    char *client_port;  /* decimal, NULL: made here (a DSN) or not recorded */
    char *client_proto; /* "ESMTP", "SMTP", or NULL as client_port */
    struct store_drcpt *rcpts;
    size_t nrcpts;
};

void store_dmsg_free_list(struct store_dmsg *list);

/* list: owned by the callback. next_due: earliest next_attempt > now of any
 * queued/deferred recipient, 0 when there is none. */
typedef void (*store_due_cb)(void *arg, int status, struct store_dmsg *list, int64_t next_due);

/*
 * Finds recipients in state queued or deferred with next_attempt <= now,
 * oldest next_attempt first, at most limit of them, leaving out the ids in
 * skip[0..nskip) (deliveries in flight; copied), grouped by message. Uses
 * the message_rcpts_due index. Reader thread; cb on the loop thread.
 * PostgreSQL (cluster mode): the recipients returned are claimed with this
 * node's lease (node_name, lease_s), which the store renews every
 * lease_s / 3 while the node lives and an outcome ends; recipients another
 * node holds a live lease on are left out, and next_due is never more than
 * a few seconds away (other nodes queue mail too, or die holding leases).
 */
void store_due_async(struct store *st, int64_t now, size_t limit, const int64_t *skip, size_t nskip,
                     store_due_cb cb, void *arg);

/* data[0..len) is valid only during the callback; total is the body size. */
typedef void (*store_body_cb)(void *arg, int status, const char *data, size_t len, uint64_t total);

/* Reads up to max octets of message msg_id's stored body (our Received:
 * header included) from offset. Reader thread; cb on the loop thread.
 * MXD_ENOENT when the message is gone. */
void store_body_read_async(struct store *st, int64_t msg_id, uint64_t offset, size_t max,
                           store_body_cb cb, void *arg);

/* The result of one delivery attempt for one recipient. */
struct store_outcome {
    int64_t rcpt_id;
    int64_t msg_id;
    enum store_rcpt_state state; /* DELIVERED, DEFERRED, HELD (backup: waits for the primary)
                                    or BOUNCED */
    int64_t next_attempt;        /* DEFERRED: when to try again */
    char *last_reply;            /* owned: "250 2.0.0 ...", "451 4.4.1 connect failed ..." */
    char *remote_mta;            /* owned, may be NULL: who answered */
    /* DELIVERED: the success DSN the sender may get (NOTIFY=SUCCESS):
     * NONE when the next hop took the DSN parameters over (it speaks DSN),
     * DELIVERED into a mailbox (LMTP), RELAYED to a next hop without DSN */
    enum store_success {
        STORE_SUCCESS_NONE,
        STORE_SUCCESS_DELIVERED,
        STORE_SUCCESS_RELAYED
    } success;
};

/* status: 0 or MXD_E*. */
typedef void (*store_done_cb)(void *arg, int status);

/*
 * Records outcomes (each attempts + 1, state, next_attempt, last_reply) in
 * one transaction. In the same transaction: a message whose recipients are
 * now all delivered or bounced is deleted; for the bounced recipients of a
 * message whose sender is not <>, one DSN per message (dsn_compose, with
 * the original headers) is inserted as a new queued message from <> to the
 * original sender. Takes ownership of list[0..n) and the array. Writer
 * thread; cb on the loop thread (may be NULL).
 */
void store_outcomes_async(struct store *st, struct store_outcome *list, size_t n, store_done_cb cb,
                          void *arg);

enum store_op {
    STORE_OP_FLUSH,   /* arg: domain or NULL/"" for all: queued/deferred -> due now */
    STORE_OP_HOLD,    /* arg: qid: queued/deferred recipients -> held */
    STORE_OP_RELEASE, /* arg: qid: held -> queued, due now */
    STORE_OP_DELETE,  /* arg: qid: the message and its recipients are removed, no DSN */
    STORE_OP_BOUNCE,  /* arg: qid: every recipient not final -> bounced (5.0.0), with a DSN */
};

/* Operator actions. status: 0, MXD_ENOENT (no such qid, or FLUSH matched
 * nothing is still 0), MXD_ESTORE. Writer thread; cb on the loop thread. */
void store_op_async(struct store *st, enum store_op op, const char *arg, store_done_cb cb,
                    void *cbarg);

/* ---- screening passes (schema 005) --------------------------------------- */

#define STORE_SCREEN_CLIENT_MAX 48 /* "2001:db8:1:2::/64", NUL included */
#define STORE_SCREEN_TEST_MAX   16 /* "pregreet", NUL included */

/* A client that passed a screening test, remembered until expires. */
struct store_screen_pass {
    char client[STORE_SCREEN_CLIENT_MAX]; /* "192.0.2.1" or "2001:db8:1:2::/64" */
    char test[STORE_SCREEN_TEST_MAX];
    int64_t passed, expires; /* unix seconds */
};

/* status 0: passes[0..n) are the client's passes that have not expired
 * (n may be 0; valid during the call only), or MXD_ESTORE / MXD_ECLOSING
 * with n = 0. */
typedef void (*store_screen_cb)(void *arg, int status, const struct store_screen_pass *passes,
                                size_t n);

/* The passes of client (copied) that expire after now. Reader thread; cb on
 * the loop thread. */
void store_screen_lookup_async(struct store *st, const char *client, int64_t now,
                               store_screen_cb cb, void *arg);

/* Records passes[0..n) (takes ownership of the array): each becomes its
 * (client, test) row, keeping the later expiry of the two; a few rows
 * expired at now are deleted in the same job. One writer job in the group
 * commit, in a savepoint of its own: a failure loses these passes, never a
 * message. cb (may be NULL) on the loop thread. */
void store_screen_record_async(struct store *st, struct store_screen_pass *passes, size_t n,
                               int64_t now, store_done_cb cb, void *arg);

/* ---- MTA-STS policies (schema 009) ------------------------------------ */

/* One domain's cached MTA-STS (RFC 8461) policy. */
struct store_sts_row {
    char domain[254]; /* lower case, no trailing dot */
    char id[33];      /* the TXT record's id it was fetched for */
    char *policy;     /* the body as fetched, NUL-terminated (len octets) */
    size_t len;
    int64_t fetched, expires; /* unix seconds */
};

/* status 0: row (valid during the call only) is domain's policy, not
 * expired; MXD_ENOENT: none; MXD_ESTORE or MXD_ECLOSING. */
typedef void (*store_sts_cb)(void *arg, int status, const struct store_sts_row *row);

/* domain's policy (domain copied) that expires after now. Reader thread;
 * cb on the loop thread. */
void store_sts_lookup_async(struct store *st, const char *domain, int64_t now, store_sts_cb cb,
                            void *arg);

/* Records row (copied; replaces the domain's row) and deletes a few rows
 * expired at now. One writer job in its own savepoint: a failure loses
 * this row only. cb (may be NULL) on the loop thread. */
void store_sts_record_async(struct store *st, const struct store_sts_row *row, int64_t now,
                            store_done_cb cb, void *arg);

/* ---- greylisting (schema 004) ---------------------------------------- */

/* What a greylisted triplet's attempt was: the first (or the first since
 * its row expired), a retry before the delay, the retry that passes, or an
 * attempt of a triplet that passed before. */
#define STORE_GREY_STATES(X)  X(NEW, "new") X(EARLY, "early") X(RETRY, "retry") X(KNOWN, "known")
#define STORE_GREY_ENUM(e, s) STORE_GREY_##e,
enum store_grey_state { STORE_GREY_STATES(STORE_GREY_ENUM) };
#undef STORE_GREY_ENUM
const char *store_grey_state_name(enum store_grey_state s);

/* The clock and the rules of one attempt, in seconds (now: unix time). A
 * pass of a known triplet rewrites its row (expires = now + ttl) only when
 * the last write is STORE_GREY_REFRESH(ttl) old or more: a busy triplet
 * costs one write a day, not one per message, and lives ttl minus at most
 * that after its last pass. */
struct store_grey_rules {
    int64_t now;
    int64_t delay;  /* a retry passes from first_seen + delay ... */
    int64_t window; /* ... until first_seen + window (then it starts afresh) */
    int64_t ttl;    /* a triplet that passed is remembered this long */
};
#define STORE_GREY_REFRESH(ttl) ((ttl) / 10 < 86400 ? (ttl) / 10 : 86400)

struct store_grey_answer {
    bool pass;
    enum store_grey_state state;
    bool expired;       /* NEW: the triplet had a row, expired */
    int64_t first_seen; /* of the triplet, after this attempt */
    int64_t passed;     /* when it first passed; 0 while greylisted */
    int64_t expires;
    bool written; /* the writer recorded this attempt (false: the reader answered) */
};

/* status: 0 (answer filled in), MXD_ESTORE or MXD_ECLOSING (answer NULL). */
typedef void (*store_greylist_cb)(void *arg, int status, const struct store_grey_answer *answer);

/*
 * The attempt of triplet (client, sender, recipient) at r->now: pass or
 * defer, and the triplet's row updated in the same writer transaction
 * (group commit). An attempt that changes nothing (an early retry; a pass
 * with a fresh row) is answered by the reader thread alone. Each writer
 * job also deletes a few expired rows. Strings and rules are copied; cb
 * runs on the loop thread.
 */
void store_greylist_async(struct store *st, const char *client, const char *sender,
                          const char *rcpt, const struct store_grey_rules *r, store_greylist_cb cb,
                          void *arg);

/* ---- synced recipient lists and the callahead cache (schema 006) ------ */

/* status 0: source was read whole at least once; listed: address (or its
 * "@"domain catch-all) is on its list; synced: when it was last read, unix
 * seconds. MXD_ENOENT: source was never read (listed false, synced 0);
 * MXD_ESTORE, MXD_ECLOSING. */
typedef void (*store_sync_lookup_cb)(void *arg, int status, bool listed, int64_t synced);

/* Looks address up in source's list (one snapshot for the list and its
 * time). Strings are copied. Reader thread; cb on the loop thread. */
void store_sync_lookup_async(struct store *st, const char *source, const char *address,
                             const char *domain, store_sync_lookup_cb cb, void *arg);

/* status: 0 or MXD_E*; changed: the list differed from the stored one. */
typedef void (*store_sync_cb)(void *arg, int status, bool changed);

/* source's list is now list: n addresses, each NUL-terminated, packed in
 * list[0..len) (the store takes ownership), read whole at now. When digest
 * is the stored one only the time moves; otherwise the rows are replaced,
 * all in one writer job (a reader sees the old list or the new). Strings
 * copied; cb (may be NULL) on the loop thread. */
void store_sync_replace_async(struct store *st, const char *source, char *list, size_t len,
                              size_t n, const char *digest, int64_t now, store_sync_cb cb,
                              void *arg);

/* A remembered callahead answer. */
struct store_verify {
    bool ok;                   /* the primary took the address (else it refused it) */
    int64_t verified, expires; /* unix seconds */
};

/* status 0: v is the answer for the address (valid during the call);
 * MXD_ENOENT none that has not expired; MXD_ESTORE, MXD_ECLOSING. */
typedef void (*store_verify_cb)(void *arg, int status, const struct store_verify *v);

/* The remembered answer for address that expires after now. Reader thread;
 * cb on the loop thread. */
void store_verify_get_async(struct store *st, const char *address, int64_t now, store_verify_cb cb,
                            void *arg);

/* Remembers v for address (replacing the answer before it); the job also
 * deletes a few rows expired at v->verified. Writer thread; no callback
 * (a failure is logged and loses this answer only). */
void store_verify_put_async(struct store *st, const char *address, const struct store_verify *v);

/* Who gets the DSNs the store writes (issue 18). */
enum store_bounce_policy {
    STORE_BOUNCE_AUTHENTICATED, /* only an authenticated return path (return_auth) */
    STORE_BOUNCE_ALWAYS,
    STORE_BOUNCE_NEVER,
};
struct store_dsn_rules {
    enum store_bounce_policy policy;
    int64_t delay_warning_s; /* a deferred message this old gets one warning; 0: never */
};
/* Sets the rules for the DSNs written from the next batch on (start-up
 * and reload). Copied. Loop thread. */
void store_set_dsn_rules(struct store *st, const struct store_dsn_rules *rules);

/* Our hostname for the DSNs the store writes (Reporting-MTA, From:
 * MAILER-DAEMON@hostname). Call once after store_open. Copied. */
void store_set_hostname(struct store *st, const char *hostname);

#endif
