/* spf: SPF (RFC 7208) checks with libspf2, on the loop, with every DNS
 * answer from the resolver (resolver.h).
 *
 * Owns, per check (struct spf_job), a libspf2 server and the answers
 * gathered so far. libspf2's DNS layer is synchronous, so a check runs
 * libspf2 from the start as often as it needs: our DNS layer answers from
 * the answers gathered so far and notes each name it does not have yet
 * (answering TRY_AGAIN meanwhile); after a run that missed names, they are
 * all asked for at once through the resolver, and when the last is back
 * the check runs again. A run that missed nothing is the result. libspf2
 * itself never waits: each run is a few microseconds of computing on the
 * loop thread, one run per round of queries (the rest of an MX or PTR
 * answer's names are asked for with the first libspf2 lacks).
 * spf_check_async and its callback run on the loop thread. Every check
 * ends with a result; DNS trouble is temperror, never an error return.
 *
 * What it adds to libspf2 (see docs/auth.md): loopback clients are checked
 * like any other (libspf2's entry points pass them unconditionally); the
 * obsolete SPF RR type is never queried (RFC 7208 3.1); a DNS error on the
 * address lookup of a name from a PTR answer skips that name (RFC 7208
 * 5.5, where libspf2 gives temperror); void lookups are counted and more
 * than SPF_VOID_MAX is permerror (RFC 7208 4.6.4, which libspf2 does not
 * implement); every SPF record fetched is checked by RFC 7208 and
 * rewritten to what libspf2 evaluates as the RFC says (spf_record.c:
 * syntax errors become a record libspf2 refuses, a permerror; /0 prefixes,
 * unknown modifiers, redirect= beside all), the layer answering the
 * CIDR0 names of "a/0" and "mx/0"; an IPv4-mapped client is IPv4 (RFC
 * 7208 5.6); PTR names past 10 are ignored (4.6.4, where libspf2 gives
 * permerror) and the names under the current domain go first (%{p}, 7.3);
 * no new query is sent once the budget is spent, and each query gives up
 * when it ends (RESOLVER_TIMEOUT_MS at most). The 10 DNS-querying terms limit is libspf2's own
 * (max_dns_mech). The resolver caches; this module does not log (the caller does). */
#define _DEFAULT_SOURCE
#include "check/spf.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <resolv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include "base/reply.h"
#include "check/spf_record.h"
#include "dns/resolver.h"

#define SPF_EXEMPT_MAX     32  /* MX and PTR target names remembered per check */
#define SPF_WANT_MAX       32  /* names asked for at once after a run */
#define SPF_NAMES_PER_TERM 10  /* libspf2's max_dns_mx and max_dns_ptr */
#define SPF_ANSWERS_MAX    512 /* names one check may ask for: far above libspf2's limits */
/* What libspf2 is given for a record with a syntax error: a record it
 * refuses to compile, so that the check, or the include or redirect that
 * fetched it, is a permerror (RFC 7208 4.6, 5.2, 6.1). */
#define SPF_PERMERROR_RECORD "v=spf1 mxd-syntax-error"

#define SPF_RES_NAME(e, s) s,
static const char *const res_names[] = {SPF_RESULTS(SPF_RES_NAME)};
#undef SPF_RES_NAME

const char *
spf_res_name(enum spf_res r)
{
    return (unsigned)r < sizeof(res_names) / sizeof(res_names[0]) ? res_names[r] : "?";
}

/* An answer a check has gathered: its name and type, and the reply. */
struct spf_answer {
    char *name;
    uint32_t hash; /* of the name (any case) and type */
    ns_type type;
    int herrno;            /* NETDB_SUCCESS, HOST_NOT_FOUND, NO_DATA or TRY_AGAIN */
    unsigned char *packet; /* NETDB_SUCCESS: the reply */
    size_t len;
};

/* A name a run missed. */
struct spf_want {
    char name[NS_MAXDNAME];
    ns_type type;
};

struct spf_ctx {
    uint64_t deadline_ns;
    int family;               /* the client's, after RFC 7208 5.6's IPv4-mapped rule */
    struct in_addr ip4;       /* the client, family AF_INET */
    struct in6_addr ip6;      /* the client, family AF_INET6 */
    bool synth;               /* the answer being parsed is for a CIDR0 name */
    const char *syntax_why;   /* the last record with a syntax error: which rule */
    const SPF_request_t *req; /* this run's: libspf2 keeps its current domain there */
    struct spf_answer *ans;   /* gathered so far, for every run */
    size_t nans;
    /* per run */
    unsigned queries, voids;
    unsigned terms;     /* queries that are not for an MX or PTR target */
    bool last_txt_void; /* the last query was TXT and void */
    /* Names from MX and PTR answers: the address lookups libspf2 makes for
     * them belong to the same term and are not void lookups of their own. */
    char exempt[SPF_EXEMPT_MAX][NS_MAXDNAME];
    bool exempt_ptr[SPF_EXEMPT_MAX];       /* the name came from a PTR answer */
    unsigned exempt_group[SPF_EXEMPT_MAX]; /* which answer it came from */
    size_t nexempt;
    unsigned ngroups;
    struct spf_want want[SPF_WANT_MAX]; /* names this run did not have */
    size_t nwant;
    bool missed; /* this run missed a name (maybe more than want holds) */
};

/* 1 for a name from an MX answer, 2 from a PTR answer, else 0. */
static int
ctx_exempt(const struct spf_ctx *c, const char *name)
{
    for (size_t i = 0; i < c->nexempt; i++) {
        if (strcasecmp(c->exempt[i], name) == 0)
            return c->exempt_ptr[i] ? 2 : 1;
    }
    return 0;
}

static void
ctx_void(struct spf_ctx *c, const char *domain, ns_type type)
{
    c->last_txt_void = type == ns_t_txt;
    if ((type == ns_t_a || type == ns_t_aaaa) && ctx_exempt(c, domain))
        return;
    c->voids++;
}

/* An SPF record in the TXT answer rr->rr[cnt] (len octets, NULs
 * included) checked by RFC 7208 and rewritten for libspf2
 * (spf_record.h): a record with a syntax error becomes
 * SPF_PERMERROR_RECORD. Other TXT strings (an exp= text, RFC 7208 6.2;
 * anything not SPF, 4.5) are left alone. */
static bool
txt_record(SPF_dns_rr_t *rr, int cnt, size_t len, struct spf_ctx *c)
{
    /* a rewritten term is at most 10 times as long ("a/0"), never longer
     * than 16 times and the version */
    size_t size = 16 * len + 64;
    char *out;
    const char *why;
    int n;
    bool ok;

    if (!spf_record_is_spf(rr->rr[cnt]->txt, len))
        return true;
    out = xmalloc(size);
    if (spf_record_check(rr->rr[cnt]->txt, len, &why) != 0) {
        /* RFC 7208 4.6: a syntax error anywhere in the record is a
         * permerror, before any of it is interpreted */
        c->syntax_why = why;
        n = snprintf(out, size, "%s", SPF_PERMERROR_RECORD);
    } else if ((n = spf_record_rewrite(rr->rr[cnt]->txt, len, c->family, out, size)) < 0) {
        mxd_panic("spf: a rewritten record does not fit");
    }
    ok = SPF_dns_rr_buf_realloc(rr, cnt, (size_t)n + 1) == SPF_E_SUCCESS;
    if (ok)
        memcpy(rr->rr[cnt]->txt, out, (size_t)n + 1);
    free(out);
    return ok;
}

/* Copies one answer record's data into rr->rr[*cnt]; false to skip it. */
static bool
rr_put(SPF_dns_rr_t *rr, int cnt, const ns_msg *msg, const ns_rr *r, struct spf_ctx *c)
{
    const unsigned char *d = ns_rr_rdata(*r);
    int len = ns_rr_rdlen(*r);
    char name[NS_MAXDNAME];
    size_t o = 0;

    switch (ns_rr_type(*r)) {
    case ns_t_a:
    case ns_t_aaaa:
        if (len != (ns_rr_type(*r) == ns_t_a ? 4 : 16) ||
            SPF_dns_rr_buf_realloc(rr, cnt, (size_t)len) != SPF_E_SUCCESS)
            return false;
        memcpy(rr->rr[cnt], d, (size_t)len);
        return true;
    case ns_t_mx:
    case ns_t_ptr:
        if (ns_rr_type(*r) == ns_t_mx && len < 3)
            return false;
        if (dn_expand(ns_msg_base(*msg), ns_msg_end(*msg), d + (ns_rr_type(*r) == ns_t_mx ? 2 : 0),
                      name, sizeof(name)) < 0)
            return false;
        /* the hosts of an "mx" with prefix length 0: CIDR0 names too */
        if (c->synth && strlen(name) + strlen(SPF_RECORD_CIDR0_SUFFIX) < sizeof(name))
            strcat(name, SPF_RECORD_CIDR0_SUFFIX);
        if (SPF_dns_rr_buf_realloc(rr, cnt, strlen(name) + 1) != SPF_E_SUCCESS)
            return false;
        strcpy(rr->rr[cnt]->mx, name);
        if (c->nexempt < SPF_EXEMPT_MAX) {
            c->exempt_ptr[c->nexempt] = ns_rr_type(*r) == ns_t_ptr;
            c->exempt_group[c->nexempt] = c->ngroups;
            strcpy(c->exempt[c->nexempt++], name);
        }
        return true;
    case ns_t_txt:
        /* RFC 7208 3.3: the character-strings are concatenated. */
        if (SPF_dns_rr_buf_realloc(rr, cnt, (size_t)len + 1) != SPF_E_SUCCESS)
            return false;
        for (int i = 0; i < len;) {
            int n = d[i++];

            if (n > len - i)
                n = len - i;
            memcpy(rr->rr[cnt]->txt + o, d + i, (size_t)n);
            o += (size_t)n;
            i += n;
        }
        rr->rr[cnt]->txt[o] = '\0';
        return txt_record(rr, cnt, o, c);
    default:
        return false;
    }
}

/* name is dom or below it (ASCII case-insensitive). */
static bool
name_under(const char *name, const char *dom)
{
    size_t n = strlen(name), d = strlen(dom);

    while (d > 0 && dom[d - 1] == '.')
        d--;
    while (n > 0 && name[n - 1] == '.')
        n--;
    return d > 0 && n >= d && strncasecmp(name + n - d, dom, d) == 0 &&
           (n == d || name[n - d - 1] == '.');
}

/* RFC 7208 7.3: of several validated names for %{p}, one at or below the
 * current domain SHOULD be used; libspf2 takes the first that validates,
 * so those names go first (a PTR RRset has no order of its own). The
 * names remembered for this answer follow the new order. */
static void
ptr_order(SPF_dns_rr_t *rr, struct spf_ctx *c)
{
    const char *dom = c->req != NULL ? c->req->cur_dom : NULL;
    size_t first = c->nexempt >= (size_t)rr->num_rr ? c->nexempt - (size_t)rr->num_rr : 0;
    int k = 0;

    if (dom == NULL)
        return;
    for (int i = 0; i < rr->num_rr; i++) {
        if (name_under(rr->rr[i]->ptr, dom)) {
            SPF_dns_rr_data_t *t = rr->rr[i];

            memmove(&rr->rr[k + 1], &rr->rr[k], (size_t)(i - k) * sizeof(rr->rr[0]));
            rr->rr[k++] = t;
        }
    }
    if (k == 0 || c->nexempt - first != (size_t)rr->num_rr)
        return;
    for (int i = 0; i < rr->num_rr; i++)
        snprintf(c->exempt[first + (size_t)i], sizeof(c->exempt[0]), "%s", rr->rr[i]->ptr);
}

static void
parse_answer(SPF_dns_rr_t *rr, ns_type type, struct spf_ctx *c, const struct spf_answer *a)
{
    ns_msg msg;
    ns_rr r;
    int cnt = 0;

    if (a->len > NS_MAXMSG || ns_initparse(a->packet, (int)a->len, &msg) < 0) {
        rr->herrno = TRY_AGAIN;
        return;
    }
    if (type == ns_t_mx || type == ns_t_ptr)
        c->ngroups++; /* the names of this answer, for ctx_want_siblings */
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        if (ns_parserr(&msg, ns_s_an, i, &r) < 0) {
            rr->herrno = TRY_AGAIN;
            return;
        }
        /* RFC 7208 4.6.4: past 10 PTR names, the rest are ignored (libspf2
         * would make it a permerror) */
        if (type == ns_t_ptr && cnt == SPF_NAMES_PER_TERM)
            break;
        if (ns_rr_type(r) == type && ns_rr_class(r) == ns_c_in && rr_put(rr, cnt, &msg, &r, c))
            cnt++;
    }
    rr->num_rr = cnt;
    if (type == ns_t_ptr)
        ptr_order(rr, c);
}

/* RFC 7208 4.3: a domain that is not a multi-label FQDN with labels of
 * 1..63 octets gives "none" without any lookup. */
static size_t
name_labels(const char *d)
{
    size_t label = 0, labels = 1, len = strlen(d);

    if (len == 0 || len > 254 || d[0] == '[')
        return 0;
    for (const char *p = d; *p != '\0'; p++) {
        if (*p == '.') {
            if (label == 0)
                return 0;
            label = 0;
            labels += p[1] != '\0';
        } else if (++label > 63) {
            return 0;
        }
    }
    return labels;
}

static bool
name_ok(const char *d)
{
    return name_labels(d) > 0;
}

static bool
domain_ok(const char *d)
{
    return name_labels(d) > 1;
}

/* FNV-1a of the name in ASCII lower case, and the type. */
static uint32_t
answer_hash(const char *name, ns_type type)
{
    uint32_t h = 2166136261u ^ (uint32_t)type;

    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        h ^= *p >= 'A' && *p <= 'Z' ? *p + 32u : *p;
        h *= 16777619u;
    }
    return h;
}

/* The length of name without SPF_RECORD_CIDR0_SUFFIX; *synth whether it
 * had it. A CIDR0 name is answered from the name without it. */
static size_t
base_len(const char *name, bool *synth)
{
    size_t n = strlen(name), k = strlen(SPF_RECORD_CIDR0_SUFFIX);

    *synth = n > k && strcasecmp(name + n - k, SPF_RECORD_CIDR0_SUFFIX) == 0;
    return *synth ? n - k : n;
}

/* name without SPF_RECORD_CIDR0_SUFFIX, into buf (NS_MAXDNAME). */
static const char *
base_name(const char *name, char *buf, bool *synth)
{
    size_t n = base_len(name, synth);

    if (!*synth)
        return name;
    memcpy(buf, name, n);
    buf[n] = '\0';
    return buf;
}

static const struct spf_answer *
ctx_find(const struct spf_ctx *c, const char *qname, ns_type type)
{
    char buf[NS_MAXDNAME];
    bool synth;
    const char *name = base_name(qname, buf, &synth);
    uint32_t h = answer_hash(name, type);

    for (size_t i = 0; i < c->nans; i++) {
        if (c->ans[i].hash == h && c->ans[i].type == type && strcasecmp(c->ans[i].name, name) == 0)
            return &c->ans[i];
    }
    return NULL;
}

/* A name this run needs and the check has not asked for: noted, to be
 * asked for after the run. */
static void
ctx_want(struct spf_ctx *c, const char *qname, ns_type type)
{
    char buf[NS_MAXDNAME];
    bool synth;
    const char *name = base_name(qname, buf, &synth);

    c->missed = true;
    for (size_t i = 0; i < c->nwant; i++) {
        if (c->want[i].type == type && strcasecmp(c->want[i].name, name) == 0)
            return;
    }
    if (c->nwant < SPF_WANT_MAX && strlen(name) < NS_MAXDNAME) {
        strcpy(c->want[c->nwant].name, name);
        c->want[c->nwant++].type = type;
    }
}

/* libspf2 DNS layer: the answer gathered for (domain, type), or TRY_AGAIN
 * and a note to ask for it. Only gathered answers count as queries: they
 * are the ones sent. */
/* libspf2 asks for the addresses of an MX or PTR answer's names one by
 * one, and gives up at the first it lacks: when it lacks one, the names
 * after it in the same answer (as many as libspf2 looks at, 10) are asked
 * for too, so that one round of queries serves the whole term. */
static void
ctx_want_siblings(struct spf_ctx *c, const char *name, ns_type type)
{
    size_t i = 0, pos = 0;

    while (i < c->nexempt && strcasecmp(c->exempt[i], name) != 0)
        i++;
    if (i == c->nexempt)
        return;
    for (size_t j = 0; j < i; j++)
        pos += c->exempt_group[j] == c->exempt_group[i];
    for (size_t j = i + 1; j < c->nexempt && pos + 1 < SPF_NAMES_PER_TERM; j++) {
        if (c->exempt_group[j] != c->exempt_group[i])
            continue;
        pos++;
        if (ctx_find(c, c->exempt[j], type) == NULL)
            ctx_want(c, c->exempt[j], type);
    }
}

/* A CIDR0 name's address answer (spf_record_rewrite): an "a" or "mx"
 * with prefix length 0 for the client's family matches any address of
 * that family (RFC 7208 5.3, 5.4, 5.6), which libspf2 refuses to compile;
 * the rewritten mechanism has the full length, and any address of the
 * name becomes the client's. */
static void
synth_answer(SPF_dns_rr_t *rr, ns_type type, const struct spf_ctx *c)
{
    if (type == ns_t_a && c->family == AF_INET) {
        memcpy(rr->rr[0], &c->ip4, sizeof(c->ip4));
        rr->num_rr = 1;
    } else if (type == ns_t_aaaa && c->family == AF_INET6) {
        memcpy(rr->rr[0], &c->ip6, sizeof(c->ip6));
        rr->num_rr = 1;
    }
}

static SPF_dns_rr_t *
layer_lookup(SPF_dns_server_t *d, const char *domain, ns_type type, int should_cache)
{
    struct spf_ctx *c = d->hook;
    const struct spf_answer *a;
    SPF_dns_rr_t *rr;

    char base[NS_MAXDNAME];
    bool synth;

    (void)should_cache;
    if (type == ns_t_spf) /* RFC 7208 3.1: type SPF is not used any more */
        return SPF_dns_rr_new_init(d, domain, type, 0, NO_DATA);
    /* no such name can exist (libspf2 asks anyway) */
    if (!name_ok(base_name(domain, base, &synth)))
        return SPF_dns_rr_new_init(d, domain, type, 0, HOST_NOT_FOUND);
    if ((a = ctx_find(c, domain, type)) == NULL) {
        /* no query after the budget, nor past the check's bound */
        if (resolver_timeout_until(c->deadline_ns) > 0 && c->nans < SPF_ANSWERS_MAX) {
            ctx_want(c, domain, type);
            if (type == ns_t_a || type == ns_t_aaaa)
                ctx_want_siblings(c, domain, type);
        }
        return SPF_dns_rr_new_init(d, domain, type, 0, TRY_AGAIN);
    }
    c->queries++;
    c->last_txt_void = false;
    if (!((type == ns_t_a || type == ns_t_aaaa) && ctx_exempt(c, domain)))
        c->terms++;
    if (a->herrno == TRY_AGAIN && (type == ns_t_a || type == ns_t_aaaa) &&
        ctx_exempt(c, domain) == 2) /* RFC 7208 5.5: the name is skipped (libspf2: temperror) */
        return SPF_dns_rr_new_init(d, domain, type, 0, NO_DATA);
    if (a->herrno != NETDB_SUCCESS) {
        if (a->herrno == HOST_NOT_FOUND || a->herrno == NO_DATA)
            ctx_void(c, domain, type);
        return SPF_dns_rr_new_init(d, domain, type, 0, a->herrno);
    }
    rr = SPF_dns_rr_new_init(d, domain, type, 0, NETDB_SUCCESS);
    if (rr == NULL)
        mxd_panic("spf: out of memory");
    c->synth = synth;
    parse_answer(rr, type, c, a);
    c->synth = false;
    if (rr->herrno == NETDB_SUCCESS && rr->num_rr == 0) {
        rr->herrno = NO_DATA;
        ctx_void(c, domain, type);
    }
    if (synth && rr->num_rr > 0)
        synth_answer(rr, type, c);
    return rr;
}

static enum spf_res
map_result(SPF_result_t r)
{
    switch (r) {
    case SPF_RESULT_PASS:
        return SPF_RES_PASS;
    case SPF_RESULT_FAIL:
        return SPF_RES_FAIL;
    case SPF_RESULT_SOFTFAIL:
        return SPF_RES_SOFTFAIL;
    case SPF_RESULT_NEUTRAL:
        return SPF_RES_NEUTRAL;
    case SPF_RESULT_NONE:
        return SPF_RES_NONE;
    case SPF_RESULT_TEMPERROR:
        return SPF_RES_TEMPERROR;
    default:
        return SPF_RES_PERMERROR;
    }
}

/* The record could not be had: none, temperror or permerror (a record
 * that does not compile leaves errors other than "not SPF" behind). */
static enum spf_res
map_record_error(SPF_response_t *resp, SPF_errcode_t err)
{
    if (SPF_response_result(resp) == SPF_RESULT_NONE ||
        SPF_response_result(resp) == SPF_RESULT_PERMERROR)
        return map_result(SPF_response_result(resp));
    if (err == SPF_E_DNS_ERROR)
        return SPF_RES_TEMPERROR;
    for (int i = 0; i < SPF_response_messages(resp); i++) {
        SPF_error_t *e = SPF_response_message(resp, i);

        if (SPF_error_errorp(e) && SPF_error_code(e) != SPF_E_NOT_SPF)
            return SPF_RES_PERMERROR;
    }
    return err == SPF_E_NOT_SPF ? SPF_RES_NONE : SPF_RES_PERMERROR;
}

static void
set_comment(struct spf_result *out, const struct spf_query *q, const char *id, const char *why)
{
    char *c = out->comment;
    size_t n = sizeof(out->comment);
    const char *r = q->receiver;

    switch (out->res) {
    case SPF_RES_NONE:
        snprintf(c, n, "%s: domain of %s does not designate permitted sender hosts", r, id);
        break;
    case SPF_RES_NEUTRAL:
        snprintf(c, n, "%s: %s is neither permitted nor denied by domain of %s", r, q->ip, id);
        break;
    case SPF_RES_PASS:
        snprintf(c, n, "%s: domain of %s designates %s as permitted sender", r, id, q->ip);
        break;
    case SPF_RES_FAIL:
        snprintf(c, n, "%s: domain of %s does not designate %s as permitted sender", r, id, q->ip);
        break;
    case SPF_RES_SOFTFAIL:
        snprintf(c, n, "%s: domain of transitioning %s does not designate %s as permitted sender",
                 r, id, q->ip);
        break;
    case SPF_RES_TEMPERROR:
        snprintf(c, n, "%s: error in processing during lookup of %s: %s", r, id, why);
        break;
    case SPF_RES_PERMERROR:
        snprintf(c, n, "%s: permanent error in processing domain of %s: %s", r, id, why);
        break;
    }
}

/* check_host() for the request; returns libspf2's error text for errors. */
static const char *
run(SPF_server_t *srv, SPF_request_t *req, struct spf_result *out)
{
    SPF_response_t *resp = SPF_response_new(req);
    SPF_record_t *rec = NULL;
    SPF_errcode_t err;
    const char *why, *exp;

    if (resp == NULL)
        mxd_panic("spf: out of memory");
    req->cur_dom = req->env_from_dp; /* what libspf2's own entry points set */
    err = SPF_server_get_record(srv, req, resp, &rec);
    if (err == SPF_E_SUCCESS) {
        resp->spf_record_exp = rec;
        err = SPF_record_interpret(rec, req, resp, 0);
        resp->spf_record_exp = NULL;
        SPF_record_free(rec);
        out->res = map_result(SPF_response_result(resp));
        exp = SPF_response_get_explanation(resp);
        /* RFC 7208 6.2: the exp= text is the sender domain's, and it goes
         * into our reply: one clean line, never a CR or LF. */
        if (out->res == SPF_RES_FAIL && exp != NULL)
            reply_text_clean(out->explanation, sizeof(out->explanation), exp, strlen(exp), false);
    } else {
        /* a record that did not compile is left behind (libspf2 1.2.10) */
        if (rec != NULL)
            SPF_record_free(rec);
        out->res = map_record_error(resp, err);
    }
    if (err == SPF_E_SUCCESS && SPF_response_errcode(resp) != SPF_E_SUCCESS)
        err = SPF_response_errcode(resp);
    why =
        err == SPF_E_DNS_ERROR || out->res == SPF_RES_TEMPERROR ? "DNS failure" : SPF_strerror(err);
    SPF_response_free(resp);
    return why;
}

/* The client of q into c; false when it is no address. RFC 7208 5.6:
 * an IPv4-mapped IPv6 client (::ffff:a.b.c.d) is an IPv4 client. */
static bool
ctx_client(struct spf_ctx *c, const char *ip)
{
    if (inet_pton(AF_INET, ip, &c->ip4) == 1) {
        c->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, ip, &c->ip6) != 1)
        return false;
    c->family = AF_INET6;
    if (IN6_IS_ADDR_V4MAPPED(&c->ip6)) {
        memcpy(&c->ip4, c->ip6.s6_addr + 12, sizeof(c->ip4));
        c->family = AF_INET;
    }
    return true;
}

/* Sets up libspf2 for q; NULL when the identity cannot be checked. */
static SPF_request_t *
request_new(SPF_server_t *srv, struct spf_ctx *c, const struct spf_query *q, struct spf_result *out)
{
    SPF_request_t *req = SPF_request_new(srv);
    SPF_errcode_t e;

    if (req == NULL)
        mxd_panic("spf: out of memory");
    if (!ctx_client(c, q->ip))
        goto fail;
    e = c->family == AF_INET ? SPF_request_set_ipv4(req, c->ip4)
                             : SPF_request_set_ipv6(req, c->ip6);
    if (e != SPF_E_SUCCESS)
        goto fail;
    if (q->helo[0] != '\0' && SPF_request_set_helo_dom(req, q->helo) != SPF_E_SUCCESS)
        goto fail;
    /* RFC 7208 2.4: for <> the identity is postmaster@<HELO name>. */
    if (SPF_request_set_env_from(req, out->helo_identity ? q->helo : q->sender) != 0)
        goto fail;
    snprintf(out->domain, sizeof(out->domain), "%s", req->env_from_dp);
    if (!domain_ok(out->domain))
        goto fail;
    return req;
fail:
    SPF_request_free(req);
    return NULL;
}

/* RFC 7208 4.6.4 across the whole check (libspf2 counts DNS terms per
 * record, and void lookups not at all). A fail's exp= lookup comes after
 * the decision and counts for neither. */
static void
limits(const struct spf_ctx *c, struct spf_result *out, const char **why)
{
    unsigned terms = c->terms > 0 ? c->terms - 1 : 0; /* the first TXT is no term */

    out->queries = c->queries;
    out->voids = c->voids;
    if (out->res == SPF_RES_FAIL && c->last_txt_void) {
        out->voids--;
        terms--;
    }
    if (out->res == SPF_RES_TEMPERROR)
        return;
    if (terms > SPF_DNS_TERMS_MAX) {
        out->res = SPF_RES_PERMERROR;
        *why = "more than 10 DNS-querying terms";
    } else if (out->voids > SPF_VOID_MAX) {
        out->res = SPF_RES_PERMERROR;
        *why = "more than 2 void lookups";
    }
    if (out->res == SPF_RES_PERMERROR)
        out->explanation[0] = '\0';
}

/* ---- the check: runs of libspf2 and the queries between them ---------- */

struct spf_job;

/* One query out for a name a run missed. */
struct spf_pending {
    struct spf_job *job;
    char name[NS_MAXDNAME];
    ns_type type;
};

struct spf_job {
    struct resolver *r;
    struct spf_query q;
    struct spf_result *out;
    spf_cb cb;
    void *arg;
    uint64_t start;
    uv_timer_t first;     /* the first run, from the loop */
    SPF_dns_server_t dns; /* our layer; libspf2 does not free it */
    SPF_server_t *srv;
    struct spf_ctx c;
    struct spf_pending *pend; /* SPF_WANT_MAX, while queries are out */
    size_t pending;
};

/* One run of check_host() with the answers gathered so far. */
static void
run_once(struct spf_job *j)
{
    struct spf_ctx *c = &j->c;
    struct spf_result *out = j->out;
    SPF_request_t *req;
    const char *id, *why = "";

    c->queries = c->voids = c->terms = 0;
    c->last_txt_void = false;
    c->nexempt = 0;
    c->ngroups = 0;
    c->nwant = 0;
    c->missed = false;
    memset(out, 0, sizeof(*out));
    out->res = SPF_RES_NONE;
    out->helo_identity = j->q.sender[0] == '\0';
    id = out->helo_identity ? j->q.helo : j->q.sender;
    c->syntax_why = NULL;
    if ((req = request_new(j->srv, c, &j->q, out)) != NULL) {
        c->req = req;
        why = run(j->srv, req, out);
        c->req = NULL;
        SPF_request_free(req);
    }
    if (out->res == SPF_RES_PERMERROR && c->syntax_why != NULL)
        why = c->syntax_why;
    limits(c, out, &why);
    set_comment(out, &j->q, id, why);
}

static void on_first_closed(uv_handle_t *h);
static void ask_missing(struct spf_job *j);

/* Runs the check again; a run that missed nothing is the answer. */
static void
step(struct spf_job *j)
{
    run_once(j);
    if (j->c.missed && j->c.nwant > 0) {
        ask_missing(j);
        return;
    }
    j->out->ms = (double)(uv_hrtime() - j->start) / 1e6;
    j->cb(j->arg, j->out);
    uv_close((uv_handle_t *)&j->first, on_first_closed);
}

static void
on_missing(void *arg, const struct resolver_answer *a)
{
    struct spf_pending *p = arg;
    struct spf_job *j = p->job;
    struct spf_answer *s;

    j->c.ans = xrealloc(j->c.ans, (j->c.nans + 1) * sizeof(*j->c.ans));
    s = &j->c.ans[j->c.nans++];
    memset(s, 0, sizeof(*s));
    s->name = xstrdup(p->name);
    s->hash = answer_hash(p->name, p->type);
    s->type = p->type;
    switch (a->status) {
    case RESOLVER_OK:
        s->herrno = NETDB_SUCCESS;
        s->packet = xmalloc(a->len > 0 ? a->len : 1);
        memcpy(s->packet, a->packet, a->len);
        s->len = a->len;
        break;
    case RESOLVER_NODATA:
        s->herrno = NO_DATA;
        break;
    case RESOLVER_NXDOMAIN:
        s->herrno = HOST_NOT_FOUND;
        break;
    case RESOLVER_SERVFAIL: /* SERVFAIL, REFUSED, timeout: temperror */
    case RESOLVER_TIMEOUT:
        s->herrno = TRY_AGAIN;
        break;
    }
    if (--j->pending == 0)
        step(j);
}

/* Asks for every name the last run missed, each with the time left. */
static void
ask_missing(struct spf_job *j)
{
    unsigned timeout = resolver_timeout_until(j->c.deadline_ns);

    if (timeout == 0) { /* spent since the run: the next run asks for nothing */
        step(j);
        return;
    }
    if (j->pend == NULL)
        j->pend = xcalloc(SPF_WANT_MAX, sizeof(*j->pend));
    j->pending = j->c.nwant;
    for (size_t i = 0; i < j->c.nwant; i++) {
        struct spf_pending *p = &j->pend[i];

        p->job = j;
        strcpy(p->name, j->c.want[i].name);
        p->type = j->c.want[i].type;
        (void)resolver_query(j->r, p->name, p->type, timeout, on_missing, p);
    }
}

static void
on_first(uv_timer_t *t)
{
    step(t->data);
}

static void
on_first_closed(uv_handle_t *h)
{
    struct spf_job *j = h->data;

    for (size_t i = 0; i < j->c.nans; i++) {
        free(j->c.ans[i].name);
        free(j->c.ans[i].packet);
    }
    free(j->c.ans);
    free(j->pend);
    SPF_server_free(j->srv);
    free(j);
}

/* No query is sent after this uv_hrtime(), for a check starting at now. */
static uint64_t
query_deadline(const struct spf_query *q, uint64_t now)
{
    unsigned budget_ms = q->budget_ms ? q->budget_ms : SPF_BUDGET_MS;

    return q->deadline_ns != 0 ? q->deadline_ns : now + (uint64_t)budget_ms * 1000000;
}

void
spf_check_with(uv_loop_t *loop, struct resolver *r, const struct spf_query *q,
               struct spf_result *out, spf_cb cb, void *arg)
{
    struct spf_job *j = xcalloc(1, sizeof(*j));

    j->r = r;
    j->q = *q;
    j->out = out;
    j->cb = cb;
    j->arg = arg;
    j->start = uv_hrtime();
    /* The budget runs from now. */
    j->c.deadline_ns = query_deadline(q, j->start);
    j->dns.lookup = layer_lookup; /* destroy NULL: we free it ourselves */
    j->dns.name = "mxd";
    j->dns.hook = &j->c;
    if ((j->srv = SPF_server_new_dns(&j->dns, 0)) == NULL)
        mxd_panic("spf: out of memory");
    SPF_server_set_rec_dom(j->srv, q->receiver);
    if (uv_timer_init(loop, &j->first) != 0)
        mxd_panic("spf: uv_timer_init failed");
    j->first.data = j;
    if (uv_timer_start(&j->first, on_first, 0, 0) != 0)
        mxd_panic("spf: uv_timer_start failed");
}

void
spf_check_async(uv_loop_t *loop, const struct conf *conf, const struct spf_query *q,
                struct spf_result *out, spf_cb cb, void *arg)
{
    spf_check_with(loop, resolver_get(loop, conf), q, out, cb, arg);
}
