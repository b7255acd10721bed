/* scache: owns a table of clients in order of use (base/clru: keyed hash,
 * least recently used evicted first): {client key, each test's pass
 * expiry}. One thread (the loop's, in practice); pure: no clock, no I/O;
 * allocation failures panic (xmalloc).
 *
 * An entry answers for the store as long as it is in the cache: it was
 * made from a store lookup (or a pass, and a pass only ever moves an
 * expiry later), and every pass recorded since went through it. So an
 * entry with no pass, or with passes expired, is a valid "not known"
 * answer, and the cache holds unknown clients too: a bot that reconnects
 * costs no store lookup. Bounded memory: at most max entries; a new
 * client when the cache is full evicts the least recently used one, which
 * costs at worst one store lookup later. Every operation is O(1) (clru). */
#include "check/scache.h"

#include <stdlib.h>
#include <string.h>

#include "base/clru.h"
#include "base/util.h"

struct scache_entry {
    struct clru_entry h; /* first: the table's entry is ours */
    int64_t until[SCREEN_NTESTS];
};

struct scache {
    struct clru *t;
};

static const char *const test_names[] = {
#define SCREEN_TEST_NAME(id, name) name,
    SCREEN_TESTS(SCREEN_TEST_NAME)
#undef SCREEN_TEST_NAME
};

const char *
screen_test_name(enum screen_test t)
{
    return (unsigned)t < SCREEN_NTESTS ? test_names[t] : "?";
}

int
screen_test_find(const char *name)
{
    for (int i = 0; i < SCREEN_NTESTS; i++)
        if (strcmp(test_names[i], name) == 0)
            return i;
    return -1;
}

struct scache *
scache_new(size_t max_clients, uint64_t seed)
{
    struct scache *c;

    if (max_clients == 0)
        mxd_panic("scache_new: max_clients must be > 0");
    c = xcalloc(1, sizeof(*c));
    c->t = clru_new(max_clients, sizeof(struct scache_entry), seed);
    return c;
}

void
scache_free(struct scache *c)
{
    if (c == NULL)
        return;
    clru_free(c->t);
    free(c);
}

size_t
scache_size(const struct scache *c)
{
    return clru_size(c->t);
}

bool
scache_get(struct scache *c, const unsigned char key[IPTAB_KEY_LEN], int64_t until[SCREEN_NTESTS])
{
    struct scache_entry *e = (struct scache_entry *)clru_get(c->t, key);

    if (e == NULL)
        return false;
    memcpy(until, e->until, sizeof(e->until));
    return true;
}

void
scache_put(struct scache *c, const unsigned char key[IPTAB_KEY_LEN],
           const int64_t until[SCREEN_NTESTS])
{
    struct scache_entry *e = (struct scache_entry *)clru_put(c->t, key, NULL);

    for (int t = 0; t < SCREEN_NTESTS; t++) /* (a new entry's are 0) */
        if (until[t] > e->until[t])
            e->until[t] = until[t];
}
