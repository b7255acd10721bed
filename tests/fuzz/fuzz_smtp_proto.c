/* Fuzz target: the SMTP server state machine (smtp_proto, smtp_cmd,
 * dotstuff for DATA, BDAT framing, addr for MAIL/RCPT) fed an arbitrary
 * client byte stream. The first octet picks the configuration, the split
 * size, whether HELO waits for an answer and how the policy answers; the
 * rest is what the client sends. Checks: every reply is CRLF-terminated
 * with a code in 200..599, BODY octets never exceed what was fed, nothing
 * loops, and a session that says CLOSE says nothing more. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "smtp/smtp_proto.h"

struct drive {
    uint8_t mode;
    bool helo_answered; /* HELO/EHLO waits for an answer (the checks') */
    uint64_t fed, body;
    char rbuf[512];
    bool closed;
};

static void
answer(struct smtp_proto *p, const struct smtp_event *ev, struct drive *d)
{
    switch (ev->type) {
    case SMTP_EV_HELO:
        if (d->helo_answered) /* refuse some names so both paths run */
            smtp_proto_answer(p, ev->len > 0 && ev->data[0] == 'x' ? 550 : 250, "5.7.1 No");
        break;
    case SMTP_EV_MAIL:
        smtp_proto_answer(p, (d->mode & 0x10) ? 451 : 250, "2.1.0 Ok");
        break;
    case SMTP_EV_RCPT:
        /* refuse some recipients so the all-refused paths run too */
        smtp_proto_answer(p, ev->addr->mailbox[0] == 'x' ? 550 : 250, "2.1.5 Ok");
        break;
    case SMTP_EV_BODY_END: {
        size_t n = smtp_proto_received(p, "192.0.2.1", "QID", 1700000000, d->rbuf, sizeof(d->rbuf));

        check(n < sizeof(d->rbuf));
        smtp_proto_answer(p, (d->mode & 0x20) ? 451 : 250, "2.0.0 Ok: queued");
        break;
    }
    case SMTP_EV_ETRN:
        smtp_proto_answer(p, 250, "2.0.0 Queuing started");
        break;
    case SMTP_EV_STARTTLS:
        if (d->mode & 0x40)
            smtp_proto_tls_started(p, "TLS1.3 FUZZ");
        else
            d->closed = true; /* handshake failed: the glue closes */
        break;
    default:
        break;
    }
}

static void
drain(struct smtp_proto *p, struct drive *d)
{
    struct smtp_event ev;

    for (int guard = 0; guard < 100000 && !d->closed; guard++) {
        enum smtp_ev t = smtp_proto_next(p, &ev);

        check(t != SMTP_EV_WAIT); /* every owed answer is given at once */
        if (t == SMTP_EV_NEED_INPUT)
            return;
        if (t == SMTP_EV_REPLY) {
            check(ev.len >= 5 && ev.data[ev.len - 2] == '\r' && ev.data[ev.len - 1] == '\n');
            check(ev.code >= 200 && ev.code <= 599);
        } else if (t == SMTP_EV_BODY) {
            d->body += ev.len;
            check(d->body <= d->fed);
        } else if (t == SMTP_EV_CLOSE) {
            d->closed = true;
            return;
        }
        answer(p, &ev, d);
    }
    check(d->closed);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_proto_cfg cfg = {.hostname = "mx.fuzz.test"};
    struct drive d = {0};
    struct smtp_proto *p;
    size_t pos = 1, step;

    if (size < 1)
        return 0;
    d.mode = data[0];
    cfg.max_message_size = (d.mode & 1) ? 64 : 1u << 20;
    cfg.max_recipients = (d.mode & 2) ? 2 : 100;
    cfg.tls_offer = (d.mode & 4) != 0;
    cfg.helo_answered = d.helo_answered = (d.mode & 0x30) == 0x30;
    step = (d.mode & 8) ? 1 + (d.mode >> 7) * 6 : 0;
    p = smtp_proto_new(&cfg);
    drain(p, &d);
    while (pos < size && !d.closed) {
        size_t want = step == 0 || size - pos < step ? size - pos : step;
        size_t took = smtp_proto_feed_copy(p, (const char *)data + pos, want);

        d.fed += took;
        pos += took;
        drain(p, &d);
        if (took == 0 && !d.closed)
            check(smtp_proto_rbuf(p, &want) != NULL && want > 0);
    }
    (void)smtp_proto_txn(p);
    (void)smtp_proto_idle(p);
    smtp_proto_free(p);
    return 0;
}
