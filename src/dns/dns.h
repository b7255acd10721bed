/* dns: MX and address lookups for forwarding, through the resolver. */
#ifndef MXD_DNS_H
#define MXD_DNS_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/conf.h"
#include "base/util.h"
#include "dns/mx.h"

#define DNS_MAX_HOSTS 16
#define DNS_MAX_ADDRS 8
#define DNS_TLSA_MAX  32 /* TLSA records of one RRset used; the rest are dropped */

/* DNSSEC verdict of answers from the validating resolver (always
 * INSECURE from the plain one). */
enum dns_sec { DNS_SEC_INSECURE, DNS_SEC_SECURE, DNS_SEC_BOGUS };

struct dns_target {
    struct mx_host mx; /* name and preference */
    size_t naddrs;
    struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* A and AAAA; port 25 set */
    enum dns_sec sec; /* its A and AAAA answers: secure when both are, bogus when one is */
};

struct dns_mx_result {
    size_t ntargets; /* 0 with status 0: every MX is us or worse (loops back) */
    struct dns_target targets[DNS_MAX_HOSTS];
    bool self_listed;
    enum dns_sec mx_sec; /* the MX answer (its NODATA for an implicit MX) */
};

/* status: 0 (res filled, ordered for forwarding), MXD_ENOENT (the domain
 * does not exist or has neither MX nor address records), MXD_EIO
 * (temporary DNS failure: defer). res is owned by the callback. */
typedef void (*dns_mx_cb)(void *arg, int status, struct dns_mx_result *res);

/*
 * Looks up domain's MX records through the resolver for conf (its
 * dns_servers, else /etc/resolv.conf), keeps the hosts better than `self`
 * (mx_select), and resolves each kept host's A and AAAA records. No MX
 * records: the domain itself at preference 0 (RFC 5321 5.1 implicit MX).
 * Asynchronous on loop; cb runs on the loop thread, never from inside this
 * call, within about 20 s. conf, domain and self are copied.
 */
void dns_mx_async(uv_loop_t *loop, const struct conf *conf, const char *domain, const char *self,
                  dns_mx_cb cb, void *arg);

/* The same through the validating resolver (resolver_get_dnssec), for
 * DANE (RFC 7672 2.2): mx_sec and each target's sec say what DNSSEC made
 * of the answers. A bogus MX answer fails like a SERVFAIL (MXD_EIO). */
void dns_mx_async_dnssec(uv_loop_t *loop, const struct conf *conf, const char *domain,
                         const char *self, dns_mx_cb cb, void *arg);

/* What the TLSA records of a next hop say (RFC 7672 2.2). */
enum dns_dane {
    DNS_DANE_NONE,    /* no secure TLSA RRset (insecure, or securely none): no DANE */
    DNS_DANE_RECORDS, /* a secure TLSA RRset: rdata[0..n) */
    DNS_DANE_BOGUS,   /* DNSSEC validation failed: defer, never downgrade */
    DNS_DANE_TEMP,    /* the lookup failed (SERVFAIL, timeout): defer */
};

struct dns_tlsa_result {
    enum dns_dane state;
    char why[200]; /* for logs and replies: why NONE, BOGUS or TEMP */
    size_t n;
    unsigned char *rdata[DNS_TLSA_MAX]; /* owned; usage, selector, matching type, data */
    size_t len[DNS_TLSA_MAX];
};

/* res is owned by the callback (dns_tlsa_free). */
typedef void (*dns_tlsa_cb)(void *arg, struct dns_tlsa_result *res);

/*
 * Looks up the TLSA records of _<port>._tcp.<host> through the validating
 * resolver for conf. check_addrs: host's A and AAAA records are looked up
 * too (at once) and must be secure for DANE to apply (insecure: NONE,
 * bogus: BOGUS); an MX target's addresses are known from dns_mx_async_dnssec.
 * cb runs on the loop thread, never from inside this call. host is copied.
 */
void dns_tlsa_async(uv_loop_t *loop, const struct conf *conf, const char *host, unsigned port,
                    bool check_addrs, dns_tlsa_cb cb, void *arg);
void dns_tlsa_free(struct dns_tlsa_result *res);

#endif
