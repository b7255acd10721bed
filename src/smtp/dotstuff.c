/* dotstuff: owns no memory; a struct dotstuff per message being received.
 * Any thread, pure. It never ends the data on anything but <CRLF>.<CRLF>
 * (RFC 5321 4.1.1.4), so no line-ending trick can make content of one
 * message into commands or a second message (SMTP smuggling,
 * CVE-2023-51764); it only reports bare CR / LF, the caller decides. It
 * does not check line lengths (RFC 5321 4.5.3.1.6 is a minimum to accept). */
#include "smtp/dotstuff.h"

#include <string.h>

enum {
    DS_LINE_START, /* after CRLF (or at the start): a '.' here is special */
    DS_TEXT,       /* inside a line */
    DS_CR,         /* after a CR inside a line */
    DS_DOT,        /* after CRLF "." */
    DS_DOT_CR,     /* after CRLF "." CR */
};

void
dotstuff_init(struct dotstuff *d)
{
    d->bare = false;
    d->state = DS_LINE_START;
}

/* Advances the state over one octet that is content; returns the next state. */
static int
dotstuff_step(struct dotstuff *d, char c)
{
    switch (c) {
    case '\r':
        return DS_CR;
    case '\n':
        d->bare = true; /* LF not preceded by CR */
        return DS_TEXT;
    default:
        return DS_TEXT;
    }
}

enum dotstuff_result
dotstuff_next(struct dotstuff *d, const char *in, size_t len, size_t *consumed, const char **out,
              size_t *outlen)
{
    size_t i = 0;
    size_t start = 0;

    *out = in;
    *outlen = 0;
    while (i < len) {
        char c = in[i];

        switch (d->state) {
        case DS_LINE_START:
            if (c == '.') {
                /* The dot is never content: either it starts the
                 * terminator or it was stuffed. End the span before it. */
                d->state = DS_DOT;
                if (i > start) {
                    *out = in + start;
                    *outlen = i - start;
                    *consumed = i + 1;
                    return DOTSTUFF_SPAN;
                }
                start = i + 1;
                i++;
                continue;
            }
            d->state = dotstuff_step(d, c);
            break;
        case DS_TEXT: {
            /* Most octets: skip to the next CR or LF in two memchr passes. */
            const char *cr = memchr(in + i, '\r', len - i);
            size_t end = cr != NULL ? (size_t)(cr - in) : len;
            const char *lf = memchr(in + i, '\n', end - i);

            if (lf != NULL) {
                d->bare = true; /* LF not preceded by CR; still inside a line */
                i = (size_t)(lf - in) + 1;
            } else if (cr != NULL) {
                d->state = DS_CR;
                i = end + 1;
            } else {
                i = len;
            }
            continue;
        }
        case DS_CR:
            if (c == '\n') {
                d->state = DS_LINE_START;
            } else {
                d->bare = true; /* CR not followed by LF */
                d->state = dotstuff_step(d, c);
            }
            break;
        case DS_DOT:
            if (c == '\r') {
                /* Maybe the terminator; hold the CR back from content. */
                d->state = DS_DOT_CR;
                start = i + 1;
                i++;
                continue;
            }
            d->state = dotstuff_step(d, c);
            break;
        case DS_DOT_CR:
            if (c == '\n') {
                d->state = DS_LINE_START;
                *consumed = i + 1;
                return DOTSTUFF_END;
            }
            /* "." CR then something else: a bare CR. The held-back CR is
             * dropped; the message is refused for it anyway. */
            d->bare = true;
            d->state = dotstuff_step(d, c);
            break;
        }
        i++;
    }
    *consumed = len;
    if (d->state == DS_DOT_CR || len == start)
        return DOTSTUFF_NEED;
    *out = in + start;
    *outlen = len - start;
    return DOTSTUFF_SPAN;
}
