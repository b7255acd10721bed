/* greylist: builds the (client, sender, recipient) triplet of greylisting
 * and decides who is spared it. Owns nothing; pure (no I/O, clock or
 * allocation), any thread. Outputs are always NUL-terminated, cut at their
 * size. Does not: remember triplets or decide pass or defer (the store
 * does, store_greylist.c), or log (check_greylist.c). */
#include "check/greylist.h"

#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define GREYLIST_SKIP_NAME(e, s) s,
static const char *const skip_names[] = {GREYLIST_SKIPS(GREYLIST_SKIP_NAME)};

const char *
greylist_skip_name(enum greylist_skip s)
{
    return (unsigned)s < sizeof(skip_names) / sizeof(skip_names[0]) ? skip_names[s] : "unknown";
}

enum greylist_skip
greylist_skip(const struct conf *c, const struct sockaddr *peer, bool client_trusted,
              const struct addr *rcpt)
{
    const struct conf_domain *d = NULL;

    if (!rcpt->is_postmaster && !rcpt->domain_literal)
        d = conf_domain_find(c, rcpt->domain_lc, strlen(rcpt->domain_lc));
    if (rcpt->is_postmaster) {
        /* <postmaster> alone: greylisted by no domain */
        return c->ndomains > 0 ? GREYLIST_POSTMASTER : GREYLIST_OFF;
    }
    if (d == NULL || !d->greylist)
        return GREYLIST_OFF;
    /* RFC 5321 4.5.1: mail to the postmaster must get through, and what
     * reaches it is often about a problem with mail, greylisting included */
    if (addr_is_postmaster(rcpt))
        return GREYLIST_POSTMASTER;
    if (conf_cidr_match(c->trusted_networks, c->ntrusted_networks, peer))
        return GREYLIST_TRUSTED_NETWORK;
    if (client_trusted)
        return GREYLIST_CLIENT_TRUSTED;
    return GREYLIST_APPLIES;
}

void
greylist_client(const struct sockaddr *peer, const char *spf_domain, char out[GREYLIST_CLIENT_MAX])
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    char ip[INET6_ADDRSTRLEN] = "";
    int family = peer != NULL ? peer->sa_family : AF_UNSPEC;

    if (spf_domain != NULL && spf_domain[0] != '\0') {
        size_t n = strlen(spf_domain);

        n = n < GREYLIST_CLIENT_MAX - 5 ? n : GREYLIST_CLIENT_MAX - 5;
        memcpy(out, "spf:", 4);
        for (size_t i = 0; i < n; i++)
            out[4 + i] = ascii_lower(spf_domain[i]);
        out[4 + n] = '\0';
        return;
    }
    if (family == AF_INET6) {
        memcpy(&sin6, peer, sizeof(sin6));
        if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
            memset(&sin, 0, sizeof(sin));
            memcpy(&sin.sin_addr, sin6.sin6_addr.s6_addr + 12, 4);
            family = AF_INET;
        } else {
            memset(sin6.sin6_addr.s6_addr + 8, 0, 8); /* the /64 */
            inet_ntop(AF_INET6, &sin6.sin6_addr, ip, sizeof(ip));
        }
    } else if (family == AF_INET) {
        memcpy(&sin, peer, sizeof(sin));
    }
    if (family == AF_INET) {
        unsigned char *a = (unsigned char *)&sin.sin_addr;

        a[3] = 0; /* the /24 */
        inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof(ip));
    }
    snprintf(out, GREYLIST_CLIENT_MAX, "net:%s/%s", ip[0] ? ip : "unknown",
             family == AF_INET ? "24" : "64");
}

static void
lower_copy(const char *s, char out[ADDR_PATH_MAX])
{
    size_t i = 0;

    for (; s[i] != '\0' && i < ADDR_PATH_MAX - 1; i++)
        out[i] = ascii_lower(s[i]);
    out[i] = '\0';
}

void
greylist_rcpt(const char *mailbox, char out[ADDR_PATH_MAX])
{
    lower_copy(mailbox, out);
}

/* Appends s[0..n) to out[*len], within ADDR_PATH_MAX. */
static void
put(char *out, size_t *len, const char *s, size_t n)
{
    n = n < ADDR_PATH_MAX - 1 - *len ? n : ADDR_PATH_MAX - 1 - *len;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
}

static bool
is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* A local part's numbers standing alone become '#'. */
static void
put_numbers(char *out, size_t *len, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = i;

        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
        if (k > i && (i == 0 || !is_word(s[i - 1])) && (k == n || !is_word(s[k]))) {
            put(out, len, "#", 1);
            i = k;
        } else {
            put(out, len, s + i, k > i ? k - i : 1);
            i = k > i ? k : i + 1;
        }
    }
}

/* SRS0=HASH=TT=domain=local and SRS1=HASH=fwd==HASH=TT=domain=local: the
 * hashes and times become '#'. */
static void
put_srs(char *out, size_t *len, const char *s, size_t n, bool srs1)
{
    size_t field = 0, empty = 0;

    for (size_t i = 0; i <= n; field++) {
        const char *eq = memchr(s + i, '=', n - i);
        size_t end = eq != NULL ? (size_t)(eq - s) : n;
        bool hash = field == 1 || field == 2;

        if (srs1) {
            if (field >= 3 && end == i && empty == 0)
                empty = field; /* the "==" before the first forwarder's part */
            hash = field == 1 || (empty > 0 && (field == empty + 1 || field == empty + 2));
        }
        if (field > 0)
            put(out, len, "=", 1);
        put(out, len, hash && end > i ? "#" : s + i, hash && end > i ? 1 : end - i);
        i = end + 1;
    }
}

void
greylist_sender(const char *mailbox, char out[ADDR_PATH_MAX])
{
    char buf[ADDR_PATH_MAX];
    const char *at, *local = buf, *plus;
    size_t len = 0, n;

    lower_copy(mailbox, buf);
    at = strrchr(buf, '@');
    out[0] = '\0';
    if (at == NULL || buf[0] == '"') {
        put(out, &len, buf, strlen(buf));
        return;
    }
    /* BATV (draft-levine-smtp-batv): prvs=TAG=local */
    if (strncmp(local, "prvs=", 5) == 0) {
        const char *eq = memchr(local + 5, '=', (size_t)(at - local - 5));

        if (eq != NULL)
            local = eq + 1;
    }
    n = (size_t)(at - local);
    if (n > 5 && (strncmp(local, "srs0=", 5) == 0 || strncmp(local, "srs1=", 5) == 0)) {
        put_srs(out, &len, local, n, local[3] == '1');
    } else {
        plus = memchr(local, '+', n);
        put_numbers(out, &len, local, plus != NULL && plus > local ? (size_t)(plus - local) : n);
    }
    put(out, &len, at, strlen(at));
}
