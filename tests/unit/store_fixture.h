/*
 * store_fixture: the fixture of test_store_deliver: a temporary directory
 * (under $TMPDIR or /tmp) with queue.db, a real uv loop and the store on
 * it; callbacks that record what they saw; messages committed through the
 * store; rows set up and read back with a separate sqlite3 connection.
 * Static helpers, for one test program.
 */
#ifndef MXD_TEST_STORE_FIXTURE_H
#define MXD_TEST_STORE_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "base/util.h"
#include "store/store.h"

#define HOST "mx.example.test"

static const char *const op_rcpts[] = {"a@one.example", "b@two.example", "c@one.example"};

struct fx {
    char dir[512];
    char db[600];
    uv_loop_t loop;
    struct store *st;
    int seq;    /* callbacks so far, all kinds */
    int closed; /* closed_cb calls */
};

/* What one callback saw. */
struct res {
    struct fx *fx;
    int calls;
    int status;
    int64_t id;              /* commit */
    struct store_dmsg *list; /* due: owned */
    int64_t next_due;
    char *data; /* body: a copy */
    size_t len;
    uint64_t total;
};

/* ---- helpers ------------------------------------------------------------ */

static int
fx_setup(void **state)
{
    struct fx *fx = xcalloc(1, sizeof(*fx));
    const char *tmp = getenv("TMPDIR");

    snprintf(fx->dir, sizeof(fx->dir), "%s/test_store_deliver.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(fx->db, sizeof(fx->db), "%s/queue.db", fx->dir);
    if (uv_loop_init(&fx->loop) != 0)
        return -1;
    *state = fx;
    return 0;
}

static int
fx_teardown(void **state)
{
    static const char *const files[] = {"queue.db", "queue.db-wal", "queue.db-shm", "spool",
                                        "bodies"};
    struct fx *fx = *state;
    char path[700];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", fx->dir, files[i]);
        if (unlink(path) != 0)
            rmdir(path); /* bodies: the large bodies' directory, empty */
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static void
commit_cb(void *arg, int status, int64_t msg_id)
{
    struct res *r = arg;

    r->calls++;
    r->status = status;
    r->id = msg_id;
    r->fx->seq++;
}

static void
due_cb(void *arg, int status, struct store_dmsg *list, int64_t next_due)
{
    struct res *r = arg;

    r->calls++;
    r->status = status;
    r->list = list;
    r->next_due = next_due;
    r->fx->seq++;
}

static void
body_cb(void *arg, int status, const char *data, size_t len, uint64_t total)
{
    struct res *r = arg;

    assert_non_null(data);
    r->calls++;
    r->status = status;
    r->data = xmalloc(len + 1);
    memcpy(r->data, data, len);
    r->len = len;
    r->total = total;
    r->fx->seq++;
}

static void
done_cb(void *arg, int status)
{
    struct res *r = arg;

    r->calls++;
    r->status = status;
    r->fx->seq++;
}

static void
closed_cb(void *arg)
{
    struct fx *fx = arg;

    fx->closed++;
    fx->seq++;
}

static void
open_store(struct fx *fx)
{
    char *err = NULL;

    if (store_open(&fx->loop, &STORE_CONFIG_SQLITE(fx->db), &fx->st, &err) != 0)
        fail_msg("store_open: %s", err);
    store_set_hostname(fx->st, HOST);
}

static void
close_store(struct fx *fx)
{
    store_close(fx->st, closed_cb, fx);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->closed, 1);
    fx->st = NULL;
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

static void
run_until(struct fx *fx, int n)
{
    while (fx->seq < n)
        uv_run(&fx->loop, UV_RUN_ONCE);
}

static void sql_exec(const struct fx *fx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int64_t sql_int(const struct fx *fx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *sql_text(const struct fx *fx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int64_t count(const struct fx *fx, const char *table, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *sql_vtext(const struct fx *fx, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static sqlite3 *
sql_open(const struct fx *fx)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* The first column of the first row of a statement, as a new string (a
 * blob's octets, NUL-terminated), NULL when there is no row. */
static char *
sql_vtext(const struct fx *fx, const char *fmt, va_list ap)
{
    sqlite3 *db = sql_open(fx);
    sqlite3_stmt *s = NULL;
    char sql[1024], *out = NULL;
    int rc;

    vsnprintf(sql, sizeof(sql), fmt, ap);
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    if ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(s, 0);
        const void *p = sqlite3_column_blob(s, 0);

        out = xcalloc(1, n + 1);
        if (n > 0)
            memcpy(out, p, n);
    } else if (rc != SQLITE_DONE) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
}

/* Runs a statement that returns no row. */
static void
sql_exec(const struct fx *fx, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    assert_null(sql_vtext(fx, fmt, ap));
    va_end(ap);
}

static char *
sql_text(const struct fx *fx, const char *fmt, ...)
{
    va_list ap;
    char *out;

    va_start(ap, fmt);
    out = sql_vtext(fx, fmt, ap);
    va_end(ap);
    return out;
}

static int64_t
sql_int(const struct fx *fx, const char *fmt, ...)
{
    va_list ap;
    char *t;
    int64_t v;

    va_start(ap, fmt);
    t = sql_vtext(fx, fmt, ap);
    va_end(ap);
    assert_non_null(t);
    v = strtoll(t, NULL, 10);
    free(t);
    return v;
}

/* How many rows of table match the WHERE clause fmt. */
static int64_t
count(const struct fx *fx, const char *table, const char *fmt, ...)
{
    char where[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(where, sizeof(where), fmt, ap);
    va_end(ap);
    return sql_int(fx, "SELECT count(*) FROM %s WHERE %s", table, where);
}

/* Whether recipient id matches a WHERE clause. */
static bool
rcpt_is(const struct fx *fx, int64_t id, const char *where)
{
    return count(fx, "message_rcpts", "id = %lld AND %s", (long long)id, where) == 1;
}

/* How many recipients of message msg match a WHERE clause. */
static int64_t
nrcpts(const struct fx *fx, int64_t msg, const char *where)
{
    return count(fx, "message_rcpts", "message_id = %lld AND %s", (long long)msg, where);
}

/* A message from sender to rcpts (domain: after the '@', lower case);
 * received 1700000000, so every recipient is due then. */
static struct store_msg *
make_msg(const char *qid, const char *sender, const char *const *rcpts, size_t n)
{
    static const char body[] = "Subject: test\r\nFrom: <s@example.net>\r\n\r\nbody\r\n\r\nmore\r\n";
    struct store_msg *m = xcalloc(1, sizeof(*m));

    snprintf(m->qid, sizeof(m->qid), "%s", qid);
    m->received = 1700000000;
    m->client_addr = xstrdup("192.0.2.1");
    m->helo = xstrdup("client.example.net");
    m->sender = xstrdup(sender);
    m->rcpts = xcalloc(n, sizeof(*m->rcpts));
    m->nrcpts = n;
    for (size_t i = 0; i < n; i++) {
        m->rcpts[i].address = xstrdup(rcpts[i]);
        m->rcpts[i].domain = xstrdup(strrchr(rcpts[i], '@') + 1);
        for (char *p = m->rcpts[i].domain; *p; p++)
            *p = ascii_lower(*p);
    }
    m->header = xstrdup("Received: from client.example.net by " HOST "\r\n");
    m->header_len = strlen(m->header);
    m->body = xstrdup(body);
    m->body_len = strlen(body);
    return m;
}

/* Commits make_msg(...) and returns its messages.id. */
static int64_t
seed_msg(struct fx *fx, const char *qid, const char *sender, const char *const *rcpts, size_t n)
{
    struct res r = {.fx = fx};
    int want = fx->seq + 1;

    store_commit_async(fx->st, make_msg(qid, sender, rcpts, n), commit_cb, &r);
    run_until(fx, want);
    assert_int_equal(r.status, 0);
    return r.id;
}

/* The id of recipient i (in commit order) of message msg_id. */
static int64_t
rcpt_id(const struct fx *fx, int64_t msg_id, int i)
{
    return sql_int(fx,
                   "SELECT id FROM message_rcpts WHERE message_id = %lld ORDER BY id LIMIT 1 "
                   "OFFSET %d",
                   (long long)msg_id, i);
}

static void
set_rcpt(const struct fx *fx, int64_t id, const char *state, int64_t next)
{
    sql_exec(fx, "UPDATE message_rcpts SET state = '%s', next_attempt = %lld WHERE id = %lld",
             state, (long long)next, (long long)id);
}

static int
run_op(struct fx *fx, enum store_op op, const char *arg)
{
    struct res r = {.fx = fx};
    int want = fx->seq + 1;

    store_op_async(fx->st, op, arg, done_cb, &r);
    run_until(fx, want);
    assert_int_equal(r.calls, 1);
    return r.status;
}

static struct store_outcome
outcome(int64_t rcpt, int64_t msg, enum store_rcpt_state state, int64_t next, const char *reply,
        const char *remote)
{
    return (struct store_outcome){
        .rcpt_id = rcpt,
        .msg_id = msg,
        .state = state,
        .next_attempt = next,
        .last_reply = reply ? xstrdup(reply) : NULL,
        .remote_mta = remote ? xstrdup(remote) : NULL,
    };
}

/* Records n outcomes (copied from list) and returns the status. */
static int
run_outcomes(struct fx *fx, const struct store_outcome *list, size_t n)
{
    struct store_outcome *own = xcalloc(n ? n : 1, sizeof(*own));
    struct res r = {.fx = fx};
    int want = fx->seq + 1;

    if (n > 0)
        memcpy(own, list, n * sizeof(*own));
    store_outcomes_async(fx->st, own, n, done_cb, &r);
    run_until(fx, want);
    assert_int_equal(r.calls, 1);
    return r.status;
}

#endif
