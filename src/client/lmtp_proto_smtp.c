/* lmtp_proto_smtp: the parts of the client state machine that differ
 * between LMTP and SMTP mode: the greeting (LHLO; or EHLO, falling back to
 * HELO), the capabilities, what a transaction cannot be sent with at all,
 * and the body framing (dot-stuffed DATA, or one BDAT LAST chunk). Owns
 * nothing of its own: it works on struct lmtp_proto (lmtp_proto_impl.h)
 * with the thread, purity and error contract of lmtp_proto.c.
 *
 * A server without 8BITMIME (either mode; RFC 6152 3, RFC 2033) never
 * gets an 8-bit octet: the body is scanned first (state SCAN, the glue
 * gives it twice), then sent as it is when it is 7-bit, converted by mime7
 * (quoted-printable for 8-bit text parts, as Postfix does) when it can be,
 * or refused with 554 5.6.3 for every recipient (the server will not
 * change its mind). A message that needs SMTPUTF8 the server lacks gets
 * 550 5.6.7; one that carried SMTPUTF8 without needing it goes without
 * (RFC 6531 3.4). Otherwise the body is forwarded byte for byte. It asks
 * for STARTTLS (RFC 3207) when told to; the handshake itself is the
 * glue's, under its byte stream. No AUTH.
 *
 * To a server offering XFORWARD (Postfix's XFORWARD_README) the original
 * client goes first: "XFORWARD NAME=... ADDR=..." for the attributes the
 * server lists, values xtext-encoded (or [UNAVAILABLE]), each command line
 * at most 512 octets, split over several commands. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "client/lmtp_proto.h"
#include "client/lmtp_proto_impl.h"
#include "msg/dsnparam.h"

static void
send_hello(struct lmtp_proto *p)
{
    lmtp_proto__out_put(p, p->smtp ? "EHLO " : "LHLO ");
    lmtp_proto__out_put(p, p->hello_name);
    lmtp_proto__out_put(p, "\r\n");
    p->st = p->smtp ? LMTP_ST_EHLO : LMTP_ST_LHLO;
}

void
lmtp_proto__on_greeting(struct lmtp_proto *p)
{
    if (p->rep.code != 220) {
        lmtp_proto__fail_reply(p, "%s refused the session", lmtp_proto__peer(p));
        return;
    }
    /* Dovecot 2.3's LMTP takes ORCPT (lmtp_hdr_delivery_address =
     * original uses it) but offers no DSN, and refuses the other DSN
     * parameters; its default greeting says "Dovecot ready." */
    p->dovecot = !p->smtp && strstr(p->rep.text, "Dovecot") != NULL;
    send_hello(p);
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

/* XFORWARD attributes, in the order Postfix's smtp client sends them. */
static const char *const xf_names[] = {"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"};
#define XF_COUNT (sizeof(xf_names) / sizeof(xf_names[0]))

/* The attribute names after XFORWARD in the EHLO reply, as bits. */
static unsigned
xf_parse(const char *s, size_t len)
{
    unsigned bits = 0;
    size_t i = 0;

    while (i < len) {
        size_t start, n;

        while (i < len && s[i] == ' ')
            i++;
        start = i;
        while (i < len && s[i] != ' ' && s[i] != '\r' && s[i] != '\n')
            i++;
        n = i - start;
        for (size_t a = 0; a < XF_COUNT && n > 0; a++) {
            if (strlen(xf_names[a]) == n && strncasecmp(s + start, xf_names[a], n) == 0)
                bits |= 1u << a;
        }
        if (i < len && (s[i] == '\r' || s[i] == '\n'))
            break;
    }
    return bits;
}

/* XFORWARD_README: a value is xtext; our own cap keeps one attribute
 * (name, "=", at most 3 * 150 octets) well inside a 512-octet line. */
#define XF_VALUE_MAX 150

static void
xf_value(const char *v, char *out, size_t size)
{
    size_t n = v != NULL ? strlen(v) : 0;

    if (n > XF_VALUE_MAX)
        n = XF_VALUE_MAX;
    if (n == 0 || dsn_xtext_encode(v, n, out, size) == 0)
        snprintf(out, size, "[UNAVAILABLE]");
}

size_t
lmtp_proto__xforward_build(struct lmtp_proto *p)
{
    const struct lmtp_xforward *x = p->txn->xforward;
    char val[3 * XF_VALUE_MAX + 1];
    char attr[sizeof(val) + 16];
    char *line = NULL;

    p->xf_n = p->xf_sent = p->xf_left = 0;
    if (!p->smtp || p->verify || x == NULL || p->xf_attrs == 0)
        return 0;
    for (size_t a = 0; a < XF_COUNT; a++) {
        const char *v[] = {
            x->name, x->addr, x->port, x->proto, x->helo, x->ident, x->local ? "LOCAL" : "REMOTE"};

        if ((p->xf_attrs & (1u << a)) == 0)
            continue;
        xf_value(v[a], val, sizeof(val));
        snprintf(attr, sizeof(attr), " %s=%s", xf_names[a], val);
        /* a new command when this one would pass 512 octets with CRLF */
        if (line == NULL || strlen(line) + strlen(attr) + 2 > LMTP_XF_LINE) {
            line = p->xf_lines[p->xf_n++];
            snprintf(line, LMTP_XF_LINE + 1, "XFORWARD");
        }
        strcat(line, attr);
    }
    for (size_t i = 0; i < p->xf_n; i++)
        strcat(p->xf_lines[i], "\r\n");
    return p->xf_n;
}

/* TLS was required and cannot be had: 451 4.7.4 (RFC 3463: security
 * features not supported), the session fails. */
static void
tls_missing(struct lmtp_proto *p, const char *what)
{
    char reason[LMTP_TEXT_MAX];

    lmtp_proto__textf(reason, sizeof(reason), "4.7.4 TLS required but the %s %s",
                      lmtp_proto__peer(p), what);
    lmtp_proto__fail(p, "4.7.4", reason);
}

/* The LHLO or EHLO reply. */
void
lmtp_proto__on_hello(struct lmtp_proto *p)
{
    const char *param = NULL;
    size_t plen = 0;

    if (p->smtp && p->rep.code / 100 == 5) {
        /* RFC 5321 3.2, 4.1.4: a server without extensions refuses EHLO;
         * HELO still works */
        lmtp_proto__out_put(p, "HELO ");
        lmtp_proto__out_put(p, p->hello_name);
        lmtp_proto__out_put(p, "\r\n");
        p->st = LMTP_ST_HELO;
        return;
    }
    if (p->rep.code != 250) {
        lmtp_proto__fail_reply(p, "%s refused %s", lmtp_proto__peer(p), p->smtp ? "EHLO" : "LHLO");
        return;
    }
    p->pipelining = reply_has_keyword(&p->rep, "PIPELINING", NULL, NULL);
    p->eightbit = reply_has_keyword(&p->rep, "8BITMIME", NULL, NULL);
    p->smtputf8 = reply_has_keyword(&p->rep, "SMTPUTF8", NULL, NULL);
    p->dsn = reply_has_keyword(&p->rep, "DSN", NULL, NULL);
    p->requiretls = p->smtp && reply_has_keyword(&p->rep, "REQUIRETLS", NULL, NULL);
    p->chunking = p->smtp && reply_has_keyword(&p->rep, "CHUNKING", NULL, NULL);
    p->size_offered = reply_has_keyword(&p->rep, "SIZE", &param, &plen);
    p->size_max = p->size_offered ? size_param(param, plen) : 0;
    p->xf_attrs = p->smtp && reply_has_keyword(&p->rep, "XFORWARD", &param, &plen)
                      ? xf_parse(param, plen)
                      : 0;
    if (p->tls_want && !p->tls_up) {
        if (reply_has_keyword(&p->rep, "STARTTLS", NULL, NULL)) {
            lmtp_proto__out_put(p, "STARTTLS\r\n");
            p->st = LMTP_ST_STARTTLS;
            return;
        }
        if (p->tls_required) {
            tls_missing(p, "does not offer STARTTLS");
            return;
        }
    }
    p->st = LMTP_ST_READY;
    lmtp_proto__q_push(p, LMTP_EV_READY, 0, 0, NULL);
}

/* The HELO reply: plain RFC 5321, no extensions at all. */
void
lmtp_proto__on_helo(struct lmtp_proto *p)
{
    if (p->rep.code != 250) {
        lmtp_proto__fail_reply(p, "%s refused EHLO and HELO", lmtp_proto__peer(p));
        return;
    }
    if (p->tls_want && p->tls_required) {
        tls_missing(p, "has no EHLO, so no STARTTLS");
        return;
    }
    p->st = LMTP_ST_READY;
    lmtp_proto__q_push(p, LMTP_EV_READY, 0, 0, NULL);
}

void
lmtp_proto__on_starttls(struct lmtp_proto *p)
{
    if (p->rep.code == 220) {
        /* RFC 3207 4.2: nothing more in plain text. lmtp_proto_feed stops
         * at this reply (an event is queued), so what follows is the
         * glue's to drop. */
        p->st = LMTP_ST_TLS;
        lmtp_proto__q_push(p, LMTP_EV_STARTTLS, 0, 0, NULL);
        return;
    }
    if (p->tls_required) {
        tls_missing(p, "refused STARTTLS");
        return;
    }
    /* RFC 3207 4: a client may go on without TLS after a refusal. */
    p->st = LMTP_ST_READY;
    lmtp_proto__q_push(p, LMTP_EV_READY, 0, 0, NULL);
}

void
lmtp_proto_set_starttls(struct lmtp_proto *p, bool required)
{
    if (p->st != LMTP_ST_GREETING)
        mxd_panic("lmtp_proto_set_starttls: session already started");
    p->tls_want = true;
    p->tls_required = required;
}

void
lmtp_proto_tls_up(struct lmtp_proto *p, bool authenticated)
{
    lmtp_proto__out_release(p);
    if (p->st != LMTP_ST_TLS)
        mxd_panic("lmtp_proto_tls_up: no STARTTLS handshake was asked for");
    /* RFC 3207 4.2: discard what was learnt before TLS and greet again */
    p->tls_up = true;
    p->tls_auth = authenticated;
    p->pipelining = p->eightbit = p->smtputf8 = p->chunking = p->size_offered = p->dsn = false;
    p->requiretls = false;
    p->size_max = 0;
    p->xf_attrs = 0;
    send_hello(p);
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

/* SMTP: the server's SIZE first (permanent: no point retrying for days),
 * then SMTPUTF8. 8BITMIME is the scan's (lmtp_proto__scan_begin). */
static const char *
smtp_refusal(const struct lmtp_proto *p, const struct lmtp_txn *t, int *code)
{
    /* RFC 1870 6.1: a message over the declared SIZE would be refused */
    *code = 552;
    if (p->size_offered && p->size_max > 0 && t->size > p->size_max)
        return "552 5.3.4 message size exceeds the primary's SIZE limit";
    /* RFC 6531 3.4: a message that needs SMTPUTF8 cannot go to a server
     * without it; one that does not goes without it (as Postfix) */
    *code = 550;
    if (t->utf8_needed && !p->smtputf8)
        return "550 5.6.7 message needs SMTPUTF8 but the primary does not offer it";
    /* RFC 8689 4.2.1: only over TLS whose certificate was authenticated
     * (DANE, MTA-STS or tls = verify), to a server that offers REQUIRETLS;
     * else the message is returned with 5.7.30 (never sent without) */
    if (t->requiretls && !p->tls_up)
        return "550 5.7.30 REQUIRETLS support required: no TLS with the next hop";
    if (t->requiretls && !p->tls_auth)
        return "550 5.7.30 REQUIRETLS support required: the next hop's certificate is not "
               "authenticated (no DANE, MTA-STS or tls = verify)";
    if (t->requiretls && !p->requiretls)
        return "550 5.7.30 REQUIRETLS support required: the next hop does not offer REQUIRETLS";
    return NULL;
}

const char *
lmtp_proto__refusal(const struct lmtp_proto *p, const struct lmtp_txn *t, int *code)
{
    bool paths_ok = path_ok(t->sender);

    for (size_t i = 0; i < t->nrcpts && paths_ok; i++)
        paths_ok = path_ok(t->rcpts[i]);
    *code = 451;
    if (p->st != LMTP_ST_READY)
        return p->smtp ? "451 4.4.2 SMTP session not ready" : "451 4.4.2 LMTP session not ready";
    if (!paths_ok)
        return p->smtp ? "451 4.3.0 address with control characters, not sent over SMTP"
                       : "451 4.3.0 address with control characters, not sent over LMTP";
    if (p->smtp)
        return smtp_refusal(p, t, code);
    *code = 550;
    if (t->utf8_needed && !p->smtputf8)
        return "550 5.6.7 SMTPUTF8 required but not offered by the LMTP server";
    *code = 552;
    if (p->size_offered && p->size_max > 0 && t->size > p->size_max)
        return "552 5.3.4 Message size exceeds the LMTP server's SIZE limit";
    return NULL;
}

void
lmtp_proto__body_begin(struct lmtp_proto *p)
{
    p->st = LMTP_ST_BODY;
    p->body_bol = true;
    p->body_crlf = true;
    p->body_prev = '\n';
    p->body_seen = 0;
    lmtp_proto__q_push(p, LMTP_EV_BODY, 0, 0, NULL);
}

/* RFC 3030 2: the size is known, so the whole body is one chunk; the
 * server replies once, after reading all of it. */
void
lmtp_proto__bdat_begin(struct lmtp_proto *p)
{
    char cmd[64];

    snprintf(cmd, sizeof(cmd), "BDAT %" PRIu64 " LAST\r\n", lmtp_proto__wire_size(p));
    lmtp_proto__out_put(p, cmd);
    lmtp_proto__body_begin(p);
}

/* Dot-stuffs data into the output buffer (RFC 5321 4.5.2). A line starts
 * after any LF, not only CRLF: a server that takes LF as a line end (as
 * Dovecot does) must not see an unstuffed "\n.\r\n" as the end. */
static void
body_stuff(struct lmtp_proto *p, const char *data, size_t len)
{
    char *o;
    bool bol = p->body_bol;

    lmtp_proto__out_reserve(p, 2 * len);
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
    lmtp_proto__out_mark(p);
}

/* BDAT: the octets as they are (RFC 3030 2: no stuffing, no terminator). */
static void
body_raw(struct lmtp_proto *p, const char *data, size_t len)
{
    if (len == 0)
        return;
    lmtp_proto__out_reserve(p, len);
    memcpy(p->out + p->out_len, data, len);
    p->out_len += len;
    lmtp_proto__out_mark(p);
}

/* SMTP: the body must be exactly txn.size octets; BDAT announced that
 * many, and with DATA a mismatch still means the queue file is not what
 * was accepted. False (the session failed) when it is not. */
static bool
body_size_ok(struct lmtp_proto *p, size_t len, bool last)
{
    uint64_t want = p->txn->size;
    char reason[LMTP_TEXT_MAX];

    if ((uint64_t)len <= want - p->body_seen) {
        p->body_seen += len;
        if (!last || p->body_seen == want)
            return true;
    }
    lmtp_proto__textf(reason, sizeof(reason),
                      "message body does not match its size of %" PRIu64 " octets", want);
    lmtp_proto__fail(p, "4.3.0", reason);
    return false;
}

/* ---- 8-bit content to a server without 8BITMIME (issue 14) ------------ */

static void
scan_count(void *arg, const char *data, size_t len)
{
    struct lmtp_proto *p = arg;

    (void)data;
    p->conv_size += len;
}

/* The converted octets, framed like the others. */
static void
conv_out(void *arg, const char *data, size_t len)
{
    struct lmtp_proto *p = arg;

    if (p->bdat)
        body_raw(p, data, len);
    else
        body_stuff(p, data, len);
}

void
lmtp_proto__scan_begin(struct lmtp_proto *p)
{
    p->st = LMTP_ST_SCAN;
    p->conv_size = 0;
    p->conv = mime7_new(scan_count, p);
    lmtp_proto__q_push(p, LMTP_EV_BODY, 0, 0, NULL);
}

uint64_t
lmtp_proto__wire_size(const struct lmtp_proto *p)
{
    return p->conv != NULL ? p->conv_size : p->txn->size;
}

/* The scan: nothing 8-bit, send as stored; convertible, send converted
 * (a second pass gives the same octets: conv_size is exact); else 5.6.3
 * (RFC 3463: conversion required but not supported). */
static void
scan_body(struct lmtp_proto *p, const char *data, size_t len, bool last)
{
    char text[LMTP_TEXT_MAX];
    bool eight;

    mime7_feed(p->conv, data, len);
    if (!last) {
        lmtp_proto__q_push(p, LMTP_EV_BODY, 0, 0, NULL);
        return;
    }
    eight = mime7_saw_8bit(p->conv);
    if (mime7_finish(p->conv) != 0) {
        lmtp_proto__textf(text, sizeof(text),
                          "554 5.6.3 the %s does not offer 8BITMIME and the message cannot be "
                          "converted to 7 bit: %s",
                          lmtp_proto__peer(p), mime7_error(p->conv));
        mime7_free(p->conv);
        p->conv = NULL;
        p->st = LMTP_ST_READY;
        lmtp_proto__refuse(p, 554, text);
        return;
    }
    mime7_free(p->conv);
    p->conv = eight ? mime7_new(conv_out, p) : NULL;
    lmtp_proto__txn_send(p);
}

/* The send's conversion. False (the session failed) when it did not
 * convert what the scan did: the body changed under us. */
static bool
conv_body(struct lmtp_proto *p, const char *data, size_t len, bool last)
{
    mime7_feed(p->conv, data, len);
    if (!last)
        return true;
    if (mime7_finish(p->conv) == 0)
        return true;
    lmtp_proto__fail(p, "4.3.0", "the message changed between its 8-bit scan and its sending");
    return false;
}

void
lmtp_proto_body(struct lmtp_proto *p, const char *data, size_t len, bool last)
{
    lmtp_proto__out_release(p);
    if (p->st == LMTP_ST_FAILED || p->st == LMTP_ST_CLOSED)
        return;
    if (p->st == LMTP_ST_SCAN) {
        scan_body(p, data, len, last);
        return;
    }
    if (p->st != LMTP_ST_BODY)
        mxd_panic("lmtp_proto_body: no body wanted now");
    if (p->smtp && !body_size_ok(p, len, last))
        return;
    if (p->conv != NULL) {
        if (!conv_body(p, data, len, last))
            return;
    } else if (p->bdat) {
        body_raw(p, data, len);
    } else {
        body_stuff(p, data, len);
    }
    if (!last) {
        lmtp_proto__q_push(p, LMTP_EV_BODY, 0, 0, NULL);
        return;
    }
    if (!p->bdat) {
        if (!p->body_crlf)
            lmtp_proto__out_put(p, "\r\n");
        lmtp_proto__out_put(p, ".\r\n");
    }
    p->st = LMTP_ST_DOT;
    p->dot_next = 0;
}
