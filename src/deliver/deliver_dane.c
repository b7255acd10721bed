/* deliver_dane: DANE (RFC 7672) for destinations whose policy is tls =
 * dane or dane-only (a domain's tls, or [server] outbound_tls for backup
 * domains without one and for the bounce relay).
 *
 * Owns each destination's struct dest_dane array (one per endpoint, reset
 * when the endpoints change) and the TLSA lookups in flight (struct
 * dane_lookup, until its answer). Loop thread only.
 *
 * Before a connection to an endpoint, its TLSA records must be known:
 * MX targets (primary = mx) come from a validating MX lookup, and only a
 * secure MX answer and secure address records lead to a TLSA lookup
 * (RFC 7672 2.2.1, 2.2.2); a configured host (primary = host:port, the
 * bounce relay, an LMTP server) has its A, AAAA and TLSA records looked
 * up together. _<port>._tcp.<host> with the port mxd connects to.
 * Outcomes: secure TLSA records: TLS is mandatory and verified with them
 * (lmtp_net, base/tls_dane.c), with none usable it is mandatory but
 * unauthenticated; no secure records: opportunistic TLS (dane), or the
 * mail is deferred with 4.7.5 (dane-only); bogus or failed lookups:
 * deferred with 4.7.5, never sent in the clear. A decision is kept for
 * DANE_CACHE_MS, then looked up again. It does not follow CNAMEs of MX
 * hosts itself (the TLSA base domain is the MX host name) and looks no
 * TLSA up for IP literals. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "deliver/deliver_impl.h"

#define DANE_CACHE_MS 60000

struct dane_lookup {
    struct dest *dest;
    unsigned gen;
    size_t ep;
};

bool
deliver__dane_policy(const struct dest *dest)
{
    return dest->tls_mode == CONF_TLS_DANE || dest->tls_mode == CONF_TLS_DANE_ONLY;
}

void
deliver__dane_reset(struct dest *dest)
{
    for (size_t i = 0; i < dest->ndane; i++)
        tls_dane_free(dest->dane[i].tls);
    free(dest->dane);
    dest->dane = NULL;
    dest->ndane = 0;
    dest->dane_gen++;
}

static void
dane_alloc(struct dest *dest)
{
    if (dest->dane != NULL && dest->ndane == dest->neps)
        return;
    deliver__dane_reset(dest);
    dest->ndane = dest->neps;
    dest->dane = xcalloc(dest->neps ? dest->neps : 1, sizeof(*dest->dane));
    for (size_t i = 0; i < dest->neps; i++)
        dest->dane[i].state = DEST_DANE_UNKNOWN;
}

void
deliver__dane_mx_set(struct dest *dest, size_t ep, enum dns_sec mx_sec, enum dns_sec addr_sec)
{
    struct dest_dane *dd;

    if (!deliver__dane_policy(dest))
        return;
    dane_alloc(dest);
    if (ep >= dest->ndane)
        return;
    dd = &dest->dane[ep];
    if (mx_sec == DNS_SEC_SECURE && addr_sec == DNS_SEC_SECURE)
        return; /* the TLSA records decide */
    dd->from_mx = true;
    dd->at_ms = uv_now(dest->d->loop);
    if (addr_sec == DNS_SEC_BOGUS) {
        dd->state = DEST_DANE_BOGUS;
        snprintf(dd->why, sizeof(dd->why), "DNSSEC validation of the address records of %s failed",
                 dest->owned_names[ep]);
    } else {
        dd->state = DEST_DANE_NONE;
        snprintf(dd->why, sizeof(dd->why), "%s records not DNSSEC-signed",
                 mx_sec != DNS_SEC_SECURE ? "MX" : "address");
    }
}

/* The TLSA base domain of endpoint ep (NULL: none, an IP literal). */
static const char *
ep_host(const struct dest *dest, size_t ep)
{
    const char *h = dest->owned_names != NULL ? dest->owned_names[ep] : dest->eps[ep].host;
    unsigned char buf[16];

    if (h == NULL || dest->eps[ep].is_unix || inet_pton(AF_INET, h, buf) == 1 ||
        inet_pton(AF_INET6, h, buf) == 1)
        return NULL;
    return h;
}

static void
on_tlsa(void *arg, struct dns_tlsa_result *res)
{
    struct dane_lookup *l = arg;
    struct dest *dest = l->dest;
    struct deliver *d = dest->d;
    struct dest_dane *dd;
    size_t usable = 0;
    char esc[300];

    d->pending_other--;
    if (l->gen != dest->dane_gen || l->ep >= dest->ndane) {
        dns_tlsa_free(res); /* the endpoints changed meanwhile */
        free(l);
        if (d->stopping)
            deliver__stop_check(d);
        return;
    }
    dd = &dest->dane[l->ep];
    dd->state = (enum dest_dane_state)res->state;
    dd->at_ms = uv_now(d->loop);
    snprintf(dd->why, sizeof(dd->why), "%s", res->why);
    tls_dane_free(dd->tls);
    dd->tls = NULL;
    if (res->state == DNS_DANE_RECORDS) {
        dd->tls = tls_dane_new();
        for (size_t i = 0; i < res->n; i++)
            usable += tls_dane_add_record(dd->tls, res->rdata[i], res->len[i]);
        tls_dane_add_name(dd->tls, ep_host(dest, l->ep));
        if (dest->mx && dest->mx_domain != NULL) /* a backup domain's, or a DSN's sender's */
            tls_dane_add_name(dd->tls, dest->mx_domain); /* RFC 7672 3.2.2: the next hop */
    }
    log_msg(res->state == DNS_DANE_RECORDS || res->state == DNS_DANE_NONE ? LOG_INFO : LOG_WARN,
            NULL, "deliver", "dane relay=%s state=%s records=%zu usable=%zu reason=%s",
            dest->eps[l->ep].text,
            res->state == DNS_DANE_RECORDS ? "secure"
            : res->state == DNS_DANE_NONE  ? "none"
            : res->state == DNS_DANE_BOGUS ? "bogus"
                                           : "error",
            res->n, usable,
            log_esc(esc, sizeof(esc), res->why[0] ? res->why : "-",
                    strlen(res->why[0] ? res->why : "-")));
    dns_tlsa_free(res);
    free(l);
    if (d->stopping)
        deliver__stop_check(d);
    else
        deliver__dest_run(dest, d);
}

static void
lookup_start(struct dest *dest, size_t ep, const char *host)
{
    struct dane_lookup *l = xcalloc(1, sizeof(*l));
    struct deliver *d = dest->d;

    l->dest = dest;
    l->gen = dest->dane_gen;
    l->ep = ep;
    dest->dane[ep].state = DEST_DANE_LOOKING;
    d->pending_other++;
    dns_tlsa_async(d->loop, d->conf, host, dest->eps[ep].port, dest->owned_names == NULL, on_tlsa,
                   l);
}

/* The endpoint cannot be used under the policy: the next one, or defer. */
static int
dane_refuse(struct dest *dest, size_t ep, const char *why)
{
    char text[640]; /* 4.7.5, the endpoint (300), the reason (300) */

    snprintf(text, sizeof(text), "4.7.5 %s: %s", dest->eps[ep].text, why);
    log_msg(LOG_WARN, NULL, "deliver", "dane refused relay=%s policy=%s reason=\"%s\"",
            dest->eps[ep].text, dest->tls_mode == CONF_TLS_DANE_ONLY ? "dane-only" : "dane", why);
    metrics_count(METRICS_F_OUTBOUND_TLS, "dane", "deferred");
    deliver__dest_unreachable(dest, ep, text);
    return -1;
}

int
deliver__dane_check(struct dest *dest)
{
    size_t ep = dest->ep_idx;
    struct dest_dane *dd;
    const char *host;
    char why[300];

    if (!deliver__dane_policy(dest) || ep >= dest->neps)
        return 1;
    dane_alloc(dest);
    dd = &dest->dane[ep];
    if (!dd->from_mx && dd->state <= DEST_DANE_TEMP &&
        uv_now(dest->d->loop) - dd->at_ms >= DANE_CACHE_MS)
        dd->state = DEST_DANE_UNKNOWN; /* look again */
    if (dd->state == DEST_DANE_UNKNOWN) {
        host = ep_host(dest, ep);
        if (host == NULL) {
            dd->state = DEST_DANE_NONE;
            dd->from_mx = true; /* never changes */
            snprintf(dd->why, sizeof(dd->why), "an address, not a name: no TLSA records");
        } else {
            lookup_start(dest, ep, host);
            return 0;
        }
    }
    switch (dd->state) {
    case DEST_DANE_LOOKING:
    case DEST_DANE_UNKNOWN:
        return 0;
    case DEST_DANE_RECORDS:
        return 1;
    case DEST_DANE_NONE:
        if (dest->tls_mode != CONF_TLS_DANE_ONLY)
            return 1;
        snprintf(why, sizeof(why), "no DNSSEC-secure TLSA records (tls = dane-only): %s", dd->why);
        return dane_refuse(dest, ep, why);
    case DEST_DANE_BOGUS:
    case DEST_DANE_TEMP:
        break;
    }
    return dane_refuse(dest, ep, dd->why);
}

void
deliver__dane_tls(struct dest *dest, size_t ep, struct lmtp_conn_tls *t)
{
    const struct dest_dane *dd;

    t->dane = NULL;
    t->policy = NULL;
    if (!deliver__dane_policy(dest))
        return;
    dd = dest->dane != NULL && ep < dest->ndane ? &dest->dane[ep] : NULL;
    if (dd != NULL && dd->state == DEST_DANE_RECORDS) {
        /* RFC 7672 2.2: secure TLSA records make TLS mandatory; verified
         * with them (none usable: encrypted only). A session from an
         * earlier connection is not resumed: it was checked, if at all,
         * against other records. */
        t->required = true;
        t->dane = dd->tls;
        t->policy = "dane";
        t->resume = NULL;
        t->resume_len = 0;
        return;
    }
    t->required = false; /* dane without secure TLSA records: opportunistic */
    t->policy = "opportunistic";
}
