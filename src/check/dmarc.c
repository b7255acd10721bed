/* dmarc: evaluates DMARC (RFC 7489) for one message with libopendmarc and
 * Debian's public suffix list.
 *
 * Owns, per check, a libopendmarc policy context and a private resolver
 * state (dns_res_open: conf->dns_servers is honoured). Runs on a threadpool
 * thread (it blocks on DNS). We look the _dmarc records up ourselves
 * (RFC 7489 6.6.3: the From domain, then its organizational domain) and
 * hand the record to libopendmarc, which parses it and decides alignment;
 * its own resolver is never used. The library (public suffix list) is
 * initialised once (pthread_once). It does not send reports (rua/ruf) and
 * does not log (the caller does). */
#define _DEFAULT_SOURCE
#include "check/dmarc.h"

#include <sys/types.h>

#include <arpa/nameser.h>
#include <netinet/in.h>
#include <opendmarc/dmarc.h>
#include <pthread.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libopendmarc exports it but its header does not declare it: the
 * organizational domain of domain by the public suffix list. */
int opendmarc_get_tld(u_char *domain, u_char *tld, size_t tld_len);

#define DMARC_RES_NAME(e, s) s,
static const char *const res_names[] = {DMARC_RESULTS(DMARC_RES_NAME)};
#undef DMARC_RES_NAME

const char *
dmarc_res_name(enum dmarc_res r)
{
    return (unsigned)r < sizeof(res_names) / sizeof(res_names[0]) ? res_names[r] : "?";
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static bool lib_ok; /* written once under lib_once */

static void
lib_init(void)
{
    static OPENDMARC_LIB_T init;

    memset(&init, 0, sizeof(init));
    init.tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
    snprintf((char *)init.tld_source_file, sizeof(init.tld_source_file), "%s", DMARC_PSL_PATH);
    lib_ok = opendmarc_policy_library_init(&init) == DMARC_PARSE_OKAY;
}

struct rec_find {
    char rec[1024];
    unsigned n;
};

static void
rec_txt(void *arg, const char *txt, size_t len)
{
    struct rec_find *r = arg;

    /* RFC 7489 6.6.3: records not starting with "v=DMARC1" are ignored */
    if (strncmp(txt, "v=DMARC1", 8) != 0 || (txt[8] != ';' && txt[8] != ' ' && txt[8] != '\0'))
        return;
    if (r->n++ == 0 && len < sizeof(r->rec))
        memcpy(r->rec, txt, len + 1);
}

/* 0 (one record in r), MXD_ENOENT (none, or several: RFC 7489 6.6.3 says
 * to ignore them all) or MXD_EIO. */
static int
fetch(struct __res_state *rs, const char *domain, struct rec_find *r, unsigned *queries)
{
    char name[NS_MAXDNAME];
    int rc;

    memset(r, 0, sizeof(*r));
    if (snprintf(name, sizeof(name), "_dmarc.%s", domain) >= (int)sizeof(name))
        return MXD_ENOENT;
    (*queries)++;
    rc = dns_txt_each(rs, name, rec_txt, r);
    if (rc != 0)
        return rc;
    return r->n == 1 && r->rec[0] != '\0' ? 0 : MXD_ENOENT;
}

static int
spf_outcome(enum spf_res r)
{
    switch (r) {
    case SPF_RES_PASS:
        return DMARC_POLICY_SPF_OUTCOME_PASS;
    case SPF_RES_FAIL:
    case SPF_RES_SOFTFAIL:
        return DMARC_POLICY_SPF_OUTCOME_FAIL;
    case SPF_RES_TEMPERROR:
        return DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
    default:
        return DMARC_POLICY_SPF_OUTCOME_NONE;
    }
}

static int
dkim_outcome(enum dkim_res r)
{
    switch (r) {
    case DKIM_RES_PASS:
        return DMARC_POLICY_DKIM_OUTCOME_PASS;
    case DKIM_RES_TEMPERROR:
        return DMARC_POLICY_DKIM_OUTCOME_TMPFAIL;
    case DKIM_RES_NONE:
        return DMARC_POLICY_DKIM_OUTCOME_NONE;
    default:
        return DMARC_POLICY_DKIM_OUTCOME_FAIL;
    }
}

static void
store_auth(DMARC_POLICY_T *pctx, const struct dmarc_input *in)
{
    if (in->spf_domain[0] != '\0')
        (void)opendmarc_policy_store_spf(
            pctx, (u_char *)(uintptr_t)in->spf_domain, spf_outcome(in->spf),
            in->spf_helo ? DMARC_POLICY_SPF_ORIGIN_HELO : DMARC_POLICY_SPF_ORIGIN_MAILFROM, NULL);
    for (size_t i = 0; in->dkim != NULL && i < in->dkim->nsigs; i++) {
        const struct dkim_sig *s = &in->dkim->sigs[i];

        if (s->domain[0] != '\0')
            (void)opendmarc_policy_store_dkim(pctx, (u_char *)(uintptr_t)s->domain,
                                              (u_char *)(uintptr_t)s->selector,
                                              dkim_outcome(s->res), NULL);
    }
}

/* The record for the From domain, else its organizational domain's. */
static int
find_record(struct __res_state *rs, DMARC_POLICY_T *pctx, const char *from, unsigned *queries)
{
    struct rec_find r;
    char org[256] = "";
    int rc = fetch(rs, from, &r, queries);

    if (rc == 0)
        return opendmarc_policy_store_dmarc(pctx, (u_char *)r.rec, (u_char *)(uintptr_t)from,
                                            NULL) == DMARC_PARSE_OKAY
                   ? 0
                   : MXD_EINVAL;
    if (rc != MXD_ENOENT)
        return rc;
    if (opendmarc_get_tld((u_char *)(uintptr_t)from, (u_char *)org, sizeof(org)) != 0 ||
        org[0] == '\0' || strcmp(org, from) == 0)
        return MXD_ENOENT;
    if ((rc = fetch(rs, org, &r, queries)) != 0)
        return rc;
    return opendmarc_policy_store_dmarc(pctx, (u_char *)r.rec, (u_char *)(uintptr_t)from,
                                        (u_char *)org) == DMARC_PARSE_OKAY
               ? 0
               : MXD_EINVAL;
}

static void
decide(DMARC_POLICY_T *pctx, struct dmarc_author *out)
{
    int p = 0, pol = opendmarc_get_policy_to_enforce(pctx);

    if (opendmarc_policy_fetch_p(pctx, &p) == DMARC_PARSE_OKAY)
        snprintf(out->policy, sizeof(out->policy), "%s",
                 p == DMARC_RECORD_P_REJECT       ? "reject"
                 : p == DMARC_RECORD_P_QUARANTINE ? "quarantine"
                                                  : "none");
    switch (pol) {
    case DMARC_POLICY_PASS:
        out->res = DMARC_RES_PASS;
        break;
    case DMARC_POLICY_REJECT:
        out->reject = true;
        out->res = DMARC_RES_FAIL;
        break;
    case DMARC_POLICY_QUARANTINE:
    case DMARC_POLICY_NONE:
        out->res = DMARC_RES_FAIL;
        break;
    case DMARC_POLICY_ABSENT:
        out->res = DMARC_RES_NONE;
        break;
    default:
        out->res = DMARC_RES_PERMERROR;
        snprintf(out->why, sizeof(out->why), "%s", opendmarc_policy_status_to_str(pol));
        break;
    }
}

/* One author domain. */
static void
check_author(struct __res_state *rs, const struct dmarc_input *in, const char *from,
             struct dmarc_author *out, unsigned *queries)
{
    DMARC_POLICY_T *pctx;
    int rc;

    snprintf(out->domain, sizeof(out->domain), "%s", from);
    pctx = opendmarc_policy_connect_init((u_char *)(uintptr_t)in->ip,
                                         strchr(in->ip, ':') != NULL ? DMARC_POLICY_IP_TYPE_IPV6
                                                                     : DMARC_POLICY_IP_TYPE_IPV4);
    if (pctx == NULL)
        mxd_panic("dmarc: out of memory");
    (void)opendmarc_policy_store_from_domain(pctx, (u_char *)(uintptr_t)from);
    store_auth(pctx, in);
    rc = find_record(rs, pctx, from, queries);
    if (rc == MXD_EIO) {
        out->res = DMARC_RES_TEMPERROR;
        snprintf(out->why, sizeof(out->why), "DNS failure");
    } else if (rc == MXD_ENOENT) {
        out->res = DMARC_RES_NONE;
    } else if (rc != 0) {
        out->res = DMARC_RES_PERMERROR;
        snprintf(out->why, sizeof(out->why), "malformed DMARC record");
    } else {
        decide(pctx, out);
    }
    (void)opendmarc_policy_connect_shutdown(pctx);
}

/* How strict an outcome is: a failure under p=reject first, then
 * quarantine, then any failure, then the errors (RFC 7489 6.6.1: "the most
 * strict policy selected among the checks that fail"). */
static int
strictness(const struct dmarc_author *a)
{
    if (a->res == DMARC_RES_FAIL)
        return a->reject ? 6 : strcmp(a->policy, "quarantine") == 0 ? 5 : 4;
    return a->res == DMARC_RES_TEMPERROR   ? 3
           : a->res == DMARC_RES_PERMERROR ? 2
           : a->res == DMARC_RES_PASS      ? 1
                                           : 0;
}

void
dmarc_result_unchecked(const struct dmarc_input *in, const char *why, struct dmarc_result *out)
{
    memset(out, 0, sizeof(*out));
    out->res = DMARC_RES_TEMPERROR;
    snprintf(out->why, sizeof(out->why), "%s", why);
    if (in->from_bad || in->nfrom == 0 || in->nfrom > DMARC_AUTHORS_MAX)
        return;
    for (size_t i = 0; i < in->nfrom; i++) {
        struct dmarc_author *w = &out->authors[i];

        memcpy(w->domain, in->from_domains[i], sizeof(w->domain));
        w->res = DMARC_RES_TEMPERROR;
        snprintf(w->why, sizeof(w->why), "%s", why);
    }
    out->nauthors = in->nfrom;
    memcpy(out->domain, in->from_domains[0], sizeof(out->domain));
}

void
dmarc_check(const struct dns_servers *servers, const struct dmarc_input *in,
            struct dmarc_result *out)
{
    struct __res_state rs;
    const struct dmarc_author *worst = NULL;

    memset(out, 0, sizeof(*out));
    pthread_once(&lib_once, lib_init);
    if (in->from_bad || in->nfrom == 0 || in->nfrom > DMARC_AUTHORS_MAX) {
        out->res = DMARC_RES_PERMERROR; /* RFC 7489 6.6.1 */
        snprintf(out->why, sizeof(out->why), "no usable From: domain");
        return;
    }
    if (!lib_ok || dns_res_open(&rs, servers) != 0) {
        out->res = DMARC_RES_TEMPERROR;
        snprintf(out->why, sizeof(out->why), "%s", lib_ok ? "no name server" : "library");
        return;
    }
    for (size_t i = 0; i < in->nfrom; i++) {
        check_author(&rs, in, in->from_domains[i], &out->authors[i], &out->queries);
        if (worst == NULL || strictness(&out->authors[i]) > strictness(worst))
            worst = &out->authors[i];
    }
    out->nauthors = in->nfrom;
    out->res = worst->res;
    out->reject = worst->reject;
    memcpy(out->domain, worst->domain, sizeof(out->domain));
    memcpy(out->policy, worst->policy, sizeof(out->policy));
    memcpy(out->why, worst->why, sizeof(out->why));
    res_nclose(&rs);
}
