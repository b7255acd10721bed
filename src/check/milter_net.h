/* milter_net: one connection to a milter (content filter): the socket,
 * its timer, the bytes between the socket and a milter_proto. Loop thread
 * only. It makes no decisions: input and failures go to the owner's
 * callbacks. */
#ifndef MXD_MILTER_NET_H
#define MXD_MILTER_NET_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "base/conf.h"
#include "check/milter_proto.h"

struct milter_conn;

struct milter_conn_cbs {
    /* Connected: OPTNEG may be queued and flushed. */
    void (*connected)(void *arg);
    /* Replies arrived: pull them with milter_proto_next. */
    void (*input)(void *arg);
    /* The connection failed (connect, I/O, EOF, timeout: why says which;
     * timeout: a reply did not come in time).
     * No callback follows; the owner calls milter_conn_close. */
    void (*failed)(void *arg, const char *why, bool timeout);
    /* A write completed (the filter takes what it is sent): NULL or the
     * owner's, to resume what waited for the queue to shrink. */
    void (*written)(void *arg);
};

/* Connects to ep (numeric or unix) within connect_ms. Takes ownership of
 * proto. Callbacks never run inside this call. */
struct milter_conn *milter_conn_open(uv_loop_t *loop, const struct conf_endpoint *ep,
                                     struct milter_proto *proto, uint64_t connect_ms,
                                     const struct milter_conn_cbs *cbs, void *arg);
struct milter_proto *milter_conn_proto(struct milter_conn *c);
/* Writes what the proto hands out. */
void milter_conn_flush(struct milter_conn *c);
/* Octets the filter has not taken: queued in the proto and written to the
 * socket but not yet sent by the kernel. */
size_t milter_conn_queued(struct milter_conn *c);
/* A reply must come within ms (0: none awaited, the timer stops). */
void milter_conn_deadline(struct milter_conn *c, uint64_t ms);
/* No more callbacks. With quit, a QUIT is sent first when the dialogue is
 * idle; the connection frees itself (and the proto) once closed. */
void milter_conn_close(struct milter_conn *c, bool quit);

/* Idle connections (milter_net.c's comment). */
enum milter_quitnc {
    MILTER_QUITNC_UNKNOWN,       /* not seen yet */
    MILTER_QUITNC_ANYWHERE,      /* a reply came after a QUIT_NC sent elsewhere */
    MILTER_QUITNC_AFTER_MESSAGE, /* ignored one elsewhere (libmilter) */
};

/* Parks c under key (the socket as written) with QUIT_NC sent, and takes
 * it from its owner (no callback runs until milter_conn_reuse hands it to
 * another). after_message: the filter's last reply was continue to an end
 * of message. False when it cannot be parked (a reply awaited, input
 * unread, IDLE_MAX parked, or not after a message for a filter that takes
 * QUIT_NC only there): the caller closes it. */
bool milter_conn_park(struct milter_conn *c, const char *key, bool after_message);
/* A parked connection for key, now the caller's (negotiated: CONNECT
 * goes next), or NULL. *probe: it was parked elsewhere than after a
 * message, so its first reply (or none) tells where the filter takes
 * QUIT_NC. */
struct milter_conn *milter_conn_reuse(const char *key, const struct milter_conn_cbs *cbs, void *arg,
                                      bool *probe);
enum milter_quitnc milter_conn_quitnc(const char *key);
/* What the owner learnt of key's filter; AFTER_MESSAGE closes the
 * connections parked elsewhere. */
void milter_conn_quitnc_learn(const char *key, enum milter_quitnc q);
/* Closes every parked connection and forgets what was learnt (at
 * shutdown: they would keep the loop running). */
void milter_conn_idle_close(void);

#endif
