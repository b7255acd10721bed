/*
 * store_sts: the store's jobs for the MTA-STS policy cache (schema 009,
 * table mta_sts): a lookup of one domain's policy on the reader thread, and
 * a record of one fetched policy on the writer thread, in its own savepoint
 * inside the writer's group-commit transaction, like any job.
 * Owns: each job's struct store__tjob (the domain, the row read or to
 * write) until its callback has run.
 * Threads: store_sts_* on the loop thread; store__sts_read on the reader,
 * store__sts_write on the writer, store__sts_complete on the loop thread.
 * Errors: every job gets one callback: 0 (lookup: found), MXD_ENOENT
 * (lookup: no row that has not expired), MXD_ESTORE or MXD_ECLOSING.
 * Does not: parse or judge a policy (deliver_sts.c and sts_policy.c do).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "base/log.h"
#include "store/store.h"
#include "store/store_impl.h"

/* Expired rows a record job deletes. */
#define STS_EXPIRE_PER_JOB 8

struct store__tjob {
    int64_t now;
    bool found;
    struct store_sts_row row; /* row.policy owned */
};

int
store__sts_read(struct store_conn *c, struct store_job *j)
{
    struct store__tjob *t = j->t;
    struct sdb_stmt *s = c->stmt[STORE_R_STS_GET];
    int rc;

    sdb_bind_text(s, 1, t->row.domain);
    sdb_bind_i64(s, 2, t->now);
    if ((rc = sdb_step(s)) == SDB_ROW) {
        const char *id = sdb_col_text(s, 0);
        const char *pol = sdb_col_text(s, 1);

        snprintf(t->row.id, sizeof(t->row.id), "%s", id != NULL ? id : "");
        t->row.policy = xstrdup(pol != NULL ? pol : "");
        t->row.len = strlen(t->row.policy);
        t->row.fetched = sdb_col_i64(s, 2);
        t->row.expires = sdb_col_i64(s, 3);
        t->found = true;
    } else if (rc != SDB_DONE) {
        log_msg(LOG_ERR, NULL, "store", "mta-sts lookup failed domain=%s reason=\"%s\"",
                t->row.domain, sdb_errmsg(c->db));
    }
    sdb_reset(s);
    if (rc != SDB_ROW && rc != SDB_DONE)
        return MXD_ESTORE;
    return t->found ? 0 : MXD_ENOENT;
}

int
store__sts_write(struct store_writer *w, struct store_job *j)
{
    struct store__tjob *t = j->t;
    struct sdb_stmt *s = w->c.stmt[STORE_W_STS_PUT];
    int rc;

    sdb_bind_text(s, 1, t->row.domain);
    sdb_bind_text(s, 2, t->row.id);
    /* a policy is text: one with a NUL in it was refused when fetched */
    sdb_bind_text(s, 3, t->row.policy);
    sdb_bind_i64(s, 4, t->row.fetched);
    sdb_bind_i64(s, 5, t->row.expires);
    if ((rc = store__writer_exec(w, STORE_W_STS_PUT)) != 0)
        return rc;
    s = w->c.stmt[STORE_W_STS_EXPIRE];
    sdb_bind_i64(s, 1, t->now);
    sdb_bind_i64(s, 2, STS_EXPIRE_PER_JOB);
    return store__writer_exec(w, STORE_W_STS_EXPIRE);
}

void
store__sts_complete(struct store_job *j)
{
    struct store__tjob *t = j->t;

    if (j->kind == STORE_JOB_STS_GET && j->cb.sts != NULL)
        j->cb.sts(j->arg, j->status, j->status == 0 ? &t->row : NULL);
    else if (j->kind == STORE_JOB_STS_PUT && j->cb.done != NULL)
        j->cb.done(j->arg, j->status);
    free(t->row.policy);
    free(t);
    j->t = NULL;
}

static struct store_job *
tjob_new(enum store_job_kind kind, const char *domain, int64_t now, void *arg)
{
    struct store_job *j = xcalloc(1, sizeof(*j));

    j->kind = kind;
    j->arg = arg;
    j->t = xcalloc(1, sizeof(*j->t));
    j->t->now = now;
    snprintf(j->t->row.domain, sizeof(j->t->row.domain), "%s", domain);
    return j;
}

void
store_sts_lookup_async(struct store *st, const char *domain, int64_t now, store_sts_cb cb,
                       void *arg)
{
    struct store_job *j = tjob_new(STORE_JOB_STS_GET, domain, now, arg);

    j->cb.sts = cb;
    store__submit(st, j, false);
}

void
store_sts_record_async(struct store *st, const struct store_sts_row *row, int64_t now,
                       store_done_cb cb, void *arg)
{
    struct store_job *j = tjob_new(STORE_JOB_STS_PUT, row->domain, now, arg);

    snprintf(j->t->row.id, sizeof(j->t->row.id), "%s", row->id);
    j->t->row.len = row->len;
    j->t->row.policy = xmalloc(row->len + 1);
    memcpy(j->t->row.policy, row->policy, row->len);
    j->t->row.policy[row->len] = '\0';
    j->t->row.fetched = row->fetched;
    j->t->row.expires = row->expires;
    j->cb.done = cb;
    store__submit(st, j, true);
}
