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
#include "deliver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsn.h"
#include "lmtp_net.h"
#include "log.h"

#define DELIVER_MAX_INFLIGHT 2000 /* recipients picked and not yet recorded */
#define DELIVER_PICK_MAX     500  /* recipients per store query */
#define DELIVER_STOP_GRACE   5000 /* ms deliveries in flight get at stop */

struct dest;

struct djob {
    struct djob *next;
    struct deliver *d;
    struct dest *dest; /* NULL: decided without a connection */
    int64_t msg_id;
    char qid[24];
    int64_t received;
    char *sender;
    size_t nrcpts;
    int64_t *rcpt_ids;
    char **addrs;
    unsigned *attempts;
    int *codes;   /* 0 until the outcome is known */
    char **texts; /* reply summaries */
    struct lmtp_txn txn;
    const struct conf_domain *domain;
};

struct dconn {
    struct dconn *next;
    struct dest *dest;
    struct lmtp_conn *c;
    struct djob *job;
    bool idle; /* ready for a job (LMTP session established) */
};

struct dest {
    struct dest *next;
    struct deliver *d;
    const struct conf_endpoint *ep;
    unsigned max_conns;
    unsigned nconns;
    struct dconn *conns;
    struct djob *head, **tail; /* waiting for a connection */
};

struct deliver {
    uv_loop_t *loop;
    const struct conf *conf;
    struct store *store;
    uv_timer_t timer, stop_timer;
    struct dest *dests;
    int64_t *inflight;
    size_t ninflight;
    unsigned pending_writes; /* store_outcomes_async in flight */
    bool picking, again, stopping;
    void (*stop_cb)(void *arg);
    void *stop_arg;
    unsigned handles_open;
    struct lmtp_timeouts to;
    struct deliver_stats stats;
};

static void deliver_pick(struct deliver *d);
static void dest_run(struct dest *dest, struct deliver *d);
static void stop_check(struct deliver *d);

static int64_t
now_s(void)
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
    }
    free(j->rcpt_ids);
    free(j->addrs);
    free(j->attempts);
    free(j->codes);
    free(j->texts);
    free(j->sender);
    free(j);
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
    j->txn.sender = j->sender;
    j->txn.rcpts = (const char *const *)j->addrs;
    j->txn.size = m->size;
    j->txn.body_8bit = m->body_8bit;
    j->txn.smtputf8 = m->smtputf8;
    return j;
}

static void
job_add_rcpt(struct djob *j, const struct store_drcpt *r)
{
    j->rcpt_ids[j->nrcpts] = r->id;
    j->addrs[j->nrcpts] = xstrdup(r->address);
    j->attempts[j->nrcpts] = r->attempts;
    j->nrcpts++;
    j->txn.nrcpts = j->nrcpts;
}

static void
job_set(struct djob *j, size_t i, int code, const char *text)
{
    if (j->codes[i] != 0)
        return;
    j->codes[i] = code;
    j->texts[i] = xstrdup(text);
}

static void
on_recorded(void *arg, int status)
{
    struct djob *j = arg;
    struct deliver *d = j->d;

    if (status != 0)
        log_msg(LOG_ERR, j->qid, "deliver", "cannot record outcomes: will retry later");
    for (size_t i = 0; i < j->nrcpts; i++)
        inflight_del(d, j->rcpt_ids[i]);
    job_free(j);
    d->pending_writes--;
    if (d->stopping)
        stop_check(d);
    else
        deliver_kick(d); /* room for more, and perhaps a DSN to send */
}

static uint64_t
job_lifetime(const struct djob *j)
{
    const struct conf *c = j->d->conf;

    return j->domain != NULL && j->domain->lifetime_s > 0 ? j->domain->lifetime_s : c->lifetime_s;
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
    char esc[600];

    o->rcpt_id = j->rcpt_ids[i];
    o->msg_id = j->msg_id;
    o->remote_mta = j->dest ? xstrdup(j->dest->ep->text) : NULL;
    if (code >= 200 && code < 300) {
        o->state = STORE_RCPT_DELIVERED;
        o->last_reply = xstrdup(text);
        result = "delivered";
        j->d->stats.delivered++;
    } else if (code >= 500) {
        o->state = STORE_RCPT_BOUNCED;
        o->last_reply = xstrdup(text);
        result = "bounced";
        j->d->stats.bounced++;
    } else if (now - j->received >= (int64_t)job_lifetime(j)) {
        o->state = STORE_RCPT_BOUNCED;
        o->last_reply = xasprintf("451 4.4.7 message expired in the queue; last error: %s", text);
        result = "expired";
        j->d->stats.bounced++;
    } else {
        o->state = STORE_RCPT_DEFERRED;
        o->next_attempt = now + (int64_t)deliver_backoff(j->attempts[i] + 1, c->retry_min_s,
                                                         c->retry_max_s, (double)rand() / RAND_MAX);
        o->last_reply = xstrdup(text);
        result = "deferred";
        j->d->stats.deferred++;
    }
    log_msg(LOG_INFO, j->qid, "deliver", "%s to=<%s> relay=%s attempts=%u reply=%s", result,
            j->addrs[i], j->dest ? j->dest->ep->text : "none", j->attempts[i] + 1,
            log_esc(esc, sizeof(esc), o->last_reply, strlen(o->last_reply)));
}

/* Every recipient has an outcome (or gets a temporary one now): record
 * them; the recipients leave the in-flight set once that has committed. */
static void
job_finish(struct djob *j)
{
    struct deliver *d = j->d;
    struct store_outcome *o = xcalloc(j->nrcpts, sizeof(*o));
    int64_t now = now_s();

    for (size_t i = 0; i < j->nrcpts; i++)
        outcome_fill(j, i, now, &o[i]);
    d->pending_writes++;
    store_outcomes_async(d->store, o, j->nrcpts, on_recorded, j);
}

/* Gives every recipient without an outcome this one, then finishes. */
static void
job_fail(struct djob *j, int code, const char *text)
{
    for (size_t i = 0; i < j->nrcpts; i++)
        job_set(j, i, code, text);
    job_finish(j);
}

/* A job that never reached a connection (stopping): forget it; its
 * recipients stay due in the store. */
static void
job_drop(struct djob *j)
{
    for (size_t i = 0; i < j->nrcpts; i++)
        inflight_del(j->d, j->rcpt_ids[i]);
    job_free(j);
}

/* ---- connections ------------------------------------------------------- */

static void
dest_push(struct dest *dest, struct djob *j)
{
    j->next = NULL;
    *dest->tail = j;
    dest->tail = &j->next;
}

static struct djob *
dest_pop(struct dest *dest)
{
    struct djob *j = dest->head;

    if (j != NULL) {
        dest->head = j->next;
        if (dest->head == NULL)
            dest->tail = &dest->head;
        j->next = NULL;
    }
    return j;
}

static void
conn_ready(void *arg, struct lmtp_conn *c)
{
    struct dconn *dc = arg;
    struct djob *j;

    if (dc->job != NULL)
        return;
    if (dc->dest->d->stopping) {
        lmtp_conn_close(c);
        return;
    }
    j = dest_pop(dc->dest);
    dc->idle = j == NULL;
    if (j == NULL)
        return; /* idle: the idle timeout closes it, or dest_run gives it a job */
    dc->job = j;
    lmtp_conn_deliver(c, &j->txn, j->msg_id);
}

static void
conn_rcpt(void *arg, struct lmtp_conn *c, size_t index, int code, const char *text)
{
    struct dconn *dc = arg;

    (void)c;
    if (dc->job != NULL && index < dc->job->nrcpts)
        job_set(dc->job, index, code, text);
}

static void
conn_txn_done(void *arg, struct lmtp_conn *c)
{
    struct dconn *dc = arg;
    struct djob *j = dc->job;

    (void)c;
    dc->job = NULL;
    if (j != NULL)
        job_finish(j);
}

static void
conn_closed(void *arg, struct lmtp_conn *c, const char *reason, bool ever_ready)
{
    struct dconn *dc = arg;
    struct dest *dest = dc->dest;
    struct deliver *d = dest->d;
    struct dconn **pp = &dest->conns;
    char text[400];

    (void)c;
    while (*pp != dc)
        pp = &(*pp)->next;
    *pp = dc->next;
    dest->nconns--;
    snprintf(text, sizeof(text), "451 4.4.1 %s", reason ? reason : "connection closed");
    if (dc->job != NULL)
        job_fail(dc->job, 451, text);
    free(dc);
    if (!ever_ready && reason != NULL) {
        /* The server is unreachable: everything waiting for it is deferred
         * now rather than retried in a tight loop. */
        struct djob *j;

        log_msg(LOG_WARN, NULL, "deliver", "destination unavailable relay=%s reason=\"%s\"",
                dest->ep->text, reason);
        while ((j = dest_pop(dest)) != NULL)
            job_fail(j, 451, text);
    }
    if (d->stopping)
        stop_check(d);
    else
        dest_run(dest, d);
}

static const struct lmtp_conn_cbs deliver_conn_cbs = {
    .ready = conn_ready,
    .rcpt = conn_rcpt,
    .txn_done = conn_txn_done,
    .closed = conn_closed,
};

/* Hands waiting jobs to idle connections and opens new ones while jobs
 * wait and the pool has room; a connecting one takes a job when ready. */
static void
dest_run(struct dest *dest, struct deliver *d)
{
    size_t waiting = 0;
    size_t connecting = 0;

    for (struct dconn *dc = dest->conns; dc != NULL && dest->head != NULL; dc = dc->next) {
        if (dc->idle) {
            dc->idle = false;
            dc->job = dest_pop(dest);
            lmtp_conn_deliver(dc->c, &dc->job->txn, dc->job->msg_id);
        }
    }
    for (struct djob *j = dest->head; j != NULL; j = j->next)
        waiting++;
    for (struct dconn *dc = dest->conns; dc != NULL; dc = dc->next)
        connecting += dc->job == NULL && !dc->idle;
    while (waiting > connecting && dest->nconns < dest->max_conns) {
        struct dconn *dc = xcalloc(1, sizeof(*dc));

        dc->dest = dest;
        dc->next = dest->conns;
        dest->conns = dc;
        dest->nconns++;
        d->stats.sessions++;
        connecting++;
        dc->c = lmtp_conn_open(d->loop, dest->ep, d->conf->hostname, d->store, &d->to,
                               &deliver_conn_cbs, dc);
    }
}

static struct dest *
dest_get(struct deliver *d, const struct conf_domain *dom)
{
    struct dest *dest;

    for (dest = d->dests; dest != NULL; dest = dest->next)
        if (strcmp(dest->ep->text, dom->lmtp.text) == 0)
            return dest;
    dest = xcalloc(1, sizeof(*dest));
    dest->d = d;
    dest->ep = &dom->lmtp;
    dest->max_conns = dom->lmtp_concurrency ? dom->lmtp_concurrency : 1;
    dest->tail = &dest->head;
    dest->next = d->dests;
    d->dests = dest;
    return dest;
}

/* ---- picking and routing ----------------------------------------------- */

/* Where a recipient of this message goes: a destination, or (code, text)
 * an outcome decided here. */
static struct dest *
route(struct deliver *d, const struct store_dmsg *m, const struct store_drcpt *r,
      const struct conf_domain **domp, int *code, const char **text)
{
    const struct conf_domain *dom = conf_domain_find(d->conf, r->domain, strlen(r->domain));

    *domp = dom;
    if (dom == NULL && dsn_suppressed(m->sender) && d->conf->bounce_relay.text == NULL) {
        /* A DSN to a sender outside our domains and nowhere to send it. */
        log_msg(LOG_WARN, m->qid, "deliver",
                "discard to=<%s> reason=\"DSN to a remote sender and no [queue] bounce_relay\"",
                r->address);
        *code = 550;
        *text = "550 5.4.4 DSN discarded: no bounce_relay configured for remote senders";
        return NULL;
    }
    if (dom == NULL) {
        *code = 451;
        *text = "451 4.4.0 no route: the domain is not (or no longer) configured";
        return NULL;
    }
    if (dom->mode == CONF_MODE_BACKUP) {
        *code = 451;
        *text = "451 4.4.0 backup-MX forwarding is not available yet";
        return NULL;
    }
    if (dom->lmtp.text == NULL) {
        *code = 451;
        *text = "451 4.3.5 no lmtp server configured for the domain";
        return NULL;
    }
    return dest_get(d, dom);
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
        struct dest *dest = route(d, m, &m->rcpts[i], &dom, &code, &text);
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
            job_set(jobs[k], jobs[k]->nrcpts - 1, code, text);
    }
    for (size_t k = 0; k < njobs; k++) {
        if (dests[k] == NULL)
            job_finish(jobs[k]);
        else
            dest_push(dests[k], jobs[k]);
    }
    for (size_t k = 0; k < njobs; k++)
        if (dests[k] != NULL)
            dest_run(dests[k], d);
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
    int64_t now = now_s();

    d->picking = false;
    if (d->stopping) {
        store_dmsg_free_list(list);
        stop_check(d);
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
    store_due_async(d->store, now_s(), limit, d->inflight, d->ninflight, on_due, d);
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
    d->to.idle_ms = 5 * 1000;
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
    while (d->dests != NULL) {
        struct dest *next = d->dests->next;

        free(d->dests);
        d->dests = next;
    }
    free(d->inflight);
    free(d);
    if (cb != NULL)
        cb(arg);
}

/* Done when nothing is picked, connected or being recorded. */
static void
stop_check(struct deliver *d)
{
    if (d->picking || d->pending_writes > 0 || uv_is_closing((uv_handle_t *)&d->timer))
        return;
    for (struct dest *dest = d->dests; dest != NULL; dest = dest->next)
        if (dest->nconns > 0)
            return;
    uv_close((uv_handle_t *)&d->timer, on_deliver_handle_closed);
    uv_close((uv_handle_t *)&d->stop_timer, on_deliver_handle_closed);
}

static void
on_stop_grace(uv_timer_t *t)
{
    struct deliver *d = t->data;

    for (struct dest *dest = d->dests; dest != NULL; dest = dest->next)
        for (struct dconn *dc = dest->conns; dc != NULL; dc = dc->next)
            lmtp_conn_close(dc->c);
}

void
deliver_stop(struct deliver *d, void (*cb)(void *arg), void *arg)
{
    d->stopping = true;
    d->stop_cb = cb;
    d->stop_arg = arg;
    uv_timer_stop(&d->timer);
    for (struct dest *dest = d->dests; dest != NULL; dest = dest->next) {
        struct djob *j;

        while ((j = dest_pop(dest)) != NULL)
            job_drop(j);
        for (struct dconn *dc = dest->conns; dc != NULL; dc = dc->next)
            if (dc->job == NULL)
                lmtp_conn_close(dc->c);
    }
    uv_timer_start(&d->stop_timer, on_stop_grace, DELIVER_STOP_GRACE, 0);
    stop_check(d);
}
