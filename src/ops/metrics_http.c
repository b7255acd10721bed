/* metrics_http: owns the metrics listener (uv_tcp_t) and one struct
 * mh_client per connection (its uv_tcp_t, uv_timer_t, request buffer and
 * response). Loop thread only; the queue gauges come from qstat on the
 * threadpool. Why not libmicrohttpd: it runs its own threads or select
 * loop beside libuv's, and we need one URL and one method; this responder
 * is small enough to read in one sitting.
 *
 * Safety: a request (line and headers) is at most MH_REQ_MAX octets and
 * must arrive within MH_HEADER_TIMEOUT_MS, the answer within
 * MH_ANSWER_TIMEOUT_MS after that; at most MH_CLIENTS connections at a
 * time: when all are taken, a new one replaces the oldest that has not
 * sent a complete request (or has had its answer), so idle connections
 * cannot lock a scrape out (issue 14), and is closed at once only when
 * every slot is busy answering; one request per connection (the
 * response says Connection: close); only GET /metrics (400, 404, 405,
 * 431 otherwise); request bodies are never read. */
#include "ops/metrics_http.h"

#include <sys/socket.h>

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "store/qstat.h"

#define MH_REQ_MAX           4096
#define MH_HEADER_TIMEOUT_MS 3000  /* a scraper sends its request at once */
#define MH_ANSWER_TIMEOUT_MS 10000 /* the queue gauges and the write */
#define MH_CLIENTS           16
#define MH_LINGER_MS         2000

struct mh_client {
    struct mh_client *prev, *next;
    struct metrics_http *h;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    unsigned refs; /* open handles + a queue read in flight */
    bool closing, answered, lingering;
    char *out;
    size_t len;
    char in[MH_REQ_MAX];
};

struct metrics_http {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    bool listening, stopping;
    char *address;
    struct sdb_params db; /* its strings owned */
    char *db_path, *db_conninfo;
    struct mh_client *clients; /* newest first; closing ones are not listed */
    size_t nclients;           /* allocated, including closing ones */
    size_t nlisted;
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

static void
mh_maybe_done(struct metrics_http *h)
{
    void (*cb)(void *) = h->stop_cb;
    void *arg = h->stop_arg;

    if (!h->stopping || h->listening || h->nclients > 0)
        return;
    free(h->address);
    free(h->db_path);
    free(h->db_conninfo);
    free(h);
    if (cb != NULL)
        cb(arg);
}

static void
client_unref(struct mh_client *c)
{
    struct metrics_http *h = c->h;

    if (--c->refs > 0)
        return;
    free(c->out);
    free(c);
    h->nclients--;
    mh_maybe_done(h);
}

static void
on_client_closed(uv_handle_t *handle)
{
    client_unref(handle->data);
}

static void
client_close(struct mh_client *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        c->h->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->h->nlisted--;
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_timeout(uv_timer_t *t);
static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);

/* Lingering close: the client may still be sending (an oversized request);
 * closing now would reset the connection before it reads our answer. Read
 * and discard until it closes, for at most MH_LINGER_MS. */
static void
on_shutdown(uv_shutdown_t *req, int status)
{
    struct mh_client *c = req->data;

    if (c->closing)
        return;
    c->len = 0;
    c->lingering = true;
    if (status != 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        client_close(c);
    else
        uv_timer_start(&c->timer, on_timeout, MH_LINGER_MS, 0);
}

static void
on_written(uv_write_t *req, int status)
{
    struct mh_client *c = req->data;

    c->sreq.data = c;
    if (status != 0 || c->closing ||
        uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        client_close(c);
}

/* The request is complete (or refused): nothing more is read, and the
 * answer has its own time. */
static void
client_answering(struct mh_client *c)
{
    if (c->answered)
        return;
    c->answered = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_start(&c->timer, on_timeout, MH_ANSWER_TIMEOUT_MS, 0);
}

static void
client_respond(struct mh_client *c, const char *status, const char *ctype, const char *body)
{
    size_t blen = strlen(body);
    uv_buf_t buf;

    client_answering(c);
    c->out = xasprintf("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s",
                       status, ctype, blen, body);
    buf = uv_buf_init(c->out, (unsigned)strlen(c->out));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0)
        client_close(c);
}

static void
client_error(struct mh_client *c, const char *status)
{
    char body[80];

    snprintf(body, sizeof(body), "%s\n", status);
    client_respond(c, status, "text/plain; charset=utf-8", body);
}

static void
on_queue(void *arg, const struct metrics_queue *q)
{
    struct mh_client *c = arg;

    if (!c->closing) {
        char *text = metrics_render(q);

        client_respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text);
        free(text);
    }
    client_unref(c);
}

/* The request line: "GET /metrics HTTP/1.1" (a query string is ignored). */
static void
client_request(struct mh_client *c, char *line)
{
    char *method = line, *target, *version;

    target = strchr(method, ' ');
    version = target != NULL ? strchr(target + 1, ' ') : NULL;
    if (target == NULL || version == NULL || strncmp(version + 1, "HTTP/1.", 7) != 0) {
        client_error(c, "400 Bad Request");
        return;
    }
    *target++ = '\0';
    *version = '\0';
    target[strcspn(target, "?")] = '\0';
    if (strcmp(target, "/metrics") != 0) {
        client_error(c, "404 Not Found");
    } else if (strcmp(method, "GET") != 0) {
        client_error(c, "405 Method Not Allowed");
    } else {
        client_answering(c);
        c->refs++;
        qstat_async(c->h->loop, &c->h->db, on_queue, c);
    }
}

static void
on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct mh_client *c = handle->data;

    (void)suggested;
    *buf = uv_buf_init(c->in + c->len, (unsigned)(sizeof(c->in) - 1 - c->len));
}

static void
on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct mh_client *c = stream->data;
    char *end;

    (void)buf;
    if (nread < 0) {
        client_close(c);
        return;
    }
    if (c->answered) {
        c->len = 0; /* after the answer: discarded */
        return;
    }
    c->len += (size_t)nread;
    c->in[c->len] = '\0';
    end = strstr(c->in, "\r\n\r\n");
    if (end == NULL && c->len >= sizeof(c->in) - 1) {
        client_error(c, "431 Request Header Fields Too Large");
    } else if (end != NULL) {
        c->in[strcspn(c->in, "\r\n")] = '\0';
        client_request(c, c->in);
    }
}

static void
on_timeout(uv_timer_t *t)
{
    struct mh_client *c = t->data;

    if (!c->answered)
        log_msg(LOG_INFO, NULL, "metrics", "timeout: request incomplete, connection closed");
    client_close(c);
}

/* All slots taken: the oldest client that holds one for nothing (no
 * complete request yet, or its answer already written) makes room. */
static void
make_room(struct metrics_http *h)
{
    struct mh_client *victim = NULL;

    for (struct mh_client *c = h->clients; c != NULL; c = c->next) {
        if (!c->answered || c->lingering)
            victim = c; /* the list is newest first: the last one is the oldest */
    }
    if (victim == NULL)
        return;
    if (!victim->answered)
        log_msg(LOG_INFO, NULL, "metrics",
                "busy: idle connection closed to make room for a new one");
    client_close(victim);
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct metrics_http *h = server->data;
    struct mh_client *c;

    if (status < 0)
        return;
    if (h->nlisted >= MH_CLIENTS)
        make_room(h);
    c = xcalloc(1, sizeof(*c));
    c->h = h;
    c->refs = 2;
    h->nclients++;
    h->nlisted++;
    c->next = h->clients;
    if (h->clients != NULL)
        h->clients->prev = c;
    h->clients = c;
    uv_tcp_init(h->loop, &c->tcp);
    uv_timer_init(h->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || h->nlisted > MH_CLIENTS ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        client_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, MH_HEADER_TIMEOUT_MS, 0);
}

int
metrics_http_start(uv_loop_t *loop, const struct conf_endpoint *ep, const struct sdb_params *db,
                   struct metrics_http **out, char **err)
{
    struct metrics_http *h = xcalloc(1, sizeof(*h));
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[8];
    int rc;

    h->loop = loop;
    h->address = xstrdup(ep->text);
    h->db_path = db->path != NULL ? xstrdup(db->path) : NULL;
    h->db_conninfo = db->conninfo != NULL ? xstrdup(db->conninfo) : NULL;
    h->db =
        (struct sdb_params){.engine = db->engine, .path = h->db_path, .conninfo = h->db_conninfo};
    uv_tcp_init(loop, &h->tcp);
    h->tcp.data = h;
    h->listening = true;
    /* A name ("localhost") is resolved once, here, at start or reload: a
     * moment's blocking on the loop at those times only. */
    snprintf(port, sizeof(port), "%u", (unsigned)ep->port);
    rc = getaddrinfo(ep->host, port, &hints, &ai) == 0 ? 0 : UV_EINVAL;
    if (rc == 0)
        rc = uv_tcp_bind(&h->tcp, ai->ai_addr, 0);
    if (ai != NULL)
        freeaddrinfo(ai);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->tcp, 64, on_connection);
    if (rc != 0) {
        *err = xasprintf("metrics_listen %s: %s", ep->text, uv_strerror(rc));
        metrics_http_stop(h, NULL, NULL);
        return rc;
    }
    log_msg(LOG_INFO, NULL, "metrics", "listening address=%s", ep->text);
    *out = h;
    return 0;
}

const char *
metrics_http_address(const struct metrics_http *h)
{
    return h->address;
}

static void
on_listener_closed(uv_handle_t *handle)
{
    struct metrics_http *h = handle->data;

    h->listening = false;
    mh_maybe_done(h);
}

void
metrics_http_stop(struct metrics_http *h, void (*cb)(void *arg), void *arg)
{
    h->stopping = true;
    h->stop_cb = cb;
    h->stop_arg = arg;
    while (h->clients != NULL)
        client_close(h->clients);
    uv_close((uv_handle_t *)&h->tcp, on_listener_closed);
}
