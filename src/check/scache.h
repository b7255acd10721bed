/* scache: the in-memory side of the screening's memory: per client (an
 * iptab_key), when each screening test's last pass expires. Bounded: the
 * least recently used client goes first. Pure: no clock (the caller
 * compares expiries with its time), no I/O. */
#ifndef MXD_SCACHE_H
#define MXD_SCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/iptab.h"

/* The screening tests whose passes are remembered: id, and its name in the
 * store (schema 005, screen.test: a free text column keyed with the client,
 * so a new test needs no migration), logs and metrics. */
#define SCREEN_TESTS(X)            X(PREGREET, "pregreet") X(DNSBL, "dnsbl")
#define SCREEN_TEST_ENUM(id, name) SCREEN_##id,
enum screen_test { SCREEN_TESTS(SCREEN_TEST_ENUM) SCREEN_NTESTS };
#undef SCREEN_TEST_ENUM

/* "pregreet", "dnsbl"; "?" for anything else. */
const char *screen_test_name(enum screen_test t);
/* The test named name, or -1. */
int screen_test_find(const char *name);

struct scache;

/* At most max_clients (>= 1) clients; seed keys the hash (pass a random
 * value: clients choose their addresses). Caller frees. */
struct scache *scache_new(size_t max_clients, uint64_t seed);
void scache_free(struct scache *c);

/* True when the cache knows the client: until[t] is when its pass of test
 * t expires (unix seconds; 0: none known). An entry is complete: it holds
 * what the store had when it was looked up, and every pass since. The
 * client becomes the most recently used. */
bool scache_get(struct scache *c, const unsigned char key[IPTAB_KEY_LEN],
                int64_t until[SCREEN_NTESTS]);

/* Merges until[] into the client's entry (each test keeps the later
 * expiry), adding the client (the least recently used one may go). */
void scache_put(struct scache *c, const unsigned char key[IPTAB_KEY_LEN],
                const int64_t until[SCREEN_NTESTS]);

/* Clients in the cache now. */
size_t scache_size(const struct scache *c);

#endif
