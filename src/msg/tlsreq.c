/* tlsreq: finds "TLS-Required: No" (RFC 8689 5) in a message's header.
 * Owns nothing; pure, any thread. Streaming: at most 64 octets of a line
 * are kept, enough for the field's name and value. It does not check the
 * rest of the header's syntax, nor fields folded over several lines
 * beyond the value's first line (RFC 8689 5: the value is "No" alone). */
#include "msg/tlsreq.h"

#include <string.h>
#include <strings.h>

#define NAME "tls-required:"

/* A complete line (or its first 64 octets): a field's first line, or a
 * continuation of the previous field. */
static void
line_end(struct tlsreq_scan *t)
{
    const char *v;
    size_t n, nl = strlen(NAME);

    if (t->len == 0) {
        t->done = true; /* the empty line: the body follows */
        return;
    }
    if (t->line[0] == ' ' || t->line[0] == '\t')
        return; /* a folded line: the value was on the field's first line */
    if (t->len < nl || strncasecmp(t->line, NAME, nl) != 0)
        return;
    v = t->line + nl;
    n = t->len - nl;
    while (n > 0 && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    /* ABNF strings are case-insensitive (RFC 5234 2.3) */
    if (n == 2 && strncasecmp(v, "no", 2) == 0)
        t->no = true;
}

void
tlsreq_scan_feed(struct tlsreq_scan *t, const char *data, size_t len)
{
    for (size_t i = 0; i < len && !t->done; i++) {
        char c = data[i];

        if (c == '\n') {
            if (!t->skip) {
                if (t->len > 0 && t->line[t->len - 1] == '\r')
                    t->len--;
                line_end(t);
            }
            t->len = 0;
            t->skip = false;
            continue;
        }
        if (t->skip)
            continue;
        if (t->len >= sizeof(t->line)) {
            t->skip = true; /* too long to be "TLS-Required: No" */
            continue;
        }
        t->line[t->len++] = c;
    }
}

void
tlsreq_scan_finish(struct tlsreq_scan *t)
{
    if (!t->done && !t->skip && t->len > 0)
        line_end(t);
    t->done = true;
}
