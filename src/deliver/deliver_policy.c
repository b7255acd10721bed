/* deliver_policy: what outbound TLS applies to a domain right now, for
 * `mxctl tls-policy DOMAIN` (through ops/control): the policy and where it
 * comes from, the next hops, their TLSA records as the validating resolver
 * sees them now (and the MX answer's DNSSEC verdict), what the policy
 * makes of that, and what happens to a REQUIRETLS message (RFC 8689).
 *
 * Owns one struct policy_job per request (until its callback) and the
 * report it fills. Loop thread only. Looks up afresh through the resolver
 * (its cache answers repeated questions); never touches a destination's
 * state or its connections. Lookups are counted in d->pending_other so a
 * stop waits for them. The MTA-STS policy known now (deliver_sts.c's
 * memory: nothing is fetched for the report) goes into it too. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "deliver/deliver_impl.h"

struct policy_job {
    struct deliver *d;
    struct deliver_tls_report *r;
    deliver_tls_report_cb cb;
    void *arg;
    unsigned out; /* lookups still out */
};

struct policy_hop_ref {
    struct policy_job *job;
    size_t i;
};

static const char *const conf_tls_names[] = {
    [CONF_TLS_OPPORTUNISTIC] = "opportunistic",
    [CONF_TLS_REQUIRED] = "required",
    [CONF_TLS_VERIFY] = "verify",
    [CONF_TLS_DANE] = "dane",
    [CONF_TLS_DANE_ONLY] = "dane-only",
};

static bool
is_literal(const char *h)
{
    unsigned char buf[16];

    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

static size_t
hop_add(struct deliver_tls_report *r, const char *host, unsigned port, const char *state,
        const char *why)
{
    struct deliver_tls_hop *h;

    if (r->nhops >= DELIVER_TLS_HOPS_MAX)
        return DELIVER_TLS_HOPS_MAX;
    h = &r->hops[r->nhops];
    snprintf(h->host, sizeof(h->host), "%s", host);
    h->port = port;
    snprintf(h->state, sizeof(h->state), "%s", state);
    snprintf(h->why, sizeof(h->why), "%s", why);
    return r->nhops++;
}

/* The policy's outcome in words, once every lookup is in. */
static void
conclude(struct deliver_tls_report *r, enum conf_tls mode)
{
    size_t secure = 0, authen = 0, bad = 0;

    for (size_t i = 0; i < r->nhops; i++) {
        secure += strcmp(r->hops[i].state, "secure") == 0;
        authen += strcmp(r->hops[i].state, "secure") == 0 && r->hops[i].usable > 0;
        bad += strcmp(r->hops[i].state, "bogus") == 0 || strcmp(r->hops[i].state, "error") == 0;
    }
    switch (mode) {
    case CONF_TLS_OPPORTUNISTIC:
        snprintf(r->applies, sizeof(r->applies),
                 "STARTTLS when offered, certificate not "
                 "checked, else plain text; TLSA records are not "
                 "used (tls = dane would use them)");
        break;
    case CONF_TLS_REQUIRED:
        snprintf(r->applies, sizeof(r->applies),
                 "TLS required (4.7.4/4.7.5 deferral without it), certificate not checked");
        break;
    case CONF_TLS_VERIFY:
        snprintf(r->applies, sizeof(r->applies),
                 "TLS required, the chain checked against %s and the host name",
                 r->ca_file[0] ? r->ca_file : "the system trust store");
        break;
    case CONF_TLS_DANE:
    case CONF_TLS_DANE_ONLY:
        snprintf(r->applies, sizeof(r->applies),
                 "%zu of %zu next hops with secure TLSA records: TLS mandatory there and checked "
                 "against them; %s; bogus or failed lookups (%zu): deferred 4.7.5",
                 secure, r->nhops,
                 mode == CONF_TLS_DANE ? "the others: opportunistic"
                                       : "the others: deferred 4.7.5 (dane-only)",
                 bad);
        break;
    }
    if (strcmp(r->role, "local") == 0)
        snprintf(r->requiretls, sizeof(r->requiretls),
                 "delivered: LMTP to the mailbox server is final delivery");
    else if (mode == CONF_TLS_VERIFY)
        snprintf(r->requiretls, sizeof(r->requiretls),
                 "sent over verified TLS with REQUIRETLS when the next hop offers it, else "
                 "bounced 5.7.30");
    else if ((mode == CONF_TLS_DANE || mode == CONF_TLS_DANE_ONLY) && authen > 0)
        snprintf(r->requiretls, sizeof(r->requiretls),
                 "sent only to the %zu next hops with usable TLSA records, when they offer "
                 "REQUIRETLS; else bounced 5.7.30",
                 authen);
    else if (r->sts_enforce)
        snprintf(r->requiretls, sizeof(r->requiretls),
                 "sent over TLS verified as the MTA-STS policy demands, when the next hop offers "
                 "REQUIRETLS; else bounced 5.7.30");
    else
        snprintf(r->requiretls, sizeof(r->requiretls),
                 "bounced 5.7.30: no authenticated TLS (no usable TLSA records, no tls = verify, "
                 "no MTA-STS policy in enforce mode)");
}

static void
job_done(struct policy_job *j)
{
    struct deliver *d = j->d;

    if (--j->out > 0)
        return;
    conclude(j->r, j->r->mode);
    j->cb(j->arg, j->r);
    free(j);
    if (d->stopping)
        deliver__stop_check(d);
}

static void
on_hop_tlsa(void *arg, struct dns_tlsa_result *res)
{
    struct policy_hop_ref *ref = arg;
    struct policy_job *j = ref->job;
    struct deliver_tls_hop *h = &j->r->hops[ref->i];
    static const char *const names[] = {
        [DNS_DANE_NONE] = "none",
        [DNS_DANE_RECORDS] = "secure",
        [DNS_DANE_BOGUS] = "bogus",
        [DNS_DANE_TEMP] = "error",
    };

    j->d->pending_other--;
    snprintf(h->state, sizeof(h->state), "%s", names[res->state]);
    snprintf(h->why, sizeof(h->why), "%s", res->why);
    h->records = res->n;
    if (res->state == DNS_DANE_RECORDS) {
        struct tls_dane *t = tls_dane_new();

        for (size_t i = 0; i < res->n; i++)
            h->usable += tls_dane_add_record(t, res->rdata[i], res->len[i]);
        tls_dane_free(t);
    }
    dns_tlsa_free(res);
    free(ref);
    job_done(j);
}

static void
tlsa_start(struct policy_job *j, size_t i, bool check_addrs)
{
    struct policy_hop_ref *ref = xcalloc(1, sizeof(*ref));

    ref->job = j;
    ref->i = i;
    j->out++;
    j->d->pending_other++;
    dns_tlsa_async(j->d->loop, j->d->conf, j->r->hops[i].host, j->r->hops[i].port, check_addrs,
                   on_hop_tlsa, ref);
}

static void
on_mx(void *arg, int status, struct dns_mx_result *res)
{
    struct policy_job *j = arg;
    struct deliver_tls_report *r = j->r;
    static const char *const sec[] = {"insecure", "secure", "bogus"};

    j->d->pending_other--;
    if (status != 0) {
        snprintf(r->mx, sizeof(r->mx), "%s", status == MXD_ENOENT ? "none" : "error");
    } else {
        snprintf(r->mx, sizeof(r->mx), "%s", sec[res->mx_sec]);
        for (size_t i = 0; i < res->ntargets; i++) {
            const struct dns_target *t = &res->targets[i];
            bool go = res->mx_sec == DNS_SEC_SECURE && t->sec == DNS_SEC_SECURE;
            size_t k = hop_add(r, t->mx.name, deliver__mx_port(), go ? "looking" : "none",
                               res->mx_sec != DNS_SEC_SECURE ? "MX records not DNSSEC-signed"
                               : t->sec == DNS_SEC_BOGUS     ? "address records bogus"
                                                             : "address records not DNSSEC-signed");

            if (go && k < DELIVER_TLS_HOPS_MAX)
                tlsa_start(j, k, false); /* RFC 7672 2.2.2 */
        }
    }
    free(res);
    job_done(j);
}

/* Configured next hops: each name's A, AAAA and TLSA records together. */
static void
eps_start(struct policy_job *j, const struct conf_endpoint *eps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct conf_endpoint *e = &eps[i];
        size_t k;

        if (e->is_unix) {
            hop_add(j->r, e->path, 0, "none", "a unix socket: no TLS");
            continue;
        }
        if (is_literal(e->host)) {
            hop_add(j->r, e->host, e->port, "none", "an address, not a name: no TLSA records");
            continue;
        }
        k = hop_add(j->r, e->host, e->port, "looking", "");
        if (k < DELIVER_TLS_HOPS_MAX)
            tlsa_start(j, k, true);
    }
}

void
deliver_tls_report_async(struct deliver *d, const char *domain, deliver_tls_report_cb cb, void *arg)
{
    const struct conf *conf = d->conf;
    const struct conf_domain *dom = conf_domain_find(conf, domain, strlen(domain));
    struct policy_job *j = xcalloc(1, sizeof(*j));
    struct deliver_tls_report *r = xcalloc(1, sizeof(*r));
    bool mx = false;

    j->d = d;
    j->r = r;
    j->cb = cb;
    j->arg = arg;
    j->out = 1; /* this function's own, dropped at the end */
    snprintf(r->domain, sizeof(r->domain), "%s", domain);
    snprintf(r->mx, sizeof(r->mx), "-");
    if (dom == NULL || (dom->mode == CONF_MODE_BACKUP && dom->primary_mx))
        r->sts_enforce = deliver__sts_describe(d, domain, r->mta_sts, sizeof(r->mta_sts));
    else
        snprintf(r->mta_sts, sizeof(r->mta_sts), "does not apply (not delivered by MX lookup)");
    if (r->sts_enforce && r->mode != CONF_TLS_OPPORTUNISTIC && r->mode != CONF_TLS_REQUIRED &&
        r->mode != CONF_TLS_DANE)
        r->sts_enforce = false; /* verify and dane-only stay as they are */
    r->mode = dom != NULL ? dom->tls : conf->outbound_tls;
    if (dom != NULL && dom->ca_file != NULL)
        snprintf(r->ca_file, sizeof(r->ca_file), "%s", dom->ca_file);
    snprintf(r->policy, sizeof(r->policy), "%s", conf_tls_names[r->mode]);
    if (dom == NULL) {
        snprintf(r->role, sizeof(r->role), "remote");
        snprintf(r->source, sizeof(r->source), "[server] outbound_tls");
        if (conf->bounce_relay.text != NULL) {
            snprintf(r->next_hop, sizeof(r->next_hop), "bounce_relay = %s (DSNs to senders there)",
                     conf->bounce_relay.text);
            eps_start(j, &conf->bounce_relay, 1);
        } else {
            snprintf(r->next_hop, sizeof(r->next_hop), "its MX hosts (DSNs to senders there)");
            mx = true;
        }
    } else if (dom->mode == CONF_MODE_BACKUP) {
        snprintf(r->role, sizeof(r->role), "backup");
        snprintf(r->source, sizeof(r->source), "[domain %s] tls (default: [server] outbound_tls)",
                 dom->name);
        if (dom->primary_mx) {
            snprintf(r->next_hop, sizeof(r->next_hop), "primary = mx");
            mx = true;
        } else {
            snprintf(r->next_hop, sizeof(r->next_hop), "primary = %s",
                     dom->nprimary > 0 ? dom->primary[0].text : "-");
            eps_start(j, dom->primary, dom->nprimary);
        }
    } else {
        snprintf(r->role, sizeof(r->role), "local");
        snprintf(r->source, sizeof(r->source), "[domain %s] tls", dom->name);
        snprintf(r->next_hop, sizeof(r->next_hop), "lmtp = %s",
                 dom->lmtp.text != NULL ? dom->lmtp.text : "-");
        if (dom->lmtp.text != NULL)
            eps_start(j, &dom->lmtp, 1);
    }
    if (mx) {
        j->out++;
        d->pending_other++;
        dns_mx_async_dnssec(d->loop, conf, domain, conf->hostname, on_mx, j);
    }
    job_done(j); /* cb runs now when nothing was looked up */
}
