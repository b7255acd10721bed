/* lmtp_net: one LMTP client connection on the loop (unix socket or TCP),
 * driving lmtp_proto and streaming message bodies from the store. */
#ifndef MXD_LMTP_NET_H
#define MXD_LMTP_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/conf.h"
#include "base/tls.h"
#include "client/lmtp_proto.h"
#include "store/store.h"

struct lmtp_conn;

struct lmtp_conn_cbs {
    /* Idle (after LHLO or a transaction): call lmtp_conn_deliver or
     * lmtp_conn_close. */
    void (*ready)(void *arg, struct lmtp_conn *c);
    /* Final outcome for recipient index of the current transaction. */
    void (*rcpt)(void *arg, struct lmtp_conn *c, size_t index, int code, const char *text);
    /* Every recipient of the transaction has had its outcome. */
    void (*txn_done)(void *arg, struct lmtp_conn *c);
    /* The connection is gone and c is freed after this returns. reason is
     * NULL after a clean QUIT. ever_ready: the server got as far as LHLO. */
    void (*closed)(void *arg, struct lmtp_conn *c, const char *reason, bool ever_ready);
    /* Optional: session data (owned, free()) to resume TLS with this
     * server on the next connection (lmtp_conn_tls.resume). */
    void (*tls_session)(void *arg, struct lmtp_conn *c, void *data, size_t len);
};

/* STARTTLS towards the server (RFC 3207), for TCP endpoints. */
struct lmtp_conn_tls {
    bool required;           /* no TLS (not offered, refused, failed): fail, never plain */
    bool verify;             /* check the chain against creds and the name */
    struct tls_creds *creds; /* borrowed; the session keeps a reference */
    const char *name;        /* SNI and the name to verify; copied */
    const void *resume;      /* session data to resume, or NULL; copied */
    size_t resume_len;
    struct tls_dane *dane; /* DANE (RFC 7672) instead of PKIX, or NULL; the connection
                              keeps a reference */
    const char *policy;    /* for logs and metrics ("dane"...); static; NULL: from the flags */
};

struct lmtp_timeouts {
    uint64_t connect_ms;
    uint64_t reply_ms; /* waiting for any reply */
    uint64_t idle_ms;  /* an idle connection is closed after this */
};

enum lmtp_conn_proto {
    LMTP_CONN_LMTP, /* LHLO, one reply per recipient after the data */
    LMTP_CONN_SMTP, /* EHLO/HELO, one reply for the message (forwarding) */
};

/* Connects to ep (borrowed, must outlive the connection) and greets with
 * name (LHLO, or EHLO for SMTP). cbs and arg are borrowed. tls (may be
 * NULL: plain text only; ignored for unix sockets) asks for STARTTLS; when
 * it is not required and the handshake fails, the connection is made
 * again once, in plain text (never on the same connection). Never NULL. */
struct lmtp_conn *lmtp_conn_open(uv_loop_t *loop, const struct conf_endpoint *ep,
                                 enum lmtp_conn_proto proto, const char *name, struct store *store,
                                 const struct lmtp_timeouts *to, const struct lmtp_conn_tls *tls,
                                 const struct lmtp_conn_cbs *cbs, void *arg);

/* "TLS1.3 AES-256-GCM" once STARTTLS is up, else NULL. */
const char *lmtp_conn_tls_desc(const struct lmtp_conn *c);

/* True when c may be handed a transaction now: ready (after LHLO or a
 * transaction) and not closing. A connection that has started to close
 * (the idle QUIT is out, the server went away) is never idle again. */
bool lmtp_conn_idle(const struct lmtp_conn *c);

/* Starts a transaction on an idle connection; the body of message msg_id
 * is read from the store. t (and its strings) are borrowed until
 * txn_done. */
void lmtp_conn_deliver(struct lmtp_conn *c, const struct lmtp_txn *t, int64_t msg_id);
/* The server offered DSN (RFC 3461) in its greeting's reply. */
bool lmtp_conn_dsn(const struct lmtp_conn *c);

/* QUIT when idle; otherwise aborts the open transaction (its recipients
 * get 4xx outcomes). closed follows. */
void lmtp_conn_close(struct lmtp_conn *c);

#endif
