/* qstat: owns one uv_work_t per request and the database connection it
 * opens on the threadpool (sdb_open, SQLite or PostgreSQL; closed before
 * the completion), which only reads, in one snapshot transaction. The loop
 * thread only starts requests and gets the results: the queries run where
 * blocking is allowed, and WAL mode (SQLite) or MVCC (PostgreSQL) lets
 * them read while the writer commits. Bounded: at most QSTAT_ROWS (domain,
 * state) rows, and the oldest held message of each domain with held
 * recipients. Where the engines' SQL differs there is one text for each.
 * Does not cache or keep a connection; callers ask at their own pace (a
 * scrape, a status tick). */
#include "store/qstat.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "store/dbconf.h"

#define QSTAT_ROWS 1000

struct qstat_req {
    uv_work_t work;
    enum sdb_engine engine;
    char *path, *conninfo; /* owned copies of the sdb_params' strings */
    qstat_cb cb;
    void *arg;
    struct metrics_queue q;
};

static const char qstat_rows_sql[] =
    "SELECT domain, state, count(*) FROM message_rcpts"
    " WHERE state IN ('queued', 'deferred', 'held') GROUP BY domain, state"
    " ORDER BY domain, state LIMIT 1000";
static const char qstat_msgs_sql[] = "SELECT count(*), coalesce(min(received), 0) FROM messages";
/* The oldest held message per domain (a backup domain's mail waiting for
 * its primary; an operator's holds too). Message ids grow in commit order,
 * so the smallest is the oldest (to the second): one covering scan of
 * message_rcpts_shape (schema 008; the IN term lets SQLite use the partial
 * index) and one message read per domain, rather than a read per held
 * recipient (0.1 s instead of 0.35 s with 50,000 held of 1,000,000).
 * PostgreSQL has no INDEXED BY: the same query, planned by itself. */
#define QSTAT_HELD_SQL(indexed_by_)                                                                \
    "SELECT x.domain, m.received FROM"                                                             \
    " (SELECT domain, min(message_id) AS mid FROM message_rcpts" indexed_by_                       \
    "  WHERE state IN ('queued', 'deferred', 'held') AND state = 'held' GROUP BY domain"           \
    "  LIMIT 1000) AS x"                                                                           \
    " JOIN messages AS m ON m.id = x.mid"
static const char qstat_held_sqlite[] = QSTAT_HELD_SQL(" INDEXED BY message_rcpts_shape");
static const char qstat_held_pg[] = QSTAT_HELD_SQL("");

static int
qstat_rows(struct sdb *db, struct metrics_queue *q)
{
    struct sdb_stmt *st = NULL;
    int rc = sdb_prepare(db, qstat_rows_sql, &st);

    q->rows = xcalloc(QSTAT_ROWS, sizeof(*q->rows));
    while (rc == 0 && (rc = sdb_step(st)) == SDB_ROW && q->nrows < QSTAT_ROWS) {
        struct metrics_queue_row *r = &q->rows[q->nrows++];
        const char *d = sdb_col_text(st, 0);
        const char *s = sdb_col_text(st, 1);

        snprintf(r->domain, sizeof(r->domain), "%s", d != NULL ? d : "");
        snprintf(r->state, sizeof(r->state), "%s", s != NULL ? s : "");
        r->recipients = (uint64_t)sdb_col_i64(st, 2);
        rc = 0;
    }
    sdb_finalize(st);
    return rc == SDB_DONE || rc == SDB_ROW ? 0 : MXD_ESTORE;
}

static int
qstat_held(struct sdb *db, struct metrics_queue *q)
{
    struct sdb_stmt *st = NULL;
    int rc = sdb_prepare(db, sdb_engine(db) == SDB_SQLITE ? qstat_held_sqlite : qstat_held_pg, &st);

    while (rc == 0 && (rc = sdb_step(st)) == SDB_ROW) {
        const char *d = sdb_col_text(st, 0);

        for (size_t i = 0; d != NULL && i < q->nrows; i++) {
            struct metrics_queue_row *r = &q->rows[i];

            if (strcmp(r->state, "held") == 0 && strcmp(r->domain, d) == 0)
                r->oldest_received = sdb_col_i64(st, 1);
        }
        rc = 0;
    }
    sdb_finalize(st);
    return rc == SDB_DONE ? 0 : MXD_ESTORE;
}

static void
qstat_work(uv_work_t *w)
{
    struct qstat_req *r = w->data;
    struct sdb_params p = {.engine = r->engine, .path = r->path, .conninfo = r->conninfo};
    struct sdb *db = NULL;
    struct sdb_stmt *st = NULL;
    char *err = NULL;

    r->q.now = (int64_t)time(NULL);
    if (sdb_open(&p, &db, &err) != 0)
        goto done;
    if (dbconf_snapshot(db) != 0 || qstat_rows(db, &r->q) != 0 || qstat_held(db, &r->q) != 0 ||
        sdb_prepare(db, qstat_msgs_sql, &st) != 0 || sdb_step(st) != SDB_ROW)
        goto done;
    r->q.messages = (uint64_t)sdb_col_i64(st, 0);
    r->q.oldest_received = sdb_col_i64(st, 1);
    r->q.valid = true;
done:
    free(err);
    sdb_finalize(st);
    if (db != NULL)
        dbconf_snapshot_end(db);
    sdb_close(db);
}

static void
qstat_done(uv_work_t *w, int status)
{
    struct qstat_req *r = w->data;

    if (status != 0)
        r->q.valid = false;
    r->cb(r->arg, &r->q);
    free(r->q.rows);
    free(r->path);
    free(r->conninfo);
    free(r);
}

void
qstat_async(uv_loop_t *loop, const struct sdb_params *db, qstat_cb cb, void *arg)
{
    struct qstat_req *r = xcalloc(1, sizeof(*r));

    r->engine = db->engine;
    r->path = db->path != NULL ? xstrdup(db->path) : NULL;
    r->conninfo = db->conninfo != NULL ? xstrdup(db->conninfo) : NULL;
    r->cb = cb;
    r->arg = arg;
    r->work.data = r;
    if (uv_queue_work(loop, &r->work, qstat_work, qstat_done) != 0)
        mxd_panic("qstat: uv_queue_work failed");
}
