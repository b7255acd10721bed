/* conf: mxd.conf (INI, parsed with inih) into an immutable struct conf. */
#ifndef MXD_CONF_H
#define MXD_CONF_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

/* "host:port", "[v6]:port" or "unix:/path". */
struct conf_endpoint {
    char *text; /* as written in the config */
    bool is_unix;
    char *path; /* is_unix */
    char *host; /* !is_unix: name or IP literal without brackets */
    uint16_t port;
};

/* A listen address: always a numeric IP and port. */
struct conf_listen {
    char *text; /* the address as written, without options */
    struct sockaddr_storage ss;
    socklen_t sslen;
    bool proxy; /* "ADDR proxy": connections start with a PROXY header */
};

struct conf_cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    unsigned prefix;
};

enum conf_mode { CONF_MODE_LOCAL, CONF_MODE_BACKUP };
enum conf_rcpts {
    CONF_RCPTS_ANY,
    CONF_RCPTS_TABLE,
    CONF_RCPTS_LMTP,
    CONF_RCPTS_PRIMARY,
    CONF_RCPTS_SYNC
};
/* LDAP search scopes of an ldap:// URL (RFC 4516: base, one, sub). */
enum conf_ldap_scope { CONF_LDAP_BASE, CONF_LDAP_ONE, CONF_LDAP_SUB };

/* recipients_source: "file:/path" or "ldap://host[:port]/base?attr?scope?filter"
 * (RFC 4516; the parts percent-decoded). */
struct conf_rsource {
    char *text; /* as written: the key the store keeps the list under */
    bool ldap;
    char *path; /* file: absolute */
    char *host; /* ldap: host name or IP literal (without brackets) */
    uint16_t port;
    char *base; /* the search base DN, may be "" */
    char *attr; /* the one attribute whose values are the addresses */
    enum conf_ldap_scope scope;
    char *filter; /* "(objectClass=*)" when the URL has none */
};
/* Outbound STARTTLS policy; dane: DANE (RFC 7672) where the next hop has
 * DNSSEC-secure TLSA records, else opportunistic; dane-only: no delivery
 * without them. */
enum conf_store { CONF_STORE_SQLITE, CONF_STORE_POSTGRESQL };

enum conf_tls {
    CONF_TLS_OPPORTUNISTIC,
    CONF_TLS_REQUIRED,
    CONF_TLS_VERIFY,
    CONF_TLS_DANE,
    CONF_TLS_DANE_ONLY
};
#define CONF_DNSSEC_ROOT_KEY "/usr/share/dns/root.key" /* Debian's dns-root-data */
enum conf_auth { CONF_AUTH_OFF, CONF_AUTH_TAG, CONF_AUTH_REJECT };
/* [queue] bounce_policy: who gets DSNs (issue 18) */
enum conf_bounce_policy { CONF_BOUNCE_AUTHENTICATED, CONF_BOUNCE_ALWAYS, CONF_BOUNCE_NEVER };
/* The pre-greet test: off, or on and what a client that talks early gets. */
enum conf_greet { CONF_GREET_OFF, CONF_GREET_IGNORE, CONF_GREET_REJECT, CONF_GREET_DROP };
#define CONF_GREET_WAIT_MAX_MS 60000u
/* What a DNSBL score at or over dnsbl_threshold does (Postfix's
 * postscreen_dnsbl_action, with reject for its drop). */
enum conf_dnsbl_action { CONF_DNSBL_REJECT, CONF_DNSBL_ENFORCE, CONF_DNSBL_IGNORE };
/* What a stage gets when a milter is down or misbehaves. */
enum conf_milter_action { CONF_MILTER_ACCEPT, CONF_MILTER_TEMPFAIL, CONF_MILTER_REJECT };
#define CONF_DKIM_SIGS_MAX 20 /* the highest dkim_max_signatures */

#define CONF_DNSBL_NAME_MAX 180 /* a list's name: room for 64 octets of IPv6 nibbles */

/* One entry of dnsbl_sites (Postfix's postscreen_dnsbl_sites syntax):
 * name[=filter][*weight]. The filter is one set of octet values per
 * octet of the A record, as "127.0.0.[2..11]" or "127.0.[0;2..3].[1..255]". */
struct conf_dnsbl_site {
    char *name;            /* the zone asked, lower case (may hold a private key) */
    const char *display;   /* the name replies and logs show: dnsbl_reply_map's, else name */
    bool filtered;         /* false: any record in 127.0.0.0/8 counts */
    uint8_t filter[4][32]; /* filter[i]: bit v set when octet i may be v */
    int weight;            /* added to the score when listed; < 0: an allowlist */
};

/* One entry of dnsbl_reply_map: key=display. */
struct conf_dnsbl_map {
    char *key;     /* a dnsbl_sites name, lower case */
    char *display; /* the public name to show instead */
};

/* A content filter: a [milter NAME] section, or a socket written in a
 * milters list (an inline entry, with the [server] milter_* values). */
struct conf_milter {
    char *name; /* the section's NAME, or the socket as written: logs and metrics */
    struct conf_endpoint socket; /* inet:IP:port, inet6:[IP]:port, unix:/path */
    uint64_t connect_timeout_ms;
    uint64_t command_timeout_ms;
    uint64_t content_timeout_ms;
    enum conf_milter_action default_action; /* when it is down or misbehaves */
    size_t index;                           /* in conf->milter_defs */
    bool is_inline;
    /* reuse = on: its connection is kept for the next SMTP session
     * (QUIT_NC) instead of closed */
    bool reuse;
};

/* A milters list: the filters in the order they are asked. */
struct conf_milters {
    const struct conf_milter **v;
    size_t n;
};

struct conf_domain {
    char *name; /* lower case ASCII */
    enum conf_mode mode;
    struct conf_endpoint lmtp;     /* text == NULL when unset */
    unsigned lmtp_concurrency;     /* default 8 */
    enum conf_rcpts recipients;    /* default any */
    struct conf_endpoint *primary; /* backup mode; NULL/0 when primary_mx */
    size_t nprimary;
    bool primary_mx;              /* primary = mx */
    uint64_t lifetime_s;          /* 0: use [queue] lifetime */
    unsigned release_rate;        /* backup: messages per second to the primary, 0: no cap */
    unsigned primary_concurrency; /* backup: connections to the primary at most (default 4) */
    enum conf_tls tls; /* default: [server] outbound_tls (backup), opportunistic (local) */
    char *ca_file;
    bool greylist; /* greylist = on: unknown (client, sender, recipient) triplets get 451 */
    /* milters = ...: this domain's filters for a transaction whose
     * recipients are all in it (milters_set: the key is there) */
    struct conf_milters milters;
    bool milters_set;
    /* recipients = sync: the list comes from rsource (text NULL when unset),
     * pulled every recipients_refresh; older than recipients_max_age, an
     * unlisted address gets 450 instead of 550 */
    struct conf_rsource rsource;
    uint64_t recipients_refresh_s; /* default 5m */
    uint64_t recipients_max_age_s; /* default 1h */
    /* recipients = primary: how long the primary's answers are kept (and
     * used while it cannot be asked) */
    uint64_t verify_positive_ttl_s; /* default 31d */
    uint64_t verify_negative_ttl_s; /* default 3d */
};

struct conf {
    unsigned refs; /* private: conf_ref/conf_free; loop thread only */
    char *path;
    /* [server] */
    char *hostname;
    char *user;
    struct conf_listen *listen;
    size_t nlisten;
    char *database;            /* SQLite's queue; beside it the spool (both engines) */
    enum conf_store store;     /* the queue's engine */
    char *postgresql;          /* store = postgresql: libpq connection string */
    int postgresql_line;       /* its line in path (0: not set), for --check's FILE:LINE */
    char *node_name;           /* this cluster node; NULL: the hostname */
    uint64_t cluster_lease_s;  /* a node's claim on a recipient lasts this long unrenewed */
    uint64_t max_message_size; /* octets */
    unsigned max_recipients;
    unsigned max_hops; /* Received: fields a message may carry (RFC 5321 6.3) */
    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned ipv6_prefix_length; /* per-client limits count an IPv6 /N as one client */
    uint64_t command_timeout_ms;
    uint64_t data_timeout_ms;
    unsigned soft_error_limit;          /* errors before each reject waits error_sleep */
    unsigned hard_error_limit;          /* errors before 421 and close */
    uint64_t error_sleep_ms;            /* Postfix's smtpd_error_sleep_time */
    unsigned callahead_max_connections; /* verification connections in all */
    unsigned callahead_max_per_client;  /* ... for one client address */
    struct conf_endpoint *dns_servers;
    size_t ndns_servers;
    char *dnssec_trust_anchor;  /* DS/DNSKEY file for DANE lookups; NULL: CONF_DNSSEC_ROOT_KEY */
    enum conf_tls outbound_tls; /* backup domains without tls, and the bounce relay */
    bool mta_sts;               /* MTA-STS (RFC 8461) for MX deliveries (default on) */
    char *mta_sts_ca_file;      /* trust anchors for MTA-STS (HTTPS and SMTP); NULL: the system's */
    struct conf_cidr *etrn_clients;
    size_t netrn_clients;
    /* per client and minute (Postfix's smtpd_client_*_rate_limit); 0: off */
    unsigned connection_rate_limit;     /* new connections */
    unsigned message_rate_limit;        /* MAIL FROM commands */
    unsigned recipient_rate_limit;      /* RCPT TO commands */
    struct conf_cidr *trusted_networks; /* exempt from rate limits, screening, greylisting */
    size_t ntrusted_networks;
    struct conf_cidr *proxy_networks; /* the balancers that may send PROXY headers */
    size_t nproxy_networks;
    uint64_t proxy_timeout_ms;  /* for the whole PROXY header */
    uint64_t greylist_delay_s;  /* a retry passes this long after the first attempt ... */
    uint64_t greylist_window_s; /* ... and before this long after it */
    uint64_t greylist_ttl_s; /* a triplet that passed is remembered this long after its last pass */
    /* screening (postscreen's pre-greet test and its memory of passes) */
    enum conf_greet greet_action;  /* off: no test */
    uint64_t greet_wait_ms;        /* postscreen_greet_wait */
    uint64_t greet_stress_wait_ms; /* the wait from 90% of max_connections on */
    int greet_banner;              /* 1: send the "220-" teaser (off|on) */
    uint64_t screen_ttl_s;         /* a pass is remembered this long */
    /* DNSBL and DNSWL screening, FCrDNS (check_dnsbl.c) */
    struct conf_dnsbl_site *dnsbl_sites; /* NULL/0: no lists asked */
    size_t ndnsbl_sites;
    struct conf_dnsbl_map *dnsbl_reply_map;
    size_t ndnsbl_reply_map;
    int dnsbl_threshold;           /* a score at or over it is listed (default 1) */
    int dnsbl_allowlist_threshold; /* at or under it (< 0) the client is trusted (default -1) */
    enum conf_dnsbl_action dnsbl_action;
    uint64_t dnsbl_timeout_ms; /* the lookups' budget, from the connection's start */
    bool fcrdns;               /* look up the client's forward-confirmed reverse name */
    int fcrdns_weight;         /* added to the score when the name is not confirmed */
    /* content filters (milter protocol): the global list (connect, HELO,
     * MAIL, and transactions that no single domain's list covers) */
    struct conf_milters milters;
    /* every filter a list names, [milter NAME] sections first (in file
     * order), then the inline entries */
    struct conf_milter *milter_defs;
    size_t nmilter_defs;
    /* the defaults of every filter (a [milter NAME] section may override) */
    enum conf_milter_action milter_default_action;
    uint64_t milter_connect_timeout_ms; /* Postfix's names and defaults */
    uint64_t milter_command_timeout_ms;
    uint64_t milter_content_timeout_ms;
    bool milter_reuse;
    struct conf_endpoint metrics_listen; /* text == NULL when unset */
    char *control_socket;
    /* [tls] */
    char *tls_certificate;
    char *tls_key;
    char *tls_priority;
    /* [queue] */
    uint64_t retry_min_s;
    uint64_t retry_max_s;
    uint64_t lifetime_s;
    struct conf_endpoint bounce_relay; /* text == NULL when unset */
    uint64_t delay_warning_s;          /* one "delayed" DSN per message this old; 0: none */
    enum conf_bounce_policy bounce_policy;
    /* [auth] */
    enum conf_auth spf;
    enum conf_auth dkim; /* off | tag */
    enum conf_auth dmarc;
    unsigned dkim_max_signatures; /* verified per message; the rest: neutral */
    uint64_t dkim_timeout_ms;     /* end of data: DKIM key and DMARC lookups */
    /* [domain NAME] sections, in file order */
    struct conf_domain *domains;
    size_t ndomains;
};

/*
 * Reads and validates the file at path. On success returns 0 and *out (caller
 * frees with conf_free). On failure returns MXD_ECONFIG (or MXD_EIO when the
 * file cannot be read) and *errors holds one "FILE:LINE: message" line per
 * problem, newline-separated (caller frees); *out is NULL.
 */
int conf_load(const char *path, struct conf **out, char **errors) MXD_WUR;

/* Same as conf_load for text held in memory; name stands in for the path. */
int conf_parse_string(const char *text, const char *name, struct conf **out, char **errors) MXD_WUR;

/* Drops a reference; the last one frees. conf_load's result holds one. */
void conf_free(struct conf *conf);

/* Takes another reference (a reload keeps the old conf alive for whoever
 * still uses it) and returns conf. */
struct conf *conf_ref(const struct conf *conf);

/* The domain section for domain[0..len) (ASCII case-insensitive), or NULL. */
const struct conf_domain *conf_domain_find(const struct conf *conf, const char *domain, size_t len);
/* How long mail for dom (NULL: none) may wait: its lifetime, else [queue]'s. */
uint64_t conf_domain_lifetime(const struct conf *conf, const struct conf_domain *dom);

/* "50m" -> 52428800; suffixes k, m, g (binary multiples). 0 or -MXD_EINVAL. */
int conf_parse_size(const char *s, uint64_t *out) MXD_WUR;
/* "5m" -> 300000 ms; suffixes s, m, h, d; a bare number is seconds. */
int conf_parse_duration_ms(const char *s, uint64_t *out) MXD_WUR;

/*
 * One dnsbl_sites item, "name[=filter][*weight]" (conf_dnsbl.c), into *out
 * (display = name; free with conf_dnsbl_site_free). 0, or MXD_EINVAL with
 * *why a static message and nothing allocated.
 */
int conf_dnsbl_site_parse(const char *s, struct conf_dnsbl_site *out, const char **why) MXD_WUR;
void conf_dnsbl_site_free(struct conf_dnsbl_site *s);
/* True when the A record a (network order octets) passes s's filter (any
 * record does when s has none). Says nothing of 127.0.0.0/8. */
bool conf_dnsbl_filter_match(const struct conf_dnsbl_site *s, const unsigned char a[4]);

/* True when the IP in ss is inside one of the CIDRs. */
bool conf_cidr_match(const struct conf_cidr *cidrs, size_t n, const struct sockaddr *sa);

#endif
