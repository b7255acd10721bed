/*
 * store_pgbatch: the group commit's messages on PostgreSQL in a few round
 * trips instead of about nine per message (issue 21). Before the jobs of a
 * batch run one by one (store.c, writer_batch), the COMMIT jobs whose whole
 * body fits one message_body chunk get their ids in one statement
 * (nextval of both tables' sequences, so messages.id and message_rcpts.id
 * mean what they mean on the per-message path) and all their rows in one
 * more: a multi-row INSERT per table, each from unnest() of array
 * parameters built here (text literals: elements quoted, " and \ escaped,
 * bytea as hex), the inserts chained as data-modifying CTEs (foreign keys
 * are checked at the end of the statement). Those jobs are marked batched
 * and skipped by the per-message loop; the others (bigger bodies, outcomes,
 * screening ...) run as before, in their savepoints.
 *
 * Then the OUTCOMES jobs that only defer or hold (a held backup domain's
 * mail: one a message), up to the first job that changes recipients
 * otherwise, in one more statement (W_PGB_OUTCOMES: UPDATE from unnest),
 * each job then settled as store_deliver.c's writer_outcomes does.
 *
 * If a batched statement fails, the transaction is rolled back, begun
 * again, and the whole batch goes the per-message way: a bad message still
 * fails alone. SQLite: nothing here runs (store__pg_batch returns at once).
 *
 * Writer thread only. Bounded: a statement carries at most PGB_MAX_MSGS
 * messages and PGB_MAX_OCTETS body octets (hex doubles it); more make more
 * statements in the same transaction.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "store/sdb.h"
#include "store/store_impl.h"

/* sdb_pg.c's message_body chunk (schema/pg/011_baseline.sql): a body up to
 * this size is one row, seq 0; an empty one has no row. */
#define PGB_CHUNK (256 * 1024)

#define PGB_MAX_MSGS     2000
#define PGB_MAX_OCTETS   (16u * 1024 * 1024)
#define PGB_MAX_OUTCOMES 4000

/* The array parameters of STORE_W_PGB_INSERT, in ?N order from 1. */
enum pgb_col {
    C_ID,
    C_QID,
    C_RECEIVED,
    C_ADDR,
    C_HELO,
    C_SENDER,
    C_SMTPUTF8,
    C_8BIT,
    C_SIZE,
    C_UTF8_NEEDED,
    C_HOPS,
    C_RET,
    C_ENVID,
    C_RETURN_AUTH,
    C_CNAME,
    C_CPORT,
    C_CPROTO,
    C_TLS_ID,
    C_TLS_REQUIRE,
    C_TLS_OPTIONAL,
    C_BODY_ID,
    C_BODY,
    C_R_ID,
    C_R_MSG,
    C_R_ADDR,
    C_R_DOMAIN,
    C_R_STATE,
    C_R_NEXT,
    C_R_REPLY,
    C_D_ID,
    C_D_NOTIFY,
    C_D_ORCPT,
    C_R_ATTEMPTS,
    PGB_NCOLS
};

/* An array literal being built: "{" elements "}". */
struct pgb_arr {
    char *p;
    size_t len, cap;
    size_t n; /* elements */
};

struct pgb {
    struct store_writer *w;
    struct pgb_arr col[PGB_NCOLS];
    int64_t *ids, *rids; /* allocated messages.id, message_rcpts.id */
    size_t nids, nrids;
};

static void
arr_put(struct pgb_arr *a, const void *p, size_t n)
{
    if (a->len + n + 2 > a->cap) { /* room for "}" and NUL */
        while (a->len + n + 2 > a->cap)
            a->cap = a->cap ? 2 * a->cap : 256;
        a->p = xrealloc(a->p, a->cap);
    }
    memcpy(a->p + a->len, p, n);
    a->len += n;
}

static void
arr_sep(struct pgb_arr *a)
{
    arr_put(a, a->n++ > 0 ? "," : "{", 1);
}

static void
arr_i64(struct pgb_arr *a, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", (long long)v);

    arr_sep(a);
    arr_put(a, num, (size_t)n);
}

/* A quoted element (the octets as they are, " and \ escaped), or NULL. */
static void
arr_text(struct pgb_arr *a, const char *s)
{
    arr_sep(a);
    if (s == NULL) {
        arr_put(a, "NULL", 4);
        return;
    }
    arr_put(a, "\"", 1);
    for (const char *t = s; *t != '\0';) {
        size_t k = strcspn(t, "\"\\");

        arr_put(a, t, k);
        t += k;
        if (*t != '\0') {
            char esc[2] = {'\\', *t++};

            arr_put(a, esc, 2);
        }
    }
    arr_put(a, "\"", 1);
}

static void
arr_hex(struct pgb_arr *a, const void *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *c = p;

    if (a->len + 2 * n + 2 > a->cap) {
        while (a->len + 2 * n + 2 > a->cap)
            a->cap = a->cap ? 2 * a->cap : 256;
        a->p = xrealloc(a->p, a->cap);
    }
    for (size_t i = 0; i < n; i++) {
        a->p[a->len++] = digits[c[i] >> 4];
        a->p[a->len++] = digits[c[i] & 15];
    }
}

/* The literal, NUL-terminated ("{}" when empty); valid until the next put. */
static const char *
arr_end(struct pgb_arr *a)
{
    if (a->n == 0)
        arr_put(a, "{", 1);
    arr_put(a, "}", 1);
    a->p[a->len] = '\0';
    return a->p;
}

static int
hex_sink(void *arg, const void *p, size_t n)
{
    arr_hex(arg, p, n);
    return 0;
}

/* Appends the spool file's first spool_len octets as hex (an error leaves
 * the reason to the per-message path, which reads the file again). */
static int
pgb_spool(struct pgb *b, struct pgb_arr *a, const struct store_msg *m)
{
    char why[8];

    return store__spool_each(b->w, m, hex_sink, a, why, sizeof(why));
}

/* Adds m's body chunk (if it has a body); on a spool error the body arrays
 * are left as they were and the message stays out of the batch (the
 * per-message path fails it, saying why). */
static int
pgb_body(struct pgb *b, const struct store_msg *m, int64_t id)
{
    struct pgb_arr *a = &b->col[C_BODY];
    struct pgb_arr saved = *a;

    if (m->header_len + m->spool_len + m->body_len == 0)
        return 0;
    arr_sep(a);
    arr_put(a, "\"\\\\x", 4); /* "\\x..." in the literal: bytea's \x... */
    arr_hex(a, m->header, m->header_len);
    if (pgb_spool(b, a, m) != 0) {
        a->len = saved.len;
        a->n = saved.n;
        return MXD_ESTORE;
    }
    arr_hex(a, m->body, m->body_len);
    arr_put(a, "\"", 1);
    arr_i64(&b->col[C_BODY_ID], id);
    return 0;
}

/* Adds m's rows under message id, its recipients from rid. */
static void
pgb_msg(struct pgb *b, const struct store_msg *m, int64_t id, const int64_t *rid)
{
    struct pgb_arr *c = b->col;
    bool named = m->client_name != NULL && m->client_name[0] != '\0';

    arr_i64(&c[C_ID], id);
    arr_text(&c[C_QID], m->qid);
    arr_i64(&c[C_RECEIVED], m->received);
    arr_text(&c[C_ADDR], m->client_addr);
    arr_text(&c[C_HELO], m->helo);
    arr_text(&c[C_SENDER], m->sender);
    arr_i64(&c[C_SMTPUTF8], m->smtputf8);
    arr_i64(&c[C_8BIT], m->body_8bit);
    arr_i64(&c[C_SIZE], (int64_t)(m->header_len + m->spool_len + m->body_len));
    arr_i64(&c[C_UTF8_NEEDED], m->smtputf8 && m->utf8_needed);
    arr_i64(&c[C_HOPS], m->hops);
    arr_i64(&c[C_RET], (int64_t)m->ret);
    arr_text(&c[C_ENVID], m->envid);
    arr_i64(&c[C_RETURN_AUTH], m->return_auth);
    arr_text(&c[C_CNAME], named ? m->client_name : NULL);
    arr_i64(&c[C_CPORT], m->client_port);
    arr_text(&c[C_CPROTO], m->esmtp ? "ESMTP" : "SMTP");
    if (m->requiretls || m->tls_optional) { /* as store__writer_tls */
        arr_i64(&c[C_TLS_ID], id);
        arr_i64(&c[C_TLS_REQUIRE], m->requiretls);
        arr_i64(&c[C_TLS_OPTIONAL], !m->requiretls && m->tls_optional);
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct store_rcpt *r = &m->rcpts[i];

        arr_i64(&c[C_R_ID], rid[i]);
        arr_i64(&c[C_R_MSG], id);
        arr_text(&c[C_R_ADDR], r->address);
        arr_text(&c[C_R_DOMAIN], r->domain);
        /* held (quarantine): never due until released, the reason as reply;
         * held at accept (the primary is down): as a failed first attempt */
        if (m->hold_reason != NULL) {
            arr_text(&c[C_R_STATE], "held");
            arr_i64(&c[C_R_NEXT], INT64_MAX);
            arr_text(&c[C_R_REPLY], m->hold_reason);
            arr_i64(&c[C_R_ATTEMPTS], 0);
        } else if (r->held_reply != NULL) {
            arr_text(&c[C_R_STATE], "held");
            arr_i64(&c[C_R_NEXT], r->held_next);
            arr_text(&c[C_R_REPLY], r->held_reply);
            arr_i64(&c[C_R_ATTEMPTS], 1);
        } else {
            arr_text(&c[C_R_STATE], "queued");
            arr_i64(&c[C_R_NEXT], m->received);
            arr_text(&c[C_R_REPLY], NULL);
            arr_i64(&c[C_R_ATTEMPTS], 0);
        }
        if (r->notify == 0 && r->orcpt == NULL)
            continue; /* the default: no row */
        arr_i64(&c[C_D_ID], rid[i]);
        arr_i64(&c[C_D_NOTIFY], r->notify);
        arr_text(&c[C_D_ORCPT], r->orcpt);
    }
}

static bool
pgb_eligible(const struct store_job *j)
{
    const struct store_msg *m = j->msg;

    return j->kind == STORE_JOB_COMMIT && j->status == 0 && store__msg_valid(m) &&
           m->header_len <= PGB_CHUNK && m->spool_len <= PGB_CHUNK && m->body_len <= PGB_CHUNK &&
           m->header_len + m->spool_len + m->body_len <= PGB_CHUNK;
}

/* Allocates nids message ids and nrids recipient ids (one round trip). */
static int
pgb_ids(struct pgb *b)
{
    struct store_writer *w = b->w;
    struct sdb_stmt *s = w->c.stmt[STORE_W_PGB_IDS];
    size_t im = 0, ir = 0;
    int rc;

    sdb_bind_i64(s, 1, (int64_t)b->nids);
    sdb_bind_i64(s, 2, (int64_t)b->nrids);
    while ((rc = sdb_step(s)) == SDB_ROW) {
        if (sdb_col_i64(s, 0) == 0 && im < b->nids)
            b->ids[im++] = sdb_col_i64(s, 1);
        else if (sdb_col_i64(s, 0) == 1 && ir < b->nrids)
            b->rids[ir++] = sdb_col_i64(s, 1);
    }
    if (rc == SDB_DONE && (im != b->nids || ir != b->nrids)) {
        store__writer_reason(w, "%s: too few ids", store__sql[STORE_W_PGB_IDS].label);
        rc = MXD_ESTORE;
    } else if (rc != SDB_DONE) {
        store__writer_reason(w, "%s: %s", store__sql[STORE_W_PGB_IDS].label, sdb_errmsg(w->c.db));
    }
    sdb_reset(s);
    return rc == SDB_DONE ? 0 : MXD_ESTORE;
}

/* Inserts the eligible jobs of [from, NULL) up to the limits; *next: where
 * the next group starts (NULL when done). */
static int
pgb_group(struct pgb *b, struct store_job *from, struct store_job **next)
{
    struct sdb_stmt *s = b->w->c.stmt[STORE_W_PGB_INSERT];
    struct store_job *j;
    uint64_t octets = 0;
    size_t im = 0, ir = 0;
    int rc;

    b->nids = b->nrids = 0;
    for (j = from; j != NULL && b->nids < PGB_MAX_MSGS && octets < PGB_MAX_OCTETS; j = j->next) {
        if (!pgb_eligible(j))
            continue;
        b->nids++;
        b->nrids += j->msg->nrcpts;
        octets += j->msg->header_len + j->msg->spool_len + j->msg->body_len;
    }
    *next = j;
    if (b->nids == 0)
        return 0;
    b->ids = xrealloc(b->ids, b->nids * sizeof(*b->ids));
    b->rids = xrealloc(b->rids, b->nrids * sizeof(*b->rids));
    if ((rc = pgb_ids(b)) != 0)
        return rc;
    for (int c = 0; c < PGB_NCOLS; c++)
        b->col[c].len = b->col[c].n = 0;
    for (j = from; j != *next; j = j->next) {
        if (!pgb_eligible(j))
            continue;
        /* a message whose spool cannot be read wastes its ids; gaps are fine */
        if (pgb_body(b, j->msg, b->ids[im]) == 0) {
            pgb_msg(b, j->msg, b->ids[im], b->rids + ir);
            j->batched = true;
            j->msg_id = b->ids[im];
        }
        ir += j->msg->nrcpts;
        im++;
    }
    for (int c = 0; c < PGB_NCOLS; c++)
        sdb_bind_text(s, c + 1, arr_end(&b->col[c]));
    return store__writer_exec(b->w, STORE_W_PGB_INSERT);
}

/* One outcome of the batched statement, found again by its recipient. */
struct pgb_out {
    int64_t rid;
    struct store_job *j;
    size_t k;
};

static int
cmp_out(const void *a, const void *b)
{
    const struct pgb_out *x = a, *y = b;

    return x->rid < y->rid ? -1 : x->rid > y->rid;
}

/* The OUTCOMES jobs of [first, NULL) that only defer or hold, up to the
 * first job that changes recipients otherwise (an operator action, other
 * outcomes: those run in order after the batched ones), recorded in one
 * statement (W_PGB_OUTCOMES) and settled (usually nothing to do). Nothing
 * is batched when two outcomes name one recipient. */
static int
pgb_outcomes(struct pgb *b, struct store_job *first)
{
    struct store_writer *w = b->w;
    struct sdb_stmt *s = w->c.stmt[STORE_W_PGB_OUTCOMES];
    struct pgb_arr a[4];
    struct pgb_out *out;
    struct store_job *j, *end;
    size_t n = 0, at = 0;
    int rc;

    for (j = first; j != NULL; j = j->next) {
        if (j->kind == STORE_JOB_OP ||
            (j->kind == STORE_JOB_OUTCOMES && !store__outcomes_batchable(j)))
            break;
        if (j->kind != STORE_JOB_OUTCOMES)
            continue;
        if (n + store__outcomes_count(j) > PGB_MAX_OUTCOMES)
            break;
        n += store__outcomes_count(j);
    }
    end = j;
    if (n == 0)
        return 0;
    out = xcalloc(n, sizeof(*out));
    for (j = first; j != end; j = j->next)
        for (size_t k = 0; j->kind == STORE_JOB_OUTCOMES && k < store__outcomes_count(j); k++)
            out[at++] = (struct pgb_out){store__outcome_at(j, k)->rcpt_id, j, k};
    qsort(out, n, sizeof(*out), cmp_out);
    for (size_t i = 1; i < n; i++) {
        if (out[i].rid == out[i - 1].rid) {
            free(out);
            return 0; /* one recipient twice: in order, one by one */
        }
    }
    memset(a, 0, sizeof(a));
    for (size_t i = 0; i < n; i++) {
        const struct store_outcome *o = store__outcome_at(out[i].j, out[i].k);

        arr_i64(&a[0], o->rcpt_id);
        arr_text(&a[1], store_rcpt_state_name(o->state));
        arr_i64(&a[2], o->next_attempt);
        arr_text(&a[3], o->last_reply);
    }
    for (j = first; j != end; j = j->next)
        if (j->kind == STORE_JOB_OUTCOMES)
            store__outcomes_begin(j);
    for (int c = 0; c < 4; c++)
        sdb_bind_text(s, c + 1, arr_end(&a[c]));
    while ((rc = sdb_step(s)) == SDB_ROW) {
        struct pgb_out key = {.rid = sdb_col_i64(s, 6)}, *hit;

        hit = bsearch(&key, out, n, sizeof(*out), cmp_out);
        if (hit != NULL)
            store__outcome_row(hit->j, hit->k, s);
    }
    if (rc != SDB_DONE)
        store__writer_reason(w, "%s: %s", store__sql[STORE_W_PGB_OUTCOMES].label,
                             sdb_errmsg(w->c.db));
    sdb_reset(s);
    for (int c = 0; c < 4; c++)
        free(a[c].p);
    free(out);
    if (rc != SDB_DONE)
        return MXD_ESTORE;
    for (j = first; j != end; j = j->next) {
        if (j->kind != STORE_JOB_OUTCOMES)
            continue;
        if (store__outcomes_settle(w, j) != 0)
            return MXD_ESTORE; /* the whole batch again, one by one */
        j->batched = true;
    }
    return 0;
}

/* The batched part failed: its transaction goes and a new one begins, for
 * the per-message path. 0, or MXD_ESTORE when not even that worked. */
static int
pgb_fall_back(struct store_writer *w, struct store_job *first)
{
    char esc[320];

    log_msg(LOG_WARN, NULL, "store", "batched insert failed, committing one by one reason=%s",
            log_esc(esc, sizeof(esc), w->reason, strlen(w->reason)));
    for (struct store_job *j = first; j != NULL; j = j->next) {
        if (j->batched && j->kind == STORE_JOB_COMMIT)
            j->msg_id = 0;
        if (j->kind == STORE_JOB_OUTCOMES)
            store__outcomes_unbatch(j);
        j->batched = false;
    }
    store__writer_gone(w, 0, false); /* the settled messages' body files stay */
    w->reason[0] = '\0';
    if (sdb_in_txn(w->c.db) && store__writer_exec(w, STORE_W_ROLLBACK) != 0)
        return MXD_ESTORE;
    return store__writer_exec(w, STORE_W_BEGIN);
}

int
store__pg_batch(struct store_writer *w, struct store_job *first)
{
    struct pgb b = {.w = w};
    struct store_job *from = first;
    int rc = 0;

    for (struct store_job *j = first; j != NULL; j = j->next) {
        if (j->batched && j->kind == STORE_JOB_OUTCOMES)
            store__outcomes_unbatch(j); /* a retry after a broken transaction */
        j->batched = false;
    }
    if (sdb_engine(w->c.db) != SDB_POSTGRESQL)
        return 0;
    w->reason[0] = '\0';
    while (from != NULL && rc == 0)
        rc = pgb_group(&b, from, &from);
    if (rc == 0)
        rc = pgb_outcomes(&b, first);
    for (int c = 0; c < PGB_NCOLS; c++)
        free(b.col[c].p);
    free(b.ids);
    free(b.rids);
    return rc == 0 ? 0 : pgb_fall_back(w, first);
}
