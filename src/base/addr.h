/* addr: RFC 5321 4.1.2 path parsing (pure; no I/O, no allocation). */
#ifndef MXD_ADDR_H
#define MXD_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"

#define ADDR_LOCAL_MAX  64  /* RFC 5321 4.5.3.1.1, octets */
#define ADDR_DOMAIN_MAX 255 /* RFC 5321 4.5.3.1.2, octets */
#define ADDR_PATH_MAX   256 /* RFC 5321 4.5.3.1.3, octets incl. "<" ">" */

/* Why a path was refused; the caller maps these to SMTP replies. */
enum addr_status {
    ADDR_OK = 0,
    ADDR_E_SYNTAX = -1,    /* not a path per RFC 5321 4.1.2 */
    ADDR_E_TOO_LONG = -2,  /* local part, domain or path over the limits above */
    ADDR_E_NON_ASCII = -3, /* UTF-8 in the address but SMTPUTF8 not in use (RFC 6531 3.3) */
    ADDR_E_BAD_UTF8 = -4,  /* bytes >= 0x80 that are not well-formed UTF-8 */
};

struct addr {
    /* public, read-only after addr_parse_path() */
    char mailbox[ADDR_PATH_MAX];         /* "local@domain" as received, route dropped; "" for <> */
    char local[ADDR_LOCAL_MAX + 3];      /* local part as received (quoted form kept) */
    char domain[ADDR_DOMAIN_MAX + 1];    /* domain as received, "" for <> and <postmaster> */
    char domain_lc[ADDR_DOMAIN_MAX + 1]; /* domain with ASCII letters lowered, for routing */
    bool is_null;                        /* the null path <> */
    bool is_postmaster;                  /* <postmaster> without a domain (RFC 5321 4.5.1) */
    bool domain_literal;                 /* [192.0.2.1], [IPv6:...] or [tag:...] */
    bool utf8;                           /* has bytes >= 0x80 somewhere */
};

/*
 * Parses the path that starts at s[0] (which must be '<'), e.g. the text after
 * "MAIL FROM:" or "RCPT TO:". Accepts and ignores a source route
 * ("<@a,@b:user@c>"). `allow_null`: <> is legal (MAIL FROM only).
 * `allow_utf8`: SMTPUTF8 is in effect for the transaction.
 * On success fills *out, sets *consumed to the octets up to and including
 * '>', and returns ADDR_OK; otherwise returns a negative enum addr_status and
 * *out is unspecified. A bare "<postmaster>" (any case) is accepted when
 * !allow_null (RCPT only) and sets is_postmaster.
 */
int addr_parse_path(const char *s, size_t len, bool allow_null, bool allow_utf8, struct addr *out,
                    size_t *consumed) MXD_WUR;

/* True when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or
 * code points past U+10FFFF). */
bool addr_utf8_valid(const char *s, size_t len);

/* The postmaster: <postmaster> alone, or a local part "postmaster" (any
 * case, also quoted) at any domain (RFC 5321 4.5.1). */
bool addr_is_postmaster(const struct addr *a);

/* True when s is a syntactically valid domain name (RFC 5321 Domain, with
 * U-labels allowed when allow_utf8) or address literal. Used for EHLO. */
bool addr_domain_valid(const char *s, size_t len, bool allow_utf8);

#endif
