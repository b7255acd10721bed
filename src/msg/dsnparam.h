/* dsnparam: the RFC 3461 DSN extension's parameters (NOTIFY, ORCPT, RET,
 * ENVID) and their xtext encoding (pure). */
#ifndef MXD_DSNPARAM_H
#define MXD_DSNPARAM_H

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"

/* NOTIFY bits (RFC 3461 4.1); 0: the parameter was not given, which means
 * FAILURE and DELAY (4.1: "the MTA's default", Postfix's too). */
#define DSN_NOTIFY_NEVER   1u
#define DSN_NOTIFY_SUCCESS 2u
#define DSN_NOTIFY_FAILURE 4u
#define DSN_NOTIFY_DELAY   8u

/* RET (RFC 3461 4.3); NONE: not given. */
enum dsn_ret { DSN_RET_NONE, DSN_RET_FULL, DSN_RET_HDRS };

#define DSN_ENVID_MAX    100 /* RFC 3461 4.4: at most 100 characters (encoded) */
#define DSN_ORCPT_MAX    500 /* RFC 3461 4.2: at most 500 characters (encoded) */
#define DSN_ADDRTYPE_MAX 32  /* "rfc822", "utf-8" */

/* Decodes xtext s[0..n) (RFC 3461 4: xchar 0x21-0x7e but '+' and '=',
 * or "+" two upper-case hex digits) into out (size octets, NUL-terminated;
 * *outlen its length). A decoded octet must be printable ASCII (0x20-0x7e).
 * 0, or MXD_EINVAL for bad syntax or no room. */
int dsn_xtext_decode(const char *s, size_t n, char *out, size_t size, size_t *outlen) MXD_WUR;

/* Encodes s[0..n) as xtext into out (NUL-terminated); returns its length,
 * or 0 when it does not fit (or n is 0). */
size_t dsn_xtext_encode(const char *s, size_t n, char *out, size_t size);

/* NOTIFY=value: "NEVER" alone, or a comma list of SUCCESS, FAILURE, DELAY,
 * each once, any case. *out gets the bits. 0 or MXD_EINVAL. */
int dsn_notify_parse(const char *s, size_t n, unsigned *out) MXD_WUR;

/* RET=value: FULL or HDRS, any case. 0 or MXD_EINVAL. */
int dsn_ret_parse(const char *s, size_t n, enum dsn_ret *out) MXD_WUR;

/* ENVID=value: 1-100 xtext characters, decoded into out (at least
 * DSN_ENVID_MAX + 1 octets). 0 or MXD_EINVAL. */
int dsn_envid_parse(const char *s, size_t n, char *out, size_t size) MXD_WUR;

/* ORCPT=value: addr-type ";" xtext (RFC 3461 4.2), at most 500 characters;
 * addr-type an atom (RFC 5322 3.2.3). For the type "utf-8" (RFC 6533 3)
 * the address may also hold UTF-8 and "\x{HEX}" escapes: kept as sent.
 * out gets "type;decoded-address" with the type lower-cased (at least
 * DSN_ORCPT_MAX + 1 octets). 0 or MXD_EINVAL. */
int dsn_orcpt_parse(const char *s, size_t n, char *out, size_t size) MXD_WUR;

/* The ORCPT value to send for a stored "type;address" (from
 * dsn_orcpt_parse), or "rfc822;" + rcpt when stored is NULL or "" (what
 * Postfix sends when the client gave none; "utf-8" for a non-ASCII
 * address). Writes into out; 0 when it does not fit. */
size_t dsn_orcpt_format(const char *stored, const char *rcpt, char *out, size_t size);

/* "SUCCESS,FAILURE" etc. for bits (NEVER alone); "" for 0. */
const char *dsn_notify_name(unsigned bits);

#endif
