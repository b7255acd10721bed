/* proxy: parses one PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2). Owns nothing but the struct proxy_parser the caller
 * hands it (a copy of the header, at most PROXY_V2_MAX octets). Pure: no
 * I/O, no allocation, no clock; any thread.
 *
 * Strict by design: the header decides which address every check, limit
 * and log line of the session believes, so anything the spec does not
 * allow is refused (PROXY_ERROR with a reason), never guessed at: a v1 line
 * must be exactly "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" with single
 * spaces, addresses of the protocol's family and decimal ports without
 * leading zeros; a v2 header must carry version 2, LOCAL or PROXY, a
 * length that holds its addresses, and TLVs that end exactly at its end.
 * Version 2 TLVs are walked and skipped, never interpreted.
 *
 * What the connection's own addresses are, and who may send a header at
 * all, is the caller's business (smtp_proxy.c). */
#include "smtp/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";

#define V2_FIXED 16 /* signature, version and command, family, length */
/* v2 families and transports (the high and low nibbles of octet 14) */
#define V2_AF_UNSPEC 0
#define V2_AF_INET   1
#define V2_AF_INET6  2
#define V2_AF_UNIX   3
#define V2_STREAM    1
#define V2_LOCAL     0
#define V2_PROXY     1

#define PROXY_ERR_NAME(id, name, text) name,
#define PROXY_ERR_TEXT(id, name, text) text,
static const char *const err_names[PROXY_NERRORS] = {PROXY_ERRORS(PROXY_ERR_NAME)};
static const char *const err_texts[PROXY_NERRORS] = {PROXY_ERRORS(PROXY_ERR_TEXT)};

const char *
proxy_error_name(enum proxy_error e)
{
    return (unsigned)e < PROXY_NERRORS ? err_names[e] : "unknown";
}

const char *
proxy_error_text(enum proxy_error e)
{
    return (unsigned)e < PROXY_NERRORS ? err_texts[e] : "unknown";
}

void
proxy_init(struct proxy_parser *p)
{
    memset(&p->res, 0, sizeof(p->res));
    p->status = PROXY_NEED_MORE;
    p->len = 0;
    p->want = 0;
}

static void
fail(struct proxy_parser *p, enum proxy_error e)
{
    p->res.err = e;
    p->status = PROXY_ERROR;
}

static void
done(struct proxy_parser *p)
{
    p->res.len = p->len;
    p->status = PROXY_DONE;
}

static size_t
min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ---- version 1 --------------------------------------------------------- */

/* "0", or 1 to 5 digits without a leading zero, at most 65535. */
static bool
v1_port(const char *s, size_t n, uint16_t *out)
{
    unsigned v = 0;

    if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* A numeric address of family af, with port, into ss. */
static bool
v1_addr(int af, const char *s, size_t n, uint16_t port, struct sockaddr_storage *ss)
{
    char tmp[INET6_ADDRSTRLEN];

    if (n == 0 || n >= sizeof(tmp) || memchr(s, '\0', n) != NULL)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (af == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;

        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        return inet_pton(AF_INET, tmp, &sin->sin_addr) == 1;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        return inet_pton(AF_INET6, tmp, &sin6->sin6_addr) == 1;
    }
}

/* The whole line is in buf, up to and including its first LF. */
static void
v1_parse(struct proxy_parser *p)
{
    const char *line = (const char *)p->buf;
    size_t n = p->len - 2, pos = sizeof(v1_sig) - 1, flen[5];
    const char *f[5]; /* protocol, source, destination, source port, destination port */
    uint16_t sport, dport;
    int af;

    /* CRLF ends the line (it is longer than "PROXY "), and no other CR is in it */
    if (line[n] != '\r' || memchr(line, '\r', n) != NULL) {
        fail(p, PROXY_ERR_V1_SYNTAX);
        return;
    }
    for (int i = 0; i < 5; i++) {
        const char *sp = memchr(line + pos, ' ', n - pos);
        size_t end = sp != NULL ? (size_t)(sp - line) : n;

        f[i] = line + pos;
        flen[i] = end - pos;
        if (i == 0 && flen[0] == 7 && memcmp(f[0], "UNKNOWN", 7) == 0) {
            /* The spec: whatever follows UNKNOWN is to be ignored. */
            p->res.local = true;
            done(p);
            return;
        }
        if (i == 0 &&
            !(flen[0] == 4 && (memcmp(f[0], "TCP4", 4) == 0 || memcmp(f[0], "TCP6", 4) == 0))) {
            fail(p, flen[0] == 0 ? PROXY_ERR_V1_SYNTAX : PROXY_ERR_V1_PROTOCOL);
            return;
        }
        /* five fields, single spaces, nothing after the last */
        if (flen[i] == 0 || (i < 4 && sp == NULL) || (i == 4 && sp != NULL)) {
            fail(p, PROXY_ERR_V1_SYNTAX);
            return;
        }
        pos = end + 1;
    }
    af = f[0][3] == '4' ? AF_INET : AF_INET6;
    if (!v1_port(f[3], flen[3], &sport) || !v1_port(f[4], flen[4], &dport)) {
        fail(p, PROXY_ERR_V1_PORT);
        return;
    }
    if (!v1_addr(af, f[1], flen[1], sport, &p->res.src) ||
        !v1_addr(af, f[2], flen[2], dport, &p->res.dst)) {
        fail(p, PROXY_ERR_V1_ADDRESS);
        return;
    }
    done(p);
}

/* Takes up to the first LF, at most PROXY_V1_MAX octets in all. */
static size_t
v1_take(struct proxy_parser *p, const unsigned char *in, size_t len)
{
    size_t n = min_size(len, PROXY_V1_MAX - p->len);
    const unsigned char *lf = memchr(in, '\n', n);

    if (lf != NULL)
        n = (size_t)(lf - in) + 1;
    memcpy(p->buf + p->len, in, n);
    p->len += n;
    if (memcmp(p->buf, v1_sig, min_size(p->len, sizeof(v1_sig) - 1)) != 0)
        fail(p, PROXY_ERR_NOT_PROXY);
    else if (lf != NULL)
        v1_parse(p);
    else if (p->len == PROXY_V1_MAX)
        fail(p, PROXY_ERR_V1_TOO_LONG);
    return n;
}

/* ---- version 2 --------------------------------------------------------- */

/* Octets of the address block of a v2 family (two addresses, two ports). */
static size_t
v2_addr_len(unsigned fam)
{
    switch (fam) {
    case V2_AF_INET:
        return 4 + 4 + 2 + 2;
    case V2_AF_INET6:
        return 16 + 16 + 2 + 2;
    case V2_AF_UNIX:
        return 108 + 108;
    default:
        return 0;
    }
}

/* The 16 fixed octets are in: check them and learn the whole length. */
static void
v2_fixed(struct proxy_parser *p)
{
    unsigned ver = p->buf[12] >> 4, cmd = p->buf[12] & 0xfu;
    unsigned fam = p->buf[13] >> 4, tp = p->buf[13] & 0xfu;
    size_t n = (size_t)p->buf[14] << 8 | p->buf[15];

    if (ver != 2) {
        fail(p, PROXY_ERR_V2_VERSION);
    } else if (cmd != V2_LOCAL && cmd != V2_PROXY) {
        fail(p, PROXY_ERR_V2_COMMAND);
    } else if (V2_FIXED + n > PROXY_V2_MAX) {
        fail(p, PROXY_ERR_V2_TOO_LONG);
    } else if (cmd == V2_PROXY &&
               (fam > V2_AF_UNIX || tp > 2 || (fam != V2_AF_UNSPEC && tp != V2_STREAM))) {
        /* The spec: LOCAL's family is to be ignored; for PROXY we take
         * streams, and AF_UNSPEC (a client the balancer cannot name). */
        fail(p, PROXY_ERR_V2_FAMILY);
    } else if (cmd == V2_PROXY && n < v2_addr_len(fam)) {
        fail(p, PROXY_ERR_V2_LENGTH);
    } else {
        p->want = V2_FIXED + n;
    }
}

static void
v2_sockaddr(struct sockaddr_storage *ss, unsigned fam, const unsigned char *addr,
            const unsigned char *port)
{
    memset(ss, 0, sizeof(*ss));
    if (fam == V2_AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;

        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, addr, 4);
        memcpy(&sin->sin_port, port, 2); /* both in network order */
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, addr, 16);
        memcpy(&sin6->sin6_port, port, 2);
    }
}

/* The whole header is in buf. */
static void
v2_finish(struct proxy_parser *p)
{
    unsigned cmd = p->buf[12] & 0xfu, fam = p->buf[13] >> 4;
    size_t alen = v2_addr_len(fam), pos;
    const unsigned char *a = p->buf + V2_FIXED;

    if (cmd == V2_LOCAL || fam == V2_AF_UNSPEC) {
        /* The spec: the block (addresses, TLVs) is to be skipped. */
        p->res.local = true;
        done(p);
        return;
    }
    /* TLVs: type (1), length (2), value; each inside the header. */
    for (pos = V2_FIXED + alen; pos < p->want;) {
        size_t vlen;

        if (p->want - pos < 3) {
            fail(p, PROXY_ERR_V2_TLV);
            return;
        }
        vlen = (size_t)p->buf[pos + 1] << 8 | p->buf[pos + 2];
        if (vlen > p->want - pos - 3) {
            fail(p, PROXY_ERR_V2_TLV);
            return;
        }
        pos += 3 + vlen;
    }
    if (fam == V2_AF_UNIX) {
        p->res.local = true;
    } else {
        size_t al = fam == V2_AF_INET ? 4 : 16;

        v2_sockaddr(&p->res.src, fam, a, a + 2 * al);
        v2_sockaddr(&p->res.dst, fam, a + al, a + 2 * al + 2);
    }
    done(p);
}

/* Takes the fixed part, then the rest once its length is known. */
static size_t
v2_take(struct proxy_parser *p, const unsigned char *in, size_t len)
{
    size_t goal = p->want != 0 ? p->want : V2_FIXED;
    size_t n = min_size(len, goal - p->len);

    memcpy(p->buf + p->len, in, n);
    p->len += n;
    if (memcmp(p->buf, v2_sig, min_size(p->len, sizeof(v2_sig))) != 0) {
        fail(p, PROXY_ERR_NOT_PROXY);
        return n;
    }
    if (p->want == 0 && p->len == V2_FIXED)
        v2_fixed(p);
    if (p->status == PROXY_NEED_MORE && p->want != 0 && p->len == p->want)
        v2_finish(p);
    return n;
}

/* ---- both -------------------------------------------------------------- */

enum proxy_status
proxy_feed(struct proxy_parser *p, const void *in, size_t len, size_t *used)
{
    const unsigned char *b = in;
    size_t take = 0;

    while (take < len && p->status == PROXY_NEED_MORE) {
        if (p->len == 0) {
            /* The first octet tells: v1 starts "PROXY", v2 with CR. */
            if (b[take] == (unsigned char)v1_sig[0]) {
                p->res.version = 1;
            } else if (b[take] == v2_sig[0]) {
                p->res.version = 2;
            } else {
                fail(p, PROXY_ERR_NOT_PROXY);
                break;
            }
        }
        if (p->res.version == 1)
            take += v1_take(p, b + take, len - take);
        else
            take += v2_take(p, b + take, len - take);
    }
    *used = take;
    return p->status;
}
