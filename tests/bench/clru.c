/* clru: how fast are the two per-client tables, anvil (rates) and scache
 * (the screening's memory)? A benchmark, not a test: 1,000,000 operations
 * on clients drawn at random (fixed seed) from 65,536 IPv4 addresses, in a
 * table of 65,536 clients (all fit: hits after the first round) and of
 * 16,384 (three in four operations evict the least recently used client).
 *
 * Build against a release build directory's static libraries, then run:
 *
 *   B=/tmp/build-rel; cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Isrc \
 *     tests/bench/clru.c $B/src/libmxdproto.a $B/src/libmxdcore.a -lsystemd \
 *     -o /tmp/clru_bench && /tmp/clru_bench [rounds]
 *
 * Prints millions of operations per second, the best of the rounds
 * (default 5). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/iptab.h"
#include "check/anvil.h"
#include "check/scache.h"

#define OPS     1000000u
#define CLIENTS 65536u

static struct sockaddr_in addrs[CLIENTS];
static unsigned char keys[CLIENTS][IPTAB_KEY_LEN];
static unsigned pick[OPS];

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
setup(void)
{
    uint64_t x = UINT64_C(0x9e3779b97f4a7c15);

    for (unsigned i = 0; i < CLIENTS; i++) {
        addrs[i].sin_family = AF_INET;
        addrs[i].sin_addr.s_addr = htonl(0x0a000000u | i);
        iptab_key((const struct sockaddr *)&addrs[i], 64, keys[i]);
    }
    for (unsigned i = 0; i < OPS; i++) { /* xorshift64 */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pick[i] = (unsigned)(x % CLIENTS);
    }
}

static unsigned sink;

static double
bench_anvil(size_t max)
{
    struct anvil *a = anvil_new(max, ANVIL_WINDOW_MS, 12345);
    double t0 = now_s(), t;

    for (unsigned i = 0; i < OPS; i++) /* 1,000 operations a millisecond */
        sink += anvil_hit(a, (const struct sockaddr *)&addrs[pick[i]], 64, ANVIL_CONNECT,
                          1000000 + i / 1000);
    t = now_s() - t0;
    anvil_free(a);
    return OPS / t / 1e6;
}

static double
bench_scache_put(struct scache *c)
{
    int64_t until[SCREEN_NTESTS] = {0};
    double t0 = now_s();

    for (unsigned i = 0; i < OPS; i++) {
        until[i % SCREEN_NTESTS] = i;
        scache_put(c, keys[pick[i]], until);
    }
    return OPS / (now_s() - t0) / 1e6;
}

static double
bench_scache_get(struct scache *c)
{
    int64_t until[SCREEN_NTESTS];
    double t0 = now_s();

    for (unsigned i = 0; i < OPS; i++)
        sink += scache_get(c, keys[pick[OPS - 1 - i]], until);
    return OPS / (now_s() - t0) / 1e6;
}

static double
best(double a, double b)
{
    return a > b ? a : b;
}

int
main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    static const size_t sizes[] = {CLIENTS, CLIENTS / 4};

    setup();
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        double hit = 0, put = 0, get = 0;

        for (int r = 0; r < rounds; r++) {
            struct scache *c = scache_new(sizes[s], 12345);

            hit = best(hit, bench_anvil(sizes[s]));
            put = best(put, bench_scache_put(c));
            get = best(get, bench_scache_get(c));
            scache_free(c);
        }
        printf("table %6zu, %u clients: anvil_hit %.1f M/s, scache_put %.1f M/s, "
               "scache_get %.1f M/s\n",
               sizes[s], CLIENTS, hit, put, get);
    }
    return sink == 42 ? 1 : 0;
}
