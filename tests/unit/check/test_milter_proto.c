/* Unit tests for milter_proto: the MTA side of the milter protocol.
 *
 * The byte sequences are written as the protocol defines them; the
 * replies marked "recorded" are what libmilter 8.17.1 (Debian's
 * libmilter1.0.1, tests/tools/milter_filter.c) sent to the same commands.
 * Covered: packet framing, every command's encoding, negotiation (actions,
 * steps, macro lists), the order of commands (one awaited reply at a
 * time), NO and NR steps, SKIP, ABORT, every reply, and the protocol
 * errors (oversized, empty, unknown, out of place, malformed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "check/milter_proto.h"

#define S(lit) lit, sizeof(lit) - 1

/* The bytes the proto hands out now are exactly want[0..n); taken. */
static void
expect_out(struct milter_proto *m, const char *want, size_t n)
{
    size_t len;
    const char *p = milter_proto_output(m, &len);

    assert_int_equal(len, n);
    assert_memory_equal(p, want, n);
    milter_proto_taken(m, len);
}

/* Feeds a reply (all of it) and pulls one event. */
static int
reply(struct milter_proto *m, const char *data, size_t n, struct milter_event *ev)
{
    size_t taken;
    int rc = milter_proto_feed(m, data, n, &taken);

    if (rc < 0)
        return rc;
    assert_int_equal(taken, n);
    return milter_proto_next(m, ev);
}

static const char optneg_out[] = "\x00\x00\x00\x0d"
                                 "O\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xf7\xff";

/* A dialogue past negotiation with the filter's actions and steps. */
static struct milter_proto *
negotiated(uint32_t act, uint32_t steps, const char *extra, size_t extra_len)
{
    struct milter_proto *m = milter_proto_new(MILTER_ACT_ALL, MILTER_P_OFFER);
    struct milter_event ev;
    char r[256];
    size_t n = 13 + extra_len;

    assert_int_equal(milter_proto_optneg(m), MILTER_AWAIT);
    expect_out(m, optneg_out, sizeof(optneg_out) - 1);
    r[0] = 0;
    r[1] = 0;
    r[2] = (char)(n >> 8);
    r[3] = (char)n;
    r[4] = 'O';
    memcpy(r + 5, "\x00\x00\x00\x06", 4);
    r[9] = (char)(act >> 24), r[10] = (char)(act >> 16), r[11] = (char)(act >> 8);
    r[12] = (char)act;
    r[13] = (char)(steps >> 24), r[14] = (char)(steps >> 16), r[15] = (char)(steps >> 8);
    r[16] = (char)steps;
    memcpy(r + 17, extra, extra_len);
    assert_int_equal(reply(m, r, 4 + n, &ev), 1);
    assert_int_equal(ev.type, MILTER_EV_NEGOTIATED);
    return m;
}

static void
send_all(struct milter_proto *m)
{
    size_t n;

    milter_proto_output(m, &n);
    milter_proto_taken(m, n);
}

static void
test_recorded_addheader(void **state)
{
    /* recorded: libmilter's OPTNEG reply (actions ADDHDRS|CHGHDRS|
     * QUARANTINE, steps NOUNKNOWN|NODATA: no data or unknown callbacks) */
    static const char optneg_reply[] = "\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x00\x31"
                                       "\x00\x00\x03\x00";
    struct milter_proto *m = milter_proto_new(MILTER_ACT_ALL, MILTER_P_OFFER);
    struct milter_event ev;
    struct milter_macro mac[] = {{"j", "mx.test"}, {"{client_addr}", "192.0.2.1"}, {"i", NULL}};
    const char *mail[] = {"<a@b.test>", "SIZE=10"}, *rcpt[] = {"<c@d.test>"};

    (void)state;
    assert_int_equal(milter_proto_optneg(m), MILTER_AWAIT);
    expect_out(m, optneg_out, sizeof(optneg_out) - 1);
    assert_int_equal(reply(m, S(optneg_reply), &ev), 1);
    assert_int_equal(ev.type, MILTER_EV_NEGOTIATED);
    assert_true(ev.final);
    assert_int_equal(milter_proto_version(m), 6);
    assert_int_equal(milter_proto_actions(m), 0x31);
    assert_int_equal(milter_proto_steps(m), 0x300);

    assert_int_equal(milter_proto_macros(m, MILTER_ST_CONNECT, mac, 3), MILTER_NOREPLY);
    assert_int_equal(milter_proto_connect(m, "client.test", MILTER_FAM_INET, 4567, "192.0.2.1"),
                     MILTER_AWAIT);
    expect_out(m, S("\x00\x00\x00\x24"
                    "DCj\x00mx.test\x00{client_addr}\x00"
                    "192.0.2.1\x00"
                    "\x00\x00\x00\x1a"
                    "Cclient.test\x00"
                    "4\x11\xd7"
                    "192.0.2.1\x00"));
    assert_true(milter_proto_awaiting(m));
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     1); /* recorded */
    assert_int_equal(ev.type, MILTER_EV_CONTINUE);
    assert_int_equal(ev.cmd, 'C');
    assert_false(milter_proto_awaiting(m));

    /* HELO and MAIL queued at once: MAIL waits for HELO's reply */
    assert_int_equal(milter_proto_helo(m, "helo.test"), MILTER_AWAIT);
    assert_int_equal(milter_proto_mail(m, mail, 2), MILTER_AWAIT);
    expect_out(m, S("\x00\x00\x00\x0bHhelo.test\x00"));
    expect_out(m, "", 0);
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     1);
    expect_out(m, S("\x00\x00\x00\x14M<a@b.test>\x00SIZE=10\x00"));
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     1);
    assert_int_equal(milter_proto_rcpt(m, rcpt, 1), MILTER_AWAIT);
    expect_out(m, S("\x00\x00\x00\x0cR<c@d.test>\x00"));
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     1);
    /* NODATA: DATA and its macros are not sent */
    assert_int_equal(milter_proto_macros(m, MILTER_ST_DATA, mac, 1), MILTER_SKIPPED);
    assert_int_equal(milter_proto_data(m), MILTER_SKIPPED);
    assert_int_equal(milter_proto_unknown(m, "XYZZY"), MILTER_SKIPPED);
    /* the leading blank of a value goes without HDR_LEADSPC */
    assert_int_equal(milter_proto_header(m, "Subject", " hi"), MILTER_AWAIT);
    expect_out(m, S("\x00\x00\x00\x0cLSubject\x00hi\x00"));
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     1);
    assert_int_equal(milter_proto_eoh(m), MILTER_AWAIT);
    expect_out(m, S("\x00\x00\x00\x01N"));
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     1);
    assert_int_equal(milter_proto_body(m, S("body\r\n")), MILTER_AWAIT);
    assert_int_equal(milter_proto_eob(m), MILTER_AWAIT);
    expect_out(m, S("\x00\x00\x00\x07"
                    "Bbody\r\n"));
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     1);
    expect_out(m, S("\x00\x00\x00\x01"
                    "E"));
    /* recorded: smfi_addheader, smfi_insheader(0), SMFIS_ACCEPT */
    assert_int_equal(reply(m, S("\x00\x00\x00\x14hX-Test-Filter\x00seen\x00"), &ev), 1);
    assert_int_equal(ev.type, MILTER_EV_ADDHEADER);
    assert_false(ev.final);
    assert_true(ev.permitted);
    assert_string_equal(ev.a, "X-Test-Filter");
    assert_string_equal(ev.b, "seen");
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x1ei\x00\x00\x00\x00X-Test-Top\x00"
                             "first\n\tfolded\x00"),
                           &ev),
                     1);
    assert_int_equal(ev.type, MILTER_EV_INSHEADER);
    assert_int_equal(ev.index, 0);
    assert_string_equal(ev.b, "first\n\tfolded");
    assert_true(milter_proto_awaiting(m));
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "a"),
                           &ev),
                     1);
    assert_int_equal(ev.type, MILTER_EV_ACCEPT);
    assert_int_equal(ev.cmd, 'E');
    assert_true(ev.final);
    assert_int_equal(milter_proto_quit(m, false), MILTER_NOREPLY);
    expect_out(m, S("\x00\x00\x00\x01Q"));
    assert_int_equal(milter_proto_pending(m), 0);
    assert_int_equal(milter_proto_helo(m, "x"), MXD_EINVAL); /* after QUIT */
    milter_proto_free(m);
}

/* QUIT_NC: 'K' goes, and the same negotiated dialogue starts over with
 * CONNECT (the filter keeps the options); a body skipped before is not
 * skipped in the next message. */
static void
test_quit_nc_starts_over(void **state)
{
    struct milter_proto *m = negotiated(0x31, 0x300, "", 0);

    (void)state;
    assert_int_equal(milter_proto_quit(m, true), MILTER_NOREPLY);
    expect_out(m, S("\x00\x00\x00\x01K"));
    assert_false(milter_proto_awaiting(m));
    assert_false(milter_proto_unread(m));
    assert_int_equal(milter_proto_connect(m, "[1.2.3.4]", MILTER_FAM_INET, 25, "1.2.3.4"),
                     MILTER_AWAIT);
    expect_out(m, S("\x00\x00\x00\x16"
                    "C[1.2.3.4]\x00"
                    "4\x00\x19"
                    "1.2.3.4\x00"));
    milter_proto_free(m);
}

static void
test_recorded_replycode(void **state)
{
    struct milter_proto *m = negotiated(0x31, 0x300, "", 0);
    struct milter_event ev;

    (void)state;
    assert_int_equal(milter_proto_eob(m), MILTER_AWAIT);
    expect_out(m, S("\x00\x00\x00\x01"
                    "E"));
    /* recorded: smfi_setreply(ctx, "554", "4.7.0", "Go away\tplease\x01 now") */
    assert_int_equal(reply(m, S("\x00\x00\x00\x1fy554 4.7.0 Go away\tplease\x01 now\x00"), &ev), 1);
    assert_int_equal(ev.type, MILTER_EV_REPLYCODE);
    assert_int_equal(ev.code, 554);
    /* class set to the code's, controls made spaces */
    assert_string_equal(ev.b, "5.7.0 Go away please  now");
    milter_proto_free(m);
}

struct code_case {
    const char *in;
    int code; /* 0: a protocol error */
    const char *text;
};

static void
test_replycodes(void **state)
{
    static const struct code_case cases[] = {
        {"550 5.7.1 No thanks", 550, "5.7.1 No thanks"},
        {"451 Try later", 451, "4.7.1 Try later"},
        {"421 4.3.2 Shutting\r\n down", 421, "4.3.2 Shutting"},
        {"550-5.7.1 first\r\n550 5.7.1 second", 550, "5.7.1 first"},
        {"554", 554, "5.7.1"},
        {"550 2.0.0 odd class", 550, "5.0.0 odd class"},
        {"250 ok", 0, NULL},
        {"650 x", 0, NULL},
        {"5x0 x", 0, NULL},
        {"55", 0, NULL},
        {"5500 x", 0, NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct milter_proto *m = negotiated(0, 0, "", 0);
        struct milter_event ev;
        char pk[128];
        size_t l = strlen(cases[i].in) + 2;

        assert_int_equal(milter_proto_helo(m, "h"), MILTER_AWAIT);
        send_all(m);
        pk[0] = pk[1] = pk[2] = 0;
        pk[3] = (char)l;
        pk[4] = 'y';
        memcpy(pk + 5, cases[i].in, l - 1);
        if (cases[i].code == 0) {
            assert_int_equal(reply(m, pk, 4 + l, &ev), MXD_EINVAL);
            assert_string_equal(milter_proto_error(m), "malformed reply code");
        } else {
            assert_int_equal(reply(m, pk, 4 + l, &ev), 1);
            assert_int_equal(ev.code, cases[i].code);
            assert_string_equal(ev.b, cases[i].text);
        }
        milter_proto_free(m);
    }
}

static void
test_no_reply_steps(void **state)
{
    struct milter_proto *m = negotiated(
        0, MILTER_P_NR_CONN | MILTER_P_NR_HELO | MILTER_P_NR_HDR | MILTER_P_NOMAIL, "", 0);
    struct milter_macro mac[] = {{"{mail_addr}", "a@b.test"}};
    const char *mail[] = {"<a@b.test>"};

    (void)state;
    assert_int_equal(milter_proto_connect(m, "[192.0.2.1]", MILTER_FAM_INET6, 25, "2001:db8::1"),
                     MILTER_NOREPLY);
    assert_int_equal(milter_proto_helo(m, "h"), MILTER_NOREPLY);
    assert_int_equal(milter_proto_macros(m, MILTER_ST_MAIL, mac, 1), MILTER_SKIPPED);
    assert_int_equal(milter_proto_mail(m, mail, 1), MILTER_SKIPPED);
    assert_int_equal(milter_proto_header(m, "A", "b"), MILTER_NOREPLY);
    assert_int_equal(milter_proto_eoh(m), MILTER_AWAIT);
    /* everything up to EOH may go at once */
    expect_out(m, S("\x00\x00\x00\x1c"
                    "C[192.0.2.1]\x00"
                    "6\x00\x19"
                    "2001:db8::1\x00"
                    "\x00\x00\x00\x03Hh\x00"
                    "\x00\x00\x00\x05LA\x00"
                    "b\x00"
                    "\x00\x00\x00\x01N"));
    assert_true(milter_proto_awaiting(m));
    milter_proto_free(m);
}

static void
test_symlist(void **state)
{
    /* SETSYMLIST: connect wants j and {client_addr}; rcpt only rcpt_addr */
    static const char lists[] = "\x00\x00\x00\x00"
                                "j {client_addr}\x00"
                                "\x00\x00\x00\x03{rcpt_addr}\x00";
    struct milter_proto *m = negotiated(MILTER_ACT_SETSYMLIST, 0, S(lists));
    struct milter_macro mac[] = {{"j", "mx"}, {"_", "x"}, {"client_addr", "192.0.2.1"}};
    struct milter_macro rm[] = {{"{rcpt_mailer}", "smtp"}};

    (void)state;
    assert_int_equal(milter_proto_macros(m, MILTER_ST_CONNECT, mac, 3), MILTER_NOREPLY);
    expect_out(m, S("\x00\x00\x00\x1d"
                    "DCj\x00mx\x00"
                    "client_addr\x00"
                    "192.0.2.1\x00"));
    assert_int_equal(milter_proto_macros(m, MILTER_ST_RCPT, rm, 1), MILTER_SKIPPED);
    milter_proto_free(m);

    /* a list without SETSYMLIST negotiated is ignored */
    m = negotiated(0, 0, S(lists));
    assert_int_equal(milter_proto_macros(m, MILTER_ST_RCPT, rm, 1), MILTER_NOREPLY);
    milter_proto_free(m);
}

static void
test_skip_and_abort(void **state)
{
    struct milter_proto *m = negotiated(0, MILTER_P_SKIP, "", 0);
    struct milter_event ev;

    (void)state;
    assert_int_equal(milter_proto_body(m, S("one")), MILTER_AWAIT);
    assert_int_equal(milter_proto_body(m, S("two")), MILTER_AWAIT);
    assert_int_equal(milter_proto_body(m, S("three")), MILTER_AWAIT);
    assert_int_equal(milter_proto_eob(m), MILTER_AWAIT);
    expect_out(m, S("\x00\x00\x00\x04"
                    "Bone"));
    assert_int_equal(reply(m, S("\x00\x00\x00\x01s"), &ev), 1);
    assert_int_equal(ev.type, MILTER_EV_SKIP);
    /* the other chunks are dropped, and new ones are not queued */
    assert_int_equal(milter_proto_body(m, S("four")), MILTER_SKIPPED);
    expect_out(m, S("\x00\x00\x00\x01"
                    "E"));
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     1);

    /* ABORT: queued commands of the message go; ABORT after the awaited reply */
    assert_int_equal(milter_proto_header(m, "A", "1"), MILTER_AWAIT);
    assert_int_equal(milter_proto_header(m, "B", "2"), MILTER_AWAIT);
    send_all(m);
    assert_int_equal(milter_proto_abort(m), MILTER_NOREPLY);
    expect_out(m, "", 0);
    assert_int_equal(reply(m, S("\x00\x00\x00\x01p"), &ev), 1); /* progress */
    assert_int_equal(ev.type, MILTER_EV_PROGRESS);
    assert_false(ev.final);
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     1);
    expect_out(m, S("\x00\x00\x00\x01"
                    "A"));
    assert_false(milter_proto_awaiting(m));
    assert_int_equal(milter_proto_pending(m), 0);
    milter_proto_free(m);
}

static void
test_modifications(void **state)
{
    struct milter_proto *m =
        negotiated(MILTER_ACT_CHGHDRS | MILTER_ACT_DELRCPT | MILTER_ACT_ADDRCPT_PAR, 0, "", 0);
    struct milter_event ev;

    (void)state;
    assert_int_equal(milter_proto_eob(m), MILTER_AWAIT);
    send_all(m);
    assert_int_equal(reply(m, S("\x00\x00\x00\x11m\x00\x00\x00\x02Subject\x00new\x00"), &ev), 1);
    assert_int_equal(ev.type, MILTER_EV_CHGHEADER);
    assert_int_equal(ev.index, 2);
    assert_string_equal(ev.a, "Subject");
    assert_string_equal(ev.b, "new");
    assert_true(ev.permitted);
    /* an empty value deletes the field */
    assert_int_equal(reply(m, S("\x00\x00\x00\x0dm\x00\x00\x00\x01X-Drop\x00\x00"), &ev), 1);
    assert_string_equal(ev.b, "");
    assert_int_equal(reply(m, S("\x00\x00\x00\x0c-<x@y.test>\x00"), &ev), 1);
    assert_int_equal(ev.type, MILTER_EV_DELRCPT);
    assert_string_equal(ev.a, "<x@y.test>");
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x15"
                             "2<n@y.test>\x00NOTIFY=N\x00"),
                           &ev),
                     1);
    assert_int_equal(ev.type, MILTER_EV_ADDRCPT);
    assert_string_equal(ev.b, "NOTIFY=N");
    assert_true(ev.permitted);
    /* not negotiated: decoded, marked */
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x05hA\x00"
                             "b\x00"),
                           &ev),
                     1);
    assert_false(ev.permitted);
    assert_int_equal(reply(m, S("\x00\x00\x00\x06qspam\x00"), &ev), 1);
    assert_int_equal(ev.type, MILTER_EV_QUARANTINE);
    assert_string_equal(ev.a, "spam");
    assert_false(ev.permitted);
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x05"
                             "bnew\n"),
                           &ev),
                     1);
    assert_int_equal(ev.type, MILTER_EV_REPLBODY);
    assert_int_equal(ev.len, 4);
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x0c"
                             "e<f@y.test>\x00"),
                           &ev),
                     1);
    assert_int_equal(ev.type, MILTER_EV_CHGFROM);
    assert_string_equal(ev.b, "");
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "d"),
                           &ev),
                     1);
    assert_int_equal(ev.type, MILTER_EV_DISCARD);
    assert_true(ev.final);
    milter_proto_free(m);
}

struct err_case {
    const char *name;
    char cmd; /* the command awaiting: 'H', 'B' or 'E'; 0: none */
    const char *in;
    size_t len;
    const char *why;
};

static void
test_errors(void **state)
{
    static const struct err_case cases[] = {
        {"oversized", 'H', S("\x00\x10\x00\x00"), "packet too long"},
        {"huge", 'H', S("\xff\xff\xff\xff"), "packet too long"},
        {"empty", 'H', S("\x00\x00\x00\x00"), "empty packet"},
        {"unknown", 'H', S("\x00\x00\x00\x01Z"), "unknown reply"},
        {"unasked", 0,
         S("\x00\x00\x00\x01"
           "c"),
         "reply when none was awaited"},
        {"mod at helo", 'H',
         S("\x00\x00\x00\x05hA\x00"
           "b\x00"),
         "modification outside end of message"},
        {"skip not negotiated", 'B', S("\x00\x00\x00\x01s"), "skip not allowed here"},
        {"skip at eob", 'E', S("\x00\x00\x00\x01s"), "skip not allowed here"},
        {"header no nul", 'E',
         S("\x00\x00\x00\x04hA\x00"
           "b"),
         "malformed add header"},
        {"header bad name", 'E',
         S("\x00\x00\x00\x06hA:\x00"
           "b\x00"),
         "malformed add header"},
        {"chg short", 'E', S("\x00\x00\x00\x03m\x00\x00"), "malformed header change"},
        {"replycode no nul", 'H', S("\x00\x00\x00\x04y550"), "malformed reply code"},
        {"rcpt empty", 'E', S("\x00\x00\x00\x02+\x00"), "malformed recipient change"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct err_case *c = &cases[i];
        struct milter_proto *m = negotiated(MILTER_ACT_ALL, 0, "", 0);
        struct milter_event ev;
        size_t avail;

        print_message("case %s\n", c->name);
        if (c->cmd == 'H')
            assert_int_equal(milter_proto_helo(m, "h"), MILTER_AWAIT);
        else if (c->cmd == 'B')
            assert_int_equal(milter_proto_body(m, S("x")), MILTER_AWAIT);
        else if (c->cmd == 'E')
            assert_int_equal(milter_proto_eob(m), MILTER_AWAIT);
        send_all(m);
        assert_int_equal(reply(m, c->in, c->len, &ev), MXD_EINVAL);
        assert_string_equal(milter_proto_error(m), c->why);
        /* over: nothing more in or out, and no buffer for what was claimed */
        assert_int_equal(milter_proto_next(m, &ev), MXD_EINVAL);
        milter_proto_rbuf(m, &avail);
        assert_int_equal(avail, 0);
        assert_int_equal(milter_proto_helo(m, "h"), MXD_EINVAL);
        milter_proto_free(m);
    }
}

/* fuzz_milter found it: an empty packet followed by more input made feed
 * loop without taking anything. */
static void
test_empty_packet_then_more(void **state)
{
    struct milter_proto *m = negotiated(0, 0, "", 0);
    struct milter_event ev;
    size_t taken;

    (void)state;
    assert_int_equal(milter_proto_helo(m, "h"), MILTER_AWAIT);
    send_all(m);
    assert_int_equal(milter_proto_feed(m,
                                       S("\x00\x00\x00\x00\x00\x00\x00\x01"
                                         "c"),
                                       &taken),
                     0);
    assert_int_equal(taken, 4);
    assert_int_equal(milter_proto_next(m, &ev), MXD_EINVAL);
    assert_string_equal(milter_proto_error(m), "empty packet");
    milter_proto_free(m);
}

static void
test_negotiation(void **state)
{
    struct milter_proto *m = milter_proto_new(MILTER_ACT_ADDHDRS, MILTER_P_OFFER);
    struct milter_event ev;

    (void)state;
    assert_int_equal(milter_proto_helo(m, "h"), MXD_EINVAL); /* OPTNEG first */
    assert_int_equal(milter_proto_optneg(m), MILTER_AWAIT);
    assert_int_equal(milter_proto_optneg(m), MXD_EINVAL);
    send_all(m);
    /* asks for more than offered: masked (RCPT_REJ and MDS_1M are not) */
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff"
                             "\x20\x00\x08\x00"),
                           &ev),
                     1);
    assert_int_equal(milter_proto_actions(m), MILTER_ACT_ADDHDRS);
    assert_int_equal(milter_proto_steps(m), 0);
    milter_proto_free(m);

    /* version 7 and a short reply are refused; version 2 is spoken */
    m = milter_proto_new(0, 0);
    assert_int_equal(milter_proto_optneg(m), MILTER_AWAIT);
    send_all(m);
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x0dO\x00\x00\x00\x07\x00\x00\x00\x00"
                             "\x00\x00\x00\x00"),
                           &ev),
                     MXD_EINVAL);
    milter_proto_free(m);
    m = milter_proto_new(0, 0);
    assert_int_equal(milter_proto_optneg(m), MILTER_AWAIT);
    send_all(m);
    assert_int_equal(reply(m, S("\x00\x00\x00\x05O\x00\x00\x00\x06"), &ev), MXD_EINVAL);
    milter_proto_free(m);
    m = milter_proto_new(0, 0);
    assert_int_equal(milter_proto_optneg(m), MILTER_AWAIT);
    send_all(m);
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x01"
                             "c"),
                           &ev),
                     MXD_EINVAL);
    assert_string_equal(milter_proto_error(m), "no OPTNEG reply");
    milter_proto_free(m);
    m = milter_proto_new(0, 0);
    assert_int_equal(milter_proto_optneg(m), MILTER_AWAIT);
    send_all(m);
    assert_int_equal(reply(m,
                           S("\x00\x00\x00\x0dO\x00\x00\x00\x02\x00\x00\x00\x00"
                             "\x00\x00\x00\x00"),
                           &ev),
                     1);
    assert_int_equal(milter_proto_data(m), MILTER_SKIPPED); /* DATA came with v4 */
    milter_proto_free(m);
}

static void
test_limits(void **state)
{
    static char big[70000];
    struct milter_proto *m = negotiated(0, 0, "", 0);
    const char *mail[] = {big};
    size_t n = 0;

    (void)state;
    memset(big, 'a', sizeof(big) - 1);
    assert_int_equal(milter_proto_body(m, big, MILTER_CHUNK_MAX + 1), MXD_ETOOBIG);
    assert_int_equal(milter_proto_body(m, big, MILTER_CHUNK_MAX), MILTER_AWAIT);
    assert_int_equal(milter_proto_header(m, "X", big), MXD_ETOOBIG);
    assert_int_equal(milter_proto_mail(m, mail, 1), MXD_ETOOBIG);
    assert_int_equal(milter_proto_body(m, big, 0), MXD_EINVAL);
    /* the queue is bounded */
    while (milter_proto_body(m, big, MILTER_CHUNK_MAX) == MILTER_AWAIT)
        n++;
    assert_int_equal(milter_proto_body(m, big, MILTER_CHUNK_MAX), MXD_ETOOBIG);
    assert_true(milter_proto_pending(m) <= MILTER_OUT_MAX);
    assert_true(n >= 10);
    milter_proto_free(m);
}

/* Replies fed one octet at a time give the same events. */
static void
test_split_input(void **state)
{
    static const char replies[] = "\x00\x00\x00\x14hX-Test-Filter\x00seen\x00"
                                  "\x00\x00\x00\x01p"
                                  "\x00\x00\x00\x01"
                                  "a";
    struct milter_proto *m = negotiated(MILTER_ACT_ADDHDRS, 0, "", 0);
    struct milter_event ev;
    enum milter_ev got[4];
    size_t ngot = 0;

    (void)state;
    assert_int_equal(milter_proto_eob(m), MILTER_AWAIT);
    send_all(m);
    for (size_t i = 0; i < sizeof(replies) - 1; i++) {
        size_t taken;
        int rc;

        assert_int_equal(milter_proto_feed(m, replies + i, 1, &taken), 0);
        assert_int_equal(taken, 1);
        while ((rc = milter_proto_next(m, &ev)) == 1)
            got[ngot++] = ev.type;
        assert_int_equal(rc, 0);
    }
    assert_int_equal(ngot, 3);
    assert_int_equal(got[0], MILTER_EV_ADDHEADER);
    assert_int_equal(got[1], MILTER_EV_PROGRESS);
    assert_int_equal(got[2], MILTER_EV_ACCEPT);
    milter_proto_free(m);
}

struct hdr_case {
    const char *name, *value, *want;
};

static void
test_header_format(void **state)
{
    static const struct hdr_case cases[] = {
        {"X-A", "b", "X-A: b\r\n"},
        {"X-A", " b", "X-A: b\r\n"},
        {"X-A", "", "X-A:\r\n"},
        {"X-A", "first\n\tfolded", "X-A: first\r\n\tfolded\r\n"},
        {"X-A", "first\r\nsecond", "X-A: first\r\n\tsecond\r\n"},
        {"X-A", "a\x01z\n", "X-A: a z\r\n"},
        {"X-A", "bare\rcr", "X-A: bare\r\n\tcr\r\n"},
        {"X A", "b", NULL},
        {"", "b", NULL},
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = milter_header_format(out, sizeof(out), cases[i].name, cases[i].value);

        if (cases[i].want == NULL) {
            assert_int_equal(n, 0);
        } else {
            assert_int_equal(n, strlen(cases[i].want));
            assert_string_equal(out, cases[i].want);
        }
    }
    assert_int_equal(milter_header_format(out, 8, "X-A", "too long for it"), 0);
    assert_string_equal(milter_ev_name(MILTER_EV_CHGHEADER), "change_header");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recorded_addheader),
        cmocka_unit_test(test_recorded_replycode),
        cmocka_unit_test(test_replycodes),
        cmocka_unit_test(test_no_reply_steps),
        cmocka_unit_test(test_symlist),
        cmocka_unit_test(test_skip_and_abort),
        cmocka_unit_test(test_modifications),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_empty_packet_then_more),
        cmocka_unit_test(test_negotiation),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_quit_nc_starts_over),
        cmocka_unit_test(test_split_input),
        cmocka_unit_test(test_header_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
