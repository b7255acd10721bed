/* smtp_proto internals shared by smtp_proto.c (input, framing, events)
 * and smtp_cmd.c (one function per command). Not for other modules. */
#ifndef MXD_SMTP_PROTO_IMPL_H
#define MXD_SMTP_PROTO_IMPL_H

#include "smtp/dotstuff.h"
#include "smtp/smtp_proto.h"

enum smtp_phase { PH_CMD, PH_DATA, PH_BDAT, PH_CLOSED };
enum smtp_owed { OWE_NONE, OWE_HELO, OWE_MAIL, OWE_RCPT, OWE_BODY, OWE_ETRN };
enum smtp_step { STEP_AGAIN, STEP_EVENT, STEP_NEED };

struct smtp_proto {
    /* private */
    struct smtp_proto_cfg cfg;
    enum smtp_phase phase;
    enum smtp_owed owed;
    size_t rpos, wpos;
    bool skip_line; /* discarding the rest of an over-long line */
    bool skip_cr;   /* ... and its last octet so far was a CR */
    bool esmtp;
    char helo[256];
    char etrn[256]; /* the ETRN argument waiting for its answer */
    unsigned errors;
    /* transaction */
    struct smtp_txn txn;
    bool txn_active; /* MAIL accepted */
    bool rcpt_seen;  /* a RCPT command was given in this transaction */
    size_t rcpt_cap;
    bool body_begun, bdat_used, body_bare, body_big;
    struct dotstuff ds;
    uint64_t bdat_left;
    bool bdat_last, bdat_discard, bdat_prev_cr;
    int discard_code;
    const char *discard_text;
    /* the MAIL or RCPT waiting for its answer */
    struct addr pend_addr;
    bool pend_utf8, pend_8bit, pend_requiretls;
    uint64_t pend_size;
    enum dsn_ret pend_ret;
    char pend_envid[DSN_ENVID_MAX + 1];
    struct smtp_rcpt_dsn pend_rdsn;
    /* what next() hands out before reading more input, in this order */
    bool pend_abort, pend_helo, pend_begin, pend_close, pend_starttls;
    bool tls;
    char tls_desc[96];
    char reply[SMTP_REPLY_MAX];
    size_t reply_len;
    int reply_code;
    const char *reply_verb;
    /* input: SMTP_PROTO_BUF octets, allocated at the first read (an idle
     * connection that never sent anything costs none of it); until then
     * buf points at buf_none so that buf + rpos is always valid */
    char *buf;
    char buf_none[1];
};

/* The reply to an accepted HELO/EHLO (p->esmtp says which). */
void smtp_proto__helo_reply(struct smtp_proto *p);
/* Appends a reply ("CODE text" CRLF); counts protocol errors. */
void smtp_proto__reply(struct smtp_proto *p, const char *verb, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Ends the transaction; queues TXN_ABORT when content was being collected. */
void smtp_proto__txn_reset(struct smtp_proto *p);
/* Runs one command line (CRLF stripped, no CR/LF/NUL inside). */
enum smtp_step smtp_proto__dispatch(struct smtp_proto *p, const char *line, size_t len,
                                    struct smtp_event *ev);

#endif
