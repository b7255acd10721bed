/* dkim: verifies a message's DKIM-Signature fields (RFC 6376) with
 * libopendkim, its keys from the resolver.
 *
 * Owns one DKIM verify handle per message (struct dkim_verifier) and,
 * while dkim_verifier_finish_async runs, the job that fetches the keys
 * (struct dkim_job: one TXT query per signature to verify, all at once)
 * and the list of keys that failed. Everything runs on the loop thread:
 * the message is fed as it arrives (canonicalisation and hashing, no
 * I/O); at the end the keys are asked for through the resolver, and once
 * every answer is in, dkim_eom verifies with our key-lookup callback
 * answering from those answers (computing only). The callback refuses to
 * run at any other time (libopendkim must never look a key up itself).
 * The libopendkim library handle is created once (pthread_once) and never
 * changed afterwards.
 *
 * Bounded (issue 14): only the first max_sigs signatures are verified (our
 * prescreen callback has libopendkim ignore the rest, which are reported
 * in one neutral row), no key query starts after the deadline, and each
 * waits at most RESOLVER_TIMEOUT_MS. It does not sign, cache keys (the
 * resolver caches) or check ADSP/ATPS; it does not log (the caller does). */
#define _DEFAULT_SOURCE
#include "check/dkim.h"

#include <sys/types.h>

#include <arpa/nameser.h>
#include <netinet/in.h>
#include <opendkim/dkim.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "check/dkim_body.h"
#include "dns/dnsmsg.h"

#define DKIM_RES_NAME(e, s) s,
static const char *const res_names[] = {DKIM_RESULTS(DKIM_RES_NAME)};
#undef DKIM_RES_NAME

const char *
dkim_res_name(enum dkim_res r)
{
    return (unsigned)r < sizeof(res_names) / sizeof(res_names[0]) ? res_names[r] : "?";
}

/* A key whose lookup failed temporarily or was never made for want of
 * time: libopendkim reports those signatures like any other failure,
 * RFC 8601 2.7.1 says temperror. */
struct temp_key {
    char name[NS_MAXDNAME];
    bool late; /* the time budget was spent: not asked */
};

/* A key to fetch: TXT <selector>._domainkey.<domain>. */
enum key_state { KEY_PENDING, KEY_FOUND, KEY_NONE, KEY_TEMP, KEY_LATE };

struct dkim_key {
    char name[NS_MAXDNAME];
    enum key_state state;
    char *txt; /* KEY_FOUND: the first TXT record (RFC 6376 3.6.2.2) */
    struct dkim_job *job;
};

struct dkim_job {
    struct dkim_verifier *v; /* NULL: libopendkim could not start */
    struct resolver *r;
    uint64_t deadline_ns;
    uint64_t start;
    struct dkim_result *out;
    dkim_cb cb;
    void *arg;
    uv_timer_t kick; /* starts the job from the loop */
    struct dkim_key keys[DKIM_SIGS_MAX];
    size_t nkeys, pending;
};

struct dkim_verifier {
    DKIM *dkim;
    DKIM_STAT status;  /* the first error dkim_chunk reported */
    unsigned max_sigs; /* verified; the rest are ignored */
    unsigned skipped;  /* signatures ignored for max_sigs (prescreen) */
    /* set while dkim_eom runs in the job, for the key-lookup callback */
    bool finishing;
    struct dkim_job *job;
    unsigned queries;
    struct temp_key *temp; /* max_sigs entries while finishing */
    size_t ntemp;
    struct dkim_body body; /* the canonical body lengths, for l= */
};

#define WHY_LATE    "time budget spent"
#define WHY_KEYFAIL "key lookup failed"

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static DKIM_LIB *lib; /* written once under lib_once, read-only after */

static const struct dkim_key *
key_of(const struct dkim_job *job, const char *name)
{
    for (size_t i = 0; job != NULL && i < job->nkeys; i++) {
        if (strcasecmp(job->keys[i].name, name) == 0)
            return &job->keys[i];
    }
    return NULL;
}

/* libopendkim's key lookup, inside dkim_eom: the answer the job fetched
 * for TXT <selector>._domainkey.<domain>. */
static DKIM_CBSTAT
key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
    struct dkim_verifier *v = dkim_get_user_context(dkim);
    const struct dkim_key *k;
    char name[NS_MAXDNAME];

    if (v == NULL || !v->finishing)
        return DKIM_CBSTAT_TRYAGAIN; /* never a lookup of libopendkim's own */
    if (snprintf(name, sizeof(name), "%s._domainkey.%s", dkim_sig_getselector(sig),
                 dkim_sig_getdomain(sig)) >= (int)sizeof(name))
        return DKIM_CBSTAT_NOTFOUND;
    k = key_of(v->job, name);
    if (k != NULL && k->state == KEY_FOUND && strlen(k->txt) < buflen) {
        memcpy(buf, k->txt, strlen(k->txt) + 1);
        return DKIM_CBSTAT_CONTINUE;
    }
    if (k != NULL && (k->state == KEY_FOUND || k->state == KEY_NONE))
        return DKIM_CBSTAT_NOTFOUND; /* none, or too long to be a key */
    if (v->ntemp < v->max_sigs) {
        strcpy(v->temp[v->ntemp].name, name);
        v->temp[v->ntemp++].late = k == NULL || k->state == KEY_LATE;
    }
    return DKIM_CBSTAT_TRYAGAIN;
}

/* At the end of the header, on the loop thread: verify the first max_sigs
 * signatures (the topmost, RFC 6376 5.4.2's order of addition reversed). */
static DKIM_CBSTAT
prescreen(DKIM *dkim, DKIM_SIGINFO **sigs, int nsigs)
{
    struct dkim_verifier *v = dkim_get_user_context(dkim);

    for (int i = 0; v != NULL && i < nsigs; i++) {
        if ((unsigned)i >= v->max_sigs) {
            dkim_sig_ignore(sigs[i]);
            v->skipped++;
        }
    }
    return DKIM_CBSTAT_CONTINUE;
}

static void
lib_init(void)
{
    /* Without DELAYSIGPROC libopendkim looks the keys up at the end of the
     * header, inside dkim_chunk, on the loop thread: keep them for dkim_eom. */
    unsigned int flags = DKIM_LIBFLAGS_DELAYSIGPROC;
    /* RFC 8301 3.2: keys under 1024 bits are refused (KEYTOOSMALL) */
    unsigned int minbits = 1024;

    lib = dkim_init(NULL, NULL);
    if (lib != NULL && (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags)) !=
                            DKIM_STAT_OK ||
                        dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &minbits,
                                     sizeof(minbits)) != DKIM_STAT_OK ||
                        dkim_set_key_lookup(lib, key_lookup) != DKIM_STAT_OK ||
                        dkim_set_prescreen(lib, prescreen) != DKIM_STAT_OK)) {
        dkim_close(lib);
        lib = NULL;
    }
}

struct dkim_verifier *
dkim_verifier_new(unsigned max_sigs)
{
    struct dkim_verifier *v;
    DKIM_STAT st = DKIM_STAT_OK;

    pthread_once(&lib_once, lib_init);
    if (lib == NULL)
        return NULL;
    v = xcalloc(1, sizeof(*v));
    v->dkim = dkim_verify(lib, (const unsigned char *)"mxd", NULL, &st);
    if (v->dkim == NULL) {
        free(v);
        return NULL;
    }
    dkim_set_user_context(v->dkim, v);
    dkim_body_init(&v->body);
    v->max_sigs = max_sigs < 1 ? 1 : max_sigs > DKIM_SIGS_MAX - 1 ? DKIM_SIGS_MAX - 1 : max_sigs;
    return v;
}

void
dkim_verifier_feed(struct dkim_verifier *v, const char *data, size_t len)
{
    DKIM_STAT st;

    if (v == NULL || v->status != DKIM_STAT_OK || len == 0)
        return;
    dkim_body_feed(&v->body, data, len);
    st = dkim_chunk(v->dkim, (u_char *)(uintptr_t)data, len);
    if (st != DKIM_STAT_OK)
        v->status = st; /* e.g. DKIM_STAT_NOSIG at the end of the header */
}

static const struct temp_key *
key_failed(const struct dkim_verifier *v, DKIM_SIGINFO *sig)
{
    char name[NS_MAXDNAME];

    snprintf(name, sizeof(name), "%s._domainkey.%s", dkim_sig_getselector(sig),
             dkim_sig_getdomain(sig));
    for (size_t i = 0; i < v->ntemp; i++) {
        if (strcmp(v->temp[i].name, name) == 0)
            return &v->temp[i];
    }
    return NULL;
}

static enum dkim_res
sig_result(const struct dkim_verifier *v, DKIM_SIGINFO *sig)
{
    int err = dkim_sig_geterror(sig);

    if ((dkim_sig_getflags(sig) & DKIM_SIGFLAG_PASSED) != 0 &&
        dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH)
        return DKIM_RES_PASS;
    if (err == DKIM_SIGERROR_KEYFAIL || key_failed(v, sig) != NULL)
        return DKIM_RES_TEMPERROR;
    if (err == DKIM_SIGERROR_KEYTOOSMALL)
        return DKIM_RES_POLICY; /* RFC 8301 3.2, below */
    if (err == DKIM_SIGERROR_OK || err == DKIM_SIGERROR_BADSIG ||
        dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH)
        return DKIM_RES_FAIL;
    return DKIM_RES_PERMERROR; /* no key, bad key, malformed signature */
}

/*
 * A signature that verified but that mxd does not take as a pass, or a key
 * it refuses: the reason (in why), or NULL.
 * - RFC 8301 3.1: "Verifiers MUST NOT consider signatures using RSA-SHA1
 *   to be valid".
 * - RFC 8301 3.2: keys under 1024 bits are not used (libopendkim's
 *   DKIM_OPTS_MINKEYBITS refuses them before verifying: KEYTOOSMALL).
 * - RFC 6376 8.2 (l=): content past the signed length is not covered, and
 *   "Verifiers MAY choose to ... treat as suspect" such messages: such a
 *   signature is no pass, or an appended text would pass DMARC under the
 *   sender's name. An l= covering the whole body passes; one past the end
 *   fails (RFC 6376 3.5: "the signature MUST be treated as invalid").
 */
static const char *
sig_policy(const struct dkim_verifier *v, DKIM_SIGINFO *sig, enum dkim_res res, char *why,
           size_t size)
{
    dkim_alg_t alg;
    unsigned int bits = 0;
    ssize_t msglen = -1, canonlen = -1, signlen = -1;
    dkim_canon_t hc, bc;

    if (dkim_sig_geterror(sig) == DKIM_SIGERROR_KEYTOOSMALL) {
        (void)dkim_sig_getkeysize(sig, &bits);
        snprintf(why, size, "key of %u bits, under 1024 (RFC 8301 3.2)", bits);
        return why;
    }
    if (res != DKIM_RES_PASS)
        return NULL;
    if (dkim_sig_getsignalg(sig, &alg) == DKIM_STAT_OK && alg == DKIM_SIGN_RSASHA1) {
        snprintf(why, size, "rsa-sha1 is not accepted (RFC 8301 3.1)");
        return why;
    }
    if (dkim_sig_getcanonlen(v->dkim, sig, &msglen, &canonlen, &signlen) == DKIM_STAT_OK &&
        signlen >= 0 && dkim_sig_getcanons(sig, &hc, &bc) == DKIM_STAT_OK &&
        (bc == DKIM_CANON_RELAXED ? dkim_body_relaxed(&v->body) : dkim_body_simple(&v->body)) >
            (uint64_t)signlen) {
        snprintf(why, size, "body extends past l=%zd (RFC 6376 8.2)", signlen);
        return why;
    }
    return NULL;
}

/* d=, s= and the start of b= (header.d, header.s, header.b). */
static void
sig_names(const struct dkim_verifier *v, DKIM_SIGINFO *sig, struct dkim_sig *o)
{
    const unsigned char *d = dkim_sig_getdomain(sig), *s = dkim_sig_getselector(sig);
    char b[64];
    size_t blen = sizeof(b);

    snprintf(o->domain, sizeof(o->domain), "%s", d != NULL ? (const char *)d : "");
    snprintf(o->selector, sizeof(o->selector), "%s", s != NULL ? (const char *)s : "");
    if (dkim_get_sigsubstring(v->dkim, sig, b, &blen) == DKIM_STAT_OK) {
        /* RFC 6008 2: at least 8 characters of b= tell signatures apart */
        snprintf(o->b, sizeof(o->b), "%.*s", (int)(blen < 8 ? 8 : blen), b);
        if (strlen(o->b) > 8)
            o->b[8] = '\0';
    }
}

static void
sig_fill(struct dkim_verifier *v, DKIM_SIGINFO *sig, struct dkim_sig *o)
{
    char policy[sizeof(o->why)];

    o->res = sig_result(v, sig);
    sig_names(v, sig, o);
    if (sig_policy(v, sig, o->res, policy, sizeof(policy)) != NULL) {
        o->res = DKIM_RES_POLICY;
        memcpy(o->why, policy, sizeof(o->why));
    } else if (o->res != DKIM_RES_PASS) {
        const struct temp_key *t = key_failed(v, sig);
        const char *why = o->res == DKIM_RES_TEMPERROR
                              ? (t != NULL && t->late ? WHY_LATE : WHY_KEYFAIL)
                          : dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH
                              ? "body hash did not verify"
                              : dkim_sig_geterrorstr(dkim_sig_geterror(sig));

        snprintf(o->why, sizeof(o->why), "%s", why != NULL ? why : "verification failed");
    }
}

/* The signatures to verify (not ignored), and the row for the others. */
static void
sig_rows(struct dkim_verifier *v, DKIM_SIGINFO **sigs, int nsigs, bool verified,
         struct dkim_result *out)
{
    for (int i = 0; i < nsigs && out->nsigs < DKIM_SIGS_MAX - 1; i++) {
        struct dkim_sig *o = &out->sigs[out->nsigs];

        if ((dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE) != 0)
            continue;
        out->nsigs++;
        if (verified) {
            sig_fill(v, sigs[i], o);
        } else {
            o->res = DKIM_RES_TEMPERROR;
            sig_names(v, sigs[i], o);
            snprintf(o->why, sizeof(o->why), "%s", WHY_LATE);
        }
    }
    if (v->skipped > 0) {
        /* RFC 8601 2.7.1: neutral, "not otherwise able to be processed" */
        struct dkim_sig *o = &out->sigs[out->nsigs++];

        o->res = DKIM_RES_NEUTRAL;
        snprintf(o->why, sizeof(o->why), "too many signatures: %u not verified", v->skipped);
    }
}

/* Clears *out; without a verifier fills in its one temperror row and
 * returns false. */
static bool
result_init(const struct dkim_verifier *v, struct dkim_result *out)
{
    memset(out, 0, sizeof(*out));
    if (v != NULL)
        return true;
    out->nsigs = 1;
    out->sigs[0].res = DKIM_RES_TEMPERROR;
    snprintf(out->sigs[0].why, sizeof(out->sigs[0].why), "verifier unavailable");
    return false;
}

void
dkim_verifier_pending(struct dkim_verifier *v, struct dkim_result *out)
{
    DKIM_SIGINFO **sigs = NULL;
    int nsigs = 0;

    if (!result_init(v, out))
        return;
    if (v->status == DKIM_STAT_OK && dkim_getsiglist(v->dkim, &sigs, &nsigs) != DKIM_STAT_OK)
        nsigs = 0;
    sig_rows(v, sigs, nsigs, false, out);
}

/* ---- the end of the message: keys, then verification ------------------ */

static void
on_kick_closed(uv_handle_t *h)
{
    struct dkim_job *job = h->data;

    for (size_t i = 0; i < job->nkeys; i++)
        free(job->keys[i].txt);
    free(job);
}

/* Every key is in: verify (computing only) and answer. */
static void
verify(struct dkim_job *job)
{
    struct dkim_verifier *v = job->v;
    struct dkim_result *out = job->out;
    DKIM_SIGINFO **sigs = NULL;
    int nsigs = 0;

    if (result_init(v, out)) {
        v->finishing = true;
        v->job = job;
        v->temp = xcalloc(v->max_sigs, sizeof(*v->temp));
        if (v->status == DKIM_STAT_OK)
            (void)dkim_chunk(v->dkim, NULL, 0); /* end of the message */
        if (v->status == DKIM_STAT_OK) {
            (void)dkim_eom(v->dkim, NULL);
            if (dkim_getsiglist(v->dkim, &sigs, &nsigs) != DKIM_STAT_OK)
                nsigs = 0;
        }
        sig_rows(v, sigs, nsigs, true, out);
        v->finishing = false;
        v->job = NULL;
        free(v->temp);
        v->temp = NULL;
        v->ntemp = 0;
        out->queries = v->queries;
    }
    out->ms = (double)(uv_hrtime() - job->start) / 1e6;
    job->cb(job->arg, out);
    uv_close((uv_handle_t *)&job->kick, on_kick_closed);
}

static void
key_txt(void *arg, const char *txt, size_t len)
{
    struct dkim_key *k = arg;

    (void)len;
    if (k->state != KEY_FOUND) { /* RFC 6376 3.6.2.2: several records: use the first */
        k->txt = xstrdup(txt);
        k->state = KEY_FOUND;
    }
}

static void
on_key(void *arg, const struct resolver_answer *a)
{
    struct dkim_key *k = arg;
    struct dkim_job *job = k->job;

    k->state = KEY_NONE;
    if (a->status == RESOLVER_SERVFAIL || a->status == RESOLVER_TIMEOUT)
        k->state = KEY_TEMP;
    else if (a->status == RESOLVER_OK && dnsmsg_txt(a->packet, a->len, key_txt, k) != 0)
        k->state = KEY_TEMP;
    if (--job->pending == 0)
        verify(job);
}

/* The keys of the signatures libopendkim will verify (not ignored), each
 * asked for once. */
static void
ask_keys(struct dkim_job *job)
{
    struct dkim_verifier *v = job->v;
    DKIM_SIGINFO **sigs = NULL;
    int nsigs = 0;
    bool late = resolver_timeout_until(job->deadline_ns) == 0;

    if (v != NULL && v->status == DKIM_STAT_OK &&
        dkim_getsiglist(v->dkim, &sigs, &nsigs) != DKIM_STAT_OK)
        nsigs = 0;
    for (int i = 0; v != NULL && v->status == DKIM_STAT_OK && i < nsigs; i++) {
        const unsigned char *sel = dkim_sig_getselector(sigs[i]),
                            *dom = dkim_sig_getdomain(sigs[i]);
        struct dkim_key *k = &job->keys[job->nkeys];

        if ((dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE) != 0 || sel == NULL || dom == NULL ||
            job->nkeys == DKIM_SIGS_MAX)
            continue;
        if (snprintf(k->name, sizeof(k->name), "%s._domainkey.%s", sel, dom) >=
                (int)sizeof(k->name) ||
            key_of(job, k->name) != NULL)
            continue; /* cannot be asked for, or asked for already */
        k->job = job;
        k->state = late ? KEY_LATE : KEY_PENDING;
        job->nkeys++;
    }
    for (size_t i = 0; i < job->nkeys; i++)
        job->pending += job->keys[i].state == KEY_PENDING;
    if (job->pending == 0) {
        verify(job);
        return;
    }
    for (size_t i = 0; i < job->nkeys; i++) {
        if (job->keys[i].state != KEY_PENDING)
            continue;
        v->queries++;
        (void)resolver_query(job->r, job->keys[i].name, RESOLVER_TYPE_TXT, RESOLVER_TIMEOUT_MS,
                             on_key, &job->keys[i]);
    }
}

static void
on_kick(uv_timer_t *t)
{
    ask_keys(t->data);
}

void
dkim_verifier_finish_async(struct dkim_verifier *v, uv_loop_t *loop, struct resolver *r,
                           uint64_t deadline_ns, struct dkim_result *out, dkim_cb cb, void *arg)
{
    struct dkim_job *job = xcalloc(1, sizeof(*job));

    job->v = v;
    job->r = r;
    job->deadline_ns = deadline_ns;
    job->start = uv_hrtime();
    job->out = out;
    job->cb = cb;
    job->arg = arg;
    if (uv_timer_init(loop, &job->kick) != 0)
        mxd_panic("dkim: uv_timer_init failed");
    job->kick.data = job;
    if (uv_timer_start(&job->kick, on_kick, 0, 0) != 0)
        mxd_panic("dkim: uv_timer_start failed");
}

void
dkim_verifier_free(struct dkim_verifier *v)
{
    if (v == NULL)
        return;
    if (v->dkim != NULL)
        dkim_free(v->dkim);
    free(v);
}
