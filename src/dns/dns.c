/* dns: MX, A and AAAA lookups for forwarding from a backup MX, with glibc's
 * libresolv on a lookup thread (lookup.h), and the resolver set-up
 * (dns_res_open, dns_res_fit, dns_txt_each) the sender checks share.
 *
 * Owns each struct dns_job (a private resolver state, a reply buffer and the
 * result under construction) from dns_mx_async until its callback; the
 * result then belongs to the callback. dns_mx_async and the callback run on
 * the loop thread, lookup_work on a lookup thread; the job is the only
 * state they share and it changes hands through lookup_queue. Every job
 * ends in exactly one callback: 0, MXD_ENOENT (NXDOMAIN, a null MX, or no
 * address for any kept host and no temporary failure) or MXD_EIO (SERVFAIL,
 * timeout, refusal, malformed reply: defer). Resolver timeouts are 2 s x 2
 * tries per server, and no new MX host is tried after DNS_JOB_BUDGET_NS, so
 * a job holds a lookup thread for well under a minute at worst.
 *
 * It does not cache, follow CNAMEs itself (the recursive server does),
 * validate DNSSEC, log (the caller logs the outcome), or support
 * cancellation. conf->dns_servers beyond the first MAXNS (3) are ignored;
 * IPv6 servers rely on glibc >= 2.26's _u._ext.nsaddrs convention. */
#define _DEFAULT_SOURCE
#include "dns/dns.h"

#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/metrics.h"
#include "dns/dnsmsg.h"
#include "dns/lookup.h"

#if !defined(__GLIBC__) || !__GLIBC_PREREQ(2, 26)
#error "dns.c needs glibc >= 2.26 (resolver name server layout)"
#endif

_Static_assert(DNS_MAXNS == MAXNS, "DNS_MAXNS must be glibc's MAXNS");

#define DNS_ANS_MAX   NS_MAXMSG
#define DNS_PORT_SMTP 25
#define DNS_RETRANS_S 2 /* seconds per try and server (glibc: RES_TIMEOUT) */
#define DNS_TRIES     2
/* Bounds the time a job holds a lookup thread: each query may take 2 tries
 * x 2 s per server when servers are silent. */
#define DNS_JOB_BUDGET_NS (20ull * 1000 * 1000 * 1000)

struct dns_job {
    /* set by dns_mx_async, read-only afterwards */
    struct lookup_job work;
    dns_mx_cb cb;
    void *arg;
    char domain[MX_NAME_MAX];
    char self[MX_NAME_MAX];
    struct dns_servers servers;
    /* the worker's until lookup_done */
    uint32_t rng;                   /* xorshift32 state for mx_select */
    uint64_t deadline_ns;           /* uv_hrtime() after which no new host is tried */
    int status;                     /* MXD_ENOENT preset by dns_mx_async for a bad domain */
    struct dns_mx_result *res;      /* handed to cb */
    unsigned char ans[DNS_ANS_MAX]; /* reply buffer */
};

enum dns_q { DNS_Q_OK, DNS_Q_NXDOMAIN, DNS_Q_NODATA, DNS_Q_TEMP };

static unsigned
job_rand(void *arg)
{
    uint32_t *x = arg;

    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* Replaces the resolv.conf servers res_ninit loaded. glibc >= 2.26: an IPv4
 * server lives in nsaddr_list[i] (res_send makes its own copy); an IPv6 one
 * has nsaddr_list[i].sin_family == 0 and a malloc'd _u._ext.nsaddrs[i],
 * which res_nclose frees for i < nscount. */
static void
set_servers(res_state rs, const struct dns_servers *sv)
{
    for (int i = 0; i < rs->nscount && i < MAXNS; i++) {
        free(rs->_u._ext.nsaddrs[i]);
        rs->_u._ext.nsaddrs[i] = NULL;
    }
    for (size_t i = 0; i < sv->n; i++) {
        const struct sockaddr_storage *ss = &sv->addrs[i];

        memset(&rs->nsaddr_list[i], 0, sizeof(rs->nsaddr_list[i]));
        if (ss->ss_family == AF_INET) {
            memcpy(&rs->nsaddr_list[i], ss, sizeof(struct sockaddr_in));
        } else {
            rs->_u._ext.nsaddrs[i] = xmalloc(sizeof(struct sockaddr_in6));
            memcpy(rs->_u._ext.nsaddrs[i], ss, sizeof(struct sockaddr_in6));
        }
        rs->_u._ext.nssocks[i] = -1;
    }
    rs->nscount = (int)sv->n;
    rs->_u._ext.nscount = 0; /* res_send rebuilds its copies */
}

/* One query; *len is the usable reply length on DNS_Q_OK. */
static enum dns_q
query(res_state rs, const char *name, ns_type type, unsigned char *ans, int *len)
{
    uint64_t t0 = uv_hrtime();
    int n;

    rs->res_h_errno = 0;
    n = res_nquery(rs, name, ns_c_in, type, ans, DNS_ANS_MAX);
    metrics_observe(METRICS_H_DNS_SECONDS, (double)(uv_hrtime() - t0) / 1e9);
    if (n >= 0) {
        *len = n < DNS_ANS_MAX ? n : DNS_ANS_MAX;
        return DNS_Q_OK;
    }
    switch (rs->res_h_errno) {
    case HOST_NOT_FOUND:
        return DNS_Q_NXDOMAIN;
    case NO_DATA:
        return DNS_Q_NODATA;
    default: /* TRY_AGAIN (SERVFAIL, timeout), NO_RECOVERY (REFUSED...) */
        return DNS_Q_TEMP;
    }
}

/* A then AAAA for one host. Returns true when a lookup failed temporarily. */
static bool
resolve_host(res_state rs, struct dns_job *job, struct dns_target *t)
{
    static const ns_type types[] = {ns_t_a, ns_t_aaaa};
    bool temp = false;

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        int len = 0;
        enum dns_q q = query(rs, t->mx.name, types[i], job->ans, &len);

        if (q == DNS_Q_TEMP ||
            (q == DNS_Q_OK &&
             dnsmsg_addrs(job->ans, (size_t)len, types[i] == ns_t_aaaa, DNS_PORT_SMTP, t->addrs,
                          &t->naddrs, DNS_MAX_ADDRS) != 0))
            temp = true;
    }
    return temp;
}

/* Fills res->targets from the first DNS_MAX_HOSTS kept hosts; a host
 * without addresses is dropped. None left: MXD_EIO if any failure was
 * temporary or the time budget ran out, else MXD_ENOENT. */
static int
resolve_hosts(res_state rs, struct dns_job *job, const struct mx_host *hosts, size_t n)
{
    struct dns_mx_result *res = job->res;
    bool temp = false;

    for (size_t i = 0; i < n && i < DNS_MAX_HOSTS; i++) {
        struct dns_target *t = &res->targets[res->ntargets];

        if (uv_hrtime() > job->deadline_ns) {
            temp = true; /* slow servers: use what we have, or defer */
            break;
        }
        memset(t, 0, sizeof(*t));
        t->mx = hosts[i];
        if (resolve_host(rs, job, t))
            temp = true;
        if (t->naddrs > 0)
            res->ntargets++;
    }
    if (n > 0 && res->ntargets == 0)
        return temp ? MXD_EIO : MXD_ENOENT;
    return 0;
}

/* The MX records, or the implicit MX (RFC 5321 5.1) on NODATA. */
static int
lookup_mx(res_state rs, struct dns_job *job, struct mx_host **hosts, size_t *n)
{
    size_t null_mx = 0;
    int len = 0;

    switch (query(rs, job->domain, ns_t_mx, job->ans, &len)) {
    case DNS_Q_NXDOMAIN:
        return MXD_ENOENT;
    case DNS_Q_TEMP:
        return MXD_EIO;
    case DNS_Q_OK:
        if (dnsmsg_mx(job->ans, (size_t)len, hosts, n, &null_mx) != 0)
            return MXD_EIO;
        break;
    case DNS_Q_NODATA:
        break;
    }
    if (*n > 0)
        return 0;
    if (null_mx > 0)
        return MXD_ENOENT; /* RFC 7505: the domain accepts no mail */
    *hosts = xcalloc(1, sizeof(**hosts));
    strcpy((*hosts)[0].name, job->domain);
    (*hosts)[0].pref = 0;
    *n = 1;
    return 0;
}

static int
lookup(res_state rs, struct dns_job *job)
{
    struct mx_host *hosts = NULL;
    size_t n = 0, kept;
    int rc;

    rc = lookup_mx(rs, job, &hosts, &n);
    if (rc != 0)
        goto done;
    kept = mx_select(hosts, n, job->self, job_rand, &job->rng, &job->res->self_listed);
    rc = resolve_hosts(rs, job, hosts, kept);
done:
    free(hosts);
    return rc;
}

int
dns_res_open(res_state rs, const struct dns_servers *sv)
{
    memset(rs, 0, sizeof(*rs));
    if (res_ninit(rs) != 0)
        return MXD_EIO;
    if (sv->override)
        set_servers(rs, sv);
    rs->retrans = DNS_RETRANS_S;
    rs->retry = DNS_TRIES;
    if (rs->nscount == 0) {
        res_nclose(rs);
        return MXD_EIO;
    }
    (void)dns_res_fit(rs, sv->deadline_ns);
    return 0;
}

/* glibc (res_send.c) waits retrans seconds for the first server and about
 * retrans x 2^i / nscount for server i, every try: close to nscount x
 * retrans per try in all. */
bool
dns_res_fit(res_state rs, uint64_t deadline_ns)
{
    uint64_t now = uv_hrtime(), left_s;
    unsigned n = rs->nscount > 0 ? (unsigned)rs->nscount : 1;

    if (deadline_ns == 0)
        return true;
    if (now >= deadline_ns)
        return false;
    left_s = (deadline_ns - now) / 1000000000u;
    if (left_s >= (uint64_t)DNS_RETRANS_S * DNS_TRIES * n) {
        rs->retrans = DNS_RETRANS_S;
        rs->retry = DNS_TRIES;
    } else {
        rs->retrans = left_s / n > 0 ? (int)(left_s / n) : 1;
        rs->retry = 1;
    }
    return true;
}

static void
lookup_work(struct lookup_job *w)
{
    struct dns_job *job = w->data;
    struct __res_state rs;

    if (job->status != 0)
        return; /* rejected in dns_mx_async */
    if (dns_res_open(&rs, &job->servers) != 0) {
        job->status = MXD_EIO;
        return;
    }
    job->deadline_ns = uv_hrtime() + DNS_JOB_BUDGET_NS;
    job->status = lookup(&rs, job);
    res_nclose(&rs);
}

static void
lookup_done(struct lookup_job *w)
{
    struct dns_job *job = w->data;
    struct dns_mx_result *res = job->res;
    dns_mx_cb cb = job->cb;
    void *arg = job->arg;
    int rc = job->status;

    if (rc != 0)
        memset(res, 0, sizeof(*res));
    free(job);
    cb(arg, rc, res);
}

/* conf keeps dns_servers as numeric IPs (CONF_EP_NUMERIC) with a port. */
static bool
server_addr(const struct conf_endpoint *ep, struct sockaddr_storage *ss)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (ep->host == NULL)
        return false;
    if (inet_pton(AF_INET, ep->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(ep->port);
        return true;
    }
    if (inet_pton(AF_INET6, ep->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(ep->port);
        return true;
    }
    return false;
}

int
dns_txt_each(struct __res_state *rs, const char *name, dns_txt_fn fn, void *arg)
{
    unsigned char *ans = xmalloc(DNS_ANS_MAX);
    char *txt = NULL;
    ns_msg msg;
    ns_rr rr;
    int len = 0, rc = 0;

    switch (query(rs, name, ns_t_txt, ans, &len)) {
    case DNS_Q_NXDOMAIN:
    case DNS_Q_NODATA:
        rc = MXD_ENOENT;
        goto done;
    case DNS_Q_TEMP:
        rc = MXD_EIO;
        goto done;
    case DNS_Q_OK:
        break;
    }
    if (ns_initparse(ans, len, &msg) < 0) {
        rc = MXD_EIO;
        goto done;
    }
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        const unsigned char *d;
        size_t n = 0, rdlen;

        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) {
            rc = MXD_EIO;
            goto done;
        }
        if (ns_rr_type(rr) != ns_t_txt || ns_rr_class(rr) != ns_c_in)
            continue;
        d = ns_rr_rdata(rr);
        rdlen = ns_rr_rdlen(rr);
        txt = xrealloc(txt, rdlen + 1);
        /* The character-strings of one record are concatenated (RFC 6376
         * 3.6.2.2, RFC 7489 6.6.3). */
        for (size_t j = 0; j < rdlen;) {
            size_t k = d[j++];

            if (k > rdlen - j)
                k = rdlen - j;
            memcpy(txt + n, d + j, k);
            n += k;
            j += k;
        }
        txt[n] = '\0';
        fn(arg, txt, n);
    }
done:
    free(txt);
    free(ans);
    return rc;
}

void
dns_servers_from_conf(const struct conf *conf, struct dns_servers *sv)
{
    memset(sv, 0, sizeof(*sv));
    sv->override = conf->ndns_servers > 0;
    for (size_t i = 0; i < conf->ndns_servers && sv->n < DNS_MAXNS; i++) {
        if (server_addr(&conf->dns_servers[i], &sv->addrs[sv->n]))
            sv->n++;
    }
}

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

void
dns_mx_async(uv_loop_t *loop, const struct conf *conf, const char *domain, const char *self,
             dns_mx_cb cb, void *arg)
{
    struct dns_job *job;

    if (loop == NULL || conf == NULL || domain == NULL || cb == NULL)
        mxd_panic("dns_mx_async: NULL argument");
    job = xcalloc(1, sizeof(*job));
    job->cb = cb;
    job->arg = arg;
    job->res = xcalloc(1, sizeof(*job->res));
    if (!copy_name(job->domain, domain))
        job->status = MXD_ENOENT; /* still answered from the pool: cb is never synchronous */
    (void)copy_name(job->self, self);
    dns_servers_from_conf(conf, &job->servers);
    job->rng = (uint32_t)uv_hrtime() ^ (uint32_t)(uintptr_t)job;
    if (job->rng == 0)
        job->rng = 0x9e3779b9u; /* xorshift must not start at 0 */
    job->work.data = job;
    lookup_queue(loop, &job->work, lookup_work, lookup_done);
}
