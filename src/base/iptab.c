/* iptab: owns a chained hash table of {client, count}; entries exist only
 * while count > 0, so its size follows the number of distinct connected
 * clients. Loop thread only. A client is an IPv4 address or an IPv6
 * prefix (issue 14: a host that owns a /64 can connect from any of its
 * 2^64 addresses, so counting full addresses would not limit it).
 * IPv4-mapped IPv6 addresses count as the IPv4 address, so a client cannot
 * double its allowance by switching forms. */
#include "base/iptab.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

#define IPTAB_BUCKETS 4096

struct iptab_entry {
    struct iptab_entry *next;
    unsigned char key[IPTAB_KEY_LEN];
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

void
iptab_key(const struct sockaddr *sa, unsigned v6_prefix, unsigned char key[IPTAB_KEY_LEN])
{
    memset(key, 0, IPTAB_KEY_LEN);
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;

        memcpy(key, a, IPTAB_KEY_LEN);
        if (IN6_IS_ADDR_V4MAPPED(a))
            return; /* an IPv4 client: its whole address */
        for (unsigned bit = v6_prefix; bit < IPTAB_KEY_LEN * 8; bit++)
            key[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    } else if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else {
        memset(key, 0xff, IPTAB_KEY_LEN); /* no address (accept failed): not ::/N */
    }
}

static struct iptab_entry **
iptab_find(struct iptab *t, const unsigned char key[IPTAB_KEY_LEN])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    struct iptab_entry **pp;

    for (size_t i = 0; i < IPTAB_KEY_LEN; i++)
        h = (h ^ key[i]) * 16777619u;
    pp = &t->buckets[h % IPTAB_BUCKETS];
    while (*pp != NULL && memcmp((*pp)->key, key, IPTAB_KEY_LEN) != 0)
        pp = &(*pp)->next;
    return pp;
}

unsigned
iptab_inc(struct iptab *t, const struct sockaddr *sa, unsigned v6_prefix)
{
    unsigned char key[IPTAB_KEY_LEN];
    struct iptab_entry **pp;

    iptab_key(sa, v6_prefix, key);
    pp = iptab_find(t, key);
    if (*pp == NULL) {
        *pp = xcalloc(1, sizeof(**pp));
        memcpy((*pp)->key, key, IPTAB_KEY_LEN);
    }
    return ++(*pp)->count;
}

void
iptab_dec(struct iptab *t, const struct sockaddr *sa, unsigned v6_prefix)
{
    unsigned char key[IPTAB_KEY_LEN];
    struct iptab_entry **pp;
    struct iptab_entry *e;

    iptab_key(sa, v6_prefix, key);
    pp = iptab_find(t, key);
    e = *pp;
    if (e == NULL)
        mxd_panic("iptab_dec: address not counted");
    if (--e->count == 0) {
        *pp = e->next;
        free(e);
    }
}
