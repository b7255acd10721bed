/* qstat: queue gauges (recipients by domain and state, message count,
 * oldest message) read from the queue's database (SQLite or PostgreSQL)
 * on the libuv threadpool. */
#ifndef MXD_QSTAT_H
#define MXD_QSTAT_H

#include <uv.h>

#include "base/metrics.h"
#include "store/sdb.h"

/* q is valid only during the call (q->valid false when the query failed). */
typedef void (*qstat_cb)(void *arg, const struct metrics_queue *q);

/* Reads the database db names (copied; dbconf_params builds it from the
 * configuration) with its own connection off the loop, reading only; cb
 * runs on the loop thread, never before this returns. */
void qstat_async(uv_loop_t *loop, const struct sdb_params *db, qstat_cb cb, void *arg);

#endif
