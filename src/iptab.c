/* iptab: owns a chained hash table of {address, count}; entries exist only
 * while count > 0, so its size follows the number of distinct connected
 * clients. Loop thread only. IPv4-mapped IPv6 addresses count as the IPv4
 * address, so a client cannot double its allowance by switching forms. */
#include "iptab.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define IPTAB_BUCKETS 4096

struct iptab_entry {
    struct iptab_entry *next;
    unsigned char key[16];
    unsigned count;
};

struct iptab {
    struct iptab_entry *buckets[IPTAB_BUCKETS];
};

struct iptab *
iptab_new(void)
{
    return xcalloc(1, sizeof(struct iptab));
}

void
iptab_free(struct iptab *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < IPTAB_BUCKETS; i++) {
        struct iptab_entry *e = t->buckets[i];

        while (e != NULL) {
            struct iptab_entry *n = e->next;

            free(e);
            e = n;
        }
    }
    free(t);
}

/* 16-octet key: IPv6 as is, IPv4 as ::ffff:a.b.c.d. */
static void
iptab_key(const struct sockaddr *sa, unsigned char key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    } else if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    }
}

static struct iptab_entry **
iptab_find(struct iptab *t, const unsigned char key[16])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    struct iptab_entry **pp;

    for (size_t i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    pp = &t->buckets[h % IPTAB_BUCKETS];
    while (*pp != NULL && memcmp((*pp)->key, key, 16) != 0)
        pp = &(*pp)->next;
    return pp;
}

unsigned
iptab_inc(struct iptab *t, const struct sockaddr *sa)
{
    unsigned char key[16];
    struct iptab_entry **pp;

    iptab_key(sa, key);
    pp = iptab_find(t, key);
    if (*pp == NULL) {
        *pp = xcalloc(1, sizeof(**pp));
        memcpy((*pp)->key, key, 16);
    }
    return ++(*pp)->count;
}

void
iptab_dec(struct iptab *t, const struct sockaddr *sa)
{
    unsigned char key[16];
    struct iptab_entry **pp;
    struct iptab_entry *e;

    iptab_key(sa, key);
    pp = iptab_find(t, key);
    e = *pp;
    if (e == NULL)
        mxd_panic("iptab_dec: address not counted");
    if (--e->count == 0) {
        *pp = e->next;
        free(e);
    }
}
