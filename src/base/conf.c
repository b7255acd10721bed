/*
 * conf: owns struct conf and everything hanging off it. Reads mxd.conf (INI,
 * tokenised by inih), checks every value against the key table below and
 * returns an immutable struct conf. Any thread (main at start and on SIGHUP,
 * mxctl); no global state, reentrant.
 *
 * Errors: conf_load and conf_parse_string return 0, MXD_ECONFIG or MXD_EIO
 * (file unreadable) and collect every problem, not only the first, as one
 * "FILE:LINE: message\n" line each; a failed load returns no struct conf.
 *
 * Our line reader hands inih one physical line per call, so the handler knows
 * the line (Debian's inih is built without INI_HANDLER_LINENO); it also
 * tracks [section] headers itself, as inih cuts section names at 49 bytes and
 * cannot report an empty or repeated section. Leading whitespace is ignored:
 * there are no configparser-style continuation lines. `;` and `#` start a
 * comment line; `;` after whitespace ends a value. A line must fit inih's
 * buffer (198 bytes in Debian's build) or it is an error.
 *
 * Single values (sizes, durations, host names, endpoints, CIDRs) are parsed by
 * conf_value.c; this file maps them onto keys and reports errors by line.
 *
 * It does not open sockets, resolve names, check that files exist (database,
 * certificate) or apply anything: callers do that with the result.
 */
#include "base/conf.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/conf_value.h"

#define CONF_MAX_FILE (1024 * 1024) /* a bigger config file is a mistake */

/* Section names; SECT_DOMAIN is "[domain NAME]", SECT_MILTER "[milter NAME]". */
#define CONF_SECTS(X)                                                                              \
    X(SERVER, "server")                                                                            \
    X(TLS, "tls") X(QUEUE, "queue") X(AUTH, "auth") X(DOMAIN, "domain") X(MILTER, "milter")
#define SECT_ENUM(id, name) SECT_##id,
#define SECT_NAME(id, name) [SECT_##id] = name,

enum sect { SECT_NONE, SECT_SKIP, CONF_SECTS(SECT_ENUM) SECT_N };
static const char *const sect_names[SECT_N] = {CONF_SECTS(SECT_NAME)};

/*
 * Every key once: its id, then its struct key. A default is parsed like a
 * written value; min and max bound integers; arg is a set_fn's argument.
 */
#define S(f) offsetof(struct conf, f)
#define D(f) offsetof(struct conf_domain, f)
#define M(f) offsetof(struct conf_milter, f)
#define CONF_KEYS(X)                                                                               \
    X(HOSTNAME, SECT_SERVER, "hostname", set_host, S(hostname), .required = true)                  \
    X(USER, SECT_SERVER, "user", set_str, S(user))                                                 \
    X(LISTEN, SECT_SERVER, "listen", set_list, S(listen), S(nlisten), "0.0.0.0:25, [::]:25",       \
      .arg = &l_listen)                                                                            \
    X(DATABASE, SECT_SERVER, "database", set_str, S(database), .required = true)                   \
    X(STORE, SECT_SERVER, "store", set_enum, S(store), .def = "sqlite",                            \
      .arg = "sqlite|postgresql")                                                                  \
    X(POSTGRESQL, SECT_SERVER, "postgresql", set_str, S(postgresql))                               \
    X(NODE_NAME, SECT_SERVER, "node_name", set_host, S(node_name))                                 \
    X(CLUSTER_LEASE, SECT_SERVER, "cluster_lease", set_time, S(cluster_lease_s), .def = "60s",     \
      .arg = &in_s)                                                                                \
    X(MAX_MESSAGE_SIZE, SECT_SERVER, "max_message_size", set_size, S(max_message_size),            \
      .def = "50m")                                                                                \
    X(MAX_RECIPIENTS, SECT_SERVER, "max_recipients", set_uint, S(max_recipients), .def = "100",    \
      .min = 1, .max = 100000)                                                                     \
    X(MAX_HOPS, SECT_SERVER, "max_hops", set_uint, S(max_hops), .def = "100", .min = 1,            \
      .max = 1000)                                                                                 \
    X(MAX_CONNECTIONS, SECT_SERVER, "max_connections", set_uint, S(max_connections),               \
      .def = "10000", .min = 1, .max = 10000000)                                                   \
    X(MAX_CONNECTIONS_PER_IP, SECT_SERVER, "max_connections_per_ip", set_uint,                     \
      S(max_connections_per_ip), .def = "20", .min = 1, .max = 10000000)                           \
    X(IPV6_PREFIX_LENGTH, SECT_SERVER, "ipv6_prefix_length", set_uint, S(ipv6_prefix_length),      \
      .def = "64", .min = 16, .max = 128)                                                          \
    X(COMMAND_TIMEOUT, SECT_SERVER, "command_timeout", set_time, S(command_timeout_ms),            \
      .def = "5m", .arg = &in_ms)                                                                  \
    X(DATA_TIMEOUT, SECT_SERVER, "data_timeout", set_time, S(data_timeout_ms), .def = "10m",       \
      .arg = &in_ms)                                                                               \
    X(SOFT_ERROR_LIMIT, SECT_SERVER, "soft_error_limit", set_uint, S(soft_error_limit),            \
      .def = "10", .min = 1, .max = 1000)                                                          \
    X(HARD_ERROR_LIMIT, SECT_SERVER, "hard_error_limit", set_uint, S(hard_error_limit),            \
      .def = "20", .min = 1, .max = 1000)                                                          \
    X(ERROR_SLEEP, SECT_SERVER, "error_sleep", set_time, S(error_sleep_ms), .def = "1s",           \
      .arg = &in_ms)                                                                               \
    X(CALLAHEAD_MAX_CONNECTIONS, SECT_SERVER, "callahead_max_connections", set_uint,               \
      S(callahead_max_connections), .def = "10", .min = 1, .max = 1000)                            \
    X(CALLAHEAD_MAX_PER_CLIENT, SECT_SERVER, "callahead_max_per_client", set_uint,                 \
      S(callahead_max_per_client), .def = "2", .min = 1, .max = 1000)                              \
    X(DNS_SERVERS, SECT_SERVER, "dns_servers", set_list, S(dns_servers), S(ndns_servers),          \
      .arg = &l_dns)                                                                               \
    X(DNSSEC_TRUST_ANCHOR, SECT_SERVER, "dnssec_trust_anchor", set_str, S(dnssec_trust_anchor))    \
    X(OUTBOUND_TLS, SECT_SERVER, "outbound_tls", set_enum, S(outbound_tls),                        \
      .def = "opportunistic", .arg = "opportunistic|required|verify|dane|dane-only")               \
    X(MTA_STS, SECT_SERVER, "mta_sts", set_bool, S(mta_sts), .def = "on")                          \
    X(MTA_STS_CA_FILE, SECT_SERVER, "mta_sts_ca_file", set_str, S(mta_sts_ca_file))                \
    X(ETRN_CLIENTS, SECT_SERVER, "etrn_clients", set_list, S(etrn_clients), S(netrn_clients),      \
      .arg = &l_cidr)                                                                              \
    X(CONNECTION_RATE_LIMIT, SECT_SERVER, "connection_rate_limit", set_uint,                       \
      S(connection_rate_limit), .def = "0", .max = 1000000)                                        \
    X(MESSAGE_RATE_LIMIT, SECT_SERVER, "message_rate_limit", set_uint, S(message_rate_limit),      \
      .def = "0", .max = 1000000)                                                                  \
    X(RECIPIENT_RATE_LIMIT, SECT_SERVER, "recipient_rate_limit", set_uint,                         \
      S(recipient_rate_limit), .def = "0", .max = 1000000)                                         \
    X(TRUSTED_NETWORKS, SECT_SERVER, "trusted_networks", set_list, S(trusted_networks),            \
      S(ntrusted_networks), .arg = &l_cidr)                                                        \
    X(PROXY_NETWORKS, SECT_SERVER, "proxy_networks", set_list, S(proxy_networks),                  \
      S(nproxy_networks), .arg = &l_cidr)                                                          \
    X(PROXY_TIMEOUT, SECT_SERVER, "proxy_timeout", set_time, S(proxy_timeout_ms), .def = "5s",     \
      .arg = &in_ms)                                                                               \
    X(GREYLIST_DELAY, SECT_SERVER, "greylist_delay", set_time, S(greylist_delay_s), .def = "5m",   \
      .arg = &in_s)                                                                                \
    X(GREYLIST_WINDOW, SECT_SERVER, "greylist_window", set_time, S(greylist_window_s),             \
      .def = "1d", .arg = &in_s)                                                                   \
    X(GREYLIST_TTL, SECT_SERVER, "greylist_ttl", set_time, S(greylist_ttl_s), .def = "35d",        \
      .arg = &in_s)                                                                                \
    X(GREET_ACTION, SECT_SERVER, "greet_action", set_enum, S(greet_action), .def = "off",          \
      .arg = "off|ignore|reject|drop")                                                             \
    X(GREET_WAIT, SECT_SERVER, "greet_wait", set_time, S(greet_wait_ms), .def = "6s",              \
      .arg = &in_ms)                                                                               \
    X(GREET_STRESS_WAIT, SECT_SERVER, "greet_stress_wait", set_time, S(greet_stress_wait_ms),      \
      .def = "2s", .arg = &in_ms)                                                                  \
    X(GREET_BANNER, SECT_SERVER, "greet_banner", set_enum, S(greet_banner), .def = "on",           \
      .arg = "off|on")                                                                             \
    X(SCREEN_TTL, SECT_SERVER, "screen_ttl", set_time, S(screen_ttl_s), .def = "24h",              \
      .arg = &in_s)                                                                                \
    X(DNSBL_SITES, SECT_SERVER, "dnsbl_sites", set_list, S(dnsbl_sites), S(ndnsbl_sites),          \
      .arg = &l_dnsbl_site)                                                                        \
    X(DNSBL_REPLY_MAP, SECT_SERVER, "dnsbl_reply_map", set_list, S(dnsbl_reply_map),               \
      S(ndnsbl_reply_map), .arg = &l_dnsbl_map)                                                    \
    X(DNSBL_THRESHOLD, SECT_SERVER, "dnsbl_threshold", set_int, S(dnsbl_threshold), .def = "1",    \
      .arg = &r_dnsbl_threshold)                                                                   \
    X(DNSBL_ALLOWLIST_THRESHOLD, SECT_SERVER, "dnsbl_allowlist_threshold", set_int,                \
      S(dnsbl_allowlist_threshold), .def = "-1", .arg = &r_dnsbl_allow)                            \
    X(DNSBL_ACTION, SECT_SERVER, "dnsbl_action", set_enum, S(dnsbl_action), .def = "reject",       \
      .arg = "reject|enforce|ignore")                                                              \
    X(DNSBL_TIMEOUT, SECT_SERVER, "dnsbl_timeout", set_time, S(dnsbl_timeout_ms), .def = "5s",     \
      .arg = &in_ms)                                                                               \
    X(FCRDNS, SECT_SERVER, "fcrdns", set_bool, S(fcrdns), .def = "off")                            \
    X(FCRDNS_WEIGHT, SECT_SERVER, "fcrdns_weight", set_int, S(fcrdns_weight), .def = "0",          \
      .arg = &r_weight)                                                                            \
    X(MILTERS, SECT_SERVER, "milters", set_milters, 0)                                             \
    X(MILTER_DEFAULT_ACTION, SECT_SERVER, "milter_default_action", set_enum,                       \
      S(milter_default_action), .def = "tempfail", .arg = "accept|tempfail|reject")                \
    X(MILTER_CONNECT_TIMEOUT, SECT_SERVER, "milter_connect_timeout", set_time,                     \
      S(milter_connect_timeout_ms), .def = "30s", .arg = &in_ms)                                   \
    X(MILTER_COMMAND_TIMEOUT, SECT_SERVER, "milter_command_timeout", set_time,                     \
      S(milter_command_timeout_ms), .def = "30s", .arg = &in_ms)                                   \
    X(MILTER_CONTENT_TIMEOUT, SECT_SERVER, "milter_content_timeout", set_time,                     \
      S(milter_content_timeout_ms), .def = "300s", .arg = &in_ms)                                  \
    X(MILTER_REUSE, SECT_SERVER, "milter_reuse", set_bool, S(milter_reuse), .def = "off")          \
    X(METRICS_LISTEN, SECT_SERVER, "metrics_listen", set_endpoint, S(metrics_listen),              \
      .arg = &ep_tcp)                                                                              \
    X(CONTROL_SOCKET, SECT_SERVER, "control_socket", set_sock, S(control_socket))                  \
    X(CERTIFICATE, SECT_TLS, "certificate", set_str, S(tls_certificate))                           \
    X(KEY, SECT_TLS, "key", set_str, S(tls_key))                                                   \
    X(PRIORITY, SECT_TLS, "priority", set_str, S(tls_priority),                                    \
      .def = "NORMAL:-VERS-TLS1.0:-VERS-TLS1.1")                                                   \
    X(RETRY_MIN, SECT_QUEUE, "retry_min", set_time, S(retry_min_s), .def = "1m", .arg = &in_s)     \
    X(RETRY_MAX, SECT_QUEUE, "retry_max", set_time, S(retry_max_s), .def = "1h", .arg = &in_s)     \
    X(LIFETIME, SECT_QUEUE, "lifetime", set_time, S(lifetime_s), .def = "5d", .arg = &in_s)        \
    X(BOUNCE_RELAY, SECT_QUEUE, "bounce_relay", set_endpoint, S(bounce_relay), .arg = &ep_smtp)    \
    X(DELAY_WARNING, SECT_QUEUE, "delay_warning", set_time, S(delay_warning_s), .def = "4h",       \
      .arg = &in_s)                                                                                \
    X(BOUNCE_POLICY, SECT_QUEUE, "bounce_policy", set_enum, S(bounce_policy),                      \
      .def = "authenticated", .arg = "authenticated|always|never")                                 \
    X(SPF, SECT_AUTH, "spf", set_enum, S(spf), .def = "tag", .arg = "off|tag|reject")              \
    X(DKIM, SECT_AUTH, "dkim", set_enum, S(dkim), .def = "tag", .arg = "off|tag")                  \
    X(DMARC, SECT_AUTH, "dmarc", set_enum, S(dmarc), .def = "tag", .arg = "off|tag|reject")        \
    X(DKIM_MAX_SIGNATURES, SECT_AUTH, "dkim_max_signatures", set_uint, S(dkim_max_signatures),     \
      .def = "5", .min = 1, .max = CONF_DKIM_SIGS_MAX)                                             \
    X(DKIM_TIMEOUT, SECT_AUTH, "dkim_timeout", set_time, S(dkim_timeout_ms), .def = "5s",          \
      .arg = &in_ms)                                                                               \
    X(D_MODE, SECT_DOMAIN, "mode", set_enum, D(mode), .def = "local", .arg = "local|backup")       \
    X(D_LMTP, SECT_DOMAIN, "lmtp", set_endpoint, D(lmtp), .arg = &ep_lmtp)                         \
    X(D_LMTP_CONCURRENCY, SECT_DOMAIN, "lmtp_concurrency", set_uint, D(lmtp_concurrency),          \
      .def = "8", .min = 1, .max = 1000)                                                           \
    X(D_RECIPIENTS, SECT_DOMAIN, "recipients", set_enum, D(recipients), .def = "any",              \
      .arg = "any|table|lmtp|primary|sync")                                                        \
    X(D_RECIPIENTS_SOURCE, SECT_DOMAIN, "recipients_source", set_rsource, D(rsource))              \
    X(D_RECIPIENTS_REFRESH, SECT_DOMAIN, "recipients_refresh", set_time, D(recipients_refresh_s),  \
      .def = "5m", .arg = &in_s)                                                                   \
    X(D_RECIPIENTS_MAX_AGE, SECT_DOMAIN, "recipients_max_age", set_time, D(recipients_max_age_s),  \
      .def = "1h", .arg = &in_s)                                                                   \
    X(D_VERIFY_POSITIVE_TTL, SECT_DOMAIN, "verify_positive_ttl", set_time,                         \
      D(verify_positive_ttl_s), .def = "31d", .arg = &in_s)                                        \
    X(D_VERIFY_NEGATIVE_TTL, SECT_DOMAIN, "verify_negative_ttl", set_time,                         \
      D(verify_negative_ttl_s), .def = "3d", .arg = &in_s)                                         \
    X(D_PRIMARY, SECT_DOMAIN, "primary", set_primary, D(primary), D(nprimary), .arg = &l_primary)  \
    X(D_LIFETIME, SECT_DOMAIN, "lifetime", set_time, D(lifetime_s), .arg = &in_s)                  \
    X(D_RELEASE_RATE, SECT_DOMAIN, "release_rate", set_uint, D(release_rate), .def = "0",          \
      .min = 0, .max = 100000)                                                                     \
    X(D_PRIMARY_CONCURRENCY, SECT_DOMAIN, "primary_concurrency", set_uint, D(primary_concurrency), \
      .def = "4", .min = 1, .max = 1000)                                                           \
    X(D_TLS, SECT_DOMAIN, "tls", set_enum, D(tls), .def = "opportunistic",                         \
      .arg = "opportunistic|required|verify|dane|dane-only")                                       \
    X(D_CA_FILE, SECT_DOMAIN, "ca_file", set_str, D(ca_file))                                      \
    X(D_GREYLIST, SECT_DOMAIN, "greylist", set_bool, D(greylist), .def = "off")                    \
    X(D_MILTERS, SECT_DOMAIN, "milters", set_milters, 0)                                           \
    X(M_SOCKET, SECT_MILTER, "socket", set_milter_socket, M(socket))                               \
    X(M_CONNECT_TIMEOUT, SECT_MILTER, "connect_timeout", set_time, M(connect_timeout_ms),          \
      .arg = &in_ms)                                                                               \
    X(M_COMMAND_TIMEOUT, SECT_MILTER, "command_timeout", set_time, M(command_timeout_ms),          \
      .arg = &in_ms)                                                                               \
    X(M_CONTENT_TIMEOUT, SECT_MILTER, "content_timeout", set_time, M(content_timeout_ms),          \
      .arg = &in_ms)                                                                               \
    X(M_DEFAULT_ACTION, SECT_MILTER, "default_action", set_enum, M(default_action),                \
      .arg = "accept|tempfail|reject")                                                             \
    X(M_REUSE, SECT_MILTER, "reuse", set_bool, M(reuse))
#define KEY_ENUM(id, ...) K_##id,
/* .sect names the first field so that clang sees a designated initialiser. */
#define KEY_INIT(id, ...) [K_##id] = {.sect = __VA_ARGS__},

enum key_id { CONF_KEYS(KEY_ENUM) K_N };

struct parse;
struct key;
typedef int set_fn(struct parse *p, const struct key *k, void *base, const char *value);

struct key {
    enum sect sect;
    const char *name;
    set_fn *set;
    size_t off;  /* the field in struct conf or struct conf_domain */
    size_t noff; /* its element count, for lists */
    const char *def;
    uint64_t min, max;
    const void *arg;
    bool required;
};

/* Per key, the line that set it: 0 unset, < 0 when its value was bad.
 * For a [domain NAME] or [milter NAME] section. */
struct dominfo {
    int header;
    int seen[K_N];
    char *milters; /* the milters value as written, resolved at the end */
};

struct parse {
    struct conf *conf;
    const char *name; /* file name in messages */
    const char *text;
    size_t len, pos;
    int line; /* the line inih is on */
    enum sect sect;
    size_t dom; /* conf->domains index in SECT_DOMAIN */
    size_t mil; /* conf->milter_defs index in SECT_MILTER */
    int sect_line[SECT_N];
    int seen[K_N]; /* keys outside [domain] */
    struct dominfo *dinfo;
    struct dominfo *minfo; /* per [milter NAME] section */
    size_t nsections;      /* [milter NAME] sections (the first of conf->milter_defs) */
    char *milters;         /* [server] milters as written */
    char *err;             /* "FILE:LINE: message\n" lines */
    size_t nerr;
};

static void perr(struct parse *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
perr(struct parse *p, int line, const char *fmt, ...)
{
    char msg[512], *all;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    all = xasprintf("%s%s:%d: %s\n", p->err ? p->err : "", p->name, line > 0 ? line : 1, msg);
    free(p->err);
    p->err = all;
    p->nerr++;
}

/* What each endpoint key accepts; see conf__parse_endpoint. */
static const struct conf_ep_opt ep_tcp = {0, 0};
static const struct conf_ep_opt ep_smtp = {0, 25};
static const struct conf_ep_opt ep_dns = {CONF_EP_NUMERIC, 53};
static const struct conf_ep_opt ep_lmtp = {CONF_EP_UNIX, 0};

typedef int item_fn(const char *s, const void *arg, void *out, const char **why);

struct list_kind {
    size_t elsize;
    item_fn *parse;
    void (*drop)(void *item); /* NULL: items own nothing */
    const void *arg;          /* for parse */
};

static const struct list_kind l_listen = {sizeof(struct conf_listen), conf__parse_listen,
                                          conf__listen_free, NULL};
static const struct list_kind l_dns = {sizeof(struct conf_endpoint), conf__parse_endpoint,
                                       conf__endpoint_free, &ep_dns};
static const struct list_kind l_primary = {sizeof(struct conf_endpoint), conf__parse_endpoint,
                                           conf__endpoint_free, &ep_smtp};
static const struct list_kind l_cidr = {sizeof(struct conf_cidr), conf__parse_cidr, NULL, NULL};
static const struct list_kind l_dnsbl_site = {sizeof(struct conf_dnsbl_site),
                                              conf__parse_dnsbl_site, conf__dnsbl_site_free, NULL};
static const struct list_kind l_dnsbl_map = {sizeof(struct conf_dnsbl_map), conf__parse_dnsbl_map,
                                             conf__dnsbl_map_free, NULL};

/* The bounds of a signed integer key (set_int). */
struct int_range {
    int min, max;
};
static const struct int_range r_dnsbl_threshold = {1, 1000000};
static const struct int_range r_dnsbl_allow = {-1000000, -1};
static const struct int_range r_weight = {-100000, 100000};

_Static_assert(sizeof(enum conf_auth) == sizeof(int) && sizeof(enum conf_mode) == sizeof(int) &&
                   sizeof(enum conf_rcpts) == sizeof(int) && sizeof(enum conf_tls) == sizeof(int) &&
                   sizeof(enum conf_greet) == sizeof(int) &&
                   sizeof(enum conf_dnsbl_action) == sizeof(int) &&
                   sizeof(enum conf_milter_action) == sizeof(int) &&
                   sizeof(enum conf_bounce_policy) == sizeof(int),
               "set_enum stores an int");

/* Duration units of the fields: milliseconds or seconds. */
static const uint64_t in_ms = 1, in_s = 1000;

static void *
field(void *base, size_t off)
{
    return (char *)base + off;
}

static int
bad(struct parse *p, const struct key *k, const char *value, const char *why)
{
    perr(p, p->line, "%s: %s (got '%s')", k->name, why, value);
    return MXD_EINVAL;
}

static int
set_str(struct parse *p, const struct key *k, void *base, const char *value)
{
    char **f = field(base, k->off);

    (void)p;
    *f = xstrdup(value);
    return 0;
}

static int
set_host(struct parse *p, const struct key *k, void *base, const char *value)
{
    if (!conf__is_hostname(value))
        return bad(p, k, value, "not a valid host name");
    return set_str(p, k, base, value);
}

static int
set_sock(struct parse *p, const struct key *k, void *base, const char *value)
{
    if (strlen(value) >= CONF_SUN_PATH_MAX)
        return bad(p, k, value, "socket path too long");
    return set_str(p, k, base, value);
}

static int
set_uint(struct parse *p, const struct key *k, void *base, const char *value)
{
    unsigned *f = field(base, k->off);
    const char *end;
    uint64_t n;

    if (conf__parse_u64(value, &n, &end) < 0 || *end != '\0' || n < k->min || n > k->max) {
        perr(p, p->line, "%s: want an integer from %" PRIu64 " to %" PRIu64 " (got '%s')", k->name,
             k->min, k->max, value);
        return MXD_EINVAL;
    }
    *f = (unsigned)n;
    return 0;
}

/* arg: a struct int_range. An optional sign, then digits. */
static int
set_int(struct parse *p, const struct key *k, void *base, const char *value)
{
    const struct int_range *r = k->arg;
    int *f = field(base, k->off);
    bool neg = *value == '-';
    const char *end;
    uint64_t n;
    int64_t v;

    if (conf__parse_u64(value + (neg || *value == '+'), &n, &end) < 0 || *end != '\0' ||
        n > (uint64_t)INT32_MAX || (v = neg ? -(int64_t)n : (int64_t)n) < r->min || v > r->max) {
        perr(p, p->line, "%s: want an integer from %d to %d (got '%s')", k->name, r->min, r->max,
             value);
        return MXD_EINVAL;
    }
    *f = (int)v;
    return 0;
}

static int
set_size(struct parse *p, const struct key *k, void *base, const char *value)
{
    uint64_t *f = field(base, k->off);
    uint64_t n;

    if (conf_parse_size(value, &n) < 0)
        return bad(p, k, value, "want a size such as 512k, 50m or 1g");
    if (n == 0)
        return bad(p, k, value, "must be greater than zero");
    *f = n;
    return 0;
}

/* arg: the unit of the field, in ms. */
static int
set_time(struct parse *p, const struct key *k, void *base, const char *value)
{
    uint64_t *f = field(base, k->off);
    uint64_t ms;

    if (conf_parse_duration_ms(value, &ms) < 0)
        return bad(p, k, value, "want a duration such as 30s, 5m, 1h or 5d");
    if (ms == 0)
        return bad(p, k, value, "must be greater than zero");
    *f = ms / *(const uint64_t *)k->arg;
    return 0;
}

/* on or off, into a bool. */
static int
set_bool(struct parse *p, const struct key *k, void *base, const char *value)
{
    bool *f = field(base, k->off);

    if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0)
        return bad(p, k, value, "want on or off");
    *f = strcmp(value, "on") == 0;
    return 0;
}

/* arg: the names of the enum values in order, as "off|tag|reject". */
static int
set_enum(struct parse *p, const struct key *k, void *base, const char *value)
{
    const char *names = k->arg;
    size_t len, n = strlen(value);

    for (int i = 0; *names != '\0'; i++, names += len + (names[len] == '|')) {
        len = strcspn(names, "|");
        if (len == n && strncmp(names, value, n) == 0) {
            memcpy(field(base, k->off), &i, sizeof(i));
            return 0;
        }
    }
    perr(p, p->line, "%s: want %s (got '%s')", k->name, (const char *)k->arg, value);
    return MXD_EINVAL;
}

/* arg: a struct conf_ep_opt. */
static int
set_endpoint(struct parse *p, const struct key *k, void *base, const char *value)
{
    const char *why = NULL;

    if (conf__parse_endpoint(value, k->arg, field(base, k->off), &why) < 0)
        return bad(p, k, value, why);
    return 0;
}

/* arg: a struct list_kind. A comma list, each item trimmed and parsed. */
static int
set_list(struct parse *p, const struct key *k, void *base, const char *value)
{
    const struct list_kind *lk = k->arg;
    const char *item = value, *why;
    size_t n = 1, i, len;
    char *arr, *s = NULL;

    for (const char *c = value; *c != '\0'; c++)
        n += *c == ',';
    arr = xcalloc(n, lk->elsize);
    for (i = 0; i < n; i++, item += len + (item[len] == ',')) {
        len = strcspn(item, ",");
        s = xstrndup(item, len);
        why = "empty item";
        if (*conf__trim(s) == '\0' ||
            lk->parse(conf__trim(s), lk->arg, arr + i * lk->elsize, &why) < 0)
            goto fail;
        free(s);
        s = NULL;
    }
    memcpy(field(base, k->off), &arr, sizeof(arr));
    memcpy(field(base, k->noff), &n, sizeof(n));
    return 0;
fail:
    perr(p, p->line, "%s: %s (got '%s')", k->name, why, conf__trim(s));
    while (i > 0 && lk->drop != NULL)
        lk->drop(arr + --i * lk->elsize);
    free(arr);
    free(s);
    return MXD_EINVAL;
}

/* A host[:port] list, or `mx` to use the domain's MX records. */
static int
set_primary(struct parse *p, const struct key *k, void *base, const char *value)
{
    struct conf_domain *d = base;

    if (ascii_casecmp(value, "mx") == 0) {
        d->primary_mx = true;
        return 0;
    }
    return set_list(p, k, base, value);
}

/* recipients_source: a file or an LDAP URL (conf_rsource.c). */
static int
set_rsource(struct parse *p, const struct key *k, void *base, const char *value)
{
    const char *why = NULL;

    if (conf__parse_rsource(value, NULL, field(base, k->off), &why) < 0)
        return bad(p, k, value, why);
    return 0;
}

/* A milters list, kept as written: the sections it names may come later
 * in the file (resolve_milters). */
static int
set_milters(struct parse *p, const struct key *k, void *base, const char *value)
{
    char **raw = p->sect == SECT_DOMAIN ? &p->dinfo[p->dom].milters : &p->milters;

    (void)k;
    (void)base;
    *raw = xstrdup(value);
    return 0;
}

static int
set_milter_socket(struct parse *p, const struct key *k, void *base, const char *value)
{
    const char *why = NULL;

    if (conf__parse_milter(value, NULL, field(base, k->off), &why) < 0)
        return bad(p, k, value, why);
    return 0;
}

static const struct key keys[K_N] = {CONF_KEYS(KEY_INIT)};

static int *
key_seen(struct parse *p)
{
    if (p->sect == SECT_MILTER)
        return p->minfo[p->mil].seen;
    return p->sect == SECT_DOMAIN ? p->dinfo[p->dom].seen : p->seen;
}

/* "[milter NAME]": a new filter; its keys default to the [server] milter_*
 * values (check_milters). */
static void
begin_milter(struct parse *p, const char *name)
{
    struct conf *c = p->conf;

    if (!conf__is_milter_name(name)) {
        perr(p, p->line,
             *name ? "bad filter name in [milter %s] (letters, digits, '-', '_', '.')"
                   : "missing NAME in [milter%s]",
             name);
        return;
    }
    for (size_t i = 0; i < p->nsections; i++) {
        if (ascii_casecmp(c->milter_defs[i].name, name) == 0) {
            perr(p, p->line, "duplicate [milter %s] (first at line %d)", name, p->minfo[i].header);
            return;
        }
    }
    c->milter_defs = xrealloc(c->milter_defs, (p->nsections + 1) * sizeof(*c->milter_defs));
    p->minfo = xrealloc(p->minfo, (p->nsections + 1) * sizeof(*p->minfo));
    memset(&c->milter_defs[p->nsections], 0, sizeof(*c->milter_defs));
    memset(&p->minfo[p->nsections], 0, sizeof(*p->minfo));
    c->milter_defs[p->nsections].name = xstrdup(name);
    c->milter_defs[p->nsections].index = p->nsections;
    p->minfo[p->nsections].header = p->line;
    p->mil = p->nsections++;
    c->nmilter_defs = p->nsections;
    p->sect = SECT_MILTER;
}

/* "[domain NAME]": NAME becomes a new, lower-cased domain entry. */
static void
begin_domain(struct parse *p, const char *name)
{
    struct conf *c = p->conf;
    char *lc = xstrdup(name);

    for (char *s = lc; *s != '\0'; s++)
        *s = ascii_lower(*s);
    if (!conf__is_hostname(lc)) {
        perr(p, p->line, *lc ? "bad domain name in [domain %s]" : "missing NAME in [domain%s]", lc);
        goto fail;
    }
    for (size_t i = 0; i < c->ndomains; i++) {
        if (strcmp(c->domains[i].name, lc) == 0) {
            perr(p, p->line, "duplicate [domain %s] (first at line %d)", lc, p->dinfo[i].header);
            goto fail;
        }
    }
    c->domains = xrealloc(c->domains, (c->ndomains + 1) * sizeof(*c->domains));
    p->dinfo = xrealloc(p->dinfo, (c->ndomains + 1) * sizeof(*p->dinfo));
    memset(&c->domains[c->ndomains], 0, sizeof(*c->domains));
    memset(&p->dinfo[c->ndomains], 0, sizeof(*p->dinfo));
    c->domains[c->ndomains].name = lc;
    p->dinfo[c->ndomains].header = p->line;
    p->dom = c->ndomains++;
    p->sect = SECT_DOMAIN;
    return;
fail:
    free(lc);
}

/* A trimmed "[...]" line: keys up to the next header go to p->sect. */
static void
begin_section(struct parse *p, const char *s, size_t n)
{
    const char *end = memchr(s, ']', n);
    size_t i = end != NULL ? (size_t)(end - s) + 1 : n;
    char buf[256], *name;

    p->sect = SECT_SKIP;
    while (i < n && conf__is_space(s[i]))
        i++;
    if (end == NULL || (i < n && s[i] != ';' && s[i] != '#')) {
        perr(p, p->line, end == NULL ? "missing ']'" : "unexpected text after ']'");
        return;
    }
    snprintf(buf, sizeof(buf), "%.*s", (int)(end - s - 1), s + 1);
    name = conf__trim(buf);
    if (strncmp(name, "domain", 6) == 0 && (name[6] == '\0' || conf__is_space(name[6]))) {
        begin_domain(p, conf__trim(name + 6));
        return;
    }
    if (strncmp(name, "milter", 6) == 0 && (name[6] == '\0' || conf__is_space(name[6]))) {
        begin_milter(p, conf__trim(name + 6));
        return;
    }
    for (int k = SECT_SERVER; k < SECT_DOMAIN; k++) {
        if (strcmp(name, sect_names[k]) != 0)
            continue;
        if (p->sect_line[k] != 0) {
            perr(p, p->line, "duplicate [%s] (first at line %d)", name, p->sect_line[k]);
        } else {
            p->sect_line[k] = p->line;
            p->sect = (enum sect)k;
        }
        return;
    }
    perr(p, p->line, "unknown section [%s]", name);
}

/* Whether inih should see this trimmed line; reports what it cannot. */
static bool
line_ok(struct parse *p, const char *s, size_t n, size_t max)
{
    const char *c = s;

    if (n == 0)
        return true;
    if (*s == ';' || *s == '#')
        return false; /* a comment of any length: inih gets an empty line */
    if (n + 2 > max) {
        perr(p, p->line, "line longer than %zu bytes", max - 2);
        return false;
    }
    if (memchr(s, '\0', n) != NULL) {
        perr(p, p->line, "NUL byte in line");
        return false;
    }
    if (*s == '[') {
        begin_section(p, s, n);
        return false;
    }
    /* inih splits at the first '=' or ':', and stops at an inline " ;". */
    while (c < s + n && *c != '=' && *c != ':' && !(*c == ';' && conf__is_space(c[-1])))
        c++;
    if (c == s + n || *c != '=' || c == s) {
        perr(p, p->line, c == s ? "missing key before '='" : "expected 'key = value'");
        return false;
    }
    return true;
}

/* inih's fgets: one physical line per call, trimmed, so p->line is right. */
static char *
conf_reader(char *buf, int num, void *stream)
{
    struct parse *p = stream;
    const char *s = p->text + p->pos, *nl;
    size_t n;

    if (p->pos >= p->len)
        return NULL;
    if (num < 2)
        mxd_panic("conf: inih line buffer of %d bytes", num);
    nl = memchr(s, '\n', p->len - p->pos);
    n = nl != NULL ? (size_t)(nl - s) : p->len - p->pos;
    p->pos += n + (nl != NULL);
    p->line++;
    if (p->line == 1 && n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
        s += 3;
        n -= 3;
    }
    for (; n > 0 && conf__is_space(*s); s++, n--)
        ;
    for (; n > 0 && conf__is_space(s[n - 1]); n--)
        ;
    if (!line_ok(p, s, n, (size_t)num))
        n = 0;
    memcpy(buf, s, n);
    memcpy(buf + n, "\n", 2);
    return buf;
}

static int
conf_handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse *p = user;
    const struct key *k = NULL;
    int *seen;

    (void)section; /* tracked by conf_reader */
    for (size_t i = 0; i < K_N && k == NULL; i++)
        k = keys[i].sect == p->sect && strcmp(keys[i].name, name) == 0 ? &keys[i] : NULL;
    if (p->sect == SECT_SKIP) {
        return 1; /* a bad header, reported */
    } else if (p->sect == SECT_NONE) {
        perr(p, p->line, "'%s' before any [section]", name);
    } else if (k == NULL) {
        perr(p, p->line, "unknown key '%s' in [%s]", name, sect_names[p->sect]);
    } else if (*(seen = &key_seen(p)[k - keys]) != 0) {
        perr(p, p->line, "duplicate key '%s' (first at line %d)", name, abs(*seen));
    } else if (*value == '\0') {
        perr(p, p->line, "%s: empty value", name);
        *seen = -p->line;
    } else {
        void *base = p->sect == SECT_DOMAIN   ? (void *)&p->conf->domains[p->dom]
                     : p->sect == SECT_MILTER ? (void *)&p->conf->milter_defs[p->mil]
                                              : p->conf;

        *seen = k->set(p, k, base, value) == 0 ? p->line : -p->line;
    }
    return 1;
}

static void
apply_defaults(struct parse *p, enum sect sect, void *base, const int *seen)
{
    for (size_t i = 0; i < K_N; i++) {
        if (keys[i].sect == sect && keys[i].def != NULL && seen[i] == 0 &&
            keys[i].set(p, &keys[i], base, keys[i].def) < 0)
            mxd_panic("conf: bad default for %s", keys[i].name);
    }
}

/* The keys of recipients = sync and of the callahead cache belong to
 * those policies; elsewhere they are a mistake. */
static void
check_domain_rcpts(struct parse *p, const struct conf_domain *d, const struct dominfo *di)
{
    const int *l = di->seen;
    bool sync = d->recipients == CONF_RCPTS_SYNC;

    if (sync && l[K_D_RECIPIENTS_SOURCE] == 0)
        perr(p, l[K_D_RECIPIENTS], "recipients = sync: needs recipients_source");
    if (!sync) {
        static const enum key_id only_sync[] = {K_D_RECIPIENTS_SOURCE, K_D_RECIPIENTS_REFRESH,
                                                K_D_RECIPIENTS_MAX_AGE};

        for (size_t i = 0; i < sizeof(only_sync) / sizeof(only_sync[0]); i++)
            if (l[only_sync[i]] > 0)
                perr(p, l[only_sync[i]], "%s: only valid with recipients = sync",
                     keys[only_sync[i]].name);
    } else if ((l[K_D_RECIPIENTS_MAX_AGE] > 0 || l[K_D_RECIPIENTS_REFRESH] > 0) &&
               d->recipients_max_age_s <= d->recipients_refresh_s) {
        perr(p,
             l[K_D_RECIPIENTS_MAX_AGE] > 0 ? l[K_D_RECIPIENTS_MAX_AGE] : l[K_D_RECIPIENTS_REFRESH],
             "recipients_max_age: must be longer than recipients_refresh (%" PRIu64 "s)",
             d->recipients_refresh_s);
    }
    if (d->recipients != CONF_RCPTS_PRIMARY) {
        if (l[K_D_VERIFY_POSITIVE_TTL] > 0)
            perr(p, l[K_D_VERIFY_POSITIVE_TTL],
                 "verify_positive_ttl: only valid with recipients = primary");
        if (l[K_D_VERIFY_NEGATIVE_TTL] > 0)
            perr(p, l[K_D_VERIFY_NEGATIVE_TTL],
                 "verify_negative_ttl: only valid with recipients = primary");
    }
}

static void
check_domain(struct parse *p, struct conf_domain *d, const struct dominfo *di)
{
    const int *l = di->seen;
    bool backup = d->mode == CONF_MODE_BACKUP;

    apply_defaults(p, SECT_DOMAIN, d, l);
    if (l[K_D_MODE] < 0)
        return; /* with a bad mode, every check below is noise */
    if (backup && l[K_D_TLS] == 0)
        d->tls = p->conf->outbound_tls; /* forwarding follows the global policy */
    if (backup && l[K_D_PRIMARY] == 0)
        perr(p, di->header, "[domain %s]: mode = backup needs primary", d->name);
    if (!backup && l[K_D_PRIMARY] > 0)
        perr(p, l[K_D_PRIMARY], "primary: only valid with mode = backup");
    if (backup && l[K_D_LMTP] > 0)
        perr(p, l[K_D_LMTP], "lmtp: only valid with mode = local");
    if (d->recipients == CONF_RCPTS_LMTP && backup)
        perr(p, l[K_D_RECIPIENTS], "recipients = lmtp: only valid with mode = local");
    else if (d->recipients == CONF_RCPTS_LMTP && l[K_D_LMTP] == 0)
        perr(p, l[K_D_RECIPIENTS], "recipients = lmtp: needs lmtp");
    if (d->recipients == CONF_RCPTS_PRIMARY && !backup)
        perr(p, l[K_D_RECIPIENTS], "recipients = primary: only valid with mode = backup");
    else if (d->recipients == CONF_RCPTS_PRIMARY && d->primary_mx)
        perr(p, l[K_D_RECIPIENTS],
             "recipients = primary: needs primary hosts to ask (primary = mx names none)");
    check_domain_rcpts(p, d, di);
}

/* A listener marked proxy trusts the headers of proxy_networks only, and
 * proxy_networks without such a listener is a mistake (the balancer's
 * address would pass for every client's). */
static void
check_proxy(struct parse *p)
{
    const struct conf *c = p->conf;
    const int *l = p->seen;
    bool marked = false;

    for (size_t i = 0; i < c->nlisten; i++)
        marked = marked || c->listen[i].proxy;
    if (marked && l[K_PROXY_NETWORKS] == 0)
        perr(p, l[K_LISTEN], "listen: an address marked proxy needs proxy_networks");
    if (!marked && l[K_PROXY_NETWORKS] > 0 && l[K_LISTEN] >= 0)
        perr(p, l[K_PROXY_NETWORKS], "proxy_networks: no listen address is marked proxy");
}

/* The pre-greet wait stays well inside the 5 minutes a client waits for
 * the greeting (RFC 5321 4.5.3.2.1), and shrinks under load, never grows. */
static void
check_greet(struct parse *p)
{
    const struct conf *c = p->conf;
    const int *l = p->seen;

    if (l[K_GREET_WAIT] > 0 && c->greet_wait_ms > CONF_GREET_WAIT_MAX_MS)
        perr(p, l[K_GREET_WAIT], "greet_wait: at most %us", CONF_GREET_WAIT_MAX_MS / 1000);
    else if (l[K_GREET_WAIT] >= 0 && l[K_COMMAND_TIMEOUT] >= 0 && l[K_GREET_ACTION] > 0 &&
             c->greet_action != CONF_GREET_OFF && c->greet_wait_ms >= c->command_timeout_ms)
        perr(p, l[K_GREET_WAIT] ? l[K_GREET_WAIT] : l[K_COMMAND_TIMEOUT],
             "greet_wait: must be shorter than command_timeout (the connect stage's budget)");
    /* (the default stress wait counts as greet_wait when that is shorter) */
    if (l[K_GREET_WAIT] >= 0 && l[K_GREET_STRESS_WAIT] > 0 &&
        c->greet_stress_wait_ms > c->greet_wait_ms)
        perr(p, l[K_GREET_STRESS_WAIT], "greet_stress_wait: must not be longer than greet_wait");
}

/* The reply map names lists of dnsbl_sites (a typo would show the private
 * name); each list shows its mapped name. Allowlist and FCrDNS keys need
 * what they act on. */
static void
check_dnsbl(struct parse *p)
{
    struct conf *c = p->conf;
    const int *l = p->seen;

    for (size_t i = 0; i < c->ndnsbl_reply_map; i++) {
        const struct conf_dnsbl_map *m = &c->dnsbl_reply_map[i];
        bool found = false;

        for (size_t j = 0; j < c->ndnsbl_sites; j++) {
            if (strcmp(c->dnsbl_sites[j].name, m->key) == 0) {
                c->dnsbl_sites[j].display = m->display;
                found = true;
            }
        }
        if (!found && l[K_DNSBL_SITES] >= 0)
            perr(p, l[K_DNSBL_REPLY_MAP], "dnsbl_reply_map: '%s' is not a list of dnsbl_sites",
                 m->key);
    }
    if (l[K_DNSBL_THRESHOLD] >= 0 && l[K_DNSBL_ALLOWLIST_THRESHOLD] >= 0 &&
        c->dnsbl_allowlist_threshold >= c->dnsbl_threshold)
        perr(p,
             l[K_DNSBL_ALLOWLIST_THRESHOLD] ? l[K_DNSBL_ALLOWLIST_THRESHOLD] : l[K_DNSBL_THRESHOLD],
             "dnsbl_allowlist_threshold: must be less than dnsbl_threshold");
    if (c->fcrdns_weight != 0 && !c->fcrdns && l[K_FCRDNS] >= 0)
        perr(p, l[K_FCRDNS_WEIGHT], "fcrdns_weight: needs fcrdns = on");
}

/* One milters list (raw, set at line) into the indexes of its filters:
 * names and sockets, or `none` alone; *n of them. Caller frees. */
static size_t *
resolve_milters(struct parse *p, const char *raw, int line, size_t *n, bool *used)
{
    size_t cap = 1, *ix, len;
    char *item;

    for (const char *c = raw; *c != '\0'; c++)
        cap += *c == ',';
    ix = xcalloc(cap, sizeof(*ix));
    *n = 0;
    for (const char *c = raw;; c += len + 1) {
        const char *why = NULL, *t;
        size_t k, j;

        len = strcspn(c, ",");
        item = xstrndup(c, len);
        t = conf__trim(item);
        if (*t == '\0') {
            perr(p, line, "milters: empty item");
        } else if (strcmp(t, "none") == 0) {
            if (strchr(raw, ',') != NULL)
                perr(p, line, "milters: 'none' must be alone");
        } else if (conf__milter_item(p->conf, p->nsections, t, &k, &why) < 0) {
            perr(p, line, "milters: %s (got '%s')", why, t);
        } else {
            for (j = 0; j < *n && ix[j] != k; j++)
                ;
            if (j < *n) {
                perr(p, line, "milters: '%s' is named twice", t);
            } else {
                if (k < p->nsections)
                    used[k] = true;
                ix[(*n)++] = k;
            }
        }
        free(item);
        if (c[len] == '\0')
            break;
    }
    return ix;
}

/* [milter NAME] sections take the [server] milter_* values for what they
 * do not set, need a socket and a list that names them; the lists become
 * pointers into conf->milter_defs once it is whole. */
static void
check_milters(struct parse *p)
{
    struct conf *c = p->conf;
    bool *used = xcalloc(p->nsections + 1, sizeof(*used));
    size_t n, *gix, **dix = xcalloc(c->ndomains + 1, sizeof(*dix)), *dn;

    dn = xcalloc(c->ndomains + 1, sizeof(*dn));
    for (size_t i = 0; i < p->nsections; i++) {
        struct conf_milter *m = &c->milter_defs[i];
        const int *l = p->minfo[i].seen;

        if (l[K_M_CONNECT_TIMEOUT] == 0)
            m->connect_timeout_ms = c->milter_connect_timeout_ms;
        if (l[K_M_COMMAND_TIMEOUT] == 0)
            m->command_timeout_ms = c->milter_command_timeout_ms;
        if (l[K_M_CONTENT_TIMEOUT] == 0)
            m->content_timeout_ms = c->milter_content_timeout_ms;
        if (l[K_M_DEFAULT_ACTION] == 0)
            m->default_action = c->milter_default_action;
        if (l[K_M_REUSE] == 0)
            m->reuse = c->milter_reuse;
        if (l[K_M_SOCKET] == 0)
            perr(p, p->minfo[i].header, "[milter %s]: missing socket", m->name);
    }
    gix =
        resolve_milters(p, p->milters != NULL ? p->milters : "none", p->seen[K_MILTERS], &n, used);
    for (size_t d = 0; d < c->ndomains; d++) {
        const struct dominfo *di = &p->dinfo[d];

        c->domains[d].milters_set = di->seen[K_D_MILTERS] > 0;
        if (di->milters != NULL)
            dix[d] = resolve_milters(p, di->milters, di->seen[K_D_MILTERS], &dn[d], used);
    }
    for (size_t i = 0; i < p->nsections; i++)
        if (!used[i])
            perr(p, p->minfo[i].header,
                 "[milter %s]: no milters list names it (comment it out to disable it)",
                 c->milter_defs[i].name);
    conf__milter_list_finish(c, &c->milters, gix, n);
    for (size_t d = 0; d < c->ndomains; d++) {
        if (dix[d] != NULL)
            conf__milter_list_finish(c, &c->domains[d].milters, dix[d], dn[d]);
        free(dix[d]);
    }
    free(gix);
    free(dix);
    free(dn);
    free(used);
}

/* DANE needs a trust anchor it can read (RFC 7672 2.1: only
 * DNSSEC-validated TLSA records count). */
static void
check_dane(struct parse *p)
{
    const struct conf *c = p->conf;
    const char *ta = c->dnssec_trust_anchor ? c->dnssec_trust_anchor : CONF_DNSSEC_ROOT_KEY;
    int line = p->seen[K_DNSSEC_TRUST_ANCHOR];
    bool dane = c->outbound_tls >= CONF_TLS_DANE;

    if (line == 0)
        line = p->seen[K_OUTBOUND_TLS];
    for (size_t i = 0; i < c->ndomains; i++) {
        if (c->domains[i].tls >= CONF_TLS_DANE) {
            dane = true;
            if (line == 0)
                line =
                    p->dinfo[i].seen[K_D_TLS] > 0 ? p->dinfo[i].seen[K_D_TLS] : p->dinfo[i].header;
        }
    }
    if ((dane || p->seen[K_DNSSEC_TRUST_ANCHOR] > 0) && line > 0 && access(ta, R_OK) != 0)
        perr(p, line, "dnssec_trust_anchor: cannot read %s: %s%s", ta, strerror(errno),
             c->dnssec_trust_anchor ? "" : " (install dns-root-data, or set dnssec_trust_anchor)");
}

/* After the last line: defaults, required keys, rules across keys. */
static void
check_conf(struct parse *p)
{
    const struct conf *c = p->conf;
    const int *l = p->seen;

    for (int s = SECT_SERVER; s < SECT_DOMAIN; s++)
        apply_defaults(p, (enum sect)s, p->conf, l);
    for (size_t i = 0; i < K_N; i++) {
        if (keys[i].required && l[i] == 0)
            perr(p, p->sect_line[keys[i].sect] ? p->sect_line[keys[i].sect] : p->line,
                 "missing required key '%s' in [%s]", keys[i].name, sect_names[keys[i].sect]);
    }
    if ((l[K_CERTIFICATE] != 0) != (l[K_KEY] != 0)) /* one of them is 0 */
        perr(p, abs(l[K_CERTIFICATE] + l[K_KEY]),
             "[tls]: set both certificate and key, or neither");
    if (c->store == CONF_STORE_POSTGRESQL && c->postgresql == NULL)
        perr(p, l[K_STORE], "store = postgresql: set postgresql (a libpq connection string)");
    /* its syntax is libpq's to judge (store/dbconf.c, below base) */
    p->conf->postgresql_line = l[K_POSTGRESQL] > 0 ? l[K_POSTGRESQL] : 0;
    if (l[K_CLUSTER_LEASE] > 0 && c->cluster_lease_s < 3)
        perr(p, l[K_CLUSTER_LEASE],
             "cluster_lease: must be 3s or more (heartbeats go every third)");
    check_proxy(p);
    check_greet(p);
    check_dnsbl(p);
    if (l[K_RETRY_MIN] >= 0 && l[K_RETRY_MAX] >= 0 && c->retry_max_s < c->retry_min_s)
        perr(p, l[K_RETRY_MAX] ? l[K_RETRY_MAX] : l[K_RETRY_MIN],
             "retry_max: must not be less than retry_min");
    if (l[K_GREYLIST_DELAY] >= 0 && l[K_GREYLIST_WINDOW] >= 0 &&
        c->greylist_window_s <= c->greylist_delay_s)
        perr(p, l[K_GREYLIST_WINDOW] ? l[K_GREYLIST_WINDOW] : l[K_GREYLIST_DELAY],
             "greylist_window: must be longer than greylist_delay");
    for (size_t i = 0; i < c->ndomains; i++)
        check_domain(p, &c->domains[i], &p->dinfo[i]);
    check_dane(p);
    check_milters(p);
}

static int
parse_text(const char *text, size_t len, const char *name, struct conf **out, char **errors)
{
    struct parse p = {.text = text, .len = len, .name = name};
    int rc;

    p.conf = xcalloc(1, sizeof(*p.conf));
    p.conf->refs = 1;
    p.conf->path = xstrdup(name);
    rc = ini_parse_stream(conf_reader, &p, conf_handler, &p);
    if (rc < 0)
        mxd_panic("conf: inih failed (%d)", rc);
    if (rc > 0 && p.nerr == 0)
        perr(&p, rc, "syntax error"); /* conf_reader should have caught it */
    check_conf(&p);
    for (size_t i = 0; i < p.conf->ndomains; i++)
        free(p.dinfo[i].milters);
    free(p.dinfo);
    free(p.minfo);
    free(p.milters);
    if (p.nerr > 0) {
        conf_free(p.conf);
        *errors = p.err;
        return MXD_ECONFIG;
    }
    *out = p.conf;
    return 0;
}

struct conf *
conf_ref(const struct conf *conf)
{
    /* The reference count is the one mutable field of a loaded conf. */
    struct conf *c = (struct conf *)conf;

    c->refs++;
    return c;
}

int
conf_parse_string(const char *text, const char *name, struct conf **out, char **errors)
{
    if (text == NULL || name == NULL || out == NULL || errors == NULL)
        return MXD_EINVAL;
    *out = NULL;
    *errors = NULL;
    return parse_text(text, strlen(text), name, out, errors);
}

int
conf_load(const char *path, struct conf **out, char **errors)
{
    FILE *f;
    char *text;
    size_t len;
    int rc;

    if (path == NULL || out == NULL || errors == NULL)
        return MXD_EINVAL;
    *out = NULL;
    *errors = NULL;
    if ((f = fopen(path, "r")) == NULL) {
        *errors = xasprintf("%s: cannot open: %s\n", path, strerror(errno));
        return MXD_EIO;
    }
    text = xmalloc(CONF_MAX_FILE + 1);
    len = fread(text, 1, CONF_MAX_FILE + 1, f);
    if (ferror(f)) {
        *errors = xasprintf("%s: cannot read: %s\n", path, strerror(errno));
        rc = MXD_EIO;
    } else if (len > CONF_MAX_FILE) {
        *errors = xasprintf("%s: larger than %d bytes\n", path, CONF_MAX_FILE);
        rc = MXD_ECONFIG;
    } else {
        rc = parse_text(text, len, path, out, errors);
    }
    fclose(f);
    free(text);
    return rc;
}

/* Frees the list fields of base (struct conf or a struct conf_domain):
 * every key of section kind whose value is a list (set_list and the
 * setters built on it), each item dropped. A new list key is freed here
 * without a line of its own. */
static void
free_lists(void *base, bool domain)
{
    for (size_t i = 0; i < K_N; i++) {
        const struct key *k = &keys[i];
        const struct list_kind *lk = k->arg;
        char *arr;
        size_t n;

        if ((k->set != set_list && k->set != set_primary) || (k->sect == SECT_DOMAIN) != domain)
            continue;
        memcpy(&arr, field(base, k->off), sizeof(arr));
        memcpy(&n, field(base, k->noff), sizeof(n));
        for (size_t j = 0; arr != NULL && lk->drop != NULL && j < n; j++)
            lk->drop(arr + j * lk->elsize);
        free(arr);
    }
}

void
conf_free(struct conf *conf)
{
    if (conf == NULL || --conf->refs > 0)
        return;
    free_lists(conf, false);
    for (size_t i = 0; i < conf->ndomains; i++) {
        struct conf_domain *d = &conf->domains[i];

        free_lists(d, true);
        conf__endpoint_free(&d->lmtp);
        conf__rsource_free(&d->rsource);
        free(d->milters.v);
        free(d->name);
        free(d->ca_file);
    }
    for (size_t i = 0; i < conf->nmilter_defs; i++)
        conf__milter_free(&conf->milter_defs[i]);
    free(conf->milter_defs);
    free(conf->milters.v);
    conf__endpoint_free(&conf->metrics_listen);
    conf__endpoint_free(&conf->bounce_relay);
    free(conf->path);
    free(conf->hostname);
    free(conf->user);
    free(conf->database);
    free(conf->postgresql);
    free(conf->node_name);
    free(conf->control_socket);
    free(conf->tls_certificate);
    free(conf->tls_key);
    free(conf->tls_priority);
    free(conf->dnssec_trust_anchor);
    free(conf->mta_sts_ca_file);
    free(conf->domains);
    free(conf);
}

const struct conf_domain *
conf_domain_find(const struct conf *conf, const char *domain, size_t len)
{
    if (conf == NULL || domain == NULL)
        return NULL;
    for (size_t i = 0; i < conf->ndomains; i++) {
        const char *name = conf->domains[i].name;

        if (strlen(name) == len && ascii_ncasecmp(name, domain, len) == 0)
            return &conf->domains[i];
    }
    return NULL;
}

uint64_t
conf_domain_lifetime(const struct conf *conf, const struct conf_domain *dom)
{
    return dom != NULL && dom->lifetime_s > 0 ? dom->lifetime_s : conf->lifetime_s;
}
