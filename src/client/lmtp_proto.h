/* lmtp_proto: the LMTP client state machine (RFC 2033), also the SMTP
 * client (RFC 5321) that forwards to a primary MX (lmtp_proto_new_smtp);
 * pure: replies in, bytes to send and per-recipient outcomes out; no I/O,
 * clock or store. */
#ifndef MXD_LMTP_PROTO_H
#define MXD_LMTP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/reply.h"
#include "base/util.h"
#include "msg/dsnparam.h"

/* Postfix XFORWARD (XFORWARD_README): who the message really came from,
 * for a primary that trusts us with it (smtpd_authorized_xforward_hosts).
 * A NULL or "" field goes as [UNAVAILABLE]. */
struct lmtp_xforward {
    const char *name;  /* the client's verified reverse DNS name */
    const char *addr;  /* numeric IP address */
    const char *port;  /* its TCP port */
    const char *helo;  /* the HELO/EHLO argument */
    const char *proto; /* "SMTP" or "ESMTP" */
    const char *ident; /* our queue id */
    bool local;        /* SOURCE=LOCAL (made here: a DSN), else REMOTE */
};

/* One message to deliver in one LMTP (or SMTP) transaction. Strings are
 * borrowed until LMTP_EV_TXN_DONE. */
struct lmtp_txn {
    const char *sender;       /* "" for <> */
    const char *const *rcpts; /* mailbox "local@domain", no <> */
    size_t nrcpts;
    uint64_t size;    /* body octets, for SIZE= (SMTP: exact, also BDAT's) */
    bool body_8bit;   /* BODY=8BITMIME */
    bool smtputf8;    /* SMTPUTF8: sent when the server offers it */
    bool verify_only; /* callahead: MAIL, RCPT, then RSET instead of DATA;
                         each RCPT reply is the recipient's outcome */
    bool utf8_needed; /* smtputf8 and a non-ASCII envelope or header: a
                         server without SMTPUTF8 cannot take it (5.6.7) */
    /* RFC 3461, passed on to a server that offers DSN: RET, ENVID (decoded,
     * or NULL), and per recipient NOTIFY (bits, 0: not given) and ORCPT
     * ("type;address" decoded, or NULL: "rfc822;" and the recipient, as
     * Postfix sends). dsn false: none of it (a callahead). */
    bool dsn;
    enum dsn_ret ret;
    const char *envid;
    const unsigned *notify;   /* nrcpts entries, or NULL */
    const char *const *orcpt; /* nrcpts entries (each may be NULL), or NULL */
    /* RFC 8689, SMTP only (LMTP is final delivery): sent only over
     * authenticated TLS to a server offering REQUIRETLS, with MAIL ...
     * REQUIRETLS; otherwise every recipient gets 550 5.7.30 unsent. */
    bool requiretls;
    /* SMTP only, not with verify_only: sent before MAIL (as XFORWARD
     * commands, attributes the server lists) when it offers XFORWARD;
     * NULL: never sent. */
    const struct lmtp_xforward *xforward;
};

#define LMTP_EVENTS(X)                                                                             \
    X(NONE)     /* nothing to do until more input (or a txn, or body) arrives */                   \
    X(SEND)     /* send data[0..len) to the server */                                              \
    X(READY)    /* session idle after LHLO/a txn: start a txn or quit */                           \
    X(BODY)     /* the body is wanted: call lmtp_proto_body() with the next chunk */               \
    X(STARTTLS) /* the server said 220 to STARTTLS: drop any octets it sent after that reply,      \
                   run the TLS handshake, then call lmtp_proto_tls_up() */                         \
    X(RCPT)     /* final outcome for rcpts[index]: code, text (summary) */                         \
    X(TXN_DONE) /* every recipient of the txn has had its RCPT event */                            \
    X(FAILED)   /* the session is unusable (garbage, 421, ...): text says why; close it.           \
                   Every recipient of an open txn has had a RCPT event (4xx) first */              \
    X(CLOSED)   /* QUIT answered (or sent): close the connection */

#define LMTP_EV_ENUM(name) LMTP_EV_##name,
enum lmtp_ev { LMTP_EVENTS(LMTP_EV_ENUM) };
#undef LMTP_EV_ENUM

const char *lmtp_ev_name(enum lmtp_ev ev);

struct lmtp_event {
    enum lmtp_ev type;
    const char *data; /* SEND: bytes, valid until the next lmtp_proto call */
    size_t len;
    size_t index;     /* RCPT */
    int code;         /* RCPT: 2xx delivered, 4xx defer, 5xx fail */
    const char *text; /* RCPT, FAILED: NUL-terminated summary ("550 5.1.1 User unknown") */
};

struct lmtp_proto;

/* A session that greets with LHLO lhlo_name once the server's 220 is
 * fed. Caller frees. */
struct lmtp_proto *lmtp_proto_new(const char *lhlo_name);

/* A session that speaks SMTP instead, as a client forwarding mail to (or
 * probing, or calling ahead to) another MX. Caller frees. Events and calls
 * are the same; what differs from LMTP:
 * - EHLO ehlo_name; a 5xx to it falls back to HELO, then no extensions.
 * - After the data there is one reply, and it is the outcome of every
 *   recipient accepted at RCPT: each gets a RCPT event with it.
 * - With CHUNKING the body goes as "BDAT <size> LAST" and the raw
 *   octets (no stuffing, no terminator). BDAT is sent only once the RCPT
 *   replies include a 2xx (with PIPELINING, MAIL and RCPTs are one group
 *   and BDAT follows their replies), so a refused message costs no body.
 * - The body given to lmtp_proto_body() must be exactly txn.size octets
 *   (with DATA too): short or long, the session fails (451 4.3.0 to every
 *   open recipient, then FAILED).
 * - Over the server's SIZE: 552 5.3.4 for every recipient. A message that
 *   needs SMTPUTF8 the server lacks: 550 5.6.7 for every recipient (RFC
 *   6531 3.4; as Postfix). Nothing is sent.
 * - verify_only works the same (MAIL, RCPT..., RSET). */
struct lmtp_proto *lmtp_proto_new_smtp(const char *ehlo_name);
void lmtp_proto_free(struct lmtp_proto *p);

/* Before the greeting: STARTTLS (RFC 3207) when the server offers it,
 * then EHLO/LHLO again over TLS. required: a server that does not offer
 * it (or refuses it, or has no EHLO) fails the session with 451 4.7.4
 * instead of going on in plain text. Without required, a server that
 * lacks or refuses STARTTLS gets the transaction in plain text. */
void lmtp_proto_set_starttls(struct lmtp_proto *p, bool required);

/* The handshake after LMTP_EV_STARTTLS is done: the capabilities learnt
 * in plain text are forgotten and the session greets again (RFC 3207
 * 4.2); then READY as usual. authenticated: the server's certificate was
 * checked (DANE, MTA-STS or tls = verify): REQUIRETLS needs it. */
void lmtp_proto_tls_up(struct lmtp_proto *p, bool authenticated);

/* Feeds server bytes; returns how many were taken (all, unless an event
 * must be pulled first). */
size_t lmtp_proto_feed(struct lmtp_proto *p, const char *data, size_t len);

/* Pulls the next event. */
enum lmtp_ev lmtp_proto_next(struct lmtp_proto *p, struct lmtp_event *ev);

/* Starts a transaction; only after LMTP_EV_READY. t is borrowed until
 * TXN_DONE. Recipients the server cannot take (SMTPUTF8 needed but not
 * offered, size over the server's SIZE) get a 5xx RCPT event without being
 * sent (SMTP mode: see lmtp_proto_new_smtp). A message that carried
 * SMTPUTF8 but does not need it goes without it to a server lacking it.
 * To a server without 8BITMIME (either mode) BODY events come first for
 * an 8-bit scan of the whole body (then give it again from the start): a
 * 7-bit body is sent as it is, an 8-bit one converted to 7 bit (mime7;
 * SIZE= and BDAT then count the converted octets), or, when it cannot be,
 * every recipient gets 554 5.6.3 and nothing is sent. */
void lmtp_proto_start(struct lmtp_proto *p, const struct lmtp_txn *t);

/* The next piece of the body after LMTP_EV_BODY (raw message octets, not
 * dot-stuffed; the proto stuffs them and adds the final CRLF . CRLF, or
 * passes them through after BDAT). last: this is the final piece (len may
 * be 0). */
void lmtp_proto_body(struct lmtp_proto *p, const char *data, size_t len, bool last);

/* The server offered DSN (RFC 3461) in its last LHLO/EHLO reply: it took
 * over the DSN parameters of the transactions sent. */
bool lmtp_proto_dsn(const struct lmtp_proto *p);

/* Sends QUIT when idle (after READY); then LMTP_EV_CLOSED. */
void lmtp_proto_quit(struct lmtp_proto *p);

/* The glue's timeout or connection loss: every recipient of an open txn
 * gets a 4xx RCPT event ("451 4.4.1 ..." with reason), then FAILED. */
void lmtp_proto_abort(struct lmtp_proto *p, const char *reason);

#endif
