/* util: owns nothing. Any thread. Allocation failure and broken invariants
 * end the process through mxd_panic(); durability comes from
 * commit-before-250, not from surviving OOM. */
#include "base/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

void
mxd_panic(const char *fmt, ...)
{
    va_list ap;

    log_flush(); /* the loop thread's lines of this iteration come first */
    fputs("err - mxd panic ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        mxd_panic("out of memory (%zu bytes)", n);
    return p;
}

void *
xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

    if (p == NULL)
        mxd_panic("out of memory (%zu x %zu bytes)", nmemb, size);
    return p;
}

void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL)
        mxd_panic("out of memory (%zu bytes)", n);
    return q;
}

char *
xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *
xasprintf(const char *fmt, ...)
{
    char small[256];
    va_list ap;
    int n;
    char *p;

    /* Formats once into a stack buffer; only long results format twice. */
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        mxd_panic("xasprintf: bad format");
    if ((size_t)n < sizeof(small))
        return xstrndup(small, (size_t)n);
    p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

char
ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
}

int
ascii_ncasecmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)ascii_lower(a[i]);
        unsigned char y = (unsigned char)ascii_lower(b[i]);

        if (x != y)
            return x < y ? -1 : 1;
        if (x == '\0')
            return 0;
    }
    return 0;
}

int
ascii_casecmp(const char *a, const char *b)
{
    return ascii_ncasecmp(a, b, (size_t)-1);
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629 4), or 0. */
size_t
utf8_char_len(const unsigned char *s, size_t n)
{
    size_t k, i;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        k = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        k = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        k = 4;
    else
        return 0;
    if (k > n)
        return 0;
    for (i = 1; i < k; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
        return 0; /* overlong, surrogate or beyond U+10FFFF */
    return k;
}
