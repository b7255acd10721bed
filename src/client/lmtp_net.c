/* lmtp_net: owns one LMTP client connection: its stream handle (TCP or
 * unix socket), its timer, the name lookup and connect requests, its
 * lmtp_proto and the body read in flight. Loop thread only. It moves bytes
 * between the socket and lmtp_proto, feeds the body from the store in
 * chunks (the next chunk is read only once the previous one is written, so
 * memory per connection stays bounded; when lmtp_proto asks for the body
 * again after the last chunk, as after its 8-bit scan, it is read again
 * from the start), and enforces the connect, reply
 * and idle timeouts. With STARTTLS it owns the client TLS session too:
 * after the server's 220 the octets it sent behind that reply are dropped,
 * and every octet after that goes through TLS. It makes no delivery
 * decisions: outcomes go to the owner's callbacks. The connection is freed
 * only when its handles are closed and no store read refers to it. */
#include "client/lmtp_net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"

#define LMTP_READ_BUF   16384
#define LMTP_BODY_CHUNK (64 * 1024)
#define LMTP_WRITE_HIGH (256 * 1024) /* don't read more body while this much is unsent */

struct lmtp_conn {
    uv_loop_t *loop;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    struct sockaddr_storage addr; /* TCP: where we connected, for a plain retry */
    struct lmtp_proto *proto;
    enum lmtp_conn_proto mode;
    char *hello;
    /* STARTTLS */
    bool tls_want, tls_required, tls_verify, tls_up, tls_saved, reconnecting;
    struct tls_creds *tls_creds;
    char *tls_name;
    void *tls_resume;
    size_t tls_resume_len;
    struct tls_conn *tls;
    struct tls_dane *tls_dane;
    const char *tls_policy; /* static: dane, verify, required, opportunistic */
    char tls_desc[96];
    struct store *store;
    const struct conf_endpoint *ep;
    struct lmtp_timeouts to;
    const struct lmtp_conn_cbs *cbs;
    void *arg;
    int64_t msg_id;
    uint64_t body_off;
    size_t write_bytes;
    unsigned handles_open;
    unsigned pending; /* name lookup, store reads */
    bool stream_inited, connected, ever_ready, in_txn, want_body, body_reading, closing, in_pump;
    bool quitting; /* QUIT asked for: no new transaction */
    char reason[300];
    char rbuf[LMTP_READ_BUF];
};

struct lmtp_write {
    uv_write_t req;
    struct lmtp_conn *c;
    size_t len;
    char data[];
};

static void conn_pump(struct lmtp_conn *c);
static void conn_shutdown(struct lmtp_conn *c, const char *reason);

static void
conn_maybe_free(struct lmtp_conn *c)
{
    if (c->handles_open > 0 || c->pending > 0)
        return;
    c->cbs->closed(c->arg, c, c->reason[0] ? c->reason : NULL, c->ever_ready);
    lmtp_proto_free(c->proto);
    tls_conn_free(c->tls);
    tls_creds_free(c->tls_creds);
    tls_dane_free(c->tls_dane);
    free(c->tls_name);
    free(c->tls_resume);
    free(c->hello);
    free(c);
}

static void conn_connect(struct lmtp_conn *c);

/* A fresh session: at the start, and for the plain-text retry. */
static void
proto_create(struct lmtp_conn *c)
{
    c->proto = c->mode == LMTP_CONN_SMTP ? lmtp_proto_new_smtp(c->hello) : lmtp_proto_new(c->hello);
    if (c->tls_want)
        lmtp_proto_set_starttls(c->proto, c->tls_required);
}

/* The stream is closed; after a failed opportunistic handshake, the same
 * server is tried again in plain text on a new connection. */
static void
on_stream_closed(uv_handle_t *h)
{
    struct lmtp_conn *c = h->data;

    if (c->reconnecting && !c->closing) {
        c->reconnecting = false;
        c->connected = false;
        c->handles_open--;
        conn_connect(c);
        return;
    }
    c->handles_open--;
    conn_maybe_free(c);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct lmtp_conn *c = h->data;

    c->handles_open--;
    conn_maybe_free(c);
}

/* Closes the handles; `reason` NULL means a clean QUIT. */
static void
conn_shutdown(struct lmtp_conn *c, const char *reason)
{
    if (c->closing)
        return;
    c->closing = true;
    if (reason != NULL && c->reason[0] == '\0')
        snprintf(c->reason, sizeof(c->reason), "%s", reason);
    uv_timer_stop(&c->timer);
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->stream_inited && !uv_is_closing((uv_handle_t *)&c->h))
        uv_close((uv_handle_t *)&c->h, on_stream_closed);
    conn_maybe_free(c);
}

/* The connection failed: open recipients get 4xx outcomes, then it goes. */
static void
conn_fail(struct lmtp_conn *c, const char *reason)
{
    if (c->closing)
        return;
    lmtp_proto_abort(c->proto, reason);
    conn_pump(c);
    conn_shutdown(c, reason); /* in case the proto had nothing to say */
}

static void
on_timeout(uv_timer_t *t)
{
    struct lmtp_conn *c = t->data;
    char why[200];

    if (c->ever_ready && !c->in_txn) {
        lmtp_conn_close(c); /* idle long enough */
        return;
    }
    snprintf(why, sizeof(why), "timeout %s %s", c->connected ? "waiting for" : "connecting to",
             c->ep->text);
    conn_fail(c, why);
}

static void
timer_arm(struct lmtp_conn *c)
{
    uint64_t ms;

    if (c->closing)
        return;
    if (!c->connected)
        ms = c->to.connect_ms;
    else if (c->ever_ready && !c->in_txn)
        ms = c->to.idle_ms;
    else
        ms = c->to.reply_ms;
    uv_timer_start(&c->timer, on_timeout, ms, 0);
}

/* ---- body -------------------------------------------------------------- */

static void body_request(struct lmtp_conn *c);

static void
on_body(void *arg, int status, const char *data, size_t len, uint64_t total)
{
    struct lmtp_conn *c = arg;
    bool last;

    c->pending--;
    c->body_reading = false;
    if (c->closing) {
        conn_maybe_free(c);
        return;
    }
    if (status != 0) {
        conn_fail(c, "cannot read the message from the queue");
        return;
    }
    c->body_off += len;
    last = c->body_off >= total;
    if (last)
        c->body_off = 0; /* a second pass (after the 8-bit scan) starts over */
    c->want_body = false;
    /* The proto copies (stuffs) the octets before this returns. */
    lmtp_proto_body(c->proto, data, len, last);
    conn_pump(c);
}

static void
body_request(struct lmtp_conn *c)
{
    if (!c->want_body || c->body_reading || c->closing || c->write_bytes > LMTP_WRITE_HIGH)
        return;
    c->body_reading = true;
    c->pending++;
    store_body_read_async(c->store, c->msg_id, c->body_off, LMTP_BODY_CHUNK, on_body, c);
}

/* ---- I/O --------------------------------------------------------------- */

static void
on_write(uv_write_t *req, int status)
{
    struct lmtp_write *w = (struct lmtp_write *)req;
    struct lmtp_conn *c = w->c;

    c->write_bytes -= w->len;
    free(w);
    if (c->closing || c->reconnecting)
        return; /* a write cancelled with the old connection of a plain retry */
    if (status < 0) {
        conn_fail(c, "write to the LMTP server failed");
        return;
    }
    body_request(c);
}

static void
raw_write(struct lmtp_conn *c, const char *data, size_t len)
{
    struct lmtp_write *w = xmalloc(sizeof(*w) + len);
    uv_buf_t b;

    w->c = c;
    w->len = len;
    memcpy(w->data, data, len);
    b = uv_buf_init(w->data, (unsigned)len);
    c->write_bytes += len;
    if (uv_write(&w->req, (uv_stream_t *)&c->h, &b, 1, on_write) != 0) {
        c->write_bytes -= len;
        free(w);
        conn_fail(c, "write to the LMTP server failed");
    }
}

static void
tls_push(void *arg, const char *data, size_t len)
{
    struct lmtp_conn *c = arg;

    if (!c->closing && !c->reconnecting)
        raw_write(c, data, len);
}

static void
conn_write(struct lmtp_conn *c, const char *data, size_t len)
{
    char why[300];

    if (!c->tls_up) {
        raw_write(c, data, len);
        return;
    }
    if (tls_conn_write(c->tls, data, len) != 0) {
        snprintf(why, sizeof(why), "TLS write to %s failed: %s", c->ep->text,
                 tls_conn_error(c->tls));
        conn_fail(c, why);
    }
}

/* ---- STARTTLS ---------------------------------------------------------- */

/* A failed handshake: opportunistic TLS tries once more without it, on a
 * new connection (RFC 3207 leaves the session unusable). */
static void
tls_failed(struct lmtp_conn *c)
{
    char why[400];

    snprintf(why, sizeof(why), "4.7.5 TLS handshake with %s failed: %s", c->ep->text,
             tls_conn_error(c->tls));
    log_msg(LOG_WARN, NULL, "lmtp", "tls failed server=%s reason=\"%s\"%s policy=%s", c->ep->text,
            tls_conn_error(c->tls), c->tls_required ? "" : " retry=plain", c->tls_policy);
    metrics_count(METRICS_F_OUTBOUND_TLS, c->tls_policy, "failed");
    if (c->tls_required) {
        conn_fail(c, why);
        return;
    }
    tls_conn_free(c->tls);
    c->tls = NULL;
    c->tls_want = false;
    c->reconnecting = true;
    lmtp_proto_free(c->proto);
    proto_create(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->h, on_stream_closed);
}

/* Advances the handshake; true once it is done and the session greets
 * again. */
static bool
tls_step(struct lmtp_conn *c)
{
    int rc = tls_conn_handshake(c->tls);
    bool verified;

    if (rc == 1)
        return false;
    if (rc < 0) {
        tls_failed(c);
        return false;
    }
    c->tls_up = true;
    tls_conn_describe(c->tls, c->tls_desc, sizeof(c->tls_desc));
    verified = c->tls_verify || tls_dane_usable(c->tls_dane) > 0;
    log_msg(LOG_INFO, NULL, "lmtp",
            "tls established server=%s tls=\"%s\" verified=%s resumed=%s policy=%s", c->ep->text,
            c->tls_desc, verified ? "yes" : "no", tls_conn_resumed(c->tls) ? "yes" : "no",
            c->tls_policy);
    metrics_count(METRICS_F_OUTBOUND_TLS, c->tls_policy, verified ? "verified" : "encrypted");
    /* an enforced MTA-STS policy's verified certificate counts here too
     * (deliver__sts_tls sets tls_verify) */
    lmtp_proto_tls_up(c->proto, verified);
    conn_pump(c);
    return !c->closing;
}

static void
tls_begin(struct lmtp_conn *c)
{
    c->tls = tls_conn_new_client(c->tls_creds, c->tls_name, c->tls_verify, c->tls_resume,
                                 c->tls_resume_len, tls_push, c);
    tls_conn_set_dane(c->tls, c->tls_dane);
    (void)tls_step(c); /* sends the ClientHello */
}

/* Once per connection, when the server has given us something to resume
 * with. */
static void
tls_save_session(struct lmtp_conn *c)
{
    void *data = NULL;
    size_t len = 0;

    if (!c->tls_up || c->tls_saved || c->cbs->tls_session == NULL ||
        tls_conn_session_data(c->tls, &data, &len) != 0)
        return;
    c->tls_saved = true;
    c->cbs->tls_session(c->arg, c, data, len);
}

/* Turns protocol events into actions; returns false to stop. */
static bool
conn_event(struct lmtp_conn *c, const struct lmtp_event *ev)
{
    switch (ev->type) {
    case LMTP_EV_NONE:
        return false;
    case LMTP_EV_SEND:
        conn_write(c, ev->data, ev->len);
        return !c->closing;
    case LMTP_EV_STARTTLS:
        tls_begin(c);
        return false;
    case LMTP_EV_READY:
        tls_save_session(c);
        if (c->tls_want && c->tls == NULL && !c->ever_ready) {
            /* opportunistic, and the server offers no STARTTLS */
            log_msg(LOG_INFO, NULL, "lmtp", "tls none server=%s policy=%s", c->ep->text,
                    c->tls_policy);
            metrics_count(METRICS_F_OUTBOUND_TLS, c->tls_policy, "plain");
        }

        c->ever_ready = true;
        c->in_txn = false;
        c->cbs->ready(c->arg, c);
        return !c->closing;
    case LMTP_EV_BODY:
        c->want_body = true;
        body_request(c);
        return true;
    case LMTP_EV_RCPT:
        c->cbs->rcpt(c->arg, c, ev->index, ev->code, ev->text);
        return true;
    case LMTP_EV_TXN_DONE:
        c->in_txn = false;
        c->cbs->txn_done(c->arg, c);
        return !c->closing;
    case LMTP_EV_FAILED:
        if (c->tls_want && c->tls == NULL && ev->text != NULL && strncmp(ev->text, "4.7.4", 5) == 0)
            metrics_count(METRICS_F_OUTBOUND_TLS, c->tls_policy, "failed"); /* no STARTTLS */
        conn_shutdown(c, ev->text ? ev->text : "LMTP session failed");
        return false;
    case LMTP_EV_CLOSED:
        if (c->tls_up)
            tls_conn_bye(c->tls);
        conn_shutdown(c, NULL);
        return false;
    }
    return false;
}

static void
conn_pump(struct lmtp_conn *c)
{
    struct lmtp_event ev;
    bool progress = false;

    if (c->in_pump)
        return;
    c->in_pump = true;
    while (!c->closing && !c->reconnecting) {
        lmtp_proto_next(c->proto, &ev);
        progress |= ev.type != LMTP_EV_NONE;
        if (!conn_event(c, &ev))
            break;
    }
    c->in_pump = false;
    /* The reply timeout runs per reply, not per octet: input that completes
     * no reply (a server dripping one octet at a time) does not restart it. */
    if (progress || !uv_is_active((uv_handle_t *)&c->timer))
        timer_arm(c);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct lmtp_conn *c = h->data;

    (void)hint;
    buf->base = c->rbuf;
    buf->len = sizeof(c->rbuf);
}

/* Server octets in plain text (before STARTTLS, or decrypted). */
static void
proto_input(struct lmtp_conn *c, const char *data, size_t len)
{
    size_t off = 0;
    unsigned stalls = 0;

    while (off < len && !c->closing && !c->reconnecting) {
        size_t took = lmtp_proto_feed(c->proto, data + off, len - off);

        off += took;
        conn_pump(c);
        if (c->tls != NULL && !c->tls_up) {
            /* The 220 to STARTTLS was the last plain-text octet that
             * counts; anything behind it is an injection attempt. */
            if (off < len)
                log_msg(LOG_WARN, NULL, "lmtp",
                        "tls discarded server=%s octets=%zu after STARTTLS 220", c->ep->text,
                        len - off);
            return;
        }
        if (took == 0 && ++stalls > 1) {
            /* It took nothing even after its events were pulled. */
            conn_fail(c, "LMTP client protocol stalled");
            return;
        }
    }
}

/* Ciphertext: the handshake, then the decrypted octets. rbuf was copied
 * into the TLS session, so it takes the plain text. */
static void
tls_input(struct lmtp_conn *c, const char *data, size_t len)
{
    char why[400];

    tls_conn_feed(c->tls, data, len);
    if (!c->tls_up && !tls_step(c))
        return;
    while (!c->closing && !c->reconnecting) {
        ssize_t n = tls_conn_read(c->tls, c->rbuf, sizeof(c->rbuf));

        if (n == 0)
            return;
        if (n < 0) {
            snprintf(why, sizeof(why), "TLS session with %s ended: %s", c->ep->text,
                     tls_conn_error(c->tls));
            conn_fail(c, why);
            return;
        }
        proto_input(c, c->rbuf, (size_t)n);
    }
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct lmtp_conn *c = s->data;

    if (c->closing || c->reconnecting)
        return;
    if (nread < 0) {
        if (c->tls != NULL && !c->tls_up) {
            c->tls_resume_len = 0; /* do not offer that session again */
            tls_failed(c);
            return;
        }
        conn_fail(c, nread == UV_EOF ? "connection closed by the LMTP server"
                                     : "read from the LMTP server failed");
        return;
    }
    if (c->tls != NULL)
        tls_input(c, buf->base, (size_t)nread);
    else
        proto_input(c, buf->base, (size_t)nread);
}

/* ---- connecting -------------------------------------------------------- */

static void
on_connect(uv_connect_t *req, int status)
{
    struct lmtp_conn *c = req->data;
    char why[300];

    if (c->closing)
        return;
    if (status < 0) {
        snprintf(why, sizeof(why), "connect to %s failed: %s", c->ep->text, uv_strerror(status));
        conn_shutdown(c, why);
        return;
    }
    c->connected = true;
    if (uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read) != 0) {
        conn_shutdown(c, "cannot read from the LMTP connection");
        return;
    }
    timer_arm(c);
}

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct lmtp_conn *c = req->data;
    char why[300];

    c->pending--;
    if (c->closing) {
        uv_freeaddrinfo(res);
        conn_maybe_free(c);
        return;
    }
    if (status < 0 || res == NULL || res->ai_addrlen > sizeof(c->addr)) {
        snprintf(why, sizeof(why), "cannot resolve %s: %s", c->ep->text,
                 uv_strerror(status < 0 ? status : UV_EAI_NONAME));
        uv_freeaddrinfo(res);
        conn_shutdown(c, why);
        return;
    }
    memcpy(&c->addr, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
    conn_connect(c);
}

/* A new session on a new TCP connection to c->addr (also the plain-text
 * retry after a failed opportunistic handshake). */
static void
conn_connect(struct lmtp_conn *c)
{
    char why[300];
    int rc;

    uv_tcp_init(c->loop, &c->h.tcp);
    c->h.tcp.data = c;
    c->stream_inited = true;
    c->handles_open++;
    c->creq.data = c;
    timer_arm(c);
    rc = uv_tcp_connect(&c->creq, &c->h.tcp, (const struct sockaddr *)&c->addr, on_connect);
    if (rc != 0) {
        snprintf(why, sizeof(why), "connect to %s failed: %s", c->ep->text, uv_strerror(rc));
        conn_shutdown(c, why);
    }
}

static void
conn_tls_init(struct lmtp_conn *c, const struct lmtp_conn_tls *tls)
{
    if (tls == NULL || c->ep->is_unix || tls->creds == NULL)
        return;
    c->tls_want = true;
    c->tls_required = tls->required;
    c->tls_verify = tls->verify;
    c->tls_creds = tls->creds;
    tls_creds_ref(tls->creds);
    if (tls->dane != NULL) {
        c->tls_dane = tls->dane;
        tls_dane_ref(tls->dane);
    }
    c->tls_policy = tls->policy     ? tls->policy
                    : tls->verify   ? "verify"
                    : tls->required ? "required"
                                    : "opportunistic";
    c->tls_name = tls->name ? xstrdup(tls->name) : NULL;
    if (tls->resume != NULL && tls->resume_len > 0) {
        c->tls_resume = xmalloc(tls->resume_len);
        memcpy(c->tls_resume, tls->resume, tls->resume_len);
        c->tls_resume_len = tls->resume_len;
    }
}

struct lmtp_conn *
lmtp_conn_open(uv_loop_t *loop, const struct conf_endpoint *ep, enum lmtp_conn_proto proto,
               const char *name, struct store *store, const struct lmtp_timeouts *to,
               const struct lmtp_conn_tls *tls, const struct lmtp_conn_cbs *cbs, void *arg)
{
    struct lmtp_conn *c = xcalloc(1, sizeof(*c));
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    char port[8];
    int rc;

    c->loop = loop;
    c->ep = ep;
    c->store = store;
    c->to = *to;
    c->cbs = cbs;
    c->arg = arg;
    c->mode = proto;
    c->hello = xstrdup(name);
    conn_tls_init(c, tls);
    proto_create(c);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 1;
    timer_arm(c);
    if (ep->is_unix) {
        uv_pipe_init(loop, &c->h.pipe, 0);
        c->h.pipe.data = c;
        c->stream_inited = true;
        c->handles_open++;
        c->creq.data = c;
        uv_pipe_connect(&c->creq, &c->h.pipe, ep->path, on_connect);
        return c;
    }
    snprintf(port, sizeof(port), "%u", (unsigned)ep->port);
    c->gai.data = c;
    c->pending++;
    rc = uv_getaddrinfo(loop, &c->gai, on_resolved, ep->host, port, &hints);
    if (rc != 0) {
        c->pending--;
        conn_shutdown(c, "cannot start the name lookup");
    }
    return c;
}

void
lmtp_conn_deliver(struct lmtp_conn *c, const struct lmtp_txn *t, int64_t msg_id)
{
    c->msg_id = msg_id;
    c->body_off = 0;
    c->want_body = false;
    c->in_txn = true;
    lmtp_proto_start(c->proto, t);
    conn_pump(c);
}

bool
lmtp_conn_dsn(const struct lmtp_conn *c)
{
    return c->proto != NULL && lmtp_proto_dsn(c->proto);
}

const char *
lmtp_conn_tls_desc(const struct lmtp_conn *c)
{
    return c->tls_up ? c->tls_desc : NULL;
}

bool
lmtp_conn_idle(const struct lmtp_conn *c)
{
    return c->ever_ready && !c->in_txn && !c->quitting && !c->closing && !c->reconnecting;
}

void
lmtp_conn_close(struct lmtp_conn *c)
{
    if (c->closing)
        return;
    c->quitting = true;
    if (c->ever_ready && !c->in_txn) {
        lmtp_proto_quit(c->proto);
        conn_pump(c);
        return;
    }
    conn_fail(c, "delivery stopped");
}
