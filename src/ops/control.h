/* control: the daemon's control socket (a unix socket, mode 0600) through
 * which mxctl asks for state changes. */
#ifndef MXD_CONTROL_H
#define MXD_CONTROL_H

#include <uv.h>

#include "base/util.h"

struct control;
struct store;
struct deliver;
struct smtp_server;

/*
 * Listens on path (an old socket file there is replaced). Protocol: the
 * client sends one request line "VERB [ARG]\n" (at most 1024 octets) and
 * gets one JSON object line back, then the connection closes:
 *   flush [DOMAIN] | hold QID | release QID | delete QID | bounce QID | stats
 *   | reload | tls-policy DOMAIN
 *   -> {"ok":true} | {"ok":false,"error":"..."} | {"ok":true,"stats":{...}}
 *   | {"ok":true,"tls_policy":{...}} (deliver_tls_report_async, as JSON)
 * Unknown qid: {"ok":false,"error":"no such message","code":1}; bad request:
 * "code":2. After flush and release the scheduler is kicked. Borrowed
 * objects must outlive the control. On failure *err (caller frees).
 */
int control_start(uv_loop_t *loop, const char *path, struct store *store, struct deliver *deliver,
                  struct smtp_server *server, struct control **out, char **err) MXD_WUR;

/* `reload` requests call cb(arg, &err): 0, or an error (err, caller frees,
 * goes back to mxctl). Without a callback reload is refused. */
void control_on_reload(struct control *c, int (*cb)(void *arg, char **err), void *arg);

/* Closes the socket (and unlinks it), drops open requests, then cb. */
void control_stop(struct control *c, void (*cb)(void *arg), void *arg);

#endif
