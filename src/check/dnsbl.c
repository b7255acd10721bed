/* dnsbl: query names, answer records, scores and reply text for DNSBL and
 * DNSWL screening (dnsbl.h). Owns nothing; pure (no I/O, no clock), any
 * thread. A record outside 127.0.0.0/8 or in 127.255.255.0/24 (Spamhaus's
 * answers to refused or malformed queries, RFC 5782 2.3's test range
 * aside) never lists a client: a list answering so is broken or refusing
 * us, and treating it as a listing would refuse every client. */
#include "check/dnsbl.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define X_NAME(e, s) [DNSBL_##e] = s,
static const char *const record_names[] = {DNSBL_RECORDS(X_NAME)};
#undef X_NAME

const char *
dnsbl_record_name(enum dnsbl_record r)
{
    return (size_t)r < sizeof(record_names) / sizeof(record_names[0]) ? record_names[r] : "?";
}

int
dnsbl_query_name(const struct sockaddr *sa, const char *zone, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *b;
    size_t o = 0, zl = strlen(zone);
    int n;

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

        b = s6->sin6_addr.s6_addr;
        if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            if (size < 64 + zl + 1)
                return MXD_EINVAL;
            for (int i = 15; i >= 0; i--) {
                out[o++] = hex[b[i] & 0xf];
                out[o++] = '.';
                out[o++] = hex[b[i] >> 4];
                out[o++] = '.';
            }
            memcpy(out + o, zone, zl + 1);
            return 0;
        }
        b += 12;
    } else if (sa->sa_family == AF_INET) {
        b = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else {
        return MXD_EINVAL;
    }
    n = snprintf(out, size, "%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0], zone);
    return n < 0 || (size_t)n >= size ? MXD_EINVAL : 0;
}

int
dnsbl_ptr_name(const struct sockaddr *sa, char *out, size_t size)
{
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    bool v6 = sa->sa_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr);

    return dnsbl_query_name(sa, v6 ? "ip6.arpa" : "in-addr.arpa", out, size);
}

bool
dnsbl_name_ok(const char *name)
{
    size_t label = 0, n = 0;

    for (const char *c = name; *c != '\0'; c++, n++) {
        bool ldh = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                   (*c >= '0' && *c <= '9') || *c == '-' || *c == '_';

        if (*c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (!ldh || ++label > 63) {
            return false;
        }
    }
    return n > 0 && n <= 253 && label > 0;
}

enum dnsbl_record
dnsbl_record_judge(const struct conf_dnsbl_site *site, const unsigned char a[4])
{
    if (a[0] != 127 || (a[1] == 255 && a[2] == 255))
        return DNSBL_LIST_ERROR;
    return conf_dnsbl_filter_match(site, a) ? DNSBL_LISTED : DNSBL_FILTERED;
}

bool
dnsbl_site_listed(const struct conf_dnsbl_site *site, const unsigned char *a, size_t n, bool *error)
{
    bool listed = false;

    *error = false;
    for (size_t i = 0; i < n; i++) {
        enum dnsbl_record r = dnsbl_record_judge(site, a + 4 * i);

        listed = listed || r == DNSBL_LISTED;
        *error = *error || r == DNSBL_LIST_ERROR;
    }
    return listed;
}

void
dnsbl_score_add(struct dnsbl_score *s, const struct conf_dnsbl_site *sites, size_t i, bool listed)
{
    if (!listed)
        return;
    s->score += sites[i].weight;
    if (sites[i].weight <= 0)
        return;
    if (s->nlisted == 0 || sites[i].weight > sites[s->top].weight)
        s->top = i;
    s->nlisted++;
}

void
dnsbl_reply_text(char *out, size_t size, const char *ip, const struct conf_dnsbl_site *top)
{
    snprintf(out, size, "5.7.1 Service unavailable; client [%s] blocked using %s", ip,
             top->display);
}
