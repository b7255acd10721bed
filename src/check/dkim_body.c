/* dkim_body: counts a body's canonical lengths (RFC 6376 3.4.3, 3.4.4)
 * without keeping it: per line, trailing empty lines held back until a
 * line with content follows. Owns nothing; pure, any thread. It does not
 * hash (libopendkim does); dkim.c compares the lengths with l=. */
#include "check/dkim_body.h"

#include <string.h>

void
dkim_body_init(struct dkim_body *b)
{
    memset(b, 0, sizeof(*b));
}

/* A body line ends (its CRLF not counted in *_cur). */
static void
line_end(struct dkim_body *b)
{
    if (b->s_cur == 0) {
        b->s_empty += 2;
    } else {
        b->s_done += b->s_empty + b->s_cur + 2;
        b->s_empty = 0;
    }
    if (b->r_cur == 0) {
        b->r_empty += 2;
    } else {
        b->r_done += b->r_empty + b->r_cur + 2;
        b->r_empty = 0;
    }
    b->s_cur = b->r_cur = 0;
    b->r_ws = false;
}

static void
body_octet(struct dkim_body *b, char c)
{
    b->s_cur++;
    if (c == ' ' || c == '\t') {
        b->r_ws = true; /* 3.4.4: WSP runs become one SP, none at a line's end */
        return;
    }
    b->r_cur += 1 + (b->r_ws && b->r_cur > 0);
    b->r_ws = false;
}

void
dkim_body_feed(struct dkim_body *b, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = data[i];

        if (b->cr && c != '\n') { /* a CR not before LF is content */
            if (b->in_body)
                body_octet(b, '\r');
            else
                b->hdr_line++;
        }
        b->cr = c == '\r';
        if (c == '\r')
            continue;
        if (!b->in_body) {
            if (c == '\n') {
                b->in_body = b->hdr_line == 0; /* the empty line ends the header */
                b->hdr_line = 0;
            } else {
                b->hdr_line++;
            }
            continue;
        }
        if (c == '\n')
            line_end(b);
        else
            body_octet(b, c);
    }
}

uint64_t
dkim_body_simple(const struct dkim_body *b)
{
    /* 3.4.3: trailing empty lines ignored; a last line without CRLF gets
     * one; an empty body is one CRLF */
    uint64_t cur = b->s_cur + (b->cr ? 1 : 0);
    uint64_t n = b->s_done + (cur > 0 ? b->s_empty + cur + 2 : 0);

    return n == 0 ? 2 : n;
}

uint64_t
dkim_body_relaxed(const struct dkim_body *b)
{
    /* 3.4.4: the same, but an empty body stays empty */
    uint64_t cur = b->r_cur + (b->cr ? 1 + (b->r_ws && b->r_cur > 0) : 0);

    return b->r_done + (cur > 0 ? b->r_empty + cur + 2 : 0);
}
