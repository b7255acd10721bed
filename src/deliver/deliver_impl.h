/* deliver internals shared by deliver.c (picking, jobs, outcomes, start
 * and stop) and deliver_dest.c (destinations, connections, routing, MX
 * resolution, the primary watcher). Not for other modules. */
#ifndef MXD_DELIVER_IMPL_H
#define MXD_DELIVER_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "client/lmtp_net.h"
#include "deliver/deliver.h"
#include "deliver/deliver_calc.h"
#include "dns/dns.h"
#include "dns/mx.h"

struct dest;

/* DANE (RFC 7672) for one endpoint of a destination with tls = dane or
 * dane-only: what its TLSA records say (a dns_dane value once known). */
enum dest_dane_state {
    DEST_DANE_NONE = DNS_DANE_NONE,
    DEST_DANE_RECORDS = DNS_DANE_RECORDS,
    DEST_DANE_BOGUS = DNS_DANE_BOGUS,
    DEST_DANE_TEMP = DNS_DANE_TEMP,
    DEST_DANE_UNKNOWN, /* not looked up yet (or again) */
    DEST_DANE_LOOKING,
};

struct dest_dane {
    enum dest_dane_state state;
    struct tls_dane *tls; /* RECORDS: the usable records and names */
    bool from_mx;         /* decided by the MX lookup's DNSSEC verdict */
    uint64_t at_ms;       /* when decided (loop time) */
    char why[200];
};

/* One message's recipients for one destination: one transaction. */
struct djob {
    struct djob *next;
    struct deliver *d;
    struct dest *dest; /* NULL: decided without a connection */
    int64_t msg_id;
    char qid[24];
    int64_t received;
    char *sender;
    size_t nrcpts;
    int64_t *rcpt_ids;
    char **addrs;
    unsigned *attempts;
    int *codes;       /* 0 until the outcome is known */
    char **texts;     /* reply summaries */
    unsigned *notify; /* RFC 3461, per recipient */
    char **orcpt;
    char *envid;
    bool next_dsn; /* the next hop offered DSN: it took over the DSN parameters */
    struct lmtp_txn txn;
    /* XFORWARD (issue 18): the original client, strings owned */
    struct lmtp_xforward xf;
    char *xf_addr, *xf_helo, *xf_name, *xf_port, *xf_proto;
    const struct conf_domain *domain;
    char *relay;      /* the endpoint it was handed to */
    uv_timer_t retry; /* recording the outcomes failed: try again */
    bool retry_inited;
};

struct dconn {
    struct dconn *next;
    struct dest *dest;
    struct lmtp_conn *c;
    struct djob *job;
    size_t ep;    /* index into dest->eps */
    bool idle;    /* ready for a job (session established) */
    bool closing; /* was idle, then started to close: never gets a job */
    bool probe;   /* the watcher's: connect, greet, QUIT */
};

/* Where jobs go: an LMTP server, a backup domain's primaries (a list, or
 * its MX hosts looked up in DNS), or the bounce relay. */
struct dest {
    struct dest *next;
    struct deliver *d;
    char *key;
    enum lmtp_conn_proto proto;
    const struct conf_domain *dom;   /* backup domain, or NULL */
    char *mx_domain;                 /* mx: the domain whose MX hosts are looked up (owned) */
    const struct conf_endpoint *eps; /* tried in order */
    size_t neps;
    size_t ep_idx;                   /* the one new connections use */
    struct conf_endpoint *owned_eps; /* MX targets (eps points here) */
    char **owned_names;              /* their MX host names, for TLS */
    /* STARTTLS: how, with what; a session to resume with eps[tls_sess_ep] */
    struct lmtp_conn_tls tls;
    bool tls_on;
    void *tls_sess;
    size_t tls_sess_len, tls_sess_ep;
    bool mx, resolving;
    uint64_t resolved_ms; /* when owned_eps were looked up (0: never) */
    unsigned max_conns;
    unsigned nconns;
    struct dconn *conns;
    struct djob *head, **tail; /* waiting for a connection */
    /* the primary watcher (backup domains with held mail) */
    uv_timer_t watch;
    bool watching, watch_inited;
    char down_text[400];    /* while watching: why the primary is down */
    uint64_t down_ms;       /* when a delivery connection last failed (loop time) */
    char tls_broken[400];   /* tls = verify without trust anchors: the reply */
    enum conf_tls tls_mode; /* the policy that applies */
    struct dest_dane *dane; /* tls = dane, dane-only: per endpoint (ndane == neps) */
    size_t ndane;
    unsigned dane_gen; /* bumped when the endpoints change: late answers are dropped */
    uint64_t watch_ms; /* current probe interval */
    /* paced release (backup domains, issue 18): slow start, release_rate */
    struct deliver_pace pace;
    uv_timer_t pace_timer; /* release_rate: runs the destination when the next may start */
    bool pace_inited;
};

struct deliver {
    uv_loop_t *loop;
    const struct conf *conf;
    struct store *store;
    uv_timer_t timer, stop_timer;
    struct dest *dests;
    int64_t *inflight;
    size_t ninflight;
    unsigned pending_writes; /* store_outcomes_async in flight */
    unsigned pending_other;  /* DNS lookups, watcher handles closing */
    bool picking, again, stopping;
    void (*stop_cb)(void *arg);
    void *stop_arg;
    unsigned handles_open;
    struct lmtp_timeouts to;
    struct deliver_stats stats;
    /* STARTTLS client credentials: without trust anchors, and with the
     * trust anchors of each ca_file (NULL: the system store) that a domain
     * with tls = verify names; kept until the end (reloads add to them) */
    struct mx_local self; /* our listen addresses, wildcards expanded */
    struct tls_creds *tls_any;
    struct deliver_trust {
        char *ca_file;
        struct tls_creds *creds;
    } * trust;
    size_t ntrust;
    struct deliver_sts *sts; /* MTA-STS (deliver_sts.c): NULL until first used */
};

int64_t deliver__now(void);
void deliver__job_set(struct djob *j, size_t i, int code, const char *text);
void deliver__job_finish(struct djob *j);
void deliver__job_fail(struct djob *j, int code, const char *text);
void deliver__job_drop(struct djob *j);
void deliver__stop_check(struct deliver *d);
void deliver__kick_domain(struct deliver *d, const char *domain);

void deliver__dest_push(struct dest *dest, struct djob *j);
struct djob *deliver__dest_pop(struct dest *dest);
void deliver__dest_run(struct dest *dest, struct deliver *d);
/* Where a recipient goes: a destination, or NULL with *code and *text the
 * outcome decided here. */
struct dest *deliver__route(struct deliver *d, const struct store_dmsg *m,
                            const struct store_drcpt *r, const struct conf_domain **domp, int *code,
                            const char **text);
/* A temporary failure for a backup domain: watch its primary. */
void deliver__watch(struct dest *dest);
/* Stop: close every connection and watcher; true when all are gone. */
bool deliver__dests_idle(struct deliver *d);
void deliver__dests_stop(struct deliver *d);
void deliver__dests_abort(struct deliver *d);
void deliver__dests_free(struct deliver *d);
/* Our own addresses from d->conf's listen list, a wildcard expanded to
 * every interface address (getifaddrs: start-up and reload only). */
void deliver__self_load(struct deliver *d);
/* Endpoint ep of dest failed (reason, e.g. "4.7.5 ..."): the next one,
 * or, when every one failed, defer what waits and watch the primary. */
void deliver__dest_unreachable(struct dest *dest, size_t ep, const char *reason);

/* DANE (deliver_dane.c). True when dest's policy is dane or dane-only. */
bool deliver__dane_policy(const struct dest *dest);
/* Forgets every endpoint's DANE state (the endpoints changed). */
void deliver__dane_reset(struct dest *dest);
/* For MX target ep: the DNSSEC verdicts of its MX and address answers. */
void deliver__dane_mx_set(struct dest *dest, size_t ep, enum dns_sec mx_sec, enum dns_sec addr_sec);
/* Before connecting to dest->eps[ep_idx]: 1 go ahead, 0 wait (a TLSA
 * lookup is out; deliver__dest_run runs again when it is back), -1 the
 * endpoint may not be used (done: deliver__dest_unreachable). */
int deliver__dane_check(struct dest *dest);
/* Fills t's DANE fields (and required, policy) for endpoint ep. */
void deliver__dane_tls(struct dest *dest, size_t ep, struct lmtp_conn_tls *t);

/* What is known of domain's MTA-STS policy now (mxctl tls-policy), in
 * words into buf; true when an enforce policy is in force. */
bool deliver__sts_describe(struct deliver *d, const char *domain, char *buf, size_t size);
/* MTA-STS (RFC 8461, deliver_sts.c). True when dest is an MX destination
 * that MTA-STS may upgrade ([server] mta_sts, its tls policy). */
bool deliver__sts_applies(const struct dest *dest);
/* After deliver__dane_check, before connecting to dest->eps[ep_idx]: 1 go
 * ahead, 0 wait (the domain's policy is being looked up; dest runs again
 * when it is known), -1 the endpoint may not be used (done:
 * deliver__dest_unreachable). */
int deliver__sts_check(struct dest *dest);
/* After deliver__dane_tls: an enforce policy makes t verified TLS. */
void deliver__sts_tls(struct dest *dest, size_t ep, struct lmtp_conn_tls *t);
/* Stop: aborts the fetches and closes libcurl's handles. */
void deliver__sts_stop(struct deliver *d);
void deliver__sts_free(struct deliver *d);

/* Trust anchors for ca_file (NULL: the system store), cached; NULL with
 * *err (caller frees) when they cannot be read. */
struct tls_creds *deliver__tls_trust(struct deliver *d, const char *ca_file, char **err);

/* Loads the STARTTLS client credentials; MXD_ECONFIG (logged) when a
 * domain's ca_file (or the system trust store) cannot be read. */
int deliver__tls_load(struct deliver *d) MXD_WUR;

/* The port of MX targets: 25, or MXD_TEST_SMTP_PORT in tests. */
uint16_t deliver__mx_port(void);

#endif
