/* Unit tests for the lookup thread pool (issue 14 item 3): every job is
 * called back once on its loop, never from inside lookup_queue; no more
 * than LOOKUP_THREADS jobs run at once and the rest wait in order; a
 * callback may queue more; a loop without jobs out holds no handle
 * (uv_loop_close() == 0), and a later loop gets a port of its own. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <uv.h>

#include "base/util.h"
#include "dns/lookup.h"

static atomic_int running, peak;

struct job {
    struct lookup_job lj;
    int index;
    unsigned sleep_ms;
    pthread_t loop_thread;
    int worked, done;
    bool on_loop_thread; /* done ran on the thread that runs the loop */
    int *order;          /* the next start position, shared */
    int started_as;      /* the position in which work started */
    pthread_mutex_t *mu;
    struct job *more; /* queued from this job's callback */
    uv_loop_t *loop;
};

static void
nap(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

static void
work_cb(struct lookup_job *lj)
{
    struct job *j = lj->data;
    int now = atomic_fetch_add(&running, 1) + 1;
    int p = atomic_load(&peak);

    while (now > p && !atomic_compare_exchange_weak(&peak, &p, now))
        ;
    pthread_mutex_lock(j->mu);
    j->started_as = (*j->order)++;
    pthread_mutex_unlock(j->mu);
    nap(j->sleep_ms);
    j->worked++;
    atomic_fetch_sub(&running, 1);
}

static void
done_cb(struct lookup_job *lj)
{
    struct job *j = lj->data;

    j->done++;
    j->on_loop_thread = pthread_equal(pthread_self(), j->loop_thread);
    if (j->more != NULL)
        lookup_queue(j->loop, &j->more->lj, work_cb, done_cb);
}

static void
init_jobs(struct job *jobs, int n, uv_loop_t *loop, int *order, pthread_mutex_t *mu,
          unsigned sleep_ms)
{
    memset(jobs, 0, sizeof(*jobs) * (size_t)n);
    for (int i = 0; i < n; i++) {
        jobs[i].lj.data = &jobs[i];
        jobs[i].index = i;
        jobs[i].sleep_ms = sleep_ms;
        jobs[i].loop_thread = pthread_self();
        jobs[i].order = order;
        jobs[i].mu = mu;
        jobs[i].loop = loop;
    }
}

/* Three times as many blocking jobs as threads: at most LOOKUP_THREADS run
 * at once, the others start in the order queued. */
static void
test_bounded_and_in_order(void **state)
{
    enum { N = 3 * LOOKUP_THREADS };
    struct job jobs[N];
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int order = 0;
    uv_loop_t loop;

    (void)state;
    atomic_store(&running, 0);
    atomic_store(&peak, 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    init_jobs(jobs, N, &loop, &order, &mu, 50);
    for (int i = 0; i < N; i++)
        lookup_queue(&loop, &jobs[i].lj, work_cb, done_cb);
    for (int i = 0; i < N; i++)
        assert_int_equal(jobs[i].done, 0); /* never called back synchronously */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(atomic_load(&peak), LOOKUP_THREADS);
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].worked, 1);
        assert_int_equal(jobs[i].done, 1);
        assert_true(jobs[i].on_loop_thread);
        /* the first LOOKUP_THREADS start in any order, the rest after */
        if (i >= LOOKUP_THREADS)
            assert_true(jobs[i].started_as >= LOOKUP_THREADS);
        else
            assert_true(jobs[i].started_as < 2 * LOOKUP_THREADS);
    }
}

/* A callback that queues another job on the same loop; then a second loop
 * after the first one closed. */
static void
test_chained_and_second_loop(void **state)
{
    struct job jobs[4];
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int order = 0;
    uv_loop_t loop;

    (void)state;
    for (int round = 0; round < 2; round++) {
        assert_int_equal(uv_loop_init(&loop), 0);
        init_jobs(jobs, 4, &loop, &order, &mu, 0);
        for (int i = 0; i < 3; i++)
            jobs[i].more = &jobs[i + 1];
        lookup_queue(&loop, &jobs[0].lj, work_cb, done_cb);
        assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
        assert_int_equal(uv_loop_close(&loop), 0);
        for (int i = 0; i < 4; i++) {
            assert_int_equal(jobs[i].worked, 1);
            assert_int_equal(jobs[i].done, 1);
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounded_and_in_order),
        cmocka_unit_test(test_chained_and_second_loop),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
