/* rcptsync: keeps the store's copy of each recipients_source list (the
 * domains with `recipients = sync`) up to date: a file re-read when it
 * changes, an LDAP search every recipients_refresh. */
#ifndef MXD_RCPTSYNC_H
#define MXD_RCPTSYNC_H

#include <uv.h>

#include "base/conf.h"
#include "store/store.h"

struct rcptsync;

/* Caller stops it with rcptsync_stop. store outlives it. */
struct rcptsync *rcptsync_new(uv_loop_t *loop, struct store *store);

/* The sources of c's sync domains: new ones are read at once, dropped ones
 * are no longer read (their stored lists stay, unused). c is borrowed for
 * the call only. Loop thread. */
void rcptsync_set_conf(struct rcptsync *rs, const struct conf *c);

/* Stops watching and reading; reads in flight are waited for (their
 * results dropped); then rs is freed and cb runs. */
void rcptsync_stop(struct rcptsync *rs, void (*cb)(void *arg), void *arg);

#endif
