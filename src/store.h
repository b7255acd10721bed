/* store: durable queue in SQLite behind a writer thread with group commit. */
#ifndef MXD_STORE_H
#define MXD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct store;
struct uv_loop_s;

struct store_rcpt {
    char *address; /* "local@domain" as received (owned) */
    char *domain;  /* lower-cased domain, for routing (owned) */
};

/* One accepted message. Every pointer is owned by the struct. */
struct store_msg {
    char qid[24];
    int64_t received;  /* unix seconds */
    char *client_addr; /* numeric IP, "192.0.2.1" or "2001:db8::1" */
    char *helo;
    char *sender;   /* "" for the null sender <> */
    bool smtputf8;  /* MAIL ... SMTPUTF8 */
    bool body_8bit; /* BODY=8BITMIME */
    struct store_rcpt *rcpts;
    size_t nrcpts;
    char *header; /* trace header(s) prepended to the stored body; may be NULL */
    size_t header_len;
    char *spool_path; /* file holding the first spool_len octets of the body, or NULL */
    uint64_t spool_len;
    char *body; /* the rest of the body, in memory; may be NULL */
    size_t body_len;
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

/*
 * Opens the database (db_open) and starts the writer and reader threads.
 * Loop thread, at start-up (blocks while the schema is applied). On failure
 * returns MXD_E* and *err (caller frees) says why.
 */
int store_open(struct uv_loop_s *loop, const char *path, struct store **out, char **err) MXD_WUR;

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
};

/* Counters since store_open (loop thread). */
void store_get_stats(const struct store *st, struct store_stats *out);

#endif
