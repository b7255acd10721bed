/* milter_net: owns one milter connection: its stream handle (TCP or unix
 * socket), its timer, the connect and write requests and the milter_proto
 * it was given. Loop thread only. Reads go straight into the proto's
 * buffer (bounded by the proto: one reply packet at most); writes go
 * straight to the socket when it takes them (uv_try_write), else copy
 * what the proto hands out into a write request. The owner hears of
 * input and failures through callbacks; once it closes the connection no
 * callback runs, and the connection frees itself when its handles are
 * closed.
 *
 * Idle connections: a connection whose owner is done with it may be
 * parked (QUIT_NC sent: the filter starts over on the same socket, with
 * the options negotiated) and taken by the next owner that asks for the
 * same socket, which saves it a connect and an option negotiation. At
 * most IDLE_MAX are kept per socket, each for IDLE_MS; one the filter
 * closes or writes to while parked is dropped. Filters on libmilter take
 * QUIT_NC only right after a message they answered with continue (its
 * state machine drops it anywhere else, and the CONNECT after it), others
 * (rspamd) anywhere: what the owner learns of a filter (milter_quitnc) is
 * kept per socket, and decides where a connection may be parked. */
#include "check/milter_net.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct milter_conn {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_timer_t timer;
    uv_connect_t creq;
    uv_shutdown_t sreq;
    struct milter_proto *proto;
    const struct milter_conn_cbs *cbs;
    void *arg; /* NULL once closed by the owner */
    unsigned handles;
    bool connected, failed, closing;
    /* parked: in the idle list (idle_head), under its socket's text;
     * after_message: right after a message the filter continued */
    bool idle, after_message;
    char *key;
    struct milter_conn *inext, *iprev;
};

#define IDLE_MAX 64u
#define IDLE_MS  30000u

/* Parked connections, the most recently parked first. */
static struct milter_conn *idle_head;

static void
idle_unlink(struct milter_conn *c)
{
    if (!c->idle)
        return;
    c->idle = false;
    if (c->iprev != NULL)
        c->iprev->inext = c->inext;
    else
        idle_head = c->inext;
    if (c->inext != NULL)
        c->inext->iprev = c->iprev;
    c->inext = c->iprev = NULL;
}

struct wreq {
    uv_write_t req;
    struct milter_conn *c;
    char data[];
};

static void
handle_closed(uv_handle_t *h)
{
    struct milter_conn *c = h->data;

    if (--c->handles == 0) {
        milter_proto_free(c->proto);
        free(c->key);
        free(c);
    }
}

static void
close_handles(struct milter_conn *c)
{
    if (c->closing)
        return;
    idle_unlink(c);
    c->closing = true;
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    uv_close((uv_handle_t *)&c->h, handle_closed);
}

/* Tells the owner once; nothing more is read or written. */
static void
fail_as(struct milter_conn *c, const char *why, bool timeout)
{
    if (c->failed)
        return;
    c->failed = true;
    uv_timer_stop(&c->timer);
    if (c->connected)
        uv_read_stop((uv_stream_t *)&c->h);
    if (c->arg != NULL)
        c->cbs->failed(c->arg, why, timeout);
    else
        close_handles(c);
}

static void
fail(struct milter_conn *c, const char *why)
{
    fail_as(c, why, false);
}

static void
on_timer(uv_timer_t *t)
{
    struct milter_conn *c = t->data;

    fail_as(c, c->connected ? "timeout waiting for a reply" : "connect timeout", c->connected);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct milter_conn *c = h->data;
    size_t avail;

    (void)hint;
    buf->base = milter_proto_rbuf(c->proto, &avail);
    buf->len = avail;
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct milter_conn *c = s->data;

    (void)buf;
    if (n > 0 && c->idle) {
        fail(c, "the filter wrote to an idle connection");
    } else if (n > 0) {
        milter_proto_filled(c->proto, (size_t)n);
        if (c->arg != NULL && !c->failed)
            c->cbs->input(c->arg);
    } else if (n < 0) {
        fail(c, n == UV_EOF ? "connection closed by the filter" : "read error");
    }
}

static void
on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct milter_conn *c = w->c;

    free(w);
    if (status < 0 && status != UV_ECANCELED)
        fail(c, "write error");
    else if (status == 0 && c->arg != NULL && !c->failed && c->cbs->written != NULL)
        c->cbs->written(c->arg);
}

void
milter_conn_flush(struct milter_conn *c)
{
    size_t len;
    const char *p = milter_proto_output(c->proto, &len);
    struct wreq *w;
    uv_buf_t b;
    int n;

    if (!c->connected || c->failed || len == 0)
        return;
    /* Straight to the socket when nothing waits before it (libuv refuses
     * while its queue is not empty, keeping the order): no request, no
     * copy, no completion callback, no epoll change. What the socket does
     * not take goes in a write request. */
    b = uv_buf_init((char *)p, (unsigned)len);
    n = uv_try_write((uv_stream_t *)&c->h, &b, 1);
    if (n > 0) {
        milter_proto_taken(c->proto, (size_t)n);
        if ((size_t)n == len)
            return;
        p = milter_proto_output(c->proto, &len);
    }
    /* an error (n < 0, EAGAIN aside) is left to the write request: it reports
     * it from the loop, never inside this call */
    w = xmalloc(sizeof(*w) + len);
    memcpy(w->data, p, len);
    w->c = c;
    milter_proto_taken(c->proto, len);
    b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->h, &b, 1, on_write) != 0) {
        free(w);
        fail(c, "write error");
    }
}

static void
on_connect(uv_connect_t *req, int status)
{
    struct milter_conn *c = req->data;

    if (c->failed || c->closing)
        return;
    uv_timer_stop(&c->timer);
    if (status < 0) {
        fail(c, uv_strerror(status));
        return;
    }
    c->connected = true;
    if (uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read) != 0) {
        fail(c, "read error");
        return;
    }
    if (c->arg != NULL)
        c->cbs->connected(c->arg);
}

struct milter_conn *
milter_conn_open(uv_loop_t *loop, const struct conf_endpoint *ep, struct milter_proto *proto,
                 uint64_t connect_ms, const struct milter_conn_cbs *cbs, void *arg)
{
    struct milter_conn *c = xcalloc(1, sizeof(*c));
    struct sockaddr_storage ss;
    int rc;

    c->proto = proto;
    c->cbs = cbs;
    c->arg = arg;
    c->creq.data = c;
    if (uv_timer_init(loop, &c->timer) != 0)
        mxd_panic("milter: uv_timer_init failed");
    c->timer.data = c;
    c->handles = 2;
    if (ep->is_unix) {
        if (uv_pipe_init(loop, &c->h.pipe, 0) != 0)
            mxd_panic("milter: uv_pipe_init failed");
        c->h.pipe.data = c;
        uv_pipe_connect(&c->creq, &c->h.pipe, ep->path, on_connect);
        rc = 0;
    } else {
        if (uv_tcp_init(loop, &c->h.tcp) != 0)
            mxd_panic("milter: uv_tcp_init failed");
        c->h.tcp.data = c;
        /* a command the filter does not answer (macros, QUIT_NC, no-reply
         * steps) must not hold back the next behind a delayed ACK */
        (void)uv_tcp_nodelay(&c->h.tcp, 1);
        if (uv_ip4_addr(ep->host, ep->port, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(ep->host, ep->port, (struct sockaddr_in6 *)&ss) != 0)
            rc = UV_EINVAL;
        else
            rc = uv_tcp_connect(&c->creq, &c->h.tcp, (const struct sockaddr *)&ss, on_connect);
    }
    if (rc != 0) {
        /* reported from the loop, never inside this call */
        uv_timer_start(&c->timer, on_timer, 0, 0);
        return c;
    }
    uv_timer_start(&c->timer, on_timer, connect_ms, 0);
    return c;
}

struct milter_proto *
milter_conn_proto(struct milter_conn *c)
{
    return c->proto;
}

size_t
milter_conn_queued(struct milter_conn *c)
{
    size_t n = milter_proto_pending(c->proto);

    if (c->connected && !c->closing)
        n += uv_stream_get_write_queue_size((uv_stream_t *)&c->h);
    return n;
}

void
milter_conn_deadline(struct milter_conn *c, uint64_t ms)
{
    if (c->failed || !c->connected)
        return;
    if (ms == 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
    struct milter_conn *c = req->data;

    (void)status;
    close_handles(c);
}

void
milter_conn_close(struct milter_conn *c, bool quit)
{
    if (c == NULL)
        return;
    c->arg = NULL;
    uv_timer_stop(&c->timer);
    if (quit && c->connected && !c->failed && !milter_proto_awaiting(c->proto) &&
        milter_proto_quit(c->proto, false) >= 0) {
        milter_conn_flush(c);
        c->sreq.data = c;
        uv_read_stop((uv_stream_t *)&c->h);
        /* the QUIT is in the socket (the usual case): closing sends it and
         * the FIN as a shutdown would, without the shutdown's loop turn */
        if (!c->failed && uv_stream_get_write_queue_size((uv_stream_t *)&c->h) > 0 &&
            uv_shutdown(&c->sreq, (uv_stream_t *)&c->h, on_shutdown) == 0)
            return;
    }
    close_handles(c);
}

/* What is known of key's filter and QUIT_NC. */
static struct known {
    char *key;
    enum milter_quitnc q;
} * known;
static size_t nknown;

enum milter_quitnc
milter_conn_quitnc(const char *key)
{
    for (size_t i = 0; i < nknown; i++)
        if (strcmp(known[i].key, key) == 0)
            return known[i].q;
    return MILTER_QUITNC_UNKNOWN;
}

void
milter_conn_quitnc_learn(const char *key, enum milter_quitnc q)
{
    size_t i;

    for (i = 0; i < nknown && strcmp(known[i].key, key) != 0; i++)
        ;
    if (i == nknown) {
        known = xrealloc(known, (nknown + 1) * sizeof(*known));
        known[nknown++].key = xstrdup(key);
    }
    known[i].q = q;
    if (q != MILTER_QUITNC_AFTER_MESSAGE)
        return;
    for (struct milter_conn *c = idle_head, *next; c != NULL; c = next) {
        next = c->inext;
        if (!c->after_message && strcmp(c->key, key) == 0)
            close_handles(c); /* parked where the filter does not take QUIT_NC */
    }
}

bool
milter_conn_park(struct milter_conn *c, const char *key, bool after_message)
{
    size_t n = 0;

    if (c == NULL || !c->connected || c->failed || c->closing || milter_proto_awaiting(c->proto) ||
        milter_proto_unread(c->proto) ||
        (!after_message && milter_conn_quitnc(key) == MILTER_QUITNC_AFTER_MESSAGE))
        return false;
    for (struct milter_conn *i = idle_head; i != NULL; i = i->inext)
        n += strcmp(i->key, key) == 0;
    if (n >= IDLE_MAX || milter_proto_quit(c->proto, true) < 0)
        return false;
    c->arg = NULL;
    milter_conn_flush(c);
    if (c->failed)
        return true; /* closed by the failure: the caller is done with it */
    free(c->key);
    c->key = xstrdup(key);
    c->after_message = after_message;
    c->idle = true;
    c->iprev = NULL;
    c->inext = idle_head;
    if (idle_head != NULL)
        idle_head->iprev = c;
    idle_head = c;
    uv_timer_start(&c->timer, on_timer, IDLE_MS, 0);
    return true;
}

struct milter_conn *
milter_conn_reuse(const char *key, const struct milter_conn_cbs *cbs, void *arg, bool *probe)
{
    for (struct milter_conn *c = idle_head; c != NULL; c = c->inext) {
        if (strcmp(c->key, key) != 0)
            continue;
        idle_unlink(c);
        uv_timer_stop(&c->timer);
        c->cbs = cbs;
        c->arg = arg;
        *probe = !c->after_message;
        return c;
    }
    return NULL;
}

void
milter_conn_idle_close(void)
{
    while (idle_head != NULL)
        close_handles(idle_head);
    for (size_t i = 0; i < nknown; i++)
        free(known[i].key);
    free(known);
    known = NULL;
    nknown = 0;
}
