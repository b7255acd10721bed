/*
 * store_rcpt: the store's jobs for what the recipient policy remembers
 * (schema 006): the synced recipient lists of `recipients = sync`
 * (rcpt_sources, rcpt_synced) and the callahead answers of `recipients =
 * primary` (verify_cache). Lookups run on the reader thread; a list's
 * replacement and an answer's record on the writer, each in its own
 * savepoint of the group-commit transaction, so a list is swapped whole.
 * Owns: each job's struct store__rjob (its strings, a list handed over)
 * until its callback has run.
 * Threads: store_sync_* and store_verify_* on the loop thread;
 * store__rcpt_read on the reader, store__rcpt_write and store__rcpt_failed
 * on the writer, store__rcpt_complete on the loop thread.
 * Errors: every job with a callback gets one: 0, MXD_ENOENT (a lookup
 * found nothing), MXD_ESTORE (a failed write leaves the rows as they were)
 * or MXD_ECLOSING.
 * Does not: read sources or decide freshness (src/check/rcptsync.c and
 * check_rcpt.c do), or cache anything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "base/log.h"
#include "store/store.h"
#include "store/store_impl.h"

/* Expired callahead answers one record deletes. */
#define VERIFY_EXPIRE_PER_JOB 16

enum rjob_op { RJOB_SYNC_GET, RJOB_SYNC_PUT, RJOB_VERIFY_GET, RJOB_VERIFY_PUT };

struct store__rjob {
    enum rjob_op op;
    int64_t now;
    char *source, *address, *domain, *digest; /* owned; NULL when unused */
    char *list;                               /* SYNC_PUT: owned, n strings */
    size_t len, n;
    bool listed, changed; /* SYNC_GET, SYNC_PUT results */
    int64_t synced;       /* SYNC_GET */
    struct store_verify v;
    union {
        store_sync_lookup_cb sync_get;
        store_sync_cb sync_put;
        store_verify_cb verify;
    } cb;
};

static int
read_sync(struct store_conn *c, struct store__rjob *d)
{
    struct sdb_stmt *s = c->stmt[STORE_R_SYNC_GET];
    int rc;

    sdb_bind_text(s, 1, d->source);
    sdb_bind_text(s, 2, d->address);
    sdb_bind_text(s, 3, d->domain);
    rc = sdb_step(s);
    if (rc == SDB_ROW) {
        d->synced = sdb_col_i64(s, 0);
        d->listed = sdb_col_i64(s, 1) != 0;
    }
    sdb_reset(s);
    return rc == SDB_ROW ? 0 : rc == SDB_DONE ? MXD_ENOENT : MXD_ESTORE;
}

static int
read_verify(struct store_conn *c, struct store__rjob *d)
{
    struct sdb_stmt *s = c->stmt[STORE_R_VERIFY_GET];
    int rc;

    sdb_bind_text(s, 1, d->address);
    sdb_bind_i64(s, 2, d->now);
    rc = sdb_step(s);
    if (rc == SDB_ROW) {
        d->v.ok = sdb_col_i64(s, 0) != 0;
        d->v.verified = sdb_col_i64(s, 1);
        d->v.expires = sdb_col_i64(s, 2);
    }
    sdb_reset(s);
    return rc == SDB_ROW ? 0 : rc == SDB_DONE ? MXD_ENOENT : MXD_ESTORE;
}

int
store__rcpt_read(struct store_conn *c, struct store_job *j)
{
    struct store__rjob *d = j->rj;
    char esc[256];
    int rc = d->op == RJOB_SYNC_GET ? read_sync(c, d) : read_verify(c, d);

    if (rc == MXD_ESTORE)
        log_msg(LOG_ERR, NULL, "store", "%s failed address=%s reason=\"%s\"",
                d->op == RJOB_SYNC_GET ? "synced recipient lookup" : "callahead answer read",
                log_esc(esc, sizeof(esc), d->address, strlen(d->address)), sdb_errmsg(c->db));
    return rc;
}

/* The list is the stored one (same digest): only its time moves. */
static int
sync_unchanged(struct store_writer *w, struct store__rjob *d, bool *same)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_SYNC_DIGEST];
    int rc;

    sdb_bind_text(s, 1, d->source);
    rc = sdb_step(s);
    *same = rc == SDB_ROW && strcmp(sdb_col_text(s, 0), d->digest) == 0;
    sdb_reset(s);
    if (rc != SDB_ROW && rc != SDB_DONE) {
        store__writer_reason(w, "%s", sdb_errmsg(w->c.db));
        return MXD_ESTORE;
    }
    return 0;
}

static int
write_sync(struct store_writer *w, struct store__rjob *d)
{
    struct sdb_stmt *s;
    bool same = false;
    const char *a = d->list;
    int rc;

    if ((rc = sync_unchanged(w, d, &same)) != 0)
        return rc;
    d->changed = !same;
    if (!same) {
        sdb_bind_text(w->c.stmt[STORE_W_SYNC_CLEAR], 1, d->source);
        if ((rc = store__writer_exec(w, STORE_W_SYNC_CLEAR)) != 0)
            return rc;
        s = w->c.stmt[STORE_W_SYNC_ADD];
        for (size_t i = 0; i < d->n; i++, a += strlen(a) + 1) {
            sdb_bind_text(s, 1, d->source);
            sdb_bind_text(s, 2, a);
            if ((rc = store__writer_exec(w, STORE_W_SYNC_ADD)) != 0)
                return rc;
        }
    }
    s = w->c.stmt[STORE_W_SYNC_MARK];
    sdb_bind_text(s, 1, d->source);
    sdb_bind_i64(s, 2, d->now);
    sdb_bind_text(s, 3, d->digest);
    sdb_bind_i64(s, 4, (int64_t)d->n);
    return store__writer_exec(w, STORE_W_SYNC_MARK);
}

static int
write_verify(struct store_writer *w, struct store__rjob *d)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_VERIFY_PUT];
    int rc;

    sdb_bind_text(s, 1, d->address);
    sdb_bind_i64(s, 2, d->v.ok);
    sdb_bind_i64(s, 3, d->v.verified);
    sdb_bind_i64(s, 4, d->v.expires);
    if ((rc = store__writer_exec(w, STORE_W_VERIFY_PUT)) != 0)
        return rc;
    s = w->c.stmt[STORE_W_VERIFY_EXPIRE];
    sdb_bind_i64(s, 1, d->v.verified);
    sdb_bind_i64(s, 2, VERIFY_EXPIRE_PER_JOB);
    return store__writer_exec(w, STORE_W_VERIFY_EXPIRE);
}

int
store__rcpt_write(struct store_writer *w, struct store_job *j)
{
    return j->rj->op == RJOB_SYNC_PUT ? write_sync(w, j->rj) : write_verify(w, j->rj);
}

void
store__rcpt_failed(const struct store_job *j, const char *reason)
{
    const struct store__rjob *d = j->rj;
    char esc[320], what[600];

    if (d->op == RJOB_SYNC_PUT)
        log_esc(what, sizeof(what), d->source, strlen(d->source));
    else
        log_esc(what, sizeof(what), d->address, strlen(d->address));
    log_msg(LOG_ERR, NULL, "store", "%s failed %s=%s reason=%s",
            d->op == RJOB_SYNC_PUT ? "recipient list sync" : "callahead answer record",
            d->op == RJOB_SYNC_PUT ? "source" : "address", what,
            log_esc(esc, sizeof(esc), reason, strlen(reason)));
}

void
store__rcpt_complete(struct store_job *j)
{
    struct store__rjob *d = j->rj;
    int st = j->status;

    if (d->op == RJOB_SYNC_GET && d->cb.sync_get != NULL)
        d->cb.sync_get(j->arg, st, st == 0 && d->listed, st == 0 ? d->synced : 0);
    else if (d->op == RJOB_SYNC_PUT && d->cb.sync_put != NULL)
        d->cb.sync_put(j->arg, st, st == 0 && d->changed);
    else if (d->op == RJOB_VERIFY_GET && d->cb.verify != NULL)
        d->cb.verify(j->arg, st, st == 0 ? &d->v : NULL);
    free(d->source);
    free(d->address);
    free(d->domain);
    free(d->digest);
    free(d->list);
    free(d);
    j->rj = NULL;
}

static struct store_job *
rjob_new(enum rjob_op op, int64_t now, void *arg)
{
    struct store_job *j = xcalloc(1, sizeof(*j));

    j->kind =
        op == RJOB_SYNC_GET || op == RJOB_VERIFY_GET ? STORE_JOB_RCPT_GET : STORE_JOB_RCPT_PUT;
    j->arg = arg;
    j->rj = xcalloc(1, sizeof(*j->rj));
    j->rj->op = op;
    j->rj->now = now;
    return j;
}

static char *
dup_or_empty(const char *s)
{
    return xstrdup(s != NULL ? s : "");
}

void
store_sync_lookup_async(struct store *st, const char *source, const char *address,
                        const char *domain, store_sync_lookup_cb cb, void *arg)
{
    struct store_job *j = rjob_new(RJOB_SYNC_GET, 0, arg);

    j->rj->source = dup_or_empty(source);
    j->rj->address = dup_or_empty(address);
    j->rj->domain = dup_or_empty(domain);
    j->rj->cb.sync_get = cb;
    store__submit(st, j, false);
}

void
store_sync_replace_async(struct store *st, const char *source, char *list, size_t len, size_t n,
                         const char *digest, int64_t now, store_sync_cb cb, void *arg)
{
    struct store_job *j = rjob_new(RJOB_SYNC_PUT, now, arg);

    j->rj->source = dup_or_empty(source);
    j->rj->digest = dup_or_empty(digest);
    j->rj->list = list;
    j->rj->len = len;
    j->rj->n = list != NULL ? n : 0;
    j->rj->cb.sync_put = cb;
    store__submit(st, j, true);
}

void
store_verify_get_async(struct store *st, const char *address, int64_t now, store_verify_cb cb,
                       void *arg)
{
    struct store_job *j = rjob_new(RJOB_VERIFY_GET, now, arg);

    j->rj->address = dup_or_empty(address);
    j->rj->cb.verify = cb;
    store__submit(st, j, false);
}

void
store_verify_put_async(struct store *st, const char *address, const struct store_verify *v)
{
    struct store_job *j = rjob_new(RJOB_VERIFY_PUT, v->verified, NULL);

    j->rj->address = dup_or_empty(address);
    j->rj->v = *v;
    store__submit(st, j, true);
}
