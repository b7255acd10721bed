/* callahead: owns the verification cache (address -> answer, expiry), the
 * checks waiting or in flight and the connections that ask them. A
 * connection (an lmtp_conn) says LHLO (EHLO to a primary), then MAIL
 * FROM:<>, RCPT TO and RSET per check, never DATA, and is used again for
 * the next check waiting for the same server before it says QUIT. Loop
 * thread only.
 *
 * Limits (issue 14, a directory harvest): at most callahead_max_connections
 * connections in all and callahead_max_per_client checks in flight for one
 * client address; a check over either waits in a FIFO (bounded:
 * CALLAHEAD_QUEUE_MAX, beyond which it is answered "unknown" at once, and
 * the client gets 450). A session asks one check at a time (its RCPT waits
 * for the answer), and refused recipients count toward its error limit.
 *
 * Answers are cached (positive CALLAHEAD_TTL_OK, negative CALLAHEAD_TTL_NO);
 * temporary failures are never cached. The cache is bounded: when full it
 * is emptied, which costs only repeated questions. */
#include "check/callahead.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "check/vcache.h"
#include "client/lmtp_net.h"

#define CALLAHEAD_TTL_OK    3600 /* recipients = lmtp */
#define CALLAHEAD_TTL_NO    600
#define PRIMARY_TTL_OK      (7 * 86400) /* recipients = primary: the backup must keep */
#define PRIMARY_TTL_NO      3600        /* accepting while the primary is down */
#define CALLAHEAD_MAX       50000
#define CALLAHEAD_QUEUE_MAX 1000 /* checks waiting for a connection */
#define CLIENT_MAX          64   /* a client key: an IP address as text */
#define CALLAHEAD_REUSE_MAX 100  /* checks on one connection before QUIT */

struct ca_conn;

struct ca_check {
    struct ca_check *prev, *next; /* ca->waiting, or ca->active */
    struct callahead *ca;
    callahead_cb cb;
    void *arg;
    const struct conf_endpoint *ep; /* in a conf, which outlives every check */
    bool primary;                   /* asking a backup domain's primary (SMTP) */
    char client[CLIENT_MAX];
    char *address;
    const char *rcpts[1];
    struct lmtp_txn txn;
    int code;
};

struct ca_conn {
    struct ca_conn *prev, *next;
    struct callahead *ca;
    struct lmtp_conn *conn;
    const struct conf_endpoint *ep;
    bool primary;
    struct ca_check *cur; /* the check it serves, or NULL */
    bool sent;            /* cur has been asked (else: waiting for the greeting) */
    unsigned asked;       /* checks this connection has asked */
};

struct callahead {
    uv_loop_t *loop;
    struct store *store;
    char *lhlo;
    struct lmtp_timeouts to;
    struct vcache *cache;
    struct ca_check *waiting, *waiting_tail, *active;
    size_t nwaiting;
    struct ca_conn *conns;
    unsigned nconns;
    /* the limits of the configuration the last check came with */
    unsigned max_conns, per_client;
    bool stopping;
    uv_timer_t defer; /* runs cached answers' callbacks off the caller's stack */
    struct ca_pending *ready;
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

struct ca_pending {
    struct ca_pending *next;
    callahead_cb cb;
    void *arg;
    int result;
};

static void kick(struct callahead *ca);

/* The cached answer: 1 ok, 0 refused, -1 unknown (or expired, unless
 * stale_ok). */
static int
ca_lookup(struct callahead *ca, const char *address, bool stale_ok)
{
    return vcache_get(ca->cache, address, uv_now(ca->loop), stale_ok);
}

static void
ca_store(struct callahead *ca, const char *address, bool ok, bool primary)
{
    uint64_t ttl = primary ? (ok ? PRIMARY_TTL_OK : PRIMARY_TTL_NO)
                           : (ok ? CALLAHEAD_TTL_OK : CALLAHEAD_TTL_NO);

    vcache_put(ca->cache, address, ok, uv_now(ca->loop), ttl * 1000);
}

static void
on_defer(uv_timer_t *t)
{
    struct callahead *ca = t->data;
    struct ca_pending *p = ca->ready;

    ca->ready = NULL;
    while (p != NULL) {
        struct ca_pending *next = p->next;

        p->cb(p->arg, p->result);
        free(p);
        p = next;
    }
    if (!ca->stopping)
        kick(ca);
}

/* Calls cb(arg, result) from the loop, not from the caller's stack. */
static void
ca_answer_later(struct callahead *ca, callahead_cb cb, void *arg, int result)
{
    struct ca_pending *p = xmalloc(sizeof(*p));

    p->cb = cb;
    p->arg = arg;
    p->result = result;
    p->next = ca->ready;
    ca->ready = p;
    uv_timer_start(&ca->defer, on_defer, 0, 0);
}

/* The primary cannot be asked: a backup MX must keep accepting, so the
 * last answer we had decides, however old, and an address never seen is
 * accepted (the primary refuses it later, with a DSN). */
static int
primary_fallback(struct callahead *ca, const char *address)
{
    return ca_lookup(ca, address, true) == 0 ? MXD_ENOENT : 0;
}

/* ---- the lists --------------------------------------------------------- */

static void
unlink_check(struct ca_check **head, struct ca_check *k)
{
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        *head = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
}

static void
push_front(struct ca_check **head, struct ca_check *k)
{
    k->prev = NULL;
    k->next = *head;
    if (*head != NULL)
        (*head)->prev = k;
    *head = k;
}

static void
waiting_remove(struct callahead *ca, struct ca_check *k)
{
    if (ca->waiting_tail == k)
        ca->waiting_tail = k->prev;
    unlink_check(&ca->waiting, k);
    ca->nwaiting--;
}

/* Checks of client in flight (asked on a connection). */
static unsigned
client_active(const struct callahead *ca, const char *client)
{
    unsigned n = 0;

    for (const struct ca_check *k = ca->active; k != NULL; k = k->next)
        n += strcmp(k->client, client) == 0;
    return n;
}

/* The first waiting check that may go now, optionally for one server. */
static struct ca_check *
next_waiting(struct callahead *ca, const struct ca_conn *same)
{
    for (struct ca_check *k = ca->waiting; k != NULL; k = k->next) {
        if (same != NULL && (k->ep != same->ep || k->primary != same->primary))
            continue;
        if (client_active(ca, k->client) < ca->per_client)
            return k;
    }
    return NULL;
}

/* ---- one check --------------------------------------------------------- */

/* The check has its answer (or none, for reason): cache, call back, free. */
static void
check_finish(struct ca_check *k, const char *reason)
{
    struct callahead *ca = k->ca;
    char to[600], esc[300];
    int result;

    if (k->code >= 200 && k->code < 300) {
        result = 0;
        ca_store(ca, k->address, true, k->primary);
    } else if (k->code >= 500) {
        result = MXD_ENOENT;
        ca_store(ca, k->address, false, k->primary);
    } else {
        log_msg(LOG_WARN, NULL, "callahead", "no answer to=%s reason=%s",
                log_addr(to, sizeof(to), k->address),
                reason != NULL ? log_esc(esc, sizeof(esc), reason, strlen(reason))
                               : "\"temporary failure\"");
        result = k->primary ? primary_fallback(ca, k->address) : MXD_EIO;
    }
    unlink_check(&ca->active, k);
    k->cb(k->arg, result);
    free(k->address);
    free(k);
}

/* k leaves the queue for connection cc. */
static void
check_take(struct ca_conn *cc, struct ca_check *k)
{
    struct callahead *ca = cc->ca;

    waiting_remove(ca, k);
    push_front(&ca->active, k);
    cc->cur = k;
    cc->sent = false;
}

/* ---- connections ------------------------------------------------------- */

static void
conn_ready(void *arg, struct lmtp_conn *c)
{
    struct ca_conn *cc = arg;
    struct callahead *ca = cc->ca;
    struct ca_check *k = NULL;

    if (cc->cur == NULL && !ca->stopping && cc->asked < CALLAHEAD_REUSE_MAX &&
        (k = next_waiting(ca, cc)) != NULL)
        check_take(cc, k); /* used again for the next question to this server */
    if (cc->cur == NULL || cc->sent || ca->stopping) {
        lmtp_conn_close(c); /* QUIT */
        return;
    }
    cc->sent = true;
    cc->asked++;
    lmtp_conn_deliver(c, &cc->cur->txn, 0);
}

static void
conn_rcpt(void *arg, struct lmtp_conn *c, size_t index, int code, const char *text)
{
    struct ca_conn *cc = arg;
    char to[600], esc[600];

    (void)c;
    (void)index;
    if (cc->cur == NULL)
        return;
    cc->cur->code = code;
    log_msg(LOG_INFO, NULL, "callahead", "answer to=%s reply=%s",
            log_addr(to, sizeof(to), cc->cur->address),
            log_esc(esc, sizeof(esc), text, strlen(text)));
}

static void
conn_txn_done(void *arg, struct lmtp_conn *c)
{
    struct ca_conn *cc = arg;
    struct ca_check *k = cc->cur;

    (void)c;
    cc->cur = NULL;
    if (k != NULL)
        check_finish(k, NULL); /* conn_ready follows: the next check, or QUIT */
}

/* Last step of callahead_stop: answers still queued are given, then ca
 * is freed. */
static void
on_defer_closed(uv_handle_t *h)
{
    struct callahead *ca = h->data;
    void (*cb)(void *) = ca->stop_cb;
    void *arg = ca->stop_arg;

    on_defer(&ca->defer);
    vcache_free(ca->cache);
    free(ca->lhlo);
    free(ca);
    if (cb != NULL)
        cb(arg);
}

static void
conn_closed(void *arg, struct lmtp_conn *c, const char *reason, bool ever_ready)
{
    struct ca_conn *cc = arg;
    struct callahead *ca = cc->ca;
    struct ca_check *k = cc->cur;

    (void)c;
    (void)ever_ready;
    if (cc->prev != NULL)
        cc->prev->next = cc->next;
    else
        ca->conns = cc->next;
    if (cc->next != NULL)
        cc->next->prev = cc->prev;
    ca->nconns--;
    free(cc);
    if (k != NULL)
        check_finish(k, reason); /* no answer: temporary */
    if (!ca->stopping)
        kick(ca);
    else if (ca->nconns == 0)
        uv_close((uv_handle_t *)&ca->defer, on_defer_closed);
}

static const struct lmtp_conn_cbs conn_cbs = {
    .ready = conn_ready,
    .rcpt = conn_rcpt,
    .txn_done = conn_txn_done,
    .closed = conn_closed,
};

/* Opens connections for waiting checks while the limits allow. */
static void
kick(struct callahead *ca)
{
    struct ca_check *k;

    while (ca->nconns < ca->max_conns && (k = next_waiting(ca, NULL)) != NULL) {
        struct ca_conn *cc = xcalloc(1, sizeof(*cc));

        cc->ca = ca;
        cc->ep = k->ep;
        cc->primary = k->primary;
        cc->next = ca->conns;
        if (ca->conns != NULL)
            ca->conns->prev = cc;
        ca->conns = cc;
        ca->nconns++;
        check_take(cc, k);
        cc->conn = lmtp_conn_open(ca->loop, k->ep, k->primary ? LMTP_CONN_SMTP : LMTP_CONN_LMTP,
                                  ca->lhlo, ca->store, &ca->to, NULL, &conn_cbs, cc);
    }
}

/* ---- interface --------------------------------------------------------- */

struct callahead *
callahead_new(uv_loop_t *loop, struct store *store, const char *lhlo_name)
{
    struct callahead *ca = xcalloc(1, sizeof(*ca));

    ca->loop = loop;
    ca->store = store;
    ca->lhlo = xstrdup(lhlo_name);
    ca->cache = vcache_new(CALLAHEAD_MAX);
    ca->to.connect_ms = 10 * 1000;
    ca->to.reply_ms = 30 * 1000;
    ca->to.idle_ms = 1000;
    ca->max_conns = 10;
    ca->per_client = 2;
    uv_timer_init(loop, &ca->defer);
    ca->defer.data = ca;
    return ca;
}

void
callahead_check(struct callahead *ca, const struct conf *c, const struct conf_domain *d,
                const char *address, const char *client, callahead_cb cb, void *arg)
{
    bool primary = d->recipients == CONF_RCPTS_PRIMARY;
    const struct conf_endpoint *ep = primary ? (d->nprimary > 0 ? &d->primary[0] : NULL)
                                             : (d->lmtp.text != NULL ? &d->lmtp : NULL);
    int cached = ca_lookup(ca, address, false);
    struct ca_check *k;

    if (cached >= 0 || ca->stopping || ep == NULL) {
        int r = cached == 1 ? 0 : cached == 0 ? MXD_ENOENT : MXD_EIO;

        /* primary = mx has no fixed host to ask: the cache or accept. */
        if (cached < 0 && primary)
            r = primary_fallback(ca, address);
        ca_answer_later(ca, cb, arg, r);
        return;
    }
    if (ca->nwaiting >= CALLAHEAD_QUEUE_MAX) {
        char to[600];

        log_msg(LOG_WARN, NULL, "callahead", "busy to=%s client=%s waiting=%zu",
                log_addr(to, sizeof(to), address), client, ca->nwaiting);
        ca_answer_later(ca, cb, arg, MXD_EIO);
        return;
    }
    ca->max_conns = c->callahead_max_connections;
    ca->per_client = c->callahead_max_per_client;
    k = xcalloc(1, sizeof(*k));
    k->ca = ca;
    k->cb = cb;
    k->arg = arg;
    k->ep = ep;
    k->primary = primary;
    snprintf(k->client, sizeof(k->client), "%s", client);
    k->address = xstrdup(address);
    k->rcpts[0] = k->address;
    k->txn.sender = "";
    k->txn.rcpts = k->rcpts;
    k->txn.nrcpts = 1;
    k->txn.verify_only = true;
    /* FIFO: at the tail */
    k->prev = ca->waiting_tail;
    if (ca->waiting_tail != NULL)
        ca->waiting_tail->next = k;
    else
        ca->waiting = k;
    ca->waiting_tail = k;
    ca->nwaiting++;
    /* Not now: a connection that has just answered this client's previous
     * question becomes ready right after, and takes this one. */
    uv_timer_start(&ca->defer, on_defer, 0, 0);
}

void
callahead_stop(struct callahead *ca, void (*cb)(void *arg), void *arg)
{
    ca->stopping = true;
    ca->stop_cb = cb;
    ca->stop_arg = arg;
    /* Checks still waiting are answered "unknown" (a primary's fallback). */
    while (ca->waiting != NULL) {
        struct ca_check *k = ca->waiting;

        waiting_remove(ca, k);
        ca_answer_later(ca, k->cb, k->arg, k->primary ? primary_fallback(ca, k->address) : MXD_EIO);
        free(k->address);
        free(k);
    }
    if (ca->nconns == 0) {
        uv_close((uv_handle_t *)&ca->defer, on_defer_closed);
        return;
    }
    for (struct ca_conn *cc = ca->conns; cc != NULL; cc = cc->next)
        lmtp_conn_close(cc->conn);
}
