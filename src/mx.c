/* mx: picks and orders the MX hosts a backup MX may forward to (RFC 5321
 * 5.1). Owns nothing beyond a scratch array freed before returning; pure
 * (no I/O, clock or randomness of its own: rand_fn is passed in), so any
 * thread may call it. Cannot fail: OOM panics through xmalloc. It does not
 * resolve names, compare addresses (a record naming one of our IPs under
 * another name is not detected) or treat the RFC 7505 null MX specially;
 * the caller (dns) handles those. */
#include "mx.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

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
