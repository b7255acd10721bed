/* dkim: DKIM signature verification (RFC 6376) with libopendkim. */
#ifndef MXD_DKIM_H
#define MXD_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"
#include "dns/resolver.h"

/* Rows per message: the signatures verified (dkim_max_signatures at most)
 * and one for those not verified. */
#define DKIM_SIGS_MAX (CONF_DKIM_SIGS_MAX + 1)

/* RFC 8601 2.7.1 results. policy: a signature that verified but that mxd
 * does not accept (rsa-sha1, RFC 8301 3.1; a body past l=, RFC 6376 8.2),
 * or a key under 1024 bits (RFC 8301 3.2). */
#define DKIM_RESULTS(X)                                                                            \
    X(NONE, "none")                                                                                \
    X(PASS, "pass")                                                                                \
    X(FAIL, "fail")                                                                                \
    X(NEUTRAL, "neutral")                                                                          \
    X(TEMPERROR, "temperror") X(PERMERROR, "permerror") X(POLICY, "policy")
#define DKIM_RES_ENUM(e, s) DKIM_RES_##e,
enum dkim_res { DKIM_RESULTS(DKIM_RES_ENUM) };
#undef DKIM_RES_ENUM
const char *dkim_res_name(enum dkim_res r);

struct dkim_sig {
    enum dkim_res res;
    char domain[256];   /* d= */
    char selector[128]; /* s= */
    char b[16];         /* the first octets of b= (RFC 6008 header.b) */
    char why[128];      /* libopendkim's reason when not pass */
};

struct dkim_result {
    size_t nsigs; /* 0: the message is not signed (dkim=none) */
    struct dkim_sig sigs[DKIM_SIGS_MAX];
    unsigned queries;
    double ms;
};

struct dkim_verifier;

/* A verifier for one message that verifies its first max_sigs signatures
 * (1 to DKIM_SIGS_MAX - 1); NULL when libopendkim cannot start (then the
 * message is reported as dkim=temperror). Caller frees. */
struct dkim_verifier *dkim_verifier_new(unsigned max_sigs);
/* Feeds the next piece of the message as received (CRLF lines, after
 * dot-unstuffing). Hashing only, no I/O: the loop thread may call it. */
void dkim_verifier_feed(struct dkim_verifier *v, const char *data, size_t len);
/* out is filled; runs on the loop thread. */
typedef void (*dkim_cb)(void *arg, struct dkim_result *out);

/*
 * The message is complete: asks r for each signature's key (TXT
 * <s>._domainkey.<d>, all at once, none after deadline_ns, each for at most
 * RESOLVER_TIMEOUT_MS), then verifies; a key that could not be had makes
 * its signature temperror. Signatures past max_sigs are one neutral row.
 * v may be NULL (one temperror row). v stays the caller's but must not be
 * touched or freed until cb has run (loop thread, never from inside this
 * call).
 */
void dkim_verifier_finish_async(struct dkim_verifier *v, uv_loop_t *loop, struct resolver *r,
                                uint64_t deadline_ns, struct dkim_result *out, dkim_cb cb,
                                void *arg);
/* What to report when dkim_verifier_finish_async does not answer in time: each
 * signature it would verify as temperror, the rest as above. After the
 * whole message was fed, before finishing; no I/O (loop thread). */
void dkim_verifier_pending(struct dkim_verifier *v, struct dkim_result *out);
void dkim_verifier_free(struct dkim_verifier *v);

#endif
