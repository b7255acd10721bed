/* dmarc: DMARC evaluation (RFC 7489), our own code (dmarc.c says why not
 * libopendmarc). */
#ifndef MXD_DMARC_H
#define MXD_DMARC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "check/dkim.h"
#include "check/spf.h"
#include "dns/resolver.h"

#define DMARC_PSL_PATH "/usr/share/publicsuffix/public_suffix_list.dat" /* Debian publicsuffix */

#define DMARC_RESULTS(X)                                                                           \
    X(NONE, "none")                                                                                \
    X(PASS, "pass") X(FAIL, "fail") X(TEMPERROR, "temperror") X(PERMERROR, "permerror")
#define DMARC_RES_ENUM(e, s) DMARC_RES_##e,
enum dmarc_res { DMARC_RESULTS(DMARC_RES_ENUM) };
#undef DMARC_RES_ENUM
const char *dmarc_res_name(enum dmarc_res r);

/* RFC 7489 3.1.1 relaxed alignment: a and b have the same organizational
 * domain (the public suffix list; without it, equal names only). */
bool dmarc_relaxed_aligned(const char *a, const char *b);

#define DMARC_AUTHORS_MAX 4 /* distinct author domains evaluated per message */

struct dmarc_input {
    char ip[46];
    /* the RFC5322.From domains (one per author, RFC 7489 6.6.1), lower case */
    char from_domains[DMARC_AUTHORS_MAX][256];
    size_t nfrom;
    bool from_bad; /* no From:, several, or no domain in it */
    enum spf_res spf;
    bool spf_helo; /* the SPF result is for the HELO identity */
    char spf_domain[256];
    const struct dkim_result *dkim; /* borrowed; NULL when DKIM is off */
    unsigned sample;                /* 0 to 99, drawn per message: inside pct= when below it */
};

/* The outcome for one author domain. */
struct dmarc_author {
    char domain[256];
    enum dmarc_res res;
    char policy[16];  /* the record's p=: "none", "quarantine", "reject", "" */
    char applied[16]; /* policy.dmarc: after sp= and pct= (RFC 7489 6.6.4) */
    bool reject;      /* fail and the policy to apply is reject */
    char why[128];    /* for permerror and temperror */
};

struct dmarc_result {
    /* the verdict: the strictest author's outcome (RFC 7489 6.6.1), or
     * permerror/temperror for the message as a whole (domain "") */
    enum dmarc_res res;
    char domain[256];
    char policy[16];
    char applied[16];
    bool reject;
    char why[128];
    unsigned queries;
    struct dmarc_author authors[DMARC_AUTHORS_MAX]; /* one per from_domains entry */
    size_t nauthors;
};

/* out is filled; runs on the loop thread. */
typedef void (*dmarc_cb)(void *arg, struct dmarc_result *out);

/*
 * Evaluates DMARC for the message, for each author domain, asking r for
 * the _dmarc records (every author at once; none after deadline_ns, each
 * for at most RESOLVER_TIMEOUT_MS). in is copied, but in->dkim is borrowed
 * until cb runs (loop thread, never from inside this call) with *out filled.
 */
void dmarc_check_async(uv_loop_t *loop, struct resolver *r, const struct dmarc_input *in,
                       uint64_t deadline_ns, struct dmarc_result *out, dmarc_cb cb, void *arg);

/* The organizational domain of domain (RFC 7489 3.2, with Debian's public
 * suffix list) into out, lower case: 0, or MXD_ENOENT when there is none
 * (domain is a public suffix, empty or not a domain name). Any thread. */
int dmarc_org_domain(const char *domain, char *out, size_t size);

/* The result when no check could be made in time: temperror (why) for the
 * message and for each author, so that every header.from is still named.
 * Pure; any thread. */
void dmarc_result_unchecked(const struct dmarc_input *in, const char *why,
                            struct dmarc_result *out);

#endif
