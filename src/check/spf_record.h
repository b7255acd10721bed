/* spf_record: the syntax of an SPF record (RFC 7208 4.5, 4.6, 6, 7 and
 * the ABNF of 12), checked strictly, and the record rewritten to a form
 * libspf2 evaluates as the RFC says. Pure: no I/O, no clock, any thread. */
#ifndef MXD_SPF_RECORD_H
#define MXD_SPF_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"

/* Appended to the domain of an "a" or "mx" mechanism whose prefix length
 * for the client's family is 0 (spf_record_rewrite): the caller's DNS
 * layer answers such a name with the client's own address when the name
 * without it has any address of that family. ".invalid" (RFC 6761 6.4)
 * never names anything in the DNS. */
#define SPF_RECORD_CIDR0_SUFFIX ".mxd-cidr0.invalid"

/* RFC 7208 4.5: a TXT string is an SPF record when it starts with
 * "v=spf1" (ASCII case-insensitive, RFC 5234 2.3) followed by a space or
 * its end. txt may hold any octet, NUL included. */
bool spf_record_is_spf(const char *txt, size_t len);

/* Checks an SPF record (spf_record_is_spf) against RFC 7208: 0 when it is
 * valid, MXD_EINVAL when it has a syntax error (a permerror, RFC 7208 4.6),
 * *why then pointing to a static text saying which rule. */
int spf_record_check(const char *txt, size_t len, const char **why) MXD_WUR;

/* For a valid record (spf_record_check), writes to out (size octets, NUL
 * ended) a record meaning the same for a client of family (AF_INET or
 * AF_INET6) that libspf2 compiles: unknown modifiers dropped (RFC 7208 6),
 * redirect= dropped when an "all" mechanism is there (5.1), ip4/ip6 /0
 * prefixes split in two /1, "a" and "mx" prefix lengths of the other
 * family dropped, and a 0 one of the client's family turned into a
 * SPF_RECORD_CIDR0_SUFFIX name with a full-length prefix. Returns the
 * length, MXD_ETOOBIG when out is too small, MXD_EINVAL for a record that
 * is not valid. */
int spf_record_rewrite(const char *txt, size_t len, int family, char *out, size_t size) MXD_WUR;

#endif
