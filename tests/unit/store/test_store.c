/*
 * test_store: db and store against a real database in a temporary directory
 * (under $TMPDIR or /tmp), driven by a real uv loop. Rows are read back with
 * a separate sqlite3 connection. Every test ends with uv_loop_close() == 0.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#include <sqlite3.h>
#include <uv.h>

#include "base/metrics.h"
#include "base/util.h"
#include "store/db.h"
#include "store/sdb.h"
#include "store/store.h"
#include "store/store_impl.h"

struct fx {
    char dir[512];
    char db[600];
    uv_loop_t loop;
    struct store *st;
    int seq;    /* callbacks so far, all kinds */
    int closed; /* closed_cb calls */
    int closed_seq;
};

/* What one callback saw. */
struct res {
    struct fx *fx;
    int calls;
    int status;
    int64_t id;
    int seq;
};

/* ---- helpers ------------------------------------------------------------ */

static void
rm_rf(const char *path)
{
    struct stat sb;
    DIR *d;
    struct dirent *e;

    if (lstat(path, &sb) != 0)
        return;
    if (!S_ISDIR(sb.st_mode)) {
        unlink(path);
        return;
    }
    if ((d = opendir(path)) != NULL) {
        while ((e = readdir(d)) != NULL) {
            char *sub;

            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            sub = xasprintf("%s/%s", path, e->d_name);
            rm_rf(sub);
            free(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

static int
fx_setup(void **state)
{
    struct fx *fx = xcalloc(1, sizeof(*fx));
    const char *tmp = getenv("TMPDIR");

    snprintf(fx->dir, sizeof(fx->dir), "%s/test_store.XXXXXX", tmp && *tmp ? tmp : "/tmp");
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
    struct fx *fx = *state;

    rm_rf(fx->dir);
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
    r->seq = ++r->fx->seq;
}

static void
lookup_cb(void *arg, int status)
{
    struct res *r = arg;

    r->calls++;
    r->status = status;
    r->seq = ++r->fx->seq;
}

static void
closed_cb(void *arg)
{
    struct fx *fx = arg;

    fx->closed++;
    fx->closed_seq = ++fx->seq;
}

static void
open_store(struct fx *fx)
{
    char *err = NULL;
    int rc = store_open(&fx->loop, &STORE_CONFIG_SQLITE(fx->db), &fx->st, &err);

    if (rc != 0)
        fail_msg("store_open: %s", err);
    assert_non_null(fx->st);
}

/* Closes the store, runs the loop dry and checks nothing is left. */
static void
close_store(struct fx *fx)
{
    store_close(fx->st, closed_cb, fx);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->closed, 1);
    fx->st = NULL;
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

/* Runs the loop until fx->seq reaches n callbacks. */
static void
run_until(struct fx *fx, int n)
{
    while (fx->seq < n)
        uv_run(&fx->loop, UV_RUN_ONCE);
}

static void
write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static bool
file_exists(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0;
}

/* Deterministic bytes with plenty of NULs. */
static void
fill_random(unsigned char *p, size_t n, uint32_t seed)
{
    uint32_t x = seed ? seed : 1;

    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (i % 7 == 0) ? 0 : (unsigned char)x;
    }
}

/* A message with nrcpts recipients rcptN@example.com (domain example.com). */
static struct store_msg *
make_msg(const char *qid, size_t nrcpts, const char *header, const char *spool_path,
         uint64_t spool_len, const void *body, size_t body_len)
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
    if (header != NULL) {
        m->header = xstrdup(header);
        m->header_len = strlen(header);
    }
    if (spool_path != NULL)
        m->spool_path = xstrdup(spool_path);
    m->spool_len = spool_len;
    if (body != NULL) {
        m->body = xmalloc(body_len);
        memcpy(m->body, body, body_len);
        m->body_len = body_len;
    }
    return m;
}

static struct store_msg *
small_msg(const char *qid)
{
    return make_msg(qid, 1, "Received: x\r\n", NULL, 0, "Subject: t\r\n\r\nhi\r\n", 18);
}

static sqlite3 *
sql_open(const struct fx *fx)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* The first column of the first row of sql, as an integer. */
static int64_t
sql_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    int64_t v;

    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static int64_t
count_rows(const struct fx *fx, const char *sql)
{
    sqlite3 *db = sql_open(fx);
    int64_t n = sql_int(db, sql);

    sqlite3_close(db);
    return n;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        continue;
}

/* ---- db ----------------------------------------------------------------- */

static void
test_db_schema_applied(void **state)
{
    struct fx *fx = *state;
    sqlite3 *db = NULL;
    char *err = NULL;
    char *path = xasprintf("%s/a/b/queue.db", fx->dir);
    struct stat sb;

    /* Parent directories are created. */
    assert_int_equal(db_open(path, &db, &err), 0);
    assert_null(err);
    assert_int_equal(sql_int(db, "PRAGMA user_version"), db_schema_version());
    assert_true(db_schema_version() >= 1);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM sqlite_master WHERE name IN "
                                 "('messages', 'message_rcpts', 'recipients')"),
                     3);
    assert_int_equal(sql_int(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(sql_int(db, "PRAGMA synchronous"), 2); /* FULL */
    sqlite3_close(db);
    assert_int_equal(stat(path, &sb), 0);

    /* Reopening an up-to-date database changes nothing. */
    assert_int_equal(db_open(path, &db, &err), 0);
    assert_int_equal(sql_int(db, "PRAGMA user_version"), db_schema_version());
    sqlite3_close(db);
    free(path);

    open_store(fx);
    close_store(fx);
    {
        sqlite3 *chk = sql_open(fx);
        sqlite3_stmt *s = NULL;

        assert_int_equal(sql_int(chk, "PRAGMA user_version"), db_schema_version());
        assert_int_equal(sqlite3_prepare_v2(chk, "PRAGMA journal_mode", -1, &s, NULL), 0);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
        sqlite3_finalize(s);
        sqlite3_close(chk);
    }
}

static void
test_db_newer_refused(void **state)
{
    struct fx *fx = *state;
    sqlite3 *db = NULL;
    char *err = NULL;
    char *sql = xasprintf("PRAGMA user_version = %d", db_schema_version() + 1);

    db = sql_open(fx);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    free(sql);

    db = NULL;
    assert_int_equal(db_open(fx->db, &db, &err), MXD_ESCHEMA);
    assert_null(db);
    assert_non_null(err);
    assert_non_null(strstr(err, "upgrade mxd"));
    assert_non_null(strstr(err, fx->db));
    free(err);

    err = NULL;
    assert_int_equal(store_open(&fx->loop, &STORE_CONFIG_SQLITE(fx->db), &fx->st, &err),
                     MXD_ESCHEMA);
    assert_null(fx->st);
    assert_non_null(err);
    free(err);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

static void
test_db_empty_path(void **state)
{
    struct fx *fx = *state;
    sqlite3 *db = NULL;
    char *err = NULL;

    assert_int_equal(db_open("", &db, &err), MXD_EINVAL);
    assert_null(db);
    free(err);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
}

/* ---- commit ------------------------------------------------------------- */

/* Checks the row of qid against the expected body and recipients. */
static void
check_message(const struct fx *fx, const char *qid, const unsigned char *want, size_t want_len,
              size_t nrcpts)
{
    sqlite3 *db = sql_open(fx);
    sqlite3_stmt *s = NULL;
    const char *sql = "SELECT received, client_addr, helo, sender, size, body, id, body_file "
                      "FROM messages WHERE qid = ?1";
    int64_t id;
    size_t head;

    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    sqlite3_bind_text(s, 1, qid, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(s, 0), 1700000000);
    assert_string_equal((const char *)sqlite3_column_text(s, 1), "192.0.2.1");
    assert_string_equal((const char *)sqlite3_column_text(s, 2), "client.example.net");
    assert_string_equal((const char *)sqlite3_column_text(s, 3), "sender@example.net");
    assert_int_equal(sqlite3_column_int64(s, 4), want_len);
    head = (size_t)sqlite3_column_bytes(s, 5);
    assert_memory_equal(sqlite3_column_blob(s, 5), want, head);
    if (sqlite3_column_type(s, 7) == SQLITE_NULL) {
        assert_int_equal(head, want_len);
    } else { /* a large body: the header in the row, the rest in bodies/ */
        char *path = xasprintf("%s/bodies/%s", fx->dir, (const char *)sqlite3_column_text(s, 7));
        int fd = open(path, O_RDONLY);
        unsigned char *rest = xmalloc(want_len - head + 1);
        struct stat sb;

        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &sb), 0);
        assert_int_equal(sb.st_size, want_len - head);
        assert_int_equal(read(fd, rest, want_len - head), (ssize_t)(want_len - head));
        assert_memory_equal(rest, want + head, want_len - head);
        close(fd);
        free(rest);
        free(path);
    }
    id = sqlite3_column_int64(s, 6);
    sqlite3_finalize(s);

    sql = "SELECT address, domain, state, attempts, next_attempt, last_reply FROM message_rcpts "
          "WHERE message_id = ?1 ORDER BY id";
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    sqlite3_bind_int64(s, 1, id);
    for (size_t i = 0; i < nrcpts; i++) {
        char addr[64];

        snprintf(addr, sizeof(addr), "rcpt%zu@Example.COM", i);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 0), addr);
        assert_string_equal((const char *)sqlite3_column_text(s, 1), "example.com");
        assert_string_equal((const char *)sqlite3_column_text(s, 2), "queued");
        assert_int_equal(sqlite3_column_int(s, 3), 0);
        assert_int_equal(sqlite3_column_int64(s, 4), 1700000000);
        assert_int_equal(sqlite3_column_type(s, 5), SQLITE_NULL);
    }
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* sdb_body_read gives back want[] exactly, from every kind of offset. */
static void
check_body_read(const struct fx *fx, int64_t id, const unsigned char *want, size_t want_len)
{
    struct sdb_params p = {.engine = SDB_SQLITE, .path = fx->db};
    struct sdb *db = NULL;
    char *err = NULL;
    unsigned char *buf = xmalloc(want_len + 1);
    const uint64_t offs[] = {0, 1, 10, want_len / 3, want_len - 1, want_len};
    size_t got = 0, len = 0;
    uint64_t total = 0;

    assert_int_equal(sdb_open(&p, &db, &err), 0);
    /* whole, by odd chunks crossing the header's end */
    while (len < want_len) {
        assert_int_equal(sdb_body_read(db, id, len, buf + len, 7777, &got, &total), 0);
        assert_int_equal(total, want_len);
        assert_true(got > 0);
        len += got;
    }
    assert_memory_equal(buf, want, want_len);
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        assert_int_equal(sdb_body_read(db, id, offs[i], buf, want_len, &got, &total), 0);
        assert_int_equal(got, want_len - offs[i]);
        assert_memory_equal(buf, want + offs[i], got);
    }
    assert_int_equal(sdb_body_read(db, id + 1000, 0, buf, 10, &got, &total), MXD_ENOENT);
    sdb_close(db);
    free(buf);
}

/* Opens and closes the store again (the sweep of body files runs). */
static void
reopen_close(struct fx *fx)
{
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->closed = 0;
    open_store(fx);
    close_store(fx);
}

/* A body file no row names is removed at open (a crash between its link
 * and the commit); a row whose file is missing is counted and logged. */
static void
test_body_file_sweep(void **state)
{
    struct fx *fx = *state;
    const size_t spool_len = 260 * 1024;
    unsigned char *spool = xmalloc(spool_len);
    char *spool_path = xasprintf("%s/spool-w", fx->dir);
    char *orphan = xasprintf("%s/bodies/ORPHAN", fx->dir);
    char *kept = xasprintf("%s/bodies/spool-w", fx->dir);
    struct res r = {.fx = fx};
    uint64_t missing0;

    fill_random(spool, spool_len, 7);
    write_file(spool_path, spool, spool_len);
    open_store(fx);
    store_commit_async(fx->st, make_msg("W1", 1, "H: 1\r\n", spool_path, spool_len, NULL, 0),
                       commit_cb, &r);
    run_until(fx, 1);
    assert_int_equal(r.status, 0);
    close_store(fx);
    assert_true(file_exists(kept));
    write_file(orphan, "x", 1);
    missing0 = metrics_get(METRICS_STORE_BODY_FILES_MISSING);
    reopen_close(fx);
    assert_false(file_exists(orphan)); /* swept */
    assert_true(file_exists(kept));    /* named by its row */
    assert_int_equal(metrics_get(METRICS_STORE_BODY_FILES_MISSING), missing0);
    assert_int_equal(unlink(kept), 0);
    reopen_close(fx);
    assert_int_equal(metrics_get(METRICS_STORE_BODY_FILES_MISSING), missing0 + 1);
    free(spool);
    free(spool_path);
    free(orphan);
    free(kept);
}

static void
test_commit_roundtrip(void **state)
{
    struct fx *fx = *state;
    const size_t spool_len = 300 * 1024;
    const char *header = "Received: from client.example.net by mx.example\r\n";
    const unsigned char tail[] = "\r\nlast \0 chunk\r\n";
    unsigned char *spool = xmalloc(spool_len);
    char *spool_path = xasprintf("%s/spool-1", fx->dir);
    size_t hl = strlen(header), total = hl + spool_len + sizeof(tail);
    unsigned char *want = xmalloc(total);
    struct res r = {.fx = fx};
    struct store_stats stats;

    fill_random(spool, spool_len, 42);
    write_file(spool_path, spool, spool_len);
    memcpy(want, header, hl);
    memcpy(want + hl, spool, spool_len);
    memcpy(want + hl + spool_len, tail, sizeof(tail));

    open_store(fx);
    store_commit_async(fx->st, make_msg("Q1", 2, header, spool_path, spool_len, tail, sizeof(tail)),
                       commit_cb, &r);
    run_until(fx, 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_true(r.id > 0);
    assert_false(file_exists(spool_path)); /* unlinked once committed */
    store_get_stats(fx->st, &stats);
    assert_int_equal(stats.commits, 1);
    assert_int_equal(stats.failures, 0);
    assert_int_equal(stats.batches, 1);
    check_message(fx, "Q1", want, total, 2); /* readable while the store is open */
    close_store(fx);
    check_message(fx, "Q1", want, total, 2);
    check_body_read(fx, r.id, want, total);
    /* 300 KiB: not copied into the database; the header alone is in the row */
    {
        char *bf = xasprintf("%s/bodies/spool-1", fx->dir);
        sqlite3 *db = sql_open(fx);
        sqlite3_stmt *s = NULL;

        assert_true(file_exists(bf));
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT length(body), body_file FROM messages "
                                            "WHERE qid = 'Q1'",
                                            -1, &s, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int64(s, 0), (int64_t)hl);
        assert_string_equal((const char *)sqlite3_column_text(s, 1), "spool-1");
        sqlite3_finalize(s);
        sqlite3_close(db);
        free(bf);
    }
    free(spool);
    free(spool_path);
    free(want);
}

static void
test_commit_small_and_empty_parts(void **state)
{
    struct fx *fx = *state;
    const char body[] = "Subject: t\r\n\r\nhi\r\n";
    const char *spool_data = "From: a@b\r\n";
    char *spool_path = xasprintf("%s/spool-s", fx->dir);
    char want[128];
    struct res r[3] = {{.fx = fx}, {.fx = fx}, {.fx = fx}};

    write_file(spool_path, spool_data, strlen(spool_data));
    snprintf(want, sizeof(want), "H: 1\r\n%s%s", spool_data, body);
    open_store(fx);
    /* header + spool + body, all small: the in-memory path */
    store_commit_async(
        fx->st, make_msg("S1", 1, "H: 1\r\n", spool_path, strlen(spool_data), body, strlen(body)),
        commit_cb, &r[0]);
    /* body only, no header, no spool */
    store_commit_async(fx->st, make_msg("S2", 3, NULL, NULL, 0, body, strlen(body)), commit_cb,
                       &r[1]);
    /* nothing at all: an empty body is still a body */
    store_commit_async(fx->st, make_msg("S3", 1, NULL, NULL, 0, NULL, 0), commit_cb, &r[2]);
    run_until(fx, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
    }
    assert_false(file_exists(spool_path));
    close_store(fx);
    check_message(fx, "S1", (const unsigned char *)want, strlen(want), 1);
    check_message(fx, "S2", (const unsigned char *)body, strlen(body), 3);
    check_message(fx, "S3", (const unsigned char *)"", 0, 1);
    free(spool_path);
}

static void
test_group_commit(void **state)
{
    enum { N = 50 };
    struct fx *fx = *state;
    struct res r[N];
    struct store_stats stats;

    open_store(fx);
    for (int i = 0; i < N; i++) {
        char qid[16];

        r[i] = (struct res){.fx = fx};
        snprintf(qid, sizeof(qid), "G%02d", i);
        store_commit_async(fx->st, small_msg(qid), commit_cb, &r[i]);
    }
    run_until(fx, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        for (int k = 0; k < i; k++)
            assert_true(r[k].id != r[i].id);
    }
    store_get_stats(fx->st, &stats);
    assert_int_equal(stats.commits, N);
    assert_int_equal(stats.failures, 0);
    assert_true(stats.batches < N);
    assert_true(stats.max_batch > 1);
    print_message("group commit: %d messages in %llu transactions (largest %llu)\n", N,
                  (unsigned long long)stats.batches, (unsigned long long)stats.max_batch);
    close_store(fx);
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM messages"), N);
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM message_rcpts"), N);
}

/*
 * The writer checkpoints the WAL itself, after a batch's completions went
 * out (not inside its COMMIT): 2,000 messages of 4 KiB, 100 at a time,
 * leave a WAL of about 1,000 frames and a batch, not all of them (about
 * 13 MiB without the checkpoint), and every message is in the database.
 */
static void
test_wal_checkpointed(void **state)
{
    enum { N = 2000, BATCH = 100 };
    struct fx *fx = *state;
    static struct res r[N];
    unsigned char body[4096];
    char wal[700];
    struct stat sb;

    fill_random(body, sizeof(body), 7);
    snprintf(wal, sizeof(wal), "%s-wal", fx->db);
    open_store(fx);
    for (int i = 0; i < N; i += BATCH) {
        for (int k = i; k < i + BATCH; k++) {
            char qid[16];

            r[k] = (struct res){.fx = fx};
            snprintf(qid, sizeof(qid), "W%04d", k);
            store_commit_async(fx->st,
                               make_msg(qid, 1, "Received: x\r\n", NULL, 0, body, sizeof(body)),
                               commit_cb, &r[k]);
        }
        run_until(fx, i + BATCH);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(r[i].status, 0);
    assert_int_equal(stat(wal, &sb), 0);
    print_message("WAL after %d messages of 4 KiB: %lld bytes\n", N, (long long)sb.st_size);
    assert_true(sb.st_size < 8 * 1024 * 1024);
    {
        sqlite3 *db = sql_open(fx);

        assert_int_equal(sql_int(db, "SELECT count(*) FROM messages"), N);
        sqlite3_close(db);
    }
    close_store(fx);
}

/*
 * A second connection holds the write lock while the first job waits in
 * BEGIN IMMEDIATE, so the next ones pile up and share one transaction: the
 * two bad ones fail alone, nothing of them remains, the others commit.
 */
static void
test_commit_failure_isolated(void **state)
{
    struct fx *fx = *state;
    char *missing = xasprintf("%s/no-such-spool", fx->dir);
    char *shortf = xasprintf("%s/short-spool", fx->dir);
    struct res r[5];
    struct store_stats stats;
    sqlite3 *blocker;

    for (int i = 0; i < 5; i++)
        r[i] = (struct res){.fx = fx};
    write_file(shortf, "0123456789", 10);
    open_store(fx);
    blocker = sql_open(fx);
    assert_int_equal(sqlite3_exec(blocker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    store_commit_async(fx->st, small_msg("F0"), commit_cb, &r[0]);
    sleep_ms(200); /* the writer takes F0 alone and waits for the lock */
    store_commit_async(fx->st, small_msg("F1"), commit_cb, &r[1]);
    store_commit_async(fx->st, make_msg("BAD1", 2, "H: x\r\n", missing, 5000, NULL, 0), commit_cb,
                       &r[2]);
    store_commit_async(fx->st, make_msg("BAD2", 2, NULL, shortf, 100000, "x", 1), commit_cb, &r[3]);
    store_commit_async(fx->st, make_msg("F2", 2, NULL, NULL, 0, "y", 1), commit_cb, &r[4]);
    assert_int_equal(sqlite3_exec(blocker, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(blocker);
    run_until(fx, 5);

    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[1].status, 0);
    assert_int_equal(r[2].status, MXD_ESTORE);
    assert_int_equal(r[2].id, 0);
    assert_int_equal(r[3].status, MXD_ESTORE);
    assert_int_equal(r[4].status, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(r[i].calls, 1);
    assert_false(file_exists(shortf)); /* unlinked although it failed */
    store_get_stats(fx->st, &stats);
    assert_int_equal(stats.commits, 3);
    assert_int_equal(stats.failures, 2);
    assert_true(stats.batches <= 2);
    close_store(fx);
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM messages"), 3);
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM messages WHERE qid LIKE 'BAD%'"), 0);
    /* F0 and F1 have one recipient each, F2 two; none of the bad ones'. */
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM message_rcpts"), 4);
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM message_rcpts WHERE message_id NOT IN "
                                    "(SELECT id FROM messages)"),
                     0);
    free(missing);
    free(shortf);
}

static void
test_commit_invalid_and_duplicate(void **state)
{
    struct fx *fx = *state;
    struct res r[3] = {{.fx = fx}, {.fx = fx}, {.fx = fx}};
    struct store_msg *norcpt = small_msg("N0");

    store_msg_free(NULL);
    norcpt->nrcpts = 0; /* store_msg_free then skips the rcpts' strings */
    free(norcpt->rcpts[0].address);
    free(norcpt->rcpts[0].domain);
    open_store(fx);
    store_commit_async(fx->st, norcpt, commit_cb, &r[0]);
    store_commit_async(fx->st, small_msg("D1"), commit_cb, &r[1]);
    store_commit_async(fx->st, small_msg("D1"), commit_cb, &r[2]);
    run_until(fx, 3);
    assert_int_equal(r[0].status, MXD_EINVAL);
    assert_int_equal(r[1].status, 0);
    assert_int_equal(r[2].status, MXD_ESTORE); /* qid is UNIQUE */
    close_store(fx);
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM messages"), 1);
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM message_rcpts"), 1);
}

/* ---- lookups ------------------------------------------------------------ */

static void
test_lookup(void **state)
{
    static const struct {
        const char *address, *domain;
        int want;
    } cases[] = {
        {"alice@example.com", "example.com", 0},
        {"ALICE@Example.COM", "Example.COM", 0},
        {"bob@example.com", "example.com", MXD_ENOENT},
        {"anyone@catchall.example", "catchall.example", 0},
        {"Anyone@CATCHALL.Example", "CATCHALL.Example", 0},
        {"alice@other.example", "other.example", MXD_ENOENT},
        {"added@later.example", "later.example", 0},
        {"x@y", NULL, MXD_ENOENT},
    };
    enum { N = sizeof(cases) / sizeof(cases[0]) };
    struct fx *fx = *state;
    struct res r[N];
    sqlite3 *db;

    open_store(fx);
    /* Written by another connection (as mxctl does) while the store runs. */
    db = sql_open(fx);
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO recipients VALUES ('alice@example.com'), "
                                  "('@catchall.example'), ('added@LATER.example')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    for (int i = 0; i < N; i++) {
        r[i] = (struct res){.fx = fx};
        store_rcpt_lookup_async(fx->st, cases[i].address, cases[i].domain, lookup_cb, &r[i]);
    }
    run_until(fx, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        if (r[i].status != cases[i].want)
            fail_msg("%s: got %d want %d", cases[i].address, r[i].status, cases[i].want);
    }
    close_store(fx);
}

/* ---- close -------------------------------------------------------------- */

static void
test_close_drains(void **state)
{
    enum { NC = 20, NL = 5 };
    struct fx *fx = *state;
    struct res rc[NC], rl[NL], late_c = {.fx = fx}, late_l = {.fx = fx};
    char *late_spool = xasprintf("%s/late-spool", fx->dir);
    char *wal = xasprintf("%s-wal", fx->db);
    struct stat sb;

    open_store(fx);
    for (int i = 0; i < NC; i++) {
        char qid[16], path[600];

        rc[i] = (struct res){.fx = fx};
        snprintf(qid, sizeof(qid), "C%02d", i);
        snprintf(path, sizeof(path), "%s/spool-%d", fx->dir, i);
        write_file(path, "spooled\r\n", 9);
        store_commit_async(fx->st, make_msg(qid, 2, NULL, path, 9, "b\r\n", 3), commit_cb, &rc[i]);
    }
    for (int i = 0; i < NL; i++) {
        rl[i] = (struct res){.fx = fx};
        store_rcpt_lookup_async(fx->st, "nobody@example.com", "example.com", lookup_cb, &rl[i]);
    }
    store_close(fx->st, closed_cb, fx);
    /* After store_close: refused, not stored, spool still unlinked. */
    write_file(late_spool, "x", 1);
    store_commit_async(fx->st, make_msg("LATE", 1, NULL, late_spool, 1, NULL, 0), commit_cb,
                       &late_c);
    store_rcpt_lookup_async(fx->st, "a@b", "b", lookup_cb, &late_l);
    assert_false(file_exists(late_spool));
    assert_int_equal(late_c.calls, 0); /* never from inside the call */

    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->closed, 1);
    for (int i = 0; i < NC; i++) {
        char path[600];

        assert_int_equal(rc[i].calls, 1);
        assert_int_equal(rc[i].status, 0);
        assert_true(rc[i].seq < fx->closed_seq);
        snprintf(path, sizeof(path), "%s/spool-%d", fx->dir, i);
        assert_false(file_exists(path));
    }
    for (int i = 0; i < NL; i++) {
        assert_int_equal(rl[i].calls, 1);
        assert_int_equal(rl[i].status, MXD_ENOENT);
        assert_true(rl[i].seq < fx->closed_seq);
    }
    assert_int_equal(late_c.calls, 1);
    assert_int_equal(late_c.status, MXD_ECLOSING);
    assert_int_equal(late_l.calls, 1);
    assert_int_equal(late_l.status, MXD_ECLOSING);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    /* Both connections closed: the WAL was checkpointed and removed. */
    assert_true(stat(wal, &sb) != 0 || sb.st_size == 0);
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM messages"), NC);
    assert_int_equal(count_rows(fx, "SELECT count(*) FROM message_rcpts"), 2 * NC);
    free(late_spool);
    free(wal);
}

static void
test_close_idle(void **state)
{
    struct fx *fx = *state;

    open_store(fx);
    close_store(fx);
    assert_int_equal(fx->seq, 1);
}

/* Each statement's PostgreSQL text (its own, or the SQLite one) has none
 * of SQLite's dialect, and never names messages.body (PostgreSQL keeps
 * bodies in message_body, behind sdb); SQLite's texts stay as they were,
 * without the cluster's leases. */
static void
test_sql_dialects(void **state)
{
    static const char *const lite_only[] = {"INSERT OR ", "IMMEDIATE", " max(",
                                            "body)",      "body,",     "last_insert_rowid"};

    (void)state;
    for (int i = 0; i < STORE_NSTMT; i++) {
        const char *pg = store__sql[i].sql_pg != NULL ? store__sql[i].sql_pg : store__sql[i].sql;
        const char *lite = store__sql[i].sql;

        assert_non_null(pg);
        for (size_t k = 0; k < sizeof(lite_only) / sizeof(lite_only[0]); k++) {
            if (strstr(pg, lite_only[k]) != NULL)
                fail_msg("%s: PostgreSQL text has \"%s\"", store__sql[i].label, lite_only[k]);
        }
        if (lite != NULL && strstr(lite, "lease_") != NULL)
            fail_msg("%s: SQLite text has a lease", store__sql[i].label);
    }
    assert_non_null(strstr(store__sql[STORE_R_DUE].sql_pg, "FOR UPDATE SKIP LOCKED"));
    assert_non_null(strstr(store__sql[STORE_W_OUTCOME].sql_pg, "lease_owner = NULL"));
    /* an outcome reads its recipient's DSN row and its message's arrival
     * and warning in the same statement, on both engines */
    for (int pg = 0; pg < 2; pg++) {
        const char *t = pg ? store__sql[STORE_W_OUTCOME].sql_pg : store__sql[STORE_W_OUTCOME].sql;

        assert_non_null(strstr(t, "FROM rcpt_dsn d WHERE d.rcpt_id = message_rcpts.id"));
        assert_non_null(strstr(t, "SELECT m.received FROM messages m"));
        assert_non_null(strstr(t, "SELECT d.warned FROM message_dsn d"));
    }
    assert_non_null(strstr(store__sql[STORE_W_INSERT_MSG].sql, "RETURNING id"));
    assert_non_null(strstr(store__sql[STORE_W_INSERT_RCPT].sql, "RETURNING id"));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_db_schema_applied),
        T(test_db_newer_refused),
        T(test_db_empty_path),
        T(test_commit_roundtrip),
        T(test_body_file_sweep),
        T(test_commit_small_and_empty_parts),
        T(test_group_commit),
        T(test_wal_checkpointed),
        T(test_commit_failure_isolated),
        T(test_commit_invalid_and_duplicate),
        T(test_lookup),
        T(test_close_drains),
        T(test_close_idle),
        cmocka_unit_test(test_sql_dialects),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
