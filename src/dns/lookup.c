/* lookup: owns LOOKUP_THREADS worker threads, one FIFO of jobs waiting for
 * them and, for each uv loop with jobs out, a port (a uv_async_t and the
 * list of jobs whose work is done). lookup_queue and the done callbacks run
 * on the loop thread; a worker only runs job->work and hands the job to its
 * port. The queue, the ports' done lists and the port list are the only
 * shared state, all under one mutex.
 *
 * Used by check/rcptsync (issue 18): a recipients_source file read or LDAP
 * search, each bounded (the LDAP requests by their timeouts). Why a pool
 * of its own: libspf2, libopendkim's key lookups, DMARC record lookups
 * and MX lookups blocked on DNS, which a hostile sender domain can
 * make slow. On the libuv threadpool they took the threads that spool
 * writes and the queue gauges need (DESIGN.md: blocking library calls get
 * a bounded share of threads, never the share spool writes need); here
 * they can only wait for each other. Each job bounds its own time (the SPF
 * and DKIM budgets, dns.c's deadline): this module does not cancel,
 * prioritise or time out anything.
 *
 * The threads start at the first job and live until the process exits,
 * like libuv's own; they block every signal. A port is made when a loop
 * queues its first job and closed when its last job has been called back,
 * so a loop without jobs out holds no handle of ours (uv_loop_close works). */
#include "dns/lookup.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

#include "base/util.h"

struct lookup_port {
    uv_loop_t *loop;
    uv_async_t async;
    struct lookup_port *next;
    struct lookup_job *done_head, *done_tail; /* under mu */
    size_t out; /* jobs queued and not yet called back; loop thread only */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct lookup_job *q_head, *q_tail; /* waiting for a thread */
static struct lookup_port *ports;          /* one per loop with jobs out */
static bool started;

static void *
worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        struct lookup_job *j;
        struct lookup_port *p;

        while (q_head == NULL)
            pthread_cond_wait(&cv, &mu);
        j = q_head;
        q_head = j->next;
        if (q_head == NULL)
            q_tail = NULL;
        pthread_mutex_unlock(&mu);
        j->work(j);
        pthread_mutex_lock(&mu);
        /* Appending and waking the loop under mu: once the loop has taken
         * this job off the list, no worker touches its port again. */
        p = j->port;
        j->next = NULL;
        if (p->done_tail != NULL)
            p->done_tail->next = j;
        else
            p->done_head = j;
        p->done_tail = j;
        if (uv_async_send(&p->async) != 0)
            mxd_panic("lookup: uv_async_send failed");
    }
    return NULL;
}

/* Called with mu held. */
static void
start_threads(void)
{
    sigset_t all, old;
    pthread_attr_t attr;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the threads inherit it */
    if (pthread_attr_init(&attr) != 0 ||
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) != 0)
        mxd_panic("lookup: pthread_attr");
    for (int i = 0; i < LOOKUP_THREADS; i++) {
        pthread_t t;

        if (pthread_create(&t, &attr, worker, NULL) != 0)
            mxd_panic("lookup: cannot start thread %d", i);
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    started = true;
}

static void
on_port_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
on_async(uv_async_t *a)
{
    struct lookup_port *p = a->data;
    struct lookup_job *list, *j;
    bool idle;

    pthread_mutex_lock(&mu);
    list = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&mu);
    while ((j = list) != NULL) {
        list = j->next;
        p->out--;
        j->done(j); /* may free j, may queue more jobs on this port */
    }
    if (p->out > 0)
        return;
    pthread_mutex_lock(&mu);
    for (struct lookup_port **pp = &ports; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    idle = p->done_head == NULL;
    pthread_mutex_unlock(&mu);
    if (!idle)
        mxd_panic("lookup: a job came back that was not out");
    uv_close((uv_handle_t *)&p->async, on_port_closed);
}

/* Called with mu held. */
static struct lookup_port *
port_for(uv_loop_t *loop)
{
    struct lookup_port *p;

    for (p = ports; p != NULL; p = p->next) {
        if (p->loop == loop)
            return p;
    }
    p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    if (uv_async_init(loop, &p->async, on_async) != 0)
        mxd_panic("lookup: uv_async_init failed");
    p->async.data = p;
    p->next = ports;
    ports = p;
    return p;
}

void
lookup_queue(uv_loop_t *loop, struct lookup_job *job, lookup_work_fn work, lookup_done_fn done)
{
    if (loop == NULL || job == NULL || work == NULL || done == NULL)
        mxd_panic("lookup_queue: NULL argument");
    job->work = work;
    job->done = done;
    job->next = NULL;
    pthread_mutex_lock(&mu);
    if (!started)
        start_threads();
    job->port = port_for(loop);
    job->port->out++;
    if (q_tail != NULL)
        q_tail->next = job;
    else
        q_head = job;
    q_tail = job;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}
