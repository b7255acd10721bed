/* vcache: owns a chained hash table of {address, answer, expiry}. Any
 * single thread (the loop's, in practice). Pure: no clock; no allocation
 * failure handling beyond xmalloc's panic. Expired entries are not swept:
 * they are replaced when asked again, and the whole table is emptied when
 * it reaches its bound, which keeps memory bounded. */
#include "check/vcache.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define VCACHE_BUCKETS 4096

struct vc_entry {
    struct vc_entry *next;
    uint64_t fresh_until_ms, expires_ms;
    bool ok;
    char address[];
};

struct vcache {
    struct vc_entry *buckets[VCACHE_BUCKETS];
    size_t n, max;
};

static uint32_t
vc_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a over the lower-cased address */

    for (; *s; s++)
        h = (h ^ (unsigned char)ascii_lower(*s)) * 16777619u;
    return h % VCACHE_BUCKETS;
}

struct vcache *
vcache_new(size_t max)
{
    struct vcache *c = xcalloc(1, sizeof(*c));

    c->max = max > 0 ? max : 1;
    return c;
}

static void
vc_clear(struct vcache *c)
{
    for (size_t i = 0; i < VCACHE_BUCKETS; i++) {
        while (c->buckets[i] != NULL) {
            struct vc_entry *e = c->buckets[i];

            c->buckets[i] = e->next;
            free(e);
        }
    }
    c->n = 0;
}

void
vcache_free(struct vcache *c)
{
    if (c == NULL)
        return;
    vc_clear(c);
    free(c);
}

int
vcache_get(const struct vcache *c, const char *address, uint64_t now_ms, bool *fresh)
{
    if (fresh != NULL)
        *fresh = false;
    for (const struct vc_entry *e = c->buckets[vc_hash(address)]; e != NULL; e = e->next) {
        if (ascii_casecmp(e->address, address) != 0)
            continue;
        if (e->expires_ms <= now_ms)
            return -1;
        if (fresh != NULL)
            *fresh = e->fresh_until_ms > now_ms;
        return (int)e->ok;
    }
    return -1;
}

void
vcache_put(struct vcache *c, const char *address, bool ok, uint64_t fresh_until_ms,
           uint64_t expires_ms)
{
    size_t len = strlen(address);
    uint32_t h = vc_hash(address);
    struct vc_entry *e;

    for (struct vc_entry **pp = &c->buckets[h]; *pp != NULL; pp = &(*pp)->next) {
        if (ascii_casecmp((*pp)->address, address) == 0) {
            e = *pp;
            *pp = e->next;
            free(e);
            c->n--;
            break;
        }
    }
    if (c->n >= c->max)
        vc_clear(c);
    e = xmalloc(sizeof(*e) + len + 1);
    memcpy(e->address, address, len + 1);
    e->ok = ok;
    e->fresh_until_ms = fresh_until_ms < expires_ms ? fresh_until_ms : expires_ms;
    e->expires_ms = expires_ms;
    e->next = c->buckets[h];
    c->buckets[h] = e;
    c->n++;
}

size_t
vcache_size(const struct vcache *c)
{
    return c->n;
}
