/* dmarc: evaluates DMARC (RFC 7489) for one message, its records from
 * the resolver and the organizational domain from Debian's public suffix
 * list.
 *
 * Owns, per check (struct dmarc_job), the state of each author domain: we
 * look the _dmarc records up ourselves (RFC 7489 6.6.3: the From domain,
 * then its organizational domain), for every author at once; each record
 * is checked and read by dmarc_record.c, the organizational domain found
 * by psl.c, and alignment (3.1) and the policy (6.6.2 to 6.6.4) decided
 * here, on the loop thread (computing only).
 *
 * libopendmarc 1.4 did this before issue 20 and got it wrong where it
 * counts: its public suffix lookup (opendmarc_get_tld) knows no wildcard,
 * exception or private-section rule, so relaxed alignment took
 * a.c.kobe.jp and b.c.kobe.jp for one organization; it took "p=rej" for
 * reject and ignored pct=. mxd no longer calls it.
 *
 * The list is read once (pthread_once), at the first check or
 * dmarc_org_domain call: about 10 ms. Loop thread only, except
 * dmarc_org_domain and dmarc_result_unchecked. It does not send reports
 * (rua/ruf) and does not log (the caller does). */
#define _DEFAULT_SOURCE
#include "check/dmarc.h"

#include <sys/stat.h>

#include <arpa/nameser.h>
#include <idn2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check/dmarc_record.h"
#include "check/psl.h"
#include "dns/dnsmsg.h"

#define DMARC_RES_NAME(e, s) s,
static const char *const res_names[] = {DMARC_RESULTS(DMARC_RES_NAME)};
#undef DMARC_RES_NAME

const char *
dmarc_res_name(enum dmarc_res r)
{
    return (unsigned)r < sizeof(res_names) / sizeof(res_names[0]) ? res_names[r] : "?";
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static struct psl *psl; /* written once under lib_once, read-only after */

static void
lib_init(void)
{
    FILE *f = fopen(DMARC_PSL_PATH, "rb");
    char *data = NULL;
    struct stat st;

    if (f != NULL && fstat(fileno(f), &st) == 0 && st.st_size > 0 && st.st_size < (64 << 20)) {
        data = xmalloc((size_t)st.st_size);
        if (fread(data, 1, (size_t)st.st_size, f) == (size_t)st.st_size)
            psl = psl_new(data, (size_t)st.st_size);
    }
    free(data);
    if (f != NULL)
        fclose(f);
}

static size_t
labels(const char *d)
{
    size_t n = 1;

    for (; *d != '\0'; d++)
        n += *d == '.';
    return n;
}

int
dmarc_org_domain(const char *domain, char *out, size_t size)
{
    char low[256], org[256];
    char *uni = NULL;
    const char *name = low, *p = low;
    size_t len = strlen(domain);
    int rc;

    pthread_once(&lib_once, lib_init);
    if (psl == NULL || len == 0 || len >= sizeof(low))
        return MXD_ENOENT;
    for (size_t i = 0; i <= len; i++)
        low[i] = domain[i] >= 'A' && domain[i] <= 'Z' ? (char)(domain[i] - 'A' + 'a') : domain[i];
    /* The list's rules are in U-labels: a name with A-labels is looked up
     * as its U-labels, and the answer given in the name's own labels. */
    if (strstr(low, "xn--") != NULL && idn2_to_unicode_8z8z(low, &uni, 0) == IDN2_OK &&
        labels(uni) == labels(low))
        name = uni;
    rc = psl_org_domain(psl, name, org, sizeof(org));
    if (rc == 0) {
        while (labels(p) > labels(org))
            p = strchr(p, '.') + 1;
        if (strlen(p) >= size)
            rc = MXD_ENOENT;
        else
            memcpy(out, p, strlen(p) + 1);
    }
    free(uni);
    return rc;
}

bool
dmarc_relaxed_aligned(const char *a, const char *b)
{
    char oa[256], ob[256];

    if (a == NULL || b == NULL || a[0] == '\0' || b[0] == '\0')
        return false;
    if (ascii_casecmp(a, b) == 0)
        return true;
    /* RFC 7489 3.2: the same organizational domain */
    return dmarc_org_domain(a, oa, sizeof(oa)) == 0 && dmarc_org_domain(b, ob, sizeof(ob)) == 0 &&
           ascii_casecmp(oa, ob) == 0;
}

struct rec_find {
    char rec[1024];
    size_t len;
    unsigned n;
};

static void
rec_txt(void *arg, const char *txt, size_t len)
{
    struct rec_find *r = arg;

    /* RFC 7489 6.6.3 step 5: records not starting with v=DMARC1 are
     * discarded; of those that do, several count as none (step 4) */
    if (!dmarc_record_is_dmarc(txt, len))
        return;
    if (r->n++ == 0 && len < sizeof(r->rec)) {
        memcpy(r->rec, txt, len);
        r->rec[len] = '\0';
        r->len = len;
    }
}

/* RFC 7489 3.1.1, 3.1.2: strict, the same domain; relaxed, the same
 * organizational domain. */
static bool
aligned(const char *from, const char *id, bool strict)
{
    char a[256], b[256];

    if (strcasecmp(from, id) == 0)
        return true;
    if (strict || dmarc_org_domain(from, a, sizeof(a)) != 0 ||
        dmarc_org_domain(id, b, sizeof(b)) != 0)
        return false;
    return strcmp(a, b) == 0;
}

/* RFC 7489 4.2: a pass when an authenticated identifier aligns: a DKIM
 * signature that passed (d=), or SPF's pass for the MAIL FROM domain (for
 * a null MAIL FROM, the HELO identity is the MAIL FROM one: RFC 7489 4.1,
 * RFC 7208 2.4). No pass but an aligned identifier whose check failed
 * temporarily: temperror (the verdict may change; mxd refuses nothing on
 * it). */
static enum dmarc_res
identifiers(const struct dmarc_input *in, const char *from, const struct dmarc_record *rec)
{
    bool temp = false;

    if (in->spf_domain[0] != '\0' && aligned(from, in->spf_domain, rec->aspf_strict)) {
        if (in->spf == SPF_RES_PASS)
            return DMARC_RES_PASS;
        temp = in->spf == SPF_RES_TEMPERROR;
    }
    for (size_t i = 0; in->dkim != NULL && i < in->dkim->nsigs; i++) {
        const struct dkim_sig *s = &in->dkim->sigs[i];

        if (s->domain[0] == '\0' || !aligned(from, s->domain, rec->adkim_strict))
            continue;
        if (s->res == DKIM_RES_PASS)
            return DMARC_RES_PASS;
        temp = temp || s->res == DKIM_RES_TEMPERROR;
    }
    return temp ? DMARC_RES_TEMPERROR : DMARC_RES_FAIL;
}

/* One author domain's outcome, once its lookups are over: rc is 0 (rec
 * holds the record, found at the From domain or, when org is not "", at
 * the organizational domain), MXD_ENOENT (no record), MXD_ETOOBIG
 * (several), MXD_EINVAL (one too long to read) or MXD_EIO. */
static void
evaluate(const struct dmarc_input *in, const char *from, int rc, const struct rec_find *found,
         const char *org, struct dmarc_author *out)
{
    struct dmarc_record rec;
    const char *why = NULL;

    snprintf(out->domain, sizeof(out->domain), "%s", from);
    if (rc == MXD_EIO) {
        out->res = DMARC_RES_TEMPERROR;
        snprintf(out->why, sizeof(out->why), "DNS failure");
        return;
    }
    if (rc == MXD_ENOENT || rc == MXD_ETOOBIG) {
        out->res = DMARC_RES_NONE;
        if (rc == MXD_ETOOBIG) /* RFC 7489 6.6.3 step 5 */
            snprintf(out->why, sizeof(out->why), "several DMARC records");
        return;
    }
    if (rc == MXD_EINVAL || dmarc_record_parse(found->rec, found->len, &rec, &why) != 0) {
        /* RFC 7489 6.6.3 step 6: no DMARC processing; 11.2: permerror
         * for a record that is not correct */
        out->res = DMARC_RES_PERMERROR;
        snprintf(out->why, sizeof(out->why), "%s", why != NULL ? why : "record too long");
        return;
    }
    snprintf(out->policy, sizeof(out->policy), "%s", dmarc_policy_name(rec.p));
    out->res = identifiers(in, from, &rec);
    /* policy.dmarc: sp= when the record is the organizational domain's
     * (6.3: sp= is for subdomains), pct= applied to a failure (6.6.4) */
    if (out->res != DMARC_RES_FAIL)
        rec.pct = 100; /* the sample is of failures only */
    snprintf(out->applied, sizeof(out->applied), "%s",
             dmarc_policy_name(dmarc_record_policy(&rec, org[0] != '\0', in->sample)));
    out->reject = out->res == DMARC_RES_FAIL && strcmp(out->applied, "reject") == 0;
}

/* How strict an outcome is: a failure under p=reject first, then
 * quarantine, then any failure, then the errors (RFC 7489 6.6.1: "the most
 * strict policy selected among the checks that fail"). */
static int
strictness(const struct dmarc_author *a)
{
    if (a->res == DMARC_RES_FAIL)
        return a->reject ? 6 : strcmp(a->applied, "quarantine") == 0 ? 5 : 4;
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
        memcpy(out->applied, worst->applied, sizeof(out->applied));
        memcpy(out->why, worst->why, sizeof(out->why));
    }
    j->cb(j->arg, out);
    uv_close((uv_handle_t *)&j->kick, on_kick_closed);
}

static void
author_done(struct author_job *a, int rc)
{
    struct dmarc_job *j = a->job;

    evaluate(&j->in, j->in.from_domains[a->i], rc, &a->r, a->org, &j->out->authors[a->i]);
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
    else if (a->r.n > 1)
        rc = MXD_ETOOBIG; /* RFC 7489 6.6.3 step 5: no DMARC processing */
    else if (a->r.n == 1)
        rc = a->r.rec[0] != '\0' ? 0 : MXD_EINVAL; /* over 1023 octets */
    /* RFC 7489 6.6.3 step 3: no record: the organizational domain's, once */
    if (rc == MXD_ENOENT && a->org[0] == '\0' &&
        dmarc_org_domain(from, a->org, sizeof(a->org)) == 0 && strcasecmp(a->org, from) != 0 &&
        ask_record(a, a->org, &rc))
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
    if (psl == NULL) {
        out->res = DMARC_RES_TEMPERROR;
        snprintf(out->why, sizeof(out->why), "no public suffix list");
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
