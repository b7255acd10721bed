/* smtp_session: owns one client connection: its uv_tcp_t and uv_timer_t
 * (command and data timeouts, then the close linger), its smtp_proto, the
 * two output buffers (one being written, one filling) and the body being
 * received (a memory buffer, then a spool file). Loop thread only. Unsent
 * output is capped (OUT_HIGH, TLS ciphertext included): past it no command
 * is taken and nothing read, and a client that never reads meets the
 * command timeout, then a bounded linger and a reset. A session is freed
 * only when both handles are closed and no store job or spool write refers
 * to it any more (`pending`), so a completion never finds freed memory. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/iptab.h"
#include "base/log.h"
#include "base/metrics.h"
#include "check/check.h"
#include "smtp/smtp_net_impl.h"
#include "smtp/smtp_session_impl.h"
#include "store/spool.h"
#include "store/store.h"

static uint64_t
now_ms(const struct smtp_session *s)
{
    return uv_now(s->srv->loop);
}

/* ---- output ------------------------------------------------------------ */

static void
out_append(struct outbuf *o, const char *data, size_t len)
{
    if (o->len + len > o->cap) {
        o->cap = o->cap ? o->cap : 512;
        while (o->cap < o->len + len)
            o->cap *= 2;
        o->data = xrealloc(o->data, o->cap);
    }
    memcpy(o->data + o->len, data, len);
    o->len += len;
}

static void out_flush(struct smtp_session *s);

static void
write_failed(struct smtp_session *s, int status)
{
    if (!s->closing)
        log_msg(LOG_INFO, s->qid[0] ? s->qid : NULL, "smtp", "write failed client=%s reason=%s",
                s->ip, uv_strerror(status));
    s->out.len = 0;
    smtp_session__close(s);
}

static void
on_write(uv_write_t *req, int status)
{
    struct smtp_session *s = req->data;

    s->wout.len = 0;
    if (status < 0) {
        write_failed(s, status);
        return;
    }
    if (s->out.len > 0)
        out_flush(s);
    /* Another on_write comes, unless out went straight to the socket: then
     * go on now, or a pump paused for output would wait for nothing. */
    if (s->wout.len > 0 || uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    if (s->closing) {
        smtp_session__close(s); /* now the last reply is out */
    } else if (s->tls_plain_pending) {
        smtp_session__tls_plain_done(s); /* the 220 is out: TLS may begin */
    } else if (s->proto != NULL) {
        smtp_session__pump(s); /* we may have paused for output */
    }
}

static void
out_flush(struct smtp_session *s)
{
    struct outbuf tmp;
    uv_buf_t b;
    int rc;

    if (s->tls != NULL && !s->tls_plain_pending) {
        smtp_session__tls_flush(s);
        return;
    }
    if (s->wout.len > 0 || s->out.len == 0 || s->handles_open < 2 ||
        uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    if (s->tls == NULL) {
        /* A reply nearly always fits the socket buffer: write it now.
         * uv_write would queue it, re-arm epoll when the queue drains and
         * call back an iteration later, for every reply. */
        b = uv_buf_init(s->out.data, (unsigned)s->out.len);
        rc = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
        if (rc == (int)s->out.len) {
            s->out.len = 0;
            return;
        }
        if (rc < 0 && rc != UV_EAGAIN) {
            write_failed(s, rc);
            return;
        }
        if (rc > 0) {
            memmove(s->out.data, s->out.data + rc, s->out.len - (size_t)rc);
            s->out.len -= (size_t)rc;
        }
    }
    tmp = s->wout;
    s->wout = s->out;
    s->out = tmp;
    s->out.len = 0;
    b = uv_buf_init(s->wout.data, (unsigned)s->wout.len);
    s->wreq.data = s;
    rc = uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &b, 1, on_write);
    if (rc != 0) {
        s->wout.len = 0;
        s->out.len = 0;
        smtp_session__close(s);
    }
}

/* Replies we make up ourselves (limits, timeouts, shutdown). */
static void
say(struct smtp_session *s, const char *line)
{
    out_append(&s->out, line, strlen(line));
}

/* ---- lifetime ---------------------------------------------------------- */

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

static void
session_free(struct smtp_session *s)
{
    struct smtp_server *srv = s->srv;
    char dur[32];

    if (s->proto != NULL) {
        snprintf(dur, sizeof(dur), "%.3f", (double)(now_ms(s) - s->started_ms) / 1000.0);
        log_msg(LOG_INFO, NULL, "smtp", "disconnect client=%s messages=%u rejects=%u duration=%s",
                s->ip, s->nmsgs, s->nrejects, dur);
    }
    smtp_session__body_drop(s);
    iptab_dec(srv->ips, (const struct sockaddr *)&s->peer, s->conf->ipv6_prefix_length);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    smtp_proto_free(s->proto);
    check_session_free(s->checks);
    tls_conn_free(s->tls);
    free(s->cbuf);
    free(s->body);
    free(s->out.data);
    free(s->wout.data);
    conf_free(s->conf);
    free(s);
    smtp_net__session_gone(srv);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct smtp_session *s = h->data;

    if (--s->handles_open == 0 && s->pending == 0)
        session_free(s);
}

size_t
smtp_session__unsent(const struct smtp_session *s)
{
    return s->out.len + s->wout.len + s->tls_wbytes;
}

/* The client has not read the last replies within the linger time: drop
 * them and reset the connection, so that a client that never reads cannot
 * keep its session (and its per-IP slot), nor hold up a shutdown. The
 * writes still queued come back cancelled, before the close callback. */
static void
on_linger(uv_timer_t *t)
{
    struct smtp_session *s = t->data;

    log_msg(LOG_INFO, s->qid[0] ? s->qid : NULL, "smtp", "linger expired client=%s unsent=%zu",
            s->ip, smtp_session__unsent(s));
    s->out.len = 0;
    if (uv_tcp_close_reset(&s->tcp, on_handle_closed) != 0)
        uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
}

/* Closes once the replies already queued are written, waiting for that at
 * most SESSION_LINGER_MS (or command_timeout, if shorter). Idempotent. */
void
smtp_session__close(struct smtp_session *s)
{
    uint64_t linger = s->conf->command_timeout_ms;

    s->closing = true;
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
    if (!s->lingering)
        uv_timer_stop(&s->timer);
    if (s->out.len > 0)
        out_flush(s); /* over TLS, before the close_notify */
    smtp_session__tls_bye(s);
    if (uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    if (s->out.len > 0 && s->wout.len == 0)
        out_flush(s);
    /* What is left in out now cannot be sent (mid-handshake): dropped. */
    if (s->wout.len > 0 || s->tls_wbytes > 0) {
        /* on_write comes back here, or on_linger gives up */
        if (!s->lingering) {
            s->lingering = true;
            uv_timer_start(&s->timer, on_linger,
                           linger < SESSION_LINGER_MS ? linger : SESSION_LINGER_MS, 0);
        }
        return;
    }
    uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
}

/* A store job or spool write has called back. Returns true when the
 * session is gone or going, and the caller must not touch the protocol. */
bool
smtp_session__release(struct smtp_session *s)
{
    s->pending--;
    if (s->handles_open == 0) {
        if (s->pending == 0)
            session_free(s);
        return true;
    }
    return s->closing;
}

/* ---- input and timeouts ------------------------------------------------ */

static void
on_timeout(uv_timer_t *t)
{
    struct smtp_session *s = t->data;
    char line[300];

    log_msg(LOG_INFO, s->qid[0] ? s->qid : NULL, "smtp", "timeout client=%s phase=%s", s->ip,
            smtp_proto_in_body(s->proto) ? "data" : "command");
    metrics_count(METRICS_F_SESSIONS_REJECTED, "timeout", NULL);
    snprintf(line, sizeof(line), "421 4.4.2 %s Error: timeout exceeded\r\n", s->conf->hostname);
    say(s, line);
    smtp_session__close(s); /* session_free drops the body, after any spool write */
}

/* Command timeout runs from the start of each command (a client cannot
 * keep it alive by trickling bytes); the data timeout is idle time between
 * reads (RFC 5321 4.5.3.2). */
static void
timer_arm(struct smtp_session *s)
{
    const struct conf *c = s->conf;

    if (smtp_proto_in_body(s->proto))
        uv_timer_start(&s->timer, on_timeout, c->data_timeout_ms, 0);
    else if (!smtp_proto_buffered(s->proto) || !uv_is_active((uv_handle_t *)&s->timer))
        uv_timer_start(&s->timer, on_timeout, c->command_timeout_ms, 0);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct smtp_session *s = h->data;
    size_t avail;

    (void)hint;
    if (s->tls != NULL) {
        buf->base = s->cbuf;
        buf->len = SESSION_CBUF;
        return;
    }
    buf->base = smtp_proto_rbuf(s->proto, &avail);
    buf->len = avail;
}

static void
on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct smtp_session *s = stream->data;

    if (nread > 0 && s->tls != NULL) {
        smtp_session__tls_input(s, buf->base, (size_t)nread);
        return;
    }
    if (nread > 0) {
        smtp_proto_feed(s->proto, (size_t)nread);
    } else if (nread == UV_ENOBUFS) {
        /* Input buffer full while we wait (store, spool, output):
         * stop reading; session_pump starts again. */
        uv_read_stop(stream);
        s->reading = false;
    } else if (nread < 0) {
        if (s->tls != NULL)
            smtp_session__tls_eof(s, nread == UV_EOF ? "connection closed by the client"
                                                     : uv_strerror((int)nread));
        s->eof = true;
        uv_read_stop(stream);
        s->reading = false;
    }
    smtp_session__pump(s);
}

static void
reading_start(struct smtp_session *s)
{
    if (!s->reading && !s->eof && !s->closing) {
        if (uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0)
            s->reading = true;
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

/* The content, past the checks' filters (check_body's sink). */
static void
body_append(void *arg, const char *data, size_t len)
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
    hl = smtp_proto_received(s->proto, s->ip, s->qid, (time_t)m->received, hdr, sizeof(hdr));
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

/* The checks' verdict on the message: store it, answer from the commit. */
static void
on_end_verdict(void *arg, const struct check_verdict *v)
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
static void
answer_verdict(struct smtp_session *s, const struct check_verdict *v, const char *ok)
{
    if (v->action == CHECK_ACCEPT)
        smtp_proto_answer(s->proto, 250, ok);
    else
        smtp_proto_answer(s->proto, v->code, v->text);
}

static void
on_helo_verdict(void *arg, const struct check_verdict *v)
{
    struct smtp_session *s = arg;

    if (smtp_session__release(s))
        return;
    answer_verdict(s, v, "");
    smtp_session__pump(s);
}

static void
on_mail_verdict(void *arg, const struct check_verdict *v)
{
    struct smtp_session *s = arg;

    if (smtp_session__release(s))
        return;
    answer_verdict(s, v, "2.1.0 Ok");
    if (v->action != CHECK_ACCEPT)
        s->qid[0] = '\0';
    smtp_session__pump(s);
}

static void
on_rcpt_verdict(void *arg, const struct check_verdict *v)
{
    struct smtp_session *s = arg;

    if (smtp_session__release(s))
        return;
    answer_verdict(s, v, "2.1.5 Ok");
    smtp_session__pump(s);
}

static void
on_mail(struct smtp_session *s, const struct addr *sender)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    qid_next(&s->srv->qids, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, s->qid);
    s->pending++;
    check_mail(s->checks, s->qid, sender, on_mail_verdict, s);
}

/* RFC 1985: 250 when delivery for the node was started, 458 when this
 * client may not ask (or asks for a queue name), 459 for a node that is
 * not one of our backup domains. */
static void
on_etrn(struct smtp_session *s, const char *node)
{
    const struct conf *c = s->conf;
    bool sub = node[0] == '@';
    char text[400];
    size_t n;

    if (!conf_cidr_match(c->etrn_clients, c->netrn_clients, (const struct sockaddr *)&s->peer) ||
        node[0] == '#' || s->srv->on_etrn == NULL) {
        snprintf(text, sizeof(text), "4.7.1 Unable to queue messages for node %.255s%s", node,
                 node[0] == '#' ? ": queue names are not supported" : "");
        smtp_proto_answer(s->proto, 458, text);
        return;
    }
    n = s->srv->on_etrn(s->srv->on_etrn_arg, node + sub, sub);
    if (n == 0) {
        snprintf(text, sizeof(text), "4.1.2 Node %.255s not allowed: not a backup domain here",
                 node);
        smtp_proto_answer(s->proto, 459, text);
        return;
    }
    log_msg(LOG_INFO, NULL, "smtp", "etrn client=%s node=%.255s domains=%zu", s->ip, node, n);
    snprintf(text, sizeof(text), "2.0.0 Queuing for node %.255s started", node);
    smtp_proto_answer(s->proto, 250, text);
}

/* ---- the pump: protocol events to actions ------------------------------ */

static void
log_reject(struct smtp_session *s, const struct smtp_event *ev)
{
    char text[300];
    size_t n = ev->len;

    s->nrejects++;
    metrics_smtp_reject(ev->verb, ev->code, ev->data, ev->len);
    while (n > 0 && (ev->data[n - 1] == '\r' || ev->data[n - 1] == '\n'))
        n--;
    log_msg(LOG_INFO, s->qid[0] ? s->qid : NULL, "smtp", "reject client=%s cmd=%s reply=%s", s->ip,
            ev->verb, log_esc(text, sizeof(text), ev->data, n));
}

static void
on_delay_done(uv_timer_t *t)
{
    struct smtp_session *s = t->data;

    s->delaying = false;
    smtp_session__pump(s);
}

/* Past the soft error limit every reject is held back error_sleep before
 * it goes out (Postfix's smtpd_error_sleep_time): a harvester or a
 * garbage sender gets slow answers. true when the pump must pause. */
static bool
error_delay(struct smtp_session *s)
{
    const struct conf *c = s->conf;

    if (smtp_proto_errors(s->proto) <= c->soft_error_limit || c->error_sleep_ms == 0)
        return false;
    s->delaying = true;
    uv_timer_start(&s->timer, on_delay_done, c->error_sleep_ms, 0);
    return true;
}

/* Shutting down: a session that owes nothing gets 421 and goes. */
static bool
session_shutdown_now(struct smtp_session *s)
{
    char line[300];

    if (!s->srv->closing || s->pending > 0 || s->closing)
        return false;
    snprintf(line, sizeof(line), "421 4.3.2 %s Service shutting down\r\n", s->conf->hostname);
    say(s, line);
    smtp_session__close(s);
    return true;
}

/* Handles one event; returns false when the pump must stop. */
static bool
session_event(struct smtp_session *s, const struct smtp_event *ev)
{
    switch (ev->type) {
    case SMTP_EV_NEED_INPUT:
        if (session_shutdown_now(s))
            return false;
        if (s->eof) {
            smtp_session__close(s);
            return false;
        }
        reading_start(s);
        timer_arm(s);
        return false;
    case SMTP_EV_WAIT:
        uv_timer_stop(&s->timer); /* we owe the answer, not the client */
        return false;
    case SMTP_EV_REPLY:
        out_append(&s->out, ev->data, ev->len);
        if (ev->code >= 400)
            log_reject(s, ev);
        return ev->code < 400 || !error_delay(s);
    case SMTP_EV_MAIL:
        on_mail(s, ev->addr);
        return true;
    case SMTP_EV_RCPT:
        s->pending++;
        check_rcpt(s->checks, ev->addr, on_rcpt_verdict, s);
        return true;
    case SMTP_EV_BODY_BEGIN:
        smtp_session__body_drop(s);
        check_data(s->checks);
        return true;
    case SMTP_EV_TXN_ABORT:
        smtp_session__body_drop(s);
        check_reset(s->checks);
        return true;
    case SMTP_EV_BODY:
        check_body(s->checks, ev->data, ev->len);
        return true;
    case SMTP_EV_BODY_END:
        s->pending++;
        check_end(s->checks, on_end_verdict, s);
        return true;
    case SMTP_EV_CLOSE:
        smtp_session__close(s);
        return false;
    case SMTP_EV_ETRN:
        on_etrn(s, ev->data);
        return true;
    case SMTP_EV_STARTTLS:
        smtp_session__tls_start(s);
        return false; /* the protocol resumes after the handshake */
    case SMTP_EV_HELO:
        s->pending++;
        check_helo(s->checks, ev->data, on_helo_verdict, s);
        return true;
    }
    return true;
}

/* The pump stopped at OUT_HIGH: stop reading too, and make sure a timeout
 * runs, so a client that never reads is closed by the command timeout
 * (the timer may have been stopped while we owed an answer). Shutting
 * down: it gets its 421 now rather than at its next command. */
static void
session_out_paused(struct smtp_session *s)
{
    s->out_paused = true;
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
    if (session_shutdown_now(s))
        return;
    if (!uv_is_active((uv_handle_t *)&s->timer))
        uv_timer_start(&s->timer, on_timeout, s->conf->command_timeout_ms, 0);
}

void
smtp_session__pump(struct smtp_session *s)
{
    struct smtp_event ev;

    if (s->in_pump || s->closing)
        return;
    s->out_paused = false;
    for (;;) {
        bool full;

        s->in_pump = true;
        while (!s->closing && !s->spool_busy && !s->delaying &&
               smtp_session__unsent(s) < OUT_HIGH) {
            if (!session_event(s, (smtp_proto_next(s->proto, &ev), &ev)))
                break;
        }
        s->in_pump = false;
        if (s->closing)
            return;
        if (s->delaying)
            return; /* on_delay_done sends the reply and goes on */
        full = smtp_session__unsent(s) >= OUT_HIGH;
        out_flush(s);
        if (s->closing)
            return;
        if (!full)
            break;
        /* Still over: on_write or on_tls_write resumes. Plaintext that
         * went out at once: no callback will come, so go on here. */
        if (smtp_session__unsent(s) >= OUT_HIGH) {
            session_out_paused(s);
            return;
        }
    }
    /* TLS input that arrived while the protocol's buffer was full is not
     * on the socket any more: move it now, and run again if it helped. */
    if (s->tls != NULL && !s->tls_handshaking && !s->tls_plain_pending && !s->spool_busy &&
        tls_conn_pending(s->tls) && smtp_session__tls_drain(s))
        smtp_session__pump(s);
}

/* ---- accept and shutdown ----------------------------------------------- */

static void
session_refuse(struct smtp_session *s, const char *why)
{
    char line[300];

    log_msg(LOG_INFO, NULL, "smtp", "refused client=%s reason=%s", s->ip, why);
    metrics_count(METRICS_F_SESSIONS_REJECTED, why, NULL);
    snprintf(line, sizeof(line), "421 4.7.0 %s Error: too many connections%s\r\n",
             s->conf->hostname, strcmp(why, "per-ip-limit") == 0 ? " from your address" : "");
    say(s, line);
    smtp_session__close(s);
}

/* The connect stage's verdict: the greeting, or its refusal and goodbye
 * (RFC 5321 3.1: 554 or 421 instead of 220). */
static void
on_connect_verdict(void *arg, const struct check_verdict *v)
{
    struct smtp_session *s = arg;
    char line[CHECK_TEXT_MAX + 8];

    if (smtp_session__release(s))
        return;
    if (v->action == CHECK_ACCEPT) {
        smtp_session__pump(s);
        return;
    }
    log_msg(LOG_INFO, NULL, "smtp", "refused client=%s reason=check reply=%d", s->ip, v->code);
    metrics_count(METRICS_F_SESSIONS_REJECTED, "check", NULL);
    snprintf(line, sizeof(line), "%d %s\r\n", v->code, v->text);
    say(s, line);
    smtp_session__close(s);
}

static void
session_start(struct smtp_session *s)
{
    struct smtp_server *srv = s->srv;
    struct check_env env = {srv->loop, srv->store, srv->callahead};
    struct check_client client;

    client.peer = s->peer;
    memcpy(client.ip, s->ip, sizeof(client.ip));
    s->proto = smtp_proto_new(&srv->pcfg);
    s->checks = check_session_new(&env, s->conf, &client, body_append, s);
    s->pending++;
    check_connect(s->checks, on_connect_verdict, s);
}

void
smtp_session_accept(struct smtp_server *srv, uv_stream_t *lstream)
{
    struct smtp_session *s = xcalloc(1, sizeof(*s));
    int len = sizeof(s->peer);
    unsigned per_ip;

    s->srv = srv;
    s->conf = conf_ref(srv->conf);
    uv_tcp_init(srv->loop, &s->tcp);
    uv_timer_init(srv->loop, &s->timer);
    s->tcp.data = s->timer.data = s;
    s->handles_open = 2;
    s->started_ms = now_ms(s);
    s->next = srv->sessions;
    if (srv->sessions != NULL)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    srv->stats.connections_total++;
    srv->stats.connections_open++;
    if (uv_accept(lstream, (uv_stream_t *)&s->tcp) != 0 ||
        uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&s->peer, &len) != 0) {
        s->peer.ss_family = AF_UNSPEC;
        iptab_inc(srv->ips, (const struct sockaddr *)&s->peer, s->conf->ipv6_prefix_length);
        smtp_session__close(s);
        return;
    }
    if (s->peer.ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)&s->peer, s->ip, sizeof(s->ip));
    else
        uv_ip4_name((const struct sockaddr_in *)&s->peer, s->ip, sizeof(s->ip));
    per_ip = iptab_inc(srv->ips, (const struct sockaddr *)&s->peer, s->conf->ipv6_prefix_length);
    if (srv->nsessions > s->conf->max_connections) {
        session_refuse(s, "max-connections");
    } else if (per_ip > s->conf->max_connections_per_ip) {
        session_refuse(s, "per-ip-limit");
    } else {
        uv_tcp_nodelay(&s->tcp, 1);
        session_start(s);
    }
}

void
smtp_session_shutdown_all(struct smtp_server *srv)
{
    struct smtp_session *s = srv->sessions;

    while (s != NULL) {
        struct smtp_session *next = s->next;

        if (s->proto != NULL)
            session_shutdown_now(s);
        s = next;
    }
}
