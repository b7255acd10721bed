/* scache: owns a hash table of clients threaded on a list in order of use
 * (most recent first): {client key, each test's pass expiry}. One thread
 * (the loop's, in practice); pure: no clock, no I/O; allocation failures
 * panic (xmalloc).
 *
 * An entry answers for the store as long as it is in the cache: it was
 * made from a store lookup (or a pass, and a pass only ever moves an
 * expiry later), and every pass recorded since went through it. So an
 * entry with no pass, or with passes expired, is a valid "not known"
 * answer, and the cache holds unknown clients too: a bot that reconnects
 * costs no store lookup. Bounded memory: at most max entries; a new
 * client when the cache is full evicts the least recently used one, which
 * costs at worst one store lookup later. Every operation is O(1): one
 * keyed hash lookup (load factor <= 1) and list splices. */
#include "check/scache.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct scache_entry {
    struct scache_entry *hnext;       /* hash chain */
    struct scache_entry *prev, *next; /* order of use: c->head is the most recent */
    unsigned char key[IPTAB_KEY_LEN];
    int64_t until[SCREEN_NTESTS];
};

struct scache {
    struct scache_entry **slots;
    size_t mask; /* slots - 1 (a power of two) */
    struct scache_entry *head, *tail;
    size_t n, max;
    uint64_t seed;
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
    struct scache *c = xcalloc(1, sizeof(*c));
    size_t slots = 16;

    if (max_clients == 0)
        mxd_panic("scache_new: max_clients must be > 0");
    while (slots < max_clients)
        slots *= 2;
    c->slots = xcalloc(slots, sizeof(*c->slots));
    c->mask = slots - 1;
    c->max = max_clients;
    c->seed = seed;
    return c;
}

void
scache_free(struct scache *c)
{
    if (c == NULL)
        return;
    for (struct scache_entry *e = c->head, *n; e != NULL; e = n) {
        n = e->next;
        free(e);
    }
    free(c->slots);
    free(c);
}

size_t
scache_size(const struct scache *c)
{
    return c->n;
}

/* splitmix64's finaliser: every input bit moves every output bit. */
static uint64_t
mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* A keyed mix, not a cryptographic hash: a client that does not know the
 * seed cannot pick addresses that share a chain. The link that points at
 * key's entry (*link NULL when absent). */
static struct scache_entry **
find(const struct scache *c, const unsigned char key[IPTAB_KEY_LEN])
{
    uint64_t hi, lo;
    struct scache_entry **pp;

    memcpy(&hi, key, sizeof(hi));
    memcpy(&lo, key + sizeof(hi), sizeof(lo));
    pp = &c->slots[mix64(mix64(hi ^ c->seed) ^ lo) & c->mask];
    while (*pp != NULL && memcmp((*pp)->key, key, IPTAB_KEY_LEN) != 0)
        pp = &(*pp)->hnext;
    return pp;
}

static void
list_unlink(struct scache *c, struct scache_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void
list_push_front(struct scache *c, struct scache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head != NULL)
        c->head->prev = e;
    else
        c->tail = e;
    c->head = e;
}

bool
scache_get(struct scache *c, const unsigned char key[IPTAB_KEY_LEN], int64_t until[SCREEN_NTESTS])
{
    struct scache_entry *e = *find(c, key);

    if (e == NULL)
        return false;
    list_unlink(c, e);
    list_push_front(c, e);
    memcpy(until, e->until, sizeof(e->until));
    return true;
}

void
scache_put(struct scache *c, const unsigned char key[IPTAB_KEY_LEN],
           const int64_t until[SCREEN_NTESTS])
{
    struct scache_entry **pp = find(c, key), *e = *pp;

    if (e != NULL) {
        list_unlink(c, e);
    } else {
        if (c->n == c->max) {
            struct scache_entry *old = c->tail, **op = find(c, old->key);

            *op = old->hnext;
            list_unlink(c, old);
            c->n--;
            free(old);
            pp = find(c, key); /* the chain may have changed */
        }
        e = xcalloc(1, sizeof(*e));
        memcpy(e->key, key, IPTAB_KEY_LEN);
        e->hnext = *pp;
        *pp = e;
        c->n++;
    }
    list_push_front(c, e);
    for (int t = 0; t < SCREEN_NTESTS; t++)
        if (until[t] > e->until[t])
            e->until[t] = until[t];
}
