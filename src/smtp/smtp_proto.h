/* smtp_proto: the SMTP server protocol state machine (pure: bytes in,
 * replies and events out; no I/O, clock or policy). */
#ifndef MXD_SMTP_PROTO_H
#define MXD_SMTP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "base/addr.h"
#include "base/util.h"
#include "msg/dsnparam.h"

#define SMTP_LINE_MAX 512 /* RFC 5321 4.5.3.1.4, octets including CRLF */
/* RFC 3461 4: its parameters make MAIL up to 100 and RCPT up to 500
 * characters longer (and RCPT's NOTIFY list comes on top of ORCPT) */
#define SMTP_MAIL_LINE_MAX (SMTP_LINE_MAX + 100)
#define SMTP_RCPT_LINE_MAX (SMTP_LINE_MAX + 500 + 32)
#define SMTP_PROTO_BUF     8192 /* input buffer per session */
#define SMTP_ERROR_MAX     20   /* protocol errors before we hang up */
#define SMTP_REPLY_MAX     1024 /* longest reply we build (EHLO) */
#define SMTP_ANSWER_MAX    507  /* an answer's text: 512 with "550 " and CRLF */

struct smtp_proto_cfg {
    const char *hostname;      /* banner, EHLO, Received; borrowed for the proto's life */
    uint64_t max_message_size; /* octets of content; SIZE advertises it */
    unsigned max_recipients;   /* per transaction */
    bool tls_offer;            /* advertise STARTTLS (certificate and key configured) */
    unsigned hard_error_limit; /* errors before 421 and close; 0: SMTP_ERROR_MAX */
    bool helo_answered;        /* HELO/EHLO waits for smtp_proto_answer (checks decide) */
};

#define SMTP_EVENTS(X)                                                                             \
    X(NEED_INPUT) /* feed more bytes (or wait for them) */                                         \
    X(WAIT)       /* an answer is owed: call smtp_proto_answer() */                                \
    X(REPLY)      /* send data[0..len) (CRLF-terminated reply lines); code set */                  \
    X(HELO)       /* HELO/EHLO: data[0..len) is the name; answer owed if helo_answered */          \
    X(MAIL)       /* MAIL parsed and legal: addr is the sender; answer owed */                     \
    X(RCPT)       /* RCPT parsed and legal: addr is the recipient; answer owed */                  \
    X(BODY_BEGIN) /* message content starts (DATA 354 or first BDAT) */                            \
    X(BODY)       /* data[0..len) is the next piece of message content */                          \
    X(BODY_END)   /* content complete and acceptable: store it; answer owed */                     \
    X(TXN_ABORT)  /* content collected so far is to be dropped */                                  \
    X(ETRN)       /* ETRN data[0..len) (RFC 1985 node, "@" or "#" forms as sent); answer owed */   \
    X(STARTTLS)   /* after the 220: start the TLS handshake; input read so far was dropped */      \
    X(CLOSE)      /* send what was replied, then close the connection */

#define SMTP_EV_ENUM(name) SMTP_EV_##name,
enum smtp_ev { SMTP_EVENTS(SMTP_EV_ENUM) };
#undef SMTP_EV_ENUM

const char *smtp_ev_name(enum smtp_ev ev);

struct smtp_event {
    enum smtp_ev type;
    const char *data; /* REPLY, HELO, BODY: valid until the next smtp_proto_rbuf/_feed/_next */
    size_t len;
    int code;                /* REPLY: the reply code */
    const char *verb;        /* REPLY: the command it answers ("MAIL", "DATA", "-" for banner) */
    const struct addr *addr; /* MAIL, RCPT */
};

/* A recipient's RFC 3461 parameters (RCPT ... NOTIFY= ORCPT=). */
struct smtp_rcpt_dsn {
    unsigned notify;               /* DSN_NOTIFY_* bits, 0 when not given */
    char orcpt[DSN_ORCPT_MAX + 1]; /* "type;address" decoded, "" when not given */
};

/* The transaction in progress, read-only for the caller. */
struct smtp_txn {
    struct addr sender;
    bool smtputf8;                 /* MAIL ... SMTPUTF8 */
    bool body_8bit;                /* MAIL ... BODY=8BITMIME */
    uint64_t size_param;           /* MAIL ... SIZE=n, 0 when absent */
    enum dsn_ret ret;              /* MAIL ... RET= (RFC 3461 4.3) */
    char envid[DSN_ENVID_MAX + 1]; /* MAIL ... ENVID=, decoded; "" when not given */
    bool requiretls;               /* MAIL ... REQUIRETLS (RFC 8689), only over TLS */
    struct addr *rcpts;            /* accepted recipients */
    struct smtp_rcpt_dsn *rdsn;    /* their DSN parameters, one per rcpts[i] */
    size_t nrcpts;
    uint64_t body_size; /* content octets so far */
    bool bdat;          /* the content came with BDAT, not DATA */
};

struct smtp_proto;

/* New session; emits the 220 banner as its first event. Caller frees. */
struct smtp_proto *smtp_proto_new(const struct smtp_proto_cfg *cfg);
void smtp_proto_free(struct smtp_proto *p);

/* Where the next read may write: *avail octets at the returned pointer
 * (0 when the buffer is full; then keep calling smtp_proto_next first). */
char *smtp_proto_rbuf(struct smtp_proto *p, size_t *avail);
/* n octets were written at smtp_proto_rbuf()'s pointer. */
void smtp_proto_feed(struct smtp_proto *p, size_t n);
/* Copies up to len octets of data in; returns how many it took (tests,
 * fuzzers and TLS glue). */
size_t smtp_proto_feed_copy(struct smtp_proto *p, const char *data, size_t len);

/* Pulls the next event into *ev and returns its type. */
enum smtp_ev smtp_proto_next(struct smtp_proto *p, struct smtp_event *ev);

/* Answers the HELO (helo_answered), MAIL, RCPT or BODY_END event that is
 * owed: code and text ("2.1.0 Ok"); a 2xx for HELO/EHLO sends its usual
 * reply (the text is not used), a refused one forgets the name. The text is sent as one line:
 * controls (CR, LF, ...) become '?' and it is cut at SMTP_ANSWER_MAX - 1 octets. A 2xx accepts it.
 */
void smtp_proto_answer(struct smtp_proto *p, int code, const char *text);

/* State for the glue. */
const struct smtp_txn *smtp_proto_txn(const struct smtp_proto *p);
const char *smtp_proto_helo(const struct smtp_proto *p); /* "" before HELO/EHLO */
bool smtp_proto_esmtp(const struct smtp_proto *p);       /* EHLO, not HELO */
bool smtp_proto_in_body(const struct smtp_proto *p);     /* reading DATA or BDAT octets */
bool smtp_proto_idle(const struct smtp_proto *p);        /* between commands, no answer owed */
bool smtp_proto_buffered(const struct smtp_proto *p);    /* unread input is waiting */
/* Errors so far: protocol errors and refused recipients (RCPT 4xx/5xx). */
unsigned smtp_proto_errors(const struct smtp_proto *p);

/* The TLS handshake after STARTTLS succeeded; desc ("TLS1.3 AES-256-GCM")
 * goes into Received:. The client must EHLO again (RFC 3207 4.2). */
void smtp_proto_tls_started(struct smtp_proto *p, const char *desc);
bool smtp_proto_tls(const struct smtp_proto *p);

/*
 * Writes the Received: header for the current transaction (RFC 5321 4.4,
 * RFC 3848 "with" types) into buf, CRLF-terminated and folded. client_ip is
 * the numeric address; now is the receive time. Returns its length, or 0
 * when it does not fit.
 */
size_t smtp_proto_received(const struct smtp_proto *p, const char *client_ip, const char *qid,
                           time_t now, char *buf, size_t size);
/* The same, naming the client's verified reverse name before its address
 * ("from HELO (NAME [IP])", as Postfix writes it); client_name NULL or ""
 * when there is none. */
size_t smtp_proto_received_named(const struct smtp_proto *p, const char *client_ip,
                                 const char *client_name, const char *qid, time_t now, char *buf,
                                 size_t size);

#endif
