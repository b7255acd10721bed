/* dotstuff: DATA framing (RFC 5321 4.1.1.4, 4.5.2): dot-unstuffing and
 * end-of-data detection, with bare CR / bare LF detection (pure). */
#ifndef MXD_DOTSTUFF_H
#define MXD_DOTSTUFF_H

#include <stdbool.h>
#include <stddef.h>

struct dotstuff {
    /* read-only */
    bool bare; /* a CR not followed by LF, or an LF not preceded by CR, was seen */
    /* private */
    int state;
};

enum dotstuff_result {
    DOTSTUFF_NEED = 0, /* all input consumed; feed more */
    DOTSTUFF_SPAN = 1, /* *out and *outlen hold message content (may be empty) */
    DOTSTUFF_END = 2,  /* <CRLF>.<CRLF> seen; *consumed includes it */
};

/* Starts a new message: the CRLF that ended the DATA command counts as the
 * start of the first line. */
void dotstuff_init(struct dotstuff *d);

/*
 * Scans in[0..len). Returns DOTSTUFF_SPAN with the next run of content
 * (a slice of in, dot-unstuffed: a leading '.' of a line is never content),
 * DOTSTUFF_END when the terminator was seen, or DOTSTUFF_NEED. *consumed is
 * how many octets of in were used; call again with the rest. Only
 * <CRLF>.<CRLF> ends the data: <LF>.<LF>, <CR>.<CR> and the mixed forms are
 * content that sets d->bare (the caller refuses such a message).
 */
enum dotstuff_result dotstuff_next(struct dotstuff *d, const char *in, size_t len, size_t *consumed,
                                   const char **out, size_t *outlen);

#endif
