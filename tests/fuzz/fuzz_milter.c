/* Fuzz target: the milter dialogue (milter_proto) with the input as the
 * filter's replies. The MTA side follows a script (OPTNEG, macros,
 * CONNECT, HELO, MAIL, RCPT, DATA, headers, EOH, body chunks, end of
 * message, then ABORT or a new transaction), queuing the next command
 * whenever the last one is answered. The input's first octets choose the
 * actions and steps offered and the size of the pieces the replies are
 * fed in. Checks: the events do not depend on how the input is split; a
 * reply code is 4xx or 5xx with a clean text; strings are in bounds
 * (ASan); what is queued stays under MILTER_OUT_MAX; the read buffer
 * never grows past one packet of MILTER_REPLY_MAX; after an error the
 * dialogue stays over. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "check/milter_proto.h"
#include "fuzz.h"

#define MAX_EVENTS 4096

static void
send_all(struct milter_proto *m)
{
    size_t n;

    milter_proto_output(m, &n);
    check(n <= MILTER_OUT_MAX);
    milter_proto_taken(m, n);
}

/* Queues the script's next command; returns the next step. */
static unsigned
script(struct milter_proto *m, unsigned step)
{
    static const struct milter_macro mac[] = {{"j", "mx.test"}, {"{client_addr}", "192.0.2.1"}};
    static const char *const mail[] = {"<a@b.test>", "BODY=8BITMIME"};
    static const char *const rcpt[] = {"<c@d.test>"};
    static const char chunk[] = "Hello\r\nworld\r\n";
    int rc = 0;

    switch (step % 12) {
    case 0:
        rc = milter_proto_macros(m, MILTER_ST_CONNECT, mac, 2);
        check(rc >= 0);
        rc = milter_proto_connect(m, "client.test", MILTER_FAM_INET, 25, "192.0.2.1");
        break;
    case 1:
        rc = milter_proto_helo(m, "helo.test");
        break;
    case 2:
        rc = milter_proto_mail(m, mail, 2);
        break;
    case 3:
        rc = milter_proto_rcpt(m, rcpt, 1);
        break;
    case 4:
        rc = milter_proto_data(m);
        break;
    case 5:
        rc = milter_proto_header(m, "Subject", " test");
        break;
    case 6:
        rc = milter_proto_eoh(m);
        break;
    case 7:
    case 8:
        rc = milter_proto_body(m, chunk, sizeof(chunk) - 1);
        break;
    case 9:
        rc = milter_proto_eob(m);
        break;
    case 10:
        rc = milter_proto_abort(m);
        break;
    default:
        rc = milter_proto_unknown(m, "XYZZY");
        break;
    }
    check(rc >= 0);
    return step + 1;
}

/* Runs the dialogue; records the event types (and error) into out. */
static size_t
run(const uint8_t *in, size_t len, size_t piece, uint32_t act, uint32_t steps, int *out)
{
    struct milter_proto *m = milter_proto_new(act, steps);
    struct milter_event ev;
    size_t pos = 0, nev = 0;
    unsigned step = 0;
    bool broken = false;

    check(milter_proto_optneg(m) == MILTER_AWAIT);
    send_all(m);
    while (pos < len && !broken) {
        size_t n = piece == 0 || len - pos < piece ? len - pos : piece, taken = 0, avail;
        int rc;

        if (milter_proto_feed(m, (const char *)in + pos, n, &taken) < 0)
            break;
        check(taken <= n);
        pos += taken;
        while ((rc = milter_proto_next(m, &ev)) == 1) {
            check(nev < MAX_EVENTS);
            out[nev++] = (int)ev.type;
            if (ev.type == MILTER_EV_REPLYCODE) {
                check(ev.code >= 400 && ev.code <= 599);
                check(ev.b[0] == (char)('0' + ev.code / 100) && ev.b[1] == '.');
                for (const char *p = ev.b; *p != '\0'; p++)
                    check((unsigned char)*p >= ' ' && *p != 127);
                check(strlen(ev.b) < MILTER_TEXT_MAX);
            }
            if (ev.type == MILTER_EV_ADDHEADER || ev.type == MILTER_EV_CHGHEADER ||
                ev.type == MILTER_EV_INSHEADER) {
                char hdr[256];

                check(ev.a[0] != '\0' && strchr(ev.a, ':') == NULL);
                if (strlen(ev.a) + strlen(ev.b) * 2 + 8 < sizeof(hdr))
                    check(milter_header_format(hdr, sizeof(hdr), ev.a, ev.b) > 0);
            }
            if (ev.type == MILTER_EV_REPLBODY)
                check(ev.len < MILTER_REPLY_MAX);
            if (ev.final && !milter_proto_awaiting(m) && nev < MAX_EVENTS / 2) {
                /* on to a command that awaits a reply (end of message always does) */
                do {
                    step = script(m, step);
                    send_all(m);
                } while (!milter_proto_awaiting(m));
            }
        }
        if (rc < 0) {
            check(milter_proto_error(m)[0] != '\0');
            check(milter_proto_next(m, &ev) < 0);
            check(milter_proto_helo(m, "x") < 0);
            milter_proto_rbuf(m, &avail);
            check(avail == 0);
            out[nev++] = -1;
            broken = true;
        }
        milter_proto_rbuf(m, &avail);
        check(broken || avail <= 4 + MILTER_REPLY_MAX);
        if (taken == 0)
            break;
    }
    check(milter_proto_pending(m) <= MILTER_OUT_MAX);
    milter_proto_free(m);
    return nev;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int a[MAX_EVENTS + 1], b[MAX_EVENTS + 1];
    uint32_t act, steps;
    size_t na, nb, piece;

    if (size < 3)
        return 0;
    act = data[0] & 1 ? MILTER_ACT_ALL : MILTER_ACT_ADDHDRS;
    steps = data[0] & 2 ? MILTER_P_OFFER : MILTER_P_SKIP;
    piece = data[1] % 13;
    na = run(data + 2, size - 2, 0, act, steps, a);
    nb = run(data + 2, size - 2, piece, act, steps, b);
    check(na == nb);
    check(memcmp(a, b, na * sizeof(a[0])) == 0);
    return 0;
}
