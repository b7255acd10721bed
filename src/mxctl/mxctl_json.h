/* mxctl_json: the jansson side of mxctl: --json renderings of what mxctl
 * reads from the database, and the control-socket client (whose protocol is
 * JSON). Shared by mxctl.c and mxctl_json.c only. */
#ifndef MXD_MXCTL_JSON_H
#define MXD_MXCTL_JSON_H

#include <stdbool.h>
#include <stdint.h>

#include "store/sdb.h"

/* Exit statuses. */
#define MXCTL_OK      0
#define MXCTL_REFUSED 1 /* refused operation, unknown id, or failure */
#define MXCTL_USAGE   2

/* Print {"messages":[...]}, {"qid":...} (MXCTL_REFUSED and a message on
 * stderr for an unknown qid) and {"recipients":[...]} as one line on stdout.
 * Each reads in one transaction. Return an exit status. */
int mxctl_json_queue(struct sdb *db);
int mxctl_json_show(struct sdb *db, const char *qid);
int mxctl_json_recipients(struct sdb *db);

/* A recipient in state with next_attempt has a retry scheduled: queued,
 * deferred and held ones do, except an operator's hold (next_attempt is
 * the largest integer: never due until released). */
bool mxctl_rcpt_scheduled(const char *state, int64_t next_attempt);

/* Sends "verb[ arg]\n" to mxd's control socket at path and checks the reply:
 * MXCTL_OK, or the reason on stderr and MXCTL_REFUSED (unreachable, refused,
 * a malformed reply) or MXCTL_USAGE (the daemon called it a bad request). */
int mxctl_ctl_op(const char *path, const char *verb, const char *arg);

/* `stats`: the daemon's counters plus queue totals read from db (may be
 * NULL: no totals), as JSON or as "name value" lines. Exit status. */
int mxctl_ctl_stats(const char *path, struct sdb *db, bool json);

/* `tls-policy DOMAIN`: what outbound TLS applies to domain now, as text
 * (or the daemon's JSON object). An exit status. */
int mxctl_ctl_tls_policy(const char *path, const char *domain, bool json);

#endif
