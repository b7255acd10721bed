/* callahead: owns the verification cache (address -> answer, expiry) and
 * the checks in flight, each an lmtp_conn that says LHLO, MAIL FROM:<>,
 * RCPT TO and RSET/QUIT, never DATA. Loop thread only. Answers are cached
 * (positive CALLAHEAD_TTL_OK, negative CALLAHEAD_TTL_NO); temporary
 * failures are never cached. The cache is bounded: when full it is
 * emptied, which costs only repeated questions. Identical questions in
 * flight at once each ask the server (rare; not worth the bookkeeping). */
#include "callahead.h"

#include <stdlib.h>
#include <string.h>

#include "lmtp_net.h"
#include "log.h"
#include "vcache.h"

#define CALLAHEAD_TTL_OK 3600 /* recipients = lmtp */
#define CALLAHEAD_TTL_NO 600
#define PRIMARY_TTL_OK   (7 * 86400) /* recipients = primary: the backup must keep */
#define PRIMARY_TTL_NO   3600        /* accepting while the primary is down */
#define CALLAHEAD_MAX    50000

struct ca_check {
    struct ca_check *prev, *next;
    struct callahead *ca;
    callahead_cb cb;
    void *arg;
    struct lmtp_conn *conn;
    char *address;
    const char *rcpts[1];
    struct lmtp_txn txn;
    int code;
    bool asked;
    bool primary; /* asking a backup domain's primary (SMTP) */
};

struct callahead {
    uv_loop_t *loop;
    struct store *store;
    char *lhlo;
    struct lmtp_timeouts to;
    struct vcache *cache;
    unsigned nchecks;
    struct ca_check *checks;
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
check_ready(void *arg, struct lmtp_conn *c)
{
    struct ca_check *k = arg;

    if (k->asked || k->ca->stopping) {
        lmtp_conn_close(c);
        return;
    }
    k->asked = true;
    lmtp_conn_deliver(c, &k->txn, 0);
}

static void
check_rcpt(void *arg, struct lmtp_conn *c, size_t index, int code, const char *text)
{
    struct ca_check *k = arg;

    (void)c;
    (void)index;
    k->code = code;
    log_msg(LOG_INFO, NULL, "callahead", "answer to=<%s> reply=\"%s\"", k->address, text);
}

static void
check_txn_done(void *arg, struct lmtp_conn *c)
{
    (void)arg;
    lmtp_conn_close(c); /* QUIT */
}

static void
check_closed(void *arg, struct lmtp_conn *c, const char *reason, bool ever_ready)
{
    struct ca_check *k = arg;
    struct callahead *ca = k->ca;
    int result;

    (void)c;
    (void)ever_ready;
    if (k->code >= 200 && k->code < 300) {
        result = 0;
        ca_store(ca, k->address, true, k->primary);
    } else if (k->code >= 500) {
        result = MXD_ENOENT;
        ca_store(ca, k->address, false, k->primary);
    } else {
        log_msg(LOG_WARN, NULL, "callahead", "no answer to=<%s> reason=\"%s\"", k->address,
                reason ? reason : "temporary failure");
        result = k->primary ? primary_fallback(ca, k->address) : MXD_EIO;
    }
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        ca->checks = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    k->cb(k->arg, result);
    free(k->address);
    free(k);
    ca->nchecks--;
    if (ca->stopping && ca->nchecks == 0)
        uv_close((uv_handle_t *)&ca->defer, on_defer_closed);
}

static const struct lmtp_conn_cbs check_cbs = {
    .ready = check_ready,
    .rcpt = check_rcpt,
    .txn_done = check_txn_done,
    .closed = check_closed,
};

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
    uv_timer_init(loop, &ca->defer);
    ca->defer.data = ca;
    return ca;
}

void
callahead_check(struct callahead *ca, const struct conf_domain *d, const char *address,
                callahead_cb cb, void *arg)
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
    k = xcalloc(1, sizeof(*k));
    k->ca = ca;
    k->cb = cb;
    k->arg = arg;
    k->primary = primary;
    k->address = xstrdup(address);
    k->rcpts[0] = k->address;
    k->txn.sender = "";
    k->txn.rcpts = k->rcpts;
    k->txn.nrcpts = 1;
    k->txn.verify_only = true;
    ca->nchecks++;
    k->next = ca->checks;
    if (ca->checks != NULL)
        ca->checks->prev = k;
    ca->checks = k;
    /* ep lives in the conf, which outlives every check. */
    k->conn = lmtp_conn_open(ca->loop, ep, primary ? LMTP_CONN_SMTP : LMTP_CONN_LMTP, ca->lhlo,
                             ca->store, &ca->to, NULL, &check_cbs, k);
}

void
callahead_stop(struct callahead *ca, void (*cb)(void *arg), void *arg)
{
    ca->stopping = true;
    ca->stop_cb = cb;
    ca->stop_arg = arg;
    if (ca->nchecks == 0) {
        uv_close((uv_handle_t *)&ca->defer, on_defer_closed);
        return;
    }
    for (struct ca_check *k = ca->checks; k != NULL; k = k->next)
        lmtp_conn_close(k->conn);
}
