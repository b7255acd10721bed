/* resolver: mxd's one DNS engine, a caching libunbound context driven from
 * the uv loop (issue 16). Every lookup of mxd goes through it. */
#ifndef MXD_RESOLVER_H
#define MXD_RESOLVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/conf.h"
#include "base/util.h"

/* How long one query may wait for its answer when the caller has no
 * shorter budget of its own. libunbound retries inside it (its first
 * retry after about 0.4 s, then backing off). */
#define RESOLVER_TIMEOUT_MS 5000

#define RESOLVER_TYPE_A     1
#define RESOLVER_TYPE_PTR   12
#define RESOLVER_TYPE_MX    15
#define RESOLVER_TYPE_TXT   16
#define RESOLVER_TYPE_AAAA  28
#define RESOLVER_TYPE_TLSA  52
#define RESOLVER_NAME_MAX   1025 /* a presentation-format name, escapes included */
#define RESOLVER_SERVER_MAX 64   /* "addr@port" of one forwarder */

/* How a query ended. */
#define RESOLVER_STATUSES(X)                                                                       \
    X(OK, "ok")             /* records of the type (the answer section has them) */                \
    X(NODATA, "nodata")     /* the name exists, without records of the type */                     \
    X(NXDOMAIN, "nxdomain") /* the name does not exist */                                          \
    X(SERVFAIL, "servfail") /* SERVFAIL, REFUSED, another rcode, or a libunbound error */          \
    X(TIMEOUT, "timeout")   /* no answer within the query's time */
#define RESOLVER_STATUS_ENUM(e, s) RESOLVER_##e,
enum resolver_status { RESOLVER_STATUSES(RESOLVER_STATUS_ENUM) };
#undef RESOLVER_STATUS_ENUM
const char *resolver_status_name(enum resolver_status s);

/* DNSSEC, from libunbound's validator. Without a trust anchor (the
 * default) every answer is insecure. */
#define RESOLVER_SECS(X)        X(INSECURE, "insecure") X(SECURE, "secure") X(BOGUS, "bogus")
#define RESOLVER_SEC_ENUM(e, s) RESOLVER_SEC_##e,
enum resolver_sec { RESOLVER_SECS(RESOLVER_SEC_ENUM) };
#undef RESOLVER_SEC_ENUM
const char *resolver_sec_name(enum resolver_sec s);

struct resolver_answer {
    enum resolver_status status;
    enum resolver_sec sec;
    int rcode;                   /* the reply's rcode; -1 without a reply */
    const unsigned char *packet; /* the reply in wire format (dnsmsg.h reads it) or NULL;
                                    borrowed for the callback */
    size_t len;
    uint32_t ttl;          /* seconds the answer may be cached (0: unknown) */
    const char *why_bogus; /* libunbound's reason when BOGUS, else NULL */
    double ms;             /* from resolver_query to the answer */
};

/* Runs once per query on the loop thread, never from inside resolver_query. */
typedef void (*resolver_cb)(void *arg, const struct resolver_answer *a);

struct resolver;
struct resolver_query;

/*
 * The resolver for conf: forwarding to conf->dns_servers, or to the name
 * servers of /etc/resolv.conf (read once, when the resolver is made) when
 * there are none. Made at the first call for those servers and shared by
 * every later one (one context, one cache); it serves one loop at a time
 * (mxd has one). Loop thread. Never NULL: a resolver libunbound could not
 * set up answers SERVFAIL to every query (logged once).
 */
struct resolver *resolver_get(uv_loop_t *loop, const struct conf *conf);

/* As resolver_get, but validating with conf's dnssec_trust_anchor (DS or
 * DNSKEY records; Debian's root key when unset): answers are secure,
 * insecure or bogus (a bogus one comes as SERVFAIL with sec BOGUS). A
 * context of its own, for DANE: the others never validate. */
struct resolver *resolver_get_dnssec(uv_loop_t *loop, const struct conf *conf);

/* The same for an explicit list of forwarders, each "addr" or "addr@port"
 * (servers[0..n)); n == 0: /etc/resolv.conf. For tools and tests. */
struct resolver *resolver_get_servers(uv_loop_t *loop, const char *const *servers, size_t n);

/* A resolver of its own for servers (as above), shared with no one and
 * not kept: a tool's or test's empty cache. NULL never. Free it with
 * resolver_free once its queries are answered and loop has run their
 * close callbacks. */
struct resolver *resolver_new(uv_loop_t *loop, const char *const *servers, size_t n);
void resolver_free(struct resolver *r);

/*
 * Asks for name's records of rrtype (class IN); name is copied. cb gets
 * the answer, or RESOLVER_TIMEOUT after timeout_ms (0: RESOLVER_TIMEOUT_MS),
 * exactly once unless the query is cancelled first. The handle is valid
 * until cb has run. Loop thread.
 */
struct resolver_query *resolver_query(struct resolver *r, const char *name, int rrtype,
                                      unsigned timeout_ms, resolver_cb cb, void *arg);

/* Forgets a query whose callback has not run: it never will. */
void resolver_cancel(struct resolver_query *q);

/* Queries out now (for tests and metrics). */
size_t resolver_pending(const struct resolver *r);

/* The timeout to give a query when a budget ends at deadline_ns
 * (uv_hrtime): the time left, at most RESOLVER_TIMEOUT_MS; 0 when the
 * budget is spent. */
unsigned resolver_timeout_until(uint64_t deadline_ns);

#endif
