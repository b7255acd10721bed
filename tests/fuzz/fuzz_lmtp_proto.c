/* Fuzz target: the LMTP client and the SMTP client (lmtp_proto) fed an
 * arbitrary server byte stream. The first octet picks the mode (LMTP or
 * SMTP), the transaction flags, STARTTLS (asked for, or required) and the
 * feed size; the driver starts a two-recipient transaction at each READY,
 * gives the body when asked, takes a STARTTLS handshake as done, and quits
 * after a few transactions. Checks: each recipient gets at most one
 * outcome per transaction and every outcome is 2xx/4xx/5xx, TXN_DONE comes
 * only once all recipients have one, nothing loops. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client/lmtp_proto.h"
#include "fuzz.h"

#define NRCPTS 3

static const char *const rcpts[NRCPTS] = {"a@x.test", "b@x.test", "\xc3\xa9@x.test"};
static const char body[] = "Subject: t\r\n\r\n.dot\r\nline\r\n";

struct drive {
    struct lmtp_txn txn;
    bool in_txn, failed, closed;
    int outcomes[NRCPTS];
    unsigned txns;
};

static void
on_event(struct lmtp_proto *p, const struct lmtp_event *ev, struct drive *d)
{
    switch (ev->type) {
    case LMTP_EV_READY:
        check(!d->in_txn);
        if (d->txns++ >= 3) {
            lmtp_proto_quit(p);
            break;
        }
        memset(d->outcomes, 0, sizeof(d->outcomes));
        d->in_txn = true;
        lmtp_proto_start(p, &d->txn);
        break;
    case LMTP_EV_BODY:
        check(d->in_txn);
        lmtp_proto_body(p, body, sizeof(body) - 1, true);
        break;
    case LMTP_EV_RCPT:
        check(d->in_txn && ev->index < d->txn.nrcpts && d->outcomes[ev->index] == 0);
        check(ev->code >= 200 && ev->code <= 599 && ev->code / 100 != 3);
        check(ev->text != NULL);
        d->outcomes[ev->index] = ev->code;
        break;
    case LMTP_EV_TXN_DONE:
        check(d->in_txn);
        for (size_t i = 0; i < d->txn.nrcpts; i++)
            check(d->outcomes[i] != 0);
        d->in_txn = false;
        break;
    case LMTP_EV_FAILED:
        d->failed = true;
        break;
    case LMTP_EV_CLOSED:
        d->closed = true;
        break;
    case LMTP_EV_SEND:
        check(ev->len > 0 && ev->data != NULL);
        break;
    case LMTP_EV_STARTTLS:
        /* the glue's handshake succeeded; what follows counts as the
         * decrypted stream */
        check(!d->in_txn);
        lmtp_proto_tls_up(p, false);
        break;
    case LMTP_EV_NONE:
        break;
    }
}

static void
drain(struct lmtp_proto *p, struct drive *d)
{
    struct lmtp_event ev;

    for (int guard = 0; guard < 10000; guard++) {
        enum lmtp_ev t = lmtp_proto_next(p, &ev);

        if (t == LMTP_EV_NONE)
            return;
        on_event(p, &ev, d);
        if (d->failed || d->closed)
            return;
    }
    abort(); /* lmtp_proto_next loops */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct drive d = {0};
    struct lmtp_proto *p;
    size_t pos = 1, step;
    uint8_t mode;

    if (size < 1)
        return 0;
    mode = data[0];
    d.txn.sender = (mode & 2) ? "" : "s@y.test";
    d.txn.rcpts = rcpts;
    d.txn.nrcpts = (mode & 4) ? NRCPTS : 2;
    d.txn.size = sizeof(body) - 1;
    d.txn.body_8bit = (mode & 8) != 0;
    d.txn.smtputf8 = (mode & 4) != 0;
    d.txn.verify_only = (mode & 16) != 0;
    step = (mode & 32) ? 1 : 0;
    p = (mode & 1) ? lmtp_proto_new_smtp("mx.fuzz.test") : lmtp_proto_new("mx.fuzz.test");
    if (mode & 64)
        lmtp_proto_set_starttls(p, (mode & 128) != 0);
    drain(p, &d);
    while (pos < size && !d.failed && !d.closed) {
        size_t want = step == 0 || size - pos < step ? size - pos : step;
        size_t took = lmtp_proto_feed(p, (const char *)data + pos, want);

        pos += took;
        drain(p, &d);
        if (took == 0 && !d.failed && !d.closed) {
            /* nothing taken and no event: the session must be waiting on us */
            struct lmtp_event ev;

            check(lmtp_proto_next(p, &ev) == LMTP_EV_NONE);
            break;
        }
    }
    if (!d.failed && !d.closed && (mode & 64)) {
        lmtp_proto_abort(p, "fuzz: connection lost");
        drain(p, &d);
        check(!d.in_txn || d.failed);
    }
    lmtp_proto_free(p);
    return 0;
}
