/* Unit tests for lmtp_proto in SMTP mode (lmtp_proto_new_smtp): the client
 * that forwards to a primary MX, against a scripted server
 * (lmtp_script.h). Reply texts are as Postfix 3.7 sends them. */
#include "lmtp_script.h"

enum { GREET_FULL, GREET_DATA, GREET_CHUNK, GREET_SIZE, GREET_HELO, QUIT_OK, GREET_CHUNK7, RCPT_A };

enum { S3, S3_8BIT, S1, S_EMPTY, S_UTF8, S_BIG, S_BIG_8BIT, S_VERIFY, S_UTF8_ASCII, S_MIME8 };

/* A body with lines that start with a dot; given in two pieces. */
#define MSG_A        ".dot first\r\nSubject: t\r\n"
#define MSG_B        "\r\n..two\r\n.\r\nend\r\n"
#define MSG          MSG_A MSG_B
#define MSG_LEN      41
#define STUFFED_BODY "..dot first\r\nSubject: t\r\n\r\n...two\r\n..\r\nend\r\n"
#define STUFFED      STUFFED_BODY ".\r\n"

_Static_assert(sizeof(MSG) - 1 == MSG_LEN, "MSG_LEN");

/* Issue 14: an 8-bit MIME message, and what a server without 8BITMIME
 * gets instead (quoted-printable; the leading dot stuffed for DATA). */
#define MIME8                                                                                      \
    "MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n\r\n.Gr\xc3\xbc\xc3\x9f"              \
    "e\r\n"
#define MIME8_LEN 64
#define MIME7                                                                                      \
    "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n.Gr=C3=BC=C3=9Fe\r\n"
#define MIME7_LEN 84
#define NOMIME8   "Subject: x\r\n\r\n\xc3\xbc\r\n" /* 8-bit without MIME-Version */

_Static_assert(sizeof(MIME8) - 1 == MIME8_LEN, "MIME8_LEN");
_Static_assert(sizeof(MIME7) - 1 == MIME7_LEN, "MIME7_LEN");

static const char *const rcpts3[] = {"a@example.test", "nobody@example.test", "b@example.test"};
static const char *const rcpts1[] = {"a@example.test"};

static const struct lmtp_txn txns[] = {
    [S3] = {"s@x.test", rcpts3, 3, MSG_LEN, false, false, false},
    [S3_8BIT] = {"s@x.test", rcpts3, 3, MSG_LEN, true, false, false},
    [S1] = {"", rcpts1, 1, MSG_LEN, false, false, false},
    [S_EMPTY] = {"", rcpts1, 1, 0, false, false, false},
    [S_UTF8] = {"s@x.test", rcpts3, 3, MSG_LEN, false, true, false, true},
    [S_BIG] = {"s@x.test", rcpts1, 1, 5000, false, false, false},
    [S_BIG_8BIT] = {"s@x.test", rcpts1, 1, 5000, true, true, false},
    [S_VERIFY] = {"", rcpts3, 3, 0, false, false, true},
    /* SMTPUTF8 on MAIL, but envelope and header all ASCII (issue 14) */
    [S_UTF8_ASCII] = {"s@x.test", rcpts1, 1, MSG_LEN, false, true, false, false},
    [S_MIME8] = {"s@x.test", rcpts1, 1, MIME8_LEN, true, false, false, false},
};

static struct lmtp_proto *
script_new(void)
{
    return lmtp_proto_new_smtp("mx.test");
}

static const struct lmtp_txn *
script_txn(size_t n)
{
    return &txns[n];
}

/* Postfix's EHLO reply with CHUNKING; the same without it; CHUNKING
 * without PIPELINING; SIZE without 8BITMIME and SMTPUTF8. */
#define CAPS_FULL                                                                                  \
    "250-primary.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-ETRN\r\n"                          \
    "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
#define CAPS_DATA                                                                                  \
    "250-primary.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
#define CAPS_CHUNK "250-primary.test\r\n250-8BITMIME\r\n250 CHUNKING\r\n"
#define CAPS_SIZE  "250-primary.test\r\n250-SIZE 1000\r\n250 ENHANCEDSTATUSCODES\r\n"

#define GREETING "220 primary.test ESMTP Postfix (Debian/GNU)\r\n"

static const struct step greet_full[] = {
    {SRV, GREETING, 0}, {SENT, "EHLO mx.test\r\n", 0},
    {EV, "SEND\n", 0},  {SRV, CAPS_FULL, 0},
    {EV, "READY\n", 0}, {END, NULL, 0},
};

static const struct step greet_data[] = {
    {SRV, GREETING, 0}, {SENT, "EHLO mx.test\r\n", 0},
    {EV, "SEND\n", 0},  {SRV, CAPS_DATA, 0},
    {EV, "READY\n", 0}, {END, NULL, 0},
};

static const struct step greet_chunk[] = {
    {SRV, GREETING, 0}, {SENT, "EHLO mx.test\r\n", 0},
    {EV, "SEND\n", 0},  {SRV, CAPS_CHUNK, 0},
    {EV, "READY\n", 0}, {END, NULL, 0},
};

static const struct step greet_size[] = {
    {SRV, GREETING, 0}, {SENT, "EHLO mx.test\r\n", 0},
    {EV, "SEND\n", 0},  {SRV, CAPS_SIZE, 0},
    {EV, "READY\n", 0}, {END, NULL, 0},
};

/* RFC 5321 3.2: a server without extensions refuses EHLO; HELO works. */
static const struct step greet_helo[] = {
    {SRV, "220 old.test SMTP\r\n", 0},
    {SENT, "EHLO mx.test\r\n", 0},
    {SRV, "502 5.5.2 Error: command not recognized\r\n", 0},
    {SENT, "HELO mx.test\r\n", 0},
    {SRV, "250 old.test\r\n", 0},
    {EV, "SEND\nSEND\nREADY\n", 0},
    {END, NULL, 0},
};

static const struct step quit_ok[] = {
    {QUIT, NULL, 0},     {SENT, "QUIT\r\n", 0}, {EV, "SEND\n", 0}, {SRV, "221 2.0.0 Bye\r\n", 0},
    {EV, "CLOSED\n", 0}, {END, NULL, 0},
};

/* CHUNKING without 8BITMIME */
static const struct step greet_chunk7[] = {
    {SRV, GREETING, 0}, {SENT, "EHLO mx.test\r\n", 0},
    {EV, "SEND\n", 0},  {SRV, "250-primary.test\r\n250 CHUNKING\r\n", 0},
    {EV, "READY\n", 0}, {END, NULL, 0},
};

/* Without PIPELINING: MAIL accepted, RCPT TO:<a@example.test> sent and
 * accepted. */
static const struct step rcpt_a[] = {
    {SRV, "250 2.1.0 Ok\r\n", 0},
    {SENT, "RCPT TO:<a@example.test>\r\n", 0},
    {SRV, "250 2.1.5 Ok\r\n", 0},
    {END, NULL, 0},
};

static const struct step *
sub_script(size_t n)
{
    static const struct step *const subs[] = {
        [GREET_FULL] = greet_full,     [GREET_DATA] = greet_data, [GREET_CHUNK] = greet_chunk,
        [GREET_SIZE] = greet_size,     [GREET_HELO] = greet_helo, [QUIT_OK] = quit_ok,
        [GREET_CHUNK7] = greet_chunk7, [RCPT_A] = rcpt_a,
    };

    return subs[n];
}

#define RCPT3                                                                                      \
    "RCPT TO:<a@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<b@example.test>\r\n"
#define OK_MAIL "250 2.1.0 Ok"
#define OK_RCPT "250 2.1.5 Ok"
#define UNKNOWN                                                                                    \
    "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local "          \
    "recipient table"
#define GREY   "450 4.2.0 <b@example.test>: Recipient address rejected: Greylisted"
#define GO     "354 End data with <CR><LF>.<CR><LF>"
#define QUEUED "250 2.0.0 Ok: queued as 4ZxYq10Lz7z9rs"
#define WRITE  "451 4.3.0 Error: queue file write error"
#define NO_8BIT                                                                                    \
    "554 554 5.6.3 the SMTP server does not offer 8BITMIME and the message cannot be converted "   \
    "to "                                                                                          \
    "7 bit: 8-bit body without MIME-Version"
#define NO_UTF8 "550 550 5.6.7 message needs SMTPUTF8 but the primary does not offer it"
#define TOO_BIG "552 552 5.3.4 message size exceeds the primary's SIZE limit"

/* CHUNKING and PIPELINING: MAIL and RCPTs in one group, BDAT once a RCPT
 * is accepted, the raw body (no stuffing, no dot); the one reply is the
 * outcome of the recipient accepted at RCPT: 550 / 250 / 450. */
static const struct step sc_bdat_pipe[] = {
    {RUN, NULL, GREET_FULL},
    {START, NULL, S3_8BIT},
    {SENT, "MAIL FROM:<s@x.test> SIZE=41 BODY=8BITMIME\r\n" RCPT3, 0},
    {EV, "SEND\n", 0},
    {SRV, OK_MAIL "\r\n" OK_RCPT "\r\n" UNKNOWN "\r\n" GREY "\r\n", 0},
    {SENT, "BDAT 41 LAST\r\n", 0},
    {EV, "RCPT 1 550 " UNKNOWN "\nRCPT 2 450 " GREY "\nSEND\nBODY\n", 0},
    {BODY, MSG_A, 0},
    {LAST, MSG_B, 0},
    {SENT, MSG, 0},
    {EV, "SEND\nBODY\nSEND\n", 0},
    {SRV, QUEUED "\r\n", 0},
    {EV, "RCPT 0 250 " QUEUED "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* PIPELINING without CHUNKING: DATA in the group, dot-stuffed body; the
 * reply after the dot goes to every accepted recipient (451 to both),
 * then 250 / 550 / 450 in a second transaction. */
static const struct step sc_data_pipe[] = {
    {RUN, NULL, GREET_DATA},
    {START, NULL, S3},
    {SENT, "MAIL FROM:<s@x.test> SIZE=41\r\n" RCPT3 "DATA\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, OK_MAIL "\r\n" OK_RCPT "\r\n" UNKNOWN "\r\n" OK_RCPT "\r\n" GO "\r\n", 0},
    {EV, "RCPT 1 550 " UNKNOWN "\nBODY\n", 0},
    {BODY, MSG_A, 0},
    {LAST, MSG_B, 0},
    {SENT, STUFFED, 0},
    {EV, "SEND\nBODY\nSEND\n", 0},
    {SRV, WRITE "\r\n", 0},
    {EV, "RCPT 0 451 " WRITE "\nRCPT 2 451 " WRITE "\nTXN_DONE\nREADY\n", 0},
    {START, NULL, S3},
    {SRV, OK_MAIL "\r\n" OK_RCPT "\r\n" UNKNOWN "\r\n" GREY "\r\n" GO "\r\n", 0},
    {LAST, MSG, 0},
    {SRV, QUEUED "\r\n", 0},
    {SENT, "MAIL FROM:<s@x.test> SIZE=41\r\n" RCPT3 "DATA\r\n" STUFFED, 0},
    {EV,
     "SEND\nRCPT 1 550 " UNKNOWN "\nRCPT 2 450 " GREY "\nBODY\nSEND\nRCPT 0 250 " QUEUED
     "\nTXN_DONE\nREADY\n",
     0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* HELO after 502 to EHLO: no extensions, one command per reply, DATA
 * (after the 8-bit scan of the body: nothing 8-bit, so as it is); an
 * 8-bit message that cannot be converted is then refused without sending
 * a thing. */
static const struct step sc_helo_fallback[] = {
    {RUN, NULL, GREET_HELO},
    {START, NULL, S1},
    {EV, "BODY\n", 0},
    {LAST, MSG, 0},
    {SENT, "MAIL FROM:<>\r\n", 0},
    {RUN, NULL, RCPT_A},
    {SENT, "DATA\r\n", 0},
    {SRV, GO "\r\n", 0},
    {EV, "SEND\nSEND\nSEND\nBODY\n", 0},
    {LAST, MSG, 0},
    {SENT, STUFFED, 0},
    {SRV, QUEUED "\r\n", 0},
    {EV, "SEND\nRCPT 0 250 " QUEUED "\nTXN_DONE\nREADY\n", 0},
    {START, NULL, S3_8BIT},
    {EV, "BODY\n", 0},
    {BODY, "Subject: x\r\n", 0},
    {EV, "BODY\n", 0},
    {LAST, "\r\n\xc3\xbc\r\n", 0},
    {EV, "RCPT 0 " NO_8BIT "\nRCPT 1 " NO_8BIT "\nRCPT 2 " NO_8BIT "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

static const struct step sc_helo_refused[] = {
    {SRV, GREETING, 0},
    {SENT, "EHLO mx.test\r\n", 0},
    {SRV, "500 5.5.1 Command unrecognized\r\n", 0},
    {SENT, "HELO mx.test\r\n", 0},
    {SRV, "554 5.7.1 Go away\r\n", 0},
    {EV,
     "SEND\nSEND\nFAILED SMTP server refused EHLO and HELO (awaiting HELO reply): 554 5.7.1 Go "
     "away\n",
     0},
    {END, NULL, 0},
};

/* A 4xx to EHLO is not "no extensions": the session fails. */
static const struct step sc_ehlo_temp[] = {
    {SRV, GREETING, 0},
    {SENT, "EHLO mx.test\r\n", 0},
    {SRV, "451 4.3.0 Try again later\r\n", 0},
    {EV, "SEND\nFAILED SMTP server refused EHLO (awaiting EHLO reply): 451 4.3.0 Try again later\n",
     0},
    {END, NULL, 0},
};

static const struct step sc_ehlo_421[] = {
    {SRV, GREETING, 0},
    {SENT, "EHLO mx.test\r\n", 0},
    {SRV, "421 4.3.2 Service shutting down\r\n", 0},
    {EV,
     "SEND\nFAILED SMTP server is closing the session (awaiting EHLO reply): 421 4.3.2 Service "
     "shutting down\n",
     0},
    {END, NULL, 0},
};

/* The primary watcher's probe: greeting, EHLO, QUIT; and a QUIT asked for
 * before the EHLO reply. */
static const struct step sc_probe[] = {
    {RUN, NULL, GREET_FULL},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

static const struct step sc_quit_in_ehlo[] = {
    {SRV, GREETING, 0},        {SENT, "EHLO mx.test\r\n", 0}, {QUIT, NULL, 0},
    {EV, "SEND\nCLOSED\n", 0}, {SRV, CAPS_FULL, 0},           {END, NULL, 0},
};

/* SIZE and missing extensions: decided before anything is sent. Over
 * SIZE is permanent and wins over the temporary ones. */
static const struct step sc_size_exceeded[] = {
    {RUN, NULL, GREET_FULL}, {START, NULL, S_BIG}, {EV, "RCPT 0 " TOO_BIG "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},    {END, NULL, 0},
};

static const struct step sc_missing_ext[] = {
    {RUN, NULL, GREET_SIZE},
    {START, NULL, S_BIG_8BIT},
    {EV, "RCPT 0 " TOO_BIG "\nTXN_DONE\nREADY\n", 0},
    {START, NULL, S3_8BIT},
    {EV, "BODY\n", 0},
    {LAST, NOMIME8, 0},
    {EV, "RCPT 0 " NO_8BIT "\nRCPT 1 " NO_8BIT "\nRCPT 2 " NO_8BIT "\nTXN_DONE\nREADY\n", 0},
    {START, NULL, S_UTF8},
    {EV, "RCPT 0 " NO_UTF8 "\nRCPT 1 " NO_UTF8 "\nRCPT 2 " NO_UTF8 "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* Issue 14: 8-bit content to a primary without 8BITMIME goes converted to
 * 7 bit (the body is read twice: the scan, then the send), with the
 * converted size in SIZE=; with DATA ... */
static const struct step sc_issue14_convert_data[] = {
    {RUN, NULL, GREET_SIZE},
    {START, NULL, S_MIME8},
    {EV, "BODY\n", 0},
    {BODY, "MIME-Version: 1.0\r\n", 0},
    {EV, "BODY\n", 0},
    {LAST, MIME8 + 19, 0},
    {SENT, "MAIL FROM:<s@x.test> SIZE=84\r\n", 0},
    {RUN, NULL, RCPT_A},
    {SENT, "DATA\r\n", 0},
    {SRV, GO "\r\n", 0},
    {EV, "SEND\nSEND\nSEND\nBODY\n", 0},
    {LAST, MIME8, 0},
    {SENT,
     "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
     "..Gr=C3=BC=C3=9Fe\r\n.\r\n",
     0},
    {SRV, QUEUED "\r\n", 0},
    {EV, "SEND\nRCPT 0 250 " QUEUED "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* ... and with BDAT, whose size is the converted one. */
static const struct step sc_issue14_convert_bdat[] = {
    {RUN, NULL, GREET_CHUNK7},
    {START, NULL, S_MIME8},
    {EV, "BODY\n", 0},
    {LAST, MIME8, 0},
    {SENT, "MAIL FROM:<s@x.test>\r\n", 0},
    {RUN, NULL, RCPT_A},
    {EV, "SEND\nSEND\nSEND\nBODY\n", 0},
    {BODY, "MIME-Version: 1.0\r\n", 0},
    {EV, "SEND\nBODY\n", 0},
    {LAST, MIME8 + 19, 0},
    {SENT, "BDAT 84 LAST\r\n" MIME7, 0},
    {SRV, QUEUED "\r\n", 0},
    {EV, "SEND\nRCPT 0 250 " QUEUED "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* Issue 14: a message that carried SMTPUTF8 but does not need it goes to
 * a primary without the extension, without the parameter. */
static const struct step sc_issue14_smtputf8_not_needed[] = {
    {RUN, NULL, GREET_CHUNK},
    {START, NULL, S_UTF8_ASCII},
    {SENT, "MAIL FROM:<s@x.test>\r\n", 0},
    {EV, "SEND\n", 0},
    {ABORT, "connection lost", 0},
    {EV, "RCPT 0 451 451 4.4.1 connection lost\nTXN_DONE\nFAILED connection lost\n", 0},
    {END, NULL, 0},
};

/* Callahead to the primary: MAIL FROM:<>, RCPTs, RSET, never BDAT or
 * DATA; each RCPT reply is the outcome. Pipelined, then one by one. */
static const struct step sc_verify_pipe[] = {
    {RUN, NULL, GREET_FULL},
    {START, NULL, S_VERIFY},
    {SENT, "MAIL FROM:<> SIZE=0\r\n" RCPT3 "RSET\r\n", 0},
    {SRV, OK_MAIL "\r\n" OK_RCPT "\r\n" UNKNOWN "\r\n" GREY "\r\n250 2.0.0 Ok\r\n", 0},
    {EV,
     "SEND\nRCPT 0 250 " OK_RCPT "\nRCPT 1 550 " UNKNOWN "\nRCPT 2 450 " GREY "\nTXN_DONE\nREADY\n",
     0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

static const struct step sc_verify_plain[] = {
    {RUN, NULL, GREET_CHUNK},
    {START, NULL, S_VERIFY},
    {SRV, OK_MAIL "\r\n" OK_RCPT "\r\n", 0},
    {SRV, UNKNOWN "\r\n", 0},
    {SRV, GREY "\r\n", 0},
    {SENT, "MAIL FROM:<>\r\n" RCPT3 "RSET\r\n", 0},
    {SRV, "250 2.0.0 Ok\r\n", 0},
    {EV,
     "SEND\nSEND\nRCPT 0 250 " OK_RCPT "\nSEND\nRCPT 1 550 " UNKNOWN "\nSEND\nRCPT 2 450 " GREY
     "\nTXN_DONE\nSEND\nREADY\n",
     0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* CHUNKING without PIPELINING: BDAT after the RCPT reply; empty pieces;
 * an empty body is "BDAT 0 LAST" alone (RFC 3030 2). */
static const struct step sc_bdat_plain[] = {
    {RUN, NULL, GREET_CHUNK},
    {START, NULL, S1},
    {SRV, OK_MAIL "\r\n", 0},
    {SRV, OK_RCPT "\r\n", 0},
    {SENT, "MAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nBDAT 41 LAST\r\n", 0},
    {EV, "SEND\nSEND\nSEND\nBODY\n", 0},
    {BODY, MSG_A, 0},
    {BODY, "", 0},
    {LAST, MSG_B, 0},
    {SENT, MSG, 0},
    {SRV, QUEUED "\r\n", 0},
    {EV, "SEND\nBODY\nBODY\nSEND\nRCPT 0 250 " QUEUED "\nTXN_DONE\nREADY\n", 0},
    {START, NULL, S_EMPTY},
    {SRV, OK_MAIL "\r\n" OK_RCPT "\r\n", 0},
    {LAST, "", 0},
    {SRV, QUEUED "\r\n", 0},
    {SENT, "MAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nBDAT 0 LAST\r\n", 0},
    {EV, "SEND\nSEND\nSEND\nBODY\nRCPT 0 250 " QUEUED "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* No recipient accepted: no BDAT, RSET; MAIL refused in the group: the
 * 503s to the RCPTs are eaten, then RSET. */
#define NOMAIL "503 5.5.1 Error: need MAIL command"
#define NOROOM "452 4.3.1 Insufficient system storage"

static const struct step sc_bdat_none_accepted[] = {
    {RUN, NULL, GREET_FULL},
    {START, NULL, S3},
    {SENT, "MAIL FROM:<s@x.test> SIZE=41\r\n" RCPT3, 0},
    {SRV, OK_MAIL "\r\n550 5.1.1 a\r\n" UNKNOWN "\r\n" GREY "\r\n", 0},
    {SENT, "RSET\r\n", 0},
    {EV,
     "SEND\nRCPT 0 550 550 5.1.1 a\nRCPT 1 550 " UNKNOWN "\nRCPT 2 450 " GREY "\nTXN_DONE\nSEND\n",
     0},
    {SRV, "250 2.0.0 Ok\r\n", 0},
    {EV, "READY\n", 0},
    {START, NULL, S3},
    {SRV, NOROOM "\r\n" NOMAIL "\r\n" NOMAIL "\r\n" NOMAIL "\r\n250 2.0.0 Ok\r\n", 0},
    {SENT, "MAIL FROM:<s@x.test> SIZE=41\r\n" RCPT3 "RSET\r\n", 0},
    {EV,
     "SEND\nRCPT 0 452 " NOROOM "\nRCPT 1 452 " NOROOM "\nRCPT 2 452 " NOROOM
     "\nTXN_DONE\nSEND\nREADY\n",
     0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* The reply to BDAT LAST refuses the message: every accepted recipient. */
#define SPAM "554 5.7.1 Message rejected as spam"

static const struct step sc_bdat_refused[] = {
    {RUN, NULL, GREET_FULL},
    {START, NULL, S3},
    {SRV, OK_MAIL "\r\n" OK_RCPT "\r\n" OK_RCPT "\r\n" GREY "\r\n", 0},
    {LAST, MSG, 0},
    {SRV, SPAM "\r\n", 0},
    {SENT, "MAIL FROM:<s@x.test> SIZE=41\r\n" RCPT3 "BDAT 41 LAST\r\n" MSG, 0},
    {EV,
     "SEND\nRCPT 2 450 " GREY "\nSEND\nBODY\nSEND\nRCPT 0 554 " SPAM "\nRCPT 1 554 " SPAM
     "\nTXN_DONE\nREADY\n",
     0},
    {END, NULL, 0},
};

/* The glue's body is not txn.size octets: short at the end (BDAT), long
 * in the middle (DATA). The session fails; later calls do nothing. */
#define MISMATCH "message body does not match its size of 41 octets"

static const struct step sc_size_mismatch_short[] = {
    {RUN, NULL, GREET_FULL},
    {START, NULL, S1},
    {SRV, OK_MAIL "\r\n" OK_RCPT "\r\n", 0},
    {BODY, MSG_A, 0},
    {LAST, "short", 0},
    {LAST, "ignored", 0},
    {SENT, "MAIL FROM:<> SIZE=41\r\nRCPT TO:<a@example.test>\r\nBDAT 41 LAST\r\n" MSG_A, 0},
    {EV,
     "SEND\nSEND\nBODY\nSEND\nBODY\nRCPT 0 451 451 4.3.0 " MISMATCH "\nTXN_DONE\nFAILED " MISMATCH
     "\n",
     0},
    {END, NULL, 0},
};

static const struct step sc_size_mismatch_long[] = {
    {RUN, NULL, GREET_DATA},
    {START, NULL, S1},
    {SRV, OK_MAIL "\r\n" OK_RCPT "\r\n" GO "\r\n", 0},
    {BODY, MSG, 0},
    {BODY, "x", 0},
    {SENT, "MAIL FROM:<> SIZE=41\r\nRCPT TO:<a@example.test>\r\nDATA\r\n" STUFFED_BODY, 0},
    {EV,
     "SEND\nBODY\nSEND\nBODY\nRCPT 0 451 451 4.3.0 " MISMATCH "\nTXN_DONE\nFAILED " MISMATCH "\n",
     0},
    {LAST, "", 0},
    {END, NULL, 0},
};

/* Bytes sent for txn S1 when the body is given one octet at a time (and
 * the replies fed one octet at a time): identical to one piece. */
static void
body_octets(const char *caps, const char *go, const char *want)
{
    struct ctx c = {.step = 1};

    c.sent = malloc(SENT_MAX + 1);
    assert_non_null(c.sent);
    c.p = lmtp_proto_new_smtp("mx.test");
    srv(&c, GREETING);
    srv(&c, caps);
    lmtp_proto_start(c.p, &txns[S1]);
    drain(&c);
    srv(&c, go);
    for (size_t i = 0; i < MSG_LEN; i++) {
        lmtp_proto_body(c.p, &MSG[i], 1, i + 1 == MSG_LEN);
        drain(&c);
    }
    expect_sent(&c, want);
    c.elen = 0;
    srv(&c, QUEUED "\r\n");
    expect_ev(&c, "RCPT 0 250 " QUEUED "\nTXN_DONE\nREADY\n");
    lmtp_proto_free(c.p);
    free(c.sent);
}

static void
test_smtp_body_octets(void **state)
{
    (void)state;
    body_octets(CAPS_FULL, OK_MAIL "\r\n" OK_RCPT "\r\n",
                "EHLO mx.test\r\nMAIL FROM:<> SIZE=41\r\nRCPT TO:<a@example.test>\r\n"
                "BDAT 41 LAST\r\n" MSG);
    body_octets(
        CAPS_DATA, OK_MAIL "\r\n" OK_RCPT "\r\n" GO "\r\n",
        "EHLO mx.test\r\nMAIL FROM:<> SIZE=41\r\nRCPT TO:<a@example.test>\r\nDATA\r\n" STUFFED);
}

/* The session is not ready before EHLO is answered: the text says SMTP. */
static void
test_smtp_not_ready(void **state)
{
    struct lmtp_proto *p = lmtp_proto_new_smtp("mx.test");
    struct lmtp_event e;

    (void)state;
    lmtp_proto_start(p, &txns[S1]);
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_RCPT);
    assert_int_equal(e.code, 451);
    assert_string_equal(e.text, "451 4.4.2 SMTP session not ready");
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_TXN_DONE);
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_NONE);
    lmtp_proto_free(p);
}

/* STARTTLS (RFC 3207) as the forwarding client asks for it. */
#define CAPS_TLS "250-primary.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n"

static struct ctx
tls_ctx(bool required)
{
    struct ctx c = {.step = 0};

    c.sent = malloc(SENT_MAX + 1);
    assert_non_null(c.sent);
    c.p = lmtp_proto_new_smtp("mx.test");
    lmtp_proto_set_starttls(c.p, required);
    srv(&c, GREETING);
    return c;
}

static void
tls_ctx_free(struct ctx *c)
{
    lmtp_proto_free(c->p);
    free(c->sent);
}

/* Offered: STARTTLS, and after 220 the feed stops at that reply so the
 * glue can drop what the server injected behind it; then EHLO again, and
 * the capabilities are the ones given over TLS only. */
static void
test_starttls_offered(void **state)
{
    static const char after[] = "220 2.0.0 Ready\r\n250 injected\r\n";
    struct ctx c = tls_ctx(true);
    size_t used;

    (void)state;
    srv(&c, CAPS_TLS);
    expect_sent(&c, "EHLO mx.test\r\nSTARTTLS\r\n");
    expect_ev(&c, "SEND\nSEND\n");
    used = lmtp_proto_feed(c.p, after, sizeof(after) - 1);
    assert_int_equal(used, strlen("220 2.0.0 Ready\r\n"));
    drain(&c);
    expect_ev(&c, "STARTTLS\n");
    lmtp_proto_tls_up(c.p, false);
    drain(&c);
    expect_sent(&c, "EHLO mx.test\r\n");
    srv(&c, "250-primary.test\r\n250 SIZE 1000\r\n");
    expect_ev(&c, "SEND\nREADY\n");
    /* 8BITMIME was offered only in plain text: it no longer counts */
    lmtp_proto_start(c.p, &txns[S3_8BIT]);
    drain(&c);
    expect_ev(&c, "BODY\n");
    lmtp_proto_body(c.p, NOMIME8, strlen(NOMIME8), true);
    drain(&c);
    expect_ev(&c, "RCPT 0 " NO_8BIT "\nRCPT 1 " NO_8BIT "\nRCPT 2 " NO_8BIT "\nTXN_DONE\nREADY\n");
    tls_ctx_free(&c);
}

/* REQUIRETLS (RFC 8689 4.2.1): to a server after STARTTLS; caps: its EHLO
 * reply over TLS; auth: the certificate was authenticated. */
static struct ctx
rtls_ctx(const char *caps, bool auth)
{
    struct ctx c = tls_ctx(true);

    srv(&c, CAPS_TLS);
    srv(&c, "220 2.0.0 Ready\r\n");
    lmtp_proto_tls_up(c.p, auth);
    drain(&c);
    srv(&c, caps);
    c.slen = 0;
    c.elen = 0;
    return c;
}

/* Sent with MAIL ... REQUIRETLS only over authenticated TLS to a server
 * that offers it; otherwise every recipient gets 5.7.30 and nothing is
 * sent. */
static void
test_requiretls(void **state)
{
    struct lmtp_txn t = txns[S1];
    struct ctx c;

    (void)state;
    t.requiretls = true;
    c = rtls_ctx("250-primary.test\r\n250-8BITMIME\r\n250 REQUIRETLS\r\n", true);
    lmtp_proto_start(c.p, &t);
    drain(&c);
    expect_sent(&c, "MAIL FROM:<> REQUIRETLS\r\n");
    tls_ctx_free(&c);

    c = rtls_ctx("250-primary.test\r\n250 8BITMIME\r\n", true);
    lmtp_proto_start(c.p, &t);
    drain(&c);
    expect_sent(&c, "");
    expect_ev(&c, "RCPT 0 550 550 5.7.30 REQUIRETLS support required: the next hop does not offer "
                  "REQUIRETLS\nTXN_DONE\nREADY\n");
    tls_ctx_free(&c);

    c = rtls_ctx("250-primary.test\r\n250-8BITMIME\r\n250 REQUIRETLS\r\n", false);
    lmtp_proto_start(c.p, &t);
    drain(&c);
    expect_sent(&c, "");
    expect_ev(&c, "RCPT 0 550 550 5.7.30 REQUIRETLS support required: the next hop's certificate "
                  "is not authenticated (no DANE, MTA-STS or tls = verify)\nTXN_DONE\nREADY\n");
    tls_ctx_free(&c);
}

/* required: no STARTTLS in EHLO, a refused STARTTLS, or HELO only each
 * fail the session with 4.7.4; nothing goes in plain text. */
static void
test_starttls_required(void **state)
{
    struct ctx c = tls_ctx(true);

    (void)state;
    srv(&c, CAPS_DATA);
    expect_sent(&c, "EHLO mx.test\r\n");
    expect_ev(&c, "SEND\nFAILED 4.7.4 TLS required but the SMTP server does not offer "
                  "STARTTLS\n");
    tls_ctx_free(&c);

    c = tls_ctx(true);
    srv(&c, CAPS_TLS);
    srv(&c, "454 4.7.0 TLS not available due to local problem\r\n");
    expect_sent(&c, "EHLO mx.test\r\nSTARTTLS\r\n");
    expect_ev(&c, "SEND\nSEND\nFAILED 4.7.4 TLS required but the SMTP server refused "
                  "STARTTLS\n");
    tls_ctx_free(&c);

    c = tls_ctx(true);
    srv(&c, "502 5.5.2 Error: command not recognized\r\n");
    srv(&c, "250 old.test\r\n");
    expect_ev(&c, "SEND\nSEND\nFAILED 4.7.4 TLS required but the SMTP server has no "
                  "EHLO, so no STARTTLS\n");
    tls_ctx_free(&c);
}

/* opportunistic: not offered or refused, the session goes on in plain
 * text with the capabilities it was given. */
static void
test_starttls_opportunistic(void **state)
{
    struct ctx c = tls_ctx(false);

    (void)state;
    srv(&c, CAPS_DATA);
    expect_sent(&c, "EHLO mx.test\r\n");
    expect_ev(&c, "SEND\nREADY\n");
    tls_ctx_free(&c);

    c = tls_ctx(false);
    srv(&c, CAPS_TLS);
    srv(&c, "454 4.7.0 TLS not available due to local problem\r\n");
    expect_sent(&c, "EHLO mx.test\r\nSTARTTLS\r\n");
    expect_ev(&c, "SEND\nSEND\nREADY\n");
    tls_ctx_free(&c);

    /* QUIT while the handshake runs: the session just closes */
    c = tls_ctx(false);
    srv(&c, CAPS_TLS);
    srv(&c, "220 2.0.0 Ready\r\n");
    lmtp_proto_quit(c.p);
    drain(&c);
    expect_ev(&c, "SEND\nSEND\nSTARTTLS\nCLOSED\n");
    tls_ctx_free(&c);
}

/* Issue 18: what the client sends of the RFC 3461 parameters. Feeds srv
 * and returns what was sent since (SEND events, concatenated). */
static void
dsn_feed(struct lmtp_proto *p, const char *srv, char *out, size_t size)
{
    struct lmtp_event ev;
    size_t len = strlen(out);

    if (srv != NULL)
        assert_int_equal(lmtp_proto_feed(p, srv, strlen(srv)), strlen(srv));
    while (lmtp_proto_next(p, &ev) != LMTP_EV_NONE) {
        if (ev.type == LMTP_EV_SEND) {
            assert_true(len + ev.len < size);
            memcpy(out + len, ev.data, ev.len);
            len += ev.len;
            out[len] = '\0';
        }
    }
}

static void
dsn_case(bool smtp, const char *greeting, const char *caps, const char *want_mail,
         const char *want_rcpts)
{
    static const char *const rcpts[] = {"a@example.test", "b@example.test"};
    static const unsigned notify[] = {DSN_NOTIFY_SUCCESS | DSN_NOTIFY_DELAY, 0};
    static const char *const orcpt[] = {"rfc822;o+x@example.test", NULL};
    struct lmtp_txn t = {.sender = "s@x.test",
                         .rcpts = rcpts,
                         .nrcpts = 2,
                         .size = 10,
                         .dsn = true,
                         .ret = DSN_RET_HDRS,
                         .envid = "E+1",
                         .notify = notify,
                         .orcpt = orcpt};
    struct lmtp_proto *p = smtp ? lmtp_proto_new_smtp("mx.test") : lmtp_proto_new("mx.test");
    char sent[2048] = "";

    dsn_feed(p, greeting, sent, sizeof(sent));
    dsn_feed(p, caps, sent, sizeof(sent));
    sent[0] = '\0';
    lmtp_proto_start(p, &t);
    dsn_feed(p, NULL, sent, sizeof(sent));
    if (strstr(sent, "RCPT") == NULL) /* no PIPELINING: after MAIL's reply */
        dsn_feed(p, "250 2.1.0 Ok\r\n", sent, sizeof(sent));
    if (strstr(sent, "b@example.test") == NULL)
        dsn_feed(p, "250 2.1.5 Ok\r\n", sent, sizeof(sent));
    print_message("sent: %s\n", sent);
    assert_non_null(strstr(sent, want_mail));
    assert_non_null(strstr(sent, want_rcpts));
    lmtp_proto_free(p);
}

static void
test_issue18_dsn_params(void **state)
{
    (void)state;
    /* a primary with DSN gets everything; ORCPT built for b */
    dsn_case(true, GREETING, "250-primary.test\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 DSN\r\n",
             "MAIL FROM:<s@x.test> RET=HDRS ENVID=E+2B1\r\n",
             "RCPT TO:<a@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;o+2Bx@example.test\r\n"
             "RCPT TO:<b@example.test> ORCPT=rfc822;b@example.test\r\n");
    /* one without DSN: nothing */
    dsn_case(true, GREETING, "250-primary.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n",
             "MAIL FROM:<s@x.test>\r\n",
             "RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n");
    /* Dovecot's LMTP: ORCPT only (it refuses the others, offers no DSN) */
    dsn_case(false, "220 mailbox.test Dovecot (Debian) ready.\r\n",
             "250-mailbox.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n", "MAIL FROM:<s@x.test>\r\n",
             "RCPT TO:<a@example.test> ORCPT=rfc822;o+2Bx@example.test\r\n"
             "RCPT TO:<b@example.test> ORCPT=rfc822;b@example.test\r\n");
    /* another LMTP server without DSN: nothing */
    dsn_case(false, "220 lmtp.test ready\r\n",
             "250-lmtp.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n", "MAIL FROM:<s@x.test>\r\n",
             "RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n");
}

/* Issue 18 section 3: XFORWARD before MAIL, only what the server lists. */
#define XF_CAPS(pipe)                                                                              \
    "250-primary.test\r\n250-8BITMIME\r\n" pipe                                                    \
    "250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n"

static void
xf_case(const char *caps, const struct lmtp_xforward *x, const char *const *replies,
        const char *want, bool verify)
{
    static const char *const rcpts[] = {"a@example.test"};
    struct lmtp_txn t = {.sender = "s@x.test",
                         .rcpts = rcpts,
                         .nrcpts = 1,
                         .size = 10,
                         .verify_only = verify,
                         .xforward = x};
    struct lmtp_proto *p = lmtp_proto_new_smtp("mx.test");
    char sent[4096] = "";

    dsn_feed(p, GREETING, sent, sizeof(sent));
    dsn_feed(p, caps, sent, sizeof(sent));
    sent[0] = '\0';
    lmtp_proto_start(p, &t);
    dsn_feed(p, NULL, sent, sizeof(sent));
    for (size_t i = 0; replies != NULL && replies[i] != NULL; i++)
        dsn_feed(p, replies[i], sent, sizeof(sent));
    print_message("sent: %s\n", sent);
    assert_string_equal(sent, want);
    lmtp_proto_free(p);
}

static void
test_issue18_xforward(void **state)
{
    static const struct lmtp_xforward x = {.name = NULL,
                                           .addr = "192.0.2.7",
                                           .port = "40123",
                                           .helo = "client+helo.test",
                                           .proto = "ESMTP",
                                           .ident = "01QID"};
    static const char *const ok1[] = {"250 2.0.0 Ok\r\n", NULL};
    static const char *const ok_plain[] = {"250 2.0.0 Ok\r\n", "250 2.1.0 Ok\r\n", NULL};
    static const char *const refused[] = {"550 5.7.0 Error: insufficient authorization\r\n", NULL};
    char hugehelo[400];
    struct lmtp_xforward big = x;

    (void)state;
    /* pipelined: XFORWARD, MAIL, RCPT, DATA in one group; xtext; NAME unknown */
    xf_case(XF_CAPS("250-PIPELINING\r\n"), &x, NULL,
            "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=40123 PROTO=ESMTP "
            "HELO=client+2Bhelo.test IDENT=01QID SOURCE=REMOTE\r\n"
            "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n",
            false);
    /* without PIPELINING: MAIL waits for XFORWARD's reply */
    xf_case(XF_CAPS(""), &x, ok_plain,
            "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=40123 PROTO=ESMTP "
            "HELO=client+2Bhelo.test IDENT=01QID SOURCE=REMOTE\r\n"
            "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.test>\r\n",
            false);
    /* only the attributes listed */
    xf_case("250-primary.test\r\n250-8BITMIME\r\n250 XFORWARD ADDR helo\r\n", &x, ok1,
            "XFORWARD ADDR=192.0.2.7 HELO=client+2Bhelo.test\r\nMAIL FROM:<s@x.test>\r\n", false);
    /* no XFORWARD offered, a callahead, or none given: never sent */
    xf_case("250-primary.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n", &x, NULL,
            "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n", false);
    xf_case(XF_CAPS("250-PIPELINING\r\n"), &x, NULL,
            "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.test>\r\nRSET\r\n", true);
    xf_case(XF_CAPS("250-PIPELINING\r\n"), NULL, NULL,
            "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n", false);
    /* refused without PIPELINING: no MAIL, RSET */
    xf_case(XF_CAPS(""), &x, refused,
            "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=40123 PROTO=ESMTP "
            "HELO=client+2Bhelo.test IDENT=01QID SOURCE=REMOTE\r\nRSET\r\n",
            false);
    /* a long HELO (all '+', tripled by xtext) splits the command under 512 octets */
    memset(hugehelo, '+', sizeof(hugehelo) - 1);
    hugehelo[sizeof(hugehelo) - 1] = '\0';
    big.helo = hugehelo;
    {
        struct lmtp_proto *p = lmtp_proto_new_smtp("mx.test");
        static const char *const rcpts[] = {"a@example.test"};
        struct lmtp_txn t = {
            .sender = "", .rcpts = rcpts, .nrcpts = 1, .size = 1, .xforward = &big};
        char sent[4096] = "";
        const char *l = sent;
        size_t lines = 0;

        dsn_feed(p, GREETING, sent, sizeof(sent));
        dsn_feed(p, XF_CAPS("250-PIPELINING\r\n"), sent, sizeof(sent));
        sent[0] = '\0';
        lmtp_proto_start(p, &t);
        dsn_feed(p, NULL, sent, sizeof(sent));
        for (const char *e; (e = strstr(l, "\r\n")) != NULL && strncmp(l, "XFORWARD", 8) == 0;
             l = e + 2, lines++)
            assert_true((size_t)(e + 2 - l) <= 512);
        assert_int_equal(lines, 2);
        assert_non_null(strstr(sent, " SOURCE=REMOTE\r\nMAIL FROM:<>"));
        lmtp_proto_free(p);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        SCENARIO(bdat_pipe),
        SCENARIO(data_pipe),
        SCENARIO(helo_fallback),
        SCENARIO(helo_refused),
        SCENARIO(ehlo_temp),
        SCENARIO(ehlo_421),
        SCENARIO(probe),
        SCENARIO(quit_in_ehlo),
        SCENARIO(size_exceeded),
        SCENARIO(missing_ext),
        SCENARIO(issue14_smtputf8_not_needed),
        SCENARIO(issue14_convert_data),
        SCENARIO(issue14_convert_bdat),
        SCENARIO(verify_pipe),
        SCENARIO(verify_plain),
        SCENARIO(bdat_plain),
        SCENARIO(bdat_none_accepted),
        SCENARIO(bdat_refused),
        SCENARIO(size_mismatch_short),
        SCENARIO(size_mismatch_long),
        cmocka_unit_test(test_smtp_body_octets),
        cmocka_unit_test(test_smtp_not_ready),
        cmocka_unit_test(test_starttls_offered),
        cmocka_unit_test(test_requiretls),
        cmocka_unit_test(test_starttls_required),
        cmocka_unit_test(test_starttls_opportunistic),
        cmocka_unit_test(test_issue18_dsn_params),
        cmocka_unit_test(test_issue18_xforward),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
