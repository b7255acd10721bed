/* util: error codes, panic and allocation helpers shared by every module. */
#ifndef MXD_UTIL_H
#define MXD_UTIL_H

#include <stdbool.h>
#include <stddef.h>

/* Negative error codes; libuv's UV_E* values may be passed through too. */
enum mxd_err {
    MXD_OK = 0,
    MXD_EINVAL = -1001,   /* bad argument or input */
    MXD_ENOENT = -1002,   /* no such item */
    MXD_ESTORE = -1003,   /* the store could not commit or read */
    MXD_ETOOBIG = -1004,  /* over a configured limit */
    MXD_EIO = -1005,      /* file or socket I/O failed */
    MXD_ESCHEMA = -1006,  /* database schema unknown or newer than ours */
    MXD_ECONFIG = -1007,  /* configuration error */
    MXD_ECLOSING = -1008, /* the service is shutting down */
};

#define MXD_WUR __attribute__((warn_unused_result))

/* Logs the message and aborts: for OOM and broken invariants only. */
void mxd_panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Allocation that cannot fail (panics on OOM). Caller frees. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string; caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ASCII-only case-insensitive helpers (no locale). */
int ascii_casecmp(const char *a, const char *b);
int ascii_ncasecmp(const char *a, const char *b, size_t n);
char ascii_lower(char c);

/* Length of the well-formed UTF-8 character at s[0..n) (n >= 1): 1 for
 * ASCII, 0 when malformed (RFC 3629 4: no overlong forms, surrogates,
 * code points past U+10FFFF or truncated sequences). */
size_t utf8_char_len(const unsigned char *s, size_t n);

#endif
