/* spf_record: an SPF record's syntax checked by RFC 7208 (the ABNF of
 * section 12, with the rules of 4.6, 5, 6 and 7 it does not carry), and
 * the record rewritten for libspf2 (spf_record.h). Owns nothing; pure, any
 * thread; never reads past len. What it does not do: DNS, macro expansion
 * and evaluation, which stay libspf2's (spf.c); it says nothing of a TXT
 * string that is not an SPF record (4.5: none of our business). */
#include "check/spf_record.h"

#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define VERSION     "v=spf1"
#define VERSION_LEN (sizeof(VERSION) - 1)

enum mech { M_ALL, M_INCLUDE, M_A, M_MX, M_PTR, M_IP4, M_IP6, M_EXISTS };

static const char *const mech_names[] = {"all", "include", "a",   "mx",
                                         "ptr", "ip4",     "ip6", "exists"};

enum kind { K_MECH, K_REDIRECT, K_EXP, K_UNKNOWN };

/* One term of a record, as parsed: slices of the record. */
struct term {
    enum kind kind;
    char qual; /* '\0' when the directive has none */
    enum mech mech;
    const char *dom; /* domain-spec, NULL when none */
    size_t domlen;
    const char *net; /* ip4-network or ip6-network */
    size_t netlen;
    int cidr4, cidr6; /* -1 when absent */
};

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
is_alnum(int c)
{
    return is_alpha(c) || is_digit(c);
}

bool
spf_record_is_spf(const char *txt, size_t len)
{
    return len >= VERSION_LEN && strncasecmp(txt, VERSION, VERSION_LEN) == 0 &&
           (len == VERSION_LEN || txt[VERSION_LEN] == ' ');
}

/* macro-expand at p (p[0] == '%'): its length, or 0 when it is not one.
 * domain: a domain-spec, where c, r and t are not allowed (RFC 7208 7.1:
 * "allowed only in exp text"). */
static size_t
macro_expand(const char *p, size_t len, bool domain, const char **why)
{
    size_t i, zeros = 0;

    if (len >= 2 && (p[1] == '%' || p[1] == '_' || p[1] == '-'))
        return 2;
    if (len < 4 || p[1] != '{' || strchr("slodiphcrtvSLODIPHCRTV", p[2]) == NULL || p[2] == '\0') {
        *why = "invalid macro (RFC 7208 7.1)";
        return 0;
    }
    if (domain && strchr("crtCRT", p[2]) != NULL) {
        *why = "macro letter c, r or t outside exp text (RFC 7208 7.1)";
        return 0;
    }
    i = 3;
    while (i < len && is_digit(p[i]))
        i++;
    /* RFC 7208 7.3: a DIGIT transformer is nonzero */
    for (size_t k = 3; k < i && p[k] == '0'; k++)
        zeros++;
    if (i > 3 && zeros == i - 3) {
        *why = "macro transformer 0 (RFC 7208 7.3)";
        return 0;
    }
    if (i < len && (p[i] == 'r' || p[i] == 'R'))
        i++;
    while (i < len && strchr(".-+,/_=", p[i]) != NULL && p[i] != '\0')
        i++;
    if (i >= len || p[i] != '}') {
        *why = "invalid macro (RFC 7208 7.1)";
        return 0;
    }
    return i + 1;
}

/* macro-string: 0 when p[0..len) is one, MXD_EINVAL otherwise. *last_expand
 * gets the offset just past the last macro-expand (0 when none). */
static int
macro_string(const char *p, size_t len, bool domain, size_t *last_expand, const char **why)
{
    *last_expand = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)p[i];

        if (c == '%') {
            size_t n = macro_expand(p + i, len - i, domain, why);

            if (n == 0)
                return MXD_EINVAL;
            i += n;
            *last_expand = i;
        } else if (c >= 0x21 && c <= 0x7e) { /* macro-literal */
            i++;
        } else {
            *why = "character not allowed in a record (RFC 7208 12: macro-literal)";
            return MXD_EINVAL;
        }
    }
    return 0;
}

/* toplabel = ( *alphanum ALPHA *alphanum ) /
 *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool
toplabel(const char *p, size_t len)
{
    bool alpha = false, hyphen = false;

    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '-')
            hyphen = true;
        else if (is_alpha(p[i]))
            alpha = true;
        else if (!is_digit(p[i]))
            return false;
    }
    if (hyphen)
        return is_alnum(p[0]) && is_alnum(p[len - 1]);
    return alpha;
}

/* domain-spec = macro-string domain-end
 * domain-end  = ( "." toplabel [ "." ] ) / macro-expand */
static int
domain_spec(const char *p, size_t len, const char **why)
{
    size_t last, i;

    if (len == 0) {
        *why = "empty domain-spec (RFC 7208 12)";
        return MXD_EINVAL;
    }
    if (macro_string(p, len, true, &last, why) != 0)
        return MXD_EINVAL;
    if (last == len)
        return 0;
    if (p[len - 1] == '.')
        len--;
    for (i = len; i > last && p[i - 1] != '.'; i--)
        ;
    if (i == last || !toplabel(p + i, len - i)) {
        *why = "domain-spec does not end in a top label (RFC 7208 12: domain-end)";
        return MXD_EINVAL;
    }
    return 0;
}

/* A prefix length at the end of p[0..len): the offset of its "/", or len
 * when p does not end in "/" and digits. *v gets the value, or -1 when it
 * has a leading zero or is over max (RFC 7208 12: ip4-cidr-length = "/"
 * ("0" / %x31-39 0*1DIGIT), ip6-cidr-length with 0*2DIGIT). */
static size_t
cidr_at(const char *p, size_t len, int max, int *v)
{
    size_t i = len;

    while (i > 0 && is_digit(p[i - 1]))
        i--;
    if (i == len || i == 0 || p[i - 1] != '/')
        return len;
    *v = 0;
    for (size_t k = i; k < len && *v <= max; k++)
        *v = *v * 10 + (p[k] - '0');
    if ((p[i] == '0' && len - i > 1) || *v > max)
        *v = -1;
    return i - 1;
}

/* ip4-network: four qnum, no leading zeros. */
static bool
ip4_network(const char *p, size_t len)
{
    size_t i = 0;

    for (int part = 0; part < 4; part++) {
        size_t start = i;
        unsigned v = 0;

        if (part > 0) {
            if (i >= len || p[i] != '.')
                return false;
            start = ++i;
        }
        while (i < len && is_digit(p[i]) && i - start < 4)
            v = v * 10 + (unsigned)(p[i++] - '0');
        if (i == start || i - start > 3 || v > 255 || (p[start] == '0' && i - start > 1))
            return false;
    }
    return i == len;
}

/* ip6-network: RFC 4291 2.2 text. */
static bool
ip6_network(const char *p, size_t len)
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in6_addr a;

    if (len == 0 || len >= sizeof(buf))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\0' || (!is_digit(p[i]) && strchr("abcdefABCDEF:.", p[i]) == NULL))
            return false; /* NUL among them: inet_pton would stop there */
    }
    memcpy(buf, p, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

/* ip4 and ip6: ":" network [ cidr-length ] */
static int
ip_args(struct term *t, const char *rest, size_t len, const char **why)
{
    size_t s;
    int v = 0;

    if (len == 0 || rest[0] != ':') {
        *why = "invalid mechanism arguments (RFC 7208 5)";
        return MXD_EINVAL;
    }
    t->net = rest + 1;
    t->netlen = len - 1;
    s = cidr_at(t->net, t->netlen, t->mech == M_IP4 ? 32 : 128, &v);
    if (s < t->netlen) {
        if (v < 0) {
            *why = "invalid CIDR prefix length (RFC 7208 5.6, 12)";
            return MXD_EINVAL;
        }
        *(t->mech == M_IP4 ? &t->cidr4 : &t->cidr6) = v;
        t->netlen = s;
    }
    if (!(t->mech == M_IP4 ? ip4_network : ip6_network)(t->net, t->netlen)) {
        *why = "invalid network in ip4 or ip6 (RFC 7208 5.6)";
        return MXD_EINVAL;
    }
    return 0;
}

/* The arguments of a directive of mechanism m (rest: after its name). */
static int
directive_args(struct term *t, const char *rest, size_t len, const char **why)
{
    size_t s;
    int v = 0;

    switch (t->mech) {
    case M_ALL:
        if (len != 0)
            goto bad;
        return 0;
    case M_A:
    case M_MX:
        /* dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ] */
        s = cidr_at(rest, len, 128, &v);
        if (s < len && s > 0 && rest[s - 1] == '/') {
            if (v < 0)
                goto cidr;
            t->cidr6 = v;
            len = s - 1;
        }
        if ((s = cidr_at(rest, len, 32, &v)) < len) {
            if (v < 0)
                goto cidr;
            t->cidr4 = v;
            len = s;
        }
        if (len == 0)
            return 0;
        break;
    case M_PTR:
        if (len == 0)
            return 0;
        break;
    case M_INCLUDE:
    case M_EXISTS:
        break;
    case M_IP4:
    case M_IP6:
        return ip_args(t, rest, len, why);
    }
    /* ":" domain-spec */
    if (len == 0 || rest[0] != ':')
        goto bad;
    t->dom = rest + 1;
    t->domlen = len - 1;
    return domain_spec(t->dom, t->domlen, why);
bad:
    *why = "invalid mechanism arguments (RFC 7208 5)";
    return MXD_EINVAL;
cidr:
    *why = "invalid CIDR prefix length (RFC 7208 5.6, 12)";
    return MXD_EINVAL;
}

/* One term: a directive or a modifier. */
static int
parse_term(const char *p, size_t len, struct term *t, const char **why)
{
    size_t n = 0, q;

    memset(t, 0, sizeof(*t));
    t->cidr4 = t->cidr6 = -1;
    /* name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) "=" : a modifier */
    if (len > 0 && is_alpha(p[0])) {
        n = 1;
        while (n < len && (is_alnum(p[n]) || p[n] == '-' || p[n] == '_' || p[n] == '.'))
            n++;
    }
    if (n > 0 && n < len && p[n] == '=') {
        size_t last;

        if (n == 8 && strncasecmp(p, "redirect", 8) == 0)
            t->kind = K_REDIRECT;
        else if (n == 3 && strncasecmp(p, "exp", 3) == 0)
            t->kind = K_EXP;
        else
            t->kind = K_UNKNOWN;
        t->dom = p + n + 1;
        t->domlen = len - n - 1;
        if (t->kind != K_UNKNOWN)
            return domain_spec(t->dom, t->domlen, why);
        return macro_string(t->dom, t->domlen, false, &last, why);
    }
    t->kind = K_MECH;
    q = len > 0 && strchr("+-?~", p[0]) != NULL && p[0] != '\0';
    t->qual = q ? p[0] : '\0';
    n = q;
    while (n < len && is_alnum(p[n]))
        n++;
    for (size_t m = 0; m < sizeof(mech_names) / sizeof(mech_names[0]); m++) {
        if (n - q == strlen(mech_names[m]) && strncasecmp(p + q, mech_names[m], n - q) == 0) {
            t->mech = (enum mech)m;
            return directive_args(t, p + n, len - n, why);
        }
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e) {
            *why = "character not allowed in a record (RFC 7208 12)";
            return MXD_EINVAL;
        }
    }
    *why = "unknown mechanism (RFC 7208 5)";
    return MXD_EINVAL;
}

/* Calls each term of a record in turn: fn(arg, term, text, len); stops at
 * the first nonzero return, which it returns. */
typedef int (*term_fn)(void *arg, const struct term *t, const char *p, size_t len);

static int
each_term(const char *txt, size_t len, term_fn fn, void *arg, const char **why)
{
    size_t i = VERSION_LEN;

    /* record = version terms *SP; terms = *( 1*SP ( directive / modifier ) ) */
    while (i < len) {
        struct term t;
        size_t start;
        int rc;

        while (i < len && txt[i] == ' ')
            i++;
        if (i == len)
            break;
        start = i;
        while (i < len && txt[i] != ' ')
            i++;
        if (parse_term(txt + start, i - start, &t, why) != 0)
            return MXD_EINVAL;
        if ((rc = fn(arg, &t, txt + start, i - start)) != 0)
            return rc;
    }
    return 0;
}

struct counts {
    unsigned redirect, exp, all;
};

static int
count_term(void *arg, const struct term *t, const char *p, size_t len)
{
    struct counts *c = arg;

    (void)p;
    (void)len;
    c->redirect += t->kind == K_REDIRECT;
    c->exp += t->kind == K_EXP;
    c->all += t->kind == K_MECH && t->mech == M_ALL;
    return 0;
}

static int
check_counts(const char *txt, size_t len, struct counts *c, const char **why)
{
    memset(c, 0, sizeof(*c));
    if (!spf_record_is_spf(txt, len)) {
        *why = "not an SPF record (RFC 7208 4.5)";
        return MXD_EINVAL;
    }
    if (each_term(txt, len, count_term, c, why) != 0)
        return MXD_EINVAL;
    /* RFC 7208 6: redirect and exp MUST NOT appear more than once each */
    if (c->redirect > 1 || c->exp > 1) {
        *why = "redirect= or exp= more than once (RFC 7208 6)";
        return MXD_EINVAL;
    }
    return 0;
}

int
spf_record_check(const char *txt, size_t len, const char **why)
{
    struct counts c;

    return check_counts(txt, len, &c, why);
}

struct writer {
    char *out;
    size_t size, len;
    int family;
    bool drop_redirect;
    bool full;
};

static void
put(struct writer *w, const char *p, size_t n)
{
    if (w->len + n >= w->size) {
        w->full = true;
        return;
    }
    memcpy(w->out + w->len, p, n);
    w->len += n;
    w->out[w->len] = '\0';
}

/* a, mx: [qual]name[:domain][/cidr] with only the client's family's
 * prefix; a 0 one becomes a CIDR0 name and the full length. */
static void
write_a_mx(struct writer *w, const struct term *t)
{
    int cidr = w->family == AF_INET6 ? t->cidr6 : t->cidr4;
    char len[16];

    if (t->qual != '\0')
        put(w, &t->qual, 1);
    put(w, mech_names[t->mech], strlen(mech_names[t->mech]));
    if (t->dom != NULL || cidr == 0) {
        put(w, ":", 1);
        if (t->dom != NULL)
            put(w, t->dom, t->domlen);
        else
            put(w, "%{d}", 4); /* RFC 7208 5.3, 5.4: the current domain */
    }
    if (cidr == 0) {
        put(w, SPF_RECORD_CIDR0_SUFFIX, strlen(SPF_RECORD_CIDR0_SUFFIX));
        cidr = w->family == AF_INET6 ? 128 : 32;
    }
    if (cidr >= 0) {
        snprintf(len, sizeof(len), w->family == AF_INET6 ? "//%d" : "/%d", cidr);
        put(w, len, strlen(len));
    }
}

static int
write_term(void *arg, const struct term *t, const char *p, size_t len)
{
    struct writer *w = arg;

    if (t->kind == K_UNKNOWN) /* RFC 7208 6: unrecognized modifiers are ignored */
        return 0;
    if (t->kind == K_REDIRECT && w->drop_redirect)
        return 0;
    put(w, " ", 1);
    if (t->kind == K_MECH && (t->mech == M_A || t->mech == M_MX)) {
        write_a_mx(w, t);
    } else if (t->kind == K_MECH && (t->mech == M_IP4 || t->mech == M_IP6) &&
               (t->mech == M_IP4 ? t->cidr4 : t->cidr6) == 0) {
        /* x/0 matches every address of its family: the two halves, /1 */
        size_t q = t->qual != '\0';

        put(w, &t->qual, q);
        put(w, t->mech == M_IP4 ? "ip4:0.0.0.0/1 " : "ip6:::/1 ", t->mech == M_IP4 ? 14 : 9);
        put(w, &t->qual, q);
        put(w, t->mech == M_IP4 ? "ip4:128.0.0.0/1" : "ip6:8000::/1", t->mech == M_IP4 ? 15 : 12);
    } else {
        put(w, p, len);
    }
    return 0;
}

int
spf_record_rewrite(const char *txt, size_t len, int family, char *out, size_t size)
{
    struct writer w = {.out = out, .size = size, .family = family};
    struct counts c;
    const char *why;

    if (check_counts(txt, len, &c, &why) != 0)
        return MXD_EINVAL;
    /* RFC 7208 5.1: redirect= is ignored when the record has "all" */
    w.drop_redirect = c.all > 0;
    put(&w, VERSION, VERSION_LEN);
    if (size > 0 && !w.full)
        (void)each_term(txt, len, write_term, &w, &why);
    if (w.full)
        return MXD_ETOOBIG;
    return (int)w.len;
}
