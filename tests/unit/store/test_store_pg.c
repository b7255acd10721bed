/*
 * test_store_pg: the group commit on PostgreSQL (store_pgbatch.c, issue 21)
 * stores what the SQLite store stores. The same messages go through
 * store_commit_async into a SQLite store (temporary directory) and a
 * PostgreSQL one (MXD_TEST_PG: a libpq connection string to a database this
 * test may empty; it drops and recreates the schema public), and are read
 * back through the store (store_due_async, store_body_read_async) and with
 * SQL, field by field. One batch mixes every kind of field, 8-bit text,
 * quotes and backslashes, an empty body, a body of exactly one chunk and
 * one too big for the batched insert; the next one holds a malformed
 * message and a duplicate queue id among good ones: only those two fail.
 * Then deferrals and holds (one batched statement on PostgreSQL, W_PGB_
 * OUTCOMES), one of them for a recipient delivered already: the recipients
 * compared again.
 *
 *   test_store_pg    exit 77 (skipped) without MXD_TEST_PG
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "base/util.h"
#include "msg/dsnparam.h"
#include "sdb_fixture.h"
#include "store/sdb.h"
#include "store/store.h"

#define CHUNK (256 * 1024)
#define NMSG  5 /* the first batch */

static const char *pg_conninfo;

struct run {
    uv_loop_t loop;
    struct store *st;
    struct sdb *db; /* a second connection, for SQL */
    char dir[512];
    char path[600];
    int done;
    int status[16];
    int64_t id[16];
    struct store_dmsg *due;
    char *body;
    size_t body_len;
    uint64_t body_total;
};

struct cb {
    struct run *r;
    int i;
};

/* ---- helpers ------------------------------------------------------------ */

static void
commit_cb(void *arg, int status, int64_t msg_id)
{
    struct cb *c = arg;

    c->r->status[c->i] = status;
    c->r->id[c->i] = msg_id;
    c->r->done++;
}

static void
due_cb(void *arg, int status, struct store_dmsg *list, int64_t next_due)
{
    struct run *r = arg;

    (void)next_due;
    assert_int_equal(status, 0);
    r->due = list;
    r->done++;
}

static void
body_cb(void *arg, int status, const char *data, size_t len, uint64_t total)
{
    struct run *r = arg;

    assert_int_equal(status, 0);
    r->body = xmalloc(len + 1);
    memcpy(r->body, data, len);
    r->body_len = len;
    r->body_total = total;
    r->done++;
}

static void
done_cb(void *arg, int status)
{
    struct cb *c = arg;

    c->r->status[c->i] = status;
    c->r->done++;
}

static void
closed_cb(void *arg)
{
    ((struct run *)arg)->done++;
}

static void
run_until(struct run *r, int n)
{
    while (r->done < n)
        uv_run(&r->loop, UV_RUN_ONCE);
}

/* Every row of sql, columns as text ("NULL" for NULL), one line each. */
static char *
dump(struct sdb *db, const char *sql, int ncols)
{
    struct sdb_stmt *s = NULL;
    char *out = xstrdup("");
    int rc;

    assert_int_equal(sdb_prepare(db, sql, &s), 0);
    while ((rc = sdb_step(s)) == SDB_ROW) {
        for (int c = 0; c < ncols; c++) {
            const char *v = sdb_col_null(s, c) ? "NULL" : sdb_col_text(s, c);
            char *n = xasprintf("%s%s%s", out, c ? "|" : "", v);

            free(out);
            out = n;
        }
        char *n = xasprintf("%s\n", out);

        free(out);
        out = n;
    }
    assert_int_equal(rc, SDB_DONE);
    sdb_finalize(s);
    return out;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void
write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* Octets 0..255 over and over, from seed. */
static unsigned char *
octets(size_t n, unsigned seed)
{
    unsigned char *p = xmalloc(n + 1);

    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 7 + seed);
    return p;
}

static unsigned
fnv(const char *p, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static struct store_msg *
msg_new(const char *qid, size_t nrcpts)
{
    struct store_msg *m = xcalloc(1, sizeof(*m));

    snprintf(m->qid, sizeof(m->qid), "%s", qid);
    m->received = 1700000000;
    m->client_addr = xstrdup("192.0.2.1");
    m->helo = xstrdup("client.example.net");
    m->sender = xstrdup("sender@example.net");
    m->rcpts = xcalloc(nrcpts, sizeof(*m->rcpts));
    m->nrcpts = nrcpts;
    for (size_t i = 0; i < nrcpts; i++) {
        m->rcpts[i].address = xasprintf("rcpt%zu@Example.COM", i);
        m->rcpts[i].domain = xstrdup("example.com");
    }
    return m;
}

/* The body as three parts: header, spool file (written now), in memory. */
static void
msg_body(struct run *r, struct store_msg *m, size_t hlen, size_t slen, size_t blen)
{
    if (hlen > 0) {
        m->header = (char *)octets(hlen, 1);
        m->header_len = hlen;
    }
    if (slen > 0) {
        unsigned char *s = octets(slen, 2);

        m->spool_path = xasprintf("%s/spool.%s", r->dir, m->qid);
        write_file(m->spool_path, s, slen);
        m->spool_len = slen;
        free(s);
    }
    if (blen > 0) {
        m->body = (char *)octets(blen, 3);
        m->body_len = blen;
    }
}

/* The first batch: i in [0, NMSG). */
static struct store_msg *
batch_msg(struct run *r, int i)
{
    struct store_msg *m;

    switch (i) {
    case 0: /* empty body, HELO, nothing optional */
        m = msg_new("Q0empty", 1);
        m->client_port = 0;
        return m;
    case 1: /* every DSN and client field, quotes, backslashes, 8-bit; a held rcpt */
        m = msg_new("Q1dsn", 2);
        free(m->helo);
        m->helo = xstrdup("h\xe9lo \"quoted\" back\\slash {a,b} NULL");
        free(m->sender);
        m->sender = xstrdup("\"odd\\\"local\"@example.net");
        m->ret = DSN_RET_HDRS;
        m->envid = xstrdup("env\"id\\\xff,}");
        m->return_auth = true;
        m->requiretls = true;
        m->client_name = xstrdup("mail.example.net");
        m->client_port = 41234;
        m->esmtp = true;
        m->rcpts[0].notify = 3;
        m->rcpts[0].orcpt = xstrdup("rfc822;\"x\\y\"@example.org");
        m->hops = 2;
        /* held at accept (issue 22), next to a queued one */
        m->rcpts[1].held_reply = xstrdup("451 4.4.1 connect to \"primary\" failed");
        m->rcpts[1].held_next = 1999999999;
        msg_body(r, m, 100, 3000, 77);
        return m;
    case 2: /* three recipients, held, null sender, SMTPUTF8, TLS optional */
        m = msg_new("Q2held", 3);
        free(m->sender);
        m->sender = xstrdup("");
        m->smtputf8 = true;
        m->utf8_needed = true;
        m->body_8bit = true;
        m->tls_optional = true;
        m->hold_reason = xstrdup("quarantined \"virus\" \\ x");
        m->rcpts[2].orcpt = xstrdup("utf-8;r\xc3\xa9@example.org");
        m->esmtp = true;
        msg_body(r, m, 0, 0, 5000);
        return m;
    case 3: /* exactly one chunk: still batched */
        m = msg_new("Q3chunk", 1);
        m->rcpts[0].notify = 8;
        msg_body(r, m, 1000, CHUNK - 1000, 0);
        return m;
    default: /* one octet more than a chunk: the per-message path */
        m = msg_new("Q4big", 2);
        msg_body(r, m, 10, CHUNK, 1);
        return m;
    }
}

static void
run_open(struct run *r, enum sdb_engine engine)
{
    struct store_config cfg = {.db = {.engine = engine}};
    const char *tmp = getenv("TMPDIR");
    char *err = NULL;

    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "%s/test_store_pg.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(r->dir));
    snprintf(r->path, sizeof(r->path), "%s/queue.db", r->dir);
    if (engine == SDB_SQLITE) {
        cfg.db.path = r->path;
    } else {
        pg_wipe(pg_conninfo);
        cfg.db.conninfo = pg_conninfo;
    }
    assert_int_equal(uv_loop_init(&r->loop), 0);
    if (store_open(&r->loop, &cfg, &r->st, &err) != 0)
        fail_msg("store_open: %s", err ? err : "");
    assert_int_equal(sdb_open(&cfg.db, &r->db, &err), 0);
}

static void
run_close(struct run *r)
{
    static const char *const files[] = {"queue.db", "queue.db-wal", "queue.db-shm"};
    int n = r->done + 1;

    sdb_close(r->db);
    store_close(r->st, closed_cb, r);
    run_until(r, n);
    assert_int_equal(uv_loop_close(&r->loop), 0);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char *f = xasprintf("%s/%s", r->dir, files[i]);

        unlink(f);
        free(f);
    }
    {
        /* SQLite keeps bodies past STORE_BODY_FILE_MIN in files of bodies/ */
        char *bodies = xasprintf("%s/bodies", r->dir);
        DIR *d = opendir(bodies);
        struct dirent *e;

        while (d != NULL && (e = readdir(d)) != NULL) {
            char *f;

            if (e->d_name[0] == '.')
                continue;
            f = xasprintf("%s/%s", bodies, e->d_name);
            assert_int_equal(unlink(f), 0);
            free(f);
        }
        if (d != NULL)
            closedir(d);
        if (rmdir(bodies) != 0)
            assert_int_equal(errno, ENOENT);
        free(bodies);
    }
    assert_int_equal(rmdir(r->dir), 0); /* every spool file was unlinked */
}

/* Whether the count sql returns becomes positive within tries x 10 ms. */
static bool
poll_count(struct sdb *db, const char *sql, int tries)
{
    for (int i = 0; i < tries; i++) {
        if (query_i64(db, sql) > 0)
            return true;
        sleep_ms(10);
    }
    return false;
}

/* PostgreSQL: the writer waits for the lock on messages, in the batched
 * insert (the only statement of its that takes it). pg_locks, not the
 * query text of pg_stat_activity: a prepared statement may wait in Bind,
 * before the text is shown (this timed out once under load). */
static bool
pg_writer_waits_batched(struct sdb *db)
{
    return poll_count(db,
                      "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
                      "ON a.pid = l.pid WHERE a.application_name = 'mxd' AND NOT l.granted "
                      "AND l.relation = 'messages'::regclass",
                      3000);
}

/* Commits the first batch (on PostgreSQL its messages 1.. as one batch,
 * behind a lock, after message 0 was seen going the batched way). */
static void
commit_batch(struct run *r, enum sdb_engine engine, struct cb *cbs)
{
    struct store_stats stats;

    if (engine == SDB_POSTGRESQL) {
        exec_ok(r->db, "BEGIN; LOCK TABLE messages IN EXCLUSIVE MODE");
        cbs[0] = (struct cb){r, 0};
        store_commit_async(r->st, batch_msg(r, 0), commit_cb, &cbs[0]);
        assert_true(pg_writer_waits_batched(r->db));
    }
    for (int i = engine == SDB_POSTGRESQL; i < NMSG; i++) {
        cbs[i] = (struct cb){r, i};
        store_commit_async(r->st, batch_msg(r, i), commit_cb, &cbs[i]);
    }
    if (engine == SDB_POSTGRESQL) {
        sleep_ms(50);
        exec_ok(r->db, "COMMIT");
    }
    run_until(r, NMSG);
    for (int i = 0; i < NMSG; i++)
        assert_int_equal(r->status[i], 0);
    store_get_stats(r->st, &stats);
    assert_int_equal(stats.commits, NMSG);
    if (engine == SDB_POSTGRESQL)
        assert_int_equal(stats.max_batch, NMSG - 1);
}

/* The second batch: good, malformed, duplicate queue id, good. */
static void
commit_bad_batch(struct run *r, struct cb *cbs)
{
    struct store_msg *m[4] = {msg_new("Q5good", 2), msg_new("Q6bad", 1), msg_new("Q1dsn", 1),
                              msg_new("Q7good", 1)};

    msg_body(r, m[0], 10, 20, 30);
    free(m[1]->sender);
    m[1]->sender = NULL; /* malformed */
    msg_body(r, m[3], 0, 0, 3);
    r->done = 0;
    for (int i = 0; i < 4; i++) {
        cbs[i] = (struct cb){r, i};
        store_commit_async(r->st, m[i], commit_cb, &cbs[i]);
    }
    run_until(r, 4);
    assert_int_equal(r->status[0], 0);
    assert_int_equal(r->status[1], MXD_EINVAL);
    assert_int_equal(r->status[2], MXD_ESTORE);
    assert_int_equal(r->status[3], 0);
}

#define SQL_MSGS                                                                                   \
    "SELECT m.qid, m.received, m.client_addr, m.helo, m.sender, m.smtputf8, m.body_8bit, m.size, " \
    "f.utf8_needed, f.hops, d.ret, d.envid, d.return_auth, d.warned, t.requiretls, "               \
    "t.tls_optional, c.name, c.port, c.proto FROM messages m "                                     \
    "LEFT JOIN message_facts f ON f.message_id = m.id "                                            \
    "LEFT JOIN message_dsn d ON d.message_id = m.id "                                              \
    "LEFT JOIN message_tls t ON t.message_id = m.id "                                              \
    "LEFT JOIN message_client c ON c.message_id = m.id ORDER BY m.qid"
#define SQL_RCPTS                                                                                  \
    "SELECT m.qid, r.address, r.domain, r.state, r.attempts, r.next_attempt, r.last_reply, "       \
    "d.notify, d.orcpt FROM message_rcpts r JOIN messages m ON m.id = r.message_id "               \
    "LEFT JOIN rcpt_dsn d ON d.rcpt_id = r.id ORDER BY m.qid, r.id"

/* What the store reads back: every due message and its whole body. */
static char *
read_back(struct run *r)
{
    char *out = xstrdup("");

    r->done = 0;
    store_due_async(r->st, 2000000000, 1000, NULL, 0, due_cb, r);
    run_until(r, 1);
    for (struct store_dmsg *d = r->due; d != NULL; d = d->next) {
        char *n;

        r->done = 0;
        store_body_read_async(r->st, d->id, 0, 2 * CHUNK, body_cb, r);
        run_until(r, 1);
        assert_int_equal(r->body_len, d->size);
        assert_int_equal(r->body_total, d->size);
        n = xasprintf("%s%s %" PRId64 " %s %" PRIu64 " %d%d%d %u %d %s %d %d%d %s %s %s %s %s "
                      "len=%08x fnv=",
                      out, d->qid, d->received, d->sender, d->size, d->smtputf8, d->utf8_needed,
                      d->body_8bit, d->hops, (int)d->ret, d->envid ? d->envid : "NULL",
                      d->return_auth, d->requiretls, d->tls_optional, d->client_addr, d->helo,
                      d->client_name ? d->client_name : "NULL",
                      d->client_port ? d->client_port : "NULL",
                      d->client_proto ? d->client_proto : "NULL", (unsigned)r->body_len);
        free(out);
        out = n;
        n = xasprintf("%s%08x", out, fnv(r->body, r->body_len));
        free(out);
        out = n;
        for (size_t i = 0; i < d->nrcpts; i++) {
            n = xasprintf("%s [%s %s %u %u %s]", out, d->rcpts[i].address, d->rcpts[i].domain,
                          d->rcpts[i].attempts, d->rcpts[i].notify,
                          d->rcpts[i].orcpt ? d->rcpts[i].orcpt : "NULL");
            free(out);
            out = n;
        }
        n = xasprintf("%s\n", out);
        free(out);
        out = n;
        free(r->body);
        r->body = NULL;
    }
    store_dmsg_free_list(r->due);
    r->due = NULL;
    return out;
}

/* The recipient id of qid's address (each engine numbers its own). */
static int64_t
rcpt_id(struct run *r, const char *qid, const char *address)
{
    char *sql = xasprintf("SELECT r.id FROM message_rcpts r JOIN messages m ON m.id = "
                          "r.message_id WHERE m.qid = '%s' AND r.address = '%s'",
                          qid, address);
    int64_t id = query_i64(r->db, sql);

    free(sql);
    return id;
}

/* One job's outcomes: n of (qid, address, state), next_attempt and reply
 * from the index. */
static void
outcomes_job(struct run *r, struct cb *cb, const char *const (*o)[3], size_t n)
{
    struct store_outcome *list = xcalloc(n, sizeof(*list));

    for (size_t i = 0; i < n; i++) {
        const char *st = o[i][2];

        list[i].rcpt_id = rcpt_id(r, o[i][0], o[i][1]);
        list[i].state = strcmp(st, "delivered") == 0 ? STORE_RCPT_DELIVERED
                        : strcmp(st, "held") == 0    ? STORE_RCPT_HELD
                                                     : STORE_RCPT_DEFERRED;
        list[i].next_attempt = 1700000600 + (int64_t)i;
        list[i].last_reply = xasprintf("451 4.4.1 \"%s\" \\ {%zu,x}", o[i][1], i);
    }
    /* final already: the message settled by its id */
    for (size_t i = 0; i < n; i++) {
        char *sql = xasprintf("SELECT message_id FROM message_rcpts WHERE id = %lld",
                              (long long)list[i].rcpt_id);

        list[i].msg_id = query_i64(r->db, sql);
        free(sql);
    }
    store_outcomes_async(r->st, list, n, done_cb, cb);
}

/* PostgreSQL: the writer waits for the lock on message_rcpts (in Bind:
 * before pg_stat_activity shows the statement, so pg_locks). */
static bool
pg_writer_waits_rcpts(struct sdb *db)
{
    return poll_count(db,
                      "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
                      "ON a.pid = l.pid WHERE a.application_name = 'mxd' AND NOT l.granted "
                      "AND l.relation = 'message_rcpts'::regclass",
                      3000);
}

/* Deferrals and holds: on PostgreSQL the first job alone (the writer seen
 * waiting for a lock), the next four as one batch, all nine outcomes the
 * batched way; a delivery before, so that one deferral finds its
 * recipient final already. */
static void
record_outcomes(struct run *r, enum sdb_engine engine, struct cb *cbs)
{
    static const char *const first[][3] = {{"Q0empty", "rcpt0@Example.COM", "deferred"}};
    struct store_stats stats;
    static const char *const done[][3] = {{"Q4big", "rcpt0@Example.COM", "delivered"}};
    static const char *const j1[][3] = {{"Q1dsn", "rcpt0@Example.COM", "deferred"},
                                        {"Q1dsn", "rcpt1@Example.COM", "deferred"}};
    static const char *const j2[][3] = {{"Q2held", "rcpt0@Example.COM", "held"},
                                        {"Q2held", "rcpt1@Example.COM", "deferred"},
                                        {"Q5good", "rcpt1@Example.COM", "held"}};
    static const char *const j3[][3] = {{"Q3chunk", "rcpt0@Example.COM", "deferred"}};
    static const char *const j4[][3] = {{"Q4big", "rcpt0@Example.COM", "deferred"},
                                        {"Q4big", "rcpt1@Example.COM", "held"}};

    r->done = 0;
    cbs[0] = (struct cb){r, 0};
    outcomes_job(r, &cbs[0], done, 1);
    run_until(r, 1);
    assert_int_equal(r->status[0], 0);
    r->done = 0;
    if (engine == SDB_POSTGRESQL)
        exec_ok(r->db, "BEGIN; LOCK TABLE message_rcpts IN EXCLUSIVE MODE");
    cbs[0] = (struct cb){r, 0};
    outcomes_job(r, &cbs[0], first, 1);
    if (engine == SDB_POSTGRESQL)
        assert_true(pg_writer_waits_rcpts(r->db));
    for (int i = 1; i <= 4; i++)
        cbs[i] = (struct cb){r, i};
    outcomes_job(r, &cbs[1], j1, 2);
    outcomes_job(r, &cbs[2], j2, 3);
    outcomes_job(r, &cbs[3], j3, 1);
    outcomes_job(r, &cbs[4], j4, 2);
    if (engine == SDB_POSTGRESQL) {
        sleep_ms(50);
        exec_ok(r->db, "COMMIT");
    }
    run_until(r, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(r->status[i], 0);
    store_get_stats(r->st, &stats);
    assert_int_equal(stats.batched_outcomes, engine == SDB_POSTGRESQL ? 9 : 0);
}

/* ---- the test ----------------------------------------------------------- */

static void
test_batch_same_as_sqlite(void **state)
{
    struct run lite, pg;
    struct cb cbs[16];
    char *dl[4], *dp[4];

    (void)state;
    run_open(&lite, SDB_SQLITE);
    commit_batch(&lite, SDB_SQLITE, cbs);
    commit_bad_batch(&lite, cbs);
    dl[0] = dump(lite.db, SQL_MSGS, 19);
    dl[1] = dump(lite.db, SQL_RCPTS, 9);
    dl[2] = read_back(&lite);
    record_outcomes(&lite, SDB_SQLITE, cbs);
    dl[3] = dump(lite.db, SQL_RCPTS, 9);

    run_open(&pg, SDB_POSTGRESQL);
    commit_batch(&pg, SDB_POSTGRESQL, cbs);
    /* ids from the tables' own sequences, none wasted: the batched insert
     * did not fall back to the per-message path (its ids would be lost) */
    assert_int_equal(query_i64(pg.db, "SELECT max(id) FROM messages"), NMSG);
    assert_int_equal(query_i64(pg.db, "SELECT count(*) FROM messages"), NMSG);
    assert_int_equal(query_i64(pg.db, "SELECT max(id) FROM message_rcpts"), 9);
    assert_int_equal(query_i64(pg.db, "SELECT count(*) FROM message_rcpts"), 9);
    assert_int_equal(query_i64(pg.db, "SELECT count(*) FROM message_body WHERE message_id = "
                                      "(SELECT id FROM messages WHERE qid = 'Q0empty')"),
                     0);
    assert_int_equal(query_i64(pg.db, "SELECT count(*) FROM message_body WHERE message_id = "
                                      "(SELECT id FROM messages WHERE qid = 'Q3chunk')"),
                     1);
    commit_bad_batch(&pg, cbs);
    dp[0] = dump(pg.db, SQL_MSGS, 19);
    dp[1] = dump(pg.db, SQL_RCPTS, 9);
    dp[2] = read_back(&pg);
    record_outcomes(&pg, SDB_POSTGRESQL, cbs);
    dp[3] = dump(pg.db, SQL_RCPTS, 9);
    for (int i = 0; i < 4; i++) {
        if (strcmp(dl[i], dp[i]) != 0)
            fail_msg("SQLite:\n%s\nPostgreSQL:\n%s", dl[i], dp[i]);
        free(dl[i]);
        free(dp[i]);
    }
    run_close(&lite);
    run_close(&pg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_same_as_sqlite),
    };

    pg_conninfo = getenv("MXD_TEST_PG");
    if (pg_conninfo == NULL || pg_conninfo[0] == '\0') {
        printf("store on PostgreSQL: NOT RUN (set MXD_TEST_PG to a libpq connection string)\n");
        return 77;
    }
    return cmocka_run_group_tests_name("store on PostgreSQL", tests, NULL, NULL);
}
