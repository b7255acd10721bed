/* mx: picks and orders the MX hosts a backup MX may forward to (RFC 5321
 * 5.1), by name (mx_select) and, once they are resolved, by address
 * (mx_local_*, mx_cut_self: a record naming one of our addresses under
 * another name is us too). Owns a scratch array freed before returning and
 * the address list of a struct mx_local; pure (no I/O, clock or randomness
 * of its own: rand_fn and the interface addresses are passed in), so any
 * thread may call it. Cannot fail: OOM panics through xmalloc. It does not
 * resolve names, list interfaces or treat the RFC 7505 null MX specially;
 * the callers (dns, deliver) do. */
#include "dns/mx.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "base/iptab.h"
#include "base/util.h"

/* Length of a name without one trailing dot. */
static size_t
name_len(const char *s)
{
    size_t len = strnlen(s, MX_NAME_MAX);

    if (len > 0 && s[len - 1] == '.')
        len--;
    return len;
}

static bool
name_eq(const char *a, const char *b)
{
    size_t la = name_len(a), lb = name_len(b);

    return la == lb && ascii_ncasecmp(a, b, la) == 0;
}

struct mx_order {
    unsigned pref;
    size_t idx; /* input position: makes the sort stable */
};

static int
order_cmp(const void *pa, const void *pb)
{
    const struct mx_order *a = pa, *b = pb;

    if (a->pref != b->pref)
        return a->pref < b->pref ? -1 : 1;
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

/* Stable sort by preference (qsort is not stable, so sort positions). */
static void
sort_by_pref(struct mx_host *hosts, size_t n)
{
    struct mx_order *ord;
    struct mx_host *tmp;

    if (n < 2)
        return;
    ord = xmalloc(n * sizeof(*ord));
    tmp = xmalloc(n * sizeof(*tmp));
    for (size_t i = 0; i < n; i++) {
        ord[i].pref = hosts[i].pref;
        ord[i].idx = i;
    }
    qsort(ord, n, sizeof(*ord), order_cmp);
    for (size_t i = 0; i < n; i++)
        tmp[i] = hosts[ord[i].idx];
    memcpy(hosts, tmp, n * sizeof(*tmp));
    free(tmp);
    free(ord);
}

static void
swap_hosts(struct mx_host *a, struct mx_host *b)
{
    struct mx_host t = *a;

    *a = *b;
    *b = t;
}

/* Fisher-Yates within each run of equal preference of a sorted array:
 * RFC 5321 5.1 asks senders to spread load over equal-preference MXs. */
static void
shuffle_groups(struct mx_host *hosts, size_t n, unsigned (*rand_fn)(void *arg), void *rand_arg)
{
    size_t start = 0;

    while (start < n) {
        size_t end = start + 1;

        while (end < n && hosts[end].pref == hosts[start].pref)
            end++;
        for (size_t k = end - 1; k > start; k--) {
            size_t r = (size_t)rand_fn(rand_arg) % (k - start + 1);

            if (start + r != k)
                swap_hosts(&hosts[start + r], &hosts[k]);
        }
        start = end;
    }
}

size_t
mx_select(struct mx_host *hosts, size_t n, const char *self, unsigned (*rand_fn)(void *arg),
          void *rand_arg, bool *self_listed)
{
    bool listed = false;
    unsigned bar = 0;
    size_t kept = 0;

    /* The lowest preference among the records naming us sets the bar. */
    for (size_t i = 0; self != NULL && self[0] != '\0' && i < n; i++) {
        if (name_eq(hosts[i].name, self) && (!listed || hosts[i].pref < bar)) {
            bar = hosts[i].pref;
            listed = true;
        }
    }
    if (self_listed != NULL)
        *self_listed = listed;
    /* RFC 5321 5.1: only strictly more preferred hosts than ourselves, or
     * mail would bounce between equally preferred backups. */
    for (size_t i = 0; i < n; i++) {
        if (listed && hosts[i].pref >= bar)
            continue;
        if (kept != i)
            hosts[kept] = hosts[i];
        kept++;
    }
    sort_by_pref(hosts, kept);
    if (rand_fn != NULL)
        shuffle_groups(hosts, kept, rand_fn, rand_arg);
    return kept;
}

/* ---- ourselves by address ---------------------------------------------- */

static uint16_t
port_of(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
}

/* 0.0.0.0 (also IPv4-mapped) or :: (iptab_key's whole-address form). */
static bool
is_wildcard(const struct sockaddr *sa)
{
    static const unsigned char any4[IPTAB_KEY_LEN] = {[10] = 0xff, [11] = 0xff};
    static const unsigned char any6[IPTAB_KEY_LEN];
    unsigned char k[IPTAB_KEY_LEN];

    iptab_key(sa, IPTAB_KEY_LEN * 8, k);
    return memcmp(k, any4, sizeof(k)) == 0 || memcmp(k, any6, sizeof(k)) == 0;
}

/* Same address, an IPv4-mapped one as the IPv4 one (ports not compared). */
static bool
addr_eq(const struct sockaddr *a, const struct sockaddr *b)
{
    unsigned char ka[IPTAB_KEY_LEN], kb[IPTAB_KEY_LEN];

    iptab_key(a, IPTAB_KEY_LEN * 8, ka);
    iptab_key(b, IPTAB_KEY_LEN * 8, kb);
    return memcmp(ka, kb, sizeof(ka)) == 0;
}

static void
local_add(struct mx_local *l, const struct sockaddr_storage *ss, uint16_t port)
{
    struct sockaddr_storage *d;

    l->addrs = xrealloc(l->addrs, (l->n + 1) * sizeof(*l->addrs));
    d = &l->addrs[l->n++];
    *d = *ss;
    if (d->ss_family == AF_INET)
        ((struct sockaddr_in *)(void *)d)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)(void *)d)->sin6_port = htons(port);
}

static bool
family_ok(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET || ss->ss_family == AF_INET6;
}

void
mx_local_set(struct mx_local *l, const struct sockaddr_storage *listen, size_t n,
             const struct sockaddr_storage *ifs, size_t nifs)
{
    *l = (struct mx_local){0};
    for (size_t i = 0; i < n; i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&listen[i];
        uint16_t port;

        if (!family_ok(&listen[i]))
            continue;
        port = port_of(sa);
        if (!is_wildcard(sa)) {
            local_add(l, &listen[i], port);
            continue;
        }
        for (size_t k = 0; k < nifs; k++) {
            /* 0.0.0.0 takes IPv4 only; :: both (IPV6_V6ONLY is off) */
            if (family_ok(&ifs[k]) && (sa->sa_family == AF_INET6 || ifs[k].ss_family == AF_INET))
                local_add(l, &ifs[k], port);
        }
    }
}

void
mx_local_free(struct mx_local *l)
{
    free(l->addrs);
    *l = (struct mx_local){0};
}

bool
mx_local_has(const struct mx_local *l, const struct sockaddr *sa, uint16_t port)
{
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
        return false;
    for (size_t i = 0; i < l->n; i++) {
        const struct sockaddr *m = (const struct sockaddr *)&l->addrs[i];

        if (port_of(m) == port && addr_eq(m, sa))
            return true;
    }
    return false;
}

size_t
mx_cut_self(const unsigned *prefs, const bool *is_self, size_t n)
{
    bool found = false;
    unsigned bar = 0;
    size_t kept = 0;

    for (size_t i = 0; i < n; i++) {
        if (is_self[i] && (!found || prefs[i] < bar)) {
            bar = prefs[i];
            found = true;
        }
    }
    while (kept < n && (!found || prefs[kept] < bar))
        kept++;
    return kept;
}
