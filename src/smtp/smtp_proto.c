/* smtp_proto: owns one session's input buffer, its transaction (sender,
 * recipients, body counters) and the reply being built. Any single thread,
 * pure: no I/O, clock, randomness or policy; the caller answers MAIL, RCPT
 * and end-of-body events with smtp_proto_answer(). Each command is checked
 * (legal now? well-formed?) before anything changes. Errors are replies,
 * never return codes; broken invariants panic. It does not decide which
 * domains or users are ours, and it does not store anything. */
#include "smtp/smtp_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/reply.h"
#include "smtp/dotstuff.h"
#include "smtp/smtp_proto_impl.h"

#define SMTP_EV_NAME(name) #name,
static const char *const smtp_ev_names[] = {SMTP_EVENTS(SMTP_EV_NAME)};
#undef SMTP_EV_NAME

const char *
smtp_ev_name(enum smtp_ev ev)
{
    return smtp_ev_names[ev];
}

/* One more error: past the hard limit, 421 follows the reply and the
 * session closes (Postfix's smtpd_hard_error_limit). */
static void
count_error(struct smtp_proto *p)
{
    unsigned limit = p->cfg.hard_error_limit ? p->cfg.hard_error_limit : SMTP_ERROR_MAX;
    int n;

    if (++p->errors < limit || p->phase == PH_CLOSED)
        return;
    n = snprintf(p->reply + p->reply_len, sizeof(p->reply) - p->reply_len,
                 "421 4.7.0 %s Error: too many errors\r\n", p->cfg.hostname);
    if (n > 0 && (size_t)n < sizeof(p->reply) - p->reply_len)
        p->reply_len += (size_t)n;
    p->phase = PH_CLOSED;
    p->pend_close = true;
}

/* Appends one reply; several may queue up for one event (an error and the
 * 421 that follows it when the error budget is spent). */
void
smtp_proto__reply(struct smtp_proto *p, const char *verb, int code, const char *fmt, ...)
{
    char text[SMTP_REPLY_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    n = snprintf(p->reply + p->reply_len, sizeof(p->reply) - p->reply_len, "%d %s\r\n", code, text);
    if (n < 0 || (size_t)n >= sizeof(p->reply) - p->reply_len)
        mxd_panic("smtp_proto: reply too long");
    if (p->reply_len == 0) {
        p->reply_code = code;
        p->reply_verb = verb;
    }
    p->reply_len += (size_t)n;
    /* Stop talking to a client that only sends garbage. */
    if (code == 500 || code == 501 || code == 502 || code == 503 || code == 555)
        count_error(p);
}

struct smtp_proto *
smtp_proto_new(const struct smtp_proto_cfg *cfg)
{
    struct smtp_proto *p = xcalloc(1, sizeof(*p));

    p->cfg = *cfg;
    p->phase = PH_CMD;
    p->buf = p->buf_none;
    smtp_proto__reply(p, "-", 220, "%s ESMTP mxd", cfg->hostname);
    return p;
}

void
smtp_proto__txn_reset(struct smtp_proto *p)
{
    if (p->body_begun)
        p->pend_abort = true;
    free(p->txn.rcpts);
    free(p->txn.rdsn);
    memset(&p->txn, 0, sizeof(p->txn));
    p->rcpt_cap = 0;
    p->txn_active = p->rcpt_seen = false;
    p->body_begun = p->bdat_used = p->body_bare = p->body_big = false;
}

void
smtp_proto_free(struct smtp_proto *p)
{
    if (p == NULL)
        return;
    free(p->txn.rcpts);
    free(p->txn.rdsn);
    if (p->buf != p->buf_none)
        free(p->buf);
    free(p);
}

char *
smtp_proto_rbuf(struct smtp_proto *p, size_t *avail)
{
    if (p->buf == p->buf_none)
        p->buf = xmalloc(SMTP_PROTO_BUF); /* not zeroed: pages stay untouched until used */
    if (p->rpos > 0) {
        memmove(p->buf, p->buf + p->rpos, p->wpos - p->rpos);
        p->wpos -= p->rpos;
        p->rpos = 0;
    }
    *avail = SMTP_PROTO_BUF - p->wpos;
    return p->buf + p->wpos;
}

void
smtp_proto_feed(struct smtp_proto *p, size_t n)
{
    if (p->buf == p->buf_none || n > SMTP_PROTO_BUF - p->wpos)
        mxd_panic("smtp_proto_feed: %zu octets overflow the buffer", n);
    p->wpos += n;
}

size_t
smtp_proto_feed_copy(struct smtp_proto *p, const char *data, size_t len)
{
    size_t avail;
    char *dst = smtp_proto_rbuf(p, &avail);

    if (len > avail)
        len = avail;
    memcpy(dst, data, len);
    smtp_proto_feed(p, len);
    return len;
}

const struct smtp_txn *
smtp_proto_txn(const struct smtp_proto *p)
{
    return &p->txn;
}

const char *
smtp_proto_helo(const struct smtp_proto *p)
{
    return p->helo;
}

bool
smtp_proto_esmtp(const struct smtp_proto *p)
{
    return p->esmtp;
}

bool
smtp_proto_in_body(const struct smtp_proto *p)
{
    return p->phase == PH_DATA || p->phase == PH_BDAT;
}

bool
smtp_proto_idle(const struct smtp_proto *p)
{
    return p->phase == PH_CMD && p->owed == OWE_NONE && !p->body_begun;
}

bool
smtp_proto_buffered(const struct smtp_proto *p)
{
    return p->rpos < p->wpos;
}

unsigned
smtp_proto_errors(const struct smtp_proto *p)
{
    return p->errors;
}

void
smtp_proto_tls_started(struct smtp_proto *p, const char *desc)
{
    p->tls = true;
    snprintf(p->tls_desc, sizeof(p->tls_desc), "%s", desc);
}

bool
smtp_proto_tls(const struct smtp_proto *p)
{
    return p->tls;
}

/* ---- input ------------------------------------------------------------- */

static bool
drain_pending(struct smtp_proto *p, struct smtp_event *ev)
{
    if (p->pend_abort) {
        p->pend_abort = false;
        ev->type = SMTP_EV_TXN_ABORT;
    } else if (p->pend_helo) {
        p->pend_helo = false;
        ev->type = SMTP_EV_HELO;
        ev->data = p->helo;
        ev->len = strlen(p->helo);
    } else if (p->pend_begin) {
        p->pend_begin = false;
        ev->type = SMTP_EV_BODY_BEGIN;
    } else if (p->reply_len > 0) {
        ev->type = SMTP_EV_REPLY;
        ev->data = p->reply;
        ev->len = p->reply_len;
        ev->code = p->reply_code;
        ev->verb = p->reply_verb;
        p->reply_len = 0; /* the text stays valid until the next reply() */
    } else if (p->pend_starttls) {
        p->pend_starttls = false;
        ev->type = SMTP_EV_STARTTLS;
    } else if (p->pend_close) {
        ev->type = SMTP_EV_CLOSE;
    } else {
        return false;
    }
    return true;
}

/* Offset of the LF of the first CRLF in s[0..n), or n when there is none.
 * prev_cr: the octet before s[0] was a CR. */
static size_t
find_crlf(const char *s, size_t n, bool prev_cr)
{
    size_t i = 0;
    const char *lf;

    if (n > 0 && s[0] == '\n' && prev_cr)
        return 0;
    while ((lf = memchr(s + i, '\n', n - i)) != NULL) {
        size_t pos = (size_t)(lf - s);

        if (pos > 0 && s[pos - 1] == '\r')
            return pos;
        i = pos + 1;
    }
    return n;
}

/* Discards the rest of an over-long line, up to its CRLF. */
static enum smtp_step
skip_line(struct smtp_proto *p)
{
    size_t avail = p->wpos - p->rpos;
    size_t end = find_crlf(p->buf + p->rpos, avail, p->skip_cr);

    if (end == avail) {
        p->skip_cr = avail > 0 ? p->buf[p->wpos - 1] == '\r' : p->skip_cr;
        p->rpos = p->wpos;
        return STEP_NEED;
    }
    p->rpos += end + 1;
    p->skip_line = p->skip_cr = false;
    return STEP_AGAIN;
}

/* RFC 5321 2.3.8: only CRLF ends a command line; a bare CR or LF inside
 * one (or a NUL) refuses the whole line, so nothing after a bare LF can
 * act as a command. */
static enum smtp_step
step_line(struct smtp_proto *p, struct smtp_event *ev)
{
    char *start = p->buf + p->rpos;
    size_t avail = p->wpos - p->rpos;
    size_t limit = SMTP_LINE_MAX;
    size_t end;
    size_t n;

    if (p->skip_line)
        return skip_line(p);
    end = find_crlf(start, avail, false);
    if (avail >= 5 && ascii_ncasecmp(start, "MAIL ", 5) == 0)
        limit = SMTP_MAIL_LINE_MAX;
    else if (avail >= 5 && ascii_ncasecmp(start, "RCPT ", 5) == 0)
        limit = SMTP_RCPT_LINE_MAX;
    if (end == avail || end + 1 > limit) {
        if (end == avail && avail < limit)
            return STEP_NEED;
        smtp_proto__reply(p, "-", 500, "5.5.2 Error: line too long (limit %zu octets)", limit);
        p->skip_line = true;
        p->skip_cr = false;
        return STEP_AGAIN;
    }
    p->rpos += end + 1;
    n = end - 1; /* without the CRLF */
    if (memchr(start, '\r', n) != NULL || memchr(start, '\n', n) != NULL) {
        smtp_proto__reply(p, "-", 500,
                          "5.5.2 Error: bare CR or LF in command; lines end with CRLF "
                          "(RFC 5321 2.3.8)");
        return STEP_AGAIN;
    }
    if (memchr(start, '\0', n) != NULL) {
        smtp_proto__reply(p, "-", 500, "5.5.2 Error: NUL in command");
        return STEP_AGAIN;
    }
    return smtp_proto__dispatch(p, start, n, ev);
}

/* Content is complete: refuse it, or ask the caller to store it. */
static enum smtp_step
body_finish(struct smtp_proto *p, const char *verb, struct smtp_event *ev)
{
    p->phase = PH_CMD;
    if (p->body_bare) {
        smtp_proto__txn_reset(p);
        smtp_proto__reply(p, verb, 550,
                          "5.5.2 Error: bare CR or LF in message content; lines must end with CRLF "
                          "(RFC 5321 2.3.8)");
        return STEP_AGAIN;
    }
    if (p->body_big) {
        smtp_proto__txn_reset(p);
        smtp_proto__reply(p, verb, 552,
                          "5.3.4 Error: message size exceeds fixed limit of %llu octets",
                          (unsigned long long)p->cfg.max_message_size);
        return STEP_AGAIN;
    }
    p->owed = OWE_BODY;
    ev->type = SMTP_EV_BODY_END;
    return STEP_EVENT;
}

/* Counts content octets; returns true when they may be handed out. */
static bool
body_account(struct smtp_proto *p, size_t n)
{
    p->txn.body_size += n;
    if (p->txn.body_size > p->cfg.max_message_size)
        p->body_big = true;
    return !p->body_big && !p->body_bare && n > 0;
}

static enum smtp_step
step_data(struct smtp_proto *p, struct smtp_event *ev)
{
    size_t used;
    const char *out;
    size_t outlen;
    enum dotstuff_result r;

    r = dotstuff_next(&p->ds, p->buf + p->rpos, p->wpos - p->rpos, &used, &out, &outlen);
    p->rpos += used;
    p->body_bare = p->ds.bare;
    switch (r) {
    case DOTSTUFF_NEED:
        return STEP_NEED;
    case DOTSTUFF_SPAN:
        if (!body_account(p, outlen))
            return STEP_AGAIN;
        ev->type = SMTP_EV_BODY;
        ev->data = out;
        ev->len = outlen;
        return STEP_EVENT;
    case DOTSTUFF_END:
        break;
    }
    return body_finish(p, "DATA", ev);
}

/* RFC 3030: the octets of a chunk are not dot-stuffed, but the message
 * must still use CRLF line endings (we do not offer BINARYMIME), or it
 * could not be relayed with DATA later without changing it. */
static void
bdat_scan(struct smtp_proto *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((p->bdat_prev_cr && s[i] != '\n') || (!p->bdat_prev_cr && s[i] == '\n'))
            p->body_bare = true;
        p->bdat_prev_cr = s[i] == '\r';
    }
}

static enum smtp_step
bdat_chunk_done(struct smtp_proto *p, struct smtp_event *ev)
{
    p->phase = PH_CMD;
    if (p->bdat_discard) {
        smtp_proto__reply(p, "BDAT", p->discard_code, "%s", p->discard_text);
        return STEP_AGAIN;
    }
    if (p->bdat_last && p->bdat_prev_cr)
        p->body_bare = true;
    if (p->bdat_last || p->body_bare || p->body_big)
        return body_finish(p, "BDAT", ev);
    smtp_proto__reply(p, "BDAT", 250, "2.0.0 Ok: %llu octets received",
                      (unsigned long long)p->txn.body_size);
    return STEP_AGAIN;
}

static enum smtp_step
step_bdat(struct smtp_proto *p, struct smtp_event *ev)
{
    size_t avail = p->wpos - p->rpos;
    size_t take;
    const char *s = p->buf + p->rpos;

    if (p->bdat_left == 0)
        return bdat_chunk_done(p, ev);
    if (avail == 0)
        return STEP_NEED;
    take = avail < p->bdat_left ? avail : (size_t)p->bdat_left;
    p->rpos += take;
    p->bdat_left -= take;
    if (p->bdat_discard)
        return STEP_AGAIN;
    bdat_scan(p, s, take);
    if (!body_account(p, take))
        return STEP_AGAIN;
    ev->type = SMTP_EV_BODY;
    ev->data = s;
    ev->len = take;
    return STEP_EVENT;
}

enum smtp_ev
smtp_proto_next(struct smtp_proto *p, struct smtp_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    for (;;) {
        enum smtp_step r;

        if (drain_pending(p, ev))
            return ev->type;
        if (p->owed != OWE_NONE) {
            ev->type = SMTP_EV_WAIT;
            return ev->type;
        }
        switch (p->phase) {
        case PH_DATA:
            r = step_data(p, ev);
            break;
        case PH_BDAT:
            r = step_bdat(p, ev);
            break;
        case PH_CLOSED:
            mxd_panic("smtp_proto: closed without a pending close");
        case PH_CMD:
        default:
            r = step_line(p, ev);
            break;
        }
        if (r == STEP_EVENT)
            return ev->type;
        if (r == STEP_NEED) {
            ev->type = SMTP_EV_NEED_INPUT;
            return ev->type;
        }
    }
}

void
smtp_proto_answer(struct smtp_proto *p, int code, const char *text_in)
{
    bool ok = code >= 200 && code < 300;
    char text[SMTP_ANSWER_MAX];

    /* The text may carry what a DNS record or a peer said: one line, no
     * controls, bounded (RFC 5321 4.5.3.1.5: 512 octets a reply line). */
    reply_text_clean(text, sizeof(text), text_in, strlen(text_in), true);

    switch (p->owed) {
    case OWE_NONE:
        mxd_panic("smtp_proto_answer: no answer is owed");
    case OWE_HELO:
        if (ok) {
            smtp_proto__helo_reply(p);
        } else {
            smtp_proto__reply(p, p->esmtp ? "EHLO" : "HELO", code, "%s", text);
            p->helo[0] = '\0'; /* MAIL needs a HELO/EHLO that was accepted */
            p->esmtp = false;
        }
        break;
    case OWE_MAIL:
        smtp_proto__reply(p, "MAIL", code, "%s", text);
        if (ok) {
            p->txn_active = true;
            p->txn.sender = p->pend_addr;
            p->txn.smtputf8 = p->pend_utf8;
            p->txn.body_8bit = p->pend_8bit;
            p->txn.size_param = p->pend_size;
            p->txn.ret = p->pend_ret;
            memcpy(p->txn.envid, p->pend_envid, sizeof(p->txn.envid));
            p->txn.requiretls = p->pend_requiretls;
        }
        break;
    case OWE_RCPT:
        smtp_proto__reply(p, "RCPT", code, "%s", text);
        /* A refused recipient is an error too (a directory harvest is a
         * stream of them); 452 4.5.3 for too many recipients is not. */
        if (!ok)
            count_error(p);
        if (ok) {
            if (p->txn.nrcpts == p->rcpt_cap) {
                p->rcpt_cap = p->rcpt_cap ? p->rcpt_cap * 2 : 4;
                p->txn.rcpts = xrealloc(p->txn.rcpts, p->rcpt_cap * sizeof(*p->txn.rcpts));
                p->txn.rdsn = xrealloc(p->txn.rdsn, p->rcpt_cap * sizeof(*p->txn.rdsn));
            }
            p->txn.rdsn[p->txn.nrcpts] = p->pend_rdsn;
            p->txn.rcpts[p->txn.nrcpts++] = p->pend_addr;
        }
        break;
    case OWE_ETRN:
        smtp_proto__reply(p, "ETRN", code, "%s", text);
        break;
    case OWE_BODY:
        smtp_proto__reply(p, p->bdat_used ? "BDAT" : "DATA", code, "%s", text);
        p->body_begun = false; /* the caller is done with the content */
        smtp_proto__txn_reset(p);
        break;
    }
    p->owed = OWE_NONE;
}
