/* smtp_net: owns the listening sockets, every session (its TCP handle,
 * timer, output buffers and the body being received), the per-IP
 * connection table, the per-client rate table (anvil) that the checks
 * count in through their environment, and the screening's memory of passes
 * (screen) they ask and tell through it. Loop thread only. It moves bytes
 * between sockets and smtp_proto, applies connection limits and timeouts,
 * asks the store about recipients and to commit bodies, and replies 250
 * only from the store's commit completion. It makes no protocol decisions
 * of its own beyond those limits, and never blocks: bodies over
 * BODY_MEM_MAX go to a spool file through the libuv threadpool. */
#include "smtp/smtp_net.h"

#include <sys/socket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/iptab.h"
#include "base/log.h"
#include "base/metrics.h"
#include "check/anvil.h"
#include "check/screen.h"
#include "smtp/smtp_net_impl.h"
#include "smtp/smtp_proto.h"
#include "store/qid.h"

struct smtp_listener {
    uv_tcp_t tcp; /* first: the handle is the listener */
    struct smtp_listener *next;
    struct smtp_server *srv;
    char *text; /* the conf address; NULL for a socket systemd passed */
    bool keep;  /* reload: still configured */
    bool proxy; /* marked proxy in the conf: connections start with a PROXY header */
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
    anvil_free(srv->anvil);
    screen_free(srv->screen); /* its last passes go to the store, still open */
    free(srv->spool_dir);
    conf_free(srv->conf_ref);
    free(srv);
    cb(arg);
}

void
smtp_net__session_gone(struct smtp_server *srv)
{
    srv->nsessions--;
    srv->stats.connections_open--;
    metrics_add(METRICS_CONNECTIONS_OPEN, -1);
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
    metrics_add(METRICS_CONNECTIONS_TOTAL, 1);
    metrics_add(METRICS_CONNECTIONS_OPEN, 1);
    smtp_session_accept(srv, lstream, l->proxy);
}

static void
on_listener_closed(uv_handle_t *h)
{
    struct smtp_listener *l = (struct smtp_listener *)h;
    struct smtp_server *srv = l->srv;

    free(l->text);
    free(l);
    srv->listeners_open--;
    server_maybe_done(srv);
}

static void
listener_close(struct smtp_listener *l)
{
    struct smtp_listener **pp = &l->srv->listeners;

    while (*pp != l)
        pp = &(*pp)->next;
    *pp = l->next;
    uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}

int
smtp_listen_fd(const struct conf_listen *cl, int *fd, char **err)
{
    int s = socket(cl->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    int rc = 0;

    if (s < 0) {
        rc = -errno;
        goto fail;
    }
    /* An IPv6 listener takes only IPv6, so "[::]:25" and "0.0.0.0:25" can
     * both be listed. */
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (cl->ss.ss_family == AF_INET6 &&
         setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(s, (const struct sockaddr *)&cl->ss, cl->sslen) != 0 || listen(s, 511) != 0) {
        rc = -errno;
        close(s);
        goto fail;
    }
    *fd = s;
    return 0;
fail:
    *err = xasprintf("cannot listen on %s: %s", cl->text, strerror(-rc));
    return MXD_EIO;
}

static bool
same_sockaddr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)a,
                             *b4 = (const struct sockaddr_in *)b;
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a;
    const struct sockaddr_in6 *b6 = (const struct sockaddr_in6 *)b;

    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return a4->sin_port == b4->sin_port && a4->sin_addr.s_addr == b4->sin_addr.s_addr;
    return a->ss_family == AF_INET6 && a6->sin6_port == b6->sin6_port &&
           memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr)) == 0;
}

/* Whether the listener is marked proxy in conf: its listen entry, found by
 * the address as written, or for a socket systemd passed by the address
 * it is bound to (not listed: not marked). Logs a change. */
static void
listener_mark(struct smtp_listener *l, const struct conf *conf, bool log_change)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    bool was = l->proxy;

    l->proxy = false;
    if (l->text == NULL && uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    for (size_t i = 0; i < conf->nlisten; i++) {
        const struct conf_listen *cl = &conf->listen[i];

        if (l->text != NULL ? strcmp(l->text, cl->text) == 0 : same_sockaddr(&ss, &cl->ss))
            l->proxy = cl->proxy;
    }
    if (log_change && was != l->proxy)
        log_msg(LOG_INFO, NULL, "smtp", "listener address=%s proxy=%s",
                l->text ? l->text : "systemd-socket", l->proxy ? "yes" : "no");
}

/* Takes fd (a listening socket) into a new listener; text may be NULL. */
static int
listener_add(struct smtp_server *srv, int fd, const char *text, const struct conf *conf, char **err)
{
    struct smtp_listener *l = xcalloc(1, sizeof(*l));
    int rc;

    l->srv = srv;
    l->text = text != NULL ? xstrdup(text) : NULL;
    l->next = srv->listeners;
    srv->listeners = l;
    uv_tcp_init(srv->loop, &l->tcp);
    srv->listeners_open++;
    rc = uv_tcp_open(&l->tcp, fd);
    if (rc != 0) {
        close(fd);
    } else {
        rc = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
    }
    if (rc != 0) {
        *err =
            xasprintf("cannot listen on %s: %s", text ? text : "a systemd socket", uv_strerror(rc));
        listener_close(l);
        return rc;
    }
    listener_mark(l, conf, false);
    if (text != NULL)
        log_msg(LOG_INFO, NULL, "smtp", "listening address=%s%s", text,
                l->proxy ? " proxy=yes" : "");
    else
        log_msg(LOG_INFO, NULL, "smtp", "listening fd=%d source=systemd%s", fd,
                l->proxy ? " proxy=yes" : "");
    return 0;
}

static void
server_take_conf(struct smtp_server *srv, const struct conf *conf)
{
    struct conf *old = srv->conf_ref;

    srv->conf_ref = conf_ref(conf);
    srv->conf = srv->conf_ref;
    srv->pcfg.hostname = conf->hostname;
    srv->pcfg.max_message_size = conf->max_message_size;
    srv->pcfg.max_recipients = conf->max_recipients;
    srv->pcfg.hard_error_limit = conf->hard_error_limit;
    srv->pcfg.helo_answered = true; /* the checks' HELO stage */
    conf_free(old);
}

/* Another seed from the first, for a second table. */
static uint64_t
mix_seed(uint64_t seed)
{
    seed += UINT64_C(0x9e3779b97f4a7c15);
    seed = (seed ^ (seed >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    return seed ^ (seed >> 31);
}

int
smtp_server_start(uv_loop_t *loop, const struct conf *conf, struct store *store,
                  const char *spool_dir, const struct smtp_listen_fds *fds,
                  struct smtp_server **out, char **err)
{
    struct smtp_server *srv = xcalloc(1, sizeof(*srv));
    uint64_t seed;
    int rc = 0;

    /* the rate table's hash key: clients pick their addresses */
    if (uv_random(NULL, NULL, &seed, sizeof(seed), 0, NULL) != 0)
        seed = uv_hrtime() ^ (uint64_t)(uintptr_t)srv;
    srv->anvil = anvil_new(ANVIL_CLIENTS, ANVIL_WINDOW_MS, seed);
    if (store != NULL)
        srv->screen = screen_new(store, SCREEN_CLIENTS, mix_seed(seed));
    srv->loop = loop;
    srv->store = store;
    srv->spool_dir = xstrdup(spool_dir);
    srv->ips = iptab_new();
    srv->activated = fds->activated;
    server_take_conf(srv, conf);
    qid_init(&srv->qids);
    for (size_t i = 0; i < fds->n; i++) {
        if (rc == 0)
            rc = listener_add(srv, fds->fd[i], fds->activated ? NULL : conf->listen[i].text, conf,
                              err);
        else
            close(fds->fd[i]);
    }
    if (rc != 0) {
        /* Close what was opened; the server frees itself when they are. */
        smtp_server_shutdown(srv, NULL, NULL);
        return rc;
    }
    *out = srv;
    return 0;
}

/* Reload: close listeners no longer configured, open the new ones. A bind
 * that fails (the address is taken, or we no longer have the privilege for
 * a low port) is logged and the others go on. */
static void
server_relisten(struct smtp_server *srv, const struct conf *conf)
{
    struct smtp_listener *l, *next;

    for (l = srv->listeners; l != NULL; l = l->next) {
        l->keep = false;
        for (size_t i = 0; i < conf->nlisten && !l->keep; i++)
            l->keep = strcmp(l->text, conf->listen[i].text) == 0;
    }
    for (l = srv->listeners; l != NULL; l = next) {
        next = l->next;
        if (!l->keep) {
            log_msg(LOG_INFO, NULL, "smtp", "listener closed address=%s", l->text);
            listener_close(l);
        }
    }
    for (size_t i = 0; i < conf->nlisten; i++) {
        bool have = false;
        char *err = NULL;
        int fd;

        for (l = srv->listeners; l != NULL && !have; l = l->next)
            have = strcmp(l->text, conf->listen[i].text) == 0;
        if (have)
            continue;
        if (smtp_listen_fd(&conf->listen[i], &fd, &err) != 0 ||
            listener_add(srv, fd, conf->listen[i].text, conf, &err) != 0) {
            log_msg(LOG_ERR, NULL, "smtp", "reload: %s", err);
            free(err);
        }
    }
}

void
smtp_server_set_conf(struct smtp_server *srv, const struct conf *conf)
{
    if (srv->closing)
        return;
    server_take_conf(srv, conf);
    if (!srv->activated)
        server_relisten(srv, conf);
    /* A listener kept may have gained or lost its proxy mark: new
     * connections follow the new conf. */
    for (struct smtp_listener *l = srv->listeners; l != NULL; l = l->next)
        listener_mark(l, conf, true);
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
    while (srv->listeners != NULL)
        listener_close(srv->listeners);
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
smtp_server_on_hold(struct smtp_server *srv,
                    bool (*cb)(void *arg, const struct store_msg *m, struct store_rcpt *r),
                    void *arg)
{
    srv->on_hold = cb;
    srv->on_hold_arg = arg;
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
