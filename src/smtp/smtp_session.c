/* smtp_session: owns one client connection: its uv_tcp_t and uv_timer_t
 * (command and data timeouts, then the close linger), its smtp_proto, its
 * check pipeline, the two output buffers (one being written, one filling)
 * and the body being received (smtp_body.c). The pump turns the protocol's
 * events into actions: each stage (connect, HELO/EHLO, MAIL, RCPT, end of
 * data) is asked of the checks, and their verdict is the answer. The
 * session knows no check by name. On a listener marked proxy the PROXY
 * header comes first (smtp_proxy.c): the client it names is the session's
 * peer from the start. Until the greeting, smtp_greet.c has the session:
 * the connect stage, a teaser, input reported to the checks and not taken
 * as commands, a refusal. Loop thread only. Unsent
 * output is capped (OUT_HIGH, TLS ciphertext included): past it no command
 * is taken and nothing read, and a client that never reads meets the
 * command timeout, then a bounded linger and a reset. A session is freed
 * only when both handles are closed and no store job, spool write or
 * check verdict refers to it any more (`pending`), so a completion never finds freed memory. */
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

#define ERROR_DELAY_MAX_MS (60 * 1000) /* the longest wait before one refusal */

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
        smtp_session__flush(s);
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

void
smtp_session__flush(struct smtp_session *s)
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

void
smtp_session__out(struct smtp_session *s, const char *data, size_t len)
{
    out_append(&s->out, data, len);
}

/* ---- lifetime ---------------------------------------------------------- */

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
    if (s->ip_counted)
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
    free(s->proxy);
    free(s->refusal);
    free(s->end_v);
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
        smtp_session__flush(s); /* over TLS, before the close_notify */
    smtp_session__tls_bye(s);
    if (uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    if (s->out.len > 0 && s->wout.len == 0)
        smtp_session__flush(s);
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

void
smtp_session__idle_timer(struct smtp_session *s)
{
    uv_timer_start(&s->timer, on_timeout, s->conf->command_timeout_ms, 0);
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

    if (s->connecting || s->refusal != NULL) {
        smtp_session__early_read(s, nread, buf); /* before the greeting: smtp_greet.c */
        return;
    }
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

void
smtp_session__read_start(struct smtp_session *s)
{
    if (!s->reading && !s->eof && !s->closing) {
        if (uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0)
            s->reading = true;
    }
}

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

/* Past the soft error limit every reject is held back before it goes out,
 * longer with each error: error_sleep x (errors - soft_error_limit), at
 * most ERROR_DELAY_MAX_MS (Postfix 2.0 and earlier slept error_count
 * seconds past smtpd_soft_error_limit). A harvester or a garbage sender
 * gets ever slower answers until the hard limit closes the session; the
 * cap keeps each one well inside a client's 5-minute reply timeout (RFC
 * 5321 4.5.3.2). true when the pump must pause. */
static bool
error_delay(struct smtp_session *s)
{
    const struct conf *c = s->conf;
    unsigned errors = smtp_proto_errors(s->proto);
    uint64_t ms;

    if (errors <= c->soft_error_limit || c->error_sleep_ms == 0)
        return false;
    /* at most 60000 x 2^32: no overflow */
    ms = c->error_sleep_ms < ERROR_DELAY_MAX_MS ? c->error_sleep_ms : ERROR_DELAY_MAX_MS;
    ms *= errors - c->soft_error_limit;
    if (ms > ERROR_DELAY_MAX_MS)
        ms = ERROR_DELAY_MAX_MS;
    s->delaying = true;
    uv_timer_start(&s->timer, on_delay_done, ms, 0);
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
        smtp_session__read_start(s);
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
        check_end(s->checks, smtp_session__end_verdict, s);
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

    if (s->in_pump || s->closing || s->connecting || s->refusal != NULL)
        return; /* before the greeting (smtp_greet.c), nothing is taken */
    s->out_paused = false;
    for (;;) {
        bool full;

        s->in_pump = true;
        while (!s->closing && !s->spool_busy && !s->delaying && !check_busy(s->checks) &&
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
        smtp_session__flush(s);
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
        !check_busy(s->checks) && tls_conn_pending(s->tls) && smtp_session__tls_drain(s))
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

/* A content filter caught up (check_busy): the pump takes content again. */
static void
on_checks_resume(void *arg)
{
    smtp_session__pump(arg);
}

static void
session_start(struct smtp_session *s, const char *early, size_t n)
{
    struct smtp_server *srv = s->srv;
    struct check_env env = {srv->loop,  srv->store,  srv->callahead,
                            srv->anvil, srv->screen, srv->nsessions};
    struct check_client client;

    client.peer = s->peer;
    memcpy(client.ip, s->ip, sizeof(client.ip));
    s->proto = smtp_proto_new(&srv->pcfg);
    if (n > 0 && smtp_proto_feed_copy(s->proto, early, n) != n)
        mxd_panic("smtp: %zu octets after the PROXY header do not fit", n);
    s->checks = check_session_new(&env, s->conf, &client, smtp_session__body_append, s);
    check_set_content(s->checks, smtp_session__body_rewind, on_checks_resume);
    smtp_session__connect(s, early, n);
}

void
smtp_session__name_peer(struct smtp_session *s)
{
    if (s->peer.ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)&s->peer, s->ip, sizeof(s->ip));
    else
        uv_ip4_name((const struct sockaddr_in *)&s->peer, s->ip, sizeof(s->ip));
}

void
smtp_session__admit(struct smtp_session *s, const char *early, size_t n)
{
    struct smtp_server *srv = s->srv;
    unsigned per_ip =
        iptab_inc(srv->ips, (const struct sockaddr *)&s->peer, s->conf->ipv6_prefix_length);

    s->ip_counted = true;
    if (per_ip > s->conf->max_connections_per_ip) {
        session_refuse(s, "per-ip-limit");
        return;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    session_start(s, early, n);
}

void
smtp_session_accept(struct smtp_server *srv, uv_stream_t *lstream, bool proxy)
{
    struct smtp_session *s = xcalloc(1, sizeof(*s));
    int len = sizeof(s->peer);

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
        smtp_session__close(s);
        return;
    }
    smtp_session__name_peer(s);
    if (srv->nsessions > s->conf->max_connections)
        session_refuse(s, "max-connections");
    else if (proxy)
        smtp_session__proxy_begin(s); /* the client is in the header */
    else
        smtp_session__admit(s, NULL, 0);
}

void
smtp_session_shutdown_all(struct smtp_server *srv)
{
    struct smtp_session *s = srv->sessions;

    while (s != NULL) {
        struct smtp_session *next = s->next;

        if (s->proto != NULL)
            session_shutdown_now(s);
        else if (s->proxy != NULL)
            smtp_session__close(s); /* still waiting for its PROXY header */
        s = next;
    }
}
