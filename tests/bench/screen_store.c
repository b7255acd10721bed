/* screen_store: do the screening's pass writes hold up message commits?
 * A benchmark, not a test: the store alone in one process (no network, no
 * clients' CPU), so the writer's share is all that is measured.
 *
 * Build against a build directory's static libraries, then run:
 *
 *   B=/tmp/build-x; cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Isrc \
 *     tests/bench/screen_store.c $B/src/libmxdstore.a $B/src/libmxddb.a \
 *     $B/src/libmxdproto.a $B/src/libmxdcore.a -luv -lsqlite3 -lsystemd -lpthread \
 *     -o /tmp/screen_store && /tmp/screen_store [messages] [passes a job]
 *
 * Commits N messages of 4 KiB (one recipient), 50 in flight at a time, into
 * a fresh queue.db, three ways: alone; with a screen record job of K passes
 * always waiting beside them (each resubmitted as soon as the previous is
 * back: the worst case, a screen job in every group commit, far more than
 * the one-at-a-time batching of real passes gives); with K = 64
 * (SCREEN_JOB_MAX, the most one job carries) and K = 4096 (what one job
 * carried before that cap: a stalled writer's whole backlog). Prints messages/s, the
 * mean and the 99th percentile commit latency (submit to callback), and the
 * passes written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "base/util.h"
#include "store/store.h"

struct bench {
    uv_loop_t loop;
    struct store *st;
    size_t total, started, done, inflight;
    size_t passes_per_job, passes_written, screen_jobs;
    bool screen_on, closed;
    uint64_t *lat; /* ns per message */
    uint64_t *t0;
    char body[4096];
    unsigned seq;
};

struct slot {
    struct bench *b;
    size_t i;
};

static void submit(struct bench *b);

static void
on_commit(void *arg, int status, int64_t id)
{
    struct slot *s = arg;
    struct bench *b = s->b;

    (void)id;
    if (status != 0) {
        fprintf(stderr, "commit failed: %d\n", status);
        exit(1);
    }
    b->lat[s->i] = uv_hrtime() - b->t0[s->i];
    b->done++;
    b->inflight--;
    free(s);
    submit(b);
}

static void
submit(struct bench *b)
{
    while (b->started < b->total && b->inflight < 50) {
        struct store_msg *m = xcalloc(1, sizeof(*m));
        struct slot *s = xmalloc(sizeof(*s));

        snprintf(m->qid, sizeof(m->qid), "B%08zu", b->started);
        m->received = 1700000000;
        m->client_addr = xstrdup("192.0.2.1");
        m->helo = xstrdup("bench.test");
        m->sender = xstrdup("s@bench.test");
        m->rcpts = xcalloc(1, sizeof(*m->rcpts));
        m->nrcpts = 1;
        m->rcpts[0].address = xstrdup("u@held.test");
        m->rcpts[0].domain = xstrdup("held.test");
        m->body = xmalloc(sizeof(b->body));
        memcpy(m->body, b->body, sizeof(b->body));
        m->body_len = sizeof(b->body);
        s->b = b;
        s->i = b->started++;
        b->t0[s->i] = uv_hrtime();
        b->inflight++;
        store_commit_async(b->st, m, on_commit, s);
    }
}

static void screen_job(struct bench *b);

static void
on_screen(void *arg, int status)
{
    struct bench *b = arg;

    if (status != 0) {
        fprintf(stderr, "screen record failed: %d\n", status);
        exit(1);
    }
    b->passes_written += b->passes_per_job;
    b->screen_jobs++;
    if (b->done < b->total)
        screen_job(b);
}

static void
screen_job(struct bench *b)
{
    struct store_screen_pass *p = xcalloc(b->passes_per_job, sizeof(*p));
    int64_t now = 1700000000 + b->seq;

    for (size_t i = 0; i < b->passes_per_job; i++, b->seq++) {
        snprintf(p[i].client, sizeof(p[i].client), "10.%u.%u.%u", (b->seq >> 16) & 255,
                 (b->seq >> 8) & 255, b->seq & 255);
        snprintf(p[i].test, sizeof(p[i].test), "pregreet");
        p[i].passed = now;
        p[i].expires = now + 86400;
    }
    store_screen_record_async(b->st, p, b->passes_per_job, now, on_screen, b);
}

static int
cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, c = *(const uint64_t *)y;

    return a < c ? -1 : a > c;
}

static void
on_closed(void *arg)
{
    ((struct bench *)arg)->closed = true;
}

static void
run(const char *label, size_t n, size_t k)
{
    struct bench b;
    char dir[] = "/tmp/screen_store.XXXXXX", path[64], *err = NULL;
    uint64_t t0, sum = 0;
    double secs;

    memset(&b, 0, sizeof(b));
    memset(b.body, 'x', sizeof(b.body));
    if (mkdtemp(dir) == NULL || uv_loop_init(&b.loop) != 0)
        exit(1);
    snprintf(path, sizeof(path), "%s/queue.db", dir);
    if (store_open(&b.loop, &STORE_CONFIG_SQLITE(path), &b.st, &err) != 0) {
        fprintf(stderr, "store_open: %s\n", err);
        exit(1);
    }
    b.total = n;
    b.lat = xcalloc(n, sizeof(*b.lat));
    b.t0 = xcalloc(n, sizeof(*b.t0));
    b.passes_per_job = k;
    t0 = uv_hrtime();
    submit(&b);
    if (k > 0)
        screen_job(&b);
    while (b.done < b.total)
        uv_run(&b.loop, UV_RUN_ONCE);
    secs = (double)(uv_hrtime() - t0) / 1e9;
    store_close(b.st, on_closed, &b);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uv_loop_close(&b.loop);
    for (size_t i = 0; i < n; i++)
        sum += b.lat[i];
    qsort(b.lat, n, sizeof(*b.lat), cmp_u64);
    printf("%-44s %8.0f %9.2f %9.2f %8zu %8zu\n", label, (double)n / secs,
           (double)sum / (double)n / 1e6, (double)b.lat[n * 99 / 100] / 1e6, b.screen_jobs,
           b.passes_written);
    free(b.lat);
    free(b.t0);
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    if (system(path) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

int
main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;
    size_t k = argc > 2 ? strtoul(argv[2], NULL, 10) : 8;

    printf("%zu messages of 4 KiB, 50 in flight\n", n);
    printf("%-44s %8s %9s %9s %8s %8s\n", "case", "msg/s", "mean ms", "p99 ms", "jobs", "passes");
    run("(warm-up, not counted)", n / 4, 0);
    for (int rep = 0; rep < 3; rep++) {
        char label[64];

        run("messages alone", n, 0);
        snprintf(label, sizeof(label), "+ a screen job of %zu always waiting", k);
        run(label, n, k);
        run("+ a screen job of 64 always waiting", n, 64);
        run("+ a screen job of 4096 always waiting", n, 4096);
    }
    return 0;
}
