/*
 * store_deliver: the store's delivery and operator jobs. Due recipients and
 * body reads run on the reader thread; outcomes and operator actions on the
 * writer thread, each in its own savepoint inside the writer's group-commit
 * transaction, together with the DSNs they produce and the deletion of
 * messages that are done.
 * Owns: each job's struct store__djob (arguments and results, the outcome
 * list handed over included) until its callback has run; the DSN messages
 * it inserts (rows like any other message: queued, from <>).
 * Threads: store_* entry points on the loop thread; reader_* on the reader,
 * writer_* on the writer thread, through store__reader_run and
 * store__writer_run; store__complete on the loop thread.
 * Errors: every job gets one callback: 0, MXD_ENOENT (no such message or
 * qid), MXD_EINVAL (bad arguments), MXD_ESTORE (SQLite: the job's changes
 * were rolled back, nothing is lost, try again later) or MXD_ECLOSING.
 * Does not: decide when or where to deliver, compute retry times or log
 * per-recipient outcomes (the scheduler does), send the DSNs (they are
 * queued and delivered like any message).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "base/log.h"
#include "base/metrics.h"
#include "msg/dsn.h"
#include "msg/mime7.h"
#include "store/qid.h"
#include "store/store.h"
#include "store/store_impl.h"

/* A DSN inserted by a job, logged once its transaction committed. */
struct store_dsn_note {
    char qid[24];
    char dsn_qid[QID_LEN + 1];
    size_t nrcpts;
    enum dsn_kind kind;
};

/* Arguments and results of a DUE, BODY, OUTCOMES or OP job (all owned). */
struct store__djob {
    int64_t now, next_due; /* due */
    size_t limit, nskip;
    int64_t *skip;           /* sorted copy */
    struct store_dmsg *list; /* result, handed to the callback */
    int64_t *taken;          /* cluster: claimed from another node's lease */
    size_t ntaken;
    uint64_t offset, total; /* body */
    size_t max, len;
    char *data;
    struct store_outcome *outcomes; /* outcomes */
    size_t n;
    enum store_op op;             /* op */
    char *oparg;                  /* qid, domain (lower case) or NULL */
    struct store_dsn_note *notes; /* outcomes and op: the DSNs created */
    size_t nnotes;
    /* outcomes recorded by store_pgbatch.c's batched statement: per
     * outcome what W_OUTCOME returns (writer_outcome's ids and ri) */
    int64_t *bids;
    struct store_rinfo *bri;
};

/* The recipients of one message that one DSN reports. */
struct store_bounce {
    struct dsn_rcpt *r; /* .address and .orcpt owned */
    char (*status)[16];
    size_t n, cap;
};

/* What a recorded outcome's recipient asked for (RFC 3461). */
struct store_rinfo {
    char *address; /* owned */
    unsigned notify;
    char *orcpt; /* owned, or NULL */
    /* writer_outcome: its message's arrival and whether that was warned
     * of a delay already */
    int64_t received;
    bool warned;
};

static const char *const dsn_kind_names[] = {"failure", "delay", "success"};

/* Frees what the batched statement recorded for d's outcomes. */
static void
bri_free(struct store__djob *d)
{
    for (size_t i = 0; d->bri != NULL && i < d->n; i++) {
        free(d->bri[i].address);
        free(d->bri[i].orcpt);
    }
    free(d->bri);
    free(d->bids);
    d->bri = NULL;
    d->bids = NULL;
}

static const char *const store_op_names[] = {"flush", "hold", "release", "delete", "bounce"};

/* last_reply (and so the DSN's Diagnostic-Code) of an operator's bounce */
static const char store_op_bounce_reply[] = "550 5.0.0 Bounced by the operator";

static void
djob_free(struct store__djob *d)
{
    if (d == NULL)
        return;
    free(d->skip);
    free(d->taken);
    store_dmsg_free_list(d->list);
    free(d->data);
    for (size_t i = 0; i < d->n && d->outcomes != NULL; i++) {
        free(d->outcomes[i].last_reply);
        free(d->outcomes[i].remote_mta);
    }
    free(d->outcomes);
    free(d->oparg);
    free(d->notes);
    bri_free(d);
    free(d);
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* NULL for SQL NULL, else an owned copy. */
static char *
col_dup(struct sdb_stmt *s, int i)
{
    return sdb_col_null(s, i) ? NULL : xstrdup(sdb_col_str(s, i));
}

/* Fills m's envelope from a row of STORE_SQL_ENVELOPE. */
static void
env_from_row(struct sdb_stmt *s, struct store_dmsg *m)
{
    snprintf(m->qid, sizeof(m->qid), "%s", sdb_col_str(s, 0));
    m->received = sdb_col_i64(s, 1);
    m->sender = xstrdup(sdb_col_str(s, 2));
    m->size = (uint64_t)sdb_col_i64(s, 3);
    m->smtputf8 = sdb_col_i64(s, 4) != 0;
    m->body_8bit = sdb_col_i64(s, 5) != 0;
    m->utf8_needed = sdb_col_i64(s, 6) != 0;
    m->hops = (unsigned)sdb_col_i64(s, 7);
    m->ret = (enum dsn_ret)sdb_col_i64(s, 8);
    m->envid = col_dup(s, 9);
    m->return_auth = sdb_col_i64(s, 10) != 0;
    m->warned = sdb_col_i64(s, 11) != 0;
    m->requiretls = sdb_col_i64(s, 12) != 0;
    m->tls_optional = sdb_col_i64(s, 13) != 0;
    m->client_addr = xstrdup(sdb_col_str(s, 14));
    m->helo = xstrdup(sdb_col_str(s, 15));
    m->client_name = col_dup(s, 16);
    m->client_port = col_dup(s, 17);
    m->client_proto = col_dup(s, 18);
}

/* Frees what env_from_row allocated (m itself not). */
static void
env_clear(struct store_dmsg *m)
{
    free(m->sender);
    free(m->envid);
    free(m->client_addr);
    free(m->helo);
    free(m->client_name);
    free(m->client_port);
    free(m->client_proto);
}

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- reader thread ------------------------------------------------------ */

static int
reader_fail(struct store_conn *c, enum store_stmt i)
{
    log_msg(LOG_ERR, NULL, "store", "%s failed reason=\"%s\"", store__sql[i].label,
            sdb_errmsg(c->db));
    sdb_reset(c->stmt[i]);
    return MXD_ESTORE;
}

static int
reader_exec(struct store_conn *c, enum store_stmt i)
{
    if (sdb_step(c->stmt[i]) != SDB_DONE)
        return reader_fail(c, i);
    sdb_reset(c->stmt[i]);
    return 0;
}

/* Appends a due recipient to its message's entry, new at the list's end. */
static void
due_add(struct store__djob *d, struct store_dmsg **last, struct sdb_stmt *s)
{
    int64_t msg_id = sdb_col_i64(s, 1);
    struct store_dmsg *m = *last;
    struct store_drcpt *r;

    if (m == NULL || m->id != msg_id) {
        for (m = d->list; m != NULL && m->id != msg_id; m = m->next)
            continue;
    }
    if (m == NULL) {
        m = xcalloc(1, sizeof(*m));
        m->id = msg_id;
        if (*last != NULL)
            (*last)->next = m;
        else
            d->list = m;
        *last = m;
    }
    /* Grows to 1, 2, 4, 8, ... */
    if ((m->nrcpts & (m->nrcpts - 1)) == 0)
        m->rcpts = xrealloc(m->rcpts, (m->nrcpts ? 2 * m->nrcpts : 1) * sizeof(*m->rcpts));
    r = &m->rcpts[m->nrcpts++];
    r->id = sdb_col_i64(s, 0);
    r->address = xstrdup(sdb_col_str(s, 2));
    r->domain = xstrdup(sdb_col_str(s, 3));
    r->attempts = (unsigned)sdb_col_i64(s, 4);
    r->notify = (unsigned)sdb_col_i64(s, 5); /* NULL reads 0 */
    r->orcpt = col_dup(s, 6);
}

/* The due recipients, at most limit after dropping those in skip.
 * PostgreSQL: claimed with this node's lease (STORE_SQL_DUE_PG); one taken
 * over from another node's expired lease is counted, and remembered until
 * delivered (a possible duplicate). */
static int
reader_due_rcpts(struct store_conn *c, struct store__djob *d)
{
    struct sdb_stmt *s = c->stmt[STORE_R_DUE];
    bool pg = sdb_engine(c->db) == SDB_POSTGRESQL;
    struct store_dmsg *last = NULL;
    size_t kept = 0;
    int rc = SDB_DONE;
    char *skip = NULL;

    sdb_bind_i64(s, 1, d->now);
    if (pg) /* the skipped ones are left out by the query itself */
        sdb_bind_i64(s, 2, d->limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)d->limit);
    else
        sdb_bind_i64(s, 2,
                     d->limit > (size_t)INT64_MAX - d->nskip ? INT64_MAX
                                                             : (int64_t)(d->limit + d->nskip));
    sdb_bind_text(s, 3, c->node);
    sdb_bind_i64(s, 4, c->lease_s);
    if (pg) {
        size_t len = 0;

        skip = xmalloc(d->nskip * 22 + 3);
        skip[len++] = '{';
        for (size_t i = 0; i < d->nskip; i++)
            len +=
                (size_t)snprintf(skip + len, 22, "%s%lld", i > 0 ? "," : "", (long long)d->skip[i]);
        skip[len++] = '}';
        skip[len] = '\0';
        sdb_bind_text(s, 5, skip);
    }
    while ((kept < d->limit || pg) && (rc = sdb_step(s)) == SDB_ROW) {
        int64_t id = sdb_col_i64(s, 0);

        if (pg && sdb_col_i64(s, 7) != 0) { /* ours once committed, kept or not */
            d->taken = xrealloc(d->taken, (d->ntaken + 1) * sizeof(*d->taken));
            d->taken[d->ntaken++] = id;
        }
        if (d->nskip > 0 && bsearch(&id, d->skip, d->nskip, sizeof(id), cmp_i64) != NULL)
            continue;
        if (kept >= d->limit)
            continue; /* claimed, kept by our lease: the next pick takes it */
        due_add(d, &last, s);
        kept++;
    }
    free(skip);
    if (rc != SDB_ROW && rc != SDB_DONE)
        return reader_fail(c, STORE_R_DUE);
    sdb_reset(s);
    return 0;
}

/* PostgreSQL: every envelope in one query (R_ENVELOPES); drops a message
 * that is gone. */
static int
reader_envelopes_pg(struct store_conn *c, struct store__djob *d)
{
    struct sdb_stmt *s = c->stmt[STORE_R_ENVELOPES];
    struct store_dmsg **pm, *m;
    size_t n = 0, len = 0;
    char *ids;
    int rc;

    for (m = d->list; m != NULL; m = m->next)
        n++;
    if (n == 0)
        return 0;
    ids = xmalloc(n * 22 + 3);
    ids[len++] = '{';
    for (m = d->list; m != NULL; m = m->next) {
        len += (size_t)snprintf(ids + len, 22, "%lld", (long long)m->id);
        ids[len++] = m->next != NULL ? ',' : '}';
        m->qid[0] = '\0'; /* no envelope yet */
    }
    ids[len] = '\0';
    sdb_bind_text(s, 1, ids);
    while ((rc = sdb_step(s)) == SDB_ROW) {
        int64_t id = sdb_col_i64(s, 19);

        for (m = d->list; m != NULL && m->id != id; m = m->next)
            continue;
        if (m != NULL && m->qid[0] == '\0')
            env_from_row(s, m);
    }
    free(ids);
    if (rc != SDB_DONE)
        return reader_fail(c, STORE_R_ENVELOPES);
    sdb_reset(s);
    for (pm = &d->list; *pm != NULL;) {
        m = *pm;
        if (m->qid[0] != '\0') {
            pm = &m->next;
            continue;
        }
        *pm = m->next;
        m->next = NULL;
        store_dmsg_free_list(m);
    }
    return 0;
}

/* Joins each message's envelope; drops a message that is gone. */
static int
reader_envelopes(struct store_conn *c, struct store__djob *d)
{
    struct sdb_stmt *s = c->stmt[STORE_R_ENVELOPE];
    struct store_dmsg **pm = &d->list;

    if (sdb_engine(c->db) == SDB_POSTGRESQL)
        return reader_envelopes_pg(c, d);

    while (*pm != NULL) {
        struct store_dmsg *m = *pm;
        int rc;

        sdb_bind_i64(s, 1, m->id);
        if ((rc = sdb_step(s)) == SDB_DONE) {
            *pm = m->next;
            m->next = NULL;
            store_dmsg_free_list(m);
            sdb_reset(s);
            continue;
        }
        if (rc != SDB_ROW)
            return reader_fail(c, STORE_R_ENVELOPE);
        env_from_row(s, m);
        sdb_reset(s);
        pm = &m->next;
    }
    return 0;
}

/* PostgreSQL: another node may queue mail this one hears nothing of, or
 * die holding leases: look again at least this often. */
#define STORE_CLUSTER_POLL_S 5

static int
reader_next_due(struct store_conn *c, struct store__djob *d)
{
    struct sdb_stmt *s = c->stmt[STORE_R_NEXT_DUE];

    sdb_bind_i64(s, 1, d->now);
    if (sdb_step(s) != SDB_ROW)
        return reader_fail(c, STORE_R_NEXT_DUE);
    d->next_due = sdb_col_null(s, 0) ? 0 : sdb_col_i64(s, 0);
    sdb_reset(s);
    if (sdb_engine(c->db) == SDB_POSTGRESQL &&
        (d->next_due == 0 || d->next_due > d->now + STORE_CLUSTER_POLL_S))
        d->next_due = d->now + STORE_CLUSTER_POLL_S;
    return 0;
}

/* All three queries see one snapshot. */
static int
reader_due(struct store_conn *c, struct store__djob *d)
{
    int rc;

    if (reader_exec(c, STORE_R_BEGIN) != 0)
        return MXD_ESTORE;
    rc = reader_due_rcpts(c, d);
    if (rc == 0)
        rc = reader_envelopes(c, d);
    if (rc == 0)
        rc = reader_next_due(c, d);
    if (reader_exec(c, STORE_R_COMMIT) != 0 && rc == 0)
        rc = MXD_ESTORE;
    if (sdb_in_txn(c->db) && sdb_exec(c->db, "ROLLBACK") != 0)
        rc = MXD_ESTORE; /* reported by the failure before it */
    if (rc != 0) {
        store_dmsg_free_list(d->list);
        d->list = NULL;
        d->next_due = 0;
    }
    for (size_t i = 0; rc == 0 && i < d->ntaken; i++) {
        metrics_add(METRICS_CLUSTER_TAKEOVERS, 1);
        store__takeover_add(c->tk, d->taken[i]);
    }
    return rc;
}

static int
reader_body(struct store_conn *c, struct store_job *j)
{
    struct store__djob *d = j->d;
    size_t first = d->max < STORE_CHUNK ? d->max : STORE_CHUNK, more = 0;
    uint64_t total = 0;
    int rc;

    /* a chunk first; the size it tells says how much more max lets in */
    d->data = xmalloc(first > 0 ? first : 1);
    rc = sdb_body_read(c->db, j->msg_id, d->offset, d->data, first, &d->len, &d->total);
    if (rc == 0 && d->len == first && d->offset + first < d->total && d->max > first) {
        uint64_t left = d->total - d->offset - first;
        size_t want = left < (uint64_t)(d->max - first) ? (size_t)left : d->max - first;

        d->data = xrealloc(d->data, first + want);
        rc = sdb_body_read(c->db, j->msg_id, d->offset + first, d->data + first, want, &more,
                           &total);
        d->len += more;
    }
    if (rc == MXD_ESTORE)
        log_msg(LOG_ERR, NULL, "store", "body read failed id=%lld reason=\"%s\"",
                (long long)j->msg_id, sdb_errmsg(c->db));
    return rc;
}

int
store__reader_run(struct store_conn *c, struct store_job *j)
{
    return j->kind == STORE_JOB_DUE ? reader_due(c, j->d) : reader_body(c, j);
}

/* ---- writer thread: DSNs ------------------------------------------------ */

/* Steps writer statement i: 1 a row (the caller resets), 0 done, MXD_ESTORE. */
static int
writer_step(struct store_writer *w, enum store_stmt i)
{
    int rc = sdb_step(w->c.stmt[i]);

    if (rc == SDB_ROW)
        return 1;
    if (rc != SDB_DONE)
        store__writer_reason(w, "%s: %s", store__sql[i].label, sdb_errmsg(w->c.db));
    sdb_reset(w->c.stmt[i]);
    return rc == SDB_DONE ? 0 : MXD_ESTORE;
}

/* A DSN's Status for a reply "550 5.1.1 text": its RFC 3463 enhanced code
 * (class.subject.detail), else 5.0.0 for a 5xx and 4.4.7 (delivery time
 * expired) for anything else. */
static void
reply_status(const char *reply, char out[16])
{
    const char *p = reply != NULL && strlen(reply) > 4 ? reply + 4 : "";
    size_t i = 1;

    for (int part = 0; part < 2 && strchr("245", p[0]) != NULL && p[0] != '\0'; part++) {
        size_t k = 0;

        if (p[i++] != '.')
            break;
        for (; k < 3 && p[i] >= '0' && p[i] <= '9'; k++)
            i++;
        if (k == 0)
            break;
        if (part == 1 && (p[i] == '\0' || p[i] == ' ') && (reply[3] == ' ' || reply[3] == '-')) {
            memcpy(out, p, i);
            out[i] = '\0';
            return;
        }
    }
    snprintf(out, 16, "%s", reply == NULL || reply[0] == '5' ? "5.0.0" : "4.4.7");
}

/* Takes ownership of ri's strings; reply and remote must outlive b.
 * action: "failed" (its status from the reply), "delayed" (class 4),
 * "delivered" or "relayed" (2.0.0). */
static void
bounce_add(struct store_bounce *b, struct store_rinfo *ri, const char *reply, const char *remote,
           const char *action)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 4;
        b->r = xrealloc(b->r, b->cap * sizeof(*b->r));
        b->status = xrealloc(b->status, b->cap * sizeof(*b->status));
    }
    reply_status(reply, b->status[b->n]);
    if (strcmp(action, "delayed") == 0) /* never 2.x or 5.x */
        b->status[b->n][0] = '4';
    else if (strcmp(action, "failed") != 0) /* delivered, relayed */
        snprintf(b->status[b->n], sizeof(b->status[b->n]), "2.0.0");
    b->r[b->n] = (struct dsn_rcpt){
        .address = ri->address,
        .diagnostic = reply != NULL ? reply : "no reply recorded",
        .remote_mta = remote,
        .action = action,
        .orcpt = ri->orcpt,
    };
    ri->address = ri->orcpt = NULL;
    b->n++;
}

static void
bounce_clear(struct store_bounce *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free((char *)b->r[i].address);
        free((char *)b->r[i].orcpt);
    }
    b->n = 0;
}

static void
bounce_free(struct store_bounce *b)
{
    bounce_clear(b);
    free(b->r);
    free(b->status);
}

/* The original headers: the body up to and including its first empty
 * line, at most STORE_CHUNK octets, into w->buf; with *full, the whole
 * message when it fits in STORE_CHUNK (else *full becomes false). */
static int
writer_headers(struct store_writer *w, int64_t msg_id, size_t *len, bool *full)
{
    const unsigned char *p = w->buf;
    uint64_t total = 0;
    size_t n = 0;
    int rc;

    if ((rc = sdb_body_read(w->c.db, msg_id, 0, w->buf, STORE_CHUNK, &n, &total)) != 0) {
        store__writer_reason(w, "headers read: %s",
                             rc == MXD_ENOENT ? "no such message" : sdb_errmsg(w->c.db));
        return MXD_ESTORE;
    }
    *full = *full && total <= STORE_CHUNK;
    *len = n;
    if (*full)
        n = 0; /* the whole message: no search for the header's end */
    if (n >= 2 && p[0] == '\r' && p[1] == '\n')
        *len = 2;
    for (size_t i = 0; *len == n && i + 4 <= n; i++) {
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
            *len = i + 4;
    }
    return 0;
}

/* The DSN's body, right after its row. */
static int
writer_dsn_body(struct store_writer *w, int64_t id, const char *text, size_t len)
{
    struct sdb_body *b = NULL;
    int rc;

    if (sdb_body_begin(w->c.db, id, len, &b) != 0) {
        store__writer_reason(w, "dsn body open: %s", sdb_errmsg(w->c.db));
        return MXD_ESTORE;
    }
    rc = len > 0 ? sdb_body_write(b, text, len) : 0;
    if (sdb_body_end(b, rc == 0) != 0 || rc != 0) {
        store__writer_reason(w, "dsn body write: %s", sdb_errmsg(w->c.db));
        return MXD_ESTORE;
    }
    return 0;
}

/* Inserts the DSN text as a new queued message from <> to sender. */
static int
writer_insert_dsn(struct store_writer *w, const char *qid, const struct store_dmsg *env,
                  const char *text, size_t len, int64_t now)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_INSERT_MSG];
    const char *at = strrchr(env->sender, '@');
    char *domain = xstrdup(at != NULL ? at + 1 : "");
    bool eight = false;
    int64_t id;
    int rc;

    for (size_t i = 0; i < len && !eight; i++)
        eight = (unsigned char)text[i] >= 0x80;
    for (char *p = domain; *p != '\0'; p++)
        *p = ascii_lower(*p);
    sdb_bind_text(s, 1, qid);
    sdb_bind_i64(s, 2, now);
    sdb_bind_text(s, 3, "127.0.0.1");
    sdb_bind_text(s, 4, w->hostname);
    sdb_bind_text(s, 5, "");
    sdb_bind_i64(s, 6, env->smtputf8);
    sdb_bind_i64(s, 7, eight);
    sdb_bind_i64(s, 8, (int64_t)len);
    sdb_bind_zeroblob(s, 9, len);
    /* every parameter: bindings stay from the last message committed, and
     * its body file name was freed with it (ASan, test_crash_bigbody) */
    sdb_bind_null(s, 10);
    rc = store__writer_insert_id(w, STORE_W_INSERT_MSG, &id);
    if (rc == 0)
        rc = writer_dsn_body(w, id, text, len);
    /* RFC 6531 3.4: the DSN needs SMTPUTF8 for a UTF-8 sender or header,
     * not for the UTF-8 in its body parts (RFC 6533 message/global-*); a
     * DSN starts afresh: no Received: yet */
    if (rc == 0) {
        struct mime7_hscan h = {0};
        bool need = false;

        if (env->smtputf8) {
            mime7_hscan_feed(&h, text, len);
            need = h.eight || mime7_has_8bit(env->sender, strlen(env->sender));
        }
        rc = store__writer_facts(w, id, need, 0);
    }
    /* RFC 8689 5: a DSN about a REQUIRETLS message goes with REQUIRETLS */
    if (rc == 0)
        rc = store__writer_tls(w, id, env->requiretls, false);
    if (rc == 0) {
        s = w->c.stmt[STORE_W_INSERT_RCPT];
        sdb_bind_i64(s, 1, id);
        sdb_bind_text(s, 2, env->sender);
        sdb_bind_text(s, 3, domain);
        sdb_bind_i64(s, 4, now);
        rc = store__writer_exec(w, STORE_W_INSERT_RCPT);
    }
    free(domain);
    return rc;
}

static void
note_add(struct store__djob *d, const char *qid, const char *dsn_qid, size_t nrcpts,
         enum dsn_kind kind)
{
    struct store_dsn_note *n;

    d->notes = xrealloc(d->notes, (d->nnotes + 1) * sizeof(*d->notes));
    n = &d->notes[d->nnotes++];
    snprintf(n->qid, sizeof(n->qid), "%s", qid);
    snprintf(n->dsn_qid, sizeof(n->dsn_qid), "%s", dsn_qid);
    n->nrcpts = nrcpts;
    n->kind = kind;
}

/* One DSN of kind for the recipients b of message msg_id. */
static int
writer_dsn(struct store_writer *w, struct store__djob *d, int64_t msg_id,
           const struct store_dmsg *env, struct store_bounce *b, int64_t ms, enum dsn_kind kind)
{
    struct dsn_input in;
    char qid[QID_LEN + 1];
    char *text = NULL;
    size_t hlen = 0, len = 0;
    /* RFC 3461 4.3: the whole message only in a failure DSN, when asked */
    bool full = kind == DSN_KIND_FAILURE && env->ret == DSN_RET_FULL;
    int rc;

    if ((rc = writer_headers(w, msg_id, &hlen, &full)) != 0)
        return rc;
    for (size_t i = 0; i < b->n; i++)
        b->r[i].status = b->status[i];
    qid_next(&w->qids, (uint64_t)ms, qid);
    in = (struct dsn_input){
        .reporting_mta = w->hostname,
        .qid = env->qid,
        .new_qid = qid,
        .sender = env->sender,
        .arrival = (time_t)env->received,
        .now = (time_t)(ms / 1000),
        .rcpts = b->r,
        .nrcpts = b->n,
        .headers = (const char *)w->buf,
        .headers_len = hlen,
        .smtputf8 = env->smtputf8,
        .kind = kind,
        .envid = env->envid,
        .full = full,
    };
    rc = dsn_compose(&in, &text, &len);
    for (size_t i = 0; rc != 0 && i < b->n; i++)
        b->r[i].remote_mta = NULL; /* free text from mxd.conf: the likeliest culprit */
    if (rc != 0 && dsn_compose(&in, &text, &len) != 0) {
        /* Retrying cannot help: the recipients still settle, without DSN. */
        log_msg(LOG_ERR, env->qid, "store", "dsn failed reason=\"cannot compose\" rcpts=%zu", b->n);
        return 0;
    }
    if ((rc = writer_insert_dsn(w, qid, env, text, len, ms / 1000)) == 0)
        note_add(d, env->qid, qid, b->n, kind);
    free(text);
    return rc;
}

/* Whether the sender may get a DSN for this message at all: a null
 * sender never (RFC 3461 6.2); bounce_policy = never: none; authenticated:
 * only with a return path authenticated at accept (schema 007). */
static bool
dsn_allowed(const struct store_writer *w, const struct store_dmsg *env, enum dsn_kind kind,
            size_t n)
{
    const char *why = NULL;

    if (dsn_suppressed(env->sender))
        return false;
    if (w->rules.policy == STORE_BOUNCE_NEVER)
        why = "bounce_policy = never";
    else if (w->rules.policy == STORE_BOUNCE_AUTHENTICATED && !env->return_auth)
        why = "return path not authenticated (no SPF pass, no aligned DKIM pass)";
    if (why == NULL)
        return true;
    log_msg(LOG_INFO, env->qid, "store", "dsn suppressed kind=%s rcpts=%zu reason=\"%s\"",
            dsn_kind_names[kind], n, why);
    metrics_add(METRICS_BOUNCES_SUPPRESSED, 1);
    return false;
}

/* After recipients of msg_id changed: the DSNs for those in b[kind] (if
 * its sender may get them; the delay warning once, when the message is
 * old enough), and the message deleted when no recipient is pending.
 * PostgreSQL: the envelope read locks the message row (FOR UPDATE), so two
 * nodes settling recipients of one message take turns, and the second
 * sees the first's outcome when it asks what is pending (without the lock
 * each saw the other's recipient still queued and the message stayed). */
static int
writer_settle(struct store_writer *w, struct store__djob *d, int64_t msg_id,
              struct store_bounce b[3], int64_t ms)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_ENVELOPE];
    struct store_dmsg env = {.next = NULL};
    int rc, pending;

    sdb_bind_i64(s, 1, msg_id);
    if ((rc = writer_step(w, STORE_W_ENVELOPE)) != 1)
        return rc; /* 0: gone already */
    env_from_row(s, &env);
    sdb_reset(s);
    rc = 0;
    if (b[DSN_KIND_DELAY].n > 0 && (w->rules.delay_warning_s <= 0 || env.warned ||
                                    ms / 1000 - env.received < w->rules.delay_warning_s))
        bounce_clear(&b[DSN_KIND_DELAY]); /* not (or no longer) due */
    if (b[DSN_KIND_DELAY].n > 0) {        /* one warning per message, even a suppressed one */
        sdb_bind_i64(w->c.stmt[STORE_W_WARNED], 1, msg_id);
        rc = store__writer_exec(w, STORE_W_WARNED);
    }
    for (int k = 0; k < 3 && rc == 0; k++)
        if (b[k].n > 0 && dsn_allowed(w, &env, (enum dsn_kind)k, b[k].n))
            rc = writer_dsn(w, d, msg_id, &env, &b[k], ms, (enum dsn_kind)k);
    if (rc != 0)
        goto done;
    s = w->c.stmt[STORE_W_PENDING];
    sdb_bind_i64(s, 1, msg_id);
    if ((rc = writer_step(w, STORE_W_PENDING)) != 1)
        goto done;
    pending = sdb_col_i64(s, 0) != 0;
    sdb_reset(s);
    rc = 0;
    if (!pending) {
        rc = store__writer_delete_msg(w, msg_id);
    }
done:
    env_clear(&env);
    return rc;
}

/* A recipient's NOTIFY and ORCPT (schema 007) into ri. */
static int
writer_rinfo(struct store_writer *w, int64_t rcpt_id, struct store_rinfo *ri)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_RCPT_DSN];
    int rc;

    sdb_bind_i64(s, 1, rcpt_id);
    if ((rc = writer_step(w, STORE_W_RCPT_DSN)) != 1)
        return rc; /* 0: no row, the defaults */
    ri->notify = (unsigned)sdb_col_i64(s, 0);
    ri->orcpt = col_dup(s, 1);
    sdb_reset(s);
    return 0;
}

/* RFC 3461 4.1: no NOTIFY means FAILURE and DELAY (our default). */
static bool
notify_wants(unsigned notify, unsigned bit)
{
    if (notify == 0)
        return bit != DSN_NOTIFY_SUCCESS;
    return (notify & bit) != 0;
}

/* ---- writer thread: outcomes and operator actions ----------------------- */

/* What W_OUTCOME (and W_PGB_OUTCOMES) returns, columns 0 to 5. */
static void
outcome_from_row(struct sdb_stmt *s, int64_t *msg_id, struct store_rinfo *ri)
{
    *msg_id = sdb_col_i64(s, 0);
    ri->address = xstrdup(sdb_col_str(s, 1));
    ri->notify = (unsigned)sdb_col_i64(s, 2);
    ri->orcpt = col_dup(s, 3);
    ri->received = sdb_col_i64(s, 4);
    ri->warned = sdb_col_i64(s, 5) != 0;
}

/* Records one outcome; *msg_id is 0 when the recipient is gone or final
 * already; ri gets the recipient (owned), what it asked of DSNs and its
 * message's arrival and delay warning (one statement: W_OUTCOME returns
 * them all). */
static int
writer_outcome(struct store_writer *w, const struct store_outcome *o, int64_t *msg_id,
               struct store_rinfo *ri)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_OUTCOME];
    int rc;

    sdb_bind_i64(s, 1, o->rcpt_id);
    sdb_bind_text(s, 2, store_rcpt_state_name(o->state));
    if (o->state == STORE_RCPT_DEFERRED || o->state == STORE_RCPT_HELD)
        sdb_bind_i64(s, 3, o->next_attempt);
    else
        sdb_bind_null(s, 3);
    sdb_bind_text(s, 4, o->last_reply); /* NULL binds NULL */
    if ((rc = writer_step(w, STORE_W_OUTCOME)) != 1) {
        /* final already (another node's outcome, or ours whose COMMIT
         * reply was lost): nothing to record, but the message is settled
         * all the same, so that it cannot stay behind with no recipient
         * pending */
        if (rc == 0)
            *msg_id = o->msg_id;
        return rc;
    }
    outcome_from_row(s, msg_id, ri);
    sdb_reset(s); /* RETURNING: the row was updated by the first step */
    return 0;
}

/* Which DSN an outcome goes into, if any (-1: none). */
static int
outcome_kind(const struct store_outcome *o, const struct store_rinfo *ri, const char **action)
{
    switch (o->state) {
    case STORE_RCPT_BOUNCED:
        *action = "failed";
        return notify_wants(ri->notify, DSN_NOTIFY_FAILURE) ? DSN_KIND_FAILURE : -1;
    case STORE_RCPT_DELIVERED:
        *action = o->success == STORE_SUCCESS_RELAYED ? "relayed" : "delivered";
        return o->success != STORE_SUCCESS_NONE && notify_wants(ri->notify, DSN_NOTIFY_SUCCESS)
                   ? DSN_KIND_SUCCESS
                   : -1;
    case STORE_RCPT_DEFERRED:
    case STORE_RCPT_HELD:
        *action = "delayed";
        return notify_wants(ri->notify, DSN_NOTIFY_DELAY) ? DSN_KIND_DELAY : -1;
    default:
        return -1;
    }
}

/* Whether settling message ids[i] can change anything: not when every
 * outcome of this job for it was recorded as a deferral (or hold), which
 * leaves a recipient pending (no delete), and no delay warning is due
 * (writer_settle's test, on what W_OUTCOME returned; warned only ever goes
 * from 0 to 1). A final outcome, or one that found its recipient final
 * already, settles: the lock and the pending check are for those. */
static bool
settle_needed(const struct store_writer *w, const struct store__djob *d, const int64_t *ids,
              const struct store_rinfo *ri, size_t i, int64_t ms)
{
    for (size_t k = i; k < d->n; k++) {
        const struct store_outcome *o = &d->outcomes[k];

        if (ids[k] != ids[i])
            continue;
        if (ri[k].address == NULL ||
            (o->state != STORE_RCPT_DEFERRED && o->state != STORE_RCPT_HELD))
            return true;
        if (notify_wants(ri[k].notify, DSN_NOTIFY_DELAY) && w->rules.delay_warning_s > 0 &&
            !ri[k].warned && ms / 1000 - ri[k].received >= w->rules.delay_warning_s)
            return true;
    }
    return false;
}

/* Settles each message touched, once, with its DSNs from this job. */
static int
writer_settle_all(struct store_writer *w, struct store__djob *d, int64_t *ids,
                  struct store_rinfo *ri, int64_t ms)
{
    struct store_bounce b[3];
    int rc = 0;

    memset(b, 0, sizeof(b));
    for (size_t i = 0; i < d->n && rc == 0; i++) {
        size_t k = 0;

        while (k < i && ids[k] != ids[i])
            k++;
        if (ids[i] == 0 || k < i)
            continue; /* nothing recorded, or settled already */
        if (!settle_needed(w, d, ids, ri, i, ms))
            continue; /* deferrals only, no warning due: nothing to do */
        for (k = i; k < d->n; k++) {
            const struct store_outcome *o = &d->outcomes[k];
            const char *action = NULL;
            int kind;

            if (ids[k] != ids[i] || ri[k].address == NULL)
                continue;
            if ((kind = outcome_kind(o, &ri[k], &action)) >= 0)
                bounce_add(&b[kind], &ri[k], o->last_reply, o->remote_mta, action);
        }
        rc = writer_settle(w, d, ids[i], b, ms);
        for (k = 0; k < 3; k++)
            bounce_clear(&b[k]);
    }
    for (size_t k = 0; k < 3; k++)
        bounce_free(&b[k]);
    return rc;
}

static int
writer_outcomes(struct store_writer *w, struct store__djob *d)
{
    int64_t *ids = NULL;
    struct store_rinfo *ri = NULL;
    int rc = 0;

    for (size_t i = 0; i < d->n; i++) {
        enum store_rcpt_state st = d->outcomes[i].state;

        if (st != STORE_RCPT_DELIVERED && st != STORE_RCPT_DEFERRED && st != STORE_RCPT_BOUNCED &&
            st != STORE_RCPT_HELD) {
            store__writer_reason(w, "outcome %zu: bad state %d", i, (int)st);
            return MXD_EINVAL;
        }
    }
    if (d->n == 0)
        return 0;
    ids = xcalloc(d->n, sizeof(*ids));
    ri = xcalloc(d->n, sizeof(*ri));
    for (size_t i = 0; i < d->n && rc == 0; i++)
        rc = writer_outcome(w, &d->outcomes[i], &ids[i], &ri[i]);
    if (rc == 0)
        rc = writer_settle_all(w, d, ids, ri, now_ms());
    for (size_t i = 0; i < d->n; i++) {
        free(ri[i].address);
        free(ri[i].orcpt);
    }
    free(ri);
    free(ids);
    return rc;
}

/* ---- PostgreSQL: many jobs' deferrals in one statement ------------------ */

bool
store__outcomes_batchable(const struct store_job *j)
{
    const struct store__djob *d = j->d;

    if (j->kind != STORE_JOB_OUTCOMES || j->status != 0 || d->n == 0)
        return false;
    for (size_t i = 0; i < d->n; i++)
        if (d->outcomes[i].state != STORE_RCPT_DEFERRED && d->outcomes[i].state != STORE_RCPT_HELD)
            return false;
    return true;
}

size_t
store__outcomes_count(const struct store_job *j)
{
    return j->d->n;
}

const struct store_outcome *
store__outcome_at(const struct store_job *j, size_t k)
{
    return &j->d->outcomes[k];
}

void
store__outcomes_begin(struct store_job *j)
{
    struct store__djob *d = j->d;

    bri_free(d);
    d->bids = xcalloc(d->n, sizeof(*d->bids));
    d->bri = xcalloc(d->n, sizeof(*d->bri));
    /* no row returned: final already, settled all the same (writer_outcome) */
    for (size_t k = 0; k < d->n; k++)
        d->bids[k] = d->outcomes[k].msg_id;
}

void
store__outcome_row(struct store_job *j, size_t k, struct sdb_stmt *s)
{
    struct store__djob *d = j->d;

    free(d->bri[k].address);
    free(d->bri[k].orcpt);
    outcome_from_row(s, &d->bids[k], &d->bri[k]);
}

int
store__outcomes_settle(struct store_writer *w, struct store_job *j)
{
    struct store__djob *d = j->d;
    int rc = writer_settle_all(w, d, d->bids, d->bri, now_ms());

    bri_free(d);
    return rc;
}

void
store__outcomes_unbatch(struct store_job *j)
{
    struct store__djob *d = j->d;

    bri_free(d);
    free(d->notes);
    d->notes = NULL;
    d->nnotes = 0;
}

/* Every pending recipient of msg_id bounced, a DSN, the message deleted. */
static int
writer_bounce(struct store_writer *w, struct store__djob *d, int64_t msg_id, int64_t ms)
{
    struct sdb_stmt *s = w->c.stmt[STORE_W_BOUNCE];
    struct store_bounce b[3];
    struct store_rinfo *ri = NULL;
    int64_t *rid = NULL;
    size_t n = 0;
    int rc;

    memset(b, 0, sizeof(b));
    sdb_bind_i64(s, 1, msg_id);
    sdb_bind_text(s, 2, store_op_bounce_reply);
    while ((rc = writer_step(w, STORE_W_BOUNCE)) == 1) {
        ri = xrealloc(ri, (n + 1) * sizeof(*ri));
        rid = xrealloc(rid, (n + 1) * sizeof(*rid));
        ri[n] = (struct store_rinfo){.address = xstrdup(sdb_col_str(s, 1))};
        rid[n++] = sdb_col_i64(s, 0);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = writer_rinfo(w, rid[i], &ri[i]);
        if (rc == 0 && notify_wants(ri[i].notify, DSN_NOTIFY_FAILURE))
            bounce_add(&b[DSN_KIND_FAILURE], &ri[i], store_op_bounce_reply, NULL, "failed");
    }
    if (rc == 0)
        rc = writer_settle(w, d, msg_id, b, ms);
    for (size_t i = 0; i < n; i++) {
        free(ri[i].address);
        free(ri[i].orcpt);
    }
    free(ri);
    free(rid);
    for (size_t k = 0; k < 3; k++)
        bounce_free(&b[k]);
    return rc;
}

static int
writer_op(struct store_writer *w, struct store__djob *d)
{
    static const enum store_stmt stmts[] = {
        [STORE_OP_HOLD] = STORE_W_HOLD,
        [STORE_OP_RELEASE] = STORE_W_UNHOLD,
        [STORE_OP_DELETE] = STORE_W_DELETE_MSG,
    };
    int64_t ms = now_ms(), id;
    struct sdb_stmt *s;
    int rc;

    if (d->op == STORE_OP_FLUSH) {
        s = w->c.stmt[STORE_W_FLUSH];
        sdb_bind_i64(s, 1, ms / 1000);
        sdb_bind_text(s, 2, d->oparg); /* NULL binds NULL */
        return store__writer_exec(w, STORE_W_FLUSH);
    }
    if ((unsigned)d->op > STORE_OP_BOUNCE || d->oparg == NULL) {
        store__writer_reason(w, "%s", d->oparg == NULL ? "no queue id" : "unknown action");
        return MXD_EINVAL;
    }
    s = w->c.stmt[STORE_W_MSG_BY_QID];
    sdb_bind_text(s, 1, d->oparg);
    if ((rc = writer_step(w, STORE_W_MSG_BY_QID)) != 1)
        return rc == 0 ? MXD_ENOENT : rc;
    id = sdb_col_i64(s, 0);
    sdb_reset(s);
    if (d->op == STORE_OP_BOUNCE)
        return writer_bounce(w, d, id, ms);
    if (d->op == STORE_OP_DELETE)
        return store__writer_delete_msg(w, id);
    s = w->c.stmt[stmts[d->op]];
    sdb_bind_i64(s, 1, id);
    if (d->op == STORE_OP_RELEASE)
        sdb_bind_i64(s, 2, ms / 1000);
    return store__writer_exec(w, stmts[d->op]);
}

int
store__writer_run(struct store_writer *w, struct store_job *j)
{
    return j->kind == STORE_JOB_OUTCOMES ? writer_outcomes(w, j->d) : writer_op(w, j->d);
}

void
store__writer_failed(const struct store_job *j, const char *reason)
{
    const struct store__djob *d = j->d;
    bool op = j->kind == STORE_JOB_OP, known = op && (unsigned)d->op <= STORE_OP_BOUNCE;
    char esc[320];

    if (j->status != MXD_ENOENT) /* an answer, not a failure */
        log_msg(LOG_ERR, known && d->op != STORE_OP_FLUSH ? d->oparg : NULL, "store",
                "%s failed reason=%s",
                known ? store_op_names[d->op]
                : op  ? "operator action"
                      : "outcomes",
                log_esc(esc, sizeof(esc), reason, strlen(reason)));
}

void
store__writer_done(struct store_writer *w, struct store_job *j)
{
    const struct store__djob *d = j->d;

    /* cluster: a recipient taken over from a dead node's lease and now
     * delivered may have been delivered by that node too */
    for (size_t i = 0; j->status == 0 && j->kind == STORE_JOB_OUTCOMES && i < d->n; i++) {
        const struct store_outcome *o = &d->outcomes[i];

        if (sdb_engine(w->c.db) != SDB_POSTGRESQL ||
            (o->state != STORE_RCPT_DELIVERED && o->state != STORE_RCPT_BOUNCED))
            continue;
        if (store__takeover_take(w->c.tk, o->rcpt_id) && o->state == STORE_RCPT_DELIVERED)
            metrics_add(METRICS_CLUSTER_DUPLICATES, 1);
    }

    for (size_t i = 0; j->status == 0 && i < d->nnotes; i++)
        log_msg(LOG_INFO, d->notes[i].qid, "store", "dsn created dsn=%s kind=%s rcpts=%zu",
                d->notes[i].dsn_qid, dsn_kind_names[d->notes[i].kind], d->notes[i].nrcpts);
}

/* ---- loop thread -------------------------------------------------------- */

void
store__complete(struct store_job *j)
{
    struct store__djob *d = j->d;
    bool ok = j->status == 0;

    if (j->kind == STORE_JOB_DUE && j->cb.due != NULL) {
        j->cb.due(j->arg, j->status, ok ? d->list : NULL, ok ? d->next_due : 0);
        if (ok)
            d->list = NULL;
    } else if (j->kind == STORE_JOB_BODY && j->cb.body != NULL) {
        j->cb.body(j->arg, j->status, ok ? d->data : "", ok ? d->len : 0, ok ? d->total : 0);
    } else if ((j->kind == STORE_JOB_OUTCOMES || j->kind == STORE_JOB_OP) && j->cb.done != NULL) {
        j->cb.done(j->arg, j->status);
    }
    djob_free(d);
    j->d = NULL;
}

static struct store_job *
djob_new(enum store_job_kind kind, void *arg)
{
    struct store_job *j = xcalloc(1, sizeof(*j));

    j->kind = kind;
    j->arg = arg;
    j->d = xcalloc(1, sizeof(*j->d));
    return j;
}

void
store_due_async(struct store *st, int64_t now, size_t limit, const int64_t *skip, size_t nskip,
                store_due_cb cb, void *arg)
{
    struct store_job *j = djob_new(STORE_JOB_DUE, arg);

    j->cb.due = cb;
    j->d->now = now;
    j->d->limit = limit;
    if (skip != NULL && nskip > 0) {
        j->d->skip = xcalloc(nskip, sizeof(*skip));
        memcpy(j->d->skip, skip, nskip * sizeof(*skip));
        qsort(j->d->skip, nskip, sizeof(*skip), cmp_i64);
        j->d->nskip = nskip;
    }
    store__submit(st, j, false);
}

void
store_body_read_async(struct store *st, int64_t msg_id, uint64_t offset, size_t max,
                      store_body_cb cb, void *arg)
{
    struct store_job *j = djob_new(STORE_JOB_BODY, arg);

    j->cb.body = cb;
    j->msg_id = msg_id;
    j->d->offset = offset;
    j->d->max = max;
    store__submit(st, j, false);
}

void
store_outcomes_async(struct store *st, struct store_outcome *list, size_t n, store_done_cb cb,
                     void *arg)
{
    struct store_job *j = djob_new(STORE_JOB_OUTCOMES, arg);

    j->cb.done = cb;
    j->d->outcomes = list;
    j->d->n = list != NULL ? n : 0;
    store__submit(st, j, true);
}

void
store_op_async(struct store *st, enum store_op op, const char *arg, store_done_cb cb, void *cbarg)
{
    struct store_job *j = djob_new(STORE_JOB_OP, cbarg);

    j->cb.done = cb;
    j->d->op = op;
    if (arg != NULL && arg[0] != '\0')
        j->d->oparg = xstrdup(arg);
    /* message_rcpts.domain is lower case */
    for (char *p = j->d->oparg; op == STORE_OP_FLUSH && p != NULL && *p != '\0'; p++)
        *p = ascii_lower(*p);
    store__submit(st, j, true);
}
