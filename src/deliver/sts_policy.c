/* sts_policy: the MTA-STS (RFC 8461) TXT record and policy parsers and the
 * MX pattern match. Pure: no I/O, no clock, no allocation; called on the
 * loop thread by deliver_sts.c and by tests and fuzzers. Returns
 * described in sts_policy.h; every refusal says why, with the line.
 * Does not: fetch anything, cache, or decide what a policy means for a
 * delivery (deliver_sts.c does). */
#include "deliver/sts_policy.h"

#include <stdio.h>
#include <string.h>

#define STS_MODE_NAME(e, s) s,
static const char *const mode_names[] = {STS_MODES(STS_MODE_NAME)};

const char *
sts_mode_name(enum sts_mode m)
{
    return (unsigned)m < sizeof(mode_names) / sizeof(mode_names[0]) ? mode_names[m] : "unknown";
}

static bool
is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool
is_wsp(int c)
{
    return c == ' ' || c == '\t';
}

static int
lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* A printable, quoted copy of s[0..n) for a reason ("...", shortened). */
static const char *
show(char *buf, size_t size, const char *s, size_t n)
{
    size_t o = 0;

    for (size_t i = 0; i < n && o + 5 < size; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
    }
    if (o >= size)
        o = size - 1;
    buf[o] = '\0';
    return buf;
}

/* ---- the TXT record (RFC 8461 3.1) ------------------------------------- */

int
sts_txt_parse(const char *txt, size_t len, char *id, char *why, size_t why_size)
{
    static const char v[] = "v=STSv1;";
    size_t i = sizeof(v) - 1;
    bool have_id = false;
    char b[80];

    id[0] = '\0';
    if (len < i || memcmp(txt, v, i) != 0)
        return 0; /* not an MTA-STS record: discarded */
    while (i < len) {
        size_t ks, ke, vs, ve;

        while (i < len && is_wsp(txt[i]))
            i++;
        if (i == len)
            break;
        ks = i;
        while (i < len && txt[i] != '=' && txt[i] != ';')
            i++;
        ke = i;
        if (i == len || txt[i] != '=' || ke == ks) {
            snprintf(why, why_size, "TXT record: field \"%s\" is not name=value",
                     show(b, sizeof(b), txt + ks, ke - ks));
            return -1;
        }
        vs = ++i;
        while (i < len && txt[i] != ';')
            i++;
        ve = i;
        while (ve > vs && is_wsp(txt[ve - 1]))
            ve--;
        if (i < len)
            i++; /* the ';' */
        if (ke - ks == 2 && memcmp(txt + ks, "id", 2) == 0 && !have_id) {
            size_t n = ve - vs;

            if (n == 0 || n > STS_ID_MAX) {
                snprintf(why, why_size, "TXT record: id must be 1 to 32 letters or digits");
                return -1;
            }
            for (size_t k = vs; k < ve; k++) {
                if (!is_alpha(txt[k]) && !is_digit(txt[k])) {
                    snprintf(why, why_size, "TXT record: id \"%s\" is not letters and digits",
                             show(b, sizeof(b), txt + vs, n));
                    return -1;
                }
            }
            memcpy(id, txt + vs, n);
            id[n] = '\0';
            have_id = true;
        }
    }
    if (!have_id) {
        snprintf(why, why_size, "TXT record: no id field");
        return -1;
    }
    return 1;
}

/* ---- the policy (RFC 8461 3.2) ----------------------------------------- */

/* An mx pattern: ["*."] Domain (RFC 5321 sub-domains), lower-cased into
 * out (a trailing dot dropped). False with why when it is not one. */
static bool
mx_pattern(const char *s, size_t n, char *out, char *why, size_t why_size, unsigned line)
{
    size_t o = 0, label = 0;
    char b[80];

    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n >= 2 && s[0] == '*' && s[1] == '.') {
        out[o++] = '*';
        out[o++] = '.';
        s += 2;
        n -= 2;
    }
    if (n == 0 || o + n >= STS_NAME_MAX)
        goto bad;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];

        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                goto bad;
            label = 0;
        } else if (is_alpha(c) || is_digit(c) || (c == '-' && label > 0)) {
            if (++label > 63)
                goto bad;
        } else {
            goto bad; /* a '*' elsewhere than the leftmost label, or junk */
        }
        out[o++] = (char)lower(c);
    }
    if (label == 0 || s[n - 1] == '-')
        goto bad;
    out[o] = '\0';
    return true;
bad:
    snprintf(why, why_size,
             "line %u: mx: \"%s\" is not a host name (a wildcard only as the whole leftmost "
             "label: *.example.com)",
             line, show(b, sizeof(b), s, n));
    return false;
}

enum key { K_VERSION, K_MODE, K_MAX_AGE, K_MX, K_OTHER };

/* One "key: value" line (without its line end). 0, or MXD_EINVAL with why. */
static int
policy_line(const char *s, size_t n, unsigned line, struct sts_policy *p, bool *seen, char *why,
            size_t why_size)
{
    static const char *const keys[] = {"version", "mode", "max_age", "mx"};
    size_t i = 0, ks, kn, vs;
    enum key k = K_OTHER;
    char b[80];

    while (i < n && is_wsp(s[i]))
        i++;
    ks = i;
    while (i < n && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '_' || s[i] == '-' || s[i] == '.'))
        i++;
    kn = i - ks;
    if (kn == 0 || kn > 32 || i == n || s[i] != ':') {
        snprintf(why, why_size, "line %u: \"%s\" is not \"key: value\"", line,
                 show(b, sizeof(b), s, n));
        return MXD_EINVAL;
    }
    i++;
    while (i < n && is_wsp(s[i]))
        i++;
    vs = i;
    while (n > vs && is_wsp(s[n - 1]))
        n--;
    for (size_t c = vs; c < n; c++) {
        if ((unsigned char)s[c] < 0x20 && !is_wsp(s[c])) {
            snprintf(why, why_size, "line %u: control character in the value", line);
            return MXD_EINVAL;
        }
    }
    for (size_t e = 0; e < sizeof(keys) / sizeof(keys[0]); e++)
        if (strlen(keys[e]) == kn && memcmp(s + ks, keys[e], kn) == 0)
            k = (enum key)e;
    if (k == K_OTHER)
        return 0; /* RFC 8461 3.2: unknown fields are ignored */
    if (k != K_MX && seen[k])
        return 0; /* RFC 8461 3.2: the first instance counts */
    seen[k] = true;
    s += vs;
    n -= vs;
    switch (k) {
    case K_VERSION:
        if (n == 5 && memcmp(s, "STSv1", 5) == 0)
            return 0;
        snprintf(why, why_size, "line %u: version: \"%s\" is not STSv1", line,
                 show(b, sizeof(b), s, n));
        return MXD_EINVAL;
    case K_MODE:
        for (int m = STS_MODE_NONE; m <= STS_MODE_ENFORCE; m++) {
            if (strlen(mode_names[m]) == n && memcmp(s, mode_names[m], n) == 0) {
                p->mode = (enum sts_mode)m;
                return 0;
            }
        }
        snprintf(why, why_size, "line %u: mode: unknown value \"%s\" (enforce, testing or none)",
                 line, show(b, sizeof(b), s, n));
        return MXD_EINVAL;
    case K_MAX_AGE: {
        uint64_t v = 0;

        if (n == 0 || n > 10) {
            snprintf(why, why_size, "line %u: max_age: \"%s\" is not 1 to 10 digits", line,
                     show(b, sizeof(b), s, n));
            return MXD_EINVAL;
        }
        for (size_t c = 0; c < n; c++) {
            if (!is_digit(s[c])) {
                snprintf(why, why_size, "line %u: max_age: \"%s\" is not a number of seconds", line,
                         show(b, sizeof(b), s, n));
                return MXD_EINVAL;
            }
            v = v * 10 + (uint64_t)(s[c] - '0');
        }
        p->max_age = v > STS_MAX_AGE_MAX ? STS_MAX_AGE_MAX : (uint32_t)v;
        return 0;
    }
    case K_MX:
        if (p->nmx == STS_MX_MAX) {
            snprintf(why, why_size, "line %u: mx: more than %d patterns", line, STS_MX_MAX);
            return MXD_EINVAL;
        }
        if (!mx_pattern(s, n, p->mx[p->nmx], why, why_size, line))
            return MXD_EINVAL;
        p->nmx++;
        return 0;
    case K_OTHER:
        break;
    }
    return 0;
}

int
sts_policy_parse(const char *text, size_t len, struct sts_policy *p, char *why, size_t why_size)
{
    bool seen[K_OTHER] = {false};
    unsigned line = 0;
    size_t i = 0;

    memset(p, 0, sizeof(*p));
    why[0] = '\0';
    if (len > STS_POLICY_MAX) {
        snprintf(why, why_size, "policy larger than %d octets", STS_POLICY_MAX);
        return MXD_EINVAL;
    }
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t e = nl != NULL ? (size_t)(nl - text) : len, n = e - i;
        bool blank = true;

        line++;
        if (n > 0 && text[i + n - 1] == '\r')
            n--;
        for (size_t c = 0; c < n && blank; c++)
            blank = is_wsp(text[i + c]);
        /* Blank lines are outside the grammar but common (a final empty
         * line); they are skipped. */
        if (!blank && policy_line(text + i, n, line, p, seen, why, why_size) != 0)
            goto fail;
        i = e + 1;
    }
    if (!seen[K_VERSION])
        snprintf(why, why_size, "no version field (version: STSv1)");
    else if (!seen[K_MODE])
        snprintf(why, why_size, "no mode field");
    else if (!seen[K_MAX_AGE])
        snprintf(why, why_size, "no max_age field");
    else if (p->mode != STS_MODE_NONE && p->nmx == 0)
        snprintf(why, why_size, "no mx field (required with mode %s)", sts_mode_name(p->mode));
    else
        return 0;
fail:
    memset(p, 0, sizeof(*p));
    return MXD_EINVAL;
}

/* ---- matching (RFC 8461 4.1) ------------------------------------------- */

static bool
name_eq(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);

    if (an != bn)
        return false;
    for (size_t i = 0; i < an; i++)
        if (lower((unsigned char)a[i]) != b[i])
            return false;
    return true;
}

bool
sts_policy_match(const struct sts_policy *p, const char *host)
{
    size_t n = strlen(host);

    if (n > 0 && host[n - 1] == '.')
        n--;
    if (n == 0)
        return false;
    for (size_t i = 0; i < p->nmx; i++) {
        const char *pat = p->mx[i];

        if (pat[0] == '*' && pat[1] == '.') {
            /* exactly one label in place of the '*' */
            const char *dot = memchr(host, '.', n);

            if (dot != NULL && dot != host &&
                name_eq(dot + 1, n - (size_t)(dot + 1 - host), pat + 2))
                return true;
        } else if (name_eq(host, n, pat)) {
            return true;
        }
    }
    return false;
}
