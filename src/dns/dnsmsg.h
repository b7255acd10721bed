/* dnsmsg: reading MX, A, AAAA, PTR, TXT and raw (TLSA) records out of a DNS reply (pure:
 * bytes in, records out; no sockets, no resolver state). */
#ifndef MXD_DNSMSG_H
#define MXD_DNSMSG_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>

#include "base/util.h"
#include "dns/mx.h"

/*
 * Appends the MX records in the answer section of ans[0..len) to *hosts
 * (realloc'd; caller frees) and *n. RFC 7505 null MX records (".") are not
 * added but counted in *null_mx; other records (the CNAME that led to the
 * MX records) are skipped. Returns 0, or MXD_EIO when the reply is
 * malformed (what was appended so far stays).
 */
int dnsmsg_mx(const unsigned char *ans, size_t len, struct mx_host **hosts, size_t *n,
              size_t *null_mx) MXD_WUR;

/*
 * Appends the A (want_aaaa false) or AAAA records in the answer section of
 * ans[0..len) to addrs[*naddrs..max) as sockaddrs with the given port.
 * Returns 0, or MXD_EIO when the reply is malformed or a record has the
 * wrong length.
 */
int dnsmsg_addrs(const unsigned char *ans, size_t len, bool want_aaaa, unsigned short port,
                 struct sockaddr_storage *addrs, size_t *naddrs, size_t max) MXD_WUR;

#define DNSMSG_NAME_MAX 256 /* a domain name in presentation format, NUL included */

/*
 * Appends the names of the PTR records in the answer section of ans[0..len)
 * to names[*n..max) (lower-cased, no trailing dot); other records are
 * skipped, names past max dropped. Returns 0, or MXD_EIO when the reply is
 * malformed.
 */
int dnsmsg_ptr(const unsigned char *ans, size_t len, char (*names)[DNSMSG_NAME_MAX], size_t *n,
               size_t max) MXD_WUR;

/* One TXT record: its character-strings concatenated, NUL-terminated
 * (txt[len] == '\0'); borrowed for the call. */
typedef void (*dnsmsg_txt_fn)(void *arg, const char *txt, size_t len);

/*
 * Calls fn for each TXT record (class IN) in the answer section of
 * ans[0..len), in order; other records (the CNAME that led to them) are
 * skipped. Returns 0, or MXD_EIO when the reply is malformed (fn may have
 * run for the records before the damage).
 */
int dnsmsg_txt(const unsigned char *ans, size_t len, dnsmsg_txt_fn fn, void *arg) MXD_WUR;

/* One record's RDATA, borrowed for the call. */
typedef void (*dnsmsg_rdata_fn)(void *arg, const unsigned char *rdata, size_t len);

/*
 * Calls fn with the RDATA of each record of rrtype (class IN) in the
 * answer section of ans[0..len), in order (TLSA records for DANE); others
 * are skipped. Returns 0, or MXD_EIO when the reply is malformed.
 */
int dnsmsg_rdata(const unsigned char *ans, size_t len, int rrtype, dnsmsg_rdata_fn fn,
                 void *arg) MXD_WUR;

#endif
