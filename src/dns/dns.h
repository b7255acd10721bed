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
