/* dmarc_record: checks a DMARC policy record by RFC 7489 6.3 and the ABNF
 * of 6.4, and says what policy it asks for (6.6.3, 6.6.4).
 *
 * libopendmarc 1.4 is lax where RFC 7489 is exact: it takes "p=r" or
 * "p=rej" for reject, a version tag anywhere in the record and in any
 * case, and it ignores pct=. So dmarc.c hands it only records this file
 * accepted, rewritten with the tags it decides with (dmarc_record_format),
 * and applies pct= itself. Owns nothing; pure, any thread; returns 0 or
 * MXD_EINVAL. It does not look records up or parse report URIs beyond
 * their syntax. */
#include "check/dmarc_record.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"

#define DMARC_P_NAME(e, s) s,
static const char *const policy_names[] = {DMARC_POLICIES(DMARC_P_NAME)};
#undef DMARC_P_NAME

const char *
dmarc_policy_name(enum dmarc_policy p)
{
    return (unsigned)p < sizeof(policy_names) / sizeof(policy_names[0]) ? policy_names[p] : "?";
}

/* RFC 5234 WSP */
static bool
wsp(char c)
{
    return c == ' ' || c == '\t';
}

static bool
alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t
skip_wsp(const char *s, size_t len, size_t i)
{
    while (i < len && wsp(s[i]))
        i++;
    return i;
}

/* dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31: the tag
 * name is case-insensitive (an ABNF string), the value exact (6.3: "MUST
 * match precisely"). Returns the offset after it, or 0. */
static size_t
version_end(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || (s[0] != 'v' && s[0] != 'V'))
        return 0;
    i = skip_wsp(s, len, 1);
    if (i >= len || s[i] != '=')
        return 0;
    i = skip_wsp(s, len, i + 1);
    if (len - i < 6 || memcmp(s + i, "DMARC1", 6) != 0)
        return 0;
    return i + 6;
}

bool
dmarc_record_is_dmarc(const char *txt, size_t len)
{
    size_t i = version_end(txt, len);

    /* then the end, or dmarc-sep (*WSP ";"): "v=DMARC10" is not DMARC1 */
    if (i == 0)
        return false;
    i = skip_wsp(txt, len, i);
    return i == len || txt[i] == ';';
}

/* A value of the ABNF's alternatives: case-insensitive, whole. */
static bool
word_is(const char *v, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(v, word, n) == 0;
}

static enum dmarc_policy
policy_of(const char *v, size_t n)
{
    if (word_is(v, n, "none"))
        return DMARC_P_NONE;
    if (word_is(v, n, "quarantine"))
        return DMARC_P_QUARANTINE;
    if (word_is(v, n, "reject"))
        return DMARC_P_REJECT;
    return DMARC_P_UNSET;
}

/* dmarc-percent = "pct" *WSP "=" *WSP 1*3DIGIT, 0 to 100 (6.3). */
static bool
pct_of(const char *v, size_t n, unsigned *out)
{
    unsigned x = 0;

    if (n == 0 || n > 3)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!digit(v[i]))
            return false;
        x = x * 10 + (unsigned)(v[i] - '0');
    }
    if (x > 100)
        return false;
    *out = x;
    return true;
}

/* dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ], a list split
 * by commas (6.4): true when one of them has a URI scheme (RFC 3986 3.1)
 * followed by something. Reports are not sent; only step 6.1 asks. */
static bool
rua_valid(const char *v, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t start = skip_wsp(v, n, i), j = start;

        if (j < n && alpha(v[j])) {
            while (j < n &&
                   (alpha(v[j]) || digit(v[j]) || v[j] == '+' || v[j] == '-' || v[j] == '.'))
                j++;
            if (j + 1 < n && v[j] == ':' && v[j + 1] != ',' && !wsp(v[j + 1]))
                return true;
        }
        while (j < n && v[j] != ',')
            j++;
        i = j + 1;
    }
    return false;
}

struct tag {
    const char *name, *value;
    size_t nlen, vlen;
};

/* dmarc-sep separated tag *WSP "=" *WSP value; false for a part that is
 * no tag (ignored with the unknown tags, 6.3). */
static bool
tag_split(const char *s, size_t len, struct tag *t)
{
    size_t i = skip_wsp(s, len, 0), end = len;

    t->name = s + i;
    while (i < len && (alpha(s[i]) || digit(s[i]) || s[i] == '_'))
        i++;
    t->nlen = (size_t)(s + i - t->name);
    i = skip_wsp(s, len, i);
    if (t->nlen == 0 || i >= len || s[i] != '=')
        return false;
    i = skip_wsp(s, len, i + 1);
    while (end > i && wsp(s[end - 1]))
        end--;
    t->value = s + i;
    t->vlen = end - i;
    return true;
}

static void
tag_apply(const struct tag *t, struct dmarc_record *r, bool *p_bad, bool *sp_bad)
{
    if (word_is(t->name, t->nlen, "p")) {
        r->p = policy_of(t->value, t->vlen);
        *p_bad = r->p == DMARC_P_UNSET;
    } else if (word_is(t->name, t->nlen, "sp")) {
        r->sp = policy_of(t->value, t->vlen);
        *sp_bad = r->sp == DMARC_P_UNSET;
    } else if (word_is(t->name, t->nlen, "adkim")) {
        r->adkim_strict = word_is(t->value, t->vlen, "s");
    } else if (word_is(t->name, t->nlen, "aspf")) {
        r->aspf_strict = word_is(t->value, t->vlen, "s");
    } else if (word_is(t->name, t->nlen, "pct")) {
        if (!pct_of(t->value, t->vlen, &r->pct))
            r->pct = 100;
    } else if (word_is(t->name, t->nlen, "rua")) {
        r->rua = rua_valid(t->value, t->vlen);
    }
}

int
dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *out, const char **why)
{
    struct dmarc_record r = {.pct = 100};
    bool p_bad = true, sp_bad = false;
    size_t i = version_end(txt, len);

    *why = NULL;
    if (i == 0 || !dmarc_record_is_dmarc(txt, len)) {
        *why = "not a DMARC1 record";
        return MXD_EINVAL;
    }
    while (i < len) {
        const char *semi;
        size_t end;
        struct tag t;

        i = skip_wsp(txt, len, i);
        if (i < len && txt[i] == ';')
            i++;
        semi = memchr(txt + i, ';', len - i);
        end = semi != NULL ? (size_t)(semi - txt) : len;
        if (tag_split(txt + i, end - i, &t))
            tag_apply(&t, &r, &p_bad, &sp_bad);
        i = end;
    }
    if (p_bad || sp_bad) {
        /* RFC 7489 6.6.3 step 6 */
        if (!r.rua) {
            *why = p_bad ? "no valid p= (RFC 7489 6.6.3)" : "invalid sp= (RFC 7489 6.6.3)";
            return MXD_EINVAL;
        }
        r.p = DMARC_P_NONE;
        r.sp = DMARC_P_UNSET;
    }
    *out = r;
    return 0;
}

void
dmarc_record_format(const struct dmarc_record *r, char *buf, size_t size)
{
    int n = snprintf(buf, size, "v=DMARC1; p=%s; adkim=%c; aspf=%c", dmarc_policy_name(r->p),
                     r->adkim_strict ? 's' : 'r', r->aspf_strict ? 's' : 'r');

    if (r->sp != DMARC_P_UNSET && n > 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, "; sp=%s", dmarc_policy_name(r->sp));
}

enum dmarc_policy
dmarc_record_policy(const struct dmarc_record *r, bool subdomain, unsigned sample)
{
    enum dmarc_policy p = subdomain && r->sp != DMARC_P_UNSET ? r->sp : r->p;

    /* RFC 7489 6.6.4: outside the sample, the next policy down */
    if (sample >= r->pct && p == DMARC_P_REJECT)
        return DMARC_P_QUARANTINE;
    if (sample >= r->pct && p == DMARC_P_QUARANTINE)
        return DMARC_P_NONE;
    return p;
}
