/* clru: owns a hash table of entries (a struct clru_entry header, then the
 * user's values; entry_size bytes each, allocated and freed here) threaded
 * on a list in order of use, most recent first. One thread (the loop's, in
 * practice); pure: no clock, no I/O; allocation failures panic (xmalloc).
 *
 * Bounded memory: at most max entries; a new key when the table is full
 * takes the least recently used entry's place (its memory too: no free and
 * malloc). Every operation is O(1): one keyed hash lookup (slots a power of
 * two >= max, so the load factor is <= 1) and list splices. The hash is a
 * keyed mix, not a cryptographic hash: a client that does not know the seed
 * cannot pick addresses that share a chain. */
#include "base/clru.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct clru {
    struct clru_entry **slots;
    size_t mask; /* slots - 1 (a power of two) */
    struct clru_entry *head, *tail;
    size_t n, max, entry_size;
    uint64_t seed;
};

struct clru *
clru_new(size_t max_clients, size_t entry_size, uint64_t seed)
{
    struct clru *t;
    size_t slots = 16;

    if (max_clients == 0 || entry_size < sizeof(struct clru_entry))
        mxd_panic("clru_new: max_clients %zu, entry_size %zu", max_clients, entry_size);
    t = xcalloc(1, sizeof(*t));
    while (slots < max_clients)
        slots *= 2;
    t->slots = xcalloc(slots, sizeof(*t->slots));
    t->mask = slots - 1;
    t->max = max_clients;
    t->entry_size = entry_size;
    t->seed = seed;
    return t;
}

void
clru_free(struct clru *t)
{
    if (t == NULL)
        return;
    for (struct clru_entry *e = t->head, *n; e != NULL; e = n) {
        n = e->next;
        free(e);
    }
    free(t->slots);
    free(t);
}

size_t
clru_size(const struct clru *t)
{
    return t->n;
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

/* (Static, as is find: the library is built -fPIC, where a call to an
 * exported function is not inlined.) */
static uint64_t
hash(const struct clru *t, const unsigned char key[IPTAB_KEY_LEN])
{
    uint64_t hi, lo;

    memcpy(&hi, key, sizeof(hi));
    memcpy(&lo, key + sizeof(hi), sizeof(lo));
    return mix64(mix64(hi ^ t->seed) ^ lo);
}

uint64_t
clru_hash(const struct clru *t, const unsigned char key[IPTAB_KEY_LEN])
{
    return hash(t, key);
}

static struct clru_entry **
slot_of(const struct clru *t, const unsigned char key[IPTAB_KEY_LEN])
{
    return &t->slots[hash(t, key) & t->mask];
}

/* The link that points at key's entry in chain *pp (*link NULL when
 * absent). */
static struct clru_entry **
chain_find(struct clru_entry **pp, const unsigned char key[IPTAB_KEY_LEN])
{
    while (*pp != NULL && memcmp((*pp)->key, key, IPTAB_KEY_LEN) != 0)
        pp = &(*pp)->hnext;
    return pp;
}

static struct clru_entry *
find(const struct clru *t, const unsigned char key[IPTAB_KEY_LEN])
{
    return *chain_find(slot_of(t, key), key);
}

struct clru_entry *
clru_peek(const struct clru *t, const unsigned char key[IPTAB_KEY_LEN])
{
    return find(t, key);
}

static void
list_unlink(struct clru *t, struct clru_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        t->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        t->tail = e->prev;
    e->prev = e->next = NULL;
}

static void
list_push_front(struct clru *t, struct clru_entry *e)
{
    e->prev = NULL;
    e->next = t->head;
    if (t->head != NULL)
        t->head->prev = e;
    else
        t->tail = e;
    t->head = e;
}

static void
touch(struct clru *t, struct clru_entry *e)
{
    if (t->head != e) {
        list_unlink(t, e);
        list_push_front(t, e);
    }
}

/* Takes e out of its chain and the list (t->n is the caller's). */
static void
detach(struct clru *t, struct clru_entry *e)
{
    struct clru_entry **pp = slot_of(t, e->key);

    while (*pp != e) {
        if (*pp == NULL)
            mxd_panic("clru: entry not in its table");
        pp = &(*pp)->hnext;
    }
    *pp = e->hnext;
    list_unlink(t, e);
}

struct clru_entry *
clru_get(struct clru *t, const unsigned char key[IPTAB_KEY_LEN])
{
    struct clru_entry *e = find(t, key);

    if (e != NULL)
        touch(t, e);
    return e;
}

struct clru_entry *
clru_put(struct clru *t, const unsigned char key[IPTAB_KEY_LEN], bool *added)
{
    struct clru_entry **slot = slot_of(t, key), *e = *chain_find(slot, key);

    if (added != NULL)
        *added = e == NULL;
    if (e != NULL) {
        touch(t, e);
        return e;
    }
    if (t->n == t->max) { /* the least recently used one makes room */
        e = t->tail;
        detach(t, e);
        memset(e, 0, t->entry_size);
    } else {
        e = xcalloc(1, t->entry_size);
        t->n++;
    }
    memcpy(e->key, key, IPTAB_KEY_LEN);
    e->hnext = *slot; /* (slot is still key's chain: detach only unlinks) */
    *slot = e;
    list_push_front(t, e);
    return e;
}

struct clru_entry *
clru_oldest(const struct clru *t)
{
    return t->tail;
}

void
clru_drop(struct clru *t, struct clru_entry *e)
{
    detach(t, e);
    t->n--;
    free(e);
}
