/* resolver: mxd's DNS engine (issue 16): one libunbound context per set of
 * name servers, with its cache, asked asynchronously from the uv loop.
 *
 * Owns the contexts (a process-wide list, one per distinct server list,
 * kept until exit; and private ones, resolver_new, for tools and tests),
 * for each the uv_poll_t that watches ub_fd while queries are out, and
 * each struct resolver_query (its timer) until its callback. libunbound
 * runs its work on one background thread of its own (ub_ctx_async(ctx,
 * 1)) and hands answers back through a pipe; ub_process runs them on the
 * loop. Everything here is loop thread only.
 *
 * libunbound's asynchronous API has no timeout, so each query has a uv
 * timer: when it fires first, the query is cancelled (ub_cancel: its
 * callback never runs) and answered RESOLVER_TIMEOUT. Every query ends in
 * exactly one callback, never from inside resolver_query.
 *
 * Set-up (docs/architecture.md, "DNS"): forwarding only, to dns_servers or
 * /etc/resolv.conf's name servers (no root hints, never iterating on its
 * own); no local answers: unbound's default local zones (localhost.,
 * test., invalid., onion., home.arpa., the loopback and RFC 1918/6303
 * reverse zones) are all turned off so that every name goes to the
 * configured servers (see options[]); no trust anchor, so every answer is
 * "insecure". DANE (issue 19) asks a second context for the same servers
 * that validates (resolver_get_dnssec): the trust anchor file's DS or
 * DNSKEY records (Debian's root key by default), so its answers are
 * secure, insecure or bogus; the other lookups (SPF, DKIM, DNSBL) stay on
 * the plain one, so a forwarder without DNSSEC breaks nothing but DANE.
 * The cache is libunbound's (message and RRset caches, by TTL), and in
 * front of it an answer cache of the loop's own (struct cache_slot,
 * RESOLVER_CACHE_SLOTS entries, direct-mapped by name and type, newest
 * wins): an answer OK, NODATA or NXDOMAIN with a TTL (at most a day,
 * negative ones an hour: unbound's own caps), its packet at most
 * RESOLVER_CACHE_PACKET_MAX octets, answers a repeat of its question
 * until the TTL runs out, from the next loop iteration (the query's
 * timer), with what is left of the TTL. Asking libunbound for an answer
 * it has cached costs a round trip through its thread (two pipe messages,
 * each two writes and four fcntl calls, a wake-up of each thread, the
 * poll handle's epoll changes): about 50 system calls for the SPF, DKIM
 * and DMARC records of one message (issue 22); the copy costs none.
 *
 * What it cannot count: libunbound does not say whether an answer came
 * from its cache. mxd_dns_cache_hits_total counts queries for a name and
 * type that an earlier positive answer's TTL still covered (a table of
 * RESOLVER_HIT_SLOTS entries, newest wins): those are answered from the
 * cache unless unbound evicted them. Repeats of negative answers (cached
 * by unbound for their SOA's negative TTL, or 5 s without one) are not
 * counted. */
#include "dns/resolver.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>

#include "base/log.h"
#include "base/metrics.h"

#define RESOLVER_HIT_SLOTS        4096
#define RESOLVER_CACHE_SLOTS      1024
#define RESOLVER_CACHE_PACKET_MAX 4096
#define RESOLVER_CACHE_TTL_MAX    86400u /* unbound's cache-max-ttl */
#define RESOLVER_CACHE_NEG_MAX    3600u  /* unbound's cache-max-negative-ttl */
#define RCODE_NOERROR             0
#define RCODE_SERVFAIL            2
#define RCODE_NXDOMAIN            3

#define RESOLVER_STATUS_NAME(e, s) s,
static const char *const status_names[] = {RESOLVER_STATUSES(RESOLVER_STATUS_NAME)};
#undef RESOLVER_STATUS_NAME
#define RESOLVER_SEC_NAME(e, s) s,
static const char *const sec_names[] = {RESOLVER_SECS(RESOLVER_SEC_NAME)};
#undef RESOLVER_SEC_NAME

struct hit_slot {
    uint64_t key;
    uint64_t expires_ns;
};

/* One answer of the loop's cache (name: lower case, no trailing dot). */
struct cache_slot {
    uint64_t key; /* name_key; 0: empty */
    uint64_t expires_ns;
    char *name;
    int rrtype;
    enum resolver_status status;
    enum resolver_sec sec;
    int rcode;
    unsigned char *packet;
    size_t len;
};

struct resolver_poll {
    uv_poll_t h;
    struct resolver *r;
};

struct resolver {
    /* read-only after resolver_new */
    char *key;          /* the servers, space-separated ("" for resolv.conf), and the anchor */
    struct ub_ctx *ctx; /* NULL: set-up failed, every query is SERVFAIL */
    int fd;             /* ub_fd */
    struct resolver *next;
    /* private */
    uv_loop_t *loop;            /* the loop its handles live on */
    struct resolver_poll *poll; /* watching fd while queries are out */
    size_t out;                 /* queries given to libunbound and not answered */
    size_t handles;             /* open or closing handles (poll, timers) on loop */
    bool bg_started;            /* libunbound's thread exists */
    bool in_process;            /* inside ub_process */
    bool broken;                /* libunbound failed (its pipe): SERVFAIL from now on */
    struct hit_slot hits[RESOLVER_HIT_SLOTS];
    struct cache_slot *cache; /* RESOLVER_CACHE_SLOTS, made at the first answer kept */
};

struct resolver_query {
    struct resolver *r;
    uv_timer_t timer;
    resolver_cb cb;
    void *arg;
    int id;                    /* libunbound's async id */
    bool in_ub;                /* given to libunbound, not answered or cancelled */
    bool done;                 /* answered or cancelled: cb has run or never will */
    enum resolver_status fail; /* the answer when not given to libunbound */
    uint64_t t0;
    uint64_t key; /* name and type, for the hit table */
    /* answered from the loop's cache (its copy, freed with q) */
    struct resolver_answer cached;
    unsigned char *cached_packet;
    bool from_cache;
};

static struct resolver *resolvers; /* every resolver made; kept until exit */

/* unbound.conf(5) options for mxd's use.
 *
 * The local zones: unbound 1.17 answers localhost., test., invalid.,
 * onion., home.arpa. and the loopback reverse zones itself
 * (services/localzone.c, RFC 6761/6303/7686/8375), and the RFC 1918 and
 * other AS112 reverse zones unless unblock-lan-zones is set. mxd forwards
 * every name instead (its tests live under .test, and the configured
 * server is the authority on what exists): each default zone is
 * declared "transparent" without data, which keeps unbound's default out
 * and resolves every name in it normally. ("nodefault" would say the same,
 * but libunbound 1.17's ub_ctx_set_option stores the zone name with the
 * word "nodefault" still attached, so it never matches.) */
static const char *const options[][2] = {
    {"verbosity:", "0"},
    {"rrset-roundrobin:", "no"}, /* records in the order the server gave (SPF's 10-name limits) */
    {"outgoing-range:", "128"},  /* libunbound's 16 would queue queries behind silent ones */
    {"outgoing-num-tcp:", "16"}, /* truncated answers retried over TCP at once */
    {"msg-cache-size:", "4m"},
    {"rrset-cache-size:", "8m"},
    /* A forwarder that stopped answering is probed again while it is
     * "down" (one query at a time), and forgotten after a minute, so that
     * mxd sees it back within seconds, not after unbound's 15 minutes. */
    {"infra-keep-probing:", "yes"},
    {"infra-host-ttl:", "60"},
    {"unblock-lan-zones:", "yes"},
    {"insecure-lan-zones:", "yes"},
    {"local-zone:", "localhost. transparent"},
    {"local-zone:", "127.in-addr.arpa. transparent"},
    {"local-zone:", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa. "
                    "transparent"},
    {"local-zone:", "home.arpa. transparent"},
    {"local-zone:", "onion. transparent"},
    {"local-zone:", "test. transparent"},
    {"local-zone:", "invalid. transparent"},
};

const char *
resolver_status_name(enum resolver_status s)
{
    return (unsigned)s < sizeof(status_names) / sizeof(status_names[0]) ? status_names[s] : "?";
}

const char *
resolver_sec_name(enum resolver_sec s)
{
    return (unsigned)s < sizeof(sec_names) / sizeof(sec_names[0]) ? sec_names[s] : "?";
}

/* A context forwarding to servers (n == 0: resolv.conf), validating with
 * the trust anchor file anchor (NULL: none); NULL and *why when libunbound
 * refuses the set-up. */
static struct ub_ctx *
ctx_new(const char *const *servers, size_t n, const char *anchor, const char **why)
{
    struct ub_ctx *ctx = ub_ctx_create();
    int rc = 0;

    if (ctx == NULL) {
        *why = "ub_ctx_create failed";
        return NULL;
    }
    rc = ub_ctx_async(ctx, 1);
    for (size_t i = 0; rc == 0 && i < sizeof(options) / sizeof(options[0]); i++)
        rc = ub_ctx_set_option(ctx, options[i][0], options[i][1]);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = ub_ctx_set_fwd(ctx, servers[i]);
    if (rc == 0 && n == 0) {
        rc = ub_ctx_resolvconf(ctx, NULL);
        if (rc == UB_READFILE) /* no resolv.conf: a local server, as glibc assumes */
            rc = ub_ctx_set_fwd(ctx, "127.0.0.1");
    }
    if (rc == 0 && anchor != NULL)
        rc = ub_ctx_add_ta_file(ctx, anchor);
    if (rc == 0 && ub_fd(ctx) < 0)
        rc = UB_PIPE;
    if (rc != 0) {
        *why = ub_strerror(rc);
        ub_ctx_delete(ctx);
        return NULL;
    }
    return ctx;
}

static struct resolver *
resolver_make(const char *key, const char *const *servers, size_t n, const char *anchor)
{
    struct resolver *r = xcalloc(1, sizeof(*r));
    const char *why = NULL;

    r->key = xstrdup(key);
    r->fd = -1;
    r->ctx = ctx_new(servers, n, anchor, &why);
    if (r->ctx != NULL) {
        r->fd = ub_fd(r->ctx);
    } else {
        log_msg(LOG_ERR, NULL, "dns",
                "resolver set-up failed forwarders=\"%s\" trust_anchor=%s error=\"%s\"",
                n > 0 ? key : "/etc/resolv.conf", anchor ? anchor : "none", why);
    }
    return r;
}

/* The servers joined by spaces, then " ta=FILE" with an anchor (caller
 * frees). */
static char *
servers_key(const char *const *servers, size_t n, const char *anchor)
{
    size_t len = 1 + (anchor ? strlen(anchor) + 4 : 0);
    char *key;

    for (size_t i = 0; i < n; i++)
        len += strlen(servers[i]) + 1;
    key = xmalloc(len);
    key[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(key, " ");
        strcat(key, servers[i]);
    }
    if (anchor != NULL) {
        strcat(key, " ta=");
        strcat(key, anchor);
    }
    return key;
}

struct resolver *
resolver_new(uv_loop_t *loop, const char *const *servers, size_t n)
{
    char *key = servers_key(servers, n, NULL);
    struct resolver *r = resolver_make(key, servers, n, NULL);

    free(key);
    r->loop = loop;
    return r;
}

void
resolver_free(struct resolver *r)
{
    if (r == NULL)
        return;
    if (r->handles > 0 || r->out > 0)
        mxd_panic("resolver_free: queries or handles still out");
    if (r->ctx != NULL)
        ub_ctx_delete(r->ctx);
    for (size_t i = 0; r->cache != NULL && i < RESOLVER_CACHE_SLOTS; i++) {
        free(r->cache[i].name);
        free(r->cache[i].packet);
    }
    free(r->cache);
    free(r->key);
    free(r);
}

static struct resolver *
get_with(uv_loop_t *loop, const char *const *servers, size_t n, const char *anchor)
{
    struct resolver *r;
    char *key;

    if (loop == NULL)
        mxd_panic("resolver_get: NULL loop");
    key = servers_key(servers, n, anchor);
    for (r = resolvers; r != NULL; r = r->next) {
        if (strcmp(r->key, key) == 0)
            break;
    }
    if (r == NULL) {
        r = resolver_make(key, servers, n, anchor);
        r->next = resolvers;
        resolvers = r;
        if (r->ctx != NULL)
            log_msg(LOG_INFO, NULL, "dns", "resolver ready forwarders=\"%s\" trust_anchor=%s",
                    n > 0 ? key : "/etc/resolv.conf", anchor ? anchor : "none");
    }
    free(key);
    if (r->loop != loop) {
        if (r->handles > 0)
            mxd_panic("resolver: in use on another loop");
        r->loop = loop;
    }
    return r;
}

struct resolver *
resolver_get_servers(uv_loop_t *loop, const char *const *servers, size_t n)
{
    return get_with(loop, servers, n, NULL);
}

static struct resolver *
get_conf(uv_loop_t *loop, const struct conf *conf, const char *anchor)
{
    char bufs[8][RESOLVER_SERVER_MAX];
    const char *servers[8];
    size_t n = 0;

    for (size_t i = 0; i < conf->ndns_servers && n < sizeof(servers) / sizeof(servers[0]); i++) {
        const struct conf_endpoint *ep = &conf->dns_servers[i];

        if (ep->host == NULL)
            continue;
        snprintf(bufs[n], sizeof(bufs[n]), "%s@%u", ep->host, (unsigned)ep->port);
        servers[n] = bufs[n];
        n++;
    }
    return get_with(loop, servers, n, anchor);
}

struct resolver *
resolver_get(uv_loop_t *loop, const struct conf *conf)
{
    return get_conf(loop, conf, NULL);
}

struct resolver *
resolver_get_dnssec(uv_loop_t *loop, const struct conf *conf)
{
    return get_conf(loop, conf,
                    conf->dnssec_trust_anchor ? conf->dnssec_trust_anchor : CONF_DNSSEC_ROOT_KEY);
}

size_t
resolver_pending(const struct resolver *r)
{
    return r->out;
}

unsigned
resolver_timeout_until(uint64_t deadline_ns)
{
    uint64_t now = uv_hrtime(), left_ms;

    if (deadline_ns <= now)
        return 0;
    left_ms = (deadline_ns - now) / 1000000;
    if (left_ms == 0)
        return 0;
    return left_ms < RESOLVER_TIMEOUT_MS ? (unsigned)left_ms : RESOLVER_TIMEOUT_MS;
}

/* ---- the hit table ----------------------------------------------------- */

/* FNV-1a of the name (ASCII lower case, without a trailing dot) and type. */
static uint64_t
name_key(const char *name, int rrtype)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t len = strlen(name);

    if (len > 0 && name[len - 1] == '.')
        len--;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];

        h ^= c >= 'A' && c <= 'Z' ? c + 32u : c;
        h *= 0x100000001b3ull;
    }
    h ^= (uint64_t)(unsigned)rrtype << 32;
    h *= 0x100000001b3ull;
    return h != 0 ? h : 1;
}

static bool
hit_expected(const struct resolver *r, uint64_t key, uint64_t now)
{
    const struct hit_slot *s = &r->hits[key % RESOLVER_HIT_SLOTS];

    return s->key == key && now < s->expires_ns;
}

static void
hit_remember(struct resolver *r, uint64_t key, uint32_t ttl, uint64_t now)
{
    struct hit_slot *s = &r->hits[key % RESOLVER_HIT_SLOTS];

    s->key = key;
    s->expires_ns = now + (uint64_t)ttl * 1000000000u;
}

/* ---- the answer cache -------------------------------------------------- */

/* name in lower case without a trailing dot into out (size
 * RESOLVER_NAME_MAX); false when it does not fit. */
static bool
cache_name(const char *name, char *out)
{
    size_t len = strlen(name);

    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len >= RESOLVER_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];

        out[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
    }
    out[len] = '\0';
    return true;
}

static const struct cache_slot *
cache_find(const struct resolver *r, uint64_t key, const char *name, int rrtype, uint64_t now)
{
    const struct cache_slot *s;
    char n[RESOLVER_NAME_MAX];

    if (r->cache == NULL)
        return NULL;
    s = &r->cache[key % RESOLVER_CACHE_SLOTS];
    if (s->key != key || s->rrtype != rrtype || now >= s->expires_ns || !cache_name(name, n) ||
        strcmp(s->name, n) != 0)
        return NULL;
    return s;
}

/* Keeps a (the answer to name's rrtype question) when it may be. */
static void
cache_store(struct resolver *r, uint64_t key, const char *name, int rrtype,
            const struct resolver_answer *a, uint64_t now)
{
    struct cache_slot *s;
    char n[RESOLVER_NAME_MAX];
    uint32_t ttl = a->ttl;

    if (a->status != RESOLVER_OK && a->status != RESOLVER_NODATA && a->status != RESOLVER_NXDOMAIN)
        return;
    if (a->sec == RESOLVER_SEC_BOGUS || ttl == 0 || a->packet == NULL || a->len == 0 ||
        a->len > RESOLVER_CACHE_PACKET_MAX || name == NULL || !cache_name(name, n))
        return;
    if (ttl > (a->status == RESOLVER_OK ? RESOLVER_CACHE_TTL_MAX : RESOLVER_CACHE_NEG_MAX))
        ttl = a->status == RESOLVER_OK ? RESOLVER_CACHE_TTL_MAX : RESOLVER_CACHE_NEG_MAX;
    if (r->cache == NULL)
        r->cache = xcalloc(RESOLVER_CACHE_SLOTS, sizeof(*r->cache));
    s = &r->cache[key % RESOLVER_CACHE_SLOTS];
    free(s->name);
    free(s->packet);
    s->key = key;
    s->expires_ns = now + (uint64_t)ttl * 1000000000u;
    s->name = xstrdup(n);
    s->rrtype = rrtype;
    s->status = a->status;
    s->sec = a->sec;
    s->rcode = a->rcode;
    s->packet = xmalloc(a->len);
    memcpy(s->packet, a->packet, a->len);
    s->len = a->len;
}

/* q answered from s at its timer: a copy, with what is left of the TTL. */
static void
cache_answer(struct resolver_query *q, const struct cache_slot *s, uint64_t now)
{
    struct resolver_answer *a = &q->cached;

    memset(a, 0, sizeof(*a));
    a->status = s->status;
    a->sec = s->sec;
    a->rcode = s->rcode;
    q->cached_packet = xmalloc(s->len);
    memcpy(q->cached_packet, s->packet, s->len);
    a->packet = q->cached_packet;
    a->len = s->len;
    a->ttl = (uint32_t)((s->expires_ns - now + 999999999u) / 1000000000u);
    q->from_cache = true;
}

/* ---- the poll handle --------------------------------------------------- */

static void
on_poll_closed(uv_handle_t *h)
{
    struct resolver_poll *p = h->data;

    p->r->handles--;
    free(p);
}

static void
poll_detach_if_idle(struct resolver *r)
{
    struct resolver_poll *p = r->poll;

    if (p == NULL || r->out > 0 || r->in_process)
        return;
    r->poll = NULL;
    uv_close((uv_handle_t *)&p->h, on_poll_closed);
}

static void
on_poll(uv_poll_t *h, int status, int events)
{
    struct resolver_poll *p = h->data;
    struct resolver *r = p->r;
    int rc;

    (void)status;
    (void)events;
    r->in_process = true;
    rc = ub_process(r->ctx); /* runs on_ub_answer for each answer waiting */
    r->in_process = false;
    if (rc != 0 && !r->broken) {
        /* its thread is gone: what is out times out, new queries fail */
        log_msg(LOG_ERR, NULL, "dns", "resolver ub_process failed error=\"%s\"", ub_strerror(rc));
        r->broken = true;
    }
    if (r->broken)
        uv_poll_stop(h);
    poll_detach_if_idle(r);
}

static void
poll_attach(struct resolver *r)
{
    struct resolver_poll *p;

    if (r->poll != NULL)
        return;
    p = xcalloc(1, sizeof(*p));
    p->r = r;
    /* A poll handle being closed has already left the loop's fd table, so
     * a new one for the same fd may start before the old one's callback. */
    if (uv_poll_init(r->loop, &p->h, r->fd) != 0)
        mxd_panic("resolver: uv_poll_init failed");
    p->h.data = p;
    if (uv_poll_start(&p->h, UV_READABLE, on_poll) != 0)
        mxd_panic("resolver: uv_poll_start failed");
    r->handles++;
    r->poll = p;
}

/* ---- queries ----------------------------------------------------------- */

static void
on_query_closed(uv_handle_t *h)
{
    struct resolver_query *q = h->data;

    q->r->handles--;
    free(q->cached_packet);
    free(q);
}

/* The one callback of q; q is freed once its timer has closed. */
static void
finish(struct resolver_query *q, struct resolver_answer *a)
{
    q->done = true;
    uv_timer_stop(&q->timer);
    a->ms = (double)(uv_hrtime() - q->t0) / 1e6;
    metrics_observe(METRICS_H_DNS_SECONDS, a->ms / 1000.0);
    metrics_count(METRICS_F_DNS_ANSWERS, resolver_status_name(a->status), NULL);
    if (a->status == RESOLVER_TIMEOUT)
        metrics_add(METRICS_DNS_TIMEOUTS, 1);
    q->cb(q->arg, a);
    uv_close((uv_handle_t *)&q->timer, on_query_closed);
}

/* libunbound 1.17 (libworker.c, fill_res): an answer record with empty
 * rdata, such as a TXT without any string (RFC 1035 3.3.14 wants one, but
 * servers serve it), fails its copy (memdup of 0 octets is NULL, taken for
 * out of memory) and the result says SERVFAIL, while answer_packet holds
 * the server's NOERROR answer (util/net_help.c memdup). True for such a
 * result: the reply is what the server said (never for a bogus answer). */
static bool
unbound_empty_rdata(const struct ub_result *res)
{
    const unsigned char *h = res->answer_packet;

    return res->rcode == RCODE_SERVFAIL && !res->bogus && h != NULL && res->answer_len >= 12 &&
           (h[3] & 0x0f) == RCODE_NOERROR && (h[6] != 0 || h[7] != 0);
}

static void
answer_from(struct resolver_answer *a, int err, const struct ub_result *res)
{
    memset(a, 0, sizeof(*a));
    a->rcode = -1;
    a->status = RESOLVER_SERVFAIL;
    if (err != 0 || res == NULL)
        return;
    a->rcode = res->rcode;
    if (res->rcode == RCODE_NOERROR)
        a->status = res->havedata ? RESOLVER_OK : RESOLVER_NODATA;
    else if (res->rcode == RCODE_NXDOMAIN)
        a->status = RESOLVER_NXDOMAIN;
    else if (unbound_empty_rdata(res)) {
        a->rcode = RCODE_NOERROR; /* the reply's */
        a->status = RESOLVER_OK;
    }
    a->sec = res->secure  ? RESOLVER_SEC_SECURE
             : res->bogus ? RESOLVER_SEC_BOGUS
                          : RESOLVER_SEC_INSECURE;
    a->why_bogus = res->why_bogus;
    a->packet = res->answer_packet;
    a->len = res->answer_len > 0 ? (size_t)res->answer_len : 0;
    a->ttl = res->ttl > 0 ? (uint32_t)res->ttl : 0;
}

/* libunbound's callback, from inside ub_process (no lock of its held). */
static void
on_ub_answer(void *arg, int err, struct ub_result *res)
{
    struct resolver_query *q = arg;
    struct resolver *r = q->r;
    struct resolver_answer a;

    q->in_ub = false;
    r->out--;
    answer_from(&a, err, res);
    if (a.ttl > 0 && a.status == RESOLVER_OK)
        hit_remember(r, q->key, a.ttl, uv_hrtime());
    if (err == 0 && res != NULL && res->qname != NULL && name_key(res->qname, res->qtype) == q->key)
        cache_store(r, q->key, res->qname, res->qtype, &a, uv_hrtime());
    finish(q, &a);
    ub_resolve_free(res);
}

static void
on_timer(uv_timer_t *t)
{
    struct resolver_query *q = t->data;
    struct resolver *r = q->r;
    struct resolver_answer a;

    if (q->from_cache) {
        finish(q, &q->cached);
        return;
    }
    memset(&a, 0, sizeof(a));
    a.rcode = -1;
    a.status = q->fail;
    if (q->in_ub) {
        /* threaded libunbound: the answer, when it comes, is dropped */
        (void)ub_cancel(r->ctx, q->id);
        q->in_ub = false;
        r->out--;
        a.status = RESOLVER_TIMEOUT;
    }
    finish(q, &a);
    poll_detach_if_idle(r);
}

/* ub_resolve_async; the first call starts libunbound's thread, which must
 * not take the signals the loop handles. */
static int
submit(struct resolver *r, const char *name, int rrtype, struct resolver_query *q)
{
    sigset_t all, old;
    int rc;

    if (r->bg_started)
        return ub_resolve_async(r->ctx, name, rrtype, 1, q, on_ub_answer, &q->id);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = ub_resolve_async(r->ctx, name, rrtype, 1, q, on_ub_answer, &q->id);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    r->bg_started = rc == 0;
    return rc;
}

struct resolver_query *
resolver_query(struct resolver *r, const char *name, int rrtype, unsigned timeout_ms,
               resolver_cb cb, void *arg)
{
    struct resolver_query *q;
    size_t len;

    if (r == NULL || name == NULL || cb == NULL)
        mxd_panic("resolver_query: NULL argument");
    q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->t0 = uv_hrtime();
    q->fail = RESOLVER_SERVFAIL;
    q->key = name_key(name, rrtype);
    if (uv_timer_init(r->loop, &q->timer) != 0)
        mxd_panic("resolver: uv_timer_init failed");
    q->timer.data = q;
    r->handles++;
    metrics_add(METRICS_DNS_QUERIES, 1);
    len = strlen(name);
    if (r->ctx != NULL && !r->broken && len > 0 && len < RESOLVER_NAME_MAX) {
        const struct cache_slot *hit = cache_find(r, q->key, name, rrtype, q->t0);

        if (hit != NULL) {
            metrics_add(METRICS_DNS_CACHE_HITS, 1);
            cache_answer(q, hit, q->t0);
        } else {
            int rc;

            if (hit_expected(r, q->key, q->t0))
                metrics_add(METRICS_DNS_CACHE_HITS, 1);
            rc = submit(r, name, rrtype, q);
            if (rc == 0) {
                q->in_ub = true;
                r->out++;
                poll_attach(r);
            } else {
                log_msg(LOG_ERR, NULL, "dns", "resolver query failed error=\"%s\"",
                        ub_strerror(rc));
                r->broken = true;
            }
        }
    }
    /* not given to libunbound: answered from the cache, or SERVFAIL, from
     * the next iteration */
    if (uv_timer_start(&q->timer, on_timer,
                       !q->in_ub        ? 0
                       : timeout_ms > 0 ? timeout_ms
                                        : RESOLVER_TIMEOUT_MS,
                       0) != 0)
        mxd_panic("resolver: uv_timer_start failed");
    return q;
}

void
resolver_cancel(struct resolver_query *q)
{
    struct resolver *r;

    if (q == NULL || q->done)
        return;
    r = q->r;
    q->done = true;
    if (q->in_ub) {
        (void)ub_cancel(r->ctx, q->id);
        q->in_ub = false;
        r->out--;
    }
    uv_timer_stop(&q->timer);
    uv_close((uv_handle_t *)&q->timer, on_query_closed);
    poll_detach_if_idle(r);
}
