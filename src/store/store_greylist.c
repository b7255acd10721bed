/*
 * store_greylist: the greylist table (schema 004) behind the store's
 * threads. One job per attempt of a triplet: the reader answers what needs
 * no write (an early retry, a pass of a triplet refreshed lately); the rest
 * goes on to the writer, which reads the row again inside its transaction,
 * decides with the same rules, writes the row and deletes a few expired
 * ones, in the job's savepoint of the group commit.
 * Owns: each job's struct store__gjob (the triplet, the rules, the answer)
 * until its callback has run.
 * Threads: store_greylist_async and store__greylist_complete on the loop
 * thread; store__greylist_read on the reader, store__greylist_write on the
 * writer thread.
 * Errors: every job gets one callback: 0 with the answer, MXD_ESTORE
 * (SQLite: the job's row changes rolled back) or MXD_ECLOSING.
 * Does not: build the triplet (check_greylist.c and greylist.c do), decide
 * who is exempt, or time anything: the caller's clock is in the rules, so
 * tests run on a fake one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "store/store.h"
#include "store/store_impl.h"

/* Expired rows each writer job deletes: every row was written by a writer
 * job, so deleting more than one per job keeps up with any inflow. */
#define GREY_EXPIRE_BATCH 8

struct grey_row {
    bool found;
    int64_t first_seen, last_seen, passed, expires; /* passed: 0 for NULL */
};

struct store__gjob {
    struct store_grey_rules rules;
    struct store_grey_answer answer;
    const char *client, *sender, *rcpt; /* into text */
    char text[];
};

#define STORE_GREY_NAME(e, s) s,
static const char *const grey_state_names[] = {STORE_GREY_STATES(STORE_GREY_NAME)};

const char *
store_grey_state_name(enum store_grey_state s)
{
    return (unsigned)s < sizeof(grey_state_names) / sizeof(grey_state_names[0])
               ? grey_state_names[s]
               : "unknown";
}

/* The rules, for the row as read: the answer, the row to write (*out) and
 * whether it must be written. Both threads decide with this alone. */
static bool
grey_decide(const struct store_grey_rules *r, const struct grey_row *row,
            struct store_grey_answer *a, struct grey_row *out)
{
    int64_t now = r->now;
    bool write = true;

    memset(a, 0, sizeof(*a));
    *out = *row;
    if (!row->found || row->expires <= now) {
        /* never seen, or forgotten: the first attempt, until the window closes */
        a->expired = row->found;
        *out = (struct grey_row){true, now, now, 0, now + r->window};
        a->state = STORE_GREY_NEW;
    } else if (row->passed == 0 && now < row->first_seen + r->delay) {
        a->state = STORE_GREY_EARLY; /* first_seen stays: the delay runs from the first */
        write = false;
    } else if (row->passed == 0) {
        out->passed = out->last_seen = now;
        out->expires = now + r->ttl;
        a->state = STORE_GREY_RETRY;
    } else {
        write = now - row->last_seen >= STORE_GREY_REFRESH(r->ttl);
        if (write) {
            out->last_seen = now;
            out->expires = now + r->ttl;
        }
        a->state = STORE_GREY_KNOWN;
    }
    a->pass = a->state == STORE_GREY_RETRY || a->state == STORE_GREY_KNOWN;
    a->first_seen = out->first_seen;
    a->passed = out->passed;
    a->expires = out->expires;
    return write;
}

static void
bind_key(struct sdb_stmt *s, const struct store__gjob *g)
{
    sdb_bind_text(s, 1, g->client);
    sdb_bind_text(s, 2, g->sender);
    sdb_bind_text(s, 3, g->rcpt);
}

/* Reads the triplet's row with statement s: SDB_ROW, SDB_DONE, or
 * an error (s is reset in every case). */
static int
grey_get(struct sdb_stmt *s, const struct store__gjob *g, struct grey_row *row)
{
    int rc;

    memset(row, 0, sizeof(*row));
    bind_key(s, g);
    if ((rc = sdb_step(s)) == SDB_ROW) {
        row->found = true;
        row->first_seen = sdb_col_i64(s, 0);
        row->last_seen = sdb_col_i64(s, 1);
        row->passed = sdb_col_i64(s, 2); /* NULL reads as 0 */
        row->expires = sdb_col_i64(s, 3);
    }
    sdb_reset(s);
    return rc;
}

/* ---- reader thread ------------------------------------------------------ */

bool
store__greylist_read(struct store_conn *c, struct store_job *j)
{
    struct store__gjob *g = j->g;
    struct grey_row row, out;
    int rc = grey_get(c->stmt[STORE_R_GREY_GET], g, &row);

    if (rc != SDB_ROW && rc != SDB_DONE) {
        /* the writer may still manage; it reports its own failure */
        log_msg(LOG_WARN, NULL, "store", "greylist read failed reason=\"%s\"", sdb_errmsg(c->db));
        return false;
    }
    if (grey_decide(&g->rules, &row, &g->answer, &out))
        return false;
    j->status = 0;
    return true;
}

/* ---- writer thread ------------------------------------------------------ */

int
store__greylist_write(struct store_writer *w, struct store_job *j)
{
    struct store__gjob *g = j->g;
    struct sdb_stmt *s = w->c.stmt[STORE_W_GREY_PUT];
    struct grey_row row, out;
    int rc = grey_get(w->c.stmt[STORE_W_GREY_GET], g, &row);

    if (rc != SDB_ROW && rc != SDB_DONE) {
        store__writer_reason(w, "%s: %s", store__sql[STORE_W_GREY_GET].label, sdb_errmsg(w->c.db));
        return MXD_ESTORE;
    }
    g->answer.written = grey_decide(&g->rules, &row, &g->answer, &out);
    if (g->answer.written) {
        bind_key(s, g);
        sdb_bind_i64(s, 4, out.first_seen);
        sdb_bind_i64(s, 5, out.last_seen);
        if (out.passed != 0)
            sdb_bind_i64(s, 6, out.passed);
        else
            sdb_bind_null(s, 6);
        sdb_bind_i64(s, 7, out.expires);
        if ((rc = store__writer_exec(w, STORE_W_GREY_PUT)) != 0)
            return rc;
    }
    s = w->c.stmt[STORE_W_GREY_EXPIRE];
    sdb_bind_i64(s, 1, g->rules.now);
    sdb_bind_i64(s, 2, GREY_EXPIRE_BATCH);
    return store__writer_exec(w, STORE_W_GREY_EXPIRE);
}

/* ---- loop thread -------------------------------------------------------- */

void
store__greylist_complete(struct store_job *j)
{
    if (j->cb.greylist != NULL)
        j->cb.greylist(j->arg, j->status, j->status == 0 ? &j->g->answer : NULL);
    free(j->g);
    j->g = NULL;
}

void
store_greylist_async(struct store *st, const char *client, const char *sender, const char *rcpt,
                     const struct store_grey_rules *r, store_greylist_cb cb, void *arg)
{
    struct store_job *j = xcalloc(1, sizeof(*j));
    size_t cl, sl, rl;
    struct store__gjob *g;

    client = client != NULL ? client : "";
    sender = sender != NULL ? sender : "";
    rcpt = rcpt != NULL ? rcpt : "";
    cl = strlen(client);
    sl = strlen(sender);
    rl = strlen(rcpt);
    g = xcalloc(1, sizeof(*g) + cl + sl + rl + 3);
    g->rules = *r;
    g->client = memcpy(g->text, client, cl + 1);
    g->sender = memcpy(g->text + cl + 1, sender, sl + 1);
    g->rcpt = memcpy(g->text + cl + sl + 2, rcpt, rl + 1);
    j->kind = STORE_JOB_GREYLIST;
    j->g = g;
    j->cb.greylist = cb;
    j->arg = arg;
    store__submit(st, j, false);
}
