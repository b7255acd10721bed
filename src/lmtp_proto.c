/* lmtp_proto: the LMTP client state machine (RFC 2033). Owns the struct
 * lmtp_proto, its reply parser, the output buffer that SEND events point
 * into and a per-transaction recipient state array. Loop thread (or any
 * single thread), pure: no I/O, clock, store or libuv.
 *
 * Flow: 220 greeting -> LHLO -> 250 capabilities -> READY; per message
 * MAIL, RCPT..., DATA (one SEND with PIPELINING, else one command per
 * reply), BODY events asking for the body chunk by chunk (dot-stuffed
 * here), then one reply per accepted recipient after the final dot
 * (RFC 2033 4.2) -> RCPT events, TXN_DONE, READY. A verify_only txn
 * (callahead) sends RSET instead of DATA and each RCPT reply is the
 * outcome. QUIT -> CLOSED; asked for after TXN_DONE but before READY, it
 * waits until the server has answered the rest.
 *
 * Error contract: nothing returns an error. A broken server (garbage,
 * 421, a reply when none is due) or lmtp_proto_abort() ends the session:
 * every recipient of the open transaction without an outcome gets a 451
 * RCPT event, then TXN_DONE, then FAILED; after that input is ignored.
 * Misuse by the caller (a second start, body outside the body) panics.
 *
 * It does not open, time or close connections, read the body, retry, or
 * decide what a reply code means for the queue: the glue and scheduler
 * do. It does not speak BDAT/CHUNKING. */
#include "lmtp_proto.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LMTP_OUT_INIT  (2 * 65536 + 64) /* a 64 KiB chunk, fully stuffed */
#define LMTP_TEXT_MAX  1280             /* event texts: a summary plus a reason */
#define LMTP_QUEUE_MAX 8                /* events queued by one call */
#define LMTP_BCAST     SIZE_MAX         /* RCPT queue entry: every marked rcpt */

#define LMTP_EV_NAME(name) [LMTP_EV_##name] = #name,
static const char *const lmtp_ev_names[] = {LMTP_EVENTS(LMTP_EV_NAME)};
#undef LMTP_EV_NAME

/* Session states, named by what the session waits for. */
#define LMTP_STATES(X)                                                                             \
    X(GREETING, "greeting")                                                                        \
    X(LHLO, "LHLO reply")                                                                          \
    X(READY, "nothing (idle)")                                                                     \
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

#define LMTP_ST_WHAT(name, what) [LMTP_ST_##name] = what,
static const char *const lmtp_st_what[] = {LMTP_STATES(LMTP_ST_WHAT)};
#undef LMTP_ST_WHAT

/* Per-recipient state in the open transaction. */
enum {
    RS_PENDING,  /* no reply yet (or not sent yet) */
    RS_ACCEPTED, /* RCPT got 2xx: its outcome comes after the dot */
    RS_MARKED,   /* outcome decided, RCPT event queued as a broadcast */
    RS_DONE,     /* RCPT event emitted or queued */
};

struct lmtp_qent {
    enum lmtp_ev type;
    size_t index; /* RCPT: recipient, or LMTP_BCAST */
    int code;
    const char *text;
};

struct lmtp_proto {
    /* private */
    char *lhlo_name;
    enum lmtp_st st;
    struct reply_parser rp;
    struct reply rep;
    char sum[LMTP_TEXT_MAX]; /* summary of rep */

    /* server capabilities (LHLO reply) */
    bool pipelining, eightbit, smtputf8, size_offered;
    uint64_t size_max; /* 0: no limit given */

    /* open transaction */
    const struct lmtp_txn *txn; /* NULL once TXN_DONE is queued */
    uint8_t *rstate;            /* RS_* per recipient */
    size_t nrcpts, naccepted, noutcome;
    size_t reply_idx;  /* TXN: 0 MAIL, 1..n RCPT, n+1 DATA */
    size_t bcast_next; /* next index a broadcast looks at */
    size_t dot_next;   /* next index an after-dot reply may be for */
    bool mail_failed;
    bool verify;       /* verify_only: RSET instead of DATA */
    bool quit_pending; /* QUIT asked for while finishing a transaction */

    /* body */
    bool body_bol;  /* at the start of a line: a '.' gets doubled */
    bool body_crlf; /* what was sent so far ends with CRLF (or is empty) */
    char body_prev; /* last body octet */

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

/* snprintf for event texts: truncation is intended. */
static void textf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
textf(char *buf, size_t size, const char *fmt, ...)
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

static void
q_push(struct lmtp_proto *p, enum lmtp_ev type, size_t index, int code, const char *text)
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

/* Called first by every entry point: the last SEND's bytes are no longer
 * needed once the caller is back. */
static void
out_release(struct lmtp_proto *p)
{
    if (p->out_handed) {
        p->out_handed = false;
        p->out_len = 0;
    }
}

static void
out_reserve(struct lmtp_proto *p, size_t n)
{
    if (n > SIZE_MAX / 2 - p->out_len)
        mxd_panic("lmtp_proto: output size overflow");
    if (p->out_len + n <= p->out_cap)
        return;
    /* Only a body chunk over 64 KiB or a huge recipient list gets here. */
    p->out_cap = 2 * (p->out_len + n);
    p->out = xrealloc(p->out, p->out_cap);
}

static void
out_mark(struct lmtp_proto *p)
{
    if (!p->out_queued && p->out_len > 0) {
        p->out_queued = true;
        q_push(p, LMTP_EV_SEND, 0, 0, NULL);
    }
}

static void
out_put(struct lmtp_proto *p, const char *s)
{
    size_t n = strlen(s);

    out_reserve(p, n);
    memcpy(p->out + p->out_len, s, n);
    p->out_len += n;
    out_mark(p);
}

struct lmtp_proto *
lmtp_proto_new(const char *lhlo_name)
{
    struct lmtp_proto *p = xcalloc(1, sizeof(*p));

    if (lhlo_name == NULL || lhlo_name[0] == '\0' || strpbrk(lhlo_name, "\r\n") != NULL)
        mxd_panic("lmtp_proto_new: bad LHLO name");
    p->lhlo_name = xstrdup(lhlo_name);
    p->st = LMTP_ST_GREETING;
    reply_parser_init(&p->rp);
    p->out_cap = LMTP_OUT_INIT;
    p->out = xmalloc(p->out_cap);
    return p;
}

void
lmtp_proto_free(struct lmtp_proto *p)
{
    if (p == NULL)
        return;
    free(p->rstate);
    free(p->out);
    free(p->lhlo_name);
    free(p);
}

/* Queues TXN_DONE once every recipient has its outcome; the caller's
 * strings are not touched after that. */
static void
txn_check_done(struct lmtp_proto *p)
{
    if (p->txn != NULL && p->noutcome == p->nrcpts) {
        p->txn = NULL;
        q_push(p, LMTP_EV_TXN_DONE, 0, 0, NULL);
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
        if (p->rstate[i] == RS_PENDING || p->rstate[i] == RS_ACCEPTED) {
            p->rstate[i] = RS_MARKED;
            n++;
        }
    }
    if (n == 0)
        return;
    p->noutcome += n;
    p->bcast_next = 0;
    textf(p->txt_all, sizeof(p->txt_all), "%s", text);
    q_push(p, LMTP_EV_RCPT, LMTP_BCAST, code, p->txt_all);
}

/* One recipient's outcome from a reply: p->sum. */
static void
rcpt_outcome(struct lmtp_proto *p, size_t i, int code)
{
    p->rstate[i] = RS_DONE;
    p->noutcome++;
    textf(p->txt_one, sizeof(p->txt_one), "%s", p->sum);
    q_push(p, LMTP_EV_RCPT, i, code, p->txt_one);
}

/* Ends the session: 451 enh reason for the open transaction, then FAILED. */
static void
fail(struct lmtp_proto *p, const char *enh, const char *reason)
{
    char text[LMTP_TEXT_MAX];

    q_purge(p);
    textf(p->txt_fail, sizeof(p->txt_fail), "%s", reason);
    textf(text, sizeof(text), "451 %s %s", enh, reason);
    broadcast(p, 451, text);
    txn_check_done(p);
    p->st = LMTP_ST_FAILED;
    q_push(p, LMTP_EV_FAILED, 0, 0, p->txt_fail);
}

/* fail() because of the reply in p->rep. */
static void
fail_reply(struct lmtp_proto *p, const char *why)
{
    char reason[LMTP_TEXT_MAX];

    textf(reason, sizeof(reason), "%s (awaiting %s): %s", why, lmtp_st_what[p->st], p->sum);
    fail(p, "4.4.2", reason);
}

/* RFC 5321 4.1.2: a path must not carry control characters; ours were
 * checked on receipt, so this only guards the command stream. */
static bool
path_ok(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    }
    return true;
}

/* Why the transaction cannot be sent at all (text, with *code), or NULL. */
static const char *
txn_refusal(const struct lmtp_proto *p, const struct lmtp_txn *t, int *code)
{
    bool paths_ok = path_ok(t->sender);

    for (size_t i = 0; i < t->nrcpts && paths_ok; i++)
        paths_ok = path_ok(t->rcpts[i]);
    *code = 451;
    if (p->st != LMTP_ST_READY)
        return "451 4.4.2 LMTP session not ready";
    if (!paths_ok)
        return "451 4.3.0 address with control characters, not sent over LMTP";
    *code = 550;
    /* RFC 6531 3.4: no SMTPUTF8 transaction to a server without it */
    if (t->smtputf8 && !p->smtputf8)
        return "550 5.6.7 SMTPUTF8 required but not offered by the LMTP server";
    /* RFC 1870 6.1: a message over the declared SIZE would be refused */
    *code = 552;
    if (p->size_offered && p->size_max > 0 && t->size > p->size_max)
        return "552 5.3.4 Message size exceeds the LMTP server's SIZE limit";
    return NULL;
}

static void
send_rcpt(struct lmtp_proto *p, size_t i)
{
    out_put(p, "RCPT TO:<");
    out_put(p, p->txn->rcpts[i]);
    out_put(p, ">\r\n");
}

static void
send_mail(struct lmtp_proto *p, const struct lmtp_txn *t)
{
    char num[32];

    out_put(p, "MAIL FROM:<");
    out_put(p, t->sender);
    out_put(p, ">");
    if (p->size_offered) {
        snprintf(num, sizeof(num), " SIZE=%" PRIu64, t->size);
        out_put(p, num);
    }
    if (t->body_8bit && p->eightbit)
        out_put(p, " BODY=8BITMIME");
    if (t->smtputf8)
        out_put(p, " SMTPUTF8");
    out_put(p, "\r\n");
}

static void
send_rset(struct lmtp_proto *p)
{
    out_put(p, "RSET\r\n");
    p->st = LMTP_ST_RSET;
}

/* The transaction is over and the server has answered everything. */
static void
become_ready(struct lmtp_proto *p)
{
    if (p->quit_pending) {
        out_put(p, "QUIT\r\n");
        p->st = LMTP_ST_QUIT;
        return;
    }
    p->st = LMTP_ST_READY;
    q_push(p, LMTP_EV_READY, 0, 0, NULL);
}

void
lmtp_proto_start(struct lmtp_proto *p, const struct lmtp_txn *t)
{
    const char *refusal;
    int code;

    out_release(p);
    if (p->txn != NULL || p->qlen > 0)
        mxd_panic("lmtp_proto_start: previous transaction or events pending");
    free(p->rstate);
    p->rstate = xcalloc(t->nrcpts > 0 ? t->nrcpts : 1, 1);
    p->txn = t;
    p->nrcpts = t->nrcpts;
    p->naccepted = p->noutcome = p->reply_idx = p->dot_next = 0;
    p->mail_failed = false;
    p->verify = t->verify_only;
    refusal = txn_refusal(p, t, &code);
    if (refusal != NULL || t->nrcpts == 0) {
        if (refusal != NULL)
            broadcast(p, code, refusal);
        txn_check_done(p);
        if (p->st == LMTP_ST_READY)
            q_push(p, LMTP_EV_READY, 0, 0, NULL);
        return;
    }
    p->st = LMTP_ST_TXN;
    send_mail(p, t);
    if (!p->pipelining)
        return;
    /* RFC 2920 3.1: MAIL, RCPT and DATA (or RSET) may all go in one group */
    for (size_t i = 0; i < t->nrcpts; i++)
        send_rcpt(p, i);
    out_put(p, p->verify ? "RSET\r\n" : "DATA\r\n");
}

/* SIZE's parameter, 0 when absent or unusable (RFC 1870 4: no limit). */
static uint64_t
size_param(const char *s, size_t len)
{
    uint64_t n = 0;

    for (size_t i = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (n > (UINT64_MAX - 9) / 10)
            return 0;
        n = n * 10 + (uint64_t)(s[i] - '0');
    }
    return n;
}

static void
on_greeting(struct lmtp_proto *p)
{
    if (p->rep.code != 220) {
        fail_reply(p, "LMTP server refused the session");
        return;
    }
    out_put(p, "LHLO ");
    out_put(p, p->lhlo_name);
    out_put(p, "\r\n");
    p->st = LMTP_ST_LHLO;
}

static void
on_lhlo(struct lmtp_proto *p)
{
    const char *param = NULL;
    size_t plen = 0;

    if (p->rep.code != 250) {
        fail_reply(p, "LMTP server refused LHLO");
        return;
    }
    p->pipelining = reply_has_keyword(&p->rep, "PIPELINING", NULL, NULL);
    p->eightbit = reply_has_keyword(&p->rep, "8BITMIME", NULL, NULL);
    p->smtputf8 = reply_has_keyword(&p->rep, "SMTPUTF8", NULL, NULL);
    p->size_offered = reply_has_keyword(&p->rep, "SIZE", &param, &plen);
    p->size_max = p->size_offered ? size_param(param, plen) : 0;
    p->st = LMTP_ST_READY;
    q_push(p, LMTP_EV_READY, 0, 0, NULL);
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
    if (p->mail_failed) {
        /* RFC 2920 3.1: replies to the rest of a failed group */
    } else if (cls == 2 && !p->verify) {
        p->rstate[i] = RS_ACCEPTED;
        p->naccepted++;
    } else {
        rcpt_outcome(p, i, p->rep.code);
    }
    txn_check_done(p);
    if (p->pipelining) {
        if (p->verify && i + 1 == p->nrcpts)
            p->st = LMTP_ST_RSET; /* its RSET is next in the group */
        return;
    }
    if (i + 1 < p->nrcpts)
        send_rcpt(p, i + 1);
    else if (p->naccepted > 0)
        out_put(p, "DATA\r\n");
    else
        send_rset(p);
}

static void
on_data(struct lmtp_proto *p, int cls)
{
    if (p->rep.code == 354 && p->naccepted > 0 && !p->mail_failed) {
        p->st = LMTP_ST_BODY;
        p->body_bol = true;
        p->body_crlf = true;
        p->body_prev = '\n';
        q_push(p, LMTP_EV_BODY, 0, 0, NULL);
        return;
    }
    if (cls != 4 && cls != 5) {
        /* 354 without an accepted recipient (RFC 2033 4.2: it must be
         * 503) or a 2xx: what comes after the dot is unknowable. */
        fail_reply(p, "LMTP server gave an impossible reply to DATA");
        return;
    }
    broadcast(p, p->rep.code, p->sum); /* the accepted recipients, if any */
    txn_check_done(p);
    send_rset(p);
}

static void
on_txn_reply(struct lmtp_proto *p)
{
    size_t idx = p->reply_idx++;
    int cls = p->rep.code / 100;

    if (idx <= p->nrcpts && cls == 3) {
        fail_reply(p, "LMTP server gave an impossible reply");
        return;
    }
    if (idx == 0)
        on_mail(p, cls);
    else if (idx <= p->nrcpts)
        on_rcpt(p, idx - 1, cls);
    else
        on_data(p, cls);
}

/* RFC 2033 4.2: after the dot, one reply per accepted recipient, in RCPT
 * order. */
static void
on_dot_reply(struct lmtp_proto *p)
{
    size_t i = p->dot_next;

    if (p->rep.code / 100 == 3) {
        fail_reply(p, "LMTP server gave an impossible reply");
        return;
    }
    while (i < p->nrcpts && p->rstate[i] != RS_ACCEPTED)
        i++;
    if (i == p->nrcpts)
        mxd_panic("lmtp_proto: after-dot reply without a recipient");
    p->dot_next = i + 1;
    rcpt_outcome(p, i, p->rep.code);
    txn_check_done(p);
    if (p->txn == NULL)
        become_ready(p);
}

static void
on_reply(struct lmtp_proto *p)
{
    reply_summary(&p->rep, p->sum, sizeof(p->sum));
    if (p->st == LMTP_ST_QUIT) {
        p->st = LMTP_ST_CLOSED;
        q_push(p, LMTP_EV_CLOSED, 0, 0, NULL);
        return;
    }
    if (p->rep.code == 421) {
        fail_reply(p, "LMTP server is closing the session");
        return;
    }
    switch (p->st) {
    case LMTP_ST_GREETING:
        on_greeting(p);
        break;
    case LMTP_ST_LHLO:
        on_lhlo(p);
        break;
    case LMTP_ST_TXN:
        on_txn_reply(p);
        break;
    case LMTP_ST_DOT:
        on_dot_reply(p);
        break;
    case LMTP_ST_RSET:
        become_ready(p);
        break;
    default:
        fail_reply(p, "unexpected reply from LMTP server");
        break;
    }
}

size_t
lmtp_proto_feed(struct lmtp_proto *p, const char *data, size_t len)
{
    size_t used = 0;

    out_release(p);
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
            q_push(p, LMTP_EV_CLOSED, 0, 0, NULL);
        } else if (r == REPLY_ERROR) {
            char reason[LMTP_TEXT_MAX];

            textf(reason, sizeof(reason), "garbage from LMTP server (awaiting %s)",
                  lmtp_st_what[p->st]);
            fail(p, "4.4.2", reason);
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
        if (p->rstate[i] == RS_MARKED) {
            p->rstate[i] = RS_DONE;
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
    out_release(p);
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

/* Dot-stuffs data into the output buffer (RFC 5321 4.5.2). A line starts
 * after any LF, not only CRLF: a server that takes LF as a line end (as
 * Dovecot does) must not see an unstuffed "\n.\r\n" as the end. */
static void
body_stuff(struct lmtp_proto *p, const char *data, size_t len)
{
    char *o;
    bool bol = p->body_bol;

    out_reserve(p, 2 * len);
    o = p->out + p->out_len;
    for (size_t i = 0; i < len; i++) {
        if (bol && data[i] == '.')
            *o++ = '.';
        *o++ = data[i];
        bol = data[i] == '\n';
    }
    p->out_len = (size_t)(o - p->out);
    p->body_bol = bol;
    if (len > 0) {
        char before = len > 1 ? data[len - 2] : p->body_prev;

        p->body_crlf = data[len - 1] == '\n' && before == '\r';
        p->body_prev = data[len - 1];
    }
    out_mark(p);
}

void
lmtp_proto_body(struct lmtp_proto *p, const char *data, size_t len, bool last)
{
    out_release(p);
    if (p->st == LMTP_ST_FAILED || p->st == LMTP_ST_CLOSED)
        return;
    if (p->st != LMTP_ST_BODY)
        mxd_panic("lmtp_proto_body: no body wanted now");
    body_stuff(p, data, len);
    if (!last) {
        q_push(p, LMTP_EV_BODY, 0, 0, NULL);
        return;
    }
    if (!p->body_crlf)
        out_put(p, "\r\n");
    out_put(p, ".\r\n");
    p->st = LMTP_ST_DOT;
    p->dot_next = 0;
}

void
lmtp_proto_quit(struct lmtp_proto *p)
{
    out_release(p);
    if (p->st == LMTP_ST_FAILED || p->st == LMTP_ST_CLOSED || p->st == LMTP_ST_QUIT)
        return;
    if (p->st == LMTP_ST_READY && p->txn == NULL) {
        out_put(p, "QUIT\r\n");
        p->st = LMTP_ST_QUIT;
    } else if ((p->st == LMTP_ST_TXN || p->st == LMTP_ST_RSET) && p->txn == NULL) {
        /* every outcome is known; QUIT once the server has caught up */
        p->quit_pending = true;
    } else if (p->st == LMTP_ST_GREETING || p->st == LMTP_ST_LHLO) {
        p->st = LMTP_ST_CLOSED;
        q_purge(p);
        q_push(p, LMTP_EV_CLOSED, 0, 0, NULL);
    } else {
        lmtp_proto_abort(p, "session closed by mxd during a transaction");
    }
}

void
lmtp_proto_abort(struct lmtp_proto *p, const char *reason)
{
    out_release(p);
    if (p->st == LMTP_ST_FAILED || p->st == LMTP_ST_CLOSED)
        return;
    if (p->st == LMTP_ST_QUIT) {
        /* the connection went away after QUIT: that is what we wanted */
        p->st = LMTP_ST_CLOSED;
        q_purge(p);
        q_push(p, LMTP_EV_CLOSED, 0, 0, NULL);
        return;
    }
    fail(p, "4.4.1", reason);
}
