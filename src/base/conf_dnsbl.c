/*
 * conf_dnsbl: the value parsers of dnsbl_sites and dnsbl_reply_map, and the
 * answer filter of a list (Postfix's postscreen_dnsbl_sites syntax):
 *
 *   name[=filter][*weight]    zen.example*3, bl.example=127.0.0.[2..11]*2,
 *                             wl.example=127.0.[0..255].[1..3]*-5
 *   filter: d.d.d.d, each d a number 0..255 or a set "[a;b..c;...]"
 *   key=display               secretkey.zen.dq.example=zen.example
 *
 * Owns the strings of the struct conf_dnsbl_site and conf_dnsbl_map items
 * it fills in (freed by the _free functions). Pure: no I/O, any thread.
 * Errors: 0 or MXD_EINVAL with *why a static message and nothing
 * allocated; conf.c adds the file and line. It does not know which lists
 * exist or what they return.
 */
#include <stdlib.h>
#include <string.h>

#include "base/conf.h"
#include "base/conf_value.h"

#define WEIGHT_MAX 100000

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A decimal number 0..255 at *s (advanced past it). */
static bool
octet(const char **s, unsigned *out)
{
    unsigned v = 0;
    const char *c = *s;

    if (!is_digit(*c))
        return false;
    for (; is_digit(*c); c++) {
        v = v * 10 + (unsigned)(*c - '0');
        if (v > 255 || c - *s >= 3)
            return false;
    }
    *s = c;
    *out = v;
    return true;
}

static void
set_bits(uint8_t bits[32], unsigned lo, unsigned hi)
{
    for (unsigned v = lo; v <= hi; v++)
        bits[v / 8] |= (uint8_t)(1u << (v % 8));
}

/* One octet's pattern at *s: "N" or "[N;N..M;...]". */
static bool
pattern(const char **s, uint8_t bits[32])
{
    const char *c = *s;
    unsigned lo, hi;

    if (*c != '[') {
        if (!octet(&c, &lo))
            return false;
        set_bits(bits, lo, lo);
        *s = c;
        return true;
    }
    c++;
    for (;;) {
        if (!octet(&c, &lo))
            return false;
        hi = lo;
        if (c[0] == '.' && c[1] == '.') {
            c += 2;
            if (!octet(&c, &hi) || hi < lo)
                return false;
        }
        set_bits(bits, lo, hi);
        if (*c == ']')
            break;
        if (*c++ != ';')
            return false;
    }
    *s = c + 1;
    return true;
}

static bool
parse_filter(const char *s, size_t len, uint8_t filter[4][32])
{
    const char *c = s, *end = s + len;

    memset(filter, 0, 4 * 32);
    for (int i = 0; i < 4; i++) {
        if (i > 0 && (c >= end || *c++ != '.'))
            return false;
        if (c >= end || !pattern(&c, filter[i]) || c > end)
            return false;
    }
    return c == end;
}

/* "-5", "3": a nonzero weight within +-WEIGHT_MAX. */
static bool
parse_weight(const char *s, int *out)
{
    bool neg = *s == '-';
    const char *end;
    uint64_t v;

    if (*s == '-' || *s == '+')
        s++;
    if (conf__parse_u64(s, &v, &end) < 0 || *end != '\0' || v == 0 || v > WEIGHT_MAX)
        return false;
    *out = neg ? -(int)v : (int)v;
    return true;
}

int
conf_dnsbl_site_parse(const char *s, struct conf_dnsbl_site *out, const char **why)
{
    const char *star = strrchr(s, '*'), *eq;
    size_t nlen, end;
    char name[CONF_DNSBL_NAME_MAX + 1];
    struct conf_dnsbl_site site = {.weight = 1};

    while (conf__is_space(*s))
        s++;
    end = star != NULL ? (size_t)(star - s) : strlen(s);
    eq = memchr(s, '=', end);
    nlen = eq != NULL ? (size_t)(eq - s) : end;
    while (nlen > 0 && conf__is_space(s[nlen - 1]))
        nlen--;
    if (nlen == 0) {
        *why = "missing list name";
        return MXD_EINVAL;
    }
    if (nlen > CONF_DNSBL_NAME_MAX) {
        *why = "list name longer than 180 octets";
        return MXD_EINVAL;
    }
    memcpy(name, s, nlen);
    name[nlen] = '\0';
    for (char *c = name; *c != '\0'; c++)
        *c = ascii_lower(*c);
    if (name[nlen - 1] == '.')
        name[nlen - 1] = '\0';
    if (!conf__is_hostname(name)) {
        *why = "not a valid list name";
        return MXD_EINVAL;
    }
    if (eq != NULL) {
        const char *f = eq + 1;
        size_t flen = end - (size_t)(f - s);

        while (flen > 0 && conf__is_space(*f))
            f++, flen--;
        while (flen > 0 && conf__is_space(f[flen - 1]))
            flen--;
        if (!parse_filter(f, flen, site.filter)) {
            *why = "bad answer filter (want d.d.d.d, each d a number or [a;b..c])";
            return MXD_EINVAL;
        }
        site.filtered = true;
    }
    if (star != NULL) {
        char w[16];
        size_t wl = strlen(star + 1);

        if (wl >= sizeof(w)) {
            *why = "bad weight (want a nonzero integer from -100000 to 100000)";
            return MXD_EINVAL;
        }
        memcpy(w, star + 1, wl + 1);
        if (!parse_weight(conf__trim(w), &site.weight)) {
            *why = "bad weight (want a nonzero integer from -100000 to 100000)";
            return MXD_EINVAL;
        }
    }
    site.name = xstrdup(name);
    site.display = site.name;
    *out = site;
    return 0;
}

void
conf_dnsbl_site_free(struct conf_dnsbl_site *s)
{
    if (s == NULL)
        return;
    free(s->name);
    s->name = NULL;
    s->display = NULL;
}

bool
conf_dnsbl_filter_match(const struct conf_dnsbl_site *s, const unsigned char a[4])
{
    if (!s->filtered)
        return true;
    for (int i = 0; i < 4; i++)
        if ((s->filter[i][a[i] / 8] & (1u << (a[i] % 8))) == 0)
            return false;
    return true;
}

int
conf__parse_dnsbl_site(const char *s, const void *arg, void *out, const char **why)
{
    (void)arg;
    return conf_dnsbl_site_parse(s, out, why);
}

void
conf__dnsbl_site_free(void *item)
{
    conf_dnsbl_site_free(item);
}

/* "key=display": both host names; key lower-cased. */
int
conf__parse_dnsbl_map(const char *s, const void *arg, void *out, const char **why)
{
    const char *eq = strchr(s, '=');
    struct conf_dnsbl_map *m = out;
    char *key, *display;

    (void)arg;
    if (eq == NULL) {
        *why = "want list=public-name";
        return MXD_EINVAL;
    }
    key = xstrndup(s, (size_t)(eq - s));
    display = xstrdup(eq + 1);
    conf__trim(display);
    for (char *c = key; *c != '\0'; c++)
        *c = ascii_lower(*c);
    if (!conf__is_hostname(conf__trim(key)) || !conf__is_hostname(conf__trim(display))) {
        *why = "want list=public-name, both host names";
        free(key);
        free(display);
        return MXD_EINVAL;
    }
    /* conf__trim may have moved the start: keep what it points at */
    m->key = xstrdup(conf__trim(key));
    m->display = xstrdup(conf__trim(display));
    free(key);
    free(display);
    return 0;
}

void
conf__dnsbl_map_free(void *item)
{
    struct conf_dnsbl_map *m = item;

    free(m->key);
    free(m->display);
}
