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
 * is emptied, which costs only repeated questions.
 *
 * A primary's answers (issue 18) are also kept in the store (verify_cache,
 * schema 006) for the domain's verify_positive_ttl / verify_negative_ttl,
 * so they survive restarts: an address the memory does not know is looked
 * up there before the primary is asked. An answer is fresh for
 * PRIMARY_REFRESH_OK / _NO (then the primary is asked again); while the
 * primary cannot be asked, a kept answer decides until it expires, and an
 * address without one gets MXD_EIO (450 4.1.1), Postfix's
 * unverified_recipient_tempfail_action. */
#include "check/callahead.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/metrics.h"
#include "check/vcache.h"
#include "client/lmtp_net.h"

#define CALLAHEAD_TTL_OK    3600 /* recipients = lmtp */
#define CALLAHEAD_TTL_NO    600
#define PRIMARY_REFRESH_OK  (7 * 86400) /* recipients = primary: asked again after this */
#define PRIMARY_REFRESH_NO  3600        /* (Postfix: address_verify_*_refresh_time) */
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
    uint64_t ttl_ok, ttl_no;        /* primary: how long its answers are kept, s */
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
    unsigned nloading; /* checks waiting for the store's kept answer */
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

/* Wall-clock milliseconds: a kept answer outlives the process. */
static uint64_t
wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The cached answer: 1 ok, 0 refused, -1 unknown or expired; *fresh: no
 * need to ask again. */
static int
ca_lookup(struct callahead *ca, const char *address, bool *fresh)
{
    return vcache_get(ca->cache, address, wall_ms(), fresh);
}

/* A primary's answer into the memory cache: fresh for its refresh time,
 * kept until expires (both wall-clock seconds from verified). */
static void
ca_remember(struct callahead *ca, const char *address, const struct store_verify *v)
{
    uint64_t refresh = v->ok ? PRIMARY_REFRESH_OK : PRIMARY_REFRESH_NO;

    vcache_put(ca->cache, address, v->ok, ((uint64_t)v->verified + refresh) * 1000,
               (uint64_t)v->expires * 1000);
}

static void
ca_store(struct callahead *ca, const struct ca_check *k, bool ok)
{
    uint64_t now = wall_ms();

    if (k->primary) {
        struct store_verify v = {.ok = ok, .verified = (int64_t)(now / 1000)};

        v.expires = v.verified + (int64_t)(ok ? k->ttl_ok : k->ttl_no);
        ca_remember(ca, k->address, &v);
        if (ca->store != NULL)
            store_verify_put_async(ca->store, k->address, &v);
        return;
    }
    now += (ok ? CALLAHEAD_TTL_OK : CALLAHEAD_TTL_NO) * 1000;
    vcache_put(ca->cache, k->address, ok, now, now);
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

/* The primary cannot be asked: a kept answer decides until it expires;
 * an address it never answered for gets MXD_EIO (450 4.1.1: the sender
 * retries, and the primary decides once it is back). */
static int
primary_fallback(struct callahead *ca, const char *address)
{
    int cached = ca_lookup(ca, address, NULL);

    if (cached < 0) {
        char to[600];

        metrics_count(METRICS_F_RCPT_UNSURE, "unverified", NULL);
        log_msg(LOG_WARN, NULL, "callahead", "unverified to=%s reason=\"primary cannot be asked\"",
                log_addr(to, sizeof(to), address));
        return MXD_EIO;
    }
    return cached == 1 ? 0 : MXD_ENOENT;
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
        ca_store(ca, k, true);
    } else if (k->code >= 500) {
        result = MXD_ENOENT;
        ca_store(ca, k, false);
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

/* Stopping, and nothing is out any more: close. */
static void
maybe_stopped(struct callahead *ca)
{
    if (ca->stopping && ca->nconns == 0 && ca->nloading == 0 &&
        !uv_is_closing((uv_handle_t *)&ca->defer))
        uv_close((uv_handle_t *)&ca->defer, on_defer_closed);
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
    else
        maybe_stopped(ca);
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

/* k waits for a connection, at the tail of the FIFO. */
static void
ca_enqueue(struct callahead *ca, struct ca_check *k)
{
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

static void
check_free(struct ca_check *k)
{
    free(k->address);
    free(k);
}

/* The store's kept answer for a primary's address is in (or none): it
 * decides if fresh, else the primary is asked. */
static void
on_loaded(void *arg, int status, const struct store_verify *v)
{
    struct ca_check *k = arg;
    struct callahead *ca = k->ca;
    bool fresh = false;
    int cached;

    ca->nloading--;
    if (status == 0 && v != NULL)
        ca_remember(ca, k->address, v);
    cached = ca_lookup(ca, k->address, &fresh);
    if (cached >= 0 && fresh) {
        k->cb(k->arg, cached == 1 ? 0 : MXD_ENOENT);
        check_free(k);
    } else if (ca->stopping || k->ep == NULL) {
        k->cb(k->arg, primary_fallback(ca, k->address));
        check_free(k);
    } else {
        ca_enqueue(ca, k);
    }
    maybe_stopped(ca);
}

void
callahead_check(struct callahead *ca, const struct conf *c, const struct conf_domain *d,
                const char *address, const char *client, callahead_cb cb, void *arg)
{
    bool primary = d->recipients == CONF_RCPTS_PRIMARY;
    const struct conf_endpoint *ep = primary ? (d->nprimary > 0 ? &d->primary[0] : NULL)
                                             : (d->lmtp.text != NULL ? &d->lmtp : NULL);
    bool fresh = false;
    int cached = ca_lookup(ca, address, &fresh);
    struct ca_check *k;

    if ((cached >= 0 && fresh) || ca->stopping || (ep == NULL && (!primary || cached >= 0))) {
        int r = cached == 1 ? 0 : cached == 0 ? MXD_ENOENT : MXD_EIO;

        if (!fresh && primary)
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
    k->ttl_ok = d->verify_positive_ttl_s;
    k->ttl_no = d->verify_negative_ttl_s;
    snprintf(k->client, sizeof(k->client), "%s", client);
    k->address = xstrdup(address);
    k->rcpts[0] = k->address;
    k->txn.sender = "";
    k->txn.rcpts = k->rcpts;
    k->txn.nrcpts = 1;
    k->txn.verify_only = true;
    if (primary && cached < 0 && ca->store != NULL) {
        /* Not in memory: perhaps kept from before a restart. */
        ca->nloading++;
        store_verify_get_async(ca->store, address, (int64_t)(wall_ms() / 1000), on_loaded, k);
        return;
    }
    ca_enqueue(ca, k);
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
        check_free(k);
    }
    if (ca->nconns == 0) {
        maybe_stopped(ca);
        return;
    }
    for (struct ca_conn *cc = ca->conns; cc != NULL; cc = cc->next)
        lmtp_conn_close(cc->conn);
}
