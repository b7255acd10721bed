/* qstat: queue gauges (recipients by domain and state, message count,
 * oldest message) read from queue.db on the libuv threadpool. */
#ifndef MXD_QSTAT_H
#define MXD_QSTAT_H

#include <uv.h>

#include "base/metrics.h"

/* q is valid only during the call (q->valid false when the query failed). */
typedef void (*qstat_cb)(void *arg, const struct metrics_queue *q);

/* Reads db_path (copied) with its own read-only connection off the loop;
 * cb runs on the loop thread, never before this returns. */
void qstat_async(uv_loop_t *loop, const char *db_path, qstat_cb cb, void *arg);

#endif
