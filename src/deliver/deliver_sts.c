/* deliver_sts: MTA-STS (RFC 8461) for deliveries to MX hosts: the
 * forwarding of backup domains with primary = mx and DSNs to remote
 * senders, under [server] mta_sts = on, when the destination's policy is
 * opportunistic, required or dane (verify and dane-only are the
 * operator's stronger choice and stay as they are).
 *
 * Owns: the policy domains (struct sts_domain, one per destination domain
 * seen, in struct deliver's list until the end), the libcurl multi handle
 * with its uv_poll_t per socket and its uv_timer_t, and the fetches in
 * flight (struct sts_fetch). Loop thread only; the blocking parts are
 * elsewhere: the TXT and address lookups go through the resolver, the
 * cache through the store's threads, and libcurl is driven by
 * curl_multi_socket_action from the loop (its own name lookups are never
 * used: CURLOPT_CONNECT_TO names the address found).
 *
 * Discovery (RFC 8461 3, 5.1): the cached policy from the store, then the
 * TXT record at _mta-sts.<domain>; a new id (or no cached policy) fetches
 * https://mta-sts.<domain>/.well-known/mta-sts.txt: at most 64 KiB, no
 * redirects, text/plain, the certificate verified against the system CAs
 * (or [server] mta_sts_ca_file) for that name. A fetched policy is cached
 * with its max_age (memory and store); when the TXT record or the fetch
 * fails, a cached policy that has not expired stays in force. Checked
 * again after STS_RECHECK_MS, in the background while a policy is known.
 *
 * Application (RFC 8461 4, 5): DANE wins: an endpoint with secure TLSA
 * records is left to deliver_dane.c. mode enforce: an MX host that matches
 * no mx pattern is not used (4.7.5, counted as deferred), the others need
 * STARTTLS with a certificate verified for the MX host name; testing: a
 * mismatch is only logged, TLS as before; none: nothing.
 * Does not: report (TLSRPT, RFC 8460), or refresh policies proactively. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/metrics.h"
#include "deliver/deliver_impl.h"
#include "deliver/sts_policy.h"
#include "dns/dnsmsg.h"
#include "dns/resolver.h"

#define STS_RECHECK_MS    300000 /* the TXT record is looked at again after this */
#define STS_FETCH_TIMEOUT 20000  /* ms for the whole HTTPS fetch */

struct sts_domain {
    struct sts_domain *next;
    struct deliver *d;
    char name[STS_NAME_MAX];
    bool ready;          /* a decision exists (a policy or none) */
    bool busy;           /* a store read, lookup or fetch is out */
    uint64_t checked_ms; /* loop time of the last TXT check */
    bool has;            /* pol is a policy in force (until expires) */
    struct sts_policy pol;
    char id[STS_ID_MAX + 1];
    int64_t fetched, expires;
    char new_id[STS_ID_MAX + 1]; /* the TXT record's, while fetching */
};

struct sts_fetch {
    struct sts_fetch *next;
    struct sts_domain *dom;
    CURL *easy;
    struct curl_slist *connect_to;
    char *buf;
    size_t len;
    bool too_big;
    char err[CURL_ERROR_SIZE];
};

struct sts_sock {
    uv_poll_t poll;
    struct deliver_sts *s;
    curl_socket_t fd;
};

struct deliver_sts {
    struct deliver *d;
    CURLM *multi;
    uv_timer_t timer;
    struct sts_fetch *fetches;
    struct sts_domain *domains;
};

/* ---- the decision ------------------------------------------------------ */

bool
deliver__sts_applies(const struct dest *dest)
{
    return dest->mx && dest->mx_domain != NULL && dest->d->conf->mta_sts &&
           (dest->tls_mode == CONF_TLS_OPPORTUNISTIC || dest->tls_mode == CONF_TLS_REQUIRED ||
            dest->tls_mode == CONF_TLS_DANE);
}

/* The policy in force for dom now (NULL: none, or mode none). */
static const struct sts_policy *
in_force(struct sts_domain *dom)
{
    if (dom == NULL || !dom->has)
        return NULL;
    if (dom->expires <= deliver__now()) {
        log_msg(LOG_INFO, NULL, "deliver", "mta-sts expired domain=%s id=%s", dom->name, dom->id);
        dom->has = false;
        return NULL;
    }
    return dom->pol.mode == STS_MODE_NONE ? NULL : &dom->pol;
}

bool
deliver__sts_describe(struct deliver *d, const char *domain, char *buf, size_t size)
{
    struct sts_domain *dom = NULL;
    const struct sts_policy *p;
    int64_t now = deliver__now();

    if (!d->conf->mta_sts) {
        snprintf(buf, size, "off ([server] mta_sts = off)");
        return false;
    }
    for (dom = d->sts != NULL ? d->sts->domains : NULL; dom != NULL; dom = dom->next)
        if (strcasecmp(dom->name, domain) == 0)
            break;
    if (dom == NULL || !dom->ready) {
        snprintf(buf, size, "not looked up yet (at the first delivery to its MX hosts)");
        return false;
    }
    if ((p = in_force(dom)) == NULL) {
        snprintf(buf, size, "%s", dom->has ? "mode none" : "no policy");
        return false;
    }
    snprintf(buf, size, "mode %s, id %s, %zu mx patterns, fetched %llds ago, expires in %llds",
             sts_mode_name(p->mode), dom->id, p->nmx, (long long)(now - dom->fetched),
             (long long)(dom->expires - now));
    return p->mode == STS_MODE_ENFORCE;
}

/* Every destination waiting for dom's decision runs again. */
static void
domain_ready(struct sts_domain *dom)
{
    struct deliver *d = dom->d;

    dom->busy = false;
    dom->ready = true;
    dom->checked_ms = uv_now(d->loop);
    if (d->stopping) {
        deliver__stop_check(d);
        return;
    }
    for (struct dest *dest = d->dests; dest != NULL; dest = dest->next)
        if (dest->mx_domain != NULL && strcmp(dest->mx_domain, dom->name) == 0 &&
            dest->head != NULL)
            deliver__dest_run(dest, d);
}

/* The fetch (or discovery) failed: a cached policy stays in force. */
static void
discovery_failed(struct sts_domain *dom, const char *why)
{
    char esc[400];
    const struct sts_policy *p = in_force(dom);

    log_msg(LOG_WARN, NULL, "deliver", "mta-sts fetch failed domain=%s reason=%s fallback=%s",
            dom->name, log_esc(esc, sizeof(esc), why, strlen(why)),
            p != NULL ? sts_mode_name(p->mode) : "none");
    metrics_count(METRICS_F_OUTBOUND_TLS, "mta-sts", "fetch-failed");
    domain_ready(dom);
}

/* ---- fetching the policy over HTTPS ------------------------------------ */

static void sts_check_multi(struct deliver_sts *s);

static uint16_t
https_port(void)
{
    /* Tests cannot bind port 443 for every run: MXD_TEST_HTTPS_PORT replaces it. */
    const char *p = getenv("MXD_TEST_HTTPS_PORT");
    long v = p ? strtol(p, NULL, 10) : 0;

    return v > 0 && v < 65536 ? (uint16_t)v : 443;
}

static size_t
on_body(char *ptr, size_t size, size_t n, void *arg)
{
    struct sts_fetch *f = arg;
    size_t len = size * n;

    if (f->len + len > STS_POLICY_MAX) {
        f->too_big = true;
        return 0; /* aborts the transfer */
    }
    f->buf = xrealloc(f->buf, f->len + len + 1);
    memcpy(f->buf + f->len, ptr, len);
    f->len += len;
    f->buf[f->len] = '\0';
    return len;
}

static void
fetch_free(struct deliver_sts *s, struct sts_fetch *f)
{
    struct sts_fetch **pp = &s->fetches;

    while (*pp != NULL && *pp != f)
        pp = &(*pp)->next;
    if (*pp == f)
        *pp = f->next;
    curl_multi_remove_handle(s->multi, f->easy);
    curl_easy_cleanup(f->easy);
    curl_slist_free_all(f->connect_to);
    free(f->buf);
    free(f);
}

/* A finished transfer: judge the answer, cache the policy. */
static void
fetch_done(struct deliver_sts *s, struct sts_fetch *f, CURLcode rc)
{
    struct sts_domain *dom = f->dom;
    struct deliver *d = s->d;
    long status = 0;
    char *ctype = NULL, why[STS_WHY_MAX + 64];
    struct sts_policy pol;

    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(f->easy, CURLINFO_CONTENT_TYPE, &ctype);
    why[0] = '\0';
    if (f->too_big || rc == CURLE_FILESIZE_EXCEEDED)
        snprintf(why, sizeof(why), "policy larger than %d octets", STS_POLICY_MAX);
    else if (rc != CURLE_OK)
        snprintf(why, sizeof(why), "%s", f->err[0] ? f->err : curl_easy_strerror(rc));
    else if (status >= 300 && status < 400)
        snprintf(why, sizeof(why), "HTTP %ld: redirects are not followed (RFC 8461 3.3)", status);
    else if (status != 200)
        snprintf(why, sizeof(why), "HTTP %ld", status);
    else if (ctype == NULL || strncmp(ctype, "text/plain", 10) != 0)
        snprintf(why, sizeof(why), "Content-Type %s is not text/plain", ctype ? ctype : "missing");
    else if (sts_policy_parse(f->buf ? f->buf : "", f->len, &pol, why, STS_WHY_MAX) == 0) {
        struct store_sts_row row;

        memset(&row, 0, sizeof(row));
        dom->pol = pol;
        dom->has = true;
        snprintf(dom->id, sizeof(dom->id), "%s", dom->new_id);
        dom->fetched = deliver__now();
        dom->expires = dom->fetched + (int64_t)pol.max_age;
        log_msg(LOG_INFO, NULL, "deliver",
                "mta-sts policy domain=%s id=%s mode=%s max_age=%u mx=%zu result=fetched",
                dom->name, dom->id, sts_mode_name(pol.mode), pol.max_age, pol.nmx);
        snprintf(row.domain, sizeof(row.domain), "%s", dom->name);
        snprintf(row.id, sizeof(row.id), "%s", dom->id);
        row.policy = f->buf;
        row.len = f->len;
        row.fetched = dom->fetched;
        row.expires = dom->expires;
        store_sts_record_async(d->store, &row, dom->fetched, NULL, NULL);
        fetch_free(s, f);
        domain_ready(dom);
        return;
    } else {
        char tmp[sizeof(why)];

        snprintf(tmp, sizeof(tmp), "bad policy: %s", why);
        snprintf(why, sizeof(why), "%s", tmp);
    }
    fetch_free(s, f);
    discovery_failed(dom, why);
}

static void
sts_check_multi(struct deliver_sts *s)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
        struct sts_fetch *f = NULL;

        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&f);
        if (f != NULL)
            fetch_done(s, f, m->data.result);
    }
}

static void
on_sock_closed(uv_handle_t *h)
{
    struct sts_sock *k = h->data;
    struct deliver *d = k->s->d;

    free(k);
    d->pending_other--;
    if (d->stopping)
        deliver__stop_check(d);
}

static void
on_poll(uv_poll_t *h, int status, int events)
{
    struct sts_sock *k = h->data;
    struct deliver_sts *s = k->s;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(s->multi, k->fd, flags, &running);
    sts_check_multi(s);
}

static int
on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
    struct deliver_sts *s = arg;
    struct sts_sock *k = sockp;
    int events = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (k != NULL) {
            uv_poll_stop(&k->poll);
            s->d->pending_other++;
            uv_close((uv_handle_t *)&k->poll, on_sock_closed);
            curl_multi_assign(s->multi, fd, NULL);
        }
        return 0;
    }
    if (k == NULL) {
        k = xcalloc(1, sizeof(*k));
        k->s = s;
        k->fd = fd;
        if (uv_poll_init_socket(s->d->loop, &k->poll, fd) != 0) {
            free(k);
            return -1;
        }
        k->poll.data = k;
        curl_multi_assign(s->multi, fd, k);
    }
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&k->poll, events, on_poll);
    return 0;
}

static void
on_curl_timeout(uv_timer_t *t)
{
    struct deliver_sts *s = t->data;
    int running;

    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    sts_check_multi(s);
}

static int
on_curl_timer(CURLM *multi, long ms, void *arg)
{
    struct deliver_sts *s = arg;

    (void)multi;
    if (ms < 0)
        uv_timer_stop(&s->timer);
    else
        uv_timer_start(&s->timer, on_curl_timeout, (uint64_t)ms, 0);
    return 0;
}

static struct deliver_sts *
sts_get(struct deliver *d)
{
    struct deliver_sts *s = d->sts;

    if (s != NULL)
        return s;
    s = d->sts = xcalloc(1, sizeof(*s));
    s->d = d;
    return s;
}

static bool
sts_multi(struct deliver_sts *s)
{
    if (s->multi != NULL)
        return true;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (s->multi = curl_multi_init()) == NULL)
        return false;
    uv_timer_init(s->d->loop, &s->timer);
    s->timer.data = s;
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
    return true;
}

/* Starts the HTTPS fetch of dom's policy from addr (a numeric address). */
static void
fetch_start(struct sts_domain *dom, const char *addr, bool v6)
{
    struct deliver_sts *s = sts_get(dom->d);
    const struct conf *conf = dom->d->conf;
    struct sts_fetch *f;
    char url[STS_NAME_MAX + 64], to[STS_NAME_MAX + 96];

    if (!sts_multi(s)) {
        discovery_failed(dom, "libcurl could not be set up");
        return;
    }
    f = xcalloc(1, sizeof(*f));
    f->dom = dom;
    f->easy = curl_easy_init();
    if (f->easy == NULL) {
        free(f);
        discovery_failed(dom, "libcurl could not be set up");
        return;
    }
    snprintf(url, sizeof(url), "https://mta-sts.%s/.well-known/mta-sts.txt", dom->name);
    /* The address found by our resolver; the port 443 (tests: another). */
    snprintf(to, sizeof(to), "mta-sts.%s:443:%s%s%s:%u", dom->name, v6 ? "[" : "", addr,
             v6 ? "]" : "", (unsigned)https_port());
    f->connect_to = curl_slist_append(NULL, to);
    curl_easy_setopt(f->easy, CURLOPT_URL, url);
    curl_easy_setopt(f->easy, CURLOPT_CONNECT_TO, f->connect_to);
    curl_easy_setopt(f->easy, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(f->easy, CURLOPT_FOLLOWLOCATION, 0L); /* RFC 8461 3.3 */
    curl_easy_setopt(f->easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(f->easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (conf->mta_sts_ca_file != NULL)
        curl_easy_setopt(f->easy, CURLOPT_CAINFO, conf->mta_sts_ca_file);
    curl_easy_setopt(f->easy, CURLOPT_MAXFILESIZE, (long)STS_POLICY_MAX);
    curl_easy_setopt(f->easy, CURLOPT_TIMEOUT_MS, (long)STS_FETCH_TIMEOUT);
    curl_easy_setopt(f->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(f->easy, CURLOPT_USERAGENT, "mxd (MTA-STS)");
    curl_easy_setopt(f->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(f->easy, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(f->easy, CURLOPT_ERRORBUFFER, f->err);
    curl_easy_setopt(f->easy, CURLOPT_PRIVATE, f);
    f->next = s->fetches;
    s->fetches = f;
    if (curl_multi_add_handle(s->multi, f->easy) != CURLM_OK) {
        fetch_free(s, f);
        discovery_failed(dom, "libcurl refused the transfer");
    }
}

/* ---- DNS: the TXT record, the policy host's address -------------------- */

struct sts_q {
    struct sts_domain *dom;
    bool aaaa;
};

static void
on_addr(void *arg, const struct resolver_answer *a)
{
    struct sts_q *q = arg;
    struct sts_domain *dom = q->dom;
    struct deliver *d = dom->d;
    struct sockaddr_storage ss[4];
    size_t n = 0;
    char ip[64] = "", why[STS_NAME_MAX + 64];
    bool aaaa = q->aaaa;

    d->pending_other--;
    if (a->status == RESOLVER_OK && a->packet != NULL &&
        dnsmsg_addrs(a->packet, a->len, aaaa, 443, ss, &n, 4) != 0)
        n = 0;
    if (d->stopping) {
        free(q);
        dom->busy = false;
        deliver__stop_check(d);
        return;
    }
    if (n == 0 && !aaaa) {
        q->aaaa = true; /* no A record: try AAAA */
        d->pending_other++;
        snprintf(why, sizeof(why), "mta-sts.%s", dom->name);
        (void)resolver_query(resolver_get(d->loop, d->conf), why, RESOLVER_TYPE_AAAA, 0, on_addr,
                             q);
        return;
    }
    free(q);
    if (n == 0) {
        snprintf(why, sizeof(why), "no address for mta-sts.%s", dom->name);
        discovery_failed(dom, why);
        return;
    }
    if (aaaa)
        uv_ip6_name((const struct sockaddr_in6 *)(const void *)&ss[0], ip, sizeof(ip));
    else
        uv_ip4_name((const struct sockaddr_in *)(const void *)&ss[0], ip, sizeof(ip));
    fetch_start(dom, ip, aaaa);
}

struct txt_scan {
    unsigned nsts; /* records starting with v=STSv1; */
    int rc;        /* of the first */
    char id[STS_ID_MAX + 1];
    char why[STS_WHY_MAX];
};

static void
on_txt_record(void *arg, const char *txt, size_t len)
{
    struct txt_scan *t = arg;
    char id[STS_ID_MAX + 1], why[STS_WHY_MAX];
    int rc = sts_txt_parse(txt, len, id, why, sizeof(why));

    if (rc == 0)
        return; /* RFC 8461 3.1: other records are discarded */
    if (t->nsts++ == 0) {
        t->rc = rc;
        memcpy(t->id, id, sizeof(id));
        memcpy(t->why, why, sizeof(why));
    }
}

static void
on_txt(void *arg, const struct resolver_answer *a)
{
    struct sts_domain *dom = arg;
    struct deliver *d = dom->d;
    struct txt_scan t;
    char why[STS_WHY_MAX + STS_NAME_MAX + 64];
    struct sts_q *q;

    d->pending_other--;
    memset(&t, 0, sizeof(t));
    if (d->stopping) {
        dom->busy = false;
        deliver__stop_check(d);
        return;
    }
    if (a->status == RESOLVER_OK && a->packet != NULL &&
        dnsmsg_txt(a->packet, a->len, on_txt_record, &t) != 0)
        t.nsts = 0;
    if (a->status == RESOLVER_NXDOMAIN || a->status == RESOLVER_NODATA ||
        (a->status == RESOLVER_OK && t.nsts == 0)) {
        /* RFC 8461 5.1: no record; a cached policy stays until it expires */
        log_msg(LOG_DEBUG, NULL, "deliver", "mta-sts none domain=%s cached=%s", dom->name,
                in_force(dom) != NULL ? "yes" : "no");
        domain_ready(dom);
        return;
    }
    if (a->status != RESOLVER_OK) {
        snprintf(why, sizeof(why), "TXT lookup of _mta-sts.%s: %s", dom->name,
                 resolver_status_name(a->status));
        discovery_failed(dom, why);
        return;
    }
    if (t.nsts > 1 || t.rc != 1) {
        snprintf(why, sizeof(why), "%s",
                 t.nsts > 1 ? "more than one v=STSv1 TXT record (RFC 8461 3.1)" : t.why);
        discovery_failed(dom, why);
        return;
    }
    if (dom->has && strcmp(dom->id, t.id) == 0 && in_force(dom) != NULL) {
        domain_ready(dom); /* unchanged */
        return;
    }
    snprintf(dom->new_id, sizeof(dom->new_id), "%s", t.id);
    q = xcalloc(1, sizeof(*q));
    q->dom = dom;
    d->pending_other++;
    snprintf(why, sizeof(why), "mta-sts.%s", dom->name);
    (void)resolver_query(resolver_get(d->loop, d->conf), why, RESOLVER_TYPE_A, 0, on_addr, q);
}

static void
txt_start(struct sts_domain *dom)
{
    struct deliver *d = dom->d;
    char name[STS_NAME_MAX + 16];

    dom->busy = true;
    d->pending_other++;
    snprintf(name, sizeof(name), "_mta-sts.%s", dom->name);
    (void)resolver_query(resolver_get(d->loop, d->conf), name, RESOLVER_TYPE_TXT, 0, on_txt, dom);
}

/* The cached policy from the store (start-up, or a domain not seen yet). */
static void
on_cached(void *arg, int status, const struct store_sts_row *row)
{
    struct sts_domain *dom = arg;
    struct deliver *d = dom->d;
    char why[STS_WHY_MAX];

    d->pending_other--;
    if (status == 0 && row != NULL) {
        if (sts_policy_parse(row->policy, row->len, &dom->pol, why, sizeof(why)) == 0) {
            dom->has = true;
            snprintf(dom->id, sizeof(dom->id), "%s", row->id);
            dom->fetched = row->fetched;
            dom->expires = row->expires;
            log_msg(LOG_INFO, NULL, "deliver",
                    "mta-sts policy domain=%s id=%s mode=%s expires_in=%llds result=cached",
                    dom->name, dom->id, sts_mode_name(dom->pol.mode),
                    (long long)(dom->expires - deliver__now()));
        }
    }
    if (d->stopping) {
        dom->busy = false;
        deliver__stop_check(d);
        return;
    }
    txt_start(dom);
}

static struct sts_domain *
domain_get(struct deliver *d, const char *name)
{
    struct deliver_sts *s = sts_get(d);
    struct sts_domain *dom;

    for (dom = s->domains; dom != NULL; dom = dom->next)
        if (strcmp(dom->name, name) == 0)
            return dom;
    dom = xcalloc(1, sizeof(*dom));
    dom->d = d;
    for (size_t i = 0; name[i] != '\0' && i + 1 < sizeof(dom->name); i++)
        dom->name[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
    dom->next = s->domains;
    s->domains = dom;
    dom->busy = true;
    d->pending_other++;
    store_sts_lookup_async(d->store, dom->name, deliver__now(), on_cached, dom);
    return dom;
}

/* ---- per endpoint ------------------------------------------------------ */

static int
sts_refuse(struct dest *dest, size_t ep, const char *why)
{
    char text[1024], esc[1024];

    snprintf(text, sizeof(text), "4.7.5 %s: %s", dest->eps[ep].text, why);
    log_msg(LOG_WARN, NULL, "deliver", "mta-sts refused relay=%s policy=mta-sts reason=%s",
            dest->eps[ep].text, log_esc(esc, sizeof(esc), why, strlen(why)));
    metrics_count(METRICS_F_OUTBOUND_TLS, "mta-sts", "deferred");
    deliver__dest_unreachable(dest, ep, text);
    return -1;
}

static bool
ep_has_dane(const struct dest *dest, size_t ep)
{
    return deliver__dane_policy(dest) && dest->dane != NULL && ep < dest->ndane &&
           dest->dane[ep].state == DEST_DANE_RECORDS;
}

int
deliver__sts_check(struct dest *dest)
{
    struct deliver *d = dest->d;
    size_t ep = dest->ep_idx;
    struct sts_domain *dom;
    const struct sts_policy *p;
    const char *host;
    char why[2 * STS_NAME_MAX + 128];

    if (!deliver__sts_applies(dest) || ep >= dest->neps || dest->owned_names == NULL)
        return 1;
    dom = domain_get(d, dest->mx_domain);
    if (dom->ready && !dom->busy && uv_now(d->loop) - dom->checked_ms >= STS_RECHECK_MS)
        txt_start(dom); /* again; the current decision holds meanwhile */
    if (!dom->ready)
        return 0;
    if (ep_has_dane(dest, ep) || (p = in_force(dom)) == NULL)
        return 1; /* RFC 8461 2: DANE wins; or no policy */
    host = dest->owned_names[ep];
    if (sts_policy_match(p, host))
        return 1;
    if (p->mode == STS_MODE_TESTING) {
        log_msg(LOG_WARN, NULL, "deliver",
                "mta-sts testing relay=%s domain=%s mx=%s match=no (enforce would refuse it)",
                dest->eps[ep].text, dom->name, host);
        return 1;
    }
    snprintf(why, sizeof(why), "MX host %s is not in the MTA-STS policy of %s (id %s)", host,
             dom->name, dom->id);
    return sts_refuse(dest, ep, why);
}

void
deliver__sts_tls(struct dest *dest, size_t ep, struct lmtp_conn_tls *t)
{
    struct deliver *d = dest->d;
    struct deliver_sts *s = d->sts;
    struct sts_domain *dom = NULL;
    const struct sts_policy *p;
    char *err = NULL;

    if (!deliver__sts_applies(dest) || dest->owned_names == NULL || s == NULL)
        return;
    /* dest->tls is shared by the destination's connections: back to the
     * destination's own policy first (deliver__dane_tls did its part). */
    t->verify = false;
    t->creds = d->tls_any;
    if (!deliver__dane_policy(dest))
        t->required = dest->tls_mode == CONF_TLS_REQUIRED;
    if (ep_has_dane(dest, ep))
        return;
    for (dom = s->domains; dom != NULL; dom = dom->next)
        if (strcmp(dom->name, dest->mx_domain) == 0)
            break;
    if ((p = in_force(dom)) == NULL || p->mode != STS_MODE_ENFORCE)
        return;
    /* RFC 8461 4.2: TLS with a certificate valid for the MX host name,
     * chained to a trusted root; never resumed from an unverified one. */
    t->required = true;
    t->verify = true;
    t->creds = deliver__tls_trust(d, d->conf->mta_sts_ca_file, &err);
    t->policy = "mta-sts";
    t->resume = NULL;
    t->resume_len = 0;
    if (t->creds == NULL) {
        log_msg(LOG_ERR, NULL, "deliver", "mta-sts trust anchors unreadable: %s", err ? err : "-");
        free(err);
        t->creds = d->tls_any; /* verification then fails: deferred, never unverified */
    }
}

/* ---- stopping ---------------------------------------------------------- */

static void
on_timer_closed(uv_handle_t *h)
{
    struct deliver_sts *s = h->data;
    struct deliver *d = s->d;

    d->pending_other--;
    deliver__stop_check(d);
}

void
deliver__sts_stop(struct deliver *d)
{
    struct deliver_sts *s = d->sts;

    if (s == NULL || s->multi == NULL)
        return;
    while (s->fetches != NULL)
        fetch_free(s, s->fetches); /* closes their sockets' poll handles */
    curl_multi_cleanup(s->multi);
    s->multi = NULL;
    uv_timer_stop(&s->timer);
    d->pending_other++;
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

void
deliver__sts_free(struct deliver *d)
{
    struct deliver_sts *s = d->sts;

    if (s == NULL)
        return;
    while (s->domains != NULL) {
        struct sts_domain *next = s->domains->next;

        free(s->domains);
        s->domains = next;
    }
    free(s);
    d->sts = NULL;
}
