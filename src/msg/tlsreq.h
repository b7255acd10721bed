/* tlsreq: the "TLS-Required:" header field of RFC 8689 5 (pure): whether
 * a message's header says "TLS-Required: No", fed in pieces. */
#ifndef MXD_TLSREQ_H
#define MXD_TLSREQ_H

#include <stdbool.h>
#include <stddef.h>

/* Zero it to start (= {0}). Fields are private but for no. */
struct tlsreq_scan {
    bool done;    /* the empty line ending the header was seen */
    bool no;      /* a "TLS-Required: No" field was seen (public) */
    bool skip;    /* the rest of this line does not matter */
    unsigned len; /* octets in line[] */
    char line[64];
};

/* The next octets of the message (header first; CRLF or bare LF lines). */
void tlsreq_scan_feed(struct tlsreq_scan *t, const char *data, size_t len);
/* End of input: a field on a last line without its line end counts. */
void tlsreq_scan_finish(struct tlsreq_scan *t);

#endif
