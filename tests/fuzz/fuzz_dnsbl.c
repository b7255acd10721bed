/* Fuzz target: the dnsbl_sites item parser (conf_dnsbl_site_parse) and the
 * answer matcher (dnsbl.c). The input is an item, a NUL, then A records
 * (4 octets each). Checks: an accepted item has a valid lower-case name
 * of at most CONF_DNSBL_NAME_MAX octets and a nonzero weight within
 * +-100000; its filter written out again in the same syntax parses to the
 * same filter; each record's verdict agrees with the filter and the
 * 127.0.0.0/8 rules (127.255.255.x and anything outside 127/8 never list);
 * a site is listed exactly when one record is; query names for the
 * records (as IPv4 and as IPv6 addresses) fit and end in the list name. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "base/conf.h"
#include "check/dnsbl.h"
#include "fuzz.h"

/* The filter as "d.d.d.d" with a "[a;b..c]" set per octet. */
static void
render(const struct conf_dnsbl_site *s, char *out, size_t size)
{
    size_t o = 0;

    o += (size_t)snprintf(out + o, size - o, "%s=", s->name);
    for (int i = 0; i < 4; i++) {
        bool first = true;

        o += (size_t)snprintf(out + o, size - o, "%s[", i > 0 ? "." : "");
        for (unsigned v = 0; v < 256; v++) {
            unsigned hi = v;

            if (!(s->filter[i][v / 8] & (1u << (v % 8))))
                continue;
            while (hi + 1 < 256 && (s->filter[i][(hi + 1) / 8] & (1u << ((hi + 1) % 8))))
                hi++;
            o += (size_t)snprintf(out + o, size - o, "%s%u..%u", first ? "" : ";", v, hi);
            first = false;
            v = hi;
        }
        o += (size_t)snprintf(out + o, size - o, "]");
    }
    snprintf(out + o, size - o, "*%d", s->weight);
}

static void
query_names(const struct conf_dnsbl_site *s, const unsigned char *rec, size_t n)
{
    char q[DNSBL_QNAME_MAX];
    size_t nl = strlen(s->name);

    for (size_t i = 0; i < n; i++) {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};

        memcpy(&sin.sin_addr, rec + 4 * i, 4);
        check(dnsbl_query_name((struct sockaddr *)&sin, s->name, q, sizeof(q)) == 0);
        check(strlen(q) > nl && strcmp(q + strlen(q) - nl, s->name) == 0);
        for (int k = 0; k < 4; k++)
            memcpy(sin6.sin6_addr.s6_addr + 4 * k, rec + 4 * i, 4);
        check(dnsbl_query_name((struct sockaddr *)&sin6, s->name, q, sizeof(q)) == 0);
        check(strlen(q) == 64 + nl);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t ilen = nul != NULL ? (size_t)(nul - data) : size, nrec;
    const unsigned char *rec = nul != NULL ? nul + 1 : data + size;
    struct conf_dnsbl_site s, again;
    char item[1024], text[2048];
    const char *why = NULL;
    bool listed = false, error = false, err2;

    if (ilen >= sizeof(item))
        return 0;
    memcpy(item, data, ilen);
    item[ilen] = '\0';
    nrec = (size_t)(data + size - rec) / 4;
    if (conf_dnsbl_site_parse(item, &s, &why) != 0) {
        check(why != NULL && *why != '\0');
        return 0;
    }
    check(s.name != NULL && s.display == s.name && *s.name != '\0');
    check(strlen(s.name) <= CONF_DNSBL_NAME_MAX);
    for (const char *c = s.name; *c != '\0'; c++)
        check(!(*c >= 'A' && *c <= 'Z'));
    check(s.weight != 0 && s.weight >= -100000 && s.weight <= 100000);
    if (s.filtered) {
        bool empty = false;

        for (int i = 0; i < 4; i++) {
            bool any = false;

            for (int b = 0; b < 32; b++)
                any = any || s.filter[i][b] != 0;
            empty = empty || !any;
        }
        check(!empty); /* each octet allows some value */
        render(&s, text, sizeof(text));
        check(conf_dnsbl_site_parse(text, &again, &why) == 0);
        check(again.filtered && again.weight == s.weight && strcmp(again.name, s.name) == 0);
        check(memcmp(again.filter, s.filter, sizeof(s.filter)) == 0);
        conf_dnsbl_site_free(&again);
    }
    for (size_t i = 0; i < nrec; i++) {
        const unsigned char *a = rec + 4 * i;
        enum dnsbl_record r = dnsbl_record_judge(&s, a);
        bool in127 = a[0] == 127 && !(a[1] == 255 && a[2] == 255);

        check(r == DNSBL_LIST_ERROR
                  ? !in127
                  : in127 && (r == DNSBL_LISTED) == conf_dnsbl_filter_match(&s, a));
        listed = listed || r == DNSBL_LISTED;
        error = error || r == DNSBL_LIST_ERROR;
    }
    check(dnsbl_site_listed(&s, rec, nrec, &err2) == listed && err2 == error);
    query_names(&s, rec, nrec);
    conf_dnsbl_site_free(&s);
    return 0;
}
