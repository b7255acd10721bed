/* screen: owns the screening's memory for the process: the cache (scache)
 * and the passes waiting to be written; each lookup request until its
 * store job is back. Loop thread only. The store is the truth across
 * restarts; the cache answers for it while it holds a client (scache.c
 * says why that is sound), so a client costs one store lookup per
 * eviction or restart, and none while it is cached.
 *
 * Writes never hold up a message: passes go to the store's writer in one
 * job at a time, the passes since the last job in one batch of at most
 * SCREEN_JOB_MAX (its own savepoint in the group commit, one upsert per
 * pass), so however many clients pass, the writer sees at most one small
 * screen job per transaction. Past SCREEN_PENDING_MAX passes waiting (a
 * writer that stalls), more passes stay in the cache only. Errors: a lookup that
 * fails answers "no pass" (the client is tested again); a write that
 * fails loses those passes (they are taken again at the next visit). */
#include "check/screen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/iptab.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/util.h"
#include "store/store.h"

/* Passes one write job carries: a few microseconds of upserts each, so a
 * job of 64 is lost in the noise of the group commit it is in, while 4096
 * passes a job added ~16 ms to every commit and cut the message rate to a
 * quarter (tests/bench/screen_store.c, docs/performance.md); one job per
 * transaction still writes far more passes a second than clients can pass
 * (max_connections / greet_wait). */
#define SCREEN_JOB_MAX 64
/* Passes waiting for a job, at most: past that (a writer that stalls for
 * long) passes stay in the cache only. */
#define SCREEN_PENDING_MAX 4096

struct screen {
    struct store *store;
    struct scache *cache;
    unsigned jobs;                     /* store jobs out: lookups and the write */
    bool writing;                      /* a write job is out */
    bool dead;                         /* screen_free was called */
    struct store_screen_pass *pending; /* waiting for the next write */
    size_t npending, cap;
    size_t nwriting; /* passes in the write job out */
    bool dropped;    /* passes were dropped since the last log line */
};

struct screen_req {
    struct screen *sc;
    unsigned char key[IPTAB_KEY_LEN];
    int64_t now;
    screen_cb cb;
    void *arg;
};

struct screen *
screen_new(struct store *store, size_t max_clients, uint64_t seed)
{
    struct screen *sc = xcalloc(1, sizeof(*sc));

    sc->store = store;
    sc->cache = scache_new(max_clients, seed);
    return sc;
}

static void
really_free(struct screen *sc)
{
    scache_free(sc->cache);
    free(sc->pending);
    free(sc);
}

static void flush(struct screen *sc);

void
screen_free(struct screen *sc)
{
    if (sc == NULL)
        return;
    sc->dead = true;
    if (!sc->writing)
        flush(sc);
    if (sc->jobs == 0)
        really_free(sc);
}

void
screen_client_text(const struct sockaddr *sa, unsigned v6_prefix, char *buf, size_t size)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    unsigned char key[IPTAB_KEY_LEN];
    char ip[INET6_ADDRSTRLEN];

    iptab_key(sa, v6_prefix, key);
    if (memcmp(key, mapped, sizeof(mapped)) == 0) {
        snprintf(buf, size, "%u.%u.%u.%u", key[12], key[13], key[14], key[15]);
        return;
    }
    if (sa->sa_family != AF_INET6 || inet_ntop(AF_INET6, key, ip, sizeof(ip)) == NULL) {
        snprintf(buf, size, "unknown");
        return;
    }
    snprintf(buf, size, "%s/%u", ip, v6_prefix >= 1 && v6_prefix <= 128 ? v6_prefix : 128);
}

static bool
known(const int64_t until[SCREEN_NTESTS], int64_t now)
{
    for (int t = 0; t < SCREEN_NTESTS; t++)
        if (until[t] > now)
            return true;
    return false;
}

static void
on_lookup(void *arg, int status, const struct store_screen_pass *passes, size_t n)
{
    struct screen_req *r = arg;
    struct screen *sc = r->sc;
    int64_t until[SCREEN_NTESTS] = {0};

    for (size_t i = 0; i < n; i++) {
        int t = screen_test_find(passes[i].test);

        if (t >= 0 && passes[i].expires > until[t])
            until[t] = passes[i].expires;
    }
    /* A pass recorded while the store was asked is in the cache: merged. */
    if (status == 0 && !sc->dead) {
        scache_put(sc->cache, r->key, until);
        scache_get(sc->cache, r->key, until);
    }
    metrics_count(METRICS_F_SCREEN_LOOKUPS, "store",
                  status != 0            ? "error"
                  : known(until, r->now) ? "known"
                                         : "unknown");
    r->cb(r->arg, until);
    free(r);
    if (--sc->jobs == 0 && sc->dead)
        really_free(sc);
}

bool
screen_lookup(struct screen *sc, const struct sockaddr *sa, unsigned v6_prefix, int64_t now,
              int64_t until[SCREEN_NTESTS], screen_cb cb, void *arg)
{
    struct screen_req *r = xcalloc(1, sizeof(*r));
    char client[STORE_SCREEN_CLIENT_MAX];

    iptab_key(sa, v6_prefix, r->key);
    if (scache_get(sc->cache, r->key, until)) {
        metrics_count(METRICS_F_SCREEN_LOOKUPS, "cache", known(until, now) ? "known" : "unknown");
        free(r);
        return true;
    }
    r->sc = sc;
    r->now = now;
    r->cb = cb;
    r->arg = arg;
    screen_client_text(sa, v6_prefix, client, sizeof(client));
    sc->jobs++;
    store_screen_lookup_async(sc->store, client, now, on_lookup, r);
    return false;
}

static void
on_written(void *arg, int status)
{
    struct screen *sc = arg;

    if (status == 0)
        metrics_add(METRICS_SCREEN_RECORDED, (int64_t)sc->nwriting);
    sc->writing = false;
    sc->nwriting = 0;
    flush(sc); /* what came meanwhile, dead or not: nothing is left behind */
    if (--sc->jobs == 0 && sc->dead)
        really_free(sc);
}

/* The oldest SCREEN_JOB_MAX passes waiting go to the writer in one job. */
static void
flush(struct screen *sc)
{
    size_t n = sc->npending < SCREEN_JOB_MAX ? sc->npending : SCREEN_JOB_MAX;
    struct store_screen_pass *job;
    int64_t now = 0;

    if (n == 0)
        return;
    job = xmalloc(n * sizeof(*job));
    memcpy(job, sc->pending, n * sizeof(*job));
    sc->npending -= n;
    memmove(sc->pending, sc->pending + n, sc->npending * sizeof(*sc->pending));
    for (size_t i = 0; i < n; i++)
        if (job[i].passed > now)
            now = job[i].passed;
    sc->writing = true;
    sc->nwriting = n;
    sc->jobs++;
    store_screen_record_async(sc->store, job, n, now, on_written, sc);
}

void
screen_remember(struct screen *sc, const struct sockaddr *sa, unsigned v6_prefix,
                enum screen_test t, int64_t now, int64_t expires)
{
    unsigned char key[IPTAB_KEY_LEN];
    int64_t until[SCREEN_NTESTS] = {0};
    struct store_screen_pass *p;

    if ((unsigned)t >= SCREEN_NTESTS)
        mxd_panic("screen_remember: test %d", (int)t);
    iptab_key(sa, v6_prefix, key);
    until[t] = expires;
    scache_put(sc->cache, key, until);
    if (sc->npending == SCREEN_PENDING_MAX) {
        if (!sc->dropped)
            log_msg(LOG_WARN, NULL, "check",
                    "screen passes not written pending=%zu reason=\"the store is behind\"",
                    sc->npending);
        sc->dropped = true;
        return;
    }
    sc->dropped = false;
    if (sc->npending == sc->cap) {
        sc->cap = sc->cap ? sc->cap * 2 : 16;
        sc->pending = xrealloc(sc->pending, sc->cap * sizeof(*sc->pending));
    }
    p = &sc->pending[sc->npending++];
    memset(p, 0, sizeof(*p));
    screen_client_text(sa, v6_prefix, p->client, sizeof(p->client));
    snprintf(p->test, sizeof(p->test), "%s", screen_test_name(t));
    p->passed = now;
    p->expires = expires;
    if (!sc->writing)
        flush(sc);
}
