/*
 * store_screen: the store's jobs for the screening's memory (schema 005,
 * table screen): a lookup of one client's passes on the reader thread, and
 * a record of a batch of passes on the writer thread, in its own savepoint
 * inside the writer's group-commit transaction, like any job.
 * Owns: each job's struct store__sjob (the client asked about, the passes
 * handed over or read) until its callback has run.
 * Threads: store_screen_* on the loop thread; store__screen_read on the
 * reader, store__screen_write on the writer, store__screen_complete on the
 * loop thread.
 * Errors: every job gets one callback: 0, MXD_ESTORE (SQLite: a record's
 * rows are rolled back, the passes are lost, nothing else is) or
 * MXD_ECLOSING.
 * Does not: decide who passed or for how long (src/check/screen.c does),
 * or cache anything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "base/log.h"
#include "store/store.h"
#include "store/store_impl.h"

/* Expired rows a record job deletes: a few per job keeps every job short
 * and still outruns the passes that expire (each pass is recorded once
 * per screen_ttl at most). */
#define SCREEN_EXPIRE_PER_JOB 32
/* Rows one client can have: one per test, and a few tests. */
#define SCREEN_PASSES_MAX 8

struct store__sjob {
    int64_t now;
    char client[STORE_SCREEN_CLIENT_MAX];              /* lookup */
    struct store_screen_pass *passes;                  /* record: owned */
    size_t n;                                          /* record: passes; lookup: found */
    struct store_screen_pass found[SCREEN_PASSES_MAX]; /* lookup */
};

static void
copy_col(char *dst, size_t size, struct sdb_stmt *s, int i)
{
    snprintf(dst, size, "%s", sdb_col_str(s, i));
}

int
store__screen_read(struct store_conn *c, struct store_job *j)
{
    struct store__sjob *d = j->s;
    struct sdb_stmt *s = c->stmt[STORE_R_SCREEN_GET];
    int rc;

    sdb_bind_text(s, 1, d->client);
    sdb_bind_i64(s, 2, d->now);
    while ((rc = sdb_step(s)) == SDB_ROW && d->n < SCREEN_PASSES_MAX) {
        struct store_screen_pass *p = &d->found[d->n++];

        copy_col(p->client, sizeof(p->client), s, 0);
        copy_col(p->test, sizeof(p->test), s, 1);
        p->passed = sdb_col_i64(s, 2);
        p->expires = sdb_col_i64(s, 3);
    }
    if (rc != SDB_ROW && rc != SDB_DONE) {
        log_msg(LOG_ERR, NULL, "store", "screen lookup failed client=%s reason=\"%s\"", d->client,
                sdb_errmsg(c->db));
        d->n = 0;
    }
    sdb_reset(s);
    return rc == SDB_ROW || rc == SDB_DONE ? 0 : MXD_ESTORE;
}

int
store__screen_write(struct store_writer *w, struct store_job *j)
{
    struct store__sjob *d = j->s;
    struct sdb_stmt *s = w->c.stmt[STORE_W_SCREEN_PUT];
    int rc;

    for (size_t i = 0; i < d->n; i++) {
        const struct store_screen_pass *p = &d->passes[i];

        sdb_bind_text(s, 1, p->client);
        sdb_bind_text(s, 2, p->test);
        sdb_bind_i64(s, 3, p->passed);
        sdb_bind_i64(s, 4, p->expires);
        if ((rc = store__writer_exec(w, STORE_W_SCREEN_PUT)) != 0)
            return rc;
    }
    s = w->c.stmt[STORE_W_SCREEN_EXPIRE];
    sdb_bind_i64(s, 1, d->now);
    sdb_bind_i64(s, 2, SCREEN_EXPIRE_PER_JOB);
    return store__writer_exec(w, STORE_W_SCREEN_EXPIRE);
}

void
store__screen_complete(struct store_job *j)
{
    struct store__sjob *d = j->s;
    bool ok = j->status == 0;

    if (j->kind == STORE_JOB_SCREEN_GET && j->cb.screen != NULL)
        j->cb.screen(j->arg, j->status, d->found, ok ? d->n : 0);
    else if (j->kind == STORE_JOB_SCREEN_PUT && j->cb.done != NULL)
        j->cb.done(j->arg, j->status);
    free(d->passes);
    free(d);
    j->s = NULL;
}

static struct store_job *
sjob_new(enum store_job_kind kind, int64_t now, void *arg)
{
    struct store_job *j = xcalloc(1, sizeof(*j));

    j->kind = kind;
    j->arg = arg;
    j->s = xcalloc(1, sizeof(*j->s));
    j->s->now = now;
    return j;
}

void
store_screen_lookup_async(struct store *st, const char *client, int64_t now, store_screen_cb cb,
                          void *arg)
{
    struct store_job *j = sjob_new(STORE_JOB_SCREEN_GET, now, arg);

    snprintf(j->s->client, sizeof(j->s->client), "%s", client != NULL ? client : "");
    j->cb.screen = cb;
    store__submit(st, j, false);
}

void
store_screen_record_async(struct store *st, struct store_screen_pass *passes, size_t n, int64_t now,
                          store_done_cb cb, void *arg)
{
    struct store_job *j = sjob_new(STORE_JOB_SCREEN_PUT, now, arg);

    j->s->passes = passes;
    j->s->n = passes != NULL ? n : 0;
    j->cb.done = cb;
    store__submit(st, j, true);
}
