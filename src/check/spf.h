/* spf: SPF checks (RFC 7208) with libspf2, its DNS answers from the resolver. */
#ifndef MXD_SPF_H
#define MXD_SPF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/addr.h"
#include "base/conf.h"
#include "base/util.h"
#include "dns/resolver.h"

/* RFC 7208 section 2.6 results, and their names in headers (RFC 8601). */
#define SPF_RESULTS(X)                                                                             \
    X(NONE, "none")                                                                                \
    X(NEUTRAL, "neutral")                                                                          \
    X(PASS, "pass")                                                                                \
    X(FAIL, "fail")                                                                                \
    X(SOFTFAIL, "softfail") X(TEMPERROR, "temperror") X(PERMERROR, "permerror")
#define SPF_RES_ENUM(e, s) SPF_RES_##e,
enum spf_res { SPF_RESULTS(SPF_RES_ENUM) };
#undef SPF_RES_ENUM
const char *spf_res_name(enum spf_res r);

#define SPF_VOID_MAX      2  /* RFC 7208 4.6.4 */
#define SPF_DNS_TERMS_MAX 10 /* RFC 7208 4.6.4 */
#define SPF_BUDGET_MS     20000

struct spf_query {
    char ip[46];                    /* numeric client address */
    char helo[ADDR_DOMAIN_MAX + 1]; /* the HELO/EHLO name */
    char sender[ADDR_PATH_MAX];     /* MAIL FROM mailbox, "" for <> */
    char receiver[ADDR_DOMAIN_MAX + 1];
    unsigned budget_ms;   /* no new query after this; 0: SPF_BUDGET_MS */
    uint64_t deadline_ns; /* or this uv_hrtime(), when not 0 */
};

struct spf_result {
    enum spf_res res;
    bool helo_identity;               /* the HELO name was checked (sender <>) */
    char domain[ADDR_DOMAIN_MAX + 1]; /* the domain checked */
    char comment[1024];               /* why, for headers and logs */
    char explanation[256];            /* for a 550, "" when none */
    unsigned queries, voids;          /* DNS queries made, void answers */
    double ms;                        /* time taken */
};

/* out is owned by the check until this runs (loop thread). */
typedef void (*spf_cb)(void *arg, struct spf_result *out);

/*
 * Runs check_host() (RFC 7208 4) for the MAIL FROM identity, or for the
 * HELO identity when the sender is <>, asking r for every DNS answer
 * (loop: r's loop). q is copied; the budget counts from this call. cb runs
 * on the loop thread with *out filled, never from inside this call. Unlike
 * libspf2's own entry points, loopback clients get no free pass.
 */
void spf_check_with(uv_loop_t *loop, struct resolver *r, const struct spf_query *q,
                    struct spf_result *out, spf_cb cb, void *arg);

/* spf_check_with through the resolver for conf's dns_servers. */
void spf_check_async(uv_loop_t *loop, const struct conf *conf, const struct spf_query *q,
                     struct spf_result *out, spf_cb cb, void *arg);

#endif
