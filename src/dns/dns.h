/* dns: MX and address lookups for forwarding, through the resolver, and the
 * libresolv set-up the sender checks share. */
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
#define DNS_MAXNS     3 /* glibc's MAXNS */
#define DNS_MAX_ADDRS 8

struct dns_target {
    struct mx_host mx; /* name and preference */
    size_t naddrs;
    struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* A and AAAA; port 25 set */
};

struct dns_mx_result {
    size_t ntargets; /* 0 with status 0: every MX is us or worse (loops back) */
    struct dns_target targets[DNS_MAX_HOSTS];
    bool self_listed;
};

/* The name servers to ask: conf->dns_servers (numeric, with port) when
 * override is set, else those of /etc/resolv.conf. */
struct dns_servers {
    bool override;
    size_t n;
    struct sockaddr_storage addrs[DNS_MAXNS];
    uint64_t deadline_ns; /* uv_hrtime() by which lookups must end; 0: none */
};

/* Fills *sv from conf (servers past DNS_MAXNS are ignored). */
void dns_servers_from_conf(const struct conf *conf, struct dns_servers *sv);

struct __res_state;
/* Initialises a private resolver state using sv, 2 s x 2 tries per server
 * (shortened by dns_res_fit when sv has a deadline). 0 or MXD_EIO (no
 * usable server); on 0 the caller res_nclose()s it. Any thread but the
 * loop's (res_ninit reads /etc/resolv.conf). */
int dns_res_open(struct __res_state *rs, const struct dns_servers *sv) MXD_WUR;

/* Sets rs's timeouts so that its next query gives up by deadline_ns (to
 * the second: at least 1 s per server); 0 keeps them. False when the
 * deadline has passed: send nothing. */
bool dns_res_fit(struct __res_state *rs, uint64_t deadline_ns);

/* One TXT record's character-strings, concatenated and NUL-terminated. */
typedef void (*dns_txt_fn)(void *arg, const char *txt, size_t len);
/* Calls fn for each TXT record of name (blocking). 0, MXD_ENOENT (NXDOMAIN
 * or no TXT records) or MXD_EIO (SERVFAIL, timeout, malformed reply). */
int dns_txt_each(struct __res_state *rs, const char *name, dns_txt_fn fn, void *arg) MXD_WUR;

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

#endif
