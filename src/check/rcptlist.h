/* rcptlist: a recipient list as read from a recipients_source (a file's
 * lines, an LDAP attribute's values): addresses and "@domain" catch-alls,
 * validated, packed NUL-separated for the store. Pure. */
#ifndef MXD_RCPTLIST_H
#define MXD_RCPTLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

#define RCPTLIST_ADDR_MAX 320 /* octets of one entry (RFC 5321 4.5.3.1: 64 + 1 + 255) */
#define RCPTLIST_MAX      (4u * 1000u * 1000u) /* entries in one list */

struct rcptlist {
    char *buf; /* owned: n entries, each NUL-terminated */
    size_t len, cap, n;
};

void rcptlist_init(struct rcptlist *l);
void rcptlist_free(struct rcptlist *l);

/* "local@domain" or "@domain": no blank, control or <>, one '@' that is
 * not last, a domain of dot-separated labels, at most RCPTLIST_ADDR_MAX. */
bool rcptlist_valid(const char *s, size_t n);

/* Appends s[0..n) if valid: 0, MXD_EINVAL (not an address) or MXD_ETOOBIG
 * (RCPTLIST_MAX reached). */
int rcptlist_add(struct rcptlist *l, const char *s, size_t n) MXD_WUR;

/* A file's text: one entry per line; blank lines and lines starting with
 * '#' are skipped, blanks around an entry and a CR before the LF are
 * ignored. A file is whole only when it is not empty and ends with a
 * newline (a writer still at work has not written it yet). 0, or
 * MXD_EINVAL and err says why ("line 3: not an address"). */
int rcptlist_parse(struct rcptlist *l, const char *text, size_t len, char *err,
                   size_t errlen) MXD_WUR;

/* 16 hex digits and NUL: FNV-1a 64 of the packed list (same list, same
 * order: same digest). */
void rcptlist_digest(const struct rcptlist *l, char out[17]);

#endif
