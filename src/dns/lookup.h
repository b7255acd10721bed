/* lookup: a bounded pool of threads for blocking work (the reads of
 * recipients = sync sources: files, LDAP searches), apart from the libuv
 * threadpool. */
#ifndef MXD_LOOKUP_H
#define MXD_LOOKUP_H

#include <uv.h>

/* Worker threads, started at the first job. Mostly waiting on DNS: a
 * thread costs a stack, not a core. A session has one lookup job out at a
 * time, so more threads than max_connections_per_ip's default (20) means
 * one client address cannot keep them all busy. */
#define LOOKUP_THREADS 32

struct lookup_job;
/* work runs on a lookup thread (it may block); done on the loop thread. */
typedef void (*lookup_work_fn)(struct lookup_job *job);
typedef void (*lookup_done_fn)(struct lookup_job *job);

/* Embedded in the caller's job, like uv_work_t. data is the caller's; the
 * other fields belong to the module from lookup_queue until done runs. */
struct lookup_job {
    void *data;
    /* private */
    struct lookup_job *next;
    struct lookup_port *port;
    lookup_work_fn work;
    lookup_done_fn done;
};

/*
 * Runs work(job) on a lookup thread, then done(job) on the thread of loop
 * (never from inside this call). Jobs start in the order queued. While a
 * job is out, the loop stays alive (it holds a handle). Loop thread only.
 */
void lookup_queue(uv_loop_t *loop, struct lookup_job *job, lookup_work_fn work,
                  lookup_done_fn done);

#endif
