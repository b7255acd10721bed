/* deliver: owns the delivery scheduler: the set of recipients in flight,
 * the per-destination queues and connection pools (struct dest), the jobs
 * (one message's recipients for one destination = one LMTP transaction)
 * and the wake-up timer. Loop thread only. It picks due recipients from
 * the store (never scanning the whole queue: the store uses its due index
 * and we pass what is in flight to skip), routes each to its domain's LMTP
 * server, and writes every outcome back through the store's writer before
 * forgetting the recipient, so a crash at any moment redelivers (at least
 * once) rather than loses. It does not speak LMTP (lmtp_net, lmtp_proto)
 * or compose DSNs (the store does, with the outcomes). */
#include "deliver/deliver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/metrics.h"
#include "deliver/deliver_calc.h"
#include "deliver/deliver_impl.h"

#define DELIVER_MAX_INFLIGHT 2000 /* recipients picked and not yet recorded */
#define DELIVER_PICK_MAX     500  /* recipients per store query */
#define DELIVER_STOP_GRACE   5000 /* ms deliveries in flight get at stop */

static void deliver_pick(struct deliver *d);

int64_t
deliver__now(void)
{
    return (int64_t)time(NULL);
}

/* ---- in-flight set ----------------------------------------------------- */

static void
inflight_add(struct deliver *d, int64_t id)
{
    d->inflight = xrealloc(d->inflight, (d->ninflight + 1) * sizeof(*d->inflight));
    d->inflight[d->ninflight++] = id;
}

static void
inflight_del(struct deliver *d, int64_t id)
{
    for (size_t i = 0; i < d->ninflight; i++) {
        if (d->inflight[i] == id) {
            d->inflight[i] = d->inflight[--d->ninflight];
            return;
        }
    }
}

/* ---- jobs -------------------------------------------------------------- */

static void
job_free(struct djob *j)
{
    for (size_t i = 0; i < j->nrcpts; i++) {
        free(j->addrs[i]);
        free(j->texts[i]);
        free(j->orcpt[i]);
    }
    free(j->notify);
    free(j->orcpt);
    free(j->envid);
    free(j->rcpt_ids);
    free(j->addrs);
    free(j->attempts);
    free(j->codes);
    free(j->texts);
    free(j->sender);
    free(j->relay);
    free(j->xf_addr);
    free(j->xf_helo);
    free(j->xf_name);
    free(j->xf_port);
    free(j->xf_proto);
    free(j);
}

static char *
dup_or_null(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

/* Postfix XFORWARD: sent to a primary that offers it (lmtp_proto). A
 * message made here (a DSN: no client row) is SOURCE=LOCAL. */
static void
job_xforward(struct djob *j, const struct store_dmsg *m)
{
    j->xf_addr = dup_or_null(m->client_addr);
    j->xf_helo = dup_or_null(m->helo);
    j->xf_name = dup_or_null(m->client_name);
    j->xf_port = dup_or_null(m->client_port);
    j->xf_proto = dup_or_null(m->client_proto);
    j->xf = (struct lmtp_xforward){.name = j->xf_name,
                                   .addr = j->xf_addr,
                                   .port = j->xf_port,
                                   .helo = j->xf_helo,
                                   .proto = j->xf_proto,
                                   .ident = j->qid,
                                   .local = m->client_port == NULL};
    j->txn.xforward = &j->xf;
}

static struct djob *
job_new(struct deliver *d, const struct store_dmsg *m, size_t cap)
{
    struct djob *j = xcalloc(1, sizeof(*j));

    j->d = d;
    j->msg_id = m->id;
    memcpy(j->qid, m->qid, sizeof(j->qid));
    j->received = m->received;
    j->sender = xstrdup(m->sender);
    j->rcpt_ids = xcalloc(cap, sizeof(*j->rcpt_ids));
    j->addrs = xcalloc(cap, sizeof(*j->addrs));
    j->attempts = xcalloc(cap, sizeof(*j->attempts));
    j->codes = xcalloc(cap, sizeof(*j->codes));
    j->texts = xcalloc(cap, sizeof(*j->texts));
    j->notify = xcalloc(cap, sizeof(*j->notify));
    j->orcpt = xcalloc(cap, sizeof(*j->orcpt));
    j->envid = m->envid != NULL ? xstrdup(m->envid) : NULL;
    j->txn.sender = j->sender;
    j->txn.rcpts = (const char *const *)j->addrs;
    j->txn.size = m->size;
    j->txn.body_8bit = m->body_8bit;
    j->txn.smtputf8 = m->smtputf8;
    j->txn.utf8_needed = m->utf8_needed;
    j->txn.dsn = true;
    j->txn.ret = m->ret;
    j->txn.envid = j->envid;
    j->txn.notify = j->notify;
    j->txn.orcpt = (const char *const *)j->orcpt;
    j->txn.requiretls = m->requiretls;
    job_xforward(j, m);
    return j;
}

static void
job_add_rcpt(struct djob *j, const struct store_drcpt *r)
{
    j->rcpt_ids[j->nrcpts] = r->id;
    j->addrs[j->nrcpts] = xstrdup(r->address);
    j->attempts[j->nrcpts] = r->attempts;
    j->notify[j->nrcpts] = r->notify;
    j->orcpt[j->nrcpts] = r->orcpt != NULL ? xstrdup(r->orcpt) : NULL;
    j->nrcpts++;
    j->txn.nrcpts = j->nrcpts;
}

void
deliver__job_set(struct djob *j, size_t i, int code, const char *text)
{
    if (j->codes[i] != 0)
        return;
    j->codes[i] = code;
    j->texts[i] = xstrdup(text);
}

static void
job_release(struct djob *j)
{
    struct deliver *d = j->d;

    for (size_t i = 0; i < j->nrcpts; i++)
        inflight_del(d, j->rcpt_ids[i]);
    job_free(j);
    d->pending_writes--;
    if (d->stopping)
        deliver__stop_check(d);
    else
        deliver_kick(d); /* room for more, and perhaps a DSN to send */
}

static void
on_retry_closed(uv_handle_t *h)
{
    job_release(h->data);
}

static void
on_record_retry(uv_timer_t *t)
{
    struct djob *j = t->data;

    j->d->pending_writes--;
    deliver__job_finish(j); /* the outcomes are rebuilt from codes and texts */
}

/* The outcomes are in the store: the recipients may be picked again. If
 * recording failed they stay in flight and we try again in a while, so a
 * broken store never turns into a redelivery loop. */
static void
on_recorded(void *arg, int status)
{
    struct djob *j = arg;
    struct deliver *d = j->d;

    if (status != 0 && !d->stopping) {
        log_msg(LOG_ERR, j->qid, "deliver", "cannot record outcomes: retrying in 10s");
        if (!j->retry_inited) {
            uv_timer_init(d->loop, &j->retry);
            j->retry.data = j;
            j->retry_inited = true;
        }
        uv_timer_start(&j->retry, on_record_retry, 10000, 0);
        return; /* still counted in pending_writes */
    }
    if (status != 0)
        log_msg(LOG_ERR, j->qid, "deliver", "cannot record outcomes at stop: will redeliver");
    if (j->retry_inited)
        uv_close((uv_handle_t *)&j->retry, on_retry_closed);
    else
        job_release(j);
}

static uint64_t
job_lifetime(const struct djob *j)
{
    return conf_domain_lifetime(j->d->conf, j->domain);
}

/* One recipient's outcome: 2xx delivered, 5xx bounced, 4xx deferred with
 * backoff, or bounced with 4.4.7 once the message outlived its lifetime. */
static void
outcome_fill(struct djob *j, size_t i, int64_t now, struct store_outcome *o)
{
    const struct conf *c = j->d->conf;
    int code = j->codes[i] ? j->codes[i] : 451;
    const char *text = j->texts[i] ? j->texts[i] : "451 4.4.2 no answer";
    const char *result;
    uint64_t *stat;
    char esc[600], to[600];

    o->rcpt_id = j->rcpt_ids[i];
    o->msg_id = j->msg_id;
    o->remote_mta = j->relay ? xstrdup(j->relay) : NULL;
    if (code >= 200 && code < 300) {
        o->state = STORE_RCPT_DELIVERED;
        o->last_reply = xstrdup(text);
        /* RFC 3461 4.1: into a mailbox, "delivered"; to a next hop with
         * DSN, its business; without, "relayed" */
        if (j->dest != NULL && j->dest->proto == LMTP_CONN_LMTP)
            o->success = STORE_SUCCESS_DELIVERED;
        else if (j->dest != NULL && !j->next_dsn)
            o->success = STORE_SUCCESS_RELAYED;
        result = "delivered";
        stat = &j->d->stats.delivered;
    } else if (code >= 500) {
        o->state = STORE_RCPT_BOUNCED;
        o->last_reply = xstrdup(text);
        result = "bounced";
        stat = &j->d->stats.bounced;
    } else if (now - j->received >= (int64_t)job_lifetime(j)) {
        o->state = STORE_RCPT_BOUNCED;
        o->last_reply = xasprintf("451 4.4.7 message expired in the queue; last error: %s", text);
        result = "expired";
        stat = &j->d->stats.bounced;
    } else {
        /* A backup domain's mail waits for its primary: "held". */
        o->state = j->dest != NULL && j->dest->dom != NULL ? STORE_RCPT_HELD : STORE_RCPT_DEFERRED;
        o->next_attempt = now + (int64_t)deliver_backoff(j->attempts[i] + 1, c->retry_min_s,
                                                         c->retry_max_s, (double)rand() / RAND_MAX);
        o->last_reply = xstrdup(text);
        result = o->state == STORE_RCPT_HELD ? "held" : "deferred";
        stat = &j->d->stats.deferred;
    }
    if (j->retry_inited)
        return; /* a retry of the recording: counted and logged the first time */
    (*stat)++;
    metrics_count(METRICS_F_DELIVERY_ATTEMPTS, result, j->dest ? j->dest->key : "none");
    log_msg(LOG_INFO, j->qid, "deliver", "%s to=%s relay=%s attempts=%u reply=%s", result,
            log_addr(to, sizeof(to), j->addrs[i]),
            j->relay  ? j->relay
            : j->dest ? j->dest->key
                      : "none",
            j->attempts[i] + 1, log_esc(esc, sizeof(esc), o->last_reply, strlen(o->last_reply)));
}

/* Every recipient has an outcome (or gets a temporary one now): record
 * them; the recipients leave the in-flight set once that has committed. */
void
deliver__job_finish(struct djob *j)
{
    struct deliver *d = j->d;
    struct store_outcome *o = xcalloc(j->nrcpts, sizeof(*o));
    int64_t now = deliver__now();

    for (size_t i = 0; i < j->nrcpts; i++)
        outcome_fill(j, i, now, &o[i]);
    d->pending_writes++;
    store_outcomes_async(d->store, o, j->nrcpts, on_recorded, j);
}

/* Gives every recipient without an outcome this one, then finishes. */
void
deliver__job_fail(struct djob *j, int code, const char *text)
{
    for (size_t i = 0; i < j->nrcpts; i++)
        deliver__job_set(j, i, code, text);
    deliver__job_finish(j);
}

/* A job that never reached a connection (stopping): forget it; its
 * recipients stay due in the store. */
void
deliver__job_drop(struct djob *j)
{
    for (size_t i = 0; i < j->nrcpts; i++)
        inflight_del(j->d, j->rcpt_ids[i]);
    job_free(j);
}

/* Splits one message's due recipients into one job per destination. */
static void
plan_message(struct deliver *d, const struct store_dmsg *m)
{
    struct djob **jobs = xcalloc(m->nrcpts, sizeof(*jobs));
    struct dest **dests = xcalloc(m->nrcpts, sizeof(*dests));
    size_t njobs = 0;

    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct conf_domain *dom;
        int code = 0;
        const char *text = NULL;
        struct dest *dest = deliver__route(d, m, &m->rcpts[i], &dom, &code, &text);
        size_t k;

        inflight_add(d, m->rcpts[i].id);
        /* One job per destination; the recipients decided here share one
         * job (dest NULL), so a message gets at most one DSN from them. */
        for (k = 0; k < njobs && dests[k] != dest; k++)
            ;
        if (k == njobs) {
            k = njobs++;
            jobs[k] = job_new(d, m, m->nrcpts);
            jobs[k]->dest = dests[k] = dest;
            jobs[k]->domain = dom;
        }
        job_add_rcpt(jobs[k], &m->rcpts[i]);
        if (dest == NULL)
            deliver__job_set(jobs[k], jobs[k]->nrcpts - 1, code, text);
    }
    for (size_t k = 0; k < njobs; k++) {
        if (dests[k] == NULL)
            deliver__job_finish(jobs[k]);
        else
            deliver__dest_push(dests[k], jobs[k]);
    }
    for (size_t k = 0; k < njobs; k++)
        if (dests[k] != NULL)
            deliver__dest_run(dests[k], d);
    free(jobs);
    free(dests);
}

static void
on_timer(uv_timer_t *t)
{
    deliver_pick(t->data);
}

static void
on_due(void *arg, int status, struct store_dmsg *list, int64_t next_due)
{
    struct deliver *d = arg;
    size_t n = 0;
    int64_t now = deliver__now();

    d->picking = false;
    if (d->stopping) {
        store_dmsg_free_list(list);
        deliver__stop_check(d);
        return;
    }
    if (status != 0)
        log_msg(LOG_ERR, NULL, "deliver", "cannot read the queue: will retry");
    for (struct store_dmsg *m = list; m != NULL; m = m->next) {
        n += m->nrcpts;
        plan_message(d, m);
    }
    store_dmsg_free_list(list);
    if (status != 0)
        uv_timer_start(&d->timer, on_timer, 5000, 0);
    else if (next_due > 0)
        uv_timer_start(&d->timer, on_timer, (uint64_t)(next_due > now ? next_due - now : 0) * 1000,
                       0);
    if (d->again || (status == 0 && n > 0 && n >= DELIVER_PICK_MAX)) {
        d->again = false;
        deliver_pick(d);
    }
}

static void
deliver_pick(struct deliver *d)
{
    size_t limit;

    if (d->stopping)
        return;
    if (d->picking) {
        d->again = true;
        return;
    }
    if (d->ninflight >= DELIVER_MAX_INFLIGHT)
        return; /* a finished job kicks again */
    limit = DELIVER_MAX_INFLIGHT - d->ninflight;
    if (limit > DELIVER_PICK_MAX)
        limit = DELIVER_PICK_MAX;
    d->picking = true;
    store_due_async(d->store, deliver__now(), limit, d->inflight, d->ninflight, on_due, d);
}

/* ---- public ------------------------------------------------------------ */

int
deliver_start(uv_loop_t *loop, const struct conf *conf, struct store *store, struct deliver **out)
{
    struct deliver *d = xcalloc(1, sizeof(*d));

    d->loop = loop;
    d->conf = conf;
    d->store = store;
    d->to.connect_ms = 30 * 1000;
    d->to.reply_ms = 5 * 60 * 1000; /* RFC 5321 4.5.3.2 is 10 min for the final dot */
    /* Fault tests (test_faults.py) cannot wait 5 minutes for a silent server. */
    if (getenv("MXD_TEST_REPLY_TIMEOUT_MS") != NULL)
        d->to.reply_ms = strtoull(getenv("MXD_TEST_REPLY_TIMEOUT_MS"), NULL, 10);
    d->to.idle_ms = 5 * 1000;
    /* The pool race test (test_hardening_mail.py) closes idle connections sooner. */
    if (getenv("MXD_TEST_IDLE_MS") != NULL)
        d->to.idle_ms = strtoull(getenv("MXD_TEST_IDLE_MS"), NULL, 10);
    if (deliver__tls_load(d) != 0) {
        deliver__dests_free(d);
        free(d);
        return MXD_ECONFIG;
    }
    deliver__self_load(d);
    uv_timer_init(loop, &d->timer);
    uv_timer_init(loop, &d->stop_timer);
    d->timer.data = d->stop_timer.data = d;
    d->handles_open = 2;
    srand((unsigned)time(NULL));
    *out = d;
    deliver_pick(d);
    return 0;
}

void
deliver_set_conf(struct deliver *d, const struct conf *conf)
{
    d->conf = conf;
    deliver__self_load(d); /* the listen addresses may have changed */
    /* new trust anchors for new verify domains; a failure is logged and
     * their mail deferred (dest_tls_init), never sent unverified */
    if (deliver__tls_load(d) != 0)
        log_msg(LOG_WARN, NULL, "deliver", "reload tls=incomplete");
    deliver_kick(d);
}

void
deliver_kick(struct deliver *d)
{
    deliver_pick(d);
}

void
deliver_get_stats(const struct deliver *d, struct deliver_stats *out)
{
    *out = d->stats;
    out->in_flight = d->ninflight;
}

static void
on_deliver_handle_closed(uv_handle_t *h)
{
    struct deliver *d = h->data;
    void (*cb)(void *) = d->stop_cb;
    void *arg = d->stop_arg;

    if (--d->handles_open > 0)
        return;
    deliver__dests_free(d);
    free(d->inflight);
    free(d);
    if (cb != NULL)
        cb(arg);
}

/* Done when nothing is picked, connected, looked up or being recorded. */
void
deliver__stop_check(struct deliver *d)
{
    if (d->picking || d->pending_writes > 0 || uv_is_closing((uv_handle_t *)&d->timer) ||
        !deliver__dests_idle(d))
        return;
    uv_close((uv_handle_t *)&d->timer, on_deliver_handle_closed);
    uv_close((uv_handle_t *)&d->stop_timer, on_deliver_handle_closed);
}

static void
on_stop_grace(uv_timer_t *t)
{
    deliver__dests_abort(t->data);
}

void
deliver_stop(struct deliver *d, void (*cb)(void *arg), void *arg)
{
    d->stopping = true;
    d->stop_cb = cb;
    d->stop_arg = arg;
    uv_timer_stop(&d->timer);
    deliver__dests_stop(d);
    uv_timer_start(&d->stop_timer, on_stop_grace, DELIVER_STOP_GRACE, 0);
    deliver__stop_check(d);
}

static void
on_domain_flushed(void *arg, int status)
{
    struct deliver *d = arg;

    d->pending_other--;
    if (status != 0)
        log_msg(LOG_ERR, NULL, "deliver", "cannot release held mail: will retry");
    if (d->stopping)
        deliver__stop_check(d);
    else
        deliver_kick(d);
}

void
deliver_flush_domain(struct deliver *d, const char *domain)
{
    deliver__kick_domain(d, domain);
}

/* The primary of a backup domain is back: its held mail is due now. */
void
deliver__kick_domain(struct deliver *d, const char *domain)
{
    d->pending_other++;
    store_op_async(d->store, STORE_OP_FLUSH, domain, on_domain_flushed, d);
}
