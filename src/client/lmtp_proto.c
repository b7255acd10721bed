/* lmtp_proto: the LMTP client state machine (RFC 2033), which also speaks
 * SMTP (RFC 5321) as the client that forwards to a primary MX. Owns the
 * struct lmtp_proto, its reply parser, the output buffer that SEND events
 * point into and a per-transaction recipient state array. Loop thread (or
 * any single thread), pure: no I/O, clock, store or libuv. This file has
 * the events, the output and the transaction; lmtp_proto_smtp.c has what
 * differs between the modes (greeting, refusals, body framing).
 *
 * Flow: 220 greeting -> LHLO (SMTP: EHLO, HELO after a 5xx) -> 250
 * capabilities -> READY; per message MAIL, RCPT..., DATA (one SEND with
 * PIPELINING, else one command per reply), BODY events asking for the body
 * chunk by chunk (dot-stuffed), then one reply per accepted recipient
 * after the final dot (RFC 2033 4.2) -> RCPT events, TXN_DONE, READY. In
 * SMTP mode one reply after the data is every accepted recipient's, and
 * with CHUNKING the body goes as BDAT <size> LAST once a RCPT was
 * accepted. A verify_only txn (callahead) sends RSET instead of DATA and
 * each RCPT reply is the outcome. QUIT -> CLOSED; asked for after TXN_DONE
 * but before READY, it waits until the server has answered the rest.
 *
 * Error contract: nothing returns an error. A broken server (garbage,
 * 421, a reply when none is due), a body of the wrong size (SMTP) or
 * lmtp_proto_abort() ends the session: every recipient of the open
 * transaction without an outcome gets a 451 RCPT event, then TXN_DONE,
 * then FAILED; after that input is ignored. Misuse by the caller (a second
 * start, body outside the body) panics.
 *
 * It does not open, time or close connections, read the body, retry, or
 * decide what a reply code means for the queue: the glue and scheduler
 * do. */
#include "client/lmtp_proto.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/lmtp_proto_impl.h"

#define LMTP_EV_NAME(name) [LMTP_EV_##name] = #name,
static const char *const lmtp_ev_names[] = {LMTP_EVENTS(LMTP_EV_NAME)};
#undef LMTP_EV_NAME

#define LMTP_ST_WHAT(name, what) [LMTP_ST_##name] = what,
static const char *const lmtp_st_what[] = {LMTP_STATES(LMTP_ST_WHAT)};
#undef LMTP_ST_WHAT

void
lmtp_proto__textf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

const char *
lmtp_ev_name(enum lmtp_ev ev)
{
    if ((size_t)ev >= sizeof(lmtp_ev_names) / sizeof(lmtp_ev_names[0]))
        return "?";
    return lmtp_ev_names[ev];
}

void
lmtp_proto__q_push(struct lmtp_proto *p, enum lmtp_ev type, size_t index, int code,
                   const char *text)
{
    if (p->qlen == LMTP_QUEUE_MAX)
        mxd_panic("lmtp_proto: event queue overflow");
    p->q[p->qlen++] = (struct lmtp_qent){type, index, code, text};
}

static void
q_pop(struct lmtp_proto *p)
{
    p->qlen--;
    memmove(&p->q[0], &p->q[1], p->qlen * sizeof(p->q[0]));
}

/* Drops queued events that a failure makes wrong: bytes to send, BODY and
 * READY. RCPT and TXN_DONE stay. */
static void
q_purge(struct lmtp_proto *p)
{
    size_t n = 0;

    for (size_t i = 0; i < p->qlen; i++) {
        enum lmtp_ev t = p->q[i].type;

        if (t != LMTP_EV_SEND && t != LMTP_EV_BODY && t != LMTP_EV_READY)
            p->q[n++] = p->q[i];
    }
    p->qlen = n;
    if (p->out_queued) {
        p->out_queued = false;
        p->out_len = 0;
    }
}

/* The last SEND's bytes are no longer needed once the caller is back. */
void
lmtp_proto__out_release(struct lmtp_proto *p)
{
    if (p->out_handed) {
        p->out_handed = false;
        p->out_len = 0;
    }
}

void
lmtp_proto__out_reserve(struct lmtp_proto *p, size_t n)
{
    if (n > SIZE_MAX / 2 - p->out_len)
        mxd_panic("lmtp_proto: output size overflow");
    if (p->out_len + n <= p->out_cap)
        return;
    /* Only a body chunk over 64 KiB or a huge recipient list gets here. */
    p->out_cap = 2 * (p->out_len + n);
    p->out = xrealloc(p->out, p->out_cap);
}

void
lmtp_proto__out_mark(struct lmtp_proto *p)
{
    if (!p->out_queued && p->out_len > 0) {
        p->out_queued = true;
        lmtp_proto__q_push(p, LMTP_EV_SEND, 0, 0, NULL);
    }
}

void
lmtp_proto__out_put(struct lmtp_proto *p, const char *s)
{
    size_t n = strlen(s);

    lmtp_proto__out_reserve(p, n);
    memcpy(p->out + p->out_len, s, n);
    p->out_len += n;
    lmtp_proto__out_mark(p);
}

static struct lmtp_proto *
proto_new(const char *hello_name, bool smtp)
{
    struct lmtp_proto *p = xcalloc(1, sizeof(*p));

    if (hello_name == NULL || hello_name[0] == '\0' || strpbrk(hello_name, "\r\n") != NULL)
        mxd_panic("lmtp_proto_new: bad LHLO/EHLO name");
    p->hello_name = xstrdup(hello_name);
    p->smtp = smtp;
    p->st = LMTP_ST_GREETING;
    reply_parser_init(&p->rp);
    p->out_cap = LMTP_OUT_INIT;
    p->out = xmalloc(p->out_cap);
    return p;
}

struct lmtp_proto *
lmtp_proto_new(const char *lhlo_name)
{
    return proto_new(lhlo_name, false);
}

struct lmtp_proto *
lmtp_proto_new_smtp(const char *ehlo_name)
{
    return proto_new(ehlo_name, true);
}

void
lmtp_proto_free(struct lmtp_proto *p)
{
    if (p == NULL)
        return;
    free(p->rstate);
    free(p->out);
    free(p->hello_name);
    mime7_free(p->conv);
    free(p);
}

const char *
lmtp_proto__peer(const struct lmtp_proto *p)
{
    return p->smtp ? "SMTP server" : "LMTP server";
}

/* Queues TXN_DONE once every recipient has its outcome; the caller's
 * strings are not touched after that. */
static void
txn_check_done(struct lmtp_proto *p)
{
    if (p->txn != NULL && p->noutcome == p->nrcpts) {
        p->txn = NULL;
        lmtp_proto__q_push(p, LMTP_EV_TXN_DONE, 0, 0, NULL);
    }
}

/* Gives every recipient without an outcome this code and text, as RCPT
 * events expanded one by one in lmtp_proto_next(). */
static void
broadcast(struct lmtp_proto *p, int code, const char *text)
{
    size_t n = 0;

    if (p->txn == NULL)
        return;
    for (size_t i = 0; i < p->nrcpts; i++) {
        if (p->rstate[i] == LMTP_RS_PENDING || p->rstate[i] == LMTP_RS_ACCEPTED) {
            p->rstate[i] = LMTP_RS_MARKED;
            n++;
        }
    }
    if (n == 0)
        return;
    p->noutcome += n;
    p->bcast_next = 0;
    lmtp_proto__textf(p->txt_all, sizeof(p->txt_all), "%s", text);
    lmtp_proto__q_push(p, LMTP_EV_RCPT, LMTP_BCAST, code, p->txt_all);
}

/* One recipient's outcome from a reply: p->sum. */
static void
rcpt_outcome(struct lmtp_proto *p, size_t i, int code)
{
    p->rstate[i] = LMTP_RS_DONE;
    p->noutcome++;
    lmtp_proto__textf(p->txt_one, sizeof(p->txt_one), "%s", p->sum);
    lmtp_proto__q_push(p, LMTP_EV_RCPT, i, code, p->txt_one);
}

void
lmtp_proto__fail(struct lmtp_proto *p, const char *enh, const char *reason)
{
    char text[LMTP_TEXT_MAX];

    q_purge(p);
    lmtp_proto__textf(p->txt_fail, sizeof(p->txt_fail), "%s", reason);
    lmtp_proto__textf(text, sizeof(text), "451 %s %s", enh, reason);
    broadcast(p, 451, text);
    txn_check_done(p);
    p->st = LMTP_ST_FAILED;
    lmtp_proto__q_push(p, LMTP_EV_FAILED, 0, 0, p->txt_fail);
}

void
lmtp_proto__fail_reply(struct lmtp_proto *p, const char *fmt, ...)
{
    char why[LMTP_TEXT_MAX];
    char reason[LMTP_TEXT_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    lmtp_proto__textf(reason, sizeof(reason), "%s (awaiting %s): %s", why, lmtp_st_what[p->st],
                      p->sum);
    lmtp_proto__fail(p, "4.4.2", reason);
}

/* RFC 3461 4.1, 4.2: NOTIFY as given, ORCPT as given or built. */
static void
send_rcpt_dsn(struct lmtp_proto *p, const struct lmtp_txn *t, size_t i)
{
    char buf[DSN_ORCPT_MAX * 3 + 64];
    unsigned notify = t->notify != NULL ? t->notify[i] : 0;

    if (notify != 0 && p->dsn) {
        lmtp_proto__out_put(p, " NOTIFY=");
        lmtp_proto__out_put(p, dsn_notify_name(notify));
    }
    if (dsn_orcpt_format(t->orcpt != NULL ? t->orcpt[i] : NULL, t->rcpts[i], buf, sizeof(buf)) >
        0) {
        lmtp_proto__out_put(p, " ORCPT=");
        lmtp_proto__out_put(p, buf);
    }
}

static void
send_rcpt(struct lmtp_proto *p, size_t i)
{
    lmtp_proto__out_put(p, "RCPT TO:<");
    lmtp_proto__out_put(p, p->txn->rcpts[i]);
    lmtp_proto__out_put(p, ">");
    if ((p->dsn || p->dovecot) && p->txn->dsn)
        send_rcpt_dsn(p, p->txn, i);
    lmtp_proto__out_put(p, "\r\n");
}

static void
send_mail(struct lmtp_proto *p, const struct lmtp_txn *t)
{
    char num[32];

    lmtp_proto__out_put(p, "MAIL FROM:<");
    lmtp_proto__out_put(p, t->sender);
    lmtp_proto__out_put(p, ">");
    if (p->size_offered) {
        snprintf(num, sizeof(num), " SIZE=%" PRIu64, lmtp_proto__wire_size(p));
        lmtp_proto__out_put(p, num);
    }
    if (t->body_8bit && p->eightbit)
        lmtp_proto__out_put(p, " BODY=8BITMIME");
    /* RFC 6531 3.4: without the extension only when it is not needed
     * (lmtp_proto__refusal saw to that) */
    if (t->smtputf8 && p->smtputf8)
        lmtp_proto__out_put(p, " SMTPUTF8");
    if (p->smtp && t->requiretls) /* RFC 8689 4.2.1 (lmtp_proto__refusal checked the rest) */
        lmtp_proto__out_put(p, " REQUIRETLS");
    if (p->dsn && t->dsn && t->ret != DSN_RET_NONE) /* RFC 3461 4.3 */
        lmtp_proto__out_put(p, t->ret == DSN_RET_FULL ? " RET=FULL" : " RET=HDRS");
    if (p->dsn && t->dsn && t->envid != NULL && t->envid[0] != '\0') { /* 4.4 */
        char buf[DSN_ENVID_MAX * 3 + 1];

        if (dsn_xtext_encode(t->envid, strlen(t->envid), buf, sizeof(buf)) > 0) {
            lmtp_proto__out_put(p, " ENVID=");
            lmtp_proto__out_put(p, buf);
        }
    }
    lmtp_proto__out_put(p, "\r\n");
}

static void
send_rset(struct lmtp_proto *p)
{
    lmtp_proto__out_put(p, "RSET\r\n");
    p->st = LMTP_ST_RSET;
}

/* The transaction is over and the server has answered everything. */
void
lmtp_proto__become_ready(struct lmtp_proto *p)
{
    if (p->quit_pending) {
        lmtp_proto__out_put(p, "QUIT\r\n");
        p->st = LMTP_ST_QUIT;
        return;
    }
    p->st = LMTP_ST_READY;
    lmtp_proto__q_push(p, LMTP_EV_READY, 0, 0, NULL);
}

void
lmtp_proto__refuse(struct lmtp_proto *p, int code, const char *text)
{
    if (text != NULL)
        broadcast(p, code, text);
    txn_check_done(p);
    if (p->st == LMTP_ST_READY)
        lmtp_proto__q_push(p, LMTP_EV_READY, 0, 0, NULL);
}

void
lmtp_proto_start(struct lmtp_proto *p, const struct lmtp_txn *t)
{
    const char *refusal;
    int code;

    lmtp_proto__out_release(p);
    if (p->txn != NULL || p->qlen > 0)
        mxd_panic("lmtp_proto_start: previous transaction or events pending");
    free(p->rstate);
    p->rstate = xcalloc(t->nrcpts > 0 ? t->nrcpts : 1, 1);
    p->txn = t;
    p->nrcpts = t->nrcpts;
    p->naccepted = p->noutcome = p->reply_idx = p->dot_next = 0;
    p->xf_n = p->xf_sent = p->xf_left = 0;
    p->mail_failed = false;
    p->verify = t->verify_only;
    p->bdat = p->smtp && p->chunking && !p->verify;
    mime7_free(p->conv);
    p->conv = NULL;
    refusal = lmtp_proto__refusal(p, t, &code);
    if (refusal != NULL || t->nrcpts == 0) {
        lmtp_proto__refuse(p, code, refusal);
        return;
    }
    if (!p->eightbit && !p->verify) {
        /* RFC 6152 3: nothing 8-bit to a server without 8BITMIME */
        lmtp_proto__scan_begin(p);
        return;
    }
    lmtp_proto__txn_send(p);
}

void
lmtp_proto__txn_send(struct lmtp_proto *p)
{
    const struct lmtp_txn *t = p->txn;

    p->st = LMTP_ST_TXN;
    p->xf_left = lmtp_proto__xforward_build(p);
    if (p->xf_left > 0 && !p->pipelining) {
        /* one XFORWARD at a time; MAIL after the last reply (on_xforward) */
        lmtp_proto__out_put(p, p->xf_lines[p->xf_sent++]);
        return;
    }
    while (p->xf_sent < p->xf_n)
        lmtp_proto__out_put(p, p->xf_lines[p->xf_sent++]);
    send_mail(p, t);
    if (!p->pipelining)
        return;
    /* RFC 2920 3.1: MAIL, RCPT and DATA (or RSET) may all go in one group.
     * BDAT is not in it: it waits for the RCPT replies (see on_rcpt). */
    for (size_t i = 0; i < t->nrcpts; i++)
        send_rcpt(p, i);
    if (p->verify)
        lmtp_proto__out_put(p, "RSET\r\n");
    else if (!p->bdat)
        lmtp_proto__out_put(p, "DATA\r\n");
}

static void
on_mail(struct lmtp_proto *p, int cls)
{
    if (cls == 2) {
        if (!p->pipelining)
            send_rcpt(p, 0);
        return;
    }
    /* The server refused the sender: that is every recipient's outcome. */
    p->mail_failed = true;
    broadcast(p, p->rep.code, p->sum);
    txn_check_done(p);
    if (!p->pipelining)
        send_rset(p);
    /* else the group's RCPT and DATA replies follow and are eaten */
}

static void
on_rcpt(struct lmtp_proto *p, size_t i, int cls)
{
    bool last = i + 1 == p->nrcpts;

    if (p->mail_failed) {
        /* RFC 2920 3.1: replies to the rest of a failed group */
    } else if (cls == 2 && !p->verify) {
        p->rstate[i] = LMTP_RS_ACCEPTED;
        p->naccepted++;
    } else {
        rcpt_outcome(p, i, p->rep.code);
    }
    txn_check_done(p);
    if (p->pipelining && !(p->bdat && last)) {
        if (p->verify && last)
            p->st = LMTP_ST_RSET; /* its RSET is next in the group */
        return;
    }
    if (!last)
        send_rcpt(p, i + 1);
    else if (p->naccepted == 0)
        send_rset(p);
    else if (p->bdat)
        lmtp_proto__bdat_begin(p);
    else
        lmtp_proto__out_put(p, "DATA\r\n");
}

static void
on_data(struct lmtp_proto *p, int cls)
{
    if (p->rep.code == 354 && p->naccepted > 0 && !p->mail_failed) {
        lmtp_proto__body_begin(p);
        return;
    }
    if (cls != 4 && cls != 5) {
        /* 354 without an accepted recipient (RFC 2033 4.2: it must be
         * 503) or a 2xx: what comes after the dot is unknowable. */
        lmtp_proto__fail_reply(p, "%s gave an impossible reply to DATA", lmtp_proto__peer(p));
        return;
    }
    broadcast(p, p->rep.code, p->sum); /* the accepted recipients, if any */
    txn_check_done(p);
    send_rset(p);
}

/* A reply to XFORWARD: a refusal is every recipient's outcome, as a
 * refused MAIL is (Postfix's smtp client does the same); the rest of a
 * pipelined group is eaten. */
static void
on_xforward(struct lmtp_proto *p, int cls)
{
    p->xf_left--;
    if (cls != 2 && !p->mail_failed) {
        p->mail_failed = true;
        broadcast(p, p->rep.code, p->sum);
        txn_check_done(p);
        if (!p->pipelining) {
            p->xf_left = 0;
            send_rset(p);
        }
        return;
    }
    if (p->pipelining)
        return;
    if (p->xf_sent < p->xf_n)
        lmtp_proto__out_put(p, p->xf_lines[p->xf_sent++]);
    else
        send_mail(p, p->txn);
}

static void
on_txn_reply(struct lmtp_proto *p)
{
    size_t idx;
    int cls = p->rep.code / 100;

    if (p->xf_left > 0) {
        on_xforward(p, cls);
        return;
    }
    idx = p->reply_idx++;

    if (idx <= p->nrcpts && cls == 3) {
        lmtp_proto__fail_reply(p, "%s gave an impossible reply", lmtp_proto__peer(p));
        return;
    }
    if (idx == 0)
        on_mail(p, cls);
    else if (idx <= p->nrcpts)
        on_rcpt(p, idx - 1, cls);
    else
        on_data(p, cls);
}

/* LMTP (RFC 2033 4.2): after the dot, one reply per accepted recipient,
 * in RCPT order. SMTP (RFC 5321 4.1.1.4, RFC 3030 2): one reply, the
 * outcome of every accepted recipient. */
static void
on_dot_reply(struct lmtp_proto *p)
{
    size_t i = p->dot_next;

    if (p->rep.code / 100 == 3) {
        lmtp_proto__fail_reply(p, "%s gave an impossible reply", lmtp_proto__peer(p));
        return;
    }
    if (p->smtp) {
        broadcast(p, p->rep.code, p->sum);
    } else {
        while (i < p->nrcpts && p->rstate[i] != LMTP_RS_ACCEPTED)
            i++;
        if (i == p->nrcpts)
            mxd_panic("lmtp_proto: after-dot reply without a recipient");
        p->dot_next = i + 1;
        rcpt_outcome(p, i, p->rep.code);
    }
    txn_check_done(p);
    if (p->txn == NULL)
        lmtp_proto__become_ready(p);
}

static void
on_reply(struct lmtp_proto *p)
{
    reply_summary(&p->rep, p->sum, sizeof(p->sum));
    if (p->st == LMTP_ST_QUIT) {
        p->st = LMTP_ST_CLOSED;
        lmtp_proto__q_push(p, LMTP_EV_CLOSED, 0, 0, NULL);
        return;
    }
    if (p->rep.code == 421) {
        lmtp_proto__fail_reply(p, "%s is closing the session", lmtp_proto__peer(p));
        return;
    }
    switch (p->st) {
    case LMTP_ST_GREETING:
        lmtp_proto__on_greeting(p);
        break;
    case LMTP_ST_LHLO:
    case LMTP_ST_EHLO:
        lmtp_proto__on_hello(p);
        break;
    case LMTP_ST_HELO:
        lmtp_proto__on_helo(p);
        break;
    case LMTP_ST_STARTTLS:
        lmtp_proto__on_starttls(p);
        break;
    case LMTP_ST_TXN:
        on_txn_reply(p);
        break;
    case LMTP_ST_DOT:
        on_dot_reply(p);
        break;
    case LMTP_ST_RSET:
        lmtp_proto__become_ready(p);
        break;
    default:
        lmtp_proto__fail_reply(p, "unexpected reply from %s", lmtp_proto__peer(p));
        break;
    }
}

size_t
lmtp_proto_feed(struct lmtp_proto *p, const char *data, size_t len)
{
    size_t used = 0;

    lmtp_proto__out_release(p);
    if (p->st == LMTP_ST_FAILED || p->st == LMTP_ST_CLOSED)
        return len;
    while (used < len && p->qlen == 0) {
        size_t n = 0;
        enum reply_result r = reply_parse(&p->rp, data + used, len - used, &n, &p->rep);

        used += n;
        if (r == REPLY_DONE) {
            on_reply(p);
        } else if (r == REPLY_ERROR && p->st == LMTP_ST_QUIT) {
            p->st = LMTP_ST_CLOSED;
            lmtp_proto__q_push(p, LMTP_EV_CLOSED, 0, 0, NULL);
        } else if (r == REPLY_ERROR) {
            char reason[LMTP_TEXT_MAX];

            lmtp_proto__textf(reason, sizeof(reason), "garbage from %s (awaiting %s)",
                              lmtp_proto__peer(p), lmtp_st_what[p->st]);
            lmtp_proto__fail(p, "4.4.2", reason);
        }
    }
    return used;
}

/* Expands the broadcast at the head of the queue into the next RCPT event;
 * false when it is exhausted. */
static bool
bcast_next(struct lmtp_proto *p, const struct lmtp_qent *q, struct lmtp_event *ev)
{
    for (size_t i = p->bcast_next; i < p->nrcpts; i++) {
        if (p->rstate[i] == LMTP_RS_MARKED) {
            p->rstate[i] = LMTP_RS_DONE;
            p->bcast_next = i + 1;
            ev->type = LMTP_EV_RCPT;
            ev->index = i;
            ev->code = q->code;
            ev->text = q->text;
            return true;
        }
    }
    return false;
}

enum lmtp_ev
lmtp_proto_next(struct lmtp_proto *p, struct lmtp_event *ev)
{
    lmtp_proto__out_release(p);
    *ev = (struct lmtp_event){.type = LMTP_EV_NONE};
    while (p->qlen > 0) {
        const struct lmtp_qent *q = &p->q[0];

        if (q->type == LMTP_EV_RCPT && q->index == LMTP_BCAST) {
            if (bcast_next(p, q, ev))
                return ev->type;
            q_pop(p);
            continue;
        }
        ev->type = q->type;
        ev->index = q->index;
        ev->code = q->code;
        ev->text = q->text;
        if (q->type == LMTP_EV_SEND) {
            ev->data = p->out;
            ev->len = p->out_len;
            p->out_queued = false;
            p->out_handed = true;
        }
        q_pop(p);
        return ev->type;
    }
    return LMTP_EV_NONE;
}

void
lmtp_proto_quit(struct lmtp_proto *p)
{
    enum lmtp_st st = p->st;

    lmtp_proto__out_release(p);
    if (st == LMTP_ST_FAILED || st == LMTP_ST_CLOSED || st == LMTP_ST_QUIT)
        return;
    if (st == LMTP_ST_READY && p->txn == NULL) {
        lmtp_proto__out_put(p, "QUIT\r\n");
        p->st = LMTP_ST_QUIT;
    } else if ((st == LMTP_ST_TXN || st == LMTP_ST_RSET) && p->txn == NULL) {
        /* every outcome is known; QUIT once the server has caught up */
        p->quit_pending = true;
    } else if (st == LMTP_ST_GREETING || st == LMTP_ST_LHLO || st == LMTP_ST_EHLO ||
               st == LMTP_ST_HELO || st == LMTP_ST_STARTTLS || st == LMTP_ST_TLS) {
        p->st = LMTP_ST_CLOSED;
        q_purge(p);
        lmtp_proto__q_push(p, LMTP_EV_CLOSED, 0, 0, NULL);
    } else {
        lmtp_proto_abort(p, "session closed by mxd during a transaction");
    }
}

void
lmtp_proto_abort(struct lmtp_proto *p, const char *reason)
{
    lmtp_proto__out_release(p);
    if (p->st == LMTP_ST_FAILED || p->st == LMTP_ST_CLOSED)
        return;
    if (p->st == LMTP_ST_QUIT) {
        /* the connection went away after QUIT: that is what we wanted */
        p->st = LMTP_ST_CLOSED;
        q_purge(p);
        lmtp_proto__q_push(p, LMTP_EV_CLOSED, 0, 0, NULL);
        return;
    }
    lmtp_proto__fail(p, "4.4.1", reason);
}

bool
lmtp_proto_dsn(const struct lmtp_proto *p)
{
    return p->dsn;
}
