/* main: wires mxd together: parses the command line, loads the config,
 * opens the store, prepares the spool, starts the SMTP server and runs the
 * loop until SIGTERM/SIGINT has drained everything. Owns the process-wide
 * objects (loop, conf, store, server) and the signal handles. */
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "callahead.h"
#include "conf.h"
#include "control.h"
#include "deliver.h"
#include "log.h"
#include "smtp_net.h"
#include "spool.h"
#include "store.h"
#include "tls.h"

#define MXD_DEFAULT_CONF "/etc/mxd/mxd.conf"
#ifndef MXD_VERSION
#define MXD_VERSION "0.1.0"
#endif

struct mxd {
    uv_loop_t *loop;
    struct conf *conf;
    struct store *store;
    struct smtp_server *server;
    struct deliver *deliver;
    struct callahead *callahead;
    struct control *control;
    struct tls_creds *tls;
    uv_signal_t sig_term, sig_int, sig_hup;
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
    uv_close((uv_handle_t *)&m->sig_term, NULL);
    uv_close((uv_handle_t *)&m->sig_int, NULL);
    uv_close((uv_handle_t *)&m->sig_hup, NULL);
}

static void on_server_stopped(void *arg);
static void on_deliver_stopped(void *arg);
static void on_callahead_stopped(void *arg);

/* Shutdown order: the control socket (it uses everything else), SMTP
 * (commits in flight answered), deliveries (outcomes recorded), callahead,
 * then the store. Each stage starts the next; absent ones are skipped. */
static void
stop_next(struct mxd *m)
{
    struct store_stats st;

    if (m->control != NULL) {
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

/* SIGHUP: new certificate and key for new sessions; open sessions keep
 * theirs. A bad pair is refused and the old one stays. (Reloading the rest
 * of the configuration is not built yet.) */
static void
reload_tls(struct mxd *m)
{
    struct tls_creds *c = NULL;
    char *err = NULL;

    if (m->tls == NULL || m->server == NULL) {
        log_msg(LOG_WARN, NULL, "mxd", "SIGHUP: nothing to reload (no [tls] certificate)");
        return;
    }
    if (tls_creds_load(m->conf->tls_certificate, m->conf->tls_key, m->conf->tls_priority, &c,
                       &err) != 0) {
        log_msg(LOG_ERR, NULL, "mxd", "reload failed, keeping the old certificate: %s", err);
        free(err);
        return;
    }
    smtp_server_set_tls(m->server, c);
    tls_creds_free(m->tls);
    m->tls = c;
    log_msg(LOG_INFO, NULL, "mxd", "reload tls certificate=%s", m->conf->tls_certificate);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct mxd *m = h->data;

    if (signum == SIGHUP) {
        reload_tls(m);
        return;
    }
    if (m->stopping)
        return;
    m->stopping = true;
    log_msg(LOG_INFO, NULL, "mxd", "stopping signal=%s", signum == SIGTERM ? "TERM" : "INT");
    stop_next(m);
}

static int
mxd_start(struct mxd *m)
{
    char *err = NULL;
    char *spool = NULL;
    int rc;

    uv_signal_init(m->loop, &m->sig_term);
    uv_signal_init(m->loop, &m->sig_int);
    uv_signal_init(m->loop, &m->sig_hup);
    m->sig_term.data = m->sig_int.data = m->sig_hup.data = m;
    uv_signal_start(&m->sig_term, on_signal, SIGTERM);
    uv_signal_start(&m->sig_int, on_signal, SIGINT);
    uv_signal_start(&m->sig_hup, on_signal, SIGHUP);
    rc = store_open(m->loop, m->conf->database, &m->store, &err);
    if (rc != 0)
        goto fail;
    store_set_hostname(m->store, m->conf->hostname);
    spool = spool_dir_for(m->conf->database);
    rc = spool_dir_prepare(spool, &err);
    if (rc == 0)
        rc = deliver_start(m->loop, m->conf, m->store, &m->deliver);
    if (rc == 0)
        rc = smtp_server_start(m->loop, m->conf, m->store, spool, &m->server, &err);
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
    smtp_server_on_queued(m->server, on_kick, m);
    smtp_server_on_etrn(m->server, on_etrn, m);
    m->callahead = callahead_new(m->loop, m->store, m->conf->hostname);
    smtp_server_set_callahead(m->server, m->callahead);
    if (m->conf->control_socket != NULL) {
        rc = control_start(m->loop, m->conf->control_socket, m->store, m->deliver, m->server,
                           &m->control, &err);
        if (rc != 0)
            goto fail;
    }
    log_msg(LOG_INFO, NULL, "mxd", "ready version=%s hostname=%s database=%s", MXD_VERSION,
            m->conf->hostname, m->conf->database);
    return 0;
fail:
    log_msg(LOG_ERR, NULL, "mxd", "start failed: %s", err ? err : "unknown error");
    free(err);
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
    if (conf_load(path, &m.conf, &errors) != 0) {
        fprintf(stderr, "%s", errors ? errors : "mxd: cannot load configuration\n");
        if (errors && errors[0] && errors[strlen(errors) - 1] != '\n')
            fputc('\n', stderr);
        free(errors);
        return 1;
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
        conf_free(m.conf);
        return 1;
    }
    uv_run(m.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(m.loop) != 0)
        log_msg(LOG_WARN, NULL, "mxd", "loop closed with handles still open");
    tls_creds_free(m.tls);
    conf_free(m.conf);
    return 0;
}
