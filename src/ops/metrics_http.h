/* metrics_http: the Prometheus endpoint (metrics_listen): GET /metrics
 * over a deliberately small HTTP/1.x responder on the loop. */
#ifndef MXD_METRICS_HTTP_H
#define MXD_METRICS_HTTP_H

#include <uv.h>

#include "base/conf.h"
#include "base/util.h"
#include "store/sdb.h"

struct metrics_http;

/* Listens on ep (a numeric host and port; copied). Each scrape reads the
 * queue gauges from the database db names (copied; dbconf_params builds it
 * from the configuration). On failure *err (caller frees). */
int metrics_http_start(uv_loop_t *loop, const struct conf_endpoint *ep, const struct sdb_params *db,
                       struct metrics_http **out, char **err) MXD_WUR;

/* The address it listens on, as configured. */
const char *metrics_http_address(const struct metrics_http *h);

/* Closes the listener and every connection, waits for queue reads in
 * flight, frees h, then cb (may be NULL). */
void metrics_http_stop(struct metrics_http *h, void (*cb)(void *arg), void *arg);

#endif
