/* smtp_net: owns the listening sockets, every session (its TCP handle,
 * timer, output buffers and the body being received) and the per-IP
 * connection table. Loop thread only. It moves bytes between sockets and
 * smtp_proto, applies connection limits and timeouts, asks the store about
 * recipients and to commit bodies, and replies 250 only from the store's
 * commit completion. It makes no protocol decisions of its own beyond
 * those limits, and never blocks: bodies over BODY_MEM_MAX go to a spool
 * file through the libuv threadpool. */
#include "smtp_net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iptab.h"
#include "log.h"
#include "qid.h"
#include "smtp_net_impl.h"
#include "smtp_proto.h"

struct smtp_listener {
    uv_tcp_t tcp;
    struct smtp_server *srv;
};

static void
server_maybe_done(struct smtp_server *srv)
{
    void (*cb)(void *) = srv->shutdown_cb;
    void *arg = srv->shutdown_arg;

    if (!srv->closing || srv->nsessions > 0 || srv->listeners_open > 0 || cb == NULL)
        return;
    srv->shutdown_cb = NULL;
    iptab_free(srv->ips);
    free(srv->listeners);
    free(srv->spool_dir);
    free(srv);
    cb(arg);
}

void
smtp_net__session_gone(struct smtp_server *srv)
{
    srv->nsessions--;
    srv->stats.connections_open--;
    server_maybe_done(srv);
}

static void
on_connection(uv_stream_t *lstream, int status)
{
    struct smtp_listener *l = (struct smtp_listener *)lstream;
    struct smtp_server *srv = l->srv;

    if (status < 0) {
        log_msg(LOG_WARN, NULL, "smtp", "accept failed reason=%s", uv_strerror(status));
        return;
    }
    smtp_session_accept(srv, lstream);
}

static void
on_listener_closed(uv_handle_t *h)
{
    struct smtp_server *srv = ((struct smtp_listener *)h)->srv;

    srv->listeners_open--;
    server_maybe_done(srv);
}

static int
listen_one(struct smtp_server *srv, struct smtp_listener *l, const struct conf_listen *cl,
           char **err)
{
    int rc;

    l->srv = srv;
    rc = uv_tcp_init(srv->loop, &l->tcp);
    if (rc != 0)
        goto fail;
    srv->listeners_open++;
    /* An IPv6 listener takes only IPv6, so "[::]:25" and "0.0.0.0:25" can
     * both be listed. */
    rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&cl->ss,
                     cl->ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
    if (rc != 0)
        goto fail;
    log_msg(LOG_INFO, NULL, "smtp", "listening address=%s", cl->text);
    return 0;
fail:
    *err = xasprintf("cannot listen on %s: %s", cl->text, uv_strerror(rc));
    return rc;
}

int
smtp_server_start(uv_loop_t *loop, const struct conf *conf, struct store *store,
                  const char *spool_dir, struct smtp_server **out, char **err)
{
    struct smtp_server *srv = xcalloc(1, sizeof(*srv));
    int rc = 0;

    srv->loop = loop;
    srv->conf = conf;
    srv->store = store;
    srv->spool_dir = xstrdup(spool_dir);
    srv->ips = iptab_new();
    srv->pcfg.hostname = conf->hostname;
    srv->pcfg.max_message_size = conf->max_message_size;
    srv->pcfg.max_recipients = conf->max_recipients;
    qid_init(&srv->qids);
    srv->listeners = xcalloc(conf->nlisten ? conf->nlisten : 1, sizeof(*srv->listeners));
    for (size_t i = 0; i < conf->nlisten && rc == 0; i++) {
        rc = listen_one(srv, &srv->listeners[i], &conf->listen[i], err);
        srv->nlisteners = i + 1;
    }
    if (rc != 0) {
        /* Close what was opened; the server frees itself when they are. */
        smtp_server_shutdown(srv, NULL, NULL);
        return rc;
    }
    *out = srv;
    return 0;
}

static void
noop_done(void *arg)
{
    (void)arg;
}

void
smtp_server_shutdown(struct smtp_server *srv, void (*cb)(void *arg), void *arg)
{
    srv->closing = true;
    srv->shutdown_cb = cb ? cb : noop_done;
    srv->shutdown_arg = arg;
    for (size_t i = 0; i < srv->nlisteners; i++) {
        uv_handle_t *h = (uv_handle_t *)&srv->listeners[i].tcp;

        if (h->loop != NULL && !uv_is_closing(h))
            uv_close(h, on_listener_closed);
    }
    smtp_session_shutdown_all(srv);
    server_maybe_done(srv);
}

void
smtp_server_on_queued(struct smtp_server *srv, void (*cb)(void *arg), void *arg)
{
    srv->on_queued = cb;
    srv->on_queued_arg = arg;
}

void
smtp_server_set_tls(struct smtp_server *srv, struct tls_creds *creds)
{
    srv->tls = creds;
    srv->pcfg.tls_offer = creds != NULL;
}

void
smtp_server_set_callahead(struct smtp_server *srv, struct callahead *ca)
{
    srv->callahead = ca;
}

void
smtp_server_on_etrn(struct smtp_server *srv,
                    size_t (*cb)(void *arg, const char *domain, bool subdomains), void *arg)
{
    srv->on_etrn = cb;
    srv->on_etrn_arg = arg;
}

void
smtp_server_get_stats(const struct smtp_server *srv, struct smtp_server_stats *out)
{
    *out = srv->stats;
}
