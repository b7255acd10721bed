/* mx: choosing the hosts a backup MX forwards to (pure; RFC 5321 5.1). */
#ifndef MXD_MX_H
#define MXD_MX_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MX_NAME_MAX 256

struct mx_host {
    char name[MX_NAME_MAX]; /* host name, no trailing dot */
    unsigned pref;
};

/*
 * Orders hosts[0..n) in place for forwarding from a backup MX and returns
 * how many are kept: a record naming `self` (ASCII case-insensitive,
 * trailing dots ignored) sets the bar, and only hosts with a strictly lower
 * preference than the lowest such record are kept (RFC 5321 5.1: never
 * forward to an equal or worse MX, or mail loops). Kept hosts are sorted by
 * preference; equal preferences are shuffled with rand_fn (returns any
 * unsigned; NULL keeps the input order). *self_listed says whether self
 * was among the records. 0 kept means: mail for this domain loops back to
 * us, defer it.
 */
size_t mx_select(struct mx_host *hosts, size_t n, const char *self, unsigned (*rand_fn)(void *arg),
                 void *rand_arg, bool *self_listed);

/* Our own addresses, to recognise an MX host that is us under another
 * name (issue 14): IP and port pairs. */
struct mx_local {
    struct sockaddr_storage *addrs; /* owned */
    size_t n;
};

/* Fills l (empty or freed before) from the listen addresses listen[0..n):
 * each stands for itself, except a wildcard (0.0.0.0 or ::), which stands
 * for each local interface address ifs[0..nifs) at its port (:: for IPv4
 * ones too: a dual-stack socket takes them). Other families are ignored. */
void mx_local_set(struct mx_local *l, const struct sockaddr_storage *listen, size_t n,
                  const struct sockaddr_storage *ifs, size_t nifs);
void mx_local_free(struct mx_local *l);

/* True when address sa (its port ignored) at port is one of ours; an
 * IPv4-mapped IPv6 address counts as the IPv4 one. */
bool mx_local_has(const struct mx_local *l, const struct sockaddr *sa, uint16_t port);

/*
 * After mx_select, for hosts resolved to addresses: is_self[i] says host i
 * has one of our addresses. prefs[0..n) ascend. Returns how many leading
 * hosts are kept: those strictly better than the best one that is us
 * (RFC 5321 5.1, as for our own name); n when none is.
 */
size_t mx_cut_self(const unsigned *prefs, const bool *is_self, size_t n);

#endif
