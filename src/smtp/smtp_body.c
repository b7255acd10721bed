/* smtp_body: the message a session is receiving and its commit (part of
 * the smtp_session module, see smtp_session.c): the content from the
 * checks' filters into memory, past BODY_MEM_MAX into a spool file on the
 * libuv threadpool (one write at a time; the pump waits for it), and at the
 * end of data, when the checks accept it, the store job whose completion
 * sends the 250. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/check.h"
#include "smtp/smtp_net_impl.h"
#include "smtp/smtp_session_impl.h"
#include "store/spool.h"
#include "store/store.h"

/* ---- drop ------------------------------------------------------------ */

static void
unlink_cb(uv_fs_t *req)
{
    uv_fs_req_cleanup(req);
    free(req);
}

/* Drops the body being received; a spool file is removed in the background. */
void
smtp_session__body_drop(struct smtp_session *s)
{
    s->body_len = 0;
    s->spool_len = 0;
    s->spool_failed = false;
    s->hscan = (struct mime7_hscan){0};
    if (s->spool_path != NULL) {
        uv_fs_t *req = xmalloc(sizeof(*req));

        if (uv_fs_unlink(s->srv->loop, req, s->spool_path, unlink_cb) != 0)
            free(req);
        free(s->spool_path);
        s->spool_path = NULL;
    }
}

/* ---- body -------------------------------------------------------------- */

static void
spool_work(uv_work_t *req)
{
    struct spool_job *j = req->data;

    j->rc = spool_append(j->path, j->data, j->len);
}

static void
spool_done(uv_work_t *req, int status)
{
    struct spool_job *j = req->data;
    struct smtp_session *s = j->s;

    if (status != 0 || j->rc != 0)
        s->spool_failed = true;
    s->spool_busy = false;
    free(j->data);
    free(j->path);
    free(j);
    if (smtp_session__release(s))
        return;
    if (s->spool_failed)
        log_msg(LOG_ERR, s->qid, "smtp", "spool write failed path=%s", s->spool_path);
    smtp_session__pump(s);
}

/* Hands the memory buffer to a threadpool write; the pump pauses until it
 * is done, so a session holds at most two buffers. */
static void
body_spool(struct smtp_session *s)
{
    struct spool_job *j = xcalloc(1, sizeof(*j));

    if (s->spool_path == NULL)
        s->spool_path = xasprintf("%s/%s", s->srv->spool_dir, s->qid);
    j->s = s;
    j->path = xstrdup(s->spool_path);
    j->data = s->body;
    j->len = s->body_len;
    j->req.data = j;
    s->spool_len += s->body_len;
    s->body = NULL;
    s->body_len = s->body_cap = 0;
    if (uv_queue_work(s->srv->loop, &j->req, spool_work, spool_done) != 0) {
        s->spool_failed = true;
        free(j->data);
        free(j->path);
        free(j);
        return;
    }
    s->pending++;
    s->spool_busy = true;
}

void
smtp_session__body_append(void *arg, const char *data, size_t len)
{
    struct smtp_session *s = arg;

    if (s->spool_failed)
        return;
    /* Only an SMTPUTF8 transaction can need to know (utf8_needed). */
    if (smtp_proto_txn(s->proto)->smtputf8)
        mime7_hscan_feed(&s->hscan, data, len);
    /* One chunk may arrive in two pieces (the header filter): never start
     * a second spool write while one is running. */
    if (s->body_len + len > BODY_MEM_MAX && s->body_len > 0 && !s->spool_busy)
        body_spool(s);
    if (s->body_len + len > s->body_cap) {
        size_t cap = s->body_cap ? s->body_cap : BODY_MEM_INIT;

        while (cap < s->body_len + len)
            cap *= 2;
        s->body = xrealloc(s->body, cap);
        s->body_cap = cap;
    }
    memcpy(s->body + s->body_len, data, len);
    s->body_len += len;
}

/* ---- commit ------------------------------------------------------------ */

static void
on_committed(void *arg, int status, int64_t msg_id)
{
    struct smtp_session *s = arg;
    const struct smtp_txn *t = smtp_proto_txn(s->proto);
    char from[600];
    char reply[64];

    (void)msg_id;
    if (status == 0) {
        s->nmsgs++;
        s->srv->stats.messages_accepted++;
        s->srv->stats.bytes_accepted += t->body_size;
        metrics_add(METRICS_MESSAGES_ACCEPTED, 1);
        metrics_add(METRICS_BYTES_ACCEPTED, (int64_t)t->body_size);
        log_msg(LOG_INFO, s->qid, "smtp",
                "queued from=%s size=%llu nrcpt=%zu client=%s tls=%s%s%s cmd=%s",
                log_addr(from, sizeof(from), t->sender.mailbox), (unsigned long long)t->body_size,
                t->nrcpts, s->ip, s->tls ? "\"" : "no", s->tls ? s->tls_desc : "",
                s->tls ? "\"" : "", t->bdat ? "BDAT" : "DATA");
        if (s->srv->on_queued != NULL)
            s->srv->on_queued(s->srv->on_queued_arg);
    } else {
        log_msg(LOG_ERR, s->qid, "smtp", "not queued reason=%s client=%s",
                status == MXD_ECLOSING ? "shutting-down" : "store-error", s->ip);
    }
    if (smtp_session__release(s))
        return;
    if (status == 0) {
        snprintf(reply, sizeof(reply), "2.0.0 Ok: queued as %s", s->qid);
        smtp_proto_answer(s->proto, 250, reply);
    } else {
        smtp_proto_answer(s->proto, 451, "4.3.0 Error: could not store the message, try again");
    }
    s->qid[0] = '\0';
    smtp_session__pump(s);
}

/* RFC 6531 3.4: SMTPUTF8 is needed only for a non-ASCII envelope or header. */
static bool
utf8_needed(const struct smtp_session *s, const struct smtp_txn *t, const struct store_msg *m)
{
    bool need = t->sender.utf8 || s->hscan.eight || mime7_has_8bit(m->header, m->header_len);

    for (size_t i = 0; i < t->nrcpts && !need; i++)
        need = t->rcpts[i].utf8;
    return t->smtputf8 && need;
}

static struct store_msg *
commit_build(struct smtp_session *s, const struct check_verdict *v)
{
    const struct smtp_txn *t = smtp_proto_txn(s->proto);
    const struct conf *c = s->conf;
    struct store_msg *m = xcalloc(1, sizeof(*m));
    char hdr[2048];
    size_t hl, al = v->fields_len;

    memcpy(m->qid, s->qid, sizeof(s->qid));
    m->received = (int64_t)time(NULL);
    m->client_addr = xstrdup(s->ip);
    m->helo = xstrdup(smtp_proto_helo(s->proto));
    m->sender = xstrdup(t->sender.mailbox);
    m->smtputf8 = t->smtputf8;
    m->body_8bit = t->body_8bit;
    m->hops = v->hops;
    m->rcpts = xcalloc(t->nrcpts, sizeof(*m->rcpts));
    m->nrcpts = t->nrcpts;
    for (size_t i = 0; i < t->nrcpts; i++) {
        const struct addr *a = &t->rcpts[i];

        if (a->is_postmaster) { /* to the first domain we serve */
            m->rcpts[i].address = xasprintf("%s@%s", a->mailbox, c->domains[0].name);
            m->rcpts[i].domain = xstrdup(c->domains[0].name);
        } else {
            m->rcpts[i].address = xstrdup(a->mailbox);
            m->rcpts[i].domain = xstrdup(a->domain_lc);
        }
    }
    hl = smtp_proto_received_named(s->proto, s->ip, v->client_name, s->qid, (time_t)m->received,
                                   hdr, sizeof(hdr));
    /* the checks' fields above our Received: (RFC 7208 9.1, RFC 8601 5) */
    m->header = xmalloc(al + hl + 1);
    memcpy(m->header, v->fields, al);
    memcpy(m->header + al, hdr, hl);
    m->header[al + hl] = '\0';
    m->header_len = al + hl;
    m->utf8_needed = utf8_needed(s, t, m);
    m->spool_path = s->spool_path;
    m->spool_len = s->spool_len;
    m->body = s->body;
    m->body_len = s->body_len;
    s->spool_path = NULL;
    s->body = NULL;
    s->body_len = s->body_cap = 0;
    s->spool_len = 0;
    return m;
}

void
smtp_session__end_verdict(void *arg, const struct check_verdict *v)
{
    struct smtp_session *s = arg;

    if (smtp_session__release(s))
        return;
    if (v->action != CHECK_ACCEPT) {
        smtp_session__body_drop(s);
        smtp_proto_answer(s->proto, v->code, v->text);
    } else if (s->spool_failed) {
        smtp_session__body_drop(s);
        smtp_proto_answer(s->proto, 451, "4.3.0 Error: could not store the message, try again");
    } else {
        s->pending++;
        store_commit_async(s->srv->store, commit_build(s, v), on_committed, s);
    }
    smtp_session__pump(s);
}

/* The answer for MAIL, RCPT or HELO/EHLO: a 2xx of ours when the checks
 * accept (the protocol writes HELO/EHLO's own), theirs when not. */
