/* dkim_body: the length of a message body after each DKIM body
 * canonicalization (RFC 6376 3.4.3 simple, 3.4.4 relaxed), counted as
 * the message streams by, for the l= rule (RFC 6376 8.2). Pure. */
#ifndef MXD_DKIM_BODY_H
#define MXD_DKIM_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dkim_body {
    /* private */
    bool in_body, cr;
    uint64_t hdr_line;               /* octets of the header line so far */
    uint64_t s_done, s_empty, s_cur; /* simple: counted, trailing empty lines, this line */
    uint64_t r_done, r_empty, r_cur; /* relaxed: the same, this line without its WSP tail */
    bool r_ws;                       /* relaxed: WSP seen since the last other octet */
};

void dkim_body_init(struct dkim_body *b);
/* The next piece of the message (header and body, CRLF lines). */
void dkim_body_feed(struct dkim_body *b, const char *data, size_t len);
/* The canonical body lengths of the message fed so far, as if it ended. */
uint64_t dkim_body_simple(const struct dkim_body *b);
uint64_t dkim_body_relaxed(const struct dkim_body *b);

#endif
