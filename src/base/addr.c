/* addr: owns no memory and no state; fills a caller's struct addr from one
 * SMTP reverse-path or forward-path (RFC 5321 4.1.2, address literals 4.1.3,
 * size limits 4.5.3.1) with the SMTPUTF8 extensions of RFC 6531 3.3.
 * Any thread, pure: no I/O, no allocation, no locale, never reads s[len] or
 * beyond. Returns ADDR_OK or a negative enum addr_status.
 *
 * Error contract: the input is scanned left to right and the first problem
 * decides the status. A byte >= 0x80 is checked where it is met: malformed
 * UTF-8 is ADDR_E_BAD_UTF8; well-formed but SMTPUTF8 not in use is
 * ADDR_E_NON_ASCII (wherever it is); with SMTPUTF8 in a place RFC 6531 does
 * not extend (address literals, quoted-pair, punctuation) ADDR_E_SYNTAX.
 * A length limit is checked when its part ends: the local part at '@', a
 * domain after its last label, the path at '>'. The source route is not
 * counted in the path limit (it is dropped) but each route domain must fit
 * in ADDR_DOMAIN_MAX. A label over 63 octets is ADDR_E_SYNTAX (RFC 1035
 * grammar, not a 4.5.3.1 limit). out->utf8 describes the kept mailbox only.
 *
 * It deliberately does not: interpret '%' or '!' relay syntax, lowercase or
 * otherwise canonicalise the local part, validate IDNA rules for U-labels
 * (only UTF-8 well-formedness and octet lengths), accept a trailing dot in a
 * domain, or look at the ESMTP parameters after '>'. */
#include "base/addr.h"

#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#define ADDR_LABEL_MAX 63 /* RFC 1035 2.3.4, octets per label */

/* A read cursor over s[0..len); pos never passes len. */
struct cur {
    const unsigned char *s;
    size_t len;
    size_t pos;
    bool allow_utf8;
};

bool
addr_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_char_len(p + i, len - i);

        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* Status for a byte >= 0x80 at c->pos where even SMTPUTF8 does not allow one. */
static int
cur_no_utf8(const struct cur *c)
{
    if (utf8_char_len(c->s + c->pos, c->len - c->pos) == 0)
        return ADDR_E_BAD_UTF8;
    return c->allow_utf8 ? ADDR_E_SYNTAX : ADDR_E_NON_ASCII;
}

/* Consumes one UTF8-non-ascii character at c->pos where RFC 6531 3.3 allows
 * it (atext, qtextSMTP, sub-domain). */
static int
cur_utf8(struct cur *c)
{
    size_t n = utf8_char_len(c->s + c->pos, c->len - c->pos);

    if (n == 0)
        return ADDR_E_BAD_UTF8;
    if (!c->allow_utf8)
        return ADDR_E_NON_ASCII;
    c->pos += n;
    return ADDR_OK;
}

/* The byte at c->pos, or -1 at the end of the input. */
static int
cur_peek(const struct cur *c)
{
    return c->pos < c->len ? c->s[c->pos] : -1;
}

static bool
cur_accept(struct cur *c, int ch)
{
    if (cur_peek(c) != ch)
        return false;
    c->pos++;
    return true;
}

/* Consumes the punctuation ch or says why the byte there is wrong. */
static int
cur_expect(struct cur *c, int ch)
{
    if (cur_accept(c, ch))
        return ADDR_OK;
    if (cur_peek(c) >= 0x80)
        return cur_no_utf8(c);
    return ADDR_E_SYNTAX;
}

static bool
is_alnum(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* RFC 5322 3.2.3 atext (ASCII part). */
static bool
is_atext(int ch)
{
    static const char specials[] = "!#$%&'*+-/=?^_`{|}~";

    if (is_alnum(ch))
        return true;
    return ch > 0 && ch < 0x80 && memchr(specials, ch, sizeof(specials) - 1) != NULL;
}

/* RFC 5321 4.1.3 dcontent = %d33-90 / %d94-126 */
static bool
is_dcontent(int ch)
{
    return (ch >= 33 && ch <= 90) || (ch >= 94 && ch <= 126);
}

/* RFC 5321 4.1.2 Dot-string = Atom *("." Atom); RFC 6531 3.3 adds
 * UTF8-non-ascii to atext. No empty atom: no leading, trailing or double dot. */
static int
dot_string_scan(struct cur *c)
{
    bool need_atom = true; /* at the start or just after a '.' */
    int ch;
    int rc;

    while ((ch = cur_peek(c)) >= 0) {
        if (ch >= 0x80) {
            if ((rc = cur_utf8(c)) != ADDR_OK)
                return rc;
        } else if (is_atext(ch)) {
            c->pos++;
        } else if (ch == '.' && !need_atom) {
            c->pos++;
            need_atom = true;
            continue;
        } else {
            break;
        }
        need_atom = false;
    }
    return need_atom ? ADDR_E_SYNTAX : ADDR_OK;
}

/* RFC 5321 4.1.2 Quoted-string = DQUOTE *QcontentSMTP DQUOTE, qtextSMTP =
 * %d32-33 / %d35-91 / %d93-126 (RFC 6531 3.3 adds UTF8-non-ascii),
 * quotedpairSMTP = "\" %d32-126 (ASCII only, even with SMTPUTF8). */
static int
quoted_scan(struct cur *c)
{
    int ch;
    int rc;

    c->pos++; /* the opening DQUOTE */
    while ((ch = cur_peek(c)) >= 0) {
        if (ch == '"') {
            c->pos++;
            return ADDR_OK;
        }
        if (ch >= 0x80) {
            if ((rc = cur_utf8(c)) != ADDR_OK)
                return rc;
            continue;
        }
        if (ch < 32 || ch > 126)
            return ADDR_E_SYNTAX; /* controls, NUL, DEL */
        c->pos++;
        if (ch != '\\')
            continue;
        ch = cur_peek(c);
        if (ch >= 0x80)
            return cur_no_utf8(c);
        if (ch < 32 || ch > 126)
            return ADDR_E_SYNTAX; /* also a '\' at the end of the input */
        c->pos++;
    }
    return ADDR_E_SYNTAX; /* no closing DQUOTE */
}

/* RFC 5321 4.1.2 Local-part = Dot-string / Quoted-string */
static int
local_scan(struct cur *c)
{
    if (cur_peek(c) == '"')
        return quoted_scan(c);
    return dot_string_scan(c);
}

/* RFC 5321 4.1.2 Domain = sub-domain *("." sub-domain), sub-domain =
 * Let-dig [Ldh-str]; RFC 6531 3.3 sub-domain =/ U-label; RFC 1035 2.3.4
 * labels of 1..63 octets. Stops at the first octet that cannot continue the
 * name and leaves it for the caller; a trailing dot is refused. */
static int
domain_scan(struct cur *c)
{
    size_t label = 0;    /* octets in the current label */
    bool hyphen = false; /* the label so far ends in '-' */
    int ch;
    int rc;

    for (;;) {
        size_t start = c->pos;

        ch = cur_peek(c);
        if (ch >= 0x80) {
            if ((rc = cur_utf8(c)) != ADDR_OK)
                return rc;
            label += c->pos - start;
            hyphen = false;
            continue;
        }
        if (is_alnum(ch) || (ch == '-' && label > 0)) {
            c->pos++;
            label++;
            hyphen = ch == '-';
            continue;
        }
        if (label == 0 || label > ADDR_LABEL_MAX || hyphen)
            return ADDR_E_SYNTAX;
        if (ch != '.')
            return ADDR_OK;
        c->pos++;
        label = 0;
    }
}

/* True when p[0..n) is a textual address inet_pton accepts for family af. */
static bool
ip_ok(int af, const unsigned char *p, size_t n)
{
    char text[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];

    if (n >= sizeof(text))
        return false;
    memcpy(text, p, n);
    text[n] = '\0';
    return inet_pton(af, text, bin) == 1;
}

/* RFC 5321 4.1.2 Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig */
static bool
ldh_ok(const unsigned char *p, size_t n)
{
    if (n == 0 || !is_alnum(p[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum(p[i]) && p[i] != '-')
            return false;
    }
    return true;
}

/* RFC 5321 4.1.3: IPv4-address-literal, "IPv6:" IPv6-addr (ABNF strings are
 * case-insensitive), or General-address-literal = Standardized-tag ":"
 * 1*dcontent. p[0..n) is the text between the brackets, all dcontent. */
static bool
literal_ok(const unsigned char *p, size_t n)
{
    const unsigned char *colon = memchr(p, ':', n);
    size_t tag;

    if (colon == NULL)
        return ip_ok(AF_INET, p, n);
    tag = (size_t)(colon - p);
    if (!ldh_ok(p, tag))
        return false;
    if (tag == 4 && ascii_ncasecmp((const char *)p, "ipv6", 4) == 0)
        return ip_ok(AF_INET6, colon + 1, n - tag - 1);
    return n - tag - 1 > 0;
}

/* Scans "[" ... "]" at c->pos (which is '['). */
static int
literal_scan(struct cur *c)
{
    size_t start = c->pos + 1;
    int ch;

    c->pos++;
    while ((ch = cur_peek(c)) != ']') {
        if (ch >= 0x80)
            return cur_no_utf8(c);
        if (!is_dcontent(ch))
            return ADDR_E_SYNTAX; /* also the end of the input */
        c->pos++;
    }
    c->pos++;
    return literal_ok(c->s + start, c->pos - 1 - start) ? ADDR_OK : ADDR_E_SYNTAX;
}

/* RFC 5321 4.1.2 A-d-l = At-domain *( "," At-domain ) ":", At-domain = "@"
 * Domain. Accepted and ignored (RFC 5321 C); nothing at c->pos but '@' starts
 * one. */
static int
route_scan(struct cur *c)
{
    int rc;

    if (cur_peek(c) != '@')
        return ADDR_OK;
    do {
        size_t start;

        if ((rc = cur_expect(c, '@')) != ADDR_OK)
            return rc;
        start = c->pos;
        if ((rc = domain_scan(c)) != ADDR_OK)
            return rc;
        if (c->pos - start > ADDR_DOMAIN_MAX)
            return ADDR_E_TOO_LONG;
    } while (cur_accept(c, ','));
    return cur_expect(c, ':');
}

#define ADDR_PM     "postmaster"
#define ADDR_PM_LEN (sizeof(ADDR_PM) - 1)

/* RFC 5321 4.1.1.3: "<Postmaster>" with no domain, any case; c->pos is just
 * after '<'. */
static bool
bare_postmaster(const struct cur *c)
{
    if (c->len - c->pos < ADDR_PM_LEN + 1 || c->s[c->pos + ADDR_PM_LEN] != '>')
        return false;
    return ascii_ncasecmp((const char *)c->s + c->pos, ADDR_PM, ADDR_PM_LEN) == 0;
}

bool
addr_is_postmaster(const struct addr *a)
{
    const char *l = a->local;
    size_t n = strlen(l);

    if (a->is_postmaster)
        return true;
    if (n == ADDR_PM_LEN + 2 && l[0] == '"' && l[n - 1] == '"') {
        l++;
        n -= 2;
    }
    return n == ADDR_PM_LEN && ascii_ncasecmp(l, ADDR_PM, ADDR_PM_LEN) == 0;
}

/* Copies s[0..n) to dst (which holds n + 1) and terminates it. */
static void
copy_str(char *dst, const unsigned char *s, size_t n)
{
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* Fills *out from the mailbox s[mb..end) whose '@' is at s[at]. */
static void
fill(struct addr *out, const unsigned char *s, size_t mb, size_t at, size_t end)
{
    memset(out, 0, sizeof(*out));
    copy_str(out->mailbox, s + mb, end - mb);
    copy_str(out->local, s + mb, at - mb);
    copy_str(out->domain, s + at + 1, end - at - 1);
    for (size_t i = 0; i < end - at - 1; i++)
        out->domain_lc[i] = ascii_lower(out->domain[i]);
    out->domain_literal = s[at + 1] == '[';
    for (size_t i = mb; i < end; i++)
        out->utf8 = out->utf8 || s[i] >= 0x80;
}

/* Mailbox ">" (RFC 5321 4.1.2) at c->pos; on success *at is the offset of
 * the '@' and c->pos is just past '>'. */
static int
mailbox_scan(struct cur *c, size_t *at)
{
    size_t mb = c->pos;
    size_t dom;
    int rc;

    if ((rc = local_scan(c)) != ADDR_OK)
        return rc;
    if (c->pos - mb > ADDR_LOCAL_MAX) /* RFC 5321 4.5.3.1.1 */
        return ADDR_E_TOO_LONG;
    *at = c->pos;
    if ((rc = cur_expect(c, '@')) != ADDR_OK)
        return rc;
    dom = c->pos;
    rc = cur_peek(c) == '[' ? literal_scan(c) : domain_scan(c);
    if (rc != ADDR_OK)
        return rc;
    if (c->pos - dom > ADDR_DOMAIN_MAX) /* RFC 5321 4.5.3.1.2 */
        return ADDR_E_TOO_LONG;
    if ((rc = cur_expect(c, '>')) != ADDR_OK)
        return rc;
    if (c->pos - mb + 1 > ADDR_PATH_MAX) /* RFC 5321 4.5.3.1.3, with '<' */
        return ADDR_E_TOO_LONG;
    return ADDR_OK;
}

int
addr_parse_path(const char *s, size_t len, bool allow_null, bool allow_utf8, struct addr *out,
                size_t *consumed)
{
    struct cur c = {(const unsigned char *)s, len, 0, allow_utf8};
    size_t mb;
    size_t at;
    int rc;

    if ((rc = cur_expect(&c, '<')) != ADDR_OK)
        return rc;
    if (allow_null && cur_accept(&c, '>')) { /* RFC 5321 4.1.1.2 "<>" */
        memset(out, 0, sizeof(*out));
        out->is_null = true;
        *consumed = c.pos;
        return ADDR_OK;
    }
    if (!allow_null && bare_postmaster(&c)) {
        memset(out, 0, sizeof(*out));
        copy_str(out->mailbox, c.s + c.pos, ADDR_PM_LEN); /* the case as received */
        copy_str(out->local, c.s + c.pos, ADDR_PM_LEN);
        out->is_postmaster = true;
        *consumed = c.pos + ADDR_PM_LEN + 1;
        return ADDR_OK;
    }
    if ((rc = route_scan(&c)) != ADDR_OK)
        return rc;
    mb = c.pos;
    if ((rc = mailbox_scan(&c, &at)) != ADDR_OK)
        return rc;
    fill(out, c.s, mb, at, c.pos - 1);
    *consumed = c.pos;
    return ADDR_OK;
}

bool
addr_domain_valid(const char *s, size_t len, bool allow_utf8)
{
    struct cur c = {(const unsigned char *)s, len, 0, allow_utf8};
    int rc;

    if (len > ADDR_DOMAIN_MAX)
        return false;
    rc = cur_peek(&c) == '[' ? literal_scan(&c) : domain_scan(&c);
    return rc == ADDR_OK && c.pos == len;
}
