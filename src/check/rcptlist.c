/* rcptlist: owns one packed list (a growing buffer); any single thread
 * (a lookup thread, in mxd). Pure: no I/O. Errors: MXD_EINVAL with a
 * reason; OOM panics (xmalloc). */
#include "check/rcptlist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
rcptlist_init(struct rcptlist *l)
{
    memset(l, 0, sizeof(*l));
}

void
rcptlist_free(struct rcptlist *l)
{
    free(l->buf);
    rcptlist_init(l);
}

static bool
domain_ok(const char *d, size_t n)
{
    size_t label = 0;

    if (n == 0 || d[0] == '.' || d[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];

        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_' || c >= 0x80) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

bool
rcptlist_valid(const char *s, size_t n)
{
    const char *at = NULL;

    if (n == 0 || n > RCPTLIST_ADDR_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == ',' || c == ';')
            return false;
        if (c == '@')
            at = s + i; /* the last '@' splits (a quoted local part may hold one) */
    }
    if (at == NULL || at == s + n - 1)
        return false;
    return domain_ok(at + 1, (size_t)(s + n - at - 1));
}

int
rcptlist_add(struct rcptlist *l, const char *s, size_t n)
{
    if (!rcptlist_valid(s, n))
        return MXD_EINVAL;
    if (l->n >= RCPTLIST_MAX)
        return MXD_ETOOBIG;
    if (l->len + n + 1 > l->cap) {
        l->cap = l->cap > 0 ? l->cap * 2 : 4096;
        while (l->cap < l->len + n + 1)
            l->cap *= 2;
        l->buf = xrealloc(l->buf, l->cap);
    }
    memcpy(l->buf + l->len, s, n);
    l->buf[l->len + n] = '\0';
    l->len += n + 1;
    l->n++;
    return 0;
}

static bool
is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int
rcptlist_parse(struct rcptlist *l, const char *text, size_t len, char *err, size_t errlen)
{
    size_t line = 0;

    if (len == 0) {
        snprintf(err, errlen, "empty file (a list of nobody says so in a comment line)");
        return MXD_EINVAL;
    }
    if (text[len - 1] != '\n') {
        snprintf(err, errlen, "no newline at the end (still being written?)");
        return MXD_EINVAL;
    }
    for (size_t pos = 0; pos < len;) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = (size_t)(nl - s);
        int rc;

        line++;
        pos += n + 1;
        while (n > 0 && is_blank(*s)) {
            s++;
            n--;
        }
        while (n > 0 && is_blank(s[n - 1]))
            n--;
        if (n == 0 || *s == '#')
            continue;
        if (memchr(s, '\0', n) != NULL || (rc = rcptlist_add(l, s, n)) == MXD_EINVAL) {
            snprintf(err, errlen, "line %zu: not an address or @domain", line);
            return MXD_EINVAL;
        }
        if (rc != 0) {
            snprintf(err, errlen, "line %zu: more than %u entries", line, RCPTLIST_MAX);
            return MXD_EINVAL;
        }
    }
    return 0;
}

void
rcptlist_digest(const struct rcptlist *l, char out[17])
{
    uint64_t h = 14695981039346656037ull;

    for (size_t i = 0; i < l->len; i++)
        h = (h ^ (unsigned char)l->buf[i]) * 1099511628211ull;
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}
