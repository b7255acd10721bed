/* callahead: recipient verification against a domain's LMTP server
 * (`recipients = lmtp`) or a backup domain's primary (`recipients =
 * primary`, over SMTP), with a cache of positive and negative answers. */
#ifndef MXD_CALLAHEAD_H
#define MXD_CALLAHEAD_H

#include <stdint.h>

#include <uv.h>

#include "base/conf.h"
#include "base/util.h"
#include "store/store.h"

struct callahead;

/* result: 0 the server takes the address, MXD_ENOENT it refused it (5xx),
 * MXD_EIO it could not be asked or answered 4xx (answer 450 4.1.1). For a
 * primary that cannot be asked, the last answer decides, and an address
 * never seen is accepted (0): a backup MX accepts while the primary is
 * down. */
typedef void (*callahead_cb)(void *arg, int result);

struct callahead *callahead_new(uv_loop_t *loop, struct store *store, const char *lhlo_name);

/* Asks (or answers from the cache) whether d's LMTP server accepts
 * address; cb runs on the loop thread, never before this returns. client
 * (who asks, as text: iptab_key's network) and c's callahead limits
 * decide when it may ask. c and d stay valid until cb (a conf outlives the checks made
 * with it); address and client are borrowed for the call only. */
void callahead_check(struct callahead *ca, const struct conf *c, const struct conf_domain *d,
                     const char *address, const char *client, callahead_cb cb, void *arg);

/* Closes open checks (their callbacks run with MXD_EIO) and frees ca when
 * they are gone; then cb. */
void callahead_stop(struct callahead *ca, void (*cb)(void *arg), void *arg);

#endif
