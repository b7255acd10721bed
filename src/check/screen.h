/* screen: the screening's memory of clients that passed (postscreen's
 * cache): an in-memory cache (scache) in front of the store's screen table
 * (schema 005). One per process, owned by the SMTP server and handed to
 * the checks in struct check_env. Loop thread only. */
#ifndef MXD_SCREEN_H
#define MXD_SCREEN_H

#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "check/scache.h"

struct store;

#define SCREEN_CLIENTS 65536u /* clients the cache holds (about 6 MiB at most) */

struct screen;

/* store is borrowed and must outlive the memory's store jobs (it does:
 * store_close answers every job first); seed keys the cache's hash. */
struct screen *screen_new(struct store *store, size_t max_clients, uint64_t seed);
/* Passes not written yet go to the store now; the memory is freed once
 * its store jobs are back (their callbacks still run). NULL ok. */
void screen_free(struct screen *sc);

/* until[t]: when the client's pass of test t expires (unix seconds; 0:
 * none). Called once per lookup; arg is the caller's. */
typedef void (*screen_cb)(void *arg, const int64_t until[SCREEN_NTESTS]);

/* sa's client (an IPv4 address, or its IPv6 v6_prefix network) as the
 * memory knows it at now: answered from the cache into until[] (true), or
 * asked of the store (false): cb then runs later, exactly once, even
 * after screen_free. A store that fails answers "no pass". */
bool screen_lookup(struct screen *sc, const struct sockaddr *sa, unsigned v6_prefix, int64_t now,
                   int64_t until[SCREEN_NTESTS], screen_cb cb, void *arg);

/* The client passed test t at now: remembered until expires, in the cache
 * at once and in the store with the next write (one write job in flight
 * at a time carries every pass since the last). */
void screen_remember(struct screen *sc, const struct sockaddr *sa, unsigned v6_prefix,
                     enum screen_test t, int64_t now, int64_t expires);

/* sa's client as the store names it: "192.0.2.1", "2001:db8:1:2::/64". */
void screen_client_text(const struct sockaddr *sa, unsigned v6_prefix, char *buf, size_t size);

#endif
