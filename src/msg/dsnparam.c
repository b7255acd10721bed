/* dsnparam: parses and formats the RFC 3461 DSN parameters of MAIL (RET,
 * ENVID) and RCPT (NOTIFY, ORCPT), and xtext. Owns nothing; any thread,
 * pure (no I/O, no allocation). Returns 0 or MXD_EINVAL, and writes its
 * output only on success; a value over its length limit is a syntax
 * error, like any other. It does not decide whether a DSN is due (the
 * store does, with the stored bits) and does not check that an ORCPT
 * address is a valid mailbox: RFC 3461 4.2 has it passed on as given. */
#include "msg/dsnparam.h"

#include <stdio.h>
#include <string.h>

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* RFC 3461 4: hexchar is upper case */
}

int
dsn_xtext_decode(const char *s, size_t n, char *out, size_t size, size_t *outlen)
{
    size_t i, o = 0;

    if (size == 0)
        return MXD_EINVAL;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '+') {
            int hi, lo;

            if (n - i < 3 || (hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0)
                return MXD_EINVAL;
            c = (unsigned char)(hi * 16 + lo);
            if (c < 0x20 || c > 0x7e)
                return MXD_EINVAL;
            i += 2;
        } else if (c < 0x21 || c > 0x7e || c == '=') {
            return MXD_EINVAL;
        }
        if (o + 1 >= size)
            return MXD_EINVAL;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    return 0;
}

size_t
dsn_xtext_encode(const char *s, size_t n, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    if (n == 0 || size == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x21 && c <= 0x7e && c != '+' && c != '=') {
            if (o + 1 >= size)
                return 0;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= size)
                return 0;
            out[o++] = '+';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return o;
}

static bool
word_is(const char *s, size_t n, const char *w)
{
    return n == strlen(w) && ascii_ncasecmp(s, w, n) == 0;
}

int
dsn_notify_parse(const char *s, size_t n, unsigned *out)
{
    unsigned bits = 0;
    size_t i = 0;

    if (word_is(s, n, "NEVER")) {
        *out = DSN_NOTIFY_NEVER;
        return 0;
    }
    /* RFC 3461 4.1: NEVER, or one or more of SUCCESS, FAILURE, DELAY */
    while (i <= n) {
        size_t e = i;
        unsigned bit;

        while (e < n && s[e] != ',')
            e++;
        if (word_is(s + i, e - i, "SUCCESS"))
            bit = DSN_NOTIFY_SUCCESS;
        else if (word_is(s + i, e - i, "FAILURE"))
            bit = DSN_NOTIFY_FAILURE;
        else if (word_is(s + i, e - i, "DELAY"))
            bit = DSN_NOTIFY_DELAY;
        else
            return MXD_EINVAL; /* NEVER in a list, empty item, unknown word */
        if (bits & bit)
            return MXD_EINVAL;
        bits |= bit;
        i = e + 1;
    }
    *out = bits;
    return 0;
}

int
dsn_ret_parse(const char *s, size_t n, enum dsn_ret *out)
{
    if (word_is(s, n, "FULL"))
        *out = DSN_RET_FULL;
    else if (word_is(s, n, "HDRS"))
        *out = DSN_RET_HDRS;
    else
        return MXD_EINVAL;
    return 0;
}

int
dsn_envid_parse(const char *s, size_t n, char *out, size_t size)
{
    char tmp[DSN_ENVID_MAX + 1];

    if (n == 0 || n > DSN_ENVID_MAX || dsn_xtext_decode(s, n, tmp, sizeof(tmp), NULL) != 0 ||
        strlen(tmp) >= size)
        return MXD_EINVAL;
    memcpy(out, tmp, strlen(tmp) + 1);
    return 0;
}

/* RFC 5322 3.2.3 atext */
static bool
is_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* RFC 6533 3 utf-8-addr-xtext: QCHAR (printable ASCII but '+' and '=',
 * or UTF-8) or "\x{HEX}"; kept as sent. */
static bool
utf8_xtext_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x80) {
            size_t k = utf8_char_len((const unsigned char *)s + i, n - i);

            if (k == 0)
                return false;
            i += k;
        } else if (c < 0x21 || c > 0x7e || c == '+' || c == '=') {
            return false;
        } else if (c == '\\') {
            size_t h = i + 3;

            if (n - i < 5 || s[i + 1] != 'x' || s[i + 2] != '{')
                return false;
            while (h < n && hexval(s[h]) >= 0)
                h++;
            if (h == i + 3 || h - i - 3 > 6 || h == n || s[h] != '}')
                return false;
            i = h + 1;
        } else {
            i++;
        }
    }
    return n > 0;
}

int
dsn_orcpt_parse(const char *s, size_t n, char *out, size_t size)
{
    char tmp[DSN_ORCPT_MAX + 1];
    size_t t = 0, alen = 0;

    if (n == 0 || n > DSN_ORCPT_MAX)
        return MXD_EINVAL;
    while (t < n && s[t] != ';')
        t++;
    if (t == 0 || t == n || t > DSN_ADDRTYPE_MAX)
        return MXD_EINVAL;
    for (size_t i = 0; i < t; i++) {
        if (!is_atext((unsigned char)s[i]))
            return MXD_EINVAL;
        tmp[i] = ascii_lower(s[i]);
    }
    tmp[t] = ';';
    if (t == 5 && memcmp(tmp, "utf-8", 5) == 0) {
        if (!utf8_xtext_ok(s + t + 1, n - t - 1))
            return MXD_EINVAL;
        memcpy(tmp + t + 1, s + t + 1, n - t - 1);
        alen = n - t - 1;
        tmp[t + 1 + alen] = '\0';
    } else if (dsn_xtext_decode(s + t + 1, n - t - 1, tmp + t + 1, sizeof(tmp) - t - 1, &alen) !=
                   0 ||
               alen == 0) {
        return MXD_EINVAL;
    }
    if (t + 1 + alen >= size)
        return MXD_EINVAL;
    memcpy(out, tmp, t + 1 + alen + 1);
    return 0;
}

size_t
dsn_orcpt_format(const char *stored, const char *rcpt, char *out, size_t size)
{
    const char *semi = stored != NULL ? strchr(stored, ';') : NULL;
    const char *type = "rfc822", *a = rcpt;
    size_t tl = 6, enc;
    int n;

    if (semi != NULL && semi != stored && semi[1] != '\0') {
        type = stored;
        tl = (size_t)(semi - stored);
        a = semi + 1;
    } else {
        for (const char *p = rcpt; *p != '\0'; p++)
            if ((unsigned char)*p >= 0x80) {
                type = "utf-8"; /* RFC 6533 3 */
                tl = 5;
                break;
            }
    }
    n = snprintf(out, size, "%.*s;", (int)tl, type);
    if (n < 0 || (size_t)n >= size)
        return 0;
    if (tl == 5 && memcmp(type, "utf-8", 5) == 0) {
        size_t al = strlen(a);

        if ((size_t)n + al >= size)
            return 0;
        memcpy(out + n, a, al + 1);
        return (size_t)n + al;
    }
    enc = dsn_xtext_encode(a, strlen(a), out + n, size - (size_t)n);
    return enc == 0 ? 0 : (size_t)n + enc;
}

const char *
dsn_notify_name(unsigned bits)
{
    static const char *const names[8] = {
        "",      "SUCCESS",       "FAILURE",       "SUCCESS,FAILURE",
        "DELAY", "SUCCESS,DELAY", "FAILURE,DELAY", "SUCCESS,FAILURE,DELAY",
    };

    if (bits & DSN_NOTIFY_NEVER)
        return "NEVER";
    return names[(bits >> 1) & 7];
}
