/*
 * lmtp_script: the scripted-server harness of the lmtp_proto tests
 * (test_lmtp_proto for LMTP, test_smtp_client for SMTP mode). A scenario
 * is a list of steps (server sends, mxd starts a txn / gives a body chunk
 * / quits / aborts, expect these bytes sent, expect these events). Every
 * scenario runs twice: server replies fed whole (several replies in one
 * buffer) and one octet at a time; the bytes sent and the events must be
 * the same. Static helpers, for one test program, which defines
 * script_new(), script_txn() and sub_script().
 */
#ifndef MXD_TEST_LMTP_SCRIPT_H
#define MXD_TEST_LMTP_SCRIPT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/lmtp_proto.h"

enum op {
    END,   /* end of the script: nothing unchecked may be left */
    SRV,   /* the server sends s */
    SENT,  /* mxd has sent exactly s since the last SENT */
    EV,    /* the events since the last EV were s (one per line) */
    START, /* lmtp_proto_start(script_txn(n)) */
    BODY,  /* lmtp_proto_body(s, false) */
    LAST,  /* lmtp_proto_body(s, true) */
    QUIT,  /* lmtp_proto_quit() */
    ABORT, /* lmtp_proto_abort(s) */
    RUN,   /* the steps of sub_script(n) */
};

struct step {
    enum op op;
    const char *s;
    size_t n;
};

struct scenario {
    const struct step *steps;
};

/* Defined by the test program: a new session, transaction n, the steps
 * of sub-script n. */
static struct lmtp_proto *script_new(void);
static const struct lmtp_txn *script_txn(size_t n);
static const struct step *sub_script(size_t n);

struct ctx {
    struct lmtp_proto *p;
    size_t step; /* feed size: 0 whole */
    char *sent;
    size_t slen;
    char ev[16384];
    size_t elen;
};

#define SENT_MAX (1u << 20)

static void log_ev(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
log_ev(struct ctx *c, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(c->ev + c->elen, sizeof(c->ev) - c->elen, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(c->ev) - c->elen);
    c->elen += (size_t)n;
}

/* Pulls events until NONE; returns how many. */
static size_t
drain(struct ctx *c)
{
    struct lmtp_event e;
    size_t n = 0;

    while (lmtp_proto_next(c->p, &e) != LMTP_EV_NONE) {
        n++;
        switch (e.type) {
        case LMTP_EV_SEND:
            assert_true(e.len > 0 && c->slen + e.len <= SENT_MAX);
            memcpy(c->sent + c->slen, e.data, e.len);
            c->slen += e.len;
            log_ev(c, "SEND\n");
            break;
        case LMTP_EV_RCPT:
            assert_non_null(e.text);
            log_ev(c, "RCPT %zu %d %s\n", e.index, e.code, e.text);
            break;
        case LMTP_EV_FAILED:
            assert_non_null(e.text);
            log_ev(c, "FAILED %s\n", e.text);
            break;
        default:
            log_ev(c, "%s\n", lmtp_ev_name(e.type));
            break;
        }
    }
    return n;
}

static void
srv(struct ctx *c, const char *s)
{
    size_t len = strlen(s);
    size_t pos = 0;

    while (pos < len) {
        size_t n = c->step == 0 || len - pos < c->step ? len - pos : c->step;
        size_t used = lmtp_proto_feed(c->p, s + pos, n);

        assert_true(used <= n);
        pos += used;
        /* taking less is only allowed when an event must be pulled */
        if (drain(c) == 0 && used < n)
            fail_msg("feed took %zu of %zu octets and has no event", used, n);
    }
}

static void
expect_sent(struct ctx *c, const char *want)
{
    c->sent[c->slen] = '\0';
    assert_int_equal(c->slen, strlen(want));
    assert_string_equal(c->sent, want);
    c->slen = 0;
}

static void
expect_ev(struct ctx *c, const char *want)
{
    c->ev[c->elen] = '\0';
    assert_string_equal(c->ev, want);
    c->elen = 0;
}

static void
run_step(struct ctx *c, const struct step *st)
{
    switch (st->op) {
    case SRV:
        srv(c, st->s);
        return;
    case SENT:
        expect_sent(c, st->s);
        return;
    case EV:
        expect_ev(c, st->s);
        return;
    case START:
        lmtp_proto_start(c->p, script_txn(st->n));
        break;
    case BODY:
    case LAST:
        lmtp_proto_body(c->p, st->s, strlen(st->s), st->op == LAST);
        break;
    case QUIT:
        lmtp_proto_quit(c->p);
        break;
    case ABORT:
        lmtp_proto_abort(c->p, st->s);
        break;
    case RUN:
        for (const struct step *sub = sub_script(st->n); sub->op != END; sub++)
            run_step(c, sub);
        return;
    case END:
        break;
    }
    drain(c);
}

static void
run_script(const struct step *steps, size_t feed)
{
    struct ctx c = {.step = feed};
    size_t i;

    c.sent = malloc(SENT_MAX + 1);
    assert_non_null(c.sent);
    c.p = script_new();
    for (i = 0; steps[i].op != END; i++) {
        print_message("feed %zu step %zu\n", feed, i);
        run_step(&c, &steps[i]);
    }
    /* everything the session did was checked */
    expect_sent(&c, "");
    expect_ev(&c, "");
    lmtp_proto_free(c.p);
    free(c.sent);
}

static void
run_scenario(void **state)
{
    const struct scenario *sc = *state;

    run_script(sc->steps, 0);
    run_script(sc->steps, 1);
}

#define SCENARIO(name)                                                                             \
    {                                                                                              \
#name, run_scenario, NULL, NULL, &(struct scenario)                                        \
        {                                                                                          \
            sc_##name                                                                              \
        }                                                                                          \
    }

#endif
