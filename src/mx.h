/* mx: choosing the hosts a backup MX forwards to (pure; RFC 5321 5.1). */
#ifndef MXD_MX_H
#define MXD_MX_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
