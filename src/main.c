/* main: wires mxd together: parses the command line, loads the config,
 * binds the listeners (or takes systemd's), drops privileges, opens the
 * store, prepares the spool, starts the SMTP server and runs the loop until
 * SIGTERM/SIGINT has drained everything. Owns the process-wide objects
 * (loop, conf, store, server), the signal handles, the reload (SIGHUP,
 * mxctl reload) and the systemd notifications. Every conf a reload
 * replaced is kept until exit: delivery connections and callahead checks
 * hold pointers into it (a few KB per reload). */
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <uv.h>

#include "base/conf.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/tls.h"
#include "check/callahead.h"
#include "check/milter_net.h"
#include "check/rcptsync.h"
#include "deliver/deliver.h"
#include "ops/control.h"
#include "ops/metrics_http.h"
#include "ops/privdrop.h"
#include "smtp/smtp_net.h"
#include "store/dbconf.h"
#include "store/qstat.h"
#include "store/spool.h"
#include "store/store.h"

#define MXD_DEFAULT_CONF "/etc/mxd/mxd.conf"
#ifndef MXD_VERSION
#define MXD_VERSION "0.1.0"
#endif

struct mxd {
    uv_loop_t *loop;
    const char *conf_path;
    struct conf *conf;
    struct conf **retired; /* replaced by reloads; freed at exit */
    size_t nretired;
    struct smtp_listen_fds fds;
    struct store *store;
    struct smtp_server *server;
    struct deliver *deliver;
    struct callahead *callahead;
    struct rcptsync *rcptsync; /* recipients = sync: the lists' reads */
    struct control *control;
    struct tls_creds *tls;
    struct metrics_http *metrics;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t status_timer;  /* STATUS= with the queue size, under systemd */
    uv_prepare_t log_prepare; /* writes the iteration's log lines before the loop waits */
    bool status_busy;         /* a queue read is in flight */
    bool stopping;
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: mxd [-c FILE] [--check] [--version]\n"
               "  -c, --config FILE  configuration file (default " MXD_DEFAULT_CONF ")\n"
               "  --check            validate the configuration and exit (0 valid, 1 not)\n"
               "  --version          print the version and exit\n");
}

static void
on_store_closed(void *arg)
{
    struct mxd *m = arg;

    m->store = NULL;
    log_msg(LOG_INFO, NULL, "mxd", "stopped");
    for (size_t i = 0; i < m->nretired; i++)
        conf_free(m->retired[i]);
    free(m->retired);
    m->retired = NULL;
    m->nretired = 0;
    uv_close((uv_handle_t *)&m->sig_term, NULL);
    uv_close((uv_handle_t *)&m->sig_int, NULL);
    uv_close((uv_handle_t *)&m->sig_hup, NULL);
    uv_close((uv_handle_t *)&m->status_timer, NULL);
    uv_close((uv_handle_t *)&m->log_prepare, NULL);
}

static void on_server_stopped(void *arg);
static void on_deliver_stopped(void *arg);
static void on_callahead_stopped(void *arg);

/* Shutdown order: the control socket (it uses everything else), SMTP
 * (commits in flight answered), deliveries (outcomes recorded), callahead,
 * the recipient list reads, then the store. Each stage starts the next; absent ones are skipped. */
static void
stop_next(struct mxd *m)
{
    struct store_stats st;

    if (m->server == NULL) /* the sessions are gone (or never came): filters are not needed */
        milter_conn_idle_close();
    if (m->metrics != NULL) {
        struct metrics_http *h = m->metrics;

        m->metrics = NULL;
        metrics_http_stop(h, on_server_stopped, m); /* continue the chain below */
    } else if (m->control != NULL) {
        struct control *c = m->control;

        m->control = NULL;
        control_stop(c, on_server_stopped, m); /* continue the chain below */
    } else if (m->server != NULL) {
        struct smtp_server *srv = m->server;

        m->server = NULL;
        smtp_server_shutdown(srv, on_server_stopped, m);
    } else if (m->deliver != NULL) {
        struct deliver *d = m->deliver;
        m->deliver = NULL;
        deliver_stop(d, on_deliver_stopped, m);
    } else if (m->callahead != NULL) {
        struct callahead *ca = m->callahead;

        m->callahead = NULL;
        callahead_stop(ca, on_callahead_stopped, m);
    } else if (m->rcptsync != NULL) {
        struct rcptsync *rs = m->rcptsync;

        m->rcptsync = NULL;
        rcptsync_stop(rs, on_callahead_stopped, m);
    } else if (m->store != NULL) {
        store_get_stats(m->store, &st);
        log_msg(LOG_INFO, NULL, "store",
                "stats commits=%llu failures=%llu batches=%llu max_batch=%llu",
                (unsigned long long)st.commits, (unsigned long long)st.failures,
                (unsigned long long)st.batches, (unsigned long long)st.max_batch);
        store_close(m->store, on_store_closed, m);
    } else {
        on_store_closed(m);
    }
}

static void
on_server_stopped(void *arg)
{
    stop_next(arg);
}

static void
on_deliver_stopped(void *arg)
{
    stop_next(arg);
}

static void
on_callahead_stopped(void *arg)
{
    stop_next(arg);
}

/* ETRN: flush the backup domains named (or below it, for "@domain"). */
static size_t
on_etrn(void *arg, const char *node, bool subdomains)
{
    struct mxd *m = arg;
    size_t n = 0;
    size_t nl = strlen(node);

    for (size_t i = 0; i < m->conf->ndomains && m->deliver != NULL; i++) {
        const struct conf_domain *d = &m->conf->domains[i];
        size_t dl = strlen(d->name);
        bool match = ascii_casecmp(d->name, node) == 0 ||
                     (subdomains && dl > nl && d->name[dl - nl - 1] == '.' &&
                      ascii_casecmp(d->name + dl - nl, node) == 0);

        if (match && d->mode == CONF_MODE_BACKUP) {
            deliver_flush_domain(m->deliver, d->name);
            n++;
        }
    }
    return n;
}

static void
on_kick(void *arg)
{
    struct mxd *m = arg;

    if (m->deliver != NULL)
        deliver_kick(m->deliver);
}

/* Issue 22: a recipient whose primary is known down is stored held. */
static bool
on_hold(void *arg, const struct store_msg *msg, struct store_rcpt *r)
{
    struct mxd *m = arg;

    return m->deliver != NULL && deliver_hold_at_accept(m->deliver, msg, r);
}

/* The gauges that come from the configuration in use: the certificate's
 * expiry and the backup domains' lifetimes (for the alert on held mail,
 * conf/prometheus/mxd-alerts.yml). At start-up and after each reload. */
static void
publish_conf_gauges(const struct conf *c, const struct tls_creds *tls)
{
    const char **names = xcalloc(c->ndomains + 1, sizeof(*names));
    uint64_t *secs = xcalloc(c->ndomains + 1, sizeof(*secs));
    size_t n = 0;

    metrics_set(METRICS_TLS_CERT_EXPIRY, tls_creds_expiry(tls));
    for (size_t i = 0; i < c->ndomains; i++) {
        const struct conf_domain *d = &c->domains[i];

        if (d->mode != CONF_MODE_BACKUP)
            continue;
        names[n] = d->name;
        secs[n++] = conf_domain_lifetime(c, d);
    }
    metrics_set_lifetimes(names, secs, n);
    free(names);
    free(secs);
}

/* The new conf's certificate (NULL when it has none) into *out. */
/* [queue] bounce_policy and delay_warning for the DSNs the store writes. */
static void
store_rules_set(struct store *st, const struct conf *c)
{
    static const enum store_bounce_policy policy[] = {
        [CONF_BOUNCE_AUTHENTICATED] = STORE_BOUNCE_AUTHENTICATED,
        [CONF_BOUNCE_ALWAYS] = STORE_BOUNCE_ALWAYS,
        [CONF_BOUNCE_NEVER] = STORE_BOUNCE_NEVER,
    };
    struct store_dsn_rules r = {
        .policy = policy[c->bounce_policy],
        .delay_warning_s = (int64_t)c->delay_warning_s,
    };

    store_set_dsn_rules(st, &r);
}

static int
reload_load_tls(const struct conf *nc, struct tls_creds **out, char **err)
{
    *out = NULL;
    if (nc->tls_certificate == NULL)
        return 0;
    return tls_creds_load(nc->tls_certificate, nc->tls_key, nc->tls_priority, out, err);
}

static bool
str_changed(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0);
}

/* Keys that only a restart changes: say so rather than pretend. */
static void
reload_warn_static(const struct conf *oc, const struct conf *nc)
{
    const char *keys[7];
    size_t n = 0;

    if (strcmp(oc->database, nc->database) != 0)
        keys[n++] = "database";
    if (str_changed(oc->user, nc->user))
        keys[n++] = "user";
    if (str_changed(oc->control_socket, nc->control_socket))
        keys[n++] = "control_socket";
    /* the store's connection and this node's name in the cluster (issue 21) */
    if (oc->store != nc->store)
        keys[n++] = "store";
    if (str_changed(oc->postgresql, nc->postgresql))
        keys[n++] = "postgresql";
    if (str_changed(oc->node_name, nc->node_name))
        keys[n++] = "node_name";
    if (oc->cluster_lease_s != nc->cluster_lease_s) /* given to store_open */
        keys[n++] = "cluster_lease";
    for (size_t i = 0; i < n; i++)
        log_msg(LOG_WARN, NULL, "mxd", "reload key=%s changed: takes effect after a restart",
                keys[i]);
}

static void
on_status_queue(void *arg, const struct metrics_queue *q)
{
    struct mxd *m = arg;
    uint64_t rcpts = 0;

    m->status_busy = false;
    if (!q->valid || m->stopping)
        return;
    for (size_t i = 0; i < q->nrows; i++)
        rcpts += q->rows[i].recipients;
    sd_notifyf(0, "STATUS=accepting mail; queue: %llu messages, %llu recipients waiting",
               (unsigned long long)q->messages, (unsigned long long)rcpts);
}

/* Under systemd: the queue size in `systemctl status`, every 30 s. */
static void
on_status_timer(uv_timer_t *t)
{
    struct mxd *m = t->data;
    struct sdb_params dbp;

    if (m->status_busy || m->stopping)
        return;
    m->status_busy = true;
    dbp = dbconf_params(m->conf);
    qstat_async(m->loop, &dbp, on_status_queue, m);
}

/* metrics_listen changed (or appeared, or went): a new listener. */
static void
reload_metrics(struct mxd *m, const struct conf *nc)
{
    const char *old = m->metrics != NULL ? metrics_http_address(m->metrics) : NULL;
    const char *want = nc->metrics_listen.text;
    struct sdb_params dbp = dbconf_params(m->conf); /* the store is not reloaded */
    char *err = NULL;

    if ((old == NULL && want == NULL) || (old != NULL && want != NULL && strcmp(old, want) == 0))
        return;
    if (m->metrics != NULL)
        metrics_http_stop(m->metrics, NULL, NULL);
    m->metrics = NULL;
    if (want != NULL &&
        metrics_http_start(m->loop, &nc->metrics_listen, &dbp, &m->metrics, &err) != 0) {
        log_msg(LOG_ERR, NULL, "mxd", "reload: %s", err);
        free(err);
    }
}

/* SIGHUP and mxctl reload: re-read the config. On any error the running
 * config stays and *err (caller frees) says why. New sessions and
 * deliveries use the new one; open sessions finish with theirs. */
static int
mxd_reload(void *arg, char **err)
{
    struct mxd *m = arg;
    struct conf *nc = NULL;
    struct tls_creds *tls = NULL;
    char *errors = NULL;

    if (m->stopping || m->server == NULL) {
        *err = xstrdup("mxd is shutting down");
        return MXD_ECLOSING;
    }
    sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
    if (conf_load(m->conf_path, &nc, &errors) != 0 || dbconf_check(nc, &errors) != 0 ||
        reload_load_tls(nc, &tls, &errors) != 0) {
        /* One log line per error; errors itself goes back to mxctl whole. */
        for (const char *p = errors; p != NULL && *p != '\0';) {
            size_t n = strcspn(p, "\n");
            char esc[1024];

            log_msg(LOG_ERR, NULL, "mxd", "reload refused error=%s",
                    log_esc(esc, sizeof(esc), p, n));
            p += n + (p[n] == '\n');
        }
        *err = errors != NULL ? errors : xstrdup("cannot load the configuration");
        conf_free(nc);
        metrics_add(METRICS_RELOAD_FAILURES, 1);
        sd_notify(0, "READY=1\nSTATUS=reload refused, running the old configuration");
        return MXD_ECONFIG;
    }
    reload_warn_static(m->conf, nc);
    smtp_server_set_conf(m->server, nc);
    smtp_server_set_tls(m->server, tls);
    tls_creds_free(m->tls);
    m->tls = tls;
    if (m->deliver != NULL)
        deliver_set_conf(m->deliver, nc);
    store_set_hostname(m->store, nc->hostname);
    if (m->rcptsync != NULL)
        rcptsync_set_conf(m->rcptsync, nc);
    store_rules_set(m->store, nc);
    reload_metrics(m, nc);
    publish_conf_gauges(nc, tls);
    metrics_add(METRICS_RELOADS, 1);
    m->retired = xrealloc(m->retired, (m->nretired + 1) * sizeof(*m->retired));
    m->retired[m->nretired++] = m->conf;
    m->conf = nc;
    log_msg(LOG_INFO, NULL, "mxd", "reloaded config=%s domains=%zu tls=%s", m->conf_path,
            nc->ndomains, tls != NULL ? "on" : "off");
    sd_notify(0, "READY=1\nSTATUS=configuration reloaded");
    return 0;
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct mxd *m = h->data;

    if (signum == SIGHUP) {
        char *err = NULL;

        (void)!mxd_reload(m, &err);
        free(err);
        return;
    }
    if (m->stopping)
        return;
    m->stopping = true;
    sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing sessions and deliveries");
    log_msg(LOG_INFO, NULL, "mxd", "stopping signal=%s", signum == SIGTERM ? "TERM" : "INT");
    stop_next(m);
}

/* The listening sockets: systemd's (socket activation) or conf->listen,
 * bound now, while mxd may still be root. */
static int
mxd_listen(struct mxd *m, char **err)
{
    struct smtp_listen_fds *fds = &m->fds;
    int n = sd_listen_fds(1); /* and unset LISTEN_*: children must not see them */

    if (n < 0) {
        *err = xasprintf("LISTEN_FDS: %s", strerror(-n));
        return MXD_EINVAL;
    }
    if (n > 0) {
        if ((size_t)n > sizeof(fds->fd) / sizeof(fds->fd[0])) {
            *err = xasprintf("systemd passed %d sockets, at most %zu are supported", n,
                             sizeof(fds->fd) / sizeof(fds->fd[0]));
            return MXD_EINVAL;
        }
        fds->activated = true;
        for (int i = 0; i < n; i++) {
            int fd = SD_LISTEN_FDS_START + i;

            if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
                *err = xasprintf("fd %d from systemd is not a listening stream socket", fd);
                return MXD_EINVAL;
            }
            fds->fd[fds->n++] = fd;
        }
        return 0;
    }
    if (m->conf->nlisten > sizeof(fds->fd) / sizeof(fds->fd[0])) {
        *err = xasprintf("listen: at most %zu addresses are supported",
                         sizeof(fds->fd) / sizeof(fds->fd[0]));
        return MXD_EINVAL;
    }
    for (size_t i = 0; i < m->conf->nlisten; i++) {
        int rc = smtp_listen_fd(&m->conf->listen[i], &fds->fd[fds->n], err);

        if (rc != 0)
            return rc;
        fds->n++;
    }
    return 0;
}

/* Before anything reads the network or creates files: bind, then drop. */
static int
mxd_prepare(struct mxd *m, char **err)
{
    char *warn = NULL;
    int rc = mxd_listen(m, err);

    if (rc == 0 && m->conf->user == NULL && geteuid() == 0)
        log_msg(LOG_WARN, NULL, "mxd", "running as root: set [server] user to drop privileges");
    if (rc == 0 && m->conf->user != NULL) {
        rc = privdrop_to(m->conf->user, &warn, err);
        if (warn != NULL)
            log_msg(LOG_WARN, NULL, "mxd", "%s", warn);
        else if (rc == 0)
            log_msg(LOG_INFO, NULL, "mxd", "running as user=%s uid=%u", m->conf->user,
                    (unsigned)getuid());
        free(warn);
    }
    return rc;
}

/* After the SMTP server: its hooks, callahead, the control socket and the
 * metrics endpoint. */
static int
mxd_start_services(struct mxd *m, char **err)
{
    int rc;

    smtp_server_on_queued(m->server, on_kick, m);
    smtp_server_on_hold(m->server, on_hold, m);
    smtp_server_on_etrn(m->server, on_etrn, m);
    m->callahead = callahead_new(m->loop, m->store, m->conf->hostname);
    smtp_server_set_callahead(m->server, m->callahead);
    m->rcptsync = rcptsync_new(m->loop, m->store);
    rcptsync_set_conf(m->rcptsync, m->conf);
    if (m->conf->control_socket != NULL) {
        rc = control_start(m->loop, m->conf->control_socket, m->store, m->deliver, m->server,
                           &m->control, err);
        if (rc != 0)
            return rc;
        control_on_reload(m->control, mxd_reload, m);
    }
    if (m->conf->metrics_listen.text != NULL) {
        struct sdb_params dbp = dbconf_params(m->conf);

        return metrics_http_start(m->loop, &m->conf->metrics_listen, &dbp, &m->metrics, err);
    }
    return 0;
}

static void
on_log_prepare(uv_prepare_t *h)
{
    (void)h;
    log_flush();
}

static int
mxd_start(struct mxd *m)
{
    char *err = NULL;
    char *spool = NULL;
    struct store_config scfg;
    int rc;

    uv_signal_init(m->loop, &m->sig_term);
    uv_signal_init(m->loop, &m->sig_int);
    uv_signal_init(m->loop, &m->sig_hup);
    m->sig_term.data = m->sig_int.data = m->sig_hup.data = m;
    uv_signal_start(&m->sig_term, on_signal, SIGTERM);
    uv_signal_start(&m->sig_int, on_signal, SIGINT);
    uv_signal_start(&m->sig_hup, on_signal, SIGHUP);
    uv_timer_init(m->loop, &m->status_timer);
    m->status_timer.data = m;
    uv_prepare_init(m->loop, &m->log_prepare);
    uv_prepare_start(&m->log_prepare, on_log_prepare);
    uv_unref((uv_handle_t *)&m->log_prepare);
    log_batch_begin();
    rc = mxd_prepare(m, &err);
    if (rc != 0)
        goto fail;
    scfg = (struct store_config){
        .db = dbconf_params(m->conf),
        .node_name = m->conf->node_name ? m->conf->node_name : m->conf->hostname,
        .lease_s = (int64_t)m->conf->cluster_lease_s,
    };
    scfg.db.lazy = true; /* PostgreSQL down at start: serve, answer 451, reconnect */
    rc = store_open(m->loop, &scfg, &m->store, &err);
    if (rc != 0)
        goto fail;
    store_set_hostname(m->store, m->conf->hostname);
    store_rules_set(m->store, m->conf);
    spool = spool_dir_for(m->conf->database);
    rc = spool_dir_prepare(spool, &err);
    if (rc == 0)
        rc = deliver_start(m->loop, m->conf, m->store, &m->deliver);
    if (rc == 0)
        rc = smtp_server_start(m->loop, m->conf, m->store, spool, &m->fds, &m->server, &err);
    m->fds.n = 0; /* the server has them now */
    free(spool);
    if (rc != 0)
        goto fail;
    if (m->conf->tls_certificate != NULL) {
        rc = tls_creds_load(m->conf->tls_certificate, m->conf->tls_key, m->conf->tls_priority,
                            &m->tls, &err);
        if (rc != 0)
            goto fail;
        smtp_server_set_tls(m->server, m->tls);
    }
    publish_conf_gauges(m->conf, m->tls);
    rc = mxd_start_services(m, &err);
    if (rc != 0)
        goto fail;
    if (m->conf->store == CONF_STORE_POSTGRESQL)
        log_msg(LOG_INFO, NULL, "mxd", "ready version=%s hostname=%s store=postgresql node=%s",
                MXD_VERSION, m->conf->hostname, scfg.node_name);
    else
        log_msg(LOG_INFO, NULL, "mxd", "ready version=%s hostname=%s database=%s", MXD_VERSION,
                m->conf->hostname, m->conf->database);
    /* The store is open, the scheduler has resumed the queue and the
     * listeners accept. */
    sd_notify(0, "READY=1\nSTATUS=accepting mail");
    if (getenv("NOTIFY_SOCKET") != NULL)
        uv_timer_start(&m->status_timer, on_status_timer, 0, 30 * 1000);
    return 0;
fail:
    log_msg(LOG_ERR, NULL, "mxd", "start failed: %s", err ? err : "unknown error");
    free(err);
    for (size_t i = 0; i < m->fds.n; i++)
        close(m->fds.fd[i]);
    m->fds.n = 0;
    /* Unwind what was started, through the same chain as SIGTERM. */
    m->stopping = true;
    stop_next(m);
    uv_run(m->loop, UV_RUN_DEFAULT);
    return rc;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct mxd m = {0};
    const char *path = MXD_DEFAULT_CONF;
    bool check = false;
    char *errors = NULL;
    int c;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'V':
            printf("mxd %s\n", MXD_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    log_init();
    m.conf_path = path;
    if (conf_load(path, &m.conf, &errors) != 0) {
        fprintf(stderr, "%s", errors ? errors : "mxd: cannot load configuration\n");
        if (errors && errors[0] && errors[strlen(errors) - 1] != '\n')
            fputc('\n', stderr);
        free(errors);
        return 1;
    }
    {
        char *err = NULL;

        /* libpq judges the conninfo's syntax: src/base cannot call it */
        if (dbconf_check(m.conf, &err) != 0) {
            fprintf(stderr, "%s\n", err);
            free(err);
            conf_free(m.conf);
            return 1;
        }
    }
    if (check && m.conf->tls_certificate != NULL) {
        char *err = NULL;
        char *warn = NULL;

        if (tls_creds_check(m.conf->tls_certificate, m.conf->tls_key, m.conf->tls_priority, &err,
                            &warn) != 0) {
            fprintf(stderr, "%s: %s\n", path, err);
            free(err);
            conf_free(m.conf);
            return 1;
        }
        if (warn != NULL)
            fprintf(stderr, "%s: warning: %s\n", path, warn);
        free(warn);
    }
    if (check) {
        printf("%s: configuration is valid\n", path);
        conf_free(m.conf);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    umask(027); /* the queue holds message bodies: not world-readable */
    m.loop = uv_default_loop();
    if (mxd_start(&m) != 0) {
        log_batch_end();
        conf_free(m.conf);
        return 1;
    }
    uv_run(m.loop, UV_RUN_DEFAULT);
    log_batch_end();
    if (uv_loop_close(m.loop) != 0)
        log_msg(LOG_WARN, NULL, "mxd", "loop closed with handles still open");
    tls_creds_free(m.tls);
    conf_free(m.conf);
    return 0;
}
