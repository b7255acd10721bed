/* deliver_dest: owns the destinations (struct dest) and their connections
 * (struct dconn): LMTP servers for local domains, the primaries of backup
 * domains (a configured list tried in order, or MX hosts looked up in DNS
 * and filtered so we never forward to ourselves or a worse MX), and the
 * bounce relay. Also the primary watcher: while a backup domain has held
 * mail, it probes the primary (connect, EHLO, QUIT) at an interval that
 * backs off, and the first success releases the domain's held mail, paced
 * (issue 18): slow start from 2 connections, growing by one per message
 * the primary accepted up to the destination's limit, halved on a 4xx, a
 * 421 or a failed connection (deliver_calc), and at most the domain's
 * release_rate messages a second. Loop
 * thread only. It decides nothing about outcomes beyond "unreachable":
 * replies go back to the jobs (deliver.c). */
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "deliver/deliver_impl.h"
#include "msg/dsn.h"

#define WATCH_MIN_MS 1000  /* first probe after a failure */
#define WATCH_MAX_MS 15000 /* probes back off to this */
#define MX_CACHE_MS  60000 /* MX answers are reused this long */

void
deliver__dest_push(struct dest *dest, struct djob *j)
{
    j->next = NULL;
    *dest->tail = j;
    dest->tail = &j->next;
}

struct djob *
deliver__dest_pop(struct dest *dest)
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

/* Every waiting job gets this outcome now. */
static void
dest_fail_waiting(struct dest *dest, int code, const char *text)
{
    struct djob *j;

    while ((j = deliver__dest_pop(dest)) != NULL)
        deliver__job_fail(j, code, text);
}

/* ---- pacing (backup domains) ------------------------------------------- */

static void
on_pace(uv_timer_t *t)
{
    struct dest *dest = t->data;

    if (!dest->d->stopping)
        deliver__dest_run(dest, dest->d);
}

/* The connections this destination may have now. */
static unsigned
dest_limit(const struct dest *dest)
{
    return dest->dom != NULL ? deliver_pace_limit(&dest->pace, dest->max_conns) : dest->max_conns;
}

/* The next waiting job, or NULL: none waits, or release_rate says not yet
 * (then a timer runs the destination again when one may start). */
static struct djob *
dest_take(struct dest *dest)
{
    uint64_t wait;

    if (dest->head == NULL)
        return NULL;
    if (dest->dom == NULL || dest->dom->release_rate == 0)
        return deliver__dest_pop(dest);
    wait = deliver_pace_rate(&dest->pace, dest->dom->release_rate, uv_now(dest->d->loop) * 1000);
    if (wait == 0)
        return deliver__dest_pop(dest);
    if (!dest->pace_inited) {
        uv_timer_init(dest->d->loop, &dest->pace_timer);
        dest->pace_timer.data = dest;
        dest->pace_inited = true;
    }
    if (!uv_is_active((uv_handle_t *)&dest->pace_timer))
        uv_timer_start(&dest->pace_timer, on_pace, (wait + 999) / 1000, 0);
    return NULL;
}

/* What a finished transaction says about the primary's load. */
static void
pace_outcome(struct dest *dest, const struct djob *j)
{
    bool accepted = false, temp = false;

    if (dest->dom == NULL)
        return;
    for (size_t i = 0; i < j->nrcpts; i++) {
        accepted |= j->codes[i] / 100 == 2;
        temp |= j->codes[i] / 100 == 4;
    }
    if (accepted) {
        unsigned before = dest_limit(dest);

        deliver_pace_accepted(&dest->pace, dest->max_conns);
        /* the window grew: open the connection it allows if mail waits */
        if (dest_limit(dest) > before && !dest->d->stopping)
            deliver__dest_run(dest, dest->d);
    } else if (temp) {
        deliver_pace_backoff(&dest->pace);
    }
}

/* ---- connections ------------------------------------------------------- */

static void
conn_ready(void *arg, struct lmtp_conn *c)
{
    struct dconn *dc = arg;
    struct dest *dest = dc->dest;
    struct djob *j;

    if (dc->probe) {
        /* The primary answers: release the domain's held mail. */
        log_msg(LOG_INFO, NULL, "deliver", "primary reachable domain=%s relay=%s", dest->dom->name,
                dest->eps[dc->ep].text);
        dest->watching = false;
        uv_timer_stop(&dest->watch);
        dest->ep_idx = dc->ep;
        deliver_pace_init(&dest->pace); /* slow start again */
        lmtp_conn_close(c);
        deliver__kick_domain(dest->d, dest->dom->name);
        return;
    }
    if (dc->job != NULL)
        return;
    if (dest->d->stopping) {
        lmtp_conn_close(c);
        return;
    }
    if (dest->dom != NULL && dest->nconns > dest_limit(dest)) {
        /* the window shrank (a 4xx, 421, failed connection): one fewer;
         * nconns counts closing connections and the watcher's probe too,
         * as the primary does */
        dc->closing = true;
        lmtp_conn_close(c);
        return;
    }
    j = dest_take(dest);
    dc->idle = j == NULL;
    if (j == NULL)
        return; /* idle: the idle timeout closes it, or dest_run gives it a job */
    dc->job = j;
    free(j->relay);
    j->relay = xstrdup(dest->eps[dc->ep].text);
    lmtp_conn_deliver(c, &j->txn, j->msg_id);
}

static void
conn_rcpt(void *arg, struct lmtp_conn *c, size_t index, int code, const char *text)
{
    struct dconn *dc = arg;

    if (dc->job != NULL && index < dc->job->nrcpts) {
        dc->job->next_dsn = lmtp_conn_dsn(c);
        deliver__job_set(dc->job, index, code, text);
    }
}

static void
conn_txn_done(void *arg, struct lmtp_conn *c)
{
    struct dconn *dc = arg;
    struct djob *j = dc->job;

    (void)c;
    dc->job = NULL;
    if (j != NULL) {
        pace_outcome(dc->dest, j);
        deliver__job_finish(j);
    }
}

/* The reply recorded for a connection's failure: the reason's own
 * enhanced status code when it starts with one ("4.7.4 TLS required..."),
 * else 4.4.1 (no answer from host). */
static void
defer_text(char *buf, size_t size, const char *reason)
{
    if (reason[0] == '4' && reason[1] == '.' && strchr(reason, ' ') != NULL &&
        strspn(reason, "0123456789.") == (size_t)(strchr(reason, ' ') - reason))
        snprintf(buf, size, "451 %s", reason);
    else
        snprintf(buf, size, "451 4.4.1 %s", reason);
}

/* A connection that never got through: try the next endpoint, or, when
 * every one failed, defer (or hold) what waits and watch the primary. */
void
deliver__dest_unreachable(struct dest *dest, size_t ep, const char *reason)
{
    char text[400], esc[500];

    if (ep == dest->ep_idx && dest->ep_idx + 1 < dest->neps) {
        dest->ep_idx++;
        return; /* dest_run connects to the next one */
    }
    dest->ep_idx = 0;
    if (dest->mx)
        dest->resolved_ms = 0; /* look the MX hosts up again next time */
    defer_text(text, sizeof(text), reason);
    log_msg(LOG_WARN, NULL, "deliver", "destination unavailable relay=%s reason=%s", dest->key,
            log_esc(esc, sizeof(esc), reason, strlen(reason)));
    dest_fail_waiting(dest, 451, text);
    if (dest->dom != NULL) {
        snprintf(dest->down_text, sizeof(dest->down_text), "%s", text);
        dest->down_ms = uv_now(dest->d->loop);
        deliver__watch(dest);
    }
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
    defer_text(text, sizeof(text), reason ? reason : "connection closed");
    if (dest->dom != NULL && !dc->probe && (dc->job != NULL || (!ever_ready && reason != NULL)))
        deliver_pace_backoff(&dest->pace); /* lost mid-transaction (421), or never got through */
    if (dc->job != NULL)
        deliver__job_fail(dc->job, 451, text);
    if (dc->probe && !ever_ready) {
        /* Still down: try the next primary at the next probe. */
        dest->ep_idx = dest->neps > 0 ? (dc->ep + 1) % dest->neps : 0;
        deliver__watch(dest);
    } else if (!ever_ready && reason != NULL)
        deliver__dest_unreachable(dest, dc->ep, reason);
    free(dc);
    if (d->stopping)
        deliver__stop_check(d);
    else
        deliver__dest_run(dest, d);
}

/* Keeps the newest TLS session per destination, for its endpoint. */
static void
conn_tls_session(void *arg, struct lmtp_conn *c, void *data, size_t len)
{
    struct dconn *dc = arg;
    struct dest *dest = dc->dest;

    (void)c;
    free(dest->tls_sess);
    dest->tls_sess = data;
    dest->tls_sess_len = len;
    dest->tls_sess_ep = dc->ep;
}

static const struct lmtp_conn_cbs deliver_conn_cbs = {
    .ready = conn_ready,
    .rcpt = conn_rcpt,
    .txn_done = conn_txn_done,
    .closed = conn_closed,
    .tls_session = conn_tls_session,
};

/* STARTTLS settings for a connection to dest->eps[ep] (NULL: none). */
static const struct lmtp_conn_tls *
conn_tls(struct dest *dest, size_t ep)
{
    struct lmtp_conn_tls *t = &dest->tls;

    if (!dest->tls_on)
        return NULL;
    t->name = dest->owned_names != NULL ? dest->owned_names[ep] : dest->eps[ep].host;
    t->resume = dest->tls_sess != NULL && dest->tls_sess_ep == ep ? dest->tls_sess : NULL;
    t->resume_len = t->resume != NULL ? dest->tls_sess_len : 0;
    deliver__dane_tls(dest, ep, t);
    deliver__sts_tls(dest, ep, t);
    return t;
}

static struct dconn *
conn_open(struct dest *dest, bool probe)
{
    struct deliver *d = dest->d;
    struct dconn *dc = xcalloc(1, sizeof(*dc));

    dc->dest = dest;
    dc->probe = probe;
    dc->ep = dest->ep_idx;
    dc->next = dest->conns;
    dest->conns = dc;
    dest->nconns++;
    d->stats.sessions++;
    dc->c = lmtp_conn_open(d->loop, &dest->eps[dc->ep], dest->proto, d->conf->hostname, d->store,
                           &d->to, conn_tls(dest, dc->ep), &deliver_conn_cbs, dc);
    return dc;
}

/* ---- MX lookups -------------------------------------------------------- */

static void
dest_free_owned(struct dest *dest)
{
    for (size_t i = 0; dest->owned_eps != NULL && i < dest->neps; i++) {
        free(dest->owned_eps[i].text);
        free(dest->owned_eps[i].host);
        free(dest->owned_names[i]);
    }
    free(dest->owned_eps);
    free(dest->owned_names);
    dest->owned_eps = NULL;
    dest->owned_names = NULL;
    deliver__dane_reset(dest);
    free(dest->tls_sess); /* the endpoints change */
    dest->tls_sess = NULL;
}

/* Tests cannot bind port 25: MXD_TEST_SMTP_PORT replaces it for MX targets. */
uint16_t
deliver__mx_port(void)
{
    const char *p = getenv("MXD_TEST_SMTP_PORT");
    long v = p ? strtol(p, NULL, 10) : 0;

    return v > 0 && v < 65536 ? (uint16_t)v : 25;
}

static void
dest_set_targets(struct dest *dest, const struct dns_mx_result *res)
{
    size_t n = 0;
    uint16_t port = deliver__mx_port();

    dest_free_owned(dest);
    for (size_t i = 0; i < res->ntargets; i++)
        n += res->targets[i].naddrs;
    dest->owned_eps = xcalloc(n ? n : 1, sizeof(*dest->owned_eps));
    dest->owned_names = xcalloc(n ? n : 1, sizeof(*dest->owned_names));
    n = 0;
    for (size_t i = 0; i < res->ntargets; i++) {
        const struct dns_target *t = &res->targets[i];

        for (size_t k = 0; k < t->naddrs; k++) {
            struct conf_endpoint *ep = &dest->owned_eps[n++];
            char ip[64] = "";
            const struct sockaddr *sa = (const struct sockaddr *)&t->addrs[k];

            if (sa->sa_family == AF_INET6)
                uv_ip6_name((const struct sockaddr_in6 *)(const void *)sa, ip, sizeof(ip));
            else
                uv_ip4_name((const struct sockaddr_in *)(const void *)sa, ip, sizeof(ip));
            ep->host = xstrdup(ip);
            ep->port = port;
            dest->owned_names[n - 1] = xstrdup(t->mx.name);
            ep->text = xasprintf("%s[%s]:%u", t->mx.name, ip, (unsigned)port);
        }
    }
    dest->eps = dest->owned_eps;
    dest->neps = n;
    dest->ep_idx = 0;
    for (size_t i = 0, k = 0; i < res->ntargets; i++)
        for (size_t j = 0; j < res->targets[i].naddrs; j++)
            deliver__dane_mx_set(dest, k++, res->mx_sec, res->targets[i].sec);
}

void
deliver__self_load(struct deliver *d)
{
    const struct conf *c = d->conf;
    struct sockaddr_storage *listen = xcalloc(c->nlisten + 1, sizeof(*listen));
    struct sockaddr_storage *ifs = NULL;
    struct ifaddrs *all = NULL;
    size_t nifs = 0;

    for (size_t i = 0; i < c->nlisten; i++)
        memcpy(&listen[i], &c->listen[i].ss, sizeof(listen[i]));
    if (getifaddrs(&all) != 0) {
        log_msg(LOG_WARN, NULL, "deliver", "getifaddrs failed: wildcard listeners not expanded");
        all = NULL;
    }
    for (struct ifaddrs *a = all; a != NULL; a = a->ifa_next) {
        sa_family_t fam = a->ifa_addr != NULL ? a->ifa_addr->sa_family : AF_UNSPEC;

        if (fam != AF_INET && fam != AF_INET6)
            continue;
        ifs = xrealloc(ifs, (nifs + 1) * sizeof(*ifs));
        memset(&ifs[nifs], 0, sizeof(ifs[nifs]));
        memcpy(&ifs[nifs++], a->ifa_addr,
               fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    }
    if (all != NULL)
        freeifaddrs(all);
    mx_local_free(&d->self);
    mx_local_set(&d->self, listen, c->nlisten, ifs, nifs);
    free(ifs);
    free(listen);
}

/* Issue 14: an MX host with one of our addresses is us under another
 * name; it and every host not strictly better are dropped (RFC 5321 5.1),
 * as mx_select did for our hostname. */
static void
mx_cut_local(struct deliver *d, struct dns_mx_result *res)
{
    unsigned prefs[DNS_MAX_HOSTS];
    bool self[DNS_MAX_HOSTS];
    uint16_t port = deliver__mx_port();

    for (size_t i = 0; i < res->ntargets; i++) {
        const struct dns_target *t = &res->targets[i];

        prefs[i] = t->mx.pref;
        self[i] = false;
        for (size_t k = 0; k < t->naddrs && !self[i]; k++)
            self[i] = mx_local_has(&d->self, (const struct sockaddr *)&t->addrs[k], port);
    }
    res->ntargets = mx_cut_self(prefs, self, res->ntargets);
}

static void
on_mx(void *arg, int status, struct dns_mx_result *res)
{
    struct dest *dest = arg;
    struct deliver *d = dest->d;
    char text[400];

    dest->resolving = false;
    d->pending_other--;
    if (status == 0)
        mx_cut_local(d, res);
    if (status == 0 && res->ntargets > 0) {
        dest_set_targets(dest, res);
        dest->resolved_ms = uv_now(d->loop);
    } else {
        if (status == 0)
            snprintf(text, sizeof(text),
                     "451 4.4.6 mail for %s loops back to myself (no better MX than %s)",
                     dest->mx_domain, d->conf->hostname);
        else
            snprintf(text, sizeof(text), "451 4.4.3 MX lookup for %s failed (%s)", dest->mx_domain,
                     status == MXD_ENOENT ? "no such domain" : "DNS error");
        log_msg(LOG_WARN, NULL, "deliver", "no route domain=%s reason=\"%s\"", dest->mx_domain,
                text + 10);
        dest_fail_waiting(dest, 451, text);
        deliver__watch(dest);
    }
    free(res);
    if (d->stopping)
        deliver__stop_check(d);
    else
        deliver__dest_run(dest, d);
}

/* True when the MX targets are known (fresh enough); else starts a lookup. */
static bool
dest_resolved(struct dest *dest)
{
    struct deliver *d = dest->d;

    if (!dest->mx)
        return true;
    if (dest->resolved_ms != 0 && uv_now(d->loop) - dest->resolved_ms < MX_CACHE_MS &&
        dest->neps > 0)
        return true;
    if (!dest->resolving) {
        dest->resolving = true;
        d->pending_other++;
        if (deliver__dane_policy(dest)) /* RFC 7672 2.2.1: the MX answer must be secure */
            dns_mx_async_dnssec(d->loop, d->conf, dest->mx_domain, d->conf->hostname, on_mx, dest);
        else
            dns_mx_async(d->loop, d->conf, dest->mx_domain, d->conf->hostname, on_mx, dest);
    }
    return false;
}

/* ---- running a destination --------------------------------------------- */

/* Hands waiting jobs to idle connections and opens new ones while jobs
 * wait and the pool has room; a connecting one takes a job when ready. */
void
deliver__dest_run(struct dest *dest, struct deliver *d)
{
    size_t waiting = 0;
    size_t connecting = 0;

    for (struct dconn *dc = dest->conns; dc != NULL && dest->head != NULL; dc = dc->next) {
        /* Issue 14: an idle connection whose QUIT is already out (the idle
         * timeout) or whose server went away is closing; a job handed to
         * it would fail with a spurious 451. */
        if (dc->idle && !lmtp_conn_idle(dc->c)) {
            dc->idle = false;
            dc->closing = true;
        }
        if (dc->idle) {
            struct djob *j = dest_take(dest);

            if (j == NULL)
                break; /* release_rate: not yet */
            dc->idle = false;
            dc->job = j;
            free(dc->job->relay);
            dc->job->relay = xstrdup(dest->eps[dc->ep].text);
            lmtp_conn_deliver(dc->c, &dc->job->txn, dc->job->msg_id);
        }
    }
    if (dest->head == NULL)
        return;
    if (dest->pace_inited && uv_is_active((uv_handle_t *)&dest->pace_timer))
        return; /* release_rate: the timer runs us when the next may start */
    if (dest->tls_broken[0] != '\0') {
        dest_fail_waiting(dest, 451, dest->tls_broken);
        return;
    }
    if (dest->watching && dest->down_text[0] != '\0' &&
        uv_now(d->loop) - dest->down_ms < dest->watch_ms) {
        /* The primary is down and the watcher probes it: new mail is held
         * at once instead of each batch trying (and hammering) it; at most
         * one real attempt per probe interval (so a flush or ETRN a little
         * later does try). */
        dest_fail_waiting(dest, 451, dest->down_text);
        return;
    }
    if (!dest_resolved(dest))
        return;
    for (int st;;) {
        if ((st = deliver__dane_check(dest)) == 1 && (st = deliver__sts_check(dest)) == 1)
            break;
        if (st == 0 || dest->head == NULL)
            return; /* a TLSA or MTA-STS lookup is out, or a policy deferred everything */
    }
    for (struct djob *j = dest->head; j != NULL; j = j->next)
        waiting++;
    for (struct dconn *dc = dest->conns; dc != NULL; dc = dc->next)
        connecting += dc->job == NULL && !dc->idle && !dc->probe && !dc->closing;
    while (waiting > connecting && dest->nconns < dest_limit(dest)) {
        conn_open(dest, false);
        connecting++;
    }
}

/* ---- finding destinations ---------------------------------------------- */

static struct dest *
dest_find(struct deliver *d, const char *key)
{
    for (struct dest *dest = d->dests; dest != NULL; dest = dest->next)
        if (strcmp(dest->key, key) == 0)
            return dest;
    return NULL;
}

static struct dest *
dest_new(struct deliver *d, char *key, enum lmtp_conn_proto proto, unsigned max_conns)
{
    struct dest *dest = xcalloc(1, sizeof(*dest));

    dest->d = d;
    dest->key = key;
    dest->proto = proto;
    dest->max_conns = max_conns ? max_conns : 1;
    dest->tail = &dest->head;
    dest->next = d->dests;
    d->dests = dest;
    return dest;
}

/* Trust anchors for ca_file (NULL: the system store): from the cache, or
 * read now (start-up and reload read every verify domain's in advance, so
 * this reads a file only for a ca_file it could not read then). NULL with
 * *err (caller frees) when they cannot be read. */
struct tls_creds *
deliver__tls_trust(struct deliver *d, const char *ca_file, char **err)
{
    struct tls_creds *c = NULL;

    for (size_t i = 0; i < d->ntrust; i++) {
        const char *f = d->trust[i].ca_file;

        if (f == ca_file || (f != NULL && ca_file != NULL && strcmp(f, ca_file) == 0))
            return d->trust[i].creds;
    }
    if (tls_client_creds_load(true, ca_file, d->conf->tls_priority, &c, err) != 0)
        return NULL;
    d->trust = xrealloc(d->trust, (d->ntrust + 1) * sizeof(*d->trust));
    d->trust[d->ntrust].ca_file = ca_file ? xstrdup(ca_file) : NULL;
    d->trust[d->ntrust].creds = c;
    d->ntrust++;
    return c;
}

/* The policy for mail to dom ([server] outbound_tls for DSNs, dom NULL).
 * relaxed: a message with "TLS-Required: No" (RFC 8689 5): the recipient
 * domain's own policy (DANE; MTA-STS when it lands: the same place) does
 * not stop it, it goes as opportunistic TLS would; required and verify
 * are the operator's choices for the next hop and stay. */
static enum conf_tls
dest_mode(const struct deliver *d, const struct conf_domain *dom, bool relaxed)
{
    enum conf_tls mode = dom != NULL ? dom->tls : d->conf->outbound_tls;

    if (relaxed && (mode == CONF_TLS_DANE || mode == CONF_TLS_DANE_ONLY))
        return CONF_TLS_OPPORTUNISTIC;
    return mode;
}

/* Messages with "TLS-Required: No" whose policy that relaxes get
 * destinations of their own (their connections never carry other mail). */
static const char *
dest_key_suffix(const struct deliver *d, const struct conf_domain *dom, bool relaxed)
{
    enum conf_tls mode = dom != NULL ? dom->tls : d->conf->outbound_tls;

    return dest_mode(d, dom, relaxed) != mode ? " tls-required=no" : "";
}

/* The domain's `tls` ([server] outbound_tls for the bounce relay, dom NULL). With
 * verify and no trust anchors, dest->tls_broken: its mail is deferred,
 * never sent without verification. */
static void
dest_tls_init(struct dest *dest, const struct conf_domain *dom, bool relaxed)
{
    struct deliver *d = dest->d;
    enum conf_tls mode = dest_mode(d, dom, relaxed);
    char *err = NULL;

    dest->tls_on = true;
    dest->tls_mode = mode;
    /* dane, dane-only: decided per endpoint by deliver__dane_tls */
    dest->tls.required = mode == CONF_TLS_REQUIRED || mode == CONF_TLS_VERIFY;
    dest->tls.verify = mode == CONF_TLS_VERIFY;
    dest->tls.creds = dest->tls.verify
                          ? deliver__tls_trust(d, dom != NULL ? dom->ca_file : NULL, &err)
                          : d->tls_any;
    if (dest->tls.creds == NULL) {
        snprintf(dest->tls_broken, sizeof(dest->tls_broken), "451 4.7.5 %s",
                 err ? err : "no TLS credentials");
        free(err);
    }
}

int
deliver__tls_load(struct deliver *d)
{
    const struct conf *conf = d->conf;
    char *err = NULL;
    int rc = 0;

    if (d->tls_any == NULL)
        rc = tls_client_creds_load(false, NULL, conf->tls_priority, &d->tls_any, &err);
    for (size_t i = 0; rc == 0 && i < conf->ndomains; i++) {
        if (conf->domains[i].tls == CONF_TLS_VERIFY &&
            deliver__tls_trust(d, conf->domains[i].ca_file, &err) == NULL)
            rc = MXD_ECONFIG;
    }
    if (rc != 0) {
        log_msg(LOG_ERR, NULL, "deliver", "tls error=\"%s\"", err);
        free(err);
    }
    return rc;
}

/* LMTP: one destination per server, shared by the domains using it. */
static struct dest *
dest_lmtp(struct deliver *d, const struct conf_domain *dom)
{
    char *key = xasprintf("lmtp:%s", dom->lmtp.text);
    struct dest *dest = dest_find(d, key);

    if (dest != NULL) {
        free(key);
        return dest;
    }
    dest = dest_new(d, key, LMTP_CONN_LMTP, dom->lmtp_concurrency);
    dest->eps = &dom->lmtp;
    dest->neps = 1;
    dest_tls_init(dest, dom, false); /* TCP only: lmtp_net ignores it for unix sockets */
    return dest;
}

/* The key of dom's backup destination (allocated). */
static char *
backup_key(const struct deliver *d, const struct conf_domain *dom, bool relaxed)
{
    return xasprintf("backup:%s%s", dom->name, dest_key_suffix(d, dom, relaxed));
}

/* Backup: one destination per domain, its primaries in order (or MX). */
static struct dest *
dest_backup(struct deliver *d, const struct conf_domain *dom, bool relaxed)
{
    char *key = backup_key(d, dom, relaxed);
    struct dest *dest = dest_find(d, key);

    if (dest != NULL) {
        free(key);
        return dest;
    }
    dest = dest_new(d, key, LMTP_CONN_SMTP, dom->primary_concurrency);
    dest->dom = dom;
    deliver_pace_init(&dest->pace);
    dest->mx = dom->primary_mx;
    dest->mx_domain = xstrdup(dom->name);
    dest->eps = dom->primary;
    dest->neps = dom->nprimary;
    dest_tls_init(dest, dom, relaxed);
    return dest;
}

static struct dest *
dest_relay(struct deliver *d, bool relaxed)
{
    char *key = xasprintf("relay:bounce%s", dest_key_suffix(d, NULL, relaxed));
    struct dest *dest = dest_find(d, key);

    if (dest != NULL) {
        free(key);
        return dest;
    }
    dest = dest_new(d, key, LMTP_CONN_SMTP, 2);
    dest->eps = &d->conf->bounce_relay;
    dest->neps = 1;
    dest_tls_init(dest, NULL, relaxed);
    return dest;
}

/* A DSN to a sender outside our domains, without a bounce_relay: to the
 * MX hosts of the sender's domain, as any MTA would (issue 18), with the
 * [server] outbound_tls policy (as the bounce relay). */
static struct dest *
dest_remote(struct deliver *d, const char *domain, bool relaxed)
{
    char *key = xasprintf("remote:%s%s", domain, dest_key_suffix(d, NULL, relaxed));
    struct dest *dest = dest_find(d, key);

    if (dest != NULL) {
        free(key);
        return dest;
    }
    dest = dest_new(d, key, LMTP_CONN_SMTP, 2);
    dest->mx = true;
    dest->mx_domain = xstrdup(domain);
    dest->eps = NULL;
    dest->neps = 0;
    dest_tls_init(dest, NULL, relaxed);
    return dest;
}

struct dest *
deliver__route(struct deliver *d, const struct store_dmsg *m, const struct store_drcpt *r,
               const struct conf_domain **domp, int *code, const char **text)
{
    const struct conf_domain *dom = conf_domain_find(d->conf, r->domain, strlen(r->domain));
    bool relaxed = m->tls_optional && !m->requiretls; /* RFC 8689 4.1: REQUIRETLS wins */

    *domp = dom;
    if (dom == NULL && dsn_suppressed(m->sender)) {
        if (d->conf->bounce_relay.text != NULL)
            return dest_relay(d, relaxed); /* a DSN to a remote sender */
        if (r->domain[0] != '\0' && r->domain[0] != '[')
            return dest_remote(d, r->domain, relaxed);
        *code = 550;
        *text = "550 5.4.4 DSN not deliverable: the sender's domain is an address literal";
        return NULL;
    }
    if (dom == NULL) {
        *code = 451;
        *text = "451 4.4.0 no route: the domain is not (or no longer) configured";
        return NULL;
    }
    if (dom->mode == CONF_MODE_BACKUP && m->hops > d->conf->max_hops) {
        *code = 554; /* RFC 5321 6.3: the next hop would refuse it; a loop */
        *text = "554 5.4.6 too many hops: not forwarded to the primary (mail loop?)";
        return NULL;
    }
    if (dom->mode == CONF_MODE_BACKUP)
        return dest_backup(d, dom, relaxed);
    if (dom->lmtp.text == NULL) {
        *code = 451;
        *text = "451 4.3.5 no lmtp server configured for the domain";
        return NULL;
    }
    return dest_lmtp(d, dom);
}

/* ---- the primary watcher ----------------------------------------------- */

static void
on_watch(uv_timer_t *t)
{
    struct dest *dest = t->data;

    if (dest->d->stopping || !dest->watching)
        return;
    if (!dest_resolved(dest) || dest->neps == 0 || deliver__dane_check(dest) != 1 ||
        deliver__sts_check(dest) != 1) {
        deliver__watch(dest); /* the lookup's outcome decides; look again later */
        return;
    }
    log_msg(LOG_DEBUG, NULL, "deliver", "probe domain=%s relay=%s", dest->dom->name,
            dest->eps[dest->ep_idx].text);
    conn_open(dest, true);
}

void
deliver__watch(struct dest *dest)
{
    if (dest->dom == NULL || dest->d->stopping)
        return;
    if (!dest->watch_inited) {
        uv_timer_init(dest->d->loop, &dest->watch);
        dest->watch.data = dest;
        dest->watch_inited = true;
    }
    if (!dest->watching) {
        dest->watching = true;
        dest->watch_ms = WATCH_MIN_MS;
    } else if (uv_is_active((uv_handle_t *)&dest->watch)) {
        return; /* a probe is already scheduled */
    } else {
        dest->watch_ms = dest->watch_ms * 2 > WATCH_MAX_MS ? WATCH_MAX_MS : dest->watch_ms * 2;
    }
    for (struct dconn *dc = dest->conns; dc != NULL; dc = dc->next)
        if (dc->probe)
            return; /* its outcome re-arms us */
    uv_timer_start(&dest->watch, on_watch, dest->watch_ms, 0);
}

/* Whether deliver__dest_run would fail mail for dest at once with its
 * down_text, without a connection: the watcher probes a primary that is
 * down, and the last real attempt failed within the probe interval. */
static bool
dest_known_down(const struct dest *dest)
{
    return dest->watching && dest->down_text[0] != '\0' && dest->tls_broken[0] == '\0' &&
           !(dest->pace_inited && uv_is_active((const uv_handle_t *)&dest->pace_timer)) &&
           uv_now(dest->d->loop) - dest->down_ms < dest->watch_ms;
}

bool
deliver_hold_at_accept(struct deliver *d, const struct store_msg *m, struct store_rcpt *r)
{
    const struct conf *c = d->conf;
    const struct conf_domain *dom;
    bool relaxed = m->tls_optional && !m->requiretls; /* as deliver__route */
    struct dest *dest;
    char *key;
    char esc[600], to[600];

    if (d->stopping || m->hold_reason != NULL || m->hops > c->max_hops)
        return false; /* quarantined; or a loop, which deliver bounces */
    dom = conf_domain_find(c, r->domain, strlen(r->domain));
    if (dom == NULL || dom->mode != CONF_MODE_BACKUP)
        return false;
    if (conf_domain_lifetime(c, dom) == 0)
        return false; /* it would expire at its first attempt */
    key = backup_key(d, dom, relaxed);
    dest = dest_find(d, key);
    free(key);
    if (dest == NULL || !dest_known_down(dest))
        return false;
    /* what outcome_fill records for the 451 dest_fail_waiting gives it */
    r->held_reply = xstrdup(dest->down_text);
    r->held_next = m->received + (int64_t)deliver_backoff(1, c->retry_min_s, c->retry_max_s,
                                                          (double)rand() / RAND_MAX);
    d->stats.deferred++;
    metrics_count(METRICS_F_DELIVERY_ATTEMPTS, "held", dest->key);
    log_msg(LOG_INFO, m->qid, "deliver", "held to=%s relay=%s attempts=1 reply=%s at=accept",
            log_addr(to, sizeof(to), r->address), dest->key,
            log_esc(esc, sizeof(esc), r->held_reply, strlen(r->held_reply)));
    return true;
}

/* ---- stopping ---------------------------------------------------------- */

bool
deliver__dests_idle(struct deliver *d)
{
    for (struct dest *dest = d->dests; dest != NULL; dest = dest->next)
        if (dest->nconns > 0)
            return false;
    return d->pending_other == 0;
}

static void
on_watch_closed(uv_handle_t *h)
{
    struct dest *dest = h->data;
    struct deliver *d = dest->d;

    d->pending_other--;
    deliver__stop_check(d);
}

void
deliver__dests_stop(struct deliver *d)
{
    for (struct dest *dest = d->dests; dest != NULL; dest = dest->next) {
        struct djob *j;

        while ((j = deliver__dest_pop(dest)) != NULL)
            deliver__job_drop(j);
        for (struct dconn *dc = dest->conns; dc != NULL; dc = dc->next)
            if (dc->job == NULL)
                lmtp_conn_close(dc->c);
        if (dest->watch_inited && !uv_is_closing((uv_handle_t *)&dest->watch)) {
            d->pending_other++;
            uv_close((uv_handle_t *)&dest->watch, on_watch_closed);
        }
        if (dest->pace_inited && !uv_is_closing((uv_handle_t *)&dest->pace_timer)) {
            d->pending_other++;
            uv_close((uv_handle_t *)&dest->pace_timer, on_watch_closed);
        }
    }
    deliver__sts_stop(d);
}

void
deliver__dests_abort(struct deliver *d)
{
    for (struct dest *dest = d->dests; dest != NULL; dest = dest->next)
        for (struct dconn *dc = dest->conns; dc != NULL; dc = dc->next)
            lmtp_conn_close(dc->c);
}

void
deliver__dests_free(struct deliver *d)
{
    while (d->dests != NULL) {
        struct dest *next = d->dests->next;

        dest_free_owned(d->dests);
        deliver__dane_reset(d->dests);
        free(d->dests->tls_sess);
        free(d->dests->key);
        free(d->dests->mx_domain);
        free(d->dests);
        d->dests = next;
    }
    for (size_t i = 0; i < d->ntrust; i++) {
        tls_creds_free(d->trust[i].creds);
        free(d->trust[i].ca_file);
    }
    free(d->trust);
    d->trust = NULL;
    d->ntrust = 0;
    tls_creds_free(d->tls_any);
    d->tls_any = NULL;
    mx_local_free(&d->self);
    deliver__sts_free(d);
}
