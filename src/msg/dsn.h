/* dsn: composes RFC 3464 delivery status notifications (pure). */
#ifndef MXD_DSN_H
#define MXD_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "base/util.h"

struct dsn_rcpt {
    const char *address; /* final recipient, "local@domain" */
    const char *status;  /* enhanced status "5.1.1" or "4.4.7" */
    const char
        *diagnostic; /* the remote reply or our reason, one line, e.g. "550 5.1.1 User unknown" */
    const char *remote_mta; /* host that answered, or NULL */
    const char *action;     /* RFC 3464 2.3.3: "failed" (NULL), "delayed", "delivered", "relayed" */
    const char *orcpt;      /* RFC 3461 ORCPT "type;address" (Original-Recipient), or NULL */
};

/* What the DSN reports (subject and text; each recipient has its action). */
enum dsn_kind { DSN_KIND_FAILURE, DSN_KIND_DELAY, DSN_KIND_SUCCESS };

struct dsn_input {
    const char *reporting_mta; /* our hostname */
    const char *qid;           /* original queue id */
    const char *new_qid;       /* the DSN's own queue id, for its Message-ID */
    const char *sender;        /* original envelope sender (the DSN goes there) */
    time_t arrival;            /* when we received the original */
    time_t now;
    const struct dsn_rcpt *rcpts;
    size_t nrcpts;
    const char *headers; /* original message headers (up to the blank line) */
    size_t headers_len;
    bool smtputf8; /* the original needed SMTPUTF8 (RFC 6533 types then) */
    enum dsn_kind kind;
    const char *envid; /* RFC 3461 ENVID (Original-Envelope-Id), or NULL */
    bool full;         /* headers[0..headers_len) is the whole message (RET=FULL):
                          message/rfc822, not text/rfc822-headers */
};

/*
 * Writes the complete DSN message (header and multipart/report body, CRLF
 * line endings, every line under 998 octets) into a new buffer; *out and
 * *outlen receive it (caller frees). From: MAILER-DAEMON@reporting_mta,
 * To: the sender; a human-readable part, a message/delivery-status part
 * (Reporting-MTA, Arrival-Date, per recipient Final-Recipient, Action:
 * failed, Status, Diagnostic-Code, Remote-MTA) and a text/rfc822-headers
 * part with the original headers. Returns 0, or MXD_EINVAL when the input
 * is incomplete (no recipients, empty sender: no DSN for <>).
 */
int dsn_compose(const struct dsn_input *in, char **out, size_t *outlen) MXD_WUR;

/* True when a message with this envelope sender must never get a DSN
 * (the null sender <>: RFC 3461 / RFC 5321 6.1). */
bool dsn_suppressed(const char *sender);

#endif
