/*
 * conf_value: the parsers for single config values, for conf.c and for
 * callers of conf_parse_size, conf_parse_duration_ms and conf_cidr_match.
 * Owns no state: it fills in the struct conf_endpoint, conf_listen and
 * conf_cidr values of struct conf, and conf__endpoint_free and
 * conf__listen_free free what those hold. Any thread; no global state,
 * reentrant.
 *
 * Errors: the parsers return 0 or MXD_EINVAL (the predicates return bool);
 * on failure the conf__parse_* item parsers set *why to a static message for
 * conf.c to report, free what they allocated and write no output.
 * Allocation failure panics (util.h x* functions).
 *
 * It does not know keys, sections, files or line numbers (conf.c does), and
 * it does not resolve names, open sockets or check that unix socket paths
 * exist.
 */
#include "base/conf_value.h"

#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

bool
conf__is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Trims s in place; returns its first non-space byte. */
char *
conf__trim(char *s)
{
    size_t n;

    while (conf__is_space(*s))
        s++;
    for (n = strlen(s); n > 0 && conf__is_space(s[n - 1]); n--)
        s[n - 1] = '\0';
    return s;
}

/* Digits only, no sign, no overflow; *end is left after the digits. */
int
conf__parse_u64(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    const char *c = s;

    if (s == NULL || !is_digit(*s))
        return MXD_EINVAL;
    for (; is_digit(*c); c++) {
        unsigned d = (unsigned)(*c - '0');

        if (v > (UINT64_MAX - d) / 10)
            return MXD_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    *end = c;
    return 0;
}

/* A number with an optional one-letter unit from units[] scaling it by
 * mults[]; a bare number is scaled by bare. */
static int
parse_scaled(const char *s, uint64_t bare, const char *units, const uint64_t *mults, uint64_t *out)
{
    uint64_t v, mul = bare;
    const char *end;
    const char *u;

    if (conf__parse_u64(s, &v, &end) < 0)
        return MXD_EINVAL;
    if (*end != '\0') {
        u = strchr(units, ascii_lower(*end));
        if (u == NULL || end[1] != '\0')
            return MXD_EINVAL;
        mul = mults[u - units];
    }
    if (v > UINT64_MAX / mul)
        return MXD_EINVAL;
    *out = v * mul;
    return 0;
}

int
conf_parse_size(const char *s, uint64_t *out)
{
    static const uint64_t mults[] = {UINT64_C(1) << 10, UINT64_C(1) << 20, UINT64_C(1) << 30};

    return parse_scaled(s, 1, "kmg", mults, out);
}

int
conf_parse_duration_ms(const char *s, uint64_t *out)
{
    static const uint64_t mults[] = {1000, 60 * 1000, 3600 * 1000, 86400 * 1000};

    return parse_scaled(s, 1000, "smhd", mults, out);
}

/* RFC 1035 2.3.1 letters, digits and hyphens, labels of 1..63; a last label
 * of digits only would be a mistyped IPv4 address. */
bool
conf__is_hostname(const char *s)
{
    size_t len = strlen(s), label = 0;
    bool digits = true;

    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i <= len; i++) {
        char c = ascii_lower(s[i]);

        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return false;
            if (c == '\0')
                return !digits;
            label = 0;
            digits = true;
            continue;
        }
        if ((label == 0 && c == '-') || !(is_digit(c) || (c >= 'a' && c <= 'z') || c == '-'))
            return false;
        digits = digits && is_digit(c);
        label++;
    }
    return false;
}

/* Splits "host", "host:port", "[v6]:port" or, when defport is set, a bare
 * IPv6 address into an owned *host and a port; *v6 tells an IPv6 literal. */
static int
split_hostport(const char *s, uint16_t defport, char **host, uint16_t *port, bool *v6,
               const char **why)
{
    const char *h = s + (*s == '['), *end, *colon = strrchr(s, ':');
    unsigned char a[16];
    uint64_t n = defport;
    size_t hlen;

    *v6 = *s == '[' || (colon != NULL && colon != strchr(s, ':'));
    if (*s == '[') {
        end = strchr(h, ']');
        colon = end != NULL && end[1] == ':' ? end + 1 : NULL;
        *why = "bad [IPv6]:port";
        if (end == NULL || (end[1] != '\0' && colon == NULL))
            return MXD_EINVAL;
    } else if (*v6) {
        end = s + strlen(s);
        colon = NULL;
        *why = "an IPv6 address needs brackets, as in [2001:db8::1]:25";
        if (defport == 0)
            return MXD_EINVAL;
    } else {
        end = colon != NULL ? colon : s + strlen(s);
    }
    hlen = (size_t)(end - h);
    *why = "the port must be a number from 1 to 65535";
    if (colon != NULL &&
        (conf__parse_u64(colon + 1, &n, &end) < 0 || *end != '\0' || n < 1 || n > 65535))
        return MXD_EINVAL;
    *why = hlen == 0 ? "missing host" : "missing :port";
    if (hlen == 0 || n == 0)
        return MXD_EINVAL;
    *host = xstrndup(h, hlen);
    if (*v6 && inet_pton(AF_INET6, *host, a) != 1) {
        free(*host);
        *why = "bad IPv6 address";
        return MXD_EINVAL;
    }
    *port = (uint16_t)n;
    return 0;
}

void
conf__endpoint_free(void *item)
{
    struct conf_endpoint *e = item;

    free(e->text);
    free(e->path);
    free(e->host);
}

/* arg is a struct conf_ep_opt. */
int
conf__parse_endpoint(const char *s, const void *arg, void *out, const char **why)
{
    const struct conf_ep_opt *o = arg;
    struct conf_endpoint e = {0};
    unsigned char a[4];
    bool v6;

    if (strncmp(s, "unix:", 5) == 0) {
        *why = (o->flags & CONF_EP_UNIX) ? "want unix:/absolute/path, under 108 bytes"
                                         : "a unix socket is not allowed here";
        if (!(o->flags & CONF_EP_UNIX) || s[5] != '/' || strlen(s + 5) >= CONF_SUN_PATH_MAX)
            return MXD_EINVAL;
        e.is_unix = true;
        e.path = xstrdup(s + 5);
    } else {
        if (split_hostport(s, o->defport, &e.host, &e.port, &v6, why) < 0)
            return MXD_EINVAL;
        if (!v6 && inet_pton(AF_INET, e.host, a) != 1 &&
            ((o->flags & CONF_EP_NUMERIC) || !conf__is_hostname(e.host))) {
            *why = (o->flags & CONF_EP_NUMERIC) ? "not an IP address" : "bad host name";
            free(e.host);
            return MXD_EINVAL;
        }
    }
    e.text = xstrdup(s);
    memcpy(out, &e, sizeof(e));
    return 0;
}

int
conf__parse_milter(const char *s, const void *arg, void *out, const char **why)
{
    static const struct conf_ep_opt opt = {CONF_EP_UNIX | CONF_EP_NUMERIC, 0};
    struct conf_endpoint *e = out;
    const char *rest = s;
    int rc;

    (void)arg;
    if (strncmp(s, "inet:", 5) == 0)
        rest = s + 5;
    else if (strncmp(s, "inet6:", 6) == 0)
        rest = s + 6;
    if (rest != s && strncmp(rest, "unix:", 5) == 0) {
        *why = "want inet:IP:port, inet6:[IP]:port or unix:/path";
        return MXD_EINVAL;
    }
    rc = conf__parse_endpoint(rest, &opt, e, why);
    if (rc < 0)
        return rc;
    free(e->text);
    e->text = xstrdup(s);
    return 0;
}

void
conf__listen_free(void *item)
{
    free(((struct conf_listen *)item)->text);
}

/* A numeric "IPv4:port" or "[IPv6]:port", optionally followed by the word
 * "proxy" (the listener takes PROXY protocol headers). */
int
conf__parse_listen(const char *s, const void *arg, void *out, const char **why)
{
    static const struct conf_ep_opt numeric = {CONF_EP_NUMERIC, 0};
    struct conf_listen *l = out;
    struct conf_endpoint e;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    size_t alen = strcspn(s, " \t");
    const char *opt = s + alen;
    char *addr;
    int rc;

    (void)arg;
    while (conf__is_space(*opt))
        opt++;
    if (*opt != '\0' && strcmp(opt, "proxy") != 0) {
        *why = "unknown listen option (the only one is 'proxy')";
        return MXD_EINVAL;
    }
    addr = xstrndup(s, alen);
    rc = conf__parse_endpoint(addr, &numeric, &e, why);
    free(addr);
    if (rc < 0)
        return MXD_EINVAL;
    l->proxy = *opt != '\0';
    sin.sin_port = sin6.sin6_port = htons(e.port);
    if (inet_pton(AF_INET, e.host, &sin.sin_addr) == 1) {
        memcpy(&l->ss, &sin, sizeof(sin));
        l->sslen = sizeof(sin);
    } else {
        (void)inet_pton(AF_INET6, e.host, &sin6.sin6_addr); /* conf__parse_endpoint checked it */
        memcpy(&l->ss, &sin6, sizeof(sin6));
        l->sslen = sizeof(sin6);
    }
    l->text = e.text;
    free(e.host);
    return 0;
}

/* "192.0.2.10", "192.0.2.0/24", "2001:db8::/32". */
int
conf__parse_cidr(const char *s, const void *arg, void *out, const char **why)
{
    struct conf_cidr c = {0};
    const char *slash = strchr(s, '/'), *end;
    char *ip = xstrndup(s, slash != NULL ? (size_t)(slash - s) : strlen(s));
    uint64_t n;

    (void)arg;
    c.family = strchr(ip, ':') != NULL ? AF_INET6 : AF_INET;
    n = c.family == AF_INET6 ? 128 : 32;
    c.prefix = (unsigned)n;
    *why = NULL;
    if (inet_pton(c.family, ip, c.addr) != 1)
        *why = "bad IP address";
    else if (slash != NULL &&
             (conf__parse_u64(slash + 1, &n, &end) < 0 || *end != '\0' || n > c.prefix))
        *why = "bad prefix length";
    free(ip);
    if (*why != NULL)
        return MXD_EINVAL;
    /* As Postfix does: 192.0.2.1/24 is a typo for 192.0.2.0/24 or /32. */
    for (unsigned bit = (unsigned)n; bit < c.prefix; bit++) {
        if (c.addr[bit / 8] & (0x80u >> (bit % 8))) {
            *why = "host bits set past the prefix length";
            return MXD_EINVAL;
        }
    }
    c.prefix = (unsigned)n;
    memcpy(out, &c, sizeof(c));
    return 0;
}

bool
conf_cidr_match(const struct conf_cidr *cidrs, size_t n, const struct sockaddr *sa)
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    const unsigned char *a;
    int family = sa != NULL ? sa->sa_family : AF_UNSPEC;

    if (family == AF_INET) {
        memcpy(&sin, sa, sizeof(sin));
        a = (const unsigned char *)&sin.sin_addr;
    } else if (family == AF_INET6) {
        memcpy(&sin6, sa, sizeof(sin6));
        a = sin6.sin6_addr.s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) { /* v4 on a dual-stack socket */
            family = AF_INET;
            a += 12;
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const struct conf_cidr *c = &cidrs[i];
        unsigned full = c->prefix / 8, mask = (0xff00u >> (c->prefix % 8)) & 0xffu;

        if (c->family == family && memcmp(c->addr, a, full) == 0 &&
            (mask == 0 || ((c->addr[full] ^ a[full]) & mask) == 0))
            return true;
    }
    return false;
}
