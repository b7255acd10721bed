/* Fuzz target: the PROXY protocol header parser (proxy_feed), fed the
 * same input whole and in pieces of an input-chosen size. Checks: it never
 * takes more than it is given nor more than a header may hold; the answer
 * (status, reason, addresses, length) does not depend on the split; a
 * header it accepts starts with the version's signature (and a v1 line
 * ends in CRLF); and an accepted client address, written out again as a
 * v1 line and as a v2 header, parses to the same addresses. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "smtp/proxy.h"

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Feeds in[0..len) in pieces of at most step octets (0: whole). */
static enum proxy_status
run(struct proxy_parser *p, const uint8_t *in, size_t len, size_t step, size_t *taken)
{
    enum proxy_status st = PROXY_NEED_MORE;
    size_t pos = 0;

    proxy_init(p);
    *taken = 0;
    while (pos < len) {
        size_t n = step == 0 || len - pos < step ? len - pos : step, used = 0;

        st = proxy_feed(p, in + pos, n, &used);
        check(used <= n);
        *taken += used;
        if (st != PROXY_NEED_MORE)
            break;
        check(used == n);
        pos += n;
    }
    return st;
}

static bool
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return memcmp(a, b, sizeof(struct sockaddr_in)) == 0;
    return memcmp(a, b, sizeof(struct sockaddr_in6)) == 0;
}

static bool
same_result(const struct proxy_result *a, const struct proxy_result *b)
{
    return a->version == b->version && a->local == b->local && a->err == b->err &&
           a->len == b->len && (a->local || same_addr(&a->src, &b->src)) &&
           (a->local || same_addr(&a->dst, &b->dst));
}

static size_t
addr_parts(const struct sockaddr_storage *ss, const void **ip, uint16_t *port, char *text,
           size_t size)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

        *ip = &sin->sin_addr;
        *port = ntohs(sin->sin_port);
        check(inet_ntop(AF_INET, *ip, text, (socklen_t)size) != NULL);
        return 4;
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

        *ip = &sin6->sin6_addr;
        *port = ntohs(sin6->sin6_port);
        check(inet_ntop(AF_INET6, *ip, text, (socklen_t)size) != NULL);
        return 16;
    }
}

/* The accepted addresses, written as v1 and as v2, parse back the same. */
static void
round_trip(const struct proxy_result *r)
{
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN], line[PROXY_V1_MAX + 1];
    unsigned char v2[16 + 36];
    const void *sip, *dip;
    uint16_t sport, dport;
    size_t alen = addr_parts(&r->src, &sip, &sport, src, sizeof(src)), taken;
    struct proxy_parser p;
    int n;

    check(r->src.ss_family == r->dst.ss_family);
    check(addr_parts(&r->dst, &dip, &dport, dst, sizeof(dst)) == alen);
    n = snprintf(line, sizeof(line), "PROXY TCP%c %s %s %u %u\r\n", alen == 4 ? '4' : '6', src, dst,
                 sport, dport);
    check(n > 0 && (size_t)n <= PROXY_V1_MAX);
    check(run(&p, (const uint8_t *)line, (size_t)n, 0, &taken) == PROXY_DONE);
    check(!p.res.local && same_addr(&p.res.src, &r->src) && same_addr(&p.res.dst, &r->dst));

    memcpy(v2, v2_sig, 12);
    v2[12] = 0x21;
    v2[13] = alen == 4 ? 0x11 : 0x21;
    v2[14] = 0;
    v2[15] = (unsigned char)(2 * alen + 4);
    memcpy(v2 + 16, sip, alen);
    memcpy(v2 + 16 + alen, dip, alen);
    v2[16 + 2 * alen] = (unsigned char)(sport >> 8);
    v2[17 + 2 * alen] = (unsigned char)sport;
    v2[18 + 2 * alen] = (unsigned char)(dport >> 8);
    v2[19 + 2 * alen] = (unsigned char)dport;
    check(run(&p, v2, 20 + 2 * alen, 0, &taken) == PROXY_DONE);
    check(taken == 20 + 2 * alen);
    check(!p.res.local && same_addr(&p.res.src, &r->src) && same_addr(&p.res.dst, &r->dst));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_parser a, b;
    enum proxy_status sa, sb;
    size_t ta, tb, step;

    if (size < 1)
        return 0;
    step = data[0] % 11;
    sa = run(&a, data + 1, size - 1, 0, &ta);
    sb = run(&b, data + 1, size - 1, step, &tb);
    check(sa == sb);
    if (sa == PROXY_ERROR) {
        check(a.res.err == b.res.err && a.res.err != PROXY_ERR_NONE);
        check(strlen(proxy_error_name(a.res.err)) > 0);
        return 0;
    }
    check(ta == tb);
    if (sa == PROXY_NEED_MORE) {
        check(ta == size - 1);
        return 0;
    }
    check(same_result(&a.res, &b.res));
    check(a.res.len == ta && a.res.err == PROXY_ERR_NONE);
    if (a.res.version == 1) {
        check(ta <= PROXY_V1_MAX && memcmp(data + 1, "PROXY ", 6) == 0);
        check(data[ta - 1] == '\r' && data[ta] == '\n');
    } else {
        check(a.res.version == 2 && ta >= 16 && ta <= PROXY_V2_MAX);
        check(memcmp(data + 1, v2_sig, 12) == 0);
    }
    if (!a.res.local)
        round_trip(&a.res);
    return 0;
}
