/* dns: MX, A and AAAA lookups for forwarding from a backup MX, through the
 * resolver (resolver.h: libunbound, asynchronous, on the loop).
 *
 * Owns each struct dns_job (the kept MX hosts, their addresses as they
 * come in, and the result under construction) from dns_mx_async until its
 * callback; the result then belongs to the callback. Loop thread only.
 * A job asks for the MX records, then for every kept host's A and AAAA
 * records at once; every query gets the time left of DNS_JOB_BUDGET_NS
 * (at most RESOLVER_TIMEOUT_MS each). Every job ends in exactly one
 * callback, never from inside dns_mx_async: 0, MXD_ENOENT (NXDOMAIN, a
 * null MX, or no address for any kept host and no temporary failure) or
 * MXD_EIO (SERVFAIL, timeout, refusal, malformed reply: defer).
 *
 * It does not follow CNAMEs itself (the resolver does), log (the caller
 * logs the outcome), or support cancellation. */
#include "dns/dns.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dnsmsg.h"
#include "dns/resolver.h"

#define DNS_PORT_SMTP 25
/* Bounds an MX lookup: its MX query, then its address queries side by side. */
#define DNS_JOB_BUDGET_NS (20ull * 1000 * 1000 * 1000)

/* Copies a name without one trailing dot; false if empty or too long. */
static bool
copy_name(char *dst, const char *src)
{
    size_t len = src != NULL ? strlen(src) : 0;

    if (len > 0 && src[len - 1] == '.')
        len--;
    if (len >= MX_NAME_MAX) {
        dst[0] = '\0';
        return false;
    }
    if (len > 0)
        memcpy(dst, src, len);
    dst[len] = '\0';
    return len > 0;
}

/* ---- MX lookups through the resolver -------------------------------------- */

/* One address query of one kept host. */
struct addr_query {
    struct dns_job *job;
    size_t host;
    bool aaaa;
};

struct dns_job {
    dns_mx_cb cb;
    void *arg;
    struct resolver *r;
    char domain[MX_NAME_MAX];
    char self[MX_NAME_MAX];
    uint32_t rng;         /* xorshift32 state for mx_select */
    uint64_t deadline_ns; /* no query after this uv_hrtime() */
    int status;           /* MXD_ENOENT preset for a bad domain */
    uv_timer_t defer;     /* answers a bad domain from the loop */
    struct dns_mx_result *res;
    struct mx_host hosts[DNS_MAX_HOSTS]; /* the kept hosts, in order */
    size_t nhosts;
    struct addr_query aq[DNS_MAX_HOSTS][2];
    struct sockaddr_storage addrs[DNS_MAX_HOSTS][2][DNS_MAX_ADDRS]; /* A, AAAA */
    size_t naddrs[DNS_MAX_HOSTS][2];
    enum dns_sec sec[DNS_MAX_HOSTS]; /* of each host's address answers so far */
    size_t pending;                  /* address queries out */
    bool temp;                       /* an address query failed temporarily */
};

static unsigned
job_rand(void *arg)
{
    uint32_t *x = arg;

    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void
job_done(struct dns_job *job, int rc)
{
    struct dns_mx_result *res = job->res;
    dns_mx_cb cb = job->cb;
    void *arg = job->arg;

    if (rc != 0)
        memset(res, 0, sizeof(*res));
    free(job);
    cb(arg, rc, res);
}

/* Every address query is back: the targets, in the kept hosts' order,
 * each host's A addresses before its AAAA ones. None: MXD_EIO if a lookup
 * failed temporarily, else MXD_ENOENT. */
static void
addrs_done(struct dns_job *job)
{
    struct dns_mx_result *res = job->res;

    for (size_t i = 0; i < job->nhosts; i++) {
        struct dns_target *t = &res->targets[res->ntargets];

        memset(t, 0, sizeof(*t));
        t->mx = job->hosts[i];
        t->sec = job->sec[i];
        for (size_t k = 0; k < 2; k++) {
            for (size_t j = 0; j < job->naddrs[i][k] && t->naddrs < DNS_MAX_ADDRS; j++)
                t->addrs[t->naddrs++] = job->addrs[i][k][j];
        }
        if (t->naddrs > 0)
            res->ntargets++;
    }
    if (job->nhosts > 0 && res->ntargets == 0)
        job_done(job, job->temp ? MXD_EIO : MXD_ENOENT);
    else
        job_done(job, 0);
}

/* The verdict of a set of answers: bogus when one is, secure when all are. */
static enum dns_sec
sec_join(enum dns_sec so_far, enum resolver_sec sec)
{
    if (so_far == DNS_SEC_BOGUS || sec == RESOLVER_SEC_BOGUS)
        return DNS_SEC_BOGUS;
    return so_far == DNS_SEC_SECURE && sec == RESOLVER_SEC_SECURE ? DNS_SEC_SECURE
                                                                  : DNS_SEC_INSECURE;
}

static void
on_addr(void *arg, const struct resolver_answer *a)
{
    struct addr_query *q = arg;
    struct dns_job *job = q->job;
    size_t *n = &job->naddrs[q->host][q->aaaa];

    job->sec[q->host] = sec_join(job->sec[q->host], a->sec);
    if (a->status == RESOLVER_SERVFAIL || a->status == RESOLVER_TIMEOUT ||
        (a->status == RESOLVER_OK &&
         dnsmsg_addrs(a->packet, a->len, q->aaaa, DNS_PORT_SMTP, job->addrs[q->host][q->aaaa], n,
                      DNS_MAX_ADDRS) != 0))
        job->temp = true;
    if (--job->pending == 0)
        addrs_done(job);
}

/* Asks for every kept host's A and AAAA records at once. */
static void
resolve_hosts(struct dns_job *job)
{
    unsigned timeout = resolver_timeout_until(job->deadline_ns);

    if (job->nhosts == 0 || timeout == 0) {
        job->temp = timeout == 0;
        addrs_done(job);
        return;
    }
    job->pending = 2 * job->nhosts;
    for (size_t i = 0; i < job->nhosts; i++) {
        job->sec[i] = DNS_SEC_SECURE;
        for (size_t k = 0; k < 2; k++) {
            struct addr_query *q = &job->aq[i][k];

            q->job = job;
            q->host = i;
            q->aaaa = k == 1;
            (void)resolver_query(job->r, job->hosts[i].name,
                                 q->aaaa ? RESOLVER_TYPE_AAAA : RESOLVER_TYPE_A, timeout, on_addr,
                                 q);
        }
    }
}

/* The MX records, or the implicit MX (RFC 5321 5.1) on NODATA. */
static void
on_mx(void *arg, const struct resolver_answer *a)
{
    struct dns_job *job = arg;
    struct mx_host *hosts = NULL;
    size_t n = 0, null_mx = 0, kept;

    job->res->mx_sec = sec_join(DNS_SEC_SECURE, a->sec);
    switch (a->status) {
    case RESOLVER_NXDOMAIN:
        job_done(job, MXD_ENOENT);
        return;
    case RESOLVER_SERVFAIL:
    case RESOLVER_TIMEOUT:
        job_done(job, MXD_EIO);
        return;
    case RESOLVER_OK:
        if (dnsmsg_mx(a->packet, a->len, &hosts, &n, &null_mx) != 0) {
            free(hosts);
            job_done(job, MXD_EIO);
            return;
        }
        break;
    case RESOLVER_NODATA:
        break;
    }
    if (n == 0 && null_mx > 0) {
        free(hosts);
        job_done(job, MXD_ENOENT); /* RFC 7505: the domain accepts no mail */
        return;
    }
    if (n == 0) {
        hosts = xcalloc(1, sizeof(*hosts));
        strcpy(hosts[0].name, job->domain);
        n = 1;
    }
    /* unbound compresses names case-insensitively when it writes the
     * answer, so a host name can come back in the question's case
     * ("mx1.Example.Org" for a query of Example.Org): lower case them. */
    for (size_t i = 0; i < n; i++) {
        for (char *c = hosts[i].name; *c != '\0'; c++)
            *c = *c >= 'A' && *c <= 'Z' ? (char)(*c + 32) : *c;
    }
    kept = mx_select(hosts, n, job->self, job_rand, &job->rng, &job->res->self_listed);
    job->nhosts = kept < DNS_MAX_HOSTS ? kept : DNS_MAX_HOSTS;
    memcpy(job->hosts, hosts, job->nhosts * sizeof(*hosts));
    free(hosts);
    resolve_hosts(job);
}

static void
on_defer_closed(uv_handle_t *h)
{
    struct dns_job *job = h->data;

    job_done(job, job->status);
}

static void
on_defer(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, on_defer_closed);
}

static void
mx_start(uv_loop_t *loop, const struct conf *conf, const char *domain, const char *self,
         bool dnssec, dns_mx_cb cb, void *arg)
{
    struct dns_job *job;

    if (loop == NULL || conf == NULL || domain == NULL || cb == NULL)
        mxd_panic("dns_mx_async: NULL argument");
    job = xcalloc(1, sizeof(*job));
    job->cb = cb;
    job->arg = arg;
    job->res = xcalloc(1, sizeof(*job->res));
    job->r = dnssec ? resolver_get_dnssec(loop, conf) : resolver_get(loop, conf);
    job->deadline_ns = uv_hrtime() + DNS_JOB_BUDGET_NS;
    (void)copy_name(job->self, self);
    job->rng = (uint32_t)uv_hrtime() ^ (uint32_t)(uintptr_t)job;
    if (job->rng == 0)
        job->rng = 0x9e3779b9u; /* xorshift must not start at 0 */
    if (!copy_name(job->domain, domain)) {
        job->status = MXD_ENOENT; /* still answered from the loop: cb is never synchronous */
        if (uv_timer_init(loop, &job->defer) != 0)
            mxd_panic("dns: uv_timer_init failed");
        job->defer.data = job;
        if (uv_timer_start(&job->defer, on_defer, 0, 0) != 0)
            mxd_panic("dns: uv_timer_start failed");
        return;
    }
    (void)resolver_query(job->r, job->domain, RESOLVER_TYPE_MX,
                         resolver_timeout_until(job->deadline_ns), on_mx, job);
}

void
dns_mx_async(uv_loop_t *loop, const struct conf *conf, const char *domain, const char *self,
             dns_mx_cb cb, void *arg)
{
    mx_start(loop, conf, domain, self, false, cb, arg);
}

void
dns_mx_async_dnssec(uv_loop_t *loop, const struct conf *conf, const char *domain, const char *self,
                    dns_mx_cb cb, void *arg)
{
    mx_start(loop, conf, domain, self, true, cb, arg);
}

/* ---- TLSA lookups (DANE) ---------------------------------------------------- */

/* One TLSA lookup: the TLSA query, and with check_addrs the host's A and
 * AAAA queries, all at once; decided when the last is back. */
struct tlsa_job;
struct tlsa_query {
    struct tlsa_job *job;
    int kind; /* 0 TLSA, 1 A, 2 AAAA */
};

struct tlsa_job {
    dns_tlsa_cb cb;
    void *arg;
    struct dns_tlsa_result *res;
    struct tlsa_query q[3];
    unsigned pending;
    bool check_addrs;
    enum dns_sec addr_sec;
    unsigned addr_fail; /* address queries that failed (SERVFAIL, timeout) */
    enum resolver_status status;
    enum resolver_sec sec;
    char name[MX_NAME_MAX + 16]; /* _<port>._tcp.<host> */
};

static void
on_tlsa_record(void *arg, const unsigned char *rdata, size_t len)
{
    struct dns_tlsa_result *res = arg;

    if (res->n >= DNS_TLSA_MAX)
        return;
    res->rdata[res->n] = xmalloc(len > 0 ? len : 1);
    if (len > 0)
        memcpy(res->rdata[res->n], rdata, len);
    res->len[res->n++] = len;
}

/* RFC 7672 2.2: the address records must be secure for TLSA records to
 * count; a bogus answer anywhere defers. */
static void
tlsa_decide(struct tlsa_job *job)
{
    struct dns_tlsa_result *res = job->res;

    if (job->check_addrs && job->addr_sec == DNS_SEC_BOGUS) {
        res->state = DNS_DANE_BOGUS;
        snprintf(res->why, sizeof(res->why), "DNSSEC validation of the address records failed");
    } else if (job->check_addrs && job->addr_fail == 2) {
        res->state = DNS_DANE_TEMP;
        snprintf(res->why, sizeof(res->why), "address lookup failed");
    } else if (job->check_addrs && job->addr_sec != DNS_SEC_SECURE) {
        res->state = DNS_DANE_NONE;
        snprintf(res->why, sizeof(res->why), "address records not DNSSEC-signed");
    } else if (job->sec == RESOLVER_SEC_BOGUS) {
        res->state = DNS_DANE_BOGUS;
        snprintf(res->why, sizeof(res->why), "DNSSEC validation of %.150s failed", job->name);
    } else if (job->status == RESOLVER_SERVFAIL || job->status == RESOLVER_TIMEOUT) {
        res->state = DNS_DANE_TEMP;
        snprintf(res->why, sizeof(res->why), "TLSA lookup of %.150s failed (%.16s)", job->name,
                 resolver_status_name(job->status));
    } else if (job->sec != RESOLVER_SEC_SECURE) {
        res->state = DNS_DANE_NONE;
        snprintf(res->why, sizeof(res->why), "%.150s not DNSSEC-signed", job->name);
    } else if (job->status != RESOLVER_OK) {
        res->state = DNS_DANE_NONE;
        snprintf(res->why, sizeof(res->why), "no TLSA records at %.150s", job->name);
    } else {
        res->state = DNS_DANE_RECORDS;
    }
}

static void
tlsa_done(struct tlsa_job *job)
{
    struct dns_tlsa_result *res = job->res;
    dns_tlsa_cb cb = job->cb;
    void *arg = job->arg;

    if (res->state != DNS_DANE_RECORDS) {
        for (size_t i = 0; i < res->n; i++)
            free(res->rdata[i]);
        res->n = 0;
    }
    free(job);
    cb(arg, res);
}

static void
on_tlsa(void *arg, const struct resolver_answer *a)
{
    struct tlsa_query *q = arg;
    struct tlsa_job *job = q->job;

    if (q->kind == 0) {
        job->status = a->status;
        job->sec = a->sec;
        if (a->status == RESOLVER_OK && a->sec == RESOLVER_SEC_SECURE &&
            dnsmsg_rdata(a->packet, a->len, RESOLVER_TYPE_TLSA, on_tlsa_record, job->res) != 0)
            job->status = RESOLVER_SERVFAIL; /* a malformed reply: as a failed lookup */
        if (job->status == RESOLVER_OK && job->res->n == 0)
            job->status = RESOLVER_NODATA; /* records of other types only (a CNAME) */
    } else {
        job->addr_sec = sec_join(job->addr_sec, a->sec);
        job->addr_fail += a->status == RESOLVER_SERVFAIL || a->status == RESOLVER_TIMEOUT;
    }
    if (--job->pending > 0)
        return;
    tlsa_decide(job);
    tlsa_done(job);
}

void
dns_tlsa_async(uv_loop_t *loop, const struct conf *conf, const char *host, unsigned port,
               bool check_addrs, dns_tlsa_cb cb, void *arg)
{
    struct tlsa_job *job;
    struct resolver *r;
    char name[MX_NAME_MAX];

    if (loop == NULL || conf == NULL || host == NULL || cb == NULL)
        mxd_panic("dns_tlsa_async: NULL argument");
    job = xcalloc(1, sizeof(*job));
    job->cb = cb;
    job->arg = arg;
    job->res = xcalloc(1, sizeof(*job->res));
    job->check_addrs = check_addrs;
    job->addr_sec = DNS_SEC_SECURE;
    (void)copy_name(name, host); /* an empty name fails in the resolver: TEMP */
    snprintf(job->name, sizeof(job->name), "_%u._tcp.%s", port, name);
    r = resolver_get_dnssec(loop, conf);
    job->pending = check_addrs ? 3 : 1;
    for (int k = 0; k < (int)job->pending; k++) {
        static const int types[] = {RESOLVER_TYPE_TLSA, RESOLVER_TYPE_A, RESOLVER_TYPE_AAAA};

        job->q[k].job = job;
        job->q[k].kind = k;
        (void)resolver_query(r, k == 0 ? job->name : name, types[k], 0, on_tlsa, &job->q[k]);
    }
}

void
dns_tlsa_free(struct dns_tlsa_result *res)
{
    if (res == NULL)
        return;
    for (size_t i = 0; i < res->n; i++)
        free(res->rdata[i]);
    free(res);
}
