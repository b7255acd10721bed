/* Unit tests for smtp_proto: the server state machine driven with scripted
 * input, as a client would send it (whole, one octet at a time, and in
 * 7-octet pieces: the transcript must not depend on the split). A tiny
 * policy answers MAIL, RCPT and end of body the way smtp_net would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/smtp_proto.h"

struct run {
    char codes[512]; /* final reply codes, space separated */
    char replies[8192];
    size_t rlen;
    char body[4096];
    size_t blen;
    int body_ends, aborts, begins, starttls;
    size_t nrcpts_at_end;
    bool closed;
};

static const struct smtp_proto_cfg test_cfg = {
    .hostname = "mx.test",
    .max_message_size = 1000,
    .max_recipients = 3,
};

/* Appends the code of every final reply line ("250 ", not "250-"). */
static void
run_codes(struct run *r, const char *data, size_t len)
{
    size_t i = 0;

    while (i + 4 <= len) {
        const char *eol = memchr(data + i, '\n', len - i);
        size_t n = strlen(r->codes);

        if (data[i + 3] == ' ')
            snprintf(r->codes + n, sizeof(r->codes) - n, "%s%.3s", n ? " " : "", data + i);
        if (eol == NULL)
            break;
        i = (size_t)(eol - data) + 1;
    }
}

static void
run_event(struct smtp_proto *p, const struct smtp_event *ev, struct run *r)
{
    switch (ev->type) {
    case SMTP_EV_REPLY:
        assert_true(r->rlen + ev->len < sizeof(r->replies));
        memcpy(r->replies + r->rlen, ev->data, ev->len);
        r->rlen += ev->len;
        run_codes(r, ev->data, ev->len);
        break;
    case SMTP_EV_MAIL:
        if (strcmp(ev->addr->mailbox, "reject@x.test") == 0)
            smtp_proto_answer(p, 550, "5.7.1 no");
        else
            smtp_proto_answer(p, 250, "2.1.0 Ok");
        break;
    case SMTP_EV_RCPT:
        if (strcmp(ev->addr->domain_lc, "relay.test") == 0)
            smtp_proto_answer(p, 550, "5.7.1 relay access denied");
        else
            smtp_proto_answer(p, 250, "2.1.5 Ok");
        break;
    case SMTP_EV_BODY_BEGIN:
        r->begins++;
        r->blen = 0;
        break;
    case SMTP_EV_BODY:
        assert_true(r->blen + ev->len < sizeof(r->body));
        memcpy(r->body + r->blen, ev->data, ev->len);
        r->blen += ev->len;
        break;
    case SMTP_EV_BODY_END:
        r->body_ends++;
        r->nrcpts_at_end = smtp_proto_txn(p)->nrcpts;
        smtp_proto_answer(p, 250, "2.0.0 Ok: queued as TEST");
        break;
    case SMTP_EV_TXN_ABORT:
        r->aborts++;
        break;
    case SMTP_EV_ETRN:
        if (strcmp(ev->data, "unknown.test") == 0)
            smtp_proto_answer(p, 459, "4.1.2 Node unknown.test not allowed");
        else
            smtp_proto_answer(p, 250, "2.0.0 Queuing started");
        break;
    case SMTP_EV_CLOSE:
        r->closed = true;
        break;
    case SMTP_EV_STARTTLS:
        r->starttls++;
        smtp_proto_tls_started(p, "TLS1.3 TEST");
        break;
    case SMTP_EV_HELO:
    case SMTP_EV_NEED_INPUT:
    case SMTP_EV_WAIT:
        break;
    }
}

/* Pulls events until the proto needs input or closes. */
static void
run_drain(struct smtp_proto *p, struct run *r)
{
    struct smtp_event ev;

    for (int guard = 0; guard < 100000; guard++) {
        enum smtp_ev t = smtp_proto_next(p, &ev);

        assert_int_not_equal(t, SMTP_EV_WAIT); /* we always answer at once */
        if (t == SMTP_EV_NEED_INPUT)
            return;
        run_event(p, &ev, r);
        if (t == SMTP_EV_CLOSE)
            return;
    }
    fail_msg("smtp_proto_next loops");
}

static void
run_script(const struct smtp_proto_cfg *cfg, const char *in, size_t len, size_t step, struct run *r)
{
    struct smtp_proto *p = smtp_proto_new(cfg);
    size_t pos = 0;

    memset(r, 0, sizeof(*r));
    run_drain(p, r);
    while (pos < len && !r->closed) {
        size_t want = step == 0 || len - pos < step ? len - pos : step;
        size_t took = smtp_proto_feed_copy(p, in + pos, want);

        pos += took;
        run_drain(p, r);
        if (took == 0)
            assert_true(r->closed); /* a full buffer must have been drained */
    }
    smtp_proto_free(p);
}

struct proto_case {
    const char *name;
    const char *in;
    const char *want_codes;
    const char *want_body; /* NULL: don't check */
    int want_body_ends;
    bool want_closed;
};

#define EHLO   "EHLO client.test\r\n"
#define MAILOK "MAIL FROM:<a@b.test>\r\n"
#define RCPTOK "RCPT TO:<c@d.test>\r\n"
#define TXN    EHLO MAILOK RCPTOK
#define X100                                                                                       \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"                                           \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define RELAY "RCPT TO:<x@relay.test>\r\n"
#define R10   RELAY RELAY RELAY RELAY RELAY RELAY RELAY RELAY RELAY RELAY

static const struct proto_case proto_cases[] = {
    {"basic", TXN "DATA\r\nhi\r\n.\r\nQUIT\r\n", "220 250 250 250 354 250 221", "hi\r\n", 1, true},
    {"helo", "HELO c\r\n" MAILOK RCPTOK "DATA\r\nx\r\n.\r\n", "220 250 250 250 354 250", "x\r\n", 1,
     false},
    {"lower case verbs", "ehlo c\r\nmail from:<a@b.test>\r\nrcpt to:<c@d.test>\r\ndata\r\n.\r\n",
     "220 250 250 250 354 250", "", 1, false},
    {"space after colon", EHLO "MAIL FROM: <a@b.test>\r\nRCPT TO: <c@d.test>\r\n",
     "220 250 250 250", NULL, 0, false},
    {"null sender", EHLO "MAIL FROM:<>\r\n" RCPTOK, "220 250 250 250", NULL, 0, false},
    {"mail before helo", MAILOK, "220 503", NULL, 0, false},
    {"rcpt before mail", EHLO RCPTOK, "220 250 503", NULL, 0, false},
    {"data before mail", EHLO "DATA\r\n", "220 250 503", NULL, 0, false},
    {"data before rcpt", EHLO MAILOK "DATA\r\n", "220 250 250 503", NULL, 0, false},
    {"data with every rcpt refused", EHLO MAILOK "RCPT TO:<x@relay.test>\r\nDATA\r\n",
     "220 250 250 550 554", NULL, 0, false},
    {"nested mail", EHLO MAILOK MAILOK, "220 250 250 503", NULL, 0, false},
    {"unknown command", "FOO\r\nEXPN x\r\n", "220 500 502", NULL, 0, false},
    {"empty line", "\r\n", "220 500", NULL, 0, false},
    {"vrfy help noop rset", "VRFY x\r\nHELP\r\nNOOP\r\nRSET\r\nVRFY\r\n", "220 252 214 250 250 501",
     NULL, 0, false},
    {"ehlo without name", "EHLO\r\nHELO\r\n", "220 501 501", NULL, 0, false},
    {"bare LF command", "NOOP\nHELP\r\nNOOP\r\n", "220 500 250", NULL, 0, false},
    {"bare LF only", "NOOP\nNOOP\n", "220", NULL, 0, false},
    {"bare CR command", "NO\rOP\r\nNOOP\r\n", "220 500 250", NULL, 0, false},
    {"CR CR LF", "NOOP\r\r\nNOOP\r\n", "220 500 250", NULL, 0, false},
    {"NUL in command", "NO\0OP\r\nNOOP\r\n", "220 500 250", NULL, 0, false},
    {"size too big", EHLO "MAIL FROM:<a@b.test> SIZE=1001\r\n", "220 250 552", NULL, 0, false},
    {"size ok", EHLO "MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME\r\n", "220 250 250", NULL, 0,
     false},
    {"size overflow", EHLO "MAIL FROM:<a@b.test> SIZE=99999999999999999999999\r\n", "220 250 552",
     NULL, 0, false},
    {"unknown param", EHLO "MAIL FROM:<a@b.test> FOO=1\r\n", "220 250 555", NULL, 0, false},
    {"bad body", EHLO "MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n", "220 250 501", NULL, 0, false},
    {"dup param", EHLO "MAIL FROM:<a@b.test> SIZE=1 SIZE=2\r\n", "220 250 501", NULL, 0, false},
    {"param after helo", "HELO c\r\nMAIL FROM:<a@b.test> SIZE=1\r\n", "220 250 555", NULL, 0,
     false},
    {"rcpt unknown param", TXN "RCPT TO:<e@d.test> FOO=BAR\r\n", "220 250 250 250 555", NULL, 0,
     false},
    /* issue 18: RFC 3461 parameters; every bad one gets 501 5.5.4 */
    {"dsn params ok",
     EHLO "MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2B1\r\n"
          "RCPT TO:<e@d.test> NOTIFY=SUCCESS,delay ORCPT=rfc822;e+40d.test\r\n"
          "RCPT TO:<f@d.test> NOTIFY=NEVER ORCPT=utf-8;f\\x{E9}@d.test\r\n",
     "220 250 250 250 250", NULL, 0, false},
    {"notify empty", TXN "RCPT TO:<e@d.test> NOTIFY=\r\n", "220 250 250 250 501", NULL, 0, false},
    {"notify no value", TXN "RCPT TO:<e@d.test> NOTIFY\r\n", "220 250 250 250 501", NULL, 0, false},
    {"notify unknown", TXN "RCPT TO:<e@d.test> NOTIFY=ALWAYS\r\n", "220 250 250 250 501", NULL, 0,
     false},
    {"notify never in list", TXN "RCPT TO:<e@d.test> NOTIFY=NEVER,SUCCESS\r\n",
     "220 250 250 250 501", NULL, 0, false},
    {"notify repeated word", TXN "RCPT TO:<e@d.test> NOTIFY=DELAY,DELAY\r\n", "220 250 250 250 501",
     NULL, 0, false},
    {"notify empty item", TXN "RCPT TO:<e@d.test> NOTIFY=SUCCESS,\r\n", "220 250 250 250 501", NULL,
     0, false},
    {"notify twice", TXN "RCPT TO:<e@d.test> NOTIFY=DELAY NOTIFY=DELAY\r\n", "220 250 250 250 501",
     NULL, 0, false},
    {"orcpt no type", TXN "RCPT TO:<e@d.test> ORCPT=e@d.test\r\n", "220 250 250 250 501", NULL, 0,
     false},
    {"orcpt empty address", TXN "RCPT TO:<e@d.test> ORCPT=rfc822;\r\n", "220 250 250 250 501", NULL,
     0, false},
    {"orcpt bad type", TXN "RCPT TO:<e@d.test> ORCPT=rfc(822);e@d.test\r\n", "220 250 250 250 501",
     NULL, 0, false},
    {"orcpt bad xtext", TXN "RCPT TO:<e@d.test> ORCPT=rfc822;e+4@d.test\r\n", "220 250 250 250 501",
     NULL, 0, false},
    {"orcpt lower hex", TXN "RCPT TO:<e@d.test> ORCPT=rfc822;e+2b@d.test\r\n",
     "220 250 250 250 501", NULL, 0, false},
    {"orcpt control", TXN "RCPT TO:<e@d.test> ORCPT=rfc822;e+0A@d.test\r\n", "220 250 250 250 501",
     NULL, 0, false},
    {"orcpt twice", TXN "RCPT TO:<e@d.test> ORCPT=rfc822;e@d.test ORCPT=rfc822;e@d.test\r\n",
     "220 250 250 250 501", NULL, 0, false},
    {"orcpt bad utf-8 escape", TXN "RCPT TO:<e@d.test> ORCPT=utf-8;e\\x{}@d.test\r\n",
     "220 250 250 250 501", NULL, 0, false},
    {"ret unknown", EHLO "MAIL FROM:<a@b.test> RET=BODY\r\n", "220 250 501", NULL, 0, false},
    {"ret no value", EHLO "MAIL FROM:<a@b.test> RET\r\n", "220 250 501", NULL, 0, false},
    {"ret twice", EHLO "MAIL FROM:<a@b.test> RET=FULL RET=HDRS\r\n", "220 250 501", NULL, 0, false},
    {"envid empty", EHLO "MAIL FROM:<a@b.test> ENVID=\r\n", "220 250 501", NULL, 0, false},
    {"envid bad xtext", EHLO "MAIL FROM:<a@b.test> ENVID=a+ZZ\r\n", "220 250 501", NULL, 0, false},
    {"envid equals sign", EHLO "MAIL FROM:<a@b.test> ENVID=a=b\r\n", "220 250 501", NULL, 0, false},
    {"envid too long",
     EHLO "MAIL FROM:<a@b.test> ENVID="
          "01234567890123456789012345678901234567890123456789"
          "012345678901234567890123456789012345678901234567890\r\n",
     "220 250 501", NULL, 0, false},
    {"envid twice", EHLO "MAIL FROM:<a@b.test> ENVID=a ENVID=b\r\n", "220 250 501", NULL, 0, false},
    /* RFC 3461: MAIL and RCPT lines may be longer by its parameters */
    {"long rcpt with orcpt",
     TXN "RCPT TO:<e@d.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;" X100 X100 X100 X100
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@d.test\r\n",
     "220 250 250 250 250", NULL, 0, false},
    {"rcpt line over its limit",
     TXN "RCPT TO:<e@d.test> NOTIFY=SUCCESS ORCPT=rfc822;" X100 X100 X100 X100 X100 X100 X100 X100
         X100 X100 X100 "@d.test\r\nNOOP\r\n",
     "220 250 250 250 500 250", NULL, 0, false},
    {"long mail with envid", EHLO "MAIL FROM:<a@b.test> SIZE=10 ENVID=" X100 "\r\n", "220 250 250",
     NULL, 0, false},
    {"long noop still refused", "NOOP " X100 X100 X100 X100 X100 X100 "\r\nNOOP\r\n", "220 500 250",
     NULL, 0, false},
    {"dsn param after helo", "HELO c\r\nMAIL FROM:<a@b.test> RET=FULL\r\n", "220 250 555", NULL, 0,
     false},
    {"utf8 without smtputf8", EHLO "MAIL FROM:<j\xc3\xb6rg@b.test>\r\n", "220 250 553", NULL, 0,
     false},
    {"utf8 rcpt without smtputf8", EHLO MAILOK "RCPT TO:<j\xc3\xb6rg@d.test>\r\n",
     "220 250 250 553", NULL, 0, false},
    {"utf8 with smtputf8",
     EHLO "MAIL FROM:<j\xc3\xb6rg@b.test> SMTPUTF8\r\nRCPT TO:<\xc3\xa9@d.test>\r\n",
     "220 250 250 250", NULL, 0, false},
    {"bad sender syntax", EHLO "MAIL FROM:<a b@c>\r\nMAIL FROM:a@b\r\n", "220 250 501 501", NULL, 0,
     false},
    {"too many rcpts",
     EHLO MAILOK "RCPT TO:<1@d.test>\r\nRCPT TO:<2@d.test>\r\nRCPT TO:<3@d.test>\r\n"
                 "RCPT TO:<4@d.test>\r\n",
     "220 250 250 250 250 250 452", NULL, 0, false},
    {"duplicate rcpt counts once", TXN RCPTOK "RCPT TO:<c@D.TEST>\r\nDATA\r\n.\r\n",
     "220 250 250 250 250 250 354 250", "", 1, false},
    {"pipelined group with failure", TXN "RCPT TO:<x@relay.test>\r\nDATA\r\nok\r\n.\r\n",
     "220 250 250 250 550 354 250", "ok\r\n", 1, false},
    {"mail refused", EHLO "MAIL FROM:<reject@x.test>\r\n" RCPTOK, "220 250 550 503", NULL, 0,
     false},
    {"dot stuffing", TXN "DATA\r\n..a\r\n\r\n...\r\nb.\r\n.\r\n", "220 250 250 250 354 250",
     ".a\r\n\r\n..\r\nb.\r\n", 1, false},
    {"8bit body", TXN "DATA\r\n\xff\xfe\x80\r\n.\r\n", "220 250 250 250 354 250",
     "\xff\xfe\x80\r\n", 1, false},
    {"oversize body then next txn",
     TXN "DATA\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n"
         ".\r\n" MAILOK RCPTOK "DATA\r\nsmall\r\n.\r\n",
     "220 250 250 250 354 552 250 250 354 250", "small\r\n", 1, false},
    /* SMTP smuggling (CVE-2023-51764): one reply for the whole data, the
     * smuggled transaction is content, never commands. */
    {"smuggle LF.LF",
     TXN "DATA\r\nx\n.\nMAIL FROM:<s@s.test>\r\nRCPT TO:<v@d.test>\r\nDATA\r\n"
         "evil\r\n.\r\nQUIT\r\n",
     "220 250 250 250 354 550 221", NULL, 0, true},
    {"smuggle LF.CRLF", TXN "DATA\r\nx\n.\r\nMAIL FROM:<s@s.test>\r\n.\r\n",
     "220 250 250 250 354 550", NULL, 0, false},
    {"smuggle CR.CR", TXN "DATA\r\nx\r.\rMAIL FROM:<s@s.test>\r\n.\r\n", "220 250 250 250 354 550",
     NULL, 0, false},
    {"smuggle CRLF.LF", TXN "DATA\r\nx\r\n.\nMAIL FROM:<s@s.test>\r\n.\r\n",
     "220 250 250 250 354 550", NULL, 0, false},
    {"line too long",
     "NOOP "
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "\r\nNOOP\r\n",
     "220 500 250", NULL, 0, false},
    {"bdat last", TXN "BDAT 4 LAST\r\nab\r\n", "220 250 250 250 250", "ab\r\n", 1, false},
    {"bdat chunks", TXN "BDAT 5\r\nhelloBDAT 8 LAST\r\n world\r\n", "220 250 250 250 250 250",
     "hello world\r\n", 1, false},
    {"bdat keeps dots", TXN "BDAT 10 LAST\r\n.\r\n..x\r\n\r\n", "220 250 250 250 250",
     ".\r\n..x\r\n\r\n", 1, false},
    {"bdat 0 last", TXN "BDAT 0 LAST\r\n", "220 250 250 250 250", "", 1, false},
    {"bdat split CRLF", TXN "BDAT 3\r\nab\rBDAT 1 LAST\r\n\n", "220 250 250 250 250 250", "ab\r\n",
     1, false},
    {"bdat without mail skips octets", EHLO "BDAT 4\r\nQUITNOOP\r\n", "220 250 503 250", NULL, 0,
     false},
    {"bdat without rcpt", EHLO MAILOK "BDAT 2 LAST\r\nxxNOOP\r\n", "220 250 250 503 250", NULL, 0,
     false},
    {"bdat bare LF", TXN "BDAT 7 LAST\r\na\n.\nb\r\n", "220 250 250 250 550", NULL, 0, false},
    {"bdat trailing CR", TXN "BDAT 2 LAST\r\na\r", "220 250 250 250 550", NULL, 0, false},
    {"bdat syntax", TXN "BDAT x\r\nBDAT 1 FIRST\r\nBDAT\r\n", "220 250 250 250 501 501 501", NULL,
     0, false},
    {"data after bdat", TXN "BDAT 1\r\nxDATA\r\n", "220 250 250 250 250 503", NULL, 0, false},
    {"rset between chunks", TXN "BDAT 1\r\nxRSET\r\n" MAILOK RCPTOK "BDAT 1 LAST\r\ny",
     "220 250 250 250 250 250 250 250 250", "y", 1, false},
    {"ehlo resets txn", TXN EHLO RCPTOK, "220 250 250 250 250 503", NULL, 0, false},
    {"quit ignores rest", "QUIT\r\nNOOP\r\n", "220 221", NULL, 0, true},
    {"etrn", EHLO "ETRN example.org\r\nETRN @example.org\r\nETRN unknown.test\r\n",
     "220 250 250 250 459", NULL, 0, false},
    {"etrn before helo", "ETRN example.org\r\n", "220 503", NULL, 0, false},
    {"etrn in txn", EHLO MAILOK "ETRN example.org\r\n", "220 250 250 503", NULL, 0, false},
    {"etrn syntax", EHLO "ETRN\r\nETRN a b\r\n", "220 250 501 501", NULL, 0, false},
    /* Issue 14 item 5: refused recipients (a directory harvest) count
     * toward the error limit; the 20th refusal is followed by 421. */
    {"issue14 refused rcpts count", EHLO MAILOK R10 R10 "RCPT TO:<z@relay.test>\r\n",
     "220 250 250 550 550 550 550 550 550 550 550 550 550 550 550 550 550 550 550 550 550 550 550 "
     "421",
     NULL, 0, true},
    {"too many errors",
     "A\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r\nA\r"
     "\n"
     "A\r\nNOOP\r\n",
     "220 500 500 500 500 500 500 500 500 500 500 500 500 500 500 500 500 500 500 500 500 421",
     NULL, 0, true},
};

static void
test_proto_table(void **state)
{
    static const size_t steps[] = {0, 1, 7};

    (void)state;
    for (size_t i = 0; i < sizeof(proto_cases) / sizeof(proto_cases[0]); i++) {
        const struct proto_case *c = &proto_cases[i];
        size_t len = strlen(c->in);

        if (strcmp(c->name, "NUL in command") == 0)
            len = 14;
        for (size_t k = 0; k < 3; k++) {
            struct run r;

            print_message("case: %s (step %zu)\n", c->name, steps[k]);
            run_script(&test_cfg, c->in, len, steps[k], &r);
            assert_string_equal(r.codes, c->want_codes);
            assert_int_equal(r.body_ends, c->want_body_ends);
            assert_int_equal(r.closed, c->want_closed);
            if (c->want_body != NULL) {
                assert_int_equal(r.blen, strlen(c->want_body));
                assert_memory_equal(r.body, c->want_body, r.blen);
            }
        }
    }
}

/* RFC 3207 and CVE-2011-0411: plaintext pipelined behind STARTTLS is
 * dropped, the session starts over, STARTTLS twice is 503. */
static void
test_proto_starttls(void **state)
{
    struct smtp_proto_cfg cfg = test_cfg;
    struct run r;
    const char *in = EHLO "STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRSET\r\n";
    const char *in2 = EHLO "STARTTLS x\r\n";

    (void)state;
    run_script(&test_cfg, "STARTTLS\r\n", 10, 0, &r);
    assert_string_equal(r.codes, "220 502");
    assert_int_equal(r.starttls, 0);
    cfg.tls_offer = true;
    run_script(&cfg, EHLO, strlen(EHLO), 0, &r);
    r.replies[r.rlen] = '\0';
    assert_non_null(strstr(r.replies, "250-STARTTLS\r\n"));
    /* Fed whole, the injected lines arrive with STARTTLS and are dropped. */
    run_script(&cfg, in, strlen(in), 0, &r);
    assert_string_equal(r.codes, "220 250 220");
    assert_int_equal(r.starttls, 1);
    run_script(&cfg, in2, strlen(in2), 0, &r);
    assert_string_equal(r.codes, "220 250 501");
}

static void
test_proto_after_tls(void **state)
{
    struct smtp_proto_cfg cfg = test_cfg;
    struct smtp_proto *p;
    struct smtp_event ev;
    const char *a = EHLO "STARTTLS\r\n";
    const char *b = MAILOK EHLO "STARTTLS\r\n" MAILOK;
    struct run r;

    (void)state;
    cfg.tls_offer = true;
    p = smtp_proto_new(&cfg);
    memset(&r, 0, sizeof(r));
    run_drain(p, &r);
    smtp_proto_feed_copy(p, a, strlen(a));
    run_drain(p, &r);
    assert_int_equal(r.starttls, 1);
    assert_true(smtp_proto_tls(p));
    assert_string_equal(smtp_proto_helo(p), "");
    smtp_proto_feed_copy(p, b, strlen(b));
    run_drain(p, &r);
    /* MAIL before the new EHLO: 503; EHLO no longer offers STARTTLS. */
    assert_string_equal(r.codes, "220 250 220 503 250 503 250");
    r.replies[r.rlen] = '\0';
    assert_null(strstr(strstr(r.replies, "220 2.0.0"), "STARTTLS\r\n"));
    (void)ev;
    smtp_proto_free(p);
}

/* RFC 8689: REQUIRETLS in EHLO only over TLS; MAIL ... REQUIRETLS
 * before STARTTLS is 530 5.7.10, after it accepted and kept. */
static void
test_proto_requiretls(void **state)
{
    struct smtp_proto_cfg cfg = test_cfg;
    struct smtp_proto *p;
    const char *a = EHLO "MAIL FROM:<a@b.test> REQUIRETLS\r\nSTARTTLS\r\n";
    const char *b = EHLO "MAIL FROM:<a@b.test> REQUIRETLS=1\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\n";
    struct run r;

    (void)state;
    cfg.tls_offer = true;
    p = smtp_proto_new(&cfg);
    memset(&r, 0, sizeof(r));
    run_drain(p, &r);
    smtp_proto_feed_copy(p, a, strlen(a));
    run_drain(p, &r);
    r.replies[r.rlen] = '\0';
    assert_null(strstr(r.replies, "250-REQUIRETLS"));
    assert_non_null(strstr(r.replies, "530 5.7.10 "));
    assert_string_equal(r.codes, "220 250 530 220");
    r.rlen = 0;
    smtp_proto_feed_copy(p, b, strlen(b));
    run_drain(p, &r);
    r.replies[r.rlen] = '\0';
    assert_non_null(strstr(r.replies, "250-REQUIRETLS\r\n"));
    assert_string_equal(r.codes, "220 250 530 220 250 501 250");
    assert_true(smtp_proto_txn(p)->requiretls);
    smtp_proto_free(p);
}

static void
test_proto_ehlo_keywords(void **state)
{
    struct run r;

    (void)state;
    run_script(&test_cfg, EHLO, strlen(EHLO), 0, &r);
    r.replies[r.rlen] = '\0';
    assert_non_null(strstr(r.replies, "250-mx.test\r\n"));
    assert_non_null(strstr(r.replies, "250-PIPELINING\r\n"));
    assert_non_null(strstr(r.replies, "250-SIZE 1000\r\n"));
    assert_non_null(strstr(r.replies, "250-8BITMIME\r\n"));
    assert_non_null(strstr(r.replies, "250-ENHANCEDSTATUSCODES\r\n"));
    assert_non_null(strstr(r.replies, "250-SMTPUTF8\r\n"));
    assert_non_null(strstr(r.replies, "250-ETRN\r\n"));
    assert_non_null(strstr(r.replies, "250-DSN\r\n")); /* issue 18 */
    assert_non_null(strstr(r.replies, "250 CHUNKING\r\n"));
    assert_non_null(strstr(r.replies, "220 mx.test ESMTP"));
}

/* Issue 18: the RFC 3461 parameters reach the transaction, decoded. */
static void
test_proto_issue18_dsn_txn(void **state)
{
    static const char in[] =
        EHLO "MAIL FROM:<a@b.test> RET=FULL ENVID=QQ+2B1+3D\r\n"
             "RCPT TO:<e@d.test> NOTIFY=FAILURE,SUCCESS ORCPT=RFC822;x+2By@d.test\r\n"
             "RCPT TO:<f@d.test>\r\n";
    struct smtp_proto *p = smtp_proto_new(&test_cfg);
    const struct smtp_txn *t;
    struct run r;

    (void)state;
    memset(&r, 0, sizeof(r));
    run_drain(p, &r);
    assert_int_equal(smtp_proto_feed_copy(p, in, strlen(in)), strlen(in));
    run_drain(p, &r);
    assert_string_equal(r.codes, "220 250 250 250 250");
    t = smtp_proto_txn(p);
    assert_int_equal(t->ret, DSN_RET_FULL);
    assert_string_equal(t->envid, "QQ+1=");
    assert_int_equal(t->nrcpts, 2);
    assert_int_equal(t->rdsn[0].notify, DSN_NOTIFY_FAILURE | DSN_NOTIFY_SUCCESS);
    assert_string_equal(t->rdsn[0].orcpt, "rfc822;x+y@d.test");
    assert_int_equal(t->rdsn[1].notify, 0);
    assert_string_equal(t->rdsn[1].orcpt, "");
    smtp_proto_free(p);
}

static void
test_proto_duplicate_rcpt(void **state)
{
    struct run r;
    const char *in = TXN RCPTOK "RCPT TO:<c@D.TEST>\r\nRCPT TO:<z@d.test>\r\nDATA\r\n.\r\n";

    (void)state;
    run_script(&test_cfg, in, strlen(in), 0, &r);
    assert_int_equal(r.nrcpts_at_end, 2);
}

/* A new session fed in (EHLO, MAIL, ...) and run up to the MAIL event,
 * whose answer is owed. */
static struct smtp_proto *
proto_at_mail(const char *in)
{
    struct smtp_proto *p = smtp_proto_new(&test_cfg);
    struct smtp_event ev;

    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_NEED_INPUT);
    assert_int_equal(smtp_proto_feed_copy(p, in, strlen(in)), strlen(in));
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_HELO);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_MAIL);
    return p;
}

/* A slow answer: nothing more is parsed until it comes (pipelining keeps
 * replies in order). */
static void
test_proto_wait(void **state)
{
    struct smtp_proto *p = proto_at_mail(EHLO MAILOK RCPTOK "NOOP\r\n");
    struct smtp_event ev;

    (void)state;
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_WAIT);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_WAIT);
    smtp_proto_answer(p, 250, "2.1.0 Ok");
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(ev.code, 250);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_RCPT);
    assert_string_equal(ev.addr->mailbox, "c@d.test");
    smtp_proto_answer(p, 451, "4.3.0 later");
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(ev.code, 451);
    assert_int_equal(smtp_proto_txn(p)->nrcpts, 0);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(ev.code, 250); /* NOOP */
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_NEED_INPUT);
    assert_true(smtp_proto_idle(p));
    smtp_proto_free(p);
}

/* Issue 15: with helo_answered, HELO/EHLO waits for the checks' verdict. A
 * refusal is the reply and forgets the name (MAIL then needs a HELO); an
 * accept sends the usual EHLO reply, and what was pipelined behind it
 * waits until then. Fails if the proto answers HELO by itself. */
static void
test_proto_issue15_helo_answered(void **state)
{
    struct smtp_proto_cfg cfg = test_cfg;
    struct smtp_proto *p;
    struct smtp_event ev;
    const char *in1 = "EHLO bad.test\r\nMAIL FROM:<a@b.test>\r\n";
    const char *in2 = "EHLO good.test\r\nMAIL FROM:<a@b.test>\r\n";

    (void)state;
    cfg.helo_answered = true;
    p = smtp_proto_new(&cfg);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY); /* 220 */
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_NEED_INPUT);
    smtp_proto_feed_copy(p, in1, strlen(in1));
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_HELO);
    assert_int_equal(ev.len, strlen("bad.test"));
    assert_memory_equal(ev.data, "bad.test", ev.len);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_WAIT);
    smtp_proto_answer(p, 550, "5.7.1 Go away");
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(ev.code, 550);
    assert_string_equal(smtp_proto_helo(p), "");
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(ev.code, 503); /* MAIL: send HELO/EHLO first */
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_NEED_INPUT);
    smtp_proto_feed_copy(p, in2, strlen(in2));
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_HELO);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_WAIT);
    smtp_proto_answer(p, 250, "");
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(ev.code, 250);
    assert_true(ev.len > 12 && memcmp(ev.data, "250-mx.test\r\n", 13) == 0);
    assert_string_equal(smtp_proto_helo(p), "good.test");
    assert_true(smtp_proto_esmtp(p));
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_MAIL);
    smtp_proto_free(p);
}

/* Issue 14 item 8: an answer carrying CR LF (an SPF exp= text) is one
 * reply line, controls made visible, bounded; the client stays in sync. */
static void
test_proto_issue14_answer_one_line(void **state)
{
    struct smtp_proto *p = proto_at_mail(EHLO MAILOK RCPTOK);
    struct smtp_event ev;
    char longtext[2000];

    (void)state;
    memset(longtext, 'x', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = '\0';
    smtp_proto_answer(p, 250, longtext);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(ev.len, 4 + SMTP_ANSWER_MAX - 1 + 2); /* "250 " text CRLF: 512 */
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_RCPT);
    smtp_proto_answer(p, 550, "5.7.23 Go away\r\n250 2.0.0 injected\r\n354 \x1b[31m");
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_REPLY);
    assert_int_equal(ev.code, 550);
    assert_int_equal(ev.len, strlen("550 5.7.23 Go away??250 2.0.0 injected??354 ?[31m\r\n"));
    assert_memory_equal(ev.data, "550 5.7.23 Go away??250 2.0.0 injected??354 ?[31m\r\n", ev.len);
    assert_int_equal(smtp_proto_next(p, &ev), SMTP_EV_NEED_INPUT);
    smtp_proto_free(p);
}

static void
test_proto_received(void **state)
{
    struct smtp_proto *p = smtp_proto_new(&test_cfg);
    struct smtp_event ev;
    const char *in = "EHLO bad(name)\r\n" MAILOK RCPTOK;
    char hdr[1024];
    size_t n;

    (void)state;
    smtp_proto_feed_copy(p, in, strlen(in));
    while (smtp_proto_next(p, &ev) != SMTP_EV_NEED_INPUT)
        if (ev.type == SMTP_EV_MAIL || ev.type == SMTP_EV_RCPT)
            smtp_proto_answer(p, 250, "2.0.0 Ok");
    n = smtp_proto_received(p, "192.0.2.1", "QID123", 0, hdr, sizeof(hdr));
    assert_true(n > 0);
    hdr[n] = '\0';
    assert_string_equal(hdr, "Received: from bad_name_ ([192.0.2.1])\r\n"
                             "\tby mx.test (mxd) with ESMTP id QID123\r\n"
                             "\tfor <c@d.test>;\r\n"
                             "\tThu, 01 Jan 1970 00:00:00 +0000\r\n");
    n = smtp_proto_received(p, "2001:db8::1", "Q", 0, hdr, 40);
    assert_int_equal(n, 0); /* does not fit */
    smtp_proto_free(p);
}

/* Issue 14 item 18: the "with" keyword per RFC 3848 and RFC 6531 4.3.
 * mxd offers no AUTH, so never ESMTPA or ESMTPSA. */
static void
test_proto_issue14_received_with(void **state)
{
    static const struct {
        const char *in;
        bool tls;
        const char *want;
    } cases[] = {
        {"HELO c\r\n" MAILOK RCPTOK, false, " with SMTP id "},
        {EHLO MAILOK RCPTOK, false, " with ESMTP id "},
        {EHLO MAILOK RCPTOK, true, " with ESMTPS (TLS1.3 TEST) id "},
        {EHLO "MAIL FROM:<a@b.test> SMTPUTF8\r\n" RCPTOK, false, " with UTF8SMTP id "},
        {EHLO "MAIL FROM:<a@b.test> SMTPUTF8\r\n" RCPTOK, true,
         " with UTF8SMTPS (TLS1.3 TEST) id "},
        {"HELO c\r\n" MAILOK RCPTOK, true, " with ESMTPS (TLS1.3 TEST) id "},
    };
    struct smtp_proto_cfg cfg = test_cfg;

    (void)state;
    cfg.tls_offer = true;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct smtp_proto *p = smtp_proto_new(&cfg);
        struct smtp_event ev;
        char hdr[1024];
        size_t n;

        if (cases[i].tls) {
            const char *st = EHLO "STARTTLS\r\n";

            smtp_proto_feed_copy(p, st, strlen(st));
            while (smtp_proto_next(p, &ev) != SMTP_EV_STARTTLS)
                ;
            smtp_proto_tls_started(p, "TLS1.3 TEST");
        }
        smtp_proto_feed_copy(p, cases[i].in, strlen(cases[i].in));
        while (smtp_proto_next(p, &ev) != SMTP_EV_NEED_INPUT)
            if (ev.type == SMTP_EV_MAIL || ev.type == SMTP_EV_RCPT)
                smtp_proto_answer(p, 250, "2.0.0 Ok");
        assert_int_equal(smtp_proto_txn(p)->nrcpts, 1);
        n = smtp_proto_received(p, "192.0.2.1", "Q", 0, hdr, sizeof(hdr));
        assert_true(n > 0);
        hdr[n] = '\0';
        if (strstr(hdr, cases[i].want) == NULL)
            fail_msg("case %zu: want \"%s\" in %s", i, cases[i].want, hdr);
        smtp_proto_free(p);
    }
}

/* A body far larger than the input buffer streams through in pieces. */
static void
test_proto_big_body_streams(void **state)
{
    struct smtp_proto_cfg cfg = test_cfg;
    struct smtp_proto *p;
    struct smtp_event ev;
    const char *head = TXN "DATA\r\n";
    char line[100];
    uint64_t got = 0;
    int ends = 0;

    (void)state;
    cfg.max_message_size = 10 * 1000 * 1000;
    p = smtp_proto_new(&cfg);
    memset(line, 'x', sizeof(line) - 2);
    memcpy(line + sizeof(line) - 2, "\r\n", 2);
    smtp_proto_feed_copy(p, head, strlen(head));
    for (int i = 0; i <= 50000; i++) {
        const char *chunk = i < 50000 ? line : ".\r\n";
        size_t len = i < 50000 ? sizeof(line) : 3;
        size_t off = 0;

        while (off < len) {
            off += smtp_proto_feed_copy(p, chunk + off, len - off);
            while (smtp_proto_next(p, &ev) != SMTP_EV_NEED_INPUT) {
                if (ev.type == SMTP_EV_MAIL || ev.type == SMTP_EV_RCPT)
                    smtp_proto_answer(p, 250, "2.0.0 Ok");
                if (ev.type == SMTP_EV_BODY)
                    got += ev.len;
                if (ev.type == SMTP_EV_BODY_END) {
                    ends++;
                    smtp_proto_answer(p, 250, "2.0.0 Ok");
                }
            }
        }
    }
    assert_int_equal(ends, 1);
    assert_int_equal(got, 50000ull * sizeof(line));
    smtp_proto_free(p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_table),
        cmocka_unit_test(test_proto_ehlo_keywords),
        cmocka_unit_test(test_proto_starttls),
        cmocka_unit_test(test_proto_after_tls),
        cmocka_unit_test(test_proto_requiretls),
        cmocka_unit_test(test_proto_duplicate_rcpt),
        cmocka_unit_test(test_proto_issue18_dsn_txn),
        cmocka_unit_test(test_proto_wait),
        cmocka_unit_test(test_proto_issue15_helo_answered),
        cmocka_unit_test(test_proto_issue14_answer_one_line),
        cmocka_unit_test(test_proto_received),
        cmocka_unit_test(test_proto_issue14_received_with),
        cmocka_unit_test(test_proto_big_body_streams),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
