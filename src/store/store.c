/*
 * store: owns queue.db's two connections and their threads: the writer
 * (inserts messages and recipients, group commit) and the reader (recipient
 * lookups); the job queues to them, the done list back and the uv_async_t
 * that wakes the loop for it; and each message handed over, spool file
 * included (unlinked when done). store_deliver.c adds delivery and operator
 * jobs, store_screen.c the screening's passes, store_greylist.c greylist
 * jobs (the reader hands those it cannot answer on to the writer), to the
 * same threads and transactions (store_impl.h).
 * Threads: store_* entry points on the loop thread only; writer_* and
 * reader_* on their thread, the only one touching its connection once
 * store_open returns. Shared: the queues and the done list, each under a mutex.
 * Errors: store_open returns 0 or MXD_E*. Every job gets exactly one callback,
 * on the loop thread: 0, MXD_ENOENT (lookup: absent), MXD_EINVAL (malformed
 * message), MXD_ESTORE (the database or spool I/O; also at once while a
 * lost PostgreSQL connection is down: each thread reconnects before its
 * next job, at most once a second) or MXD_ECLOSING (after store_close). A
 * failed job leaves no row: each has a SAVEPOINT inside the batch's
 * transaction, and a failed COMMIT (a lost one included) fails the whole
 * batch. Cluster (PostgreSQL): a uv timer queues a heartbeat job to the
 * reader every lease_s / 3 (cluster_nodes, this node's leases renewed).
 * Does not: decide what to deliver or when (the scheduler does), retry
 * (the client does, after our 451), write spool files (spool.c).
 */
#include "store/store.h"

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "base/log.h"
#include "base/metrics.h"
#include "store/sdb.h"
#include "store/store_impl.h"

#define STORE_STMT_TEXT(id, label, lite, pg) {label, lite, pg},

const struct store__sql store__sql[STORE_NSTMT] = {STORE_SQL(STORE_STMT_TEXT)};

/* A batch of hundreds of messages must fit in the writer's page cache:
 * spilling dirty pages mid-transaction cost 2-3x in throughput at 1000
 * concurrent commits in our benchmark. The WAL shrinks back after a batch of
 * big messages grew it. (The statement journal: db.c.) */
#define STORE_WRITER_PRAGMAS "PRAGMA cache_size = -32768; PRAGMA journal_size_limit = 67108864"

/* The writer checkpoints the WAL once it holds this many frames (SQLite's
 * own default for its autocheckpoint). */
#define STORE_CHECKPOINT_PAGES 1000

void
store_msg_free(struct store_msg *msg)
{
    if (msg == NULL)
        return;
    for (size_t i = 0; i < msg->nrcpts && msg->rcpts != NULL; i++) {
        free(msg->rcpts[i].address);
        free(msg->rcpts[i].domain);
        free(msg->rcpts[i].orcpt);
        free(msg->rcpts[i].held_reply);
    }
    free(msg->rcpts);
    free(msg->envid);
    free(msg->client_addr);
    free(msg->helo);
    free(msg->client_name);
    free(msg->sender);
    free(msg->header);
    free(msg->spool_path);
    free(msg->body_file);
    free(msg->body);
    free(msg->hold_reason);
    free(msg);
}

void
store_dmsg_free_list(struct store_dmsg *list)
{
    while (list != NULL) {
        struct store_dmsg *next = list->next;

        for (size_t i = 0; i < list->nrcpts; i++) {
            free(list->rcpts[i].address);
            free(list->rcpts[i].domain);
            free(list->rcpts[i].orcpt);
        }
        free(list->rcpts);
        free(list->sender);
        free(list->envid);
        free(list->client_addr);
        free(list->helo);
        free(list->client_name);
        free(list->client_port);
        free(list->client_proto);
        free(list);
        list = next;
    }
}

static const char *
job_qid(const struct store_job *j)
{
    const struct store_msg *m = j->msg;

    return m != NULL && memchr(m->qid, '\0', sizeof(m->qid)) != NULL && m->qid[0] ? m->qid : NULL;
}

static void
queue_init(struct store_queue *q)
{
    if (uv_mutex_init(&q->mu) != 0 || uv_cond_init(&q->cv) != 0)
        mxd_panic("store: cannot create a mutex or condition variable");
    q->tail = &q->head; /* head and stop: zeroed with the store */
}

/* Queues j, or with j NULL tells the thread to drain the queue and exit. */
static void
queue_push(struct store_queue *q, struct store_job *j)
{
    uv_mutex_lock(&q->mu);
    if (j != NULL) {
        j->next = NULL;
        *q->tail = j;
        q->tail = &j->next;
    } else {
        q->stop = true;
    }
    uv_cond_signal(&q->cv);
    uv_mutex_unlock(&q->mu);
}

/* Waits for work and takes every job waiting; NULL once stopped and empty. */
static struct store_job *
queue_take(struct store_queue *q)
{
    struct store_job *jobs;

    uv_mutex_lock(&q->mu);
    while (q->head == NULL && !q->stop)
        uv_cond_wait(&q->cv, &q->mu);
    jobs = q->head;
    q->head = NULL;
    q->tail = &q->head;
    uv_mutex_unlock(&q->mu);
    return jobs;
}

/* Hands finished jobs (possibly none) back to the loop, from any thread;
 * exiting: the calling thread is done and must not touch st after this. The
 * handle starts closing only after both threads were joined, so only the
 * loop thread can see it closing (its close callback drains the list). */
static void
store_post(struct store *st, struct store_job *jobs, const struct store_stats *stats, bool exiting)
{
    struct store_job *last = jobs;

    while (last != NULL && last->next != NULL)
        last = last->next;
    uv_mutex_lock(&st->done_mu);
    if (jobs != NULL) {
        *st->done_tail = jobs;
        st->done_tail = &last->next;
    }
    if (stats != NULL)
        st->done_stats = *stats;
    if (exiting)
        st->nexited++;
    uv_mutex_unlock(&st->done_mu);
    if (!uv_is_closing((uv_handle_t *)&st->async))
        uv_async_send(&st->async);
}

/* Unlinks path (gone already is fine), logging a failure; qid may be NULL. */
static void
unlink_path(const char *qid, const char *what, const char *path)
{
    char esc[256];

    if (unlink(path) != 0 && errno != ENOENT)
        log_msg(LOG_WARN, qid, "store", "%s unlink failed path=%s reason=\"%s\"", what,
                log_esc(esc, sizeof(esc), path, strlen(path)), strerror(errno));
}

/* The spool file is done with; a body file too unless its row committed. */
static void
unlink_spool(const struct store_job *j)
{
    if (j->msg == NULL)
        return;
    if (j->msg->spool_path != NULL)
        unlink_path(job_qid(j), "spool", j->msg->spool_path);
    if (j->msg->body_file != NULL && j->status != 0)
        unlink_path(job_qid(j), "body file", j->msg->body_file);
}

static void
conn_close(struct store_conn *c)
{
    for (int i = c->first; i < (int)c->end; i++) {
        sdb_finalize(c->stmt[i]);
        c->stmt[i] = NULL;
    }
    /* SQLite: the last connection to close checkpoints the WAL. */
    sdb_close(c->db);
    c->db = NULL;
}

static int
conn_open(struct store_conn *c, const struct store_config *cfg, enum store_stmt first,
          enum store_stmt end, const char *who, char **err)
{
    int rc;

    c->first = first;
    c->end = end;
    c->who = who;
    if ((rc = sdb_open(&cfg->db, &c->db, err)) != 0)
        return rc;
    if (sdb_engine(c->db) == SDB_SQLITE && end != STORE_NSTMT &&
        sdb_exec(c->db, STORE_WRITER_PRAGMAS) != 0) {
        *err = xasprintf("database %s: %s: %s", sdb_name(c->db), STORE_WRITER_PRAGMAS,
                         sdb_errmsg(c->db));
        goto fail;
    }
    if (end != STORE_NSTMT) /* the writer checkpoints after its 250s went out */
        sdb_checkpoint_later(c->db);
    for (int i = first; i < (int)end; i++) {
        const char *sql = store__sql[i].sql;

        if (sdb_engine(c->db) == SDB_POSTGRESQL && store__sql[i].sql_pg != NULL)
            sql = store__sql[i].sql_pg;
        if (sql == NULL)
            continue; /* not on this engine */
        if (sdb_prepare(c->db, sql, &c->stmt[i]) != 0) {
            *err = xasprintf("database %s: cannot prepare %s: %s", sdb_name(c->db),
                             store__sql[i].label, sdb_errmsg(c->db));
            goto fail;
        }
    }
    return 0;
fail:
    conn_close(c);
    return MXD_ESTORE;
}

void
store__conn_check(struct store_conn *c)
{
    if (c->down || c->db == NULL || !sdb_lost(c->db))
        return;
    c->down = true;
    c->last_try = 0; /* the next job tries at once */
    log_msg(LOG_ERR, NULL, "store",
            "database connection lost thread=%s database=\"%s\" "
            "reason=\"%s\"",
            c->who, sdb_name(c->db), sdb_errmsg(c->db));
}

bool
store__conn_ready(struct store_conn *c)
{
    uint64_t now = uv_hrtime();
    char *err = NULL;

    if (!c->down)
        return true;
    if (c->last_try != 0 && now - c->last_try < 1000000000u)
        return false; /* at most once a second */
    c->last_try = now;
    if (sdb_reconnect(c->db, &err) != 0) {
        free(err); /* the loss was logged; so is the recovery */
        return false;
    }
    c->down = false;
    log_msg(LOG_INFO, NULL, "store", "database connection recovered thread=%s database=\"%s\"",
            c->who, sdb_name(c->db));
    return true;
}

void
store__takeover_add(struct store_takeovers *tk, int64_t id)
{
    uv_mutex_lock(&tk->mu);
    if (tk->n == tk->cap && tk->cap < 65536) {
        tk->cap = tk->cap ? 2 * tk->cap : 64;
        tk->ids = xrealloc(tk->ids, tk->cap * sizeof(*tk->ids));
    }
    if (tk->n < tk->cap) /* past 64 Ki pending takeovers, the rest go uncounted */
        tk->ids[tk->n++] = id;
    uv_mutex_unlock(&tk->mu);
}

bool
store__takeover_take(struct store_takeovers *tk, int64_t id)
{
    bool found = false;

    uv_mutex_lock(&tk->mu);
    for (size_t i = 0; i < tk->n && !found; i++) {
        if (tk->ids[i] == id) {
            tk->ids[i] = tk->ids[--tk->n];
            found = true;
        }
    }
    uv_mutex_unlock(&tk->mu);
    return found;
}

/* Records why the current message or transaction failed; the first reason
 * wins, so cleanup errors do not hide the cause. */
void
store__writer_reason(struct store_writer *w, const char *fmt, ...)
{
    va_list ap;

    if (w->reason[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(w->reason, sizeof(w->reason), fmt, ap);
    va_end(ap);
}

/* Ends statement i after its first step gave rc: 0, or MXD_ESTORE with the reason. */
static int
writer_stepped(struct store_writer *w, enum store_stmt i, int rc)
{
    struct sdb_stmt *s = w->c.stmt[i];

    /* a statement with RETURNING has run whole once it gave its row */
    if (rc == SDB_DONE || rc == SDB_ROW) {
        sdb_reset(s);
        return 0;
    }
    store__writer_reason(w, "%s: %s", store__sql[i].label, sdb_errmsg(w->c.db));
    sdb_reset(s);
    return MXD_ESTORE;
}

int
store__writer_exec(struct store_writer *w, enum store_stmt i)
{
    return writer_stepped(w, i, sdb_step(w->c.stmt[i]));
}

int
store__writer_delete_msg(struct store_writer *w, int64_t msg_id)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_DELETE_MSG];
    int rc;

    sdb_bind_i64(s, 1, msg_id);
    rc = sdb_step(s);
    if (rc == SDB_ROW && !sdb_col_null(s, 0) && w->bodies != NULL) {
        if (w->ngone == w->capgone) {
            w->capgone = w->capgone ? 2 * w->capgone : 16;
            w->gone = xrealloc(w->gone, w->capgone * sizeof(*w->gone));
        }
        w->gone[w->ngone++] = xasprintf("%s/%s", w->bodies, sdb_col_text(s, 0));
    }
    return writer_stepped(w, STORE_W_DELETE_MSG, rc);
}

/* The body files of the rows deleted since mark: unlinked (their deletion
 * committed) or forgotten (rolled back). */
void
store__writer_gone(struct store_writer *w, size_t mark, bool committed)
{
    while (w->ngone > mark) {
        char *path = w->gone[--w->ngone];

        if (committed)
            unlink_path(NULL, "body file", path);
        free(path);
    }
}

bool
store__msg_valid(const struct store_msg *m)
{
    if (m == NULL || memchr(m->qid, '\0', sizeof(m->qid)) == NULL || m->qid[0] == '\0' ||
        m->client_addr == NULL || m->helo == NULL || m->sender == NULL || m->rcpts == NULL ||
        m->nrcpts == 0 || (m->header == NULL && m->header_len > 0) ||
        (m->body == NULL && m->body_len > 0) ||
        (m->spool_path == NULL && m->body_file == NULL && m->spool_len > 0))
        return false;
    for (size_t i = 0; i < m->nrcpts; i++) {
        if (m->rcpts[i].address == NULL || m->rcpts[i].domain == NULL)
            return false;
    }
    return true;
}

static int
writer_body_put(struct store_writer *w, struct sdb_body *b, const void *p, size_t n)
{
    const unsigned char *c = p;

    while (n > 0) {
        size_t len = n < STORE_CHUNK ? n : STORE_CHUNK;

        if (sdb_body_write(b, c, len) != 0) {
            store__writer_reason(w, "body write: %s", sdb_errmsg(w->c.db));
            return MXD_ESTORE;
        }
        c += len;
        n -= len;
    }
    return 0;
}

int
store__spool_each(struct store_writer *w, const struct store_msg *m,
                  int (*sink)(void *arg, const void *p, size_t n), void *arg, char *why,
                  size_t whylen)
{
    uint64_t left = m->spool_len;
    int fd, rc = 0;

    if (left == 0)
        return 0;
    if ((fd = open(m->spool_path, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(why, whylen, "spool %s: %s", m->spool_path, strerror(errno));
        return MXD_ESTORE;
    }
    while (rc == 0 && left > 0) {
        ssize_t n = read(fd, w->buf, left < STORE_CHUNK ? (size_t)left : STORE_CHUNK);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, whylen, "spool %s: %s", m->spool_path,
                     n == 0 ? "shorter than announced" : strerror(errno));
            rc = MXD_ESTORE;
            break;
        }
        rc = sink(arg, w->buf, (size_t)n);
        left -= (uint64_t)n;
    }
    close(fd);
    return rc;
}

struct body_sink {
    struct store_writer *w;
    struct sdb_body *b;
};

static int
body_sink(void *arg, const void *p, size_t n)
{
    struct body_sink *bs = arg;

    return writer_body_put(bs->w, bs->b, p, n);
}

/* Copies spool_len octets of the spool file into the body, a chunk at a time. */
static int
writer_body_spool(struct store_writer *w, struct sdb_body *b, const struct store_msg *m)
{
    struct body_sink bs = {w, b};
    char why[sizeof(w->reason)] = "";
    int rc = store__spool_each(w, m, body_sink, &bs, why, sizeof(why));

    if (why[0] != '\0')
        store__writer_reason(w, "%s", why);
    return rc;
}

/* The body is streamed in after the row (sdb_body_*), never more than
 * STORE_CHUNK octets in memory. */
static int
writer_body(struct store_writer *w, const struct store_msg *m, int64_t id, uint64_t total)
{
    struct sdb_body *b = NULL;
    int rc;

    if (sdb_body_begin(w->c.db, id, total, &b) != 0) {
        store__writer_reason(w, "body open: %s", sdb_errmsg(w->c.db));
        return MXD_ESTORE;
    }
    rc = writer_body_put(w, b, m->header, m->header_len);
    if (rc == 0 && m->body_file == NULL) /* else the rest is in the file */
        rc = writer_body_spool(w, b, m);
    if (rc == 0)
        rc = writer_body_put(w, b, m->body, m->body_len);
    if (sdb_body_end(b, rc == 0) != 0 && rc == 0) {
        store__writer_reason(w, "body close: %s", sdb_errmsg(w->c.db));
        rc = MXD_ESTORE;
    }
    return rc;
}

int
store__writer_insert_id(struct store_writer *w, enum store_stmt i, int64_t *id)
{
    struct sdb_stmt *s = w->c.stmt[i];
    int rc = sdb_step(s);

    if (rc == SDB_ROW) {
        *id = sdb_col_i64(s, 0);
        sdb_reset(s);
        return 0;
    }
    store__writer_reason(w, "%s: %s", store__sql[i].label,
                         rc == SDB_DONE ? "no id returned" : sdb_errmsg(w->c.db));
    sdb_reset(s);
    return MXD_ESTORE;
}

/* Whether the whole body (our header and what was received) is in memory
 * and fits w->buf: SQLite then takes it with the row, as one bound blob,
 * instead of a zeroblob filled in through sqlite3_blob_open (which compiles
 * a statement of its own for each message). */
static bool
writer_body_inline(const struct store_writer *w, const struct store_msg *m)
{
    return sdb_engine(w->c.db) == SDB_SQLITE && m->spool_len == 0 && m->body_file == NULL &&
           m->header_len <= STORE_CHUNK && m->body_len <= STORE_CHUNK - m->header_len;
}

/* Inserts the row (SQLite: with the body when writer_body_inline, else with
 * a zeroblob body of the final size, or of the header's when the rest is in
 * a body file). */
static int
writer_insert_row(struct store_writer *w, const struct store_msg *m, uint64_t *total, int64_t *id)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_INSERT_MSG];

    /* SQLite's length limit is far below this; the engine refuses past it */
    if (m->header_len > INT64_MAX / 4 || m->spool_len > INT64_MAX / 4 ||
        m->body_len > INT64_MAX / 4) {
        store__writer_reason(w, "message too big for the database");
        return MXD_ESTORE;
    }
    *total = m->header_len + m->spool_len + m->body_len;
    sdb_bind_text(s, 1, m->qid);
    sdb_bind_i64(s, 2, m->received);
    sdb_bind_text(s, 3, m->client_addr);
    sdb_bind_text(s, 4, m->helo);
    sdb_bind_text(s, 5, m->sender);
    sdb_bind_i64(s, 6, m->smtputf8);
    sdb_bind_i64(s, 7, m->body_8bit);
    sdb_bind_i64(s, 8, (int64_t)*total);
    if (m->body_file != NULL) {
        const char *slash = strrchr(m->body_file, '/');

        *total = m->header_len;
        sdb_bind_text(s, 10, slash != NULL ? slash + 1 : m->body_file);
    } else {
        sdb_bind_null(s, 10);
    }
    if (writer_body_inline(w, m)) {
        if (m->header_len > 0)
            memcpy(w->buf, m->header, m->header_len);
        if (m->body_len > 0)
            memcpy(w->buf + m->header_len, m->body, m->body_len);
        sdb_bind_blob(s, 9, w->buf, (size_t)*total);
    } else {
        sdb_bind_zeroblob(s, 9, *total);
    }
    return store__writer_insert_id(w, STORE_W_INSERT_MSG, id);
}

static int
writer_insert_rcpts(struct store_writer *w, const struct store_msg *m, int64_t id)
{
    int rc;

    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct store_rcpt *r = &m->rcpts[i];
        struct sdb_stmt *d = w->c.stmt[STORE_W_INSERT_RCPT_DSN];
        enum store_stmt k = m->hold_reason != NULL  ? STORE_W_INSERT_RCPT_HELD
                            : r->held_reply != NULL ? STORE_W_INSERT_RCPT_WAIT
                                                    : STORE_W_INSERT_RCPT;
        struct sdb_stmt *s = w->c.stmt[k];
        int64_t rid = 0;

        sdb_bind_i64(s, 1, id);
        sdb_bind_text(s, 2, r->address);
        sdb_bind_text(s, 3, r->domain);
        if (k == STORE_W_INSERT_RCPT_HELD) { /* never due until released (as an operator's hold) */
            sdb_bind_text(s, 4, m->hold_reason);
        } else if (k == STORE_W_INSERT_RCPT_WAIT) { /* the primary is down: as deferred */
            sdb_bind_i64(s, 4, r->held_next);
            sdb_bind_text(s, 5, r->held_reply);
        } else {
            sdb_bind_i64(s, 4, m->received);
        }
        if ((rc = store__writer_insert_id(w, k, &rid)) != 0)
            return rc;
        if (r->notify == 0 && r->orcpt == NULL)
            continue; /* the default: no row */
        sdb_bind_i64(d, 1, rid);
        sdb_bind_i64(d, 2, r->notify);
        sdb_bind_text(d, 3, r->orcpt); /* NULL binds NULL */
        if ((rc = store__writer_exec(w, STORE_W_INSERT_RCPT_DSN)) != 0)
            return rc;
    }
    return 0;
}

/* The message_dsn row (schema 007). */
static int
writer_msg_dsn(struct store_writer *w, const struct store_msg *m, int64_t id)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_INSERT_DSN];

    sdb_bind_i64(s, 1, id);
    sdb_bind_i64(s, 2, (int64_t)m->ret);
    sdb_bind_text(s, 3, m->envid); /* NULL binds NULL */
    sdb_bind_i64(s, 4, m->return_auth);
    return store__writer_exec(w, STORE_W_INSERT_DSN);
}

int
store__writer_facts(struct store_writer *w, int64_t msg_id, bool utf8_needed, unsigned hops)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_INSERT_FACTS];

    sdb_bind_i64(s, 1, msg_id);
    sdb_bind_i64(s, 2, utf8_needed);
    sdb_bind_i64(s, 3, hops);
    return store__writer_exec(w, STORE_W_INSERT_FACTS);
}

int
store__writer_tls(struct store_writer *w, int64_t msg_id, bool requiretls, bool tls_optional)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_INSERT_TLS];

    if (!requiretls && !tls_optional)
        return 0; /* the default: no row */
    sdb_bind_i64(s, 1, msg_id);
    sdb_bind_i64(s, 2, requiretls);
    sdb_bind_i64(s, 3, !requiretls && tls_optional); /* RFC 8689 4.1: REQUIRETLS wins */
    return store__writer_exec(w, STORE_W_INSERT_TLS);
}

/* The message_client row (schema 011): what XFORWARD tells a primary. */
static int
writer_client(struct store_writer *w, const struct store_msg *m, int64_t msg_id)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_INSERT_CLIENT];

    sdb_bind_i64(s, 1, msg_id);
    if (m->client_name != NULL && m->client_name[0] != '\0')
        sdb_bind_text(s, 2, m->client_name);
    else
        sdb_bind_null(s, 2);
    sdb_bind_i64(s, 3, m->client_port);
    sdb_bind_text(s, 4, m->esmtp ? "ESMTP" : "SMTP");
    return store__writer_exec(w, STORE_W_INSERT_CLIENT);
}

static int
writer_insert(struct store_writer *w, const struct store_msg *m, int64_t *id)
{
    uint64_t total = 0;
    int rc;

    if ((rc = writer_insert_row(w, m, &total, id)) != 0)
        return rc;
    if ((rc = store__writer_facts(w, *id, m->smtputf8 && m->utf8_needed, m->hops)) != 0)
        return rc;
    if ((rc = writer_msg_dsn(w, m, *id)) != 0)
        return rc;
    if ((rc = store__writer_tls(w, *id, m->requiretls, m->tls_optional)) != 0)
        return rc;
    if ((rc = writer_client(w, m, *id)) != 0)
        return rc;
    if (!writer_body_inline(w, m) && (rc = writer_body(w, m, *id, total)) != 0)
        return rc;
    return writer_insert_rcpts(w, m, *id);
}

/* One job (a message, or store_deliver.c's outcomes or operator action)
 * inside its own savepoint. On failure its rows are rolled back and *broken
 * says whether the batch's transaction is gone too (SQLite rolls a whole
 * transaction back on some I/O and disk-full errors). */
static int
writer_commit_one(struct store_writer *w, struct store_job *j, bool *broken)
{
    size_t mark = w->ngone;
    int rc;

    *broken = false;
    w->reason[0] = '\0';
    if (j->kind == STORE_JOB_COMMIT && !store__msg_valid(j->msg)) {
        store__writer_reason(w, "malformed message");
        return MXD_EINVAL;
    }
    if (store__writer_exec(w, STORE_W_SAVEPOINT) != 0) {
        *broken = true;
        return MXD_ESTORE;
    }
    if (j->kind == STORE_JOB_COMMIT)
        rc = writer_insert(w, j->msg, &j->msg_id);
    else if (j->kind == STORE_JOB_SCREEN_PUT)
        rc = store__screen_write(w, j);
    else if (j->kind == STORE_JOB_GREYLIST)
        rc = store__greylist_write(w, j);
    else if (j->kind == STORE_JOB_RCPT_PUT)
        rc = store__rcpt_write(w, j);
    else if (j->kind == STORE_JOB_STS_PUT)
        rc = store__sts_write(w, j);
    else
        rc = store__writer_run(w, j);
    if (rc == 0 && (rc = store__writer_exec(w, STORE_W_RELEASE)) == 0)
        return 0;
    store__writer_gone(w, mark, false);
    if (!sdb_in_txn(w->c.db) || store__writer_exec(w, STORE_W_ROLLBACK_TO) != 0 ||
        store__writer_exec(w, STORE_W_RELEASE) != 0)
        *broken = true;
    return rc;
}

/* Fails the jobs in [from, to) that had not failed yet. */
static void
writer_fail_range(struct store_job *from, struct store_job *to, int status, const char *reason)
{
    char esc[320];

    for (struct store_job *j = from; j != to; j = j->next) {
        if (j->status != 0)
            continue;
        j->status = status;
        if (j->kind == STORE_JOB_COMMIT)
            metrics_add(METRICS_STORE_COMMIT_FAILURES, 1);
        if (j->kind == STORE_JOB_COMMIT || j->kind == STORE_JOB_SCREEN_PUT)
            log_msg(LOG_ERR, job_qid(j), "store", "%s failed reason=%s",
                    j->kind == STORE_JOB_COMMIT ? "commit" : "screen record",
                    log_esc(esc, sizeof(esc), reason, strlen(reason)));
        else if (j->kind == STORE_JOB_GREYLIST)
            log_msg(LOG_ERR, NULL, "store", "greylist failed reason=%s",
                    log_esc(esc, sizeof(esc), reason, strlen(reason)));
        else if (j->kind == STORE_JOB_RCPT_PUT)
            store__rcpt_failed(j, reason);
        else if (j->kind == STORE_JOB_STS_PUT)
            log_msg(LOG_ERR, NULL, "store", "mta-sts record failed reason=%s",
                    log_esc(esc, sizeof(esc), reason, strlen(reason)));
        else
            store__writer_failed(j, reason);
    }
}

/* COMMITs the transaction holding [first, end); fsyncs the WAL. Then the
 * body files of the messages it deleted go. */
static void
writer_commit(struct store_writer *w, struct store_job *first)
{
    uint64_t n = 0;

    w->reason[0] = '\0';
    if (store__writer_exec(w, STORE_W_COMMIT) != 0) {
        store__writer_gone(w, 0, false);
        /* PostgreSQL: a COMMIT lost with its connection may or may not have
         * committed; only what is known to be committed is acknowledged */
        if (sdb_in_txn(w->c.db))
            (void)store__writer_exec(w, STORE_W_ROLLBACK);
        writer_fail_range(first, NULL, MXD_ESTORE, w->reason);
        return;
    }
    store__writer_gone(w, 0, true);
    for (struct store_job *j = first; j != NULL; j = j->next) {
        n += j->kind == STORE_JOB_COMMIT && j->status == 0;
        if (j->kind == STORE_JOB_OUTCOMES && j->batched && j->status == 0)
            w->stats.batched_outcomes += store__outcomes_count(j);
    }
    if (n > 0) {
        metrics_observe(METRICS_H_BATCH_SIZE, (double)n);
        w->stats.batches++;
        if (n > w->stats.max_batch)
            w->stats.max_batch = n;
    }
}

/* Group commit: every job taken runs in one transaction (a new one only
 * when SQLite threw the previous one away), each in its own savepoint;
 * PostgreSQL: most messages first, all at once (store_pgbatch.c). */
static void
writer_batch(struct store_writer *w, struct store_job *jobs)
{
    struct store_job *first = jobs;
    uint64_t t0 = uv_hrtime();

    while (first != NULL) {
        struct store_job *j;
        bool broken = false;

        w->reason[0] = '\0';
        store__conn_check(&w->c);
        if (!store__conn_ready(&w->c)) {
            writer_fail_range(first, NULL, MXD_ESTORE, "database connection lost");
            return;
        }
        if (store__writer_exec(w, STORE_W_BEGIN) != 0) {
            writer_fail_range(first, NULL, MXD_ESTORE, w->reason);
            return;
        }
        if (store__pg_batch(w, first) != 0) {
            writer_fail_range(first, NULL, MXD_ESTORE, w->reason);
            return;
        }
        for (j = first; j != NULL && !broken; j = j->next) {
            int rc = j->batched ? 0 : writer_commit_one(w, j, &broken);

            if (rc != 0)
                writer_fail_range(j, j->next, rc, w->reason);
        }
        if (!broken) {
            writer_commit(w, first);
            metrics_observe(METRICS_H_COMMIT_SECONDS, (double)(uv_hrtime() - t0) / 1e9);
            return;
        }
        if (sdb_in_txn(w->c.db))
            (void)store__writer_exec(w, STORE_W_ROLLBACK);
        store__writer_gone(w, 0, false);
        writer_fail_range(first, j, MXD_ESTORE, "transaction rolled back after an earlier error");
        first = j;
    }
}

/* Unlinks spool files, frees messages and counts the outcome. */
static void
writer_finish(struct store_writer *w, struct store_job *jobs)
{
    for (struct store_job *j = jobs; j != NULL; j = j->next) {
        if (j->kind == STORE_JOB_GREYLIST || j->kind == STORE_JOB_RCPT_PUT ||
            j->kind == STORE_JOB_STS_PUT)
            continue;
        if (j->kind != STORE_JOB_COMMIT) {
            if (j->kind != STORE_JOB_SCREEN_PUT)
                store__writer_done(w, j);
            continue;
        }
        unlink_spool(j);
        store_msg_free(j->msg);
        j->msg = NULL;
        if (j->status == 0)
            w->stats.commits++;
        else
            w->stats.failures++;
    }
}

static void
writer_main(void *arg)
{
    struct store *st = arg;
    struct store_job *jobs;

    while ((jobs = queue_take(&st->wq)) != NULL) {
        uv_mutex_lock(&st->wq.mu);
        memcpy(st->w.hostname, st->hostname, sizeof(st->w.hostname));
        st->w.rules = st->rules;
        uv_mutex_unlock(&st->wq.mu);
        writer_batch(&st->w, jobs);
        store__conn_check(&st->w.c);
        writer_finish(&st->w, jobs);
        store_post(st, jobs, &st->w.stats, false);
        /* SQLite's autocheckpoint would have run inside the COMMIT, before
         * the batch's 250s: now their sessions go on while it runs */
        if (sdb_checkpoint_due(st->w.c.db, STORE_CHECKPOINT_PAGES) != 0)
            log_msg(LOG_WARN, NULL, "store", "checkpoint failed reason=%s", sdb_errmsg(st->w.c.db));
    }
    conn_close(&st->w.c);
    store_post(st, NULL, NULL, true);
}

static int
reader_lookup(struct store_conn *c, const char *address, const char *domain)
{
    struct sdb_stmt *s = c->stmt[STORE_R_LOOKUP];
    char esc[256];
    int rc;

    sdb_bind_text(s, 1, address);
    sdb_bind_text(s, 2, domain);
    rc = sdb_step(s);
    if (rc != SDB_ROW && rc != SDB_DONE)
        log_msg(LOG_ERR, NULL, "store", "lookup failed address=%s reason=\"%s\"",
                log_esc(esc, sizeof(esc), address, strlen(address)), sdb_errmsg(c->db));
    sdb_reset(s);
    return rc == SDB_ROW ? 0 : rc == SDB_DONE ? MXD_ENOENT : MXD_ESTORE;
}

/* Cluster: this node is alive (cluster_nodes) and keeps its leases. */
static int
reader_heartbeat(struct store *st)
{
    struct store_conn *c = &st->r;
    int64_t now = (int64_t)time(NULL);
    struct sdb_stmt *s = c->stmt[STORE_R_NODE_BEAT];
    int rc;

    sdb_bind_text(s, 1, st->node);
    sdb_bind_i64(s, 2, st->started);
    sdb_bind_i64(s, 3, now);
    rc = sdb_step(s);
    sdb_reset(s);
    if (rc == SDB_DONE) {
        s = c->stmt[STORE_R_LEASE_RENEW];
        sdb_bind_text(s, 1, st->node);
        sdb_bind_i64(s, 2, now + st->r.lease_s);
        rc = sdb_step(s);
        sdb_reset(s);
    }
    if (rc == SDB_DONE)
        return 0;
    log_msg(LOG_ERR, NULL, "store", "heartbeat failed node=%s reason=\"%s\"", st->node,
            sdb_errmsg(c->db));
    return MXD_ESTORE;
}

static void
reader_main(void *arg)
{
    struct store *st = arg;
    struct store_job *jobs, *next;

    while ((jobs = queue_take(&st->rq)) != NULL) {
        struct store_job *done = NULL, **tail = &done;

        for (struct store_job *j = jobs; j != NULL; j = next) {
            next = j->next;
            if (!store__conn_ready(&st->r)) {
                /* down: fails now (the session says 451), nothing waits */
                j->status = MXD_ESTORE;
            } else if (j->kind == STORE_JOB_GREYLIST) {
                if (!store__greylist_read(&st->r, j)) {
                    store__conn_check(&st->r);
                    /* The writer decides again and writes. It stops only
                     * after this thread has exited, so it still takes it. */
                    queue_push(&st->wq, j);
                    continue;
                }
            } else if (j->kind == STORE_JOB_HEARTBEAT) {
                j->status = reader_heartbeat(st);
            } else if (j->kind == STORE_JOB_LOOKUP) {
                j->status = reader_lookup(&st->r, j->text, j->text + j->domain_off);
            } else if (j->kind == STORE_JOB_SCREEN_GET) {
                j->status = store__screen_read(&st->r, j);
            } else if (j->kind == STORE_JOB_RCPT_GET) {
                j->status = store__rcpt_read(&st->r, j);
            } else if (j->kind == STORE_JOB_STS_GET) {
                j->status = store__sts_read(&st->r, j);
            } else {
                j->status = store__reader_run(&st->r, j);
            }
            if (j->status == MXD_ESTORE)
                store__conn_check(&st->r);
            j->next = NULL;
            *tail = j;
            tail = &j->next;
        }
        if (done != NULL)
            store_post(st, done, NULL, false);
    }
    conn_close(&st->r);
    store_post(st, NULL, NULL, true);
}

static void
store_free(struct store *st)
{
    uv_mutex_destroy(&st->wq.mu);
    uv_cond_destroy(&st->wq.cv);
    uv_mutex_destroy(&st->rq.mu);
    uv_cond_destroy(&st->rq.cv);
    uv_mutex_destroy(&st->done_mu);
    uv_mutex_destroy(&st->tk.mu);
    free(st->tk.ids);
    free(st->w.buf);
    free(st->w.bodies);
    free(st->w.gone);
    free(st);
}

/* Runs the callbacks of the finished jobs; returns how many there were. */
static size_t
store_run_done(struct store *st)
{
    struct store_job *jobs, *next;
    size_t n = 0;

    uv_mutex_lock(&st->done_mu);
    jobs = st->done_head;
    st->done_head = NULL;
    st->done_tail = &st->done_head;
    st->stats = st->done_stats;
    uv_mutex_unlock(&st->done_mu);
    for (; jobs != NULL; jobs = next, n++) {
        next = jobs->next;
        if (jobs->kind == STORE_JOB_COMMIT) {
            if (jobs->cb.commit != NULL)
                jobs->cb.commit(jobs->arg, jobs->status, jobs->status == 0 ? jobs->msg_id : 0);
        } else if (jobs->kind == STORE_JOB_LOOKUP) {
            if (jobs->cb.lookup != NULL)
                jobs->cb.lookup(jobs->arg, jobs->status);
        } else if (jobs->kind == STORE_JOB_SCREEN_GET || jobs->kind == STORE_JOB_SCREEN_PUT) {
            store__screen_complete(jobs);
        } else if (jobs->kind == STORE_JOB_GREYLIST) {
            store__greylist_complete(jobs);
        } else if (jobs->kind == STORE_JOB_RCPT_GET || jobs->kind == STORE_JOB_RCPT_PUT) {
            store__rcpt_complete(jobs);
        } else if (jobs->kind == STORE_JOB_STS_GET || jobs->kind == STORE_JOB_STS_PUT) {
            store__sts_complete(jobs);
        } else if (jobs->kind == STORE_JOB_HEARTBEAT) {
            /* nothing to call back; a failure was logged */
        } else {
            store__complete(jobs);
        }
        free(jobs);
    }
    return n;
}

static void
store_handle_closed_cb(uv_handle_t *h)
{
    struct store *st = h->data;
    store_closed_cb cb = st->closed_cb;
    void *arg = st->closed_arg;

    /* Jobs refused with MXD_ECLOSING since the handle started closing. */
    while (store_run_done(st) > 0)
        continue;
    if (cb != NULL)
        cb(arg);
    store_free(st);
}

static void
store_async_cb(uv_async_t *h)
{
    struct store *st = h->data;
    unsigned nexited;

    store_run_done(st);
    uv_mutex_lock(&st->done_mu);
    nexited = st->nexited;
    uv_mutex_unlock(&st->done_mu);
    if (st->closing && nexited == 1 && !st->writer_told) {
        /* The reader has closed; the writer closes last, so its close
         * checkpoints the WAL and removes it. */
        st->writer_told = true;
        queue_push(&st->wq, NULL);
    }
    if (st->closing && nexited == 2 && !st->beat_on && st->npreps == 0 &&
        !uv_is_closing((uv_handle_t *)&st->async)) {
        /* Both threads have posted their last word: these joins are short. */
        uv_thread_join(&st->writer_tid);
        uv_thread_join(&st->reader_tid);
        uv_close((uv_handle_t *)&st->async, store_handle_closed_cb);
    }
}

/* Fails j on the loop thread, its files unlinked, without a store thread. */
static void
job_fail_here(struct store *st, struct store_job *j, int status)
{
    j->status = status;
    unlink_spool(j);
    store_msg_free(j->msg);
    j->msg = NULL;
    j->next = NULL;
    store_post(st, j, NULL, false);
}

void
store__submit(struct store *st, struct store_job *j, bool to_writer)
{
    if (!st->closing) {
        queue_push(to_writer ? &st->wq : &st->rq, j);
        return;
    }
    /* No thread will see this job; it fails on the loop. */
    job_fail_here(st, j, MXD_ECLOSING);
}

static void
store_beat_cb(uv_timer_t *t)
{
    struct store *st = t->data;
    struct store_job *j;

    if (st->closing)
        return;
    j = xcalloc(1, sizeof(*j));
    j->kind = STORE_JOB_HEARTBEAT;
    store__submit(st, j, false);
}

static void
store_beat_closed_cb(uv_handle_t *h)
{
    struct store *st = h->data;

    st->beat_on = false;
    uv_async_send(&st->async); /* store_async_cb may close the store now */
}

/* Cluster mode (PostgreSQL): a heartbeat now and every lease_s / 3. */
static void
store_beat_start(struct store *st, uv_loop_t *loop)
{
    uint64_t every = (uint64_t)(st->r.lease_s > 3 ? st->r.lease_s : 3) * 1000 / 3;

    if (uv_timer_init(loop, &st->beat) != 0)
        mxd_panic("store: cannot create a timer");
    st->beat.data = st;
    st->beat_on = true;
    uv_timer_start(&st->beat, store_beat_cb, 0, every);
    uv_unref((uv_handle_t *)&st->beat); /* the store's async keeps the loop alive */
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of the body files the rows name, sorted (SQLite, at start-up). */
static int
bodies_named(struct sdb *db, char ***names, size_t *n)
{
    struct sdb_stmt *s = NULL;
    size_t cap = 0;
    int rc;

    *names = NULL;
    *n = 0;
    if (sdb_prepare(db, "SELECT body_file FROM messages WHERE body_file IS NOT NULL", &s) != 0)
        return MXD_ESTORE;
    while ((rc = sdb_step(s)) == SDB_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            *names = xrealloc(*names, cap * sizeof(**names));
        }
        (*names)[(*n)++] = xstrdup(sdb_col_text(s, 0));
    }
    sdb_finalize(s);
    if (*n > 0)
        qsort(*names, *n, sizeof(**names), cmp_str);
    return rc == SDB_DONE ? 0 : MXD_ESTORE;
}

/* SQLite, at start-up, before any session: creates <database dir>/bodies;
 * removes the files no row names (a crash between their link and the
 * commit, or between a deletion's commit and the unlink); reports each row
 * whose file is missing (the message cannot be delivered whole). */
static int
bodies_prepare(struct store *st, char **err)
{
    char **names = NULL, esc[256];
    size_t n = 0, removed = 0, missing = 0;
    bool *seen;
    DIR *d;
    struct dirent *de;
    int rc;

    if (mkdir(st->w.bodies, 0700) != 0 && errno != EEXIST) {
        *err = xasprintf("cannot create body directory %s: %s", st->w.bodies, strerror(errno));
        return MXD_EIO;
    }
    if ((rc = bodies_named(st->w.c.db, &names, &n)) != 0) {
        *err =
            xasprintf("database %s: body files: %s", sdb_name(st->w.c.db), sdb_errmsg(st->w.c.db));
        goto out;
    }
    if ((d = opendir(st->w.bodies)) == NULL) {
        *err = xasprintf("cannot open body directory %s: %s", st->w.bodies, strerror(errno));
        rc = MXD_EIO;
        goto out;
    }
    seen = xcalloc(n + 1, sizeof(*seen));
    while ((de = readdir(d)) != NULL) {
        const char *key = de->d_name;
        char **hit;

        if (de->d_name[0] == '.')
            continue;
        hit = n > 0 ? bsearch(&key, names, n, sizeof(*names), cmp_str) : NULL;
        if (hit != NULL) {
            seen[hit - names] = true;
        } else if (unlinkat(dirfd(d), de->d_name, 0) == 0) {
            removed++;
        }
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        if (seen[i])
            continue;
        missing++;
        metrics_add(METRICS_STORE_BODY_FILES_MISSING, 1);
        log_msg(LOG_ERR, NULL, "store", "body file missing path=%s/%s", st->w.bodies,
                log_esc(esc, sizeof(esc), names[i], strlen(names[i])));
    }
    free(seen);
    if (removed > 0)
        log_msg(LOG_INFO, NULL, "store", "body files without a message removed count=%zu", removed);
    if (missing > 0)
        log_msg(LOG_ERR, NULL, "store",
                "messages whose body file is missing count=%zu (they cannot be delivered)",
                missing);
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static void
conn_cluster(struct store_conn *c, struct store *st)
{
    c->node = st->node;
    c->lease_s = st->r.lease_s;
    c->tk = &st->tk;
}

int
store_open(uv_loop_t *loop, const struct store_config *cfg, struct store **out, char **err)
{
    struct store_config rcfg;
    struct store *st = xcalloc(1, sizeof(*st));
    int rc;

    *out = NULL;
    *err = NULL;
    queue_init(&st->wq);
    queue_init(&st->rq);
    if (uv_mutex_init(&st->done_mu) != 0 || uv_mutex_init(&st->tk.mu) != 0)
        mxd_panic("store: cannot create a mutex");
    snprintf(st->node, sizeof(st->node), "%s",
             cfg->node_name != NULL && cfg->node_name[0] != '\0' ? cfg->node_name : "localhost");
    st->started = (int64_t)time(NULL);
    st->r.lease_s = cfg->lease_s > 0 ? cfg->lease_s : 60;
    conn_cluster(&st->r, st);
    conn_cluster(&st->w.c, st);
    st->done_tail = &st->done_head;
    st->w.buf = xmalloc(STORE_CHUNK);
    qid_init(&st->w.qids);
    snprintf(st->hostname, sizeof(st->hostname), "localhost");
    /* until told otherwise, every DSN as before issue 18; no warnings */
    st->rules = (struct store_dsn_rules){.policy = STORE_BOUNCE_ALWAYS, .delay_warning_s = 0};
    /* PostgreSQL: the reader writes only soft state (lease claims, the
     * heartbeat): its commits need not wait for the disk or a synchronous
     * standby. A claim lost in a crash is claimed again, as one of a dead
     * node; every message and outcome goes through the writer, durably. */
    rcfg = *cfg;
    rcfg.db.on_connect = "SET synchronous_commit = off";
    if ((rc = conn_open(&st->w.c, cfg, STORE_W_BEGIN, STORE_R_LOOKUP, "writer", err)) != 0 ||
        (rc = conn_open(&st->r, &rcfg, STORE_R_LOOKUP, STORE_NSTMT, "reader", err)) != 0)
        goto fail;
    /* PostgreSQL down at start (cfg->db.lazy): both start lost, mail gets
     * 451 until a thread reconnects */
    store__conn_check(&st->w.c);
    store__conn_check(&st->r);
    if (cfg->db.engine == SDB_SQLITE && cfg->db.path != NULL) {
        st->w.bodies = sdb_sqlite_body_dir(cfg->db.path);
        if ((rc = bodies_prepare(st, err)) != 0)
            goto fail;
    }
    if ((rc = uv_async_init(loop, &st->async, store_async_cb)) != 0) {
        *err = xasprintf("store: uv_async_init: %s", uv_strerror(rc));
        goto fail;
    }
    st->async.data = st;
    if (sdb_engine(st->r.db) == SDB_POSTGRESQL)
        store_beat_start(st, loop);
    /* Like OOM: only resource exhaustion makes this fail, and at start-up. */
    if ((rc = uv_thread_create(&st->writer_tid, writer_main, st)) != 0 ||
        (rc = uv_thread_create(&st->reader_tid, reader_main, st)) != 0)
        mxd_panic("store: cannot start a thread: %s", uv_strerror(rc));
    *out = st;
    return 0;
fail:
    conn_close(&st->r);
    conn_close(&st->w.c);
    store_free(st);
    return rc;
}

/* A large body on SQLite, made durable on the threadpool before its job
 * goes to the writer (whose single thread then writes only the row). */
struct body_prep {
    uv_work_t req;
    struct store *st;
    struct store_job *j;
    int rc;          /* 0, or MXD_ESTORE: the message fails (nothing left behind) */
    char reason[96]; /* rc != 0; or why the body goes into the database after all */
};

static int
write_all(int fd, const char *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* Threadpool. The spool file gets the in-memory tail and is fdatasynced,
 * then linked into bodies/ (link, not rename: it never replaces another
 * message's body) and the directory fsynced: when this returns 0 the file
 * and its name are durable, and the row that names it may commit. A
 * failure before the link leaves the spool file's first spool_len octets
 * as they were: the writer copies the body into the database as usual. */
static void
body_prep_work(uv_work_t *req)
{
    struct body_prep *bp = req->data;
    struct store_msg *m = bp->j->msg;
    const char *base = strrchr(m->spool_path, '/');
    char *path;
    int fd, dfd;

    base = base != NULL ? base + 1 : m->spool_path;
    if ((fd = open(m->spool_path, O_WRONLY | O_CLOEXEC)) < 0 ||
        ftruncate(fd, (off_t)m->spool_len) != 0 ||
        write_all(fd, m->body, m->body_len, m->spool_len) != 0) {
        snprintf(bp->reason, sizeof(bp->reason), "spool file write: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    /* after a failed fdatasync the file's pages cannot be trusted: 451 */
    if (fdatasync(fd) != 0) {
        snprintf(bp->reason, sizeof(bp->reason), "spool file sync: %s", strerror(errno));
        bp->rc = MXD_ESTORE;
        close(fd);
        return;
    }
    close(fd);
    path = xasprintf("%s/%s", bp->st->w.bodies, base);
    if (link(m->spool_path, path) != 0) {
        snprintf(bp->reason, sizeof(bp->reason), "link into bodies: %s", strerror(errno));
        free(path);
        return;
    }
    (void)unlink(m->spool_path); /* a leftover goes with the spool at start-up */
    if ((dfd = open(bp->st->w.bodies, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fsync(dfd) != 0) {
        snprintf(bp->reason, sizeof(bp->reason), "bodies directory sync: %s", strerror(errno));
        bp->rc = MXD_ESTORE;
        (void)unlink(path);
        free(path);
    } else {
        free(m->spool_path);
        m->spool_path = NULL;
        m->spool_len += m->body_len;
        free(m->body);
        m->body = NULL;
        m->body_len = 0;
        m->body_file = path;
    }
    if (dfd >= 0)
        close(dfd);
}

static void
body_prep_done(uv_work_t *req, int status)
{
    struct body_prep *bp = req->data;
    struct store *st = bp->st;
    struct store_job *j = bp->j;
    char esc[160];

    st->npreps--;
    if (status == 0 && bp->rc == 0 && bp->reason[0] != '\0')
        log_msg(LOG_WARN, job_qid(j), "store", "body kept in the database reason=%s",
                log_esc(esc, sizeof(esc), bp->reason, strlen(bp->reason)));
    if (status != 0 || bp->rc != 0) {
        log_msg(LOG_ERR, job_qid(j), "store", "commit failed reason=%s",
                log_esc(esc, sizeof(esc), bp->reason, strlen(bp->reason)));
        metrics_add(METRICS_STORE_COMMIT_FAILURES, 1);
        job_fail_here(st, j, MXD_ESTORE);
    } else {
        store__submit(st, j, true);
    }
    free(bp);
}

void
store_commit_async(struct store *st, struct store_msg *msg, store_commit_cb cb, void *arg)
{
    struct store_job *j = xcalloc(1, sizeof(*j));
    struct body_prep *bp;

    j->kind = STORE_JOB_COMMIT;
    j->msg = msg;
    j->cb.commit = cb;
    j->arg = arg;
    if (st->closing || st->w.bodies == NULL || msg == NULL || msg->spool_path == NULL ||
        msg->body_file != NULL || (msg->body == NULL && msg->body_len > 0) ||
        msg->spool_len + msg->body_len < STORE_BODY_FILE_MIN) {
        store__submit(st, j, true);
        return;
    }
    /* The body is made durable first, on the threadpool: the primary may be
     * back (and its held mail released) by the time the rows are written,
     * so recipients held at accept are queued as usual instead. */
    for (size_t i = 0; i < msg->nrcpts; i++) {
        free(msg->rcpts[i].held_reply);
        msg->rcpts[i].held_reply = NULL;
    }
    bp = xcalloc(1, sizeof(*bp));
    bp->st = st;
    bp->j = j;
    bp->req.data = bp;
    if (uv_queue_work(st->async.loop, &bp->req, body_prep_work, body_prep_done) != 0) {
        free(bp);
        store__submit(st, j, true);
        return;
    }
    st->npreps++;
}

void
store_rcpt_lookup_async(struct store *st, const char *address, const char *domain,
                        store_lookup_cb cb, void *arg)
{
    struct store_job *j;
    size_t alen, dlen;

    address = address != NULL ? address : "";
    domain = domain != NULL ? domain : "";
    alen = strlen(address);
    dlen = strlen(domain);
    j = xcalloc(1, sizeof(*j) + alen + dlen + 2);
    memcpy(j->text, address, alen + 1);
    memcpy(j->text + alen + 1, domain, dlen + 1);
    j->domain_off = alen + 1;
    j->kind = STORE_JOB_LOOKUP;
    j->cb.lookup = cb;
    j->arg = arg;
    store__submit(st, j, false);
}

void
store_close(struct store *st, store_closed_cb cb, void *arg)
{
    if (st->closing)
        mxd_panic("store_close called twice");
    st->closing = true;
    st->closed_cb = cb;
    st->closed_arg = arg;
    if (st->beat_on) /* the async handle closes only after it */
        uv_close((uv_handle_t *)&st->beat, store_beat_closed_cb);
    /* The reader drains and closes, then the writer (store_async_cb tells
     * it); store_async_cb joins both and closes the handle. */
    queue_push(&st->rq, NULL);
}

#define STORE_RCPT_NAME(e, s) s,
static const char *const store_rcpt_names[] = {STORE_RCPT_STATES(STORE_RCPT_NAME)};

const char *
store_rcpt_state_name(enum store_rcpt_state s)
{
    return (unsigned)s < sizeof(store_rcpt_names) / sizeof(store_rcpt_names[0])
               ? store_rcpt_names[s]
               : "unknown";
}

void
store_get_stats(const struct store *st, struct store_stats *out)
{
    *out = st->stats;
}

void
store_set_dsn_rules(struct store *st, const struct store_dsn_rules *rules)
{
    uv_mutex_lock(&st->wq.mu);
    st->rules = *rules;
    uv_mutex_unlock(&st->wq.mu);
}

void
store_set_hostname(struct store *st, const char *hostname)
{
    /* The writer copies it with each batch it takes. */
    uv_mutex_lock(&st->wq.mu);
    snprintf(st->hostname, sizeof(st->hostname), "%s",
             hostname != NULL && hostname[0] != '\0' ? hostname : "localhost");
    uv_mutex_unlock(&st->wq.mu);
}
