/* dnsmsg: MX, A, AAAA, PTR and TXT records out of a DNS reply with libresolv's
 * ns_initparse/ns_parserr/dn_expand (which bound every read by the message
 * end).
 *
 * Owns nothing: the reply is borrowed, results go into caller arrays. Any
 * thread. Returns 0 or MXD_EIO (malformed reply). It does not send
 * queries, follow CNAMEs or look at other sections than the answer. Split
 * out of dns.c so unit tests and the fuzzer can feed it replies. */
#define _DEFAULT_SOURCE
#include "dns/dnsmsg.h"

#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int
dnsmsg_mx(const unsigned char *ans, size_t len, struct mx_host **hosts, size_t *n, size_t *null_mx)
{
    char name[NS_MAXDNAME];
    ns_msg msg;
    ns_rr rr;

    if (len > NS_MAXMSG || ns_initparse(ans, (int)len, &msg) < 0)
        return MXD_EIO;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
            return MXD_EIO;
        if (ns_rr_type(rr) != ns_t_mx || ns_rr_class(rr) != ns_c_in)
            continue; /* e.g. the CNAME that led to the MX records */
        if (ns_rr_rdlen(rr) < 3 || dn_expand(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(rr) + 2,
                                             name, sizeof(name)) < 0)
            return MXD_EIO;
        if (name[0] == '\0' || strcmp(name, ".") == 0) {
            (*null_mx)++;
            continue;
        }
        if (strlen(name) >= MX_NAME_MAX)
            continue; /* cannot be a host name we could resolve */
        *hosts = xrealloc(*hosts, (*n + 1) * sizeof(**hosts));
        strcpy((*hosts)[*n].name, name);
        (*hosts)[*n].pref = ns_get16(ns_rr_rdata(rr));
        (*n)++;
    }
    return 0;
}

int
dnsmsg_addrs(const unsigned char *ans, size_t len, bool want_aaaa, unsigned short port,
             struct sockaddr_storage *addrs, size_t *naddrs, size_t max)
{
    ns_type type = want_aaaa ? ns_t_aaaa : ns_t_a;
    ns_msg msg;
    ns_rr rr;

    if (len > NS_MAXMSG || ns_initparse(ans, (int)len, &msg) < 0)
        return MXD_EIO;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an) && *naddrs < max; i++) {
        struct sockaddr_storage *ss = &addrs[*naddrs];

        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
            return MXD_EIO;
        if (ns_rr_type(rr) != type || ns_rr_class(rr) != ns_c_in)
            continue;
        memset(ss, 0, sizeof(*ss));
        if (!want_aaaa && ns_rr_rdlen(rr) == 4) {
            struct sockaddr_in *sin = (struct sockaddr_in *)ss;

            sin->sin_family = AF_INET;
            sin->sin_port = htons(port);
            memcpy(&sin->sin_addr, ns_rr_rdata(rr), 4);
        } else if (want_aaaa && ns_rr_rdlen(rr) == 16) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons(port);
            memcpy(&sin6->sin6_addr, ns_rr_rdata(rr), 16);
        } else {
            return MXD_EIO;
        }
        (*naddrs)++;
    }
    return 0;
}

int
dnsmsg_ptr(const unsigned char *ans, size_t len, char (*names)[DNSMSG_NAME_MAX], size_t *n,
           size_t max)
{
    char name[NS_MAXDNAME];
    ns_msg msg;
    ns_rr rr;

    if (len > NS_MAXMSG || ns_initparse(ans, (int)len, &msg) < 0)
        return MXD_EIO;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        size_t l;

        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
            return MXD_EIO;
        if (ns_rr_type(rr) != ns_t_ptr || ns_rr_class(rr) != ns_c_in)
            continue; /* e.g. the CNAME of RFC 2317 classless delegation */
        if (dn_expand(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(rr), name, sizeof(name)) < 0)
            return MXD_EIO;
        l = strlen(name);
        if (l > 0 && name[l - 1] == '.')
            name[--l] = '\0';
        if (l == 0 || l >= DNSMSG_NAME_MAX || *n >= max)
            continue;
        for (size_t j = 0; j < l; j++)
            names[*n][j] = name[j] >= 'A' && name[j] <= 'Z' ? (char)(name[j] + 32) : name[j];
        names[*n][l] = '\0';
        (*n)++;
    }
    return 0;
}

int
dnsmsg_txt(const unsigned char *ans, size_t len, dnsmsg_txt_fn fn, void *arg)
{
    char *txt = NULL;
    ns_msg msg;
    ns_rr rr;
    int rc = 0;

    if (len > NS_MAXMSG || ns_initparse(ans, (int)len, &msg) < 0)
        return MXD_EIO;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        const unsigned char *d;
        size_t n = 0, rdlen;

        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) {
            rc = MXD_EIO;
            break;
        }
        if (ns_rr_type(rr) != ns_t_txt || ns_rr_class(rr) != ns_c_in)
            continue;
        d = ns_rr_rdata(rr);
        rdlen = ns_rr_rdlen(rr);
        txt = xrealloc(txt, rdlen + 1);
        /* The character-strings of one record are concatenated (RFC 6376
         * 3.6.2.2, RFC 7208 3.3, RFC 7489 6.6.3). */
        for (size_t j = 0; j < rdlen;) {
            size_t k = d[j++];

            if (k > rdlen - j) /* a string running past its record: what is there */
                k = rdlen - j;
            memcpy(txt + n, d + j, k);
            n += k;
            j += k;
        }
        txt[n] = '\0';
        fn(arg, txt, n);
    }
    free(txt);
    return rc;
}

int
dnsmsg_rdata(const unsigned char *ans, size_t len, int rrtype, dnsmsg_rdata_fn fn, void *arg)
{
    ns_msg msg;
    ns_rr rr;

    if (len > NS_MAXMSG || ns_initparse(ans, (int)len, &msg) < 0)
        return MXD_EIO;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
            return MXD_EIO;
        if ((int)ns_rr_type(rr) != rrtype || ns_rr_class(rr) != ns_c_in)
            continue;
        fn(arg, ns_rr_rdata(rr), ns_rr_rdlen(rr));
    }
    return 0;
}
