/* dnsbl: the pure side of DNSBL and DNSWL screening (check_dnsbl.c asks
 * the lists): the name to ask a list about a client, what one answer
 * says, the score, and the reply naming a list. No I/O, no clock. The
 * lists and their filters come from the config (conf_dnsbl.c parses
 * them). */
#ifndef MXD_DNSBL_H
#define MXD_DNSBL_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>

#include "base/conf.h"
#include "base/util.h"

/* A query name: 32 nibbles of an IPv6 address (64 octets) and the list. */
#define DNSBL_QNAME_MAX (64 + CONF_DNSBL_NAME_MAX + 2)
#define DNSBL_ADDRS_MAX 16 /* A records read from one answer */

/*
 * The name to ask zone about the client sa: "4.3.2.1.zone" for 1.2.3.4,
 * the 32 nibbles reversed for IPv6 (an IPv4-mapped IPv6 address as IPv4).
 * Returns 0, or MXD_EINVAL for another family or a name that does not fit.
 */
int dnsbl_query_name(const struct sockaddr *sa, const char *zone, char *out, size_t size) MXD_WUR;

/* The reverse name of sa (its PTR query): "d.c.b.a.in-addr.arpa", or the
 * nibbles under ip6.arpa. 0 or MXD_EINVAL as dnsbl_query_name. */
int dnsbl_ptr_name(const struct sockaddr *sa, char *out, size_t size) MXD_WUR;

/* True when name is a host name fit for Received: and logs: letters,
 * digits, '-' and '_' in labels of 1..63 octets, dots between, at most
 * 253 octets. */
bool dnsbl_name_ok(const char *name);

/* What one A record of a list's answer says. */
#define DNSBL_RECORDS(X)                                                                           \
    X(LISTED, "listed")         /* in 127.0.0.0/8 and through the list's filter */                 \
    X(FILTERED, "filtered")     /* in 127.0.0.0/8, refused by the filter */                        \
    X(LIST_ERROR, "list-error") /* 127.255.255.x (the list refused the query) or not 127/8 */
#define DNSBL_RECORD_ENUM(e, s) DNSBL_##e,
enum dnsbl_record { DNSBL_RECORDS(DNSBL_RECORD_ENUM) };
#undef DNSBL_RECORD_ENUM
const char *dnsbl_record_name(enum dnsbl_record r);

/* One A record a (network order) of site's answer. */
enum dnsbl_record dnsbl_record_judge(const struct conf_dnsbl_site *site, const unsigned char a[4]);

/* A site's verdict from its answer's n records, 4 octets each at a (n may
 * be 0: not listed): listed when one record is; *error when one is a list
 * error. */
bool dnsbl_site_listed(const struct conf_dnsbl_site *site, const unsigned char *a, size_t n,
                       bool *error);

/* The verdict on the lists' answers. */
struct dnsbl_score {
    int score;      /* the weights of the lists that list the client, summed */
    size_t nlisted; /* lists with a positive weight that list it */
    size_t top;     /* the site (index) with the highest positive weight listing it;
                       valid when nlisted > 0 */
};

/* Adds site i's verdict to *s (start from a zeroed struct). */
void dnsbl_score_add(struct dnsbl_score *s, const struct conf_dnsbl_site *sites, size_t i,
                     bool listed);

/* "5.7.1 Service unavailable; client [IP] blocked using NAME" into out
 * (CHECK_TEXT_MAX is enough), NAME the display name of top. */
void dnsbl_reply_text(char *out, size_t size, const char *ip, const struct conf_dnsbl_site *top);

#endif
