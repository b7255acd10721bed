/* smtp_body: the message a session is receiving and its commit (part of
 * the smtp_session module, see smtp_session.c): the content from the
 * checks' filters into memory, past BODY_MEM_MAX into a spool file on the
 * libuv threadpool (one write at a time; the pump waits for it), and at the
 * end of data, when the checks accept it, the store job whose completion
 * sends the 250. Loop thread only. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

static void
unlink_bg(struct smtp_session *s, const char *path)
{
    uv_fs_t *req = xmalloc(sizeof(*req));

    if (uv_fs_unlink(s->srv->loop, req, path, unlink_cb) != 0)
        free(req);
}

/* Drops the body being received; a spool file is removed in the background
 * (and again by spool_done when a write into it was in flight). */
void
smtp_session__body_drop(struct smtp_session *s)
{
    s->body_len = 0;
    s->spool_len = 0;
    s->spool_failed = false;
    s->hscan = (struct mime7_hscan){0};
    s->tlsreq = (struct tlsreq_scan){0};
    if (s->spool_path != NULL) {
        unlink_bg(s, s->spool_path);
        free(s->spool_path);
        s->spool_path = NULL;
    }
}

void
smtp_session__body_rewind(void *arg)
{
    struct smtp_session *s = arg;

    smtp_session__body_drop(s);
    s->spool_gen++; /* the new body's spool file is not the old one */
}

static void end_apply(struct smtp_session *s, const struct check_verdict *v);

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
    /* the body was dropped or replaced while the write ran */
    bool stale = s->spool_path == NULL || strcmp(j->path, s->spool_path) != 0;

    if (stale)
        unlink_bg(s, j->path);
    else if (status != 0 || j->rc != 0)
        s->spool_failed = true;
    s->spool_busy = false;
    free(j->data);
    free(j->path);
    free(j);
    if (smtp_session__release(s))
        return;
    if (s->spool_failed)
        log_msg(LOG_ERR, s->qid, "smtp", "spool write failed path=%s", s->spool_path);
    if (s->end_wait) { /* the verdict came while it ran */
        s->end_wait = false;
        end_apply(s, s->end_v);
    }
    smtp_session__pump(s);
}

/* Hands the memory buffer to a threadpool write; the pump pauses until it
 * is done, so a session holds at most two buffers. */
static void
body_spool(struct smtp_session *s)
{
    struct spool_job *j = xcalloc(1, sizeof(*j));

    if (s->spool_path == NULL)
        s->spool_path = s->spool_gen == 0
                            ? xasprintf("%s/%s", s->srv->spool_dir, s->qid)
                            : xasprintf("%s/%s.%u", s->srv->spool_dir, s->qid, s->spool_gen);
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
    if (!s->tlsreq.done)
        tlsreq_scan_feed(&s->tlsreq, data, len);
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
        if (s->tls)
            metrics_add(METRICS_MESSAGES_ACCEPTED_TLS, 1);
        log_msg(LOG_INFO, s->qid, "smtp",
                "queued from=%s size=%llu nrcpt=%zu client=%s tls=%s%s%s cmd=%s%s",
                log_addr(from, sizeof(from), t->sender.mailbox), (unsigned long long)t->body_size,
                t->nrcpts, s->ip, s->tls ? "\"" : "no", s->tls ? s->tls_desc : "",
                s->tls ? "\"" : "", t->bdat ? "BDAT" : "DATA",
                t->requiretls ? " requiretls=yes" : "");
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

/* RFC 8689 5: "TLS-Required: No" in the header as stored (a content
 * filter's header when it had one, else the header as received). */
static bool
tls_optional(struct smtp_session *s, const struct check_edits *e)
{
    struct tlsreq_scan h = {0};

    if (e != NULL && e->header != NULL) {
        tlsreq_scan_feed(&h, e->header, e->header_len);
        tlsreq_scan_finish(&h);
        return h.no;
    }
    tlsreq_scan_finish(&s->tlsreq);
    return s->tlsreq.no;
}

/* Whether a and b are one mailbox: the local parts compared exactly (RFC
 * 5321 2.4: only the receiving host may treat their case as
 * insignificant), the domains without case. */
static bool
same_mailbox(const char *a, const char *b)
{
    const char *at_a = strrchr(a, '@'), *at_b = strrchr(b, '@');
    size_t la = at_a != NULL ? (size_t)(at_a - a) : strlen(a);
    size_t lb = at_b != NULL ? (size_t)(at_b - b) : strlen(b);

    if (la != lb || memcmp(a, b, la) != 0 || (at_a == NULL) != (at_b == NULL))
        return false;
    return at_a == NULL || strcasecmp(at_a, at_b) == 0;
}

static bool
deleted(const struct check_edits *e, const char *address)
{
    for (size_t i = 0; e != NULL && i < e->ndel; i++)
        if (same_mailbox(e->del[i], address))
            return true;
    return false;
}

/* Adds a recipient; with dedup (one a content filter added), not when the
 * message has that mailbox already. The client's recipients are stored as
 * it gave them, each one (as before content filters). */
static void
rcpt_put(struct store_msg *m, char *address, char *domain, bool dedup)
{
    for (size_t i = 0; dedup && i < m->nrcpts; i++) {
        if (same_mailbox(m->rcpts[i].address, address)) { /* already there */
            free(address);
            free(domain);
            return;
        }
    }
    m->rcpts[m->nrcpts].address = address;
    m->rcpts[m->nrcpts].domain = domain;
    m->nrcpts++;
}

/* The recipients as stored: the transaction's, less those a content
 * filter removed, plus those it added. */
static void
rcpts_build(struct smtp_session *s, const struct smtp_txn *t, const struct check_edits *e,
            struct store_msg *m)
{
    const struct conf *c = s->conf;

    m->rcpts = xcalloc(t->nrcpts + (e != NULL ? e->nadd : 0) + 1, sizeof(*m->rcpts));
    for (size_t i = 0; i < t->nrcpts; i++) {
        const struct addr *a = &t->rcpts[i];

        struct store_rcpt *r = &m->rcpts[m->nrcpts];

        if (deleted(e, a->mailbox))
            continue;
        if (a->is_postmaster) /* to the first domain we serve */
            rcpt_put(m, xasprintf("%s@%s", a->mailbox, c->domains[0].name),
                     xstrdup(c->domains[0].name), false);
        else
            rcpt_put(m, xstrdup(a->mailbox), xstrdup(a->domain_lc), false);
        /* RFC 3461 4.1, 4.2: as the client asked */
        r->notify = t->rdsn[i].notify;
        r->orcpt = t->rdsn[i].orcpt[0] != '\0' ? xstrdup(t->rdsn[i].orcpt) : NULL;
    }
    for (size_t i = 0; e != NULL && i < e->nadd; i++)
        rcpt_put(m, xstrdup(e->add[i].address), xstrdup(e->add[i].domain), true);
}

static struct store_msg *
commit_build(struct smtp_session *s, const struct check_verdict *v)
{
    const struct smtp_txn *t = smtp_proto_txn(s->proto);
    const struct check_edits *e = v->edits;
    struct store_msg *m = xcalloc(1, sizeof(*m));
    char hdr[2048];
    size_t hl, ml, al = v->fields_len;

    memcpy(m->qid, s->qid, sizeof(s->qid));
    m->received = (int64_t)time(NULL);
    m->client_addr = xstrdup(s->ip);
    m->helo = xstrdup(smtp_proto_helo(s->proto));
    /* for XFORWARD to the primary (issue 18) */
    m->client_name = v->client_name != NULL ? xstrdup(v->client_name) : NULL;
    m->client_port = s->peer.ss_family == AF_INET6
                         ? ntohs(((const struct sockaddr_in6 *)&s->peer)->sin6_port)
                         : ntohs(((const struct sockaddr_in *)&s->peer)->sin_port);
    m->esmtp = smtp_proto_esmtp(s->proto);
    m->sender = xstrdup(t->sender.mailbox);
    m->smtputf8 = t->smtputf8;
    m->body_8bit = t->body_8bit;
    m->hops = v->hops;
    rcpts_build(s, t, v->edits, m);
    hl = smtp_proto_received_named(s->proto, s->ip, v->client_name, s->qid, (time_t)m->received,
                                   hdr, sizeof(hdr));
    /* the checks' fields above our Received: (RFC 7208 9.1, RFC 8601 5),
     * and the message's header when a content filter had it */
    ml = e != NULL && e->header != NULL ? e->header_len : 0;
    m->header = xmalloc(al + hl + ml + 1);
    memcpy(m->header, v->fields, al);
    memcpy(m->header + al, hdr, hl);
    if (ml > 0)
        memcpy(m->header + al + hl, e->header, ml);
    m->header[al + hl + ml] = '\0';
    m->header_len = al + hl + ml;
    if (e != NULL && e->sender != NULL) {
        free(m->sender);
        m->sender = xstrdup(e->sender);
    }
    if (e != NULL && e->quarantine != NULL)
        m->hold_reason = xstrdup(e->quarantine);
    m->utf8_needed = utf8_needed(s, t, m);
    m->ret = t->ret;
    m->envid = t->envid[0] != '\0' ? xstrdup(t->envid) : NULL;
    m->return_auth = v->return_auth;
    m->requiretls = t->requiretls;
    m->tls_optional = tls_optional(s, e);
    /* issue 22: a recipient whose primary is known down is stored held */
    for (size_t i = 0; m->hold_reason == NULL && s->srv->on_hold != NULL && i < m->nrcpts; i++)
        (void)s->srv->on_hold(s->srv->on_hold_arg, m, &m->rcpts[i]);
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

/* Every recipient was removed by a content filter: nothing to store. */
static bool
no_rcpts_left(const struct smtp_txn *t, const struct check_edits *e)
{
    if (e == NULL || e->nadd > 0)
        return false;
    for (size_t i = 0; i < t->nrcpts; i++)
        if (!deleted(e, t->rcpts[i].mailbox))
            return false;
    return true;
}

static void
end_apply(struct smtp_session *s, const struct check_verdict *v)
{
    const struct smtp_txn *t = smtp_proto_txn(s->proto);

    if (v->action != CHECK_ACCEPT) {
        smtp_session__body_drop(s);
        smtp_proto_answer(s->proto, v->code, v->text);
    } else if (s->spool_failed) {
        smtp_session__body_drop(s);
        smtp_proto_answer(s->proto, 451, "4.3.0 Error: could not store the message, try again");
    } else if (no_rcpts_left(t, v->edits)) {
        log_msg(LOG_INFO, s->qid, "smtp", "discarded reason=no-recipients-left client=%s", s->ip);
        smtp_session__body_drop(s);
        smtp_proto_answer(s->proto, 250, "2.0.0 Ok: discarded");
    } else {
        s->pending++;
        store_commit_async(s->srv->store, commit_build(s, v), on_committed, s);
    }
}

void
smtp_session__end_verdict(void *arg, const struct check_verdict *v)
{
    struct smtp_session *s = arg;

    if (smtp_session__release(s))
        return;
    if (v->action == CHECK_ACCEPT && s->spool_busy) {
        /* a filter replaced the body and its last spool write runs:
         * spool_done goes on (the verdict's pointers live until the next
         * transaction, which cannot begin before the answer) */
        if (s->end_v == NULL)
            s->end_v = xmalloc(sizeof(*s->end_v));
        *s->end_v = *v;
        s->end_wait = true;
        return;
    }
    end_apply(s, v);
    smtp_session__pump(s);
}

/* The answer for MAIL, RCPT or HELO/EHLO: a 2xx of ours when the checks
 * accept (the protocol writes HELO/EHLO's own), theirs when not. */
