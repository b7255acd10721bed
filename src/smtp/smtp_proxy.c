/* smtp_proxy: the PROXY protocol (HAProxy's, v1 and v2) on listeners
 * marked `proxy`. Owns a session's struct smtp_proxy (the header parser
 * and the read buffer) from accept until the header is done, and the
 * session's read callbacks and timer meanwhile. Loop thread only.
 *
 * Before anything is sent (no banner, no reply): a peer outside
 * proxy_networks is closed at once, so nobody else can claim an address;
 * a balancer gets proxy_timeout for the whole header, and a missing,
 * malformed, truncated or oversized one closes the connection. Every
 * refusal is one log line (`proxy refused client=<peer> reason=...`) and
 * one count in mxd_proxy_headers_total. Nothing is written to such a
 * connection: its octets are not SMTP we could answer.
 *
 * An accepted header names the client (`proxy client=... via=...`): it
 * replaces s->peer and s->ip before the session starts, so the per-IP
 * limit, the checks (SPF, etrn_clients...), the logs and Received: see the
 * client, never the balancer. v1 UNKNOWN and v2 LOCAL (a balancer's health
 * check) keep the balancer's address. Octets read past the header are the
 * client's first SMTP input and go to the protocol. The parsing itself is
 * proxy.c (pure). */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "smtp/proxy.h"
#include "smtp/smtp_session_impl.h"

/* One read takes at most this; what follows the header in it must fit the
 * protocol's fresh input buffer. */
#define PROXY_RBUF 512
_Static_assert(PROXY_RBUF <= SMTP_PROTO_BUF, "octets after the header fit the protocol buffer");

struct smtp_proxy {
    struct proxy_parser parser;
    char rbuf[PROXY_RBUF];
};

/* The header phase is over: stop its reads and timer, drop its state. */
static void
proxy_end(struct smtp_session *s)
{
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
    uv_timer_stop(&s->timer);
    free(s->proxy);
    s->proxy = NULL;
}

static void
proxy_refuse(struct smtp_session *s, const char *reason, const char *detail)
{
    proxy_end(s);
    if (detail != NULL)
        log_msg(LOG_INFO, NULL, "smtp", "proxy refused client=%s reason=%s detail=\"%s\"", s->ip,
                reason, detail);
    else
        log_msg(LOG_INFO, NULL, "smtp", "proxy refused client=%s reason=%s", s->ip, reason);
    metrics_count(METRICS_F_PROXY_HEADERS, "refused", reason);
    smtp_session__close(s);
}

static void
on_proxy_timeout(uv_timer_t *t)
{
    proxy_refuse(t->data, "timeout", NULL);
}

/* The client the header names becomes the session's peer. An IPv4-mapped
 * IPv6 address is taken as the IPv4 one, as a direct IPv4 client would be
 * (our IPv6 listeners are IPv6-only). */
static void
proxy_set_client(struct smtp_session *s, const struct sockaddr_storage *src)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)src;

    s->peer = *src;
    if (src->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = sin6->sin6_port};

        memcpy(&sin.sin_addr, &sin6->sin6_addr.s6_addr[12], 4);
        memset(&s->peer, 0, sizeof(s->peer));
        memcpy(&s->peer, &sin, sizeof(sin));
    }
    smtp_session__name_peer(s);
}

static unsigned
client_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static void
proxy_accept(struct smtp_session *s, const struct proxy_result *r)
{
    char via[sizeof(s->ip)];
    const char *what =
        r->version == 1 ? (r->local ? "v1-unknown" : "v1") : (r->local ? "v2-local" : "v2");

    memcpy(via, s->ip, sizeof(via));
    if (r->local) {
        log_msg(LOG_INFO, NULL, "smtp", "proxy client=%s via=%s header=%s", s->ip, via, what);
    } else {
        proxy_set_client(s, &r->src);
        log_msg(LOG_INFO, NULL, "smtp", "proxy client=%s port=%u via=%s header=%s", s->ip,
                client_port(&s->peer), via, what);
    }
    metrics_count(METRICS_F_PROXY_HEADERS, "accepted", what);
}

static void
on_proxy_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct smtp_session *s = h->data;

    (void)hint;
    buf->base = s->proxy->rbuf;
    buf->len = sizeof(s->proxy->rbuf);
}

static void
on_proxy_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct smtp_session *s = stream->data;
    struct proxy_result res;
    char rest[PROXY_RBUF];
    size_t used, n;

    if (nread == 0)
        return;
    if (nread < 0) {
        proxy_refuse(s, nread == UV_EOF ? "closed" : "read-error",
                     nread == UV_EOF ? NULL : uv_strerror((int)nread));
        return;
    }
    switch (proxy_feed(&s->proxy->parser, buf->base, (size_t)nread, &used)) {
    case PROXY_NEED_MORE:
        return;
    case PROXY_ERROR:
        res = s->proxy->parser.res;
        proxy_refuse(s, proxy_error_name(res.err), proxy_error_text(res.err));
        return;
    case PROXY_DONE:
        break;
    }
    res = s->proxy->parser.res;
    n = (size_t)nread - used;
    memcpy(rest, buf->base + used, n); /* buf is s->proxy's, freed now */
    proxy_end(s);
    proxy_accept(s, &res);
    smtp_session__admit(s, rest, n);
}

void
smtp_session__proxy_begin(struct smtp_session *s)
{
    const struct conf *c = s->conf;
    int rc;

    if (!conf_cidr_match(c->proxy_networks, c->nproxy_networks,
                         (const struct sockaddr *)&s->peer)) {
        proxy_refuse(s, "not-in-proxy-networks", NULL);
        return;
    }
    s->proxy = xmalloc(sizeof(*s->proxy));
    proxy_init(&s->proxy->parser);
    uv_timer_start(&s->timer, on_proxy_timeout, c->proxy_timeout_ms, 0);
    rc = uv_read_start((uv_stream_t *)&s->tcp, on_proxy_alloc, on_proxy_read);
    if (rc != 0) {
        proxy_refuse(s, "read-error", uv_strerror(rc));
        return;
    }
    s->reading = true;
}
