/* lmtp_proto internals shared by lmtp_proto.c (events, output, the
 * transaction state machine) and lmtp_proto_smtp.c (what differs between
 * LMTP and SMTP: greeting, capabilities, refusals, body framing). Not for
 * other modules. */
#ifndef MXD_LMTP_PROTO_IMPL_H
#define MXD_LMTP_PROTO_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/reply.h"
#include "client/lmtp_proto.h"
#include "msg/mime7.h"

#define LMTP_OUT_INIT  (2 * 65536 + 64) /* a 64 KiB chunk, fully stuffed */
#define LMTP_TEXT_MAX  1280             /* event texts: a summary plus a reason */
#define LMTP_QUEUE_MAX 8                /* events queued by one call */
#define LMTP_BCAST     SIZE_MAX         /* RCPT queue entry: every marked rcpt */
#define LMTP_XF_LINE   512              /* XFORWARD_README: a command line, CRLF included */
#define LMTP_XF_LINES  7                /* one attribute a line at worst */

/* Session states, named by what the session waits for. */
#define LMTP_STATES(X)                                                                             \
    X(GREETING, "greeting")                                                                        \
    X(LHLO, "LHLO reply")                                                                          \
    X(EHLO, "EHLO reply")                                                                          \
    X(HELO, "HELO reply")                                                                          \
    X(STARTTLS, "STARTTLS reply")                                                                  \
    X(TLS, "the TLS handshake")                                                                    \
    X(READY, "nothing (idle)")                                                                     \
    X(SCAN, "the body for its 8-bit scan")                                                         \
    X(TXN, "MAIL/RCPT/DATA reply")                                                                 \
    X(BODY, "the body from mxd")                                                                   \
    X(DOT, "replies after end of data")                                                            \
    X(RSET, "RSET reply")                                                                          \
    X(QUIT, "QUIT reply")                                                                          \
    X(FAILED, "nothing (failed)")                                                                  \
    X(CLOSED, "nothing (closed)")

#define LMTP_ST_ENUM(name, what) LMTP_ST_##name,
enum lmtp_st { LMTP_STATES(LMTP_ST_ENUM) };
#undef LMTP_ST_ENUM

/* Per-recipient state in the open transaction. */
enum {
    LMTP_RS_PENDING,  /* no reply yet (or not sent yet) */
    LMTP_RS_ACCEPTED, /* RCPT got 2xx: its outcome comes after the data */
    LMTP_RS_MARKED,   /* outcome decided, RCPT event queued as a broadcast */
    LMTP_RS_DONE,     /* RCPT event emitted or queued */
};

struct lmtp_qent {
    enum lmtp_ev type;
    size_t index; /* RCPT: recipient, or LMTP_BCAST */
    int code;
    const char *text;
};

struct lmtp_proto {
    /* private */
    char *hello_name;
    bool smtp; /* SMTP (EHLO/HELO, one reply after the data), else LMTP */
    enum lmtp_st st;
    struct reply_parser rp;
    struct reply rep;
    char sum[LMTP_TEXT_MAX]; /* summary of rep */

    /* server capabilities (LHLO/EHLO reply; none after HELO) */
    bool pipelining, eightbit, smtputf8, size_offered, dsn;
    bool requiretls;   /* SMTP: REQUIRETLS (RFC 8689), offered over TLS */
    bool dovecot;      /* LMTP: the greeting names Dovecot (it takes ORCPT without DSN) */
    bool chunking;     /* SMTP mode only: LMTP never uses BDAT */
    uint64_t size_max; /* 0: no limit given */
    unsigned xf_attrs; /* SMTP: XFORWARD attributes offered (bit per LMTP_XF_*), 0: none */

    /* XFORWARD commands of the open transaction, each NUL-terminated */
    char xf_lines[LMTP_XF_LINES][LMTP_XF_LINE + 1];
    size_t xf_n;    /* lines built */
    size_t xf_sent; /* lines sent */
    size_t xf_left; /* replies still due before MAIL's */

    /* STARTTLS (lmtp_proto_set_starttls) */
    bool tls_want, tls_required, tls_up;
    bool tls_auth; /* the server's certificate was authenticated (DANE, verify) */

    /* open transaction */
    const struct lmtp_txn *txn; /* NULL once TXN_DONE is queued */
    uint8_t *rstate;            /* LMTP_RS_* per recipient */
    size_t nrcpts, naccepted, noutcome;
    size_t reply_idx;  /* TXN: 0 MAIL, 1..n RCPT, n+1 DATA */
    size_t bcast_next; /* next index a broadcast looks at */
    size_t dot_next;   /* next index an after-dot reply may be for */
    bool mail_failed;
    bool verify;       /* verify_only: RSET instead of DATA */
    bool bdat;         /* the body goes as one BDAT LAST chunk, not DATA */
    bool quit_pending; /* QUIT asked for while finishing a transaction */

    /* RFC 6152 3: to a server without 8BITMIME the body is scanned first
     * (SCAN); if it has 8-bit octets it is sent converted (conv) */
    struct mime7 *conv;
    uint64_t conv_size; /* octets the conversion gives (BDAT, SIZE=) */

    /* body */
    bool body_bol;      /* at the start of a line: a '.' gets doubled */
    bool body_crlf;     /* what was sent so far ends with CRLF (or is empty) */
    char body_prev;     /* last body octet */
    uint64_t body_seen; /* raw body octets given so far */

    /* output: bytes for one SEND event */
    char *out;
    size_t out_len, out_cap;
    bool out_queued; /* a SEND entry for out is in the queue */
    bool out_handed; /* out was handed out: reset at the next call */

    /* events, oldest first */
    struct lmtp_qent q[LMTP_QUEUE_MAX];
    size_t qlen;
    char txt_one[LMTP_TEXT_MAX];  /* a single RCPT event */
    char txt_all[LMTP_TEXT_MAX];  /* a broadcast */
    char txt_fail[LMTP_TEXT_MAX]; /* FAILED */
};

/* lmtp_proto.c */

/* snprintf for event texts: truncation is intended. */
void lmtp_proto__textf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void lmtp_proto__q_push(struct lmtp_proto *p, enum lmtp_ev type, size_t index, int code,
                        const char *text);
/* Called first by every entry point: frees the last SEND's bytes. */
void lmtp_proto__out_release(struct lmtp_proto *p);
/* Room for n more output octets at p->out + p->out_len. */
void lmtp_proto__out_reserve(struct lmtp_proto *p, size_t n);
/* Queues a SEND for the output, unless one is queued or it is empty. */
void lmtp_proto__out_mark(struct lmtp_proto *p);
void lmtp_proto__out_put(struct lmtp_proto *p, const char *s);
/* "LMTP server" or "SMTP server", for texts. */
const char *lmtp_proto__peer(const struct lmtp_proto *p);
/* Ends the session: 451 enh reason for the open transaction, then FAILED. */
void lmtp_proto__fail(struct lmtp_proto *p, const char *enh, const char *reason);
/* lmtp_proto__fail() because of the reply in p->rep; fmt says why. */
void lmtp_proto__fail_reply(struct lmtp_proto *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void lmtp_proto__become_ready(struct lmtp_proto *p);
/* Transaction t cannot be sent: every recipient gets code and text. */
void lmtp_proto__refuse(struct lmtp_proto *p, int code, const char *text);
/* Sends MAIL (and, with PIPELINING, RCPT... DATA): the transaction is on. */
void lmtp_proto__txn_send(struct lmtp_proto *p);

/* lmtp_proto_smtp.c */

/* The server's 220 (or not), LHLO/EHLO reply, HELO reply. */
void lmtp_proto__on_greeting(struct lmtp_proto *p);
void lmtp_proto__on_hello(struct lmtp_proto *p);
void lmtp_proto__on_helo(struct lmtp_proto *p);
/* Fills p->xf_lines for the open transaction (none when the server lacks
 * XFORWARD or the txn has no xforward); returns how many. */
size_t lmtp_proto__xforward_build(struct lmtp_proto *p);
/* The STARTTLS reply. */
void lmtp_proto__on_starttls(struct lmtp_proto *p);
/* Why transaction t cannot be sent at all (text, with *code), or NULL. */
const char *lmtp_proto__refusal(const struct lmtp_proto *p, const struct lmtp_txn *t, int *code);
/* The server takes the body now (354, or BDAT about to be sent): state
 * BODY and a BODY event. */
void lmtp_proto__body_begin(struct lmtp_proto *p);
/* SMTP with CHUNKING: sends "BDAT <size> LAST", then lmtp_proto__body_begin. */
void lmtp_proto__bdat_begin(struct lmtp_proto *p);
/* The server lacks 8BITMIME: state SCAN and a BODY event; the scan's end
 * refuses the message (5.6.3) or sends it, converted when it must be. */
void lmtp_proto__scan_begin(struct lmtp_proto *p);
/* The octets the message has on the wire: converted, or as stored. */
uint64_t lmtp_proto__wire_size(const struct lmtp_proto *p);

#endif
