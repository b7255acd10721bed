/* control: owns the control socket (a uv_pipe_t listening on a unix socket,
 * mode 0600, and the socket file itself) and one struct control_client per
 * mxctl connection: its uv_pipe_t, its uv_timer_t and the reply being
 * written. Loop thread only. One request line in, one JSON line out, then
 * close; a client that sends nothing useful within CONTROL_TIMEOUT_MS is
 * dropped. State changes go to the store (store_op_async); the store's
 * answer becomes the reply. A client is freed only when both handles are
 * closed and no store job refers to it (`refs`), so a completion for a
 * client that went away finds live memory; control_stop likewise waits for
 * those completions before it calls back.
 *
 * Errors: control_start returns 0, a UV_E* or MXD_E*, with *err. Requests
 * never fail the daemon: a bad request gets code 2, an unknown queue id or
 * a store failure code 1.
 *
 * Does not: authenticate (the socket's mode and directory do that), read
 * the queue (mxctl reads the database itself), or keep a connection open for
 * a second request. */
#include "ops/control.h"

#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/metrics.h"
#include "deliver/deliver.h"
#include "smtp/smtp_net.h"
#include "store/store.h"

#define CONTROL_LINE_MAX   1024 /* octets of a request line, without the LF */
#define CONTROL_TIMEOUT_MS 10000
#define CONTROL_QID_MAX    23 /* struct store_msg's qid[24] */
#define CONTROL_DOMAIN_MAX 255

/* Reply codes (the "code" member). */
#define CONTROL_REFUSED 1
#define CONTROL_BAD     2

struct control_client {
    struct control_client *prev, *next; /* in ctl->clients until closing */
    struct control *ctl;
    uv_pipe_t pipe;
    uv_timer_t timer;
    uv_write_t wreq;
    char *out;     /* the reply line while it is written (owned) */
    unsigned refs; /* open handles + a pending store job */
    bool closing;
    bool answered; /* the request was taken; nothing more is read */
    enum store_op op;
    bool kick;       /* deliver_kick when the op succeeds */
    const char *arg; /* points into in[]; kept for the completion's log line */
    size_t len;
    char in[CONTROL_LINE_MAX + 1];
};

struct control {
    /* read-only after start */
    uv_loop_t *loop;
    char *path;
    struct store *store;
    struct deliver *deliver;    /* may be NULL: no kicks, zero counters */
    struct smtp_server *server; /* may be NULL: zero counters */
    int64_t started;            /* unix seconds */
    int (*reload_cb)(void *arg, char **err);
    void *reload_arg;
    /* private */
    uv_pipe_t pipe;
    bool listening; /* pipe initialised and not yet closed */
    bool bound;     /* the socket file is ours to unlink */
    bool stopping;
    struct control_client *clients;
    size_t nclients; /* allocated, including closing ones */
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

/* What a verb takes and does. */
enum control_argk { CONTROL_ARG_NONE, CONTROL_ARG_DOMAIN, CONTROL_ARG_QID };

struct control_verb {
    const char *name;
    enum control_argk argk;
    bool stats;       /* answered at once, no store job */
    bool reload;      /* answered at once by the reload callback */
    enum store_op op; /* otherwise */
    bool kick;        /* deliver_kick after success */
    bool tls_policy;  /* answered by deliver_tls_report_async */
};

static const struct control_verb control_verbs[] = {
    {"flush", CONTROL_ARG_DOMAIN, false, false, STORE_OP_FLUSH, true, false},
    {"hold", CONTROL_ARG_QID, false, false, STORE_OP_HOLD, false, false},
    {"release", CONTROL_ARG_QID, false, false, STORE_OP_RELEASE, true, false},
    {"delete", CONTROL_ARG_QID, false, false, STORE_OP_DELETE, false, false},
    {"bounce", CONTROL_ARG_QID, false, false, STORE_OP_BOUNCE, true, false},
    {"stats", CONTROL_ARG_NONE, true, false, STORE_OP_FLUSH, false, false},
    {"reload", CONTROL_ARG_NONE, false, true, STORE_OP_FLUSH, false, false},
    {"tls-policy", CONTROL_ARG_DOMAIN, false, false, STORE_OP_FLUSH, false, true},
};

static const char *const control_op_names[] = {
    [STORE_OP_FLUSH] = "flush",   [STORE_OP_HOLD] = "hold",     [STORE_OP_RELEASE] = "release",
    [STORE_OP_DELETE] = "delete", [STORE_OP_BOUNCE] = "bounce",
};

static void
control_maybe_done(struct control *ctl)
{
    void (*cb)(void *) = ctl->stop_cb;
    void *arg = ctl->stop_arg;

    if (!ctl->stopping || ctl->listening || ctl->nclients > 0 || cb == NULL)
        return;
    ctl->stop_cb = NULL;
    free(ctl->path);
    free(ctl);
    cb(arg);
}

/* ---- one client --------------------------------------------------------- */

static void
client_unref(struct control_client *c)
{
    struct control *ctl = c->ctl;

    if (--c->refs > 0)
        return;
    free(c->out);
    free(c);
    ctl->nclients--;
    control_maybe_done(ctl);
}

static void
on_client_handle_closed(uv_handle_t *h)
{
    client_unref(h->data);
}

static void
client_close(struct control_client *c)
{
    struct control *ctl = c->ctl;

    if (c->closing)
        return;
    c->closing = true;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        ctl->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    uv_close((uv_handle_t *)&c->pipe, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
}

static void
on_client_timeout(uv_timer_t *t)
{
    struct control_client *c = t->data;

    log_msg(LOG_INFO, NULL, "control", "client timeout");
    client_close(c);
}

static void
on_reply_written(uv_write_t *req, int status)
{
    struct control_client *c = req->data;

    (void)status; /* either way the exchange is over */
    client_close(c);
}

/* Sends obj (reference taken) as one line, then closes. */
static void
client_reply(struct control_client *c, json_t *obj)
{
    char *text;
    uv_buf_t buf;
    int rc;

    if (obj == NULL)
        mxd_panic("control: cannot build a reply");
    text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (text == NULL)
        mxd_panic("control: cannot serialise a reply");
    c->out = xasprintf("%s\n", text);
    free(text);
    buf = uv_buf_init(c->out, (unsigned)strlen(c->out));
    c->wreq.data = c;
    rc = uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &buf, 1, on_reply_written);
    if (rc != 0)
        client_close(c);
}

static void
client_error(struct control_client *c, int code, const char *error)
{
    client_reply(c, json_pack("{s:b, s:s, s:i}", "ok", 0, "error", error, "code", code));
}

/* ---- requests ----------------------------------------------------------- */

/* The metrics exposition as {"series": value}: what the metrics endpoint
 * serves, without the queue gauges (mxctl reads those itself). */
static json_t *
control_metrics(void)
{
    char *text = metrics_render(NULL);
    json_t *obj = json_object();
    char *save = NULL;

    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *sp = strrchr(line, ' ');

        if (line[0] == '#' || sp == NULL)
            continue;
        *sp++ = '\0';
        if (strpbrk(sp, ".eE") != NULL)
            json_object_set_new(obj, line, json_real(strtod(sp, NULL)));
        else
            json_object_set_new(obj, line, json_integer(strtoll(sp, NULL, 10)));
    }
    free(text);
    return obj;
}

static json_t *
control_stats(const struct control *ctl)
{
    struct smtp_server_stats ss = {0};
    struct store_stats st = {0};
    struct deliver_stats ds = {0};

    if (ctl->server != NULL)
        smtp_server_get_stats(ctl->server, &ss);
    store_get_stats(ctl->store, &st);
    if (ctl->deliver != NULL)
        deliver_get_stats(ctl->deliver, &ds);
    return json_pack("{s:b, s:{s:I, s:I, s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I}, "
                     "s:{s:I, s:I, s:I, s:I, s:I}, s:o}}",
                     "ok", 1, "stats", "started", (json_int_t)ctl->started, "uptime",
                     (json_int_t)(time(NULL) - ctl->started), "smtp", "connections_total",
                     (json_int_t)ss.connections_total, "connections_open",
                     (json_int_t)ss.connections_open, "messages_accepted",
                     (json_int_t)ss.messages_accepted, "bytes_accepted",
                     (json_int_t)ss.bytes_accepted, "store", "commits", (json_int_t)st.commits,
                     "failures", (json_int_t)st.failures, "batches", (json_int_t)st.batches,
                     "max_batch", (json_int_t)st.max_batch, "deliver", "delivered",
                     (json_int_t)ds.delivered, "deferred", (json_int_t)ds.deferred, "bounced",
                     (json_int_t)ds.bounced, "sessions", (json_int_t)ds.sessions, "in_flight",
                     (json_int_t)ds.in_flight, "metrics", control_metrics());
}

static void
control_reload(struct control_client *c)
{
    struct control *ctl = c->ctl;
    char *err = NULL;

    log_msg(LOG_INFO, NULL, "control", "reload");
    if (ctl->reload_cb == NULL) {
        client_error(c, CONTROL_REFUSED, "reload is not available");
    } else if (ctl->reload_cb(ctl->reload_arg, &err) != 0) {
        client_error(c, CONTROL_REFUSED, err != NULL ? err : "reload failed");
    } else {
        client_reply(c, json_pack("{s:b}", "ok", 1));
    }
    free(err);
}

static void
op_reply(struct control_client *c, int status)
{
    if (status == 0)
        client_reply(c, json_pack("{s:b}", "ok", 1));
    else if (status == MXD_ENOENT)
        client_error(c, CONTROL_REFUSED, "no such message");
    else if (status == MXD_ECLOSING)
        client_error(c, CONTROL_REFUSED, "mxd is shutting down");
    else
        client_error(c, CONTROL_REFUSED, "store error");
}

static void
on_op_done(void *arg, int status)
{
    struct control_client *c = arg;
    struct control *ctl = c->ctl;
    enum log_level level = status == 0 || status == MXD_ENOENT ? LOG_INFO : LOG_WARN;
    const char *result = status == 0 ? "ok" : status == MXD_ENOENT ? "unknown" : "failed";
    char dbuf[CONTROL_DOMAIN_MAX * 4 + 8];

    if (c->op == STORE_OP_FLUSH)
        log_msg(level, NULL, "control", "flush domain=%s result=%s",
                c->arg != NULL ? log_esc(dbuf, sizeof(dbuf), c->arg, strlen(c->arg)) : "*", result);
    else
        log_msg(level, c->arg, "control", "%s result=%s", control_op_names[c->op], result);
    if (status == 0 && c->kick && !ctl->stopping && ctl->deliver != NULL)
        deliver_kick(ctl->deliver); /* new mail (a DSN) or mail due now */
    /* A client that went away meanwhile has only this reference left. */
    if (!c->closing)
        op_reply(c, status);
    client_unref(c); /* the job's reference */
}

/* Printable ASCII only: queue ids and domains are never anything else. */
static bool
arg_valid(const char *arg, enum control_argk k)
{
    size_t n = strlen(arg);

    if (n == 0 || n > (k == CONTROL_ARG_QID ? CONTROL_QID_MAX : CONTROL_DOMAIN_MAX))
        return false;
    for (const unsigned char *p = (const unsigned char *)arg; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    }
    return true;
}

/* Splits line in place into at most three space-separated words. */
static size_t
split_words(char *line, char *words[3])
{
    size_t n = 0;
    char *p = line;

    while (*p != '\0') {
        while (*p == ' ' || *p == '\t')
            *p++ = '\0';
        if (*p == '\0')
            break;
        if (n == 3)
            return 4; /* too many */
        words[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
    }
    return n;
}

/* The reply to a malformed request, or NULL when it is well-formed and *vp
 * is its verb. */
static const char *
request_parse(char *line, const struct control_verb **vp, char **arg)
{
    char *words[3] = {NULL, NULL, NULL};
    size_t n = split_words(line, words);
    const struct control_verb *v = NULL;

    for (size_t i = 0; n > 0 && i < sizeof(control_verbs) / sizeof(control_verbs[0]); i++) {
        if (strcmp(words[0], control_verbs[i].name) == 0)
            v = &control_verbs[i];
    }
    if (v == NULL)
        return n == 0 ? "empty request" : "unknown command";
    if (n > 2 || (n == 2 && v->argk == CONTROL_ARG_NONE) ||
        (n == 1 && (v->argk == CONTROL_ARG_QID || v->tls_policy)))
        return "wrong number of arguments";
    if (n == 2 && !arg_valid(words[1], v->argk))
        return v->argk == CONTROL_ARG_QID ? "invalid queue id" : "invalid domain";
    if (n == 2 && v->argk == CONTROL_ARG_DOMAIN) {
        for (char *p = words[1]; *p != '\0'; p++)
            *p = ascii_lower(*p); /* message_rcpts.domain is lower case */
    }
    *vp = v;
    *arg = words[1];
    return NULL;
}

/* `tls-policy DOMAIN`: the report as JSON. */
static void
on_tls_report(void *arg, struct deliver_tls_report *r)
{
    struct control_client *c = arg;
    json_t *hops = json_array();

    for (size_t i = 0; i < r->nhops; i++) {
        const struct deliver_tls_hop *h = &r->hops[i];

        json_array_append_new(hops, json_pack("{s:s, s:i, s:s, s:I, s:I, s:s}", "host", h->host,
                                              "port", (int)h->port, "tlsa", h->state, "records",
                                              (json_int_t)h->records, "usable",
                                              (json_int_t)h->usable, "why", h->why));
    }
    log_msg(LOG_INFO, NULL, "control", "tls-policy domain=%s policy=%s", r->domain, r->policy);
    if (!c->closing)
        client_reply(c, json_pack("{s:b, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s}}",
                                  "ok", 1, "tls_policy", "domain", r->domain, "role", r->role,
                                  "policy", r->policy, "source", r->source, "next_hop", r->next_hop,
                                  "mx_dnssec", r->mx, "hops", hops, "applies", r->applies,
                                  "requiretls", r->requiretls, "mta_sts", r->mta_sts));
    else
        json_decref(hops);
    free(r);
    client_unref(c); /* the lookup's reference */
}

static void
client_request(struct control_client *c, char *line)
{
    struct control *ctl = c->ctl;
    const struct control_verb *v = NULL;
    char *arg = NULL;
    const char *bad = request_parse(line, &v, &arg);

    if (bad != NULL) {
        log_msg(LOG_INFO, NULL, "control", "bad request reason=\"%s\"", bad);
        client_error(c, CONTROL_BAD, bad);
    } else if (v->stats) {
        client_reply(c, control_stats(ctl));
    } else if (v->reload) {
        control_reload(c);
    } else if (v->tls_policy && (ctl->deliver == NULL || ctl->stopping)) {
        client_error(c, CONTROL_REFUSED, "delivery is not running");
    } else if (v->tls_policy) {
        c->refs++;
        deliver_tls_report_async(ctl->deliver, arg, on_tls_report, c);
    } else {
        c->op = v->op;
        c->kick = v->kick;
        c->arg = arg; /* in c->in[], alive until on_op_done */
        c->refs++;
        store_op_async(ctl->store, v->op, arg, on_op_done, c);
    }
}

/* A whole line is in c->in[0..c->len): take it. */
static void
client_line(struct control_client *c)
{
    char *line = c->in;
    size_t len = c->len;

    c->answered = true;
    uv_read_stop((uv_stream_t *)&c->pipe);
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    line[len] = '\0';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];

        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            client_error(c, CONTROL_BAD, "control character in request");
            return;
        }
    }
    client_request(c, line);
}

static void
on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct control_client *c = h->data;

    (void)suggested;
    *buf = uv_buf_init(c->in + c->len, (unsigned)(sizeof(c->in) - c->len));
}

static void
on_client_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct control_client *c = stream->data;
    char *lf;

    (void)buf;
    if (c->closing || c->answered || nread == 0)
        return;
    if (nread < 0) {
        /* EOF after a line without its LF: take it as the request. */
        if (nread == UV_EOF && c->len > 0)
            client_line(c);
        else
            client_close(c);
        return;
    }
    lf = memchr(c->in + c->len, '\n', (size_t)nread);
    c->len += (size_t)nread;
    if (lf != NULL) {
        c->len = (size_t)(lf - c->in) + 1; /* anything after the LF is ignored */
        client_line(c);
    } else if (c->len == sizeof(c->in)) {
        c->answered = true;
        uv_read_stop(stream);
        client_error(c, CONTROL_BAD, "request line too long");
    }
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct control *ctl = server->data;
    struct control_client *c;
    int rc;

    if (status < 0) {
        log_msg(LOG_WARN, NULL, "control", "accept failed reason=%s", uv_strerror(status));
        return;
    }
    c = xcalloc(1, sizeof(*c));
    c->ctl = ctl;
    ctl->nclients++;
    c->next = ctl->clients;
    if (ctl->clients != NULL)
        ctl->clients->prev = c;
    ctl->clients = c;
    uv_pipe_init(ctl->loop, &c->pipe, 0);
    uv_timer_init(ctl->loop, &c->timer);
    c->pipe.data = c->timer.data = c;
    c->refs = 2;
    rc = uv_accept(server, (uv_stream_t *)&c->pipe);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&c->pipe, on_client_alloc, on_client_read);
    if (rc == 0)
        rc = uv_timer_start(&c->timer, on_client_timeout, CONTROL_TIMEOUT_MS, 0);
    if (rc != 0) {
        log_msg(LOG_WARN, NULL, "control", "accept failed reason=%s", uv_strerror(rc));
        client_close(c);
    }
}

/* ---- the listener ------------------------------------------------------- */

/* An old socket file (a previous run's) is removed; anything else there is
 * left alone and refused. */
static int
remove_stale(const char *path, char **err)
{
    struct stat sb;

    if (lstat(path, &sb) != 0) {
        if (errno == ENOENT)
            return 0;
        *err = xasprintf("control socket %s: %s", path, strerror(errno));
        return MXD_EIO;
    }
    if (!S_ISSOCK(sb.st_mode)) {
        *err = xasprintf("control socket %s: exists and is not a socket", path);
        return MXD_EINVAL;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        *err =
            xasprintf("control socket %s: cannot remove the old socket: %s", path, strerror(errno));
        return MXD_EIO;
    }
    return 0;
}

/* Binds with umask 0177 so the socket is never reachable by group or others,
 * not even for the moment before chmod; chmod makes the mode exact. */
static int
bind_private(struct control *ctl, char **err)
{
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&ctl->pipe, ctl->path);

    umask(old);
    if (rc != 0) {
        *err = xasprintf("control socket %s: bind: %s", ctl->path, uv_strerror(rc));
        return rc;
    }
    ctl->bound = true;
    if (chmod(ctl->path, 0600) != 0) {
        *err = xasprintf("control socket %s: chmod: %s", ctl->path, strerror(errno));
        return MXD_EIO;
    }
    rc = uv_listen((uv_stream_t *)&ctl->pipe, 16, on_connection);
    if (rc != 0)
        *err = xasprintf("control socket %s: listen: %s", ctl->path, uv_strerror(rc));
    return rc;
}

int
control_start(uv_loop_t *loop, const char *path, struct store *store, struct deliver *deliver,
              struct smtp_server *server, struct control **out, char **err)
{
    struct sockaddr_un sun;
    struct control *ctl;
    int rc;

    *out = NULL;
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(sun.sun_path)) {
        *err = xasprintf("control socket path %s: empty or longer than %zu octets",
                         path ? path : "(null)", sizeof(sun.sun_path) - 1);
        return MXD_EINVAL;
    }
    rc = remove_stale(path, err);
    if (rc != 0)
        return rc;
    ctl = xcalloc(1, sizeof(*ctl));
    ctl->loop = loop;
    ctl->path = xstrdup(path);
    ctl->store = store;
    ctl->deliver = deliver;
    ctl->server = server;
    ctl->started = (int64_t)time(NULL);
    rc = uv_pipe_init(loop, &ctl->pipe, 0);
    if (rc != 0) {
        *err = xasprintf("control socket %s: %s", path, uv_strerror(rc));
        free(ctl->path);
        free(ctl);
        return rc;
    }
    ctl->pipe.data = ctl;
    ctl->listening = true;
    rc = bind_private(ctl, err);
    if (rc != 0) {
        control_stop(ctl, NULL, NULL); /* frees ctl once the pipe is closed */
        return rc;
    }
    log_msg(LOG_INFO, NULL, "control", "listening path=%s", path);
    *out = ctl;
    return 0;
}

static void
on_listener_closed(uv_handle_t *h)
{
    struct control *ctl = h->data;

    ctl->listening = false;
    control_maybe_done(ctl);
}

static void
noop_done(void *arg)
{
    (void)arg;
}

void
control_on_reload(struct control *c, int (*cb)(void *arg, char **err), void *arg)
{
    c->reload_cb = cb;
    c->reload_arg = arg;
}

void
control_stop(struct control *ctl, void (*cb)(void *arg), void *arg)
{
    if (ctl->stopping)
        return;
    ctl->stopping = true;
    ctl->stop_cb = cb != NULL ? cb : noop_done;
    ctl->stop_arg = arg;
    if (ctl->bound && unlink(ctl->path) != 0 && errno != ENOENT)
        log_msg(LOG_WARN, NULL, "control", "cannot remove path=%s reason=\"%s\"", ctl->path,
                strerror(errno));
    ctl->bound = false;
    /* Closing clients may free them: walk with the next pointer saved. */
    for (struct control_client *c = ctl->clients, *next; c != NULL; c = next) {
        next = c->next;
        client_close(c);
    }
    uv_close((uv_handle_t *)&ctl->pipe, on_listener_closed);
}
