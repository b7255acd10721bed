/* dmarc: evaluates DMARC (RFC 7489) for one message with libopendmarc and
 * Debian's public suffix list, its records from the resolver.
 *
 * Owns, per check (struct dmarc_job), the state of each author domain: we
 * look the _dmarc records up ourselves (RFC 7489 6.6.3: the From domain,
 * then its organizational domain), for every author at once, and hand the
 * record to libopendmarc, which parses it and decides alignment on the
 * loop thread (computing only); its own resolver is never used. The
 * library (public suffix list) is initialised once (pthread_once), at the
 * first check. Loop thread only. It does not send reports (rua/ruf) and
 * does not log (the caller does). */
#define _DEFAULT_SOURCE
#include "check/dmarc.h"

#include <sys/types.h>

#include <arpa/nameser.h>
#include <netinet/in.h>
#include <opendmarc/dmarc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dnsmsg.h"

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

bool
dmarc_relaxed_aligned(const char *a, const char *b)
{
    char oa[256], ob[256];

    if (a == NULL || b == NULL || a[0] == '\0' || b[0] == '\0')
        return false;
    if (ascii_casecmp(a, b) == 0)
        return true;
    pthread_once(&lib_once, lib_init);
    if (!lib_ok || strlen(a) >= sizeof(oa) || strlen(b) >= sizeof(ob))
        return false;
    oa[0] = ob[0] = '\0';
    if (opendmarc_get_tld((u_char *)(uintptr_t)a, (u_char *)oa, sizeof(oa)) != 0 ||
        opendmarc_get_tld((u_char *)(uintptr_t)b, (u_char *)ob, sizeof(ob)) != 0)
        return false;
    return oa[0] != '\0' && ascii_casecmp(oa, ob) == 0;
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

/* One author domain's outcome, once its lookups are over: rc is 0 (rec
 * holds the record, found at the From domain or, when org is not "", at
 * the organizational domain), MXD_ENOENT (no record) or MXD_EIO. */
static void
evaluate(const struct dmarc_input *in, const char *from, int rc, const char *rec, const char *org,
         struct dmarc_author *out)
{
    DMARC_POLICY_T *pctx;

    snprintf(out->domain, sizeof(out->domain), "%s", from);
    if (rc == MXD_EIO) {
        out->res = DMARC_RES_TEMPERROR;
        snprintf(out->why, sizeof(out->why), "DNS failure");
        return;
    }
    if (rc == MXD_ENOENT) {
        out->res = DMARC_RES_NONE;
        return;
    }
    pctx = opendmarc_policy_connect_init((u_char *)(uintptr_t)in->ip,
                                         strchr(in->ip, ':') != NULL ? DMARC_POLICY_IP_TYPE_IPV6
                                                                     : DMARC_POLICY_IP_TYPE_IPV4);
    if (pctx == NULL)
        mxd_panic("dmarc: out of memory");
    (void)opendmarc_policy_store_from_domain(pctx, (u_char *)(uintptr_t)from);
    store_auth(pctx, in);
    if (opendmarc_policy_store_dmarc(pctx, (u_char *)(uintptr_t)rec, (u_char *)(uintptr_t)from,
                                     org[0] != '\0' ? (u_char *)(uintptr_t)org : NULL) !=
        DMARC_PARSE_OKAY) {
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

/* ---- the lookups ----------------------------------------------------- */

struct dmarc_job;

/* One author domain's lookups. */
struct author_job {
    struct dmarc_job *job;
    size_t i;
    char org[256]; /* "" until the From domain had no record */
    struct rec_find r;
};

struct dmarc_job {
    struct resolver *r;
    uint64_t deadline_ns;
    struct dmarc_input in;
    struct dmarc_result *out;
    dmarc_cb cb;
    void *arg;
    uv_timer_t kick; /* starts the job from the loop */
    struct author_job authors[DMARC_AUTHORS_MAX];
    size_t pending; /* authors still looking */
};

static void
on_kick_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
job_done(struct dmarc_job *j)
{
    struct dmarc_result *out = j->out;
    const struct dmarc_author *worst = NULL;

    for (size_t i = 0; i < out->nauthors; i++) {
        if (worst == NULL || strictness(&out->authors[i]) > strictness(worst))
            worst = &out->authors[i];
    }
    if (worst != NULL) {
        out->res = worst->res;
        out->reject = worst->reject;
        memcpy(out->domain, worst->domain, sizeof(out->domain));
        memcpy(out->policy, worst->policy, sizeof(out->policy));
        memcpy(out->why, worst->why, sizeof(out->why));
    }
    j->cb(j->arg, out);
    uv_close((uv_handle_t *)&j->kick, on_kick_closed);
}

static void
author_done(struct author_job *a, int rc)
{
    struct dmarc_job *j = a->job;

    evaluate(&j->in, j->in.from_domains[a->i], rc, a->r.rec, a->org, &j->out->authors[a->i]);
    if (--j->pending == 0)
        job_done(j);
}

static void on_record(void *arg, const struct resolver_answer *ans);

/* Asks for _dmarc.<domain>; false when it cannot be asked for (too long,
 * or the time is spent: rc says which). */
static bool
ask_record(struct author_job *a, const char *domain, int *rc)
{
    struct dmarc_job *j = a->job;
    char name[NS_MAXDNAME];

    memset(&a->r, 0, sizeof(a->r));
    if (snprintf(name, sizeof(name), "_dmarc.%s", domain) >= (int)sizeof(name)) {
        *rc = MXD_ENOENT;
        return false;
    }
    if (resolver_timeout_until(j->deadline_ns) == 0) {
        *rc = MXD_EIO;
        return false;
    }
    j->out->queries++;
    (void)resolver_query(j->r, name, RESOLVER_TYPE_TXT, RESOLVER_TIMEOUT_MS, on_record, a);
    return true;
}

static void
on_record(void *arg, const struct resolver_answer *ans)
{
    struct author_job *a = arg;
    const char *from = a->job->in.from_domains[a->i];
    int rc = MXD_ENOENT;

    if (ans->status == RESOLVER_SERVFAIL || ans->status == RESOLVER_TIMEOUT ||
        (ans->status == RESOLVER_OK && dnsmsg_txt(ans->packet, ans->len, rec_txt, &a->r) != 0))
        rc = MXD_EIO;
    else if (a->r.n == 1 && a->r.rec[0] != '\0')
        rc = 0;
    /* RFC 7489 6.6.3: none, or several (all ignored): the organizational
     * domain's record, once */
    if (rc == MXD_ENOENT && a->org[0] == '\0' &&
        opendmarc_get_tld((u_char *)(uintptr_t)from, (u_char *)a->org, sizeof(a->org)) == 0 &&
        a->org[0] != '\0' && strcmp(a->org, from) != 0 && ask_record(a, a->org, &rc))
        return;
    author_done(a, rc);
}

static void
on_kick(uv_timer_t *t)
{
    struct dmarc_job *j = t->data;
    const struct dmarc_input *in = &j->in;
    struct dmarc_result *out = j->out;

    if (in->from_bad || in->nfrom == 0 || in->nfrom > DMARC_AUTHORS_MAX) {
        out->res = DMARC_RES_PERMERROR; /* RFC 7489 6.6.1 */
        snprintf(out->why, sizeof(out->why), "no usable From: domain");
        job_done(j);
        return;
    }
    if (!lib_ok) {
        out->res = DMARC_RES_TEMPERROR;
        snprintf(out->why, sizeof(out->why), "library");
        job_done(j);
        return;
    }
    out->nauthors = in->nfrom;
    j->pending = in->nfrom;
    for (size_t i = 0; i < in->nfrom; i++) {
        struct author_job *a = &j->authors[i];
        int rc;

        a->job = j;
        a->i = i;
        if (!ask_record(a, in->from_domains[i], &rc))
            author_done(a, rc);
    }
}

void
dmarc_check_async(uv_loop_t *loop, struct resolver *r, const struct dmarc_input *in,
                  uint64_t deadline_ns, struct dmarc_result *out, dmarc_cb cb, void *arg)
{
    struct dmarc_job *j = xcalloc(1, sizeof(*j));

    pthread_once(&lib_once, lib_init);
    memset(out, 0, sizeof(*out));
    j->r = r;
    j->deadline_ns = deadline_ns;
    j->in = *in;
    j->out = out;
    j->cb = cb;
    j->arg = arg;
    if (uv_timer_init(loop, &j->kick) != 0)
        mxd_panic("dmarc: uv_timer_init failed");
    j->kick.data = j;
    if (uv_timer_start(&j->kick, on_kick, 0, 0) != 0)
        mxd_panic("dmarc: uv_timer_start failed");
}
