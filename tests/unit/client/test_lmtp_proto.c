/* Unit tests for lmtp_proto: the LMTP client against a scripted server
 * (lmtp_script.h). Reply texts are as Dovecot 2.3 LMTP sends them. */
#include "lmtp_script.h"

enum { GREET_PIPE, GREET_PLAIN, QUIT_OK, SCAN7 };

enum { T3, T1, TUTF8, TBIG, TCTRL, T0, TVERIFY, TUTF8_ASCII };

static const char *const rcpts3[] = {"a@example.test", "nobody@example.test", "b@example.test"};
static const char *const rcpts1[] = {"a@example.test"};
static const char *const rcpts_ctrl[] = {"a@example.test", "x\r\nDATA@example.test"};

static const struct lmtp_txn txns[] = {
    [T3] = {"s@x.test", rcpts3, 3, 20, true, false, false},
    [T1] = {"", rcpts1, 1, 10, false, false, false},
    [TUTF8] = {"s@x.test", rcpts3, 3, 20, false, true, false, true},
    [TBIG] = {"s@x.test", rcpts1, 1, 5000, false, false, false},
    [TCTRL] = {"s@x.test", rcpts_ctrl, 2, 10, false, false, false},
    [T0] = {"s@x.test", NULL, 0, 10, false, false, false},
    [TVERIFY] = {"", rcpts3, 3, 0, false, false, true},
    /* SMTPUTF8 on MAIL, but envelope and header all ASCII (issue 14) */
    [TUTF8_ASCII] = {"s@x.test", rcpts1, 1, 20, false, true, false, false},
};

static struct lmtp_proto *
script_new(void)
{
    return lmtp_proto_new("mx.test");
}

static const struct lmtp_txn *
script_txn(size_t n)
{
    return &txns[n];
}

/* Dovecot's LHLO reply (captured), with SIZE and SMTPUTF8 added */
#define CAPS_PIPE                                                                                  \
    "250-vm\r\n250-8BITMIME\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 1000\r\n"       \
    "250-SMTPUTF8\r\n250 PIPELINING\r\n"
#define CAPS_PLAIN "250-vm\r\n250 ENHANCEDSTATUSCODES\r\n"

static const struct step greet_pipe[] = {
    {SRV, "220 vm Dovecot (Debian) ready.\r\n", 0},
    {SENT, "LHLO mx.test\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, CAPS_PIPE, 0},
    {EV, "READY\n", 0},
    {END, NULL, 0},
};

static const struct step greet_plain[] = {
    {SRV, "220 vm Dovecot (Debian) ready.\r\n", 0},
    {SENT, "LHLO mx.test\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, CAPS_PLAIN, 0},
    {EV, "READY\n", 0},
    {END, NULL, 0},
};

#define MAIL3_PIPE                                                                                 \
    "MAIL FROM:<s@x.test> SIZE=20 BODY=8BITMIME\r\nRCPT TO:<a@example.test>\r\n"                   \
    "RCPT TO:<nobody@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
#define NOBODY  "550 5.1.1 <nobody@example.test> User doesn't exist: nobody@example.test"
#define SAVED_A "250 2.0.0 <a@example.test> v97qKiuIA2vWZQAAg+zDdQ Saved"
#define FULL_B  "452 4.2.2 <b@example.test> Mailbox is full"

static const struct step quit_ok[] = {
    {QUIT, NULL, 0},     {SENT, "QUIT\r\n", 0}, {EV, "SEND\n", 0}, {SRV, "221 2.0.0 Bye\r\n", 0},
    {EV, "CLOSED\n", 0}, {END, NULL, 0},
};

/* Issue 14: a server without 8BITMIME (CAPS_PLAIN) gets nothing before
 * the body was scanned for 8-bit octets; a 7-bit one is then sent as is. */
static const struct step scan7[] = {
    {EV, "BODY\n", 0},
    {LAST, "Subject: t\r\n\r\n7-bit\r\n", 0},
    {END, NULL, 0},
};

static const struct step *
sub_script(size_t n)
{
    static const struct step *const subs[] = {
        [GREET_PIPE] = greet_pipe,
        [GREET_PLAIN] = greet_plain,
        [QUIT_OK] = quit_ok,
        [SCAN7] = scan7,
    };

    return subs[n];
}

/* PIPELINING, three recipients: one refused at RCPT, the others get 250
 * and 452 after the dot; then a second transaction on the same session
 * (null sender, no BODY=), then QUIT. */
static const struct step sc_pipelining[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T3},
    {SENT, MAIL3_PIPE, 0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n" NOBODY "\r\n250 2.1.5 OK\r\n354 OK\r\n", 0},
    {EV, "RCPT 1 550 " NOBODY "\nBODY\n", 0},
    {BODY, "Subject: t\r\n\r\n", 0},
    {SENT, "Subject: t\r\n\r\n", 0},
    {EV, "SEND\nBODY\n", 0},
    {LAST, "hi\r\n", 0},
    {SENT, "hi\r\n.\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, SAVED_A "\r\n" FULL_B "\r\n", 0},
    {EV, "RCPT 0 250 " SAVED_A "\nRCPT 2 452 " FULL_B "\nTXN_DONE\nREADY\n", 0},
    {START, NULL, T1},
    {SENT, "MAIL FROM:<> SIZE=10\r\nRCPT TO:<a@example.test>\r\nDATA\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 OK\r\n", 0},
    {EV, "BODY\n", 0},
    {LAST, "x", 0},
    {SENT, "x\r\n.\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, SAVED_A "\r\n", 0},
    {EV, "RCPT 0 250 " SAVED_A "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* Without PIPELINING: one command, one reply. */
static const struct step sc_no_pipelining[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, T3},
    {RUN, NULL, SCAN7},
    {SENT, "MAIL FROM:<s@x.test>\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.1.0 OK\r\n", 0},
    {SENT, "RCPT TO:<a@example.test>\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.1.5 OK\r\n", 0},
    {SENT, "RCPT TO:<nobody@example.test>\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, NOBODY "\r\n", 0},
    {SENT, "RCPT TO:<b@example.test>\r\n", 0},
    {EV, "RCPT 1 550 " NOBODY "\nSEND\n", 0},
    {SRV, "250 2.1.5 OK\r\n", 0},
    {SENT, "DATA\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "354 OK\r\n", 0},
    {EV, "BODY\n", 0},
    {LAST, "body\r\n", 0},
    {SENT, "body\r\n.\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, SAVED_A "\r\n", 0},
    {EV, "RCPT 0 250 " SAVED_A "\n", 0},
    {SRV, FULL_B "\r\n", 0},
    {EV, "RCPT 2 452 " FULL_B "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* MAIL refused in a pipelined group: its reply is every recipient's; the
 * 503s to RCPT and DATA are eaten, then RSET (Dovecot's replies). */
static const struct step sc_mail_refused_pipe[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T3},
    {SENT, MAIL3_PIPE, 0},
    {EV, "SEND\n", 0},
    {SRV,
     "555 5.5.4 Unsupported parameters\r\n503 5.5.0 MAIL needed first\r\n"
     "503 5.5.0 MAIL needed first\r\n503 5.5.0 MAIL needed first\r\n"
     "503 5.5.0 MAIL needed first\r\n",
     0},
    {SENT, "RSET\r\n", 0},
    {EV,
     "RCPT 0 555 555 5.5.4 Unsupported parameters\nRCPT 1 555 555 5.5.4 Unsupported "
     "parameters\nRCPT 2 555 555 5.5.4 Unsupported parameters\nTXN_DONE\nSEND\n",
     0},
    {SRV, "250 2.0.0 OK\r\n", 0},
    {EV, "READY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

static const struct step sc_mail_refused_plain[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, T1},
    {RUN, NULL, SCAN7},
    {SENT, "MAIL FROM:<>\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "451 4.3.0 Temporary failure\r\n", 0},
    {SENT, "RSET\r\n", 0},
    {EV, "RCPT 0 451 451 4.3.0 Temporary failure\nTXN_DONE\nSEND\n", 0},
    {SRV, "250 2.0.0 OK\r\n", 0},
    {EV, "READY\n", 0},
    {END, NULL, 0},
};

/* Every RCPT refused: DATA gets 503 (pipelined) or is not sent. */
static const struct step sc_all_refused_pipe[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T3},
    {SENT, MAIL3_PIPE, 0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.1.0 OK\r\n550 5.1.1 a\r\n" NOBODY "\r\n450 4.2.1 b\r\n", 0},
    {EV, "RCPT 0 550 550 5.1.1 a\nRCPT 1 550 " NOBODY "\nRCPT 2 450 450 4.2.1 b\nTXN_DONE\n", 0},
    {SRV, "503 5.5.0 No valid recipients\r\n", 0},
    {SENT, "RSET\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.0.0 OK\r\n", 0},
    {EV, "READY\n", 0},
    {END, NULL, 0},
};

static const struct step sc_all_refused_plain[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, T1},
    {RUN, NULL, SCAN7},
    {SENT, "MAIL FROM:<>\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.1.0 OK\r\n", 0},
    {SENT, "RCPT TO:<a@example.test>\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "550 5.1.1 <a@example.test> User doesn't exist\r\n", 0},
    {SENT, "RSET\r\n", 0},
    {EV, "RCPT 0 550 550 5.1.1 <a@example.test> User doesn't exist\nTXN_DONE\nSEND\n", 0},
    {SRV, "250 2.0.0 OK\r\n", 0},
    {EV, "READY\n", 0},
    {END, NULL, 0},
};

/* A 354 with no recipient accepted: what follows the dot is unknowable. */
static const struct step sc_354_without_rcpt[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T1},
    {SENT, "MAIL FROM:<> SIZE=10\r\nRCPT TO:<a@example.test>\r\nDATA\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.1.0 OK\r\n550 5.1.1 no\r\n354 go ahead\r\n250 2.0.0 OK\r\n", 0},
    {EV,
     "RCPT 0 550 550 5.1.1 no\nTXN_DONE\nFAILED LMTP server gave an impossible reply to DATA "
     "(awaiting MAIL/RCPT/DATA reply): 354 go ahead\n",
     0},
    {END, NULL, 0},
};

/* DATA refused after some RCPTs were accepted: their outcome is DATA's. */
static const struct step sc_data_refused[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T3},
    {SENT, MAIL3_PIPE, 0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n" NOBODY "\r\n250 2.1.5 OK\r\n451 4.3.0 Disk full\r\n",
     0},
    {SENT, "RSET\r\n", 0},
    {EV,
     "RCPT 1 550 " NOBODY "\nRCPT 0 451 451 4.3.0 Disk full\nRCPT 2 451 451 4.3.0 Disk full\n"
     "TXN_DONE\nSEND\n",
     0},
    {SRV, "250 2.0.0 OK\r\n", 0},
    {EV, "READY\n", 0},
    {END, NULL, 0},
};

/* RFC 5321 4.5.2 transparency, with line starts tracked across chunks;
 * a line starts after any LF (Dovecot ends the data at "\n.\r\n"). */
static const struct step sc_dotstuff[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T1},
    {SENT, "MAIL FROM:<> SIZE=10\r\nRCPT TO:<a@example.test>\r\nDATA\r\n", 0},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 OK\r\n", 0},
    {EV, "SEND\nBODY\n", 0},
    {BODY, ".first\r\n", 0},
    {BODY, "a\r\n", 0},
    {BODY, ".b\r\n", 0},
    {BODY, "x\r\n.\r\ny", 0},
    {BODY, ".no\r", 0},
    {BODY, "\n.", 0},
    {BODY, "", 0},
    {BODY, ".\n.\r\nmid.dle\r\n", 0},
    {LAST, "end", 0},
    {SENT, "..first\r\na\r\n..b\r\nx\r\n..\r\ny.no\r\n...\n..\r\nmid.dle\r\nend\r\n.\r\n", 0},
    {EV,
     "SEND\nBODY\nSEND\nBODY\nSEND\nBODY\nSEND\nBODY\nSEND\nBODY\nSEND\nBODY\nBODY\nSEND\n"
     "BODY\nSEND\n",
     0},
    {SRV, SAVED_A "\r\n", 0},
    {EV, "RCPT 0 250 " SAVED_A "\nTXN_DONE\nREADY\n", 0},
    /* CRLF split over two chunks: no extra CRLF before the dot */
    {START, NULL, T1},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 OK\r\n", 0},
    {BODY, "abc\r", 0},
    {LAST, "\n", 0},
    {SRV, SAVED_A "\r\n", 0},
    {SENT, "MAIL FROM:<> SIZE=10\r\nRCPT TO:<a@example.test>\r\nDATA\r\nabc\r\n.\r\n", 0},
    {EV, "SEND\nBODY\nSEND\nBODY\nSEND\nRCPT 0 250 " SAVED_A "\nTXN_DONE\nREADY\n", 0},
    /* empty body; then a body ending in a bare LF and a lone dot */
    {START, NULL, T1},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 OK\r\n", 0},
    {LAST, "", 0},
    {SRV, SAVED_A "\r\n", 0},
    {START, NULL, T1},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 OK\r\n", 0},
    {BODY, ".", 0},
    {LAST, "\n", 0},
    {SRV, SAVED_A "\r\n", 0},
    {SENT,
     "MAIL FROM:<> SIZE=10\r\nRCPT TO:<a@example.test>\r\nDATA\r\n.\r\n"
     "MAIL FROM:<> SIZE=10\r\nRCPT TO:<a@example.test>\r\nDATA\r\n..\n\r\n.\r\n",
     0},
    {EV,
     "SEND\nBODY\nSEND\nRCPT 0 250 " SAVED_A "\nTXN_DONE\nREADY\n"
     "SEND\nBODY\nSEND\nBODY\nSEND\nRCPT 0 250 " SAVED_A "\nTXN_DONE\nREADY\n",
     0},
    {END, NULL, 0},
};

/* Refused before anything is sent: over SIZE, SMTPUTF8 not offered,
 * control characters in an address; a transaction without recipients. */
static const struct step sc_prechecks[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, TBIG},
    {EV,
     "RCPT 0 552 552 5.3.4 Message size exceeds the LMTP server's SIZE limit\nTXN_DONE\nREADY\n",
     0},
    {START, NULL, TCTRL},
    {EV,
     "RCPT 0 451 451 4.3.0 address with control characters, not sent over LMTP\n"
     "RCPT 1 451 451 4.3.0 address with control characters, not sent over LMTP\nTXN_DONE\nREADY\n",
     0},
    {START, NULL, T0},
    {EV, "TXN_DONE\nREADY\n", 0},
    /* SMTPUTF8 offered here: it goes on MAIL */
    {START, NULL, TUTF8},
    {SENT,
     "MAIL FROM:<s@x.test> SIZE=20 SMTPUTF8\r\nRCPT TO:<a@example.test>\r\n"
     "RCPT TO:<nobody@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
     0},
    {EV, "SEND\n", 0},
    {ABORT, "connection lost", 0},
    {EV,
     "RCPT 0 451 451 4.4.1 connection lost\nRCPT 1 451 451 4.4.1 connection lost\n"
     "RCPT 2 451 451 4.4.1 connection lost\nTXN_DONE\nFAILED connection lost\n",
     0},
    {END, NULL, 0},
};

static const struct step sc_smtputf8_not_offered[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, TUTF8},
    {EV,
     "RCPT 0 550 550 5.6.7 SMTPUTF8 required but not offered by the LMTP server\n"
     "RCPT 1 550 550 5.6.7 SMTPUTF8 required but not offered by the LMTP server\n"
     "RCPT 2 550 550 5.6.7 SMTPUTF8 required but not offered by the LMTP server\n"
     "TXN_DONE\nREADY\n",
     0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* Issue 14: a message that carried SMTPUTF8 but does not need it goes
 * without it to a server that lacks it (Dovecot 2.3), with it to one that
 * has it. */
static const struct step sc_issue14_smtputf8_not_needed[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, TUTF8_ASCII},
    {RUN, NULL, SCAN7},
    {SENT, "MAIL FROM:<s@x.test>\r\n", 0},
    {EV, "SEND\n", 0},
    {ABORT, "connection lost", 0},
    {EV, "RCPT 0 451 451 4.4.1 connection lost\nTXN_DONE\nFAILED connection lost\n", 0},
    {END, NULL, 0},
};

static const struct step sc_issue14_smtputf8_offered[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, TUTF8_ASCII},
    {SENT, "MAIL FROM:<s@x.test> SIZE=20 SMTPUTF8\r\nRCPT TO:<a@example.test>\r\nDATA\r\n", 0},
    {EV, "SEND\n", 0},
    {ABORT, "connection lost", 0},
    {EV, "RCPT 0 451 451 4.4.1 connection lost\nTXN_DONE\nFAILED connection lost\n", 0},
    {END, NULL, 0},
};

/* Issue 14 (RFC 6152 3, RFC 2033): an LMTP server that lists no 8BITMIME
 * gets 8-bit text converted to quoted-printable, or nothing (5.6.3). */
#define NO8                                                                                        \
    "554 554 5.6.3 the LMTP server does not offer 8BITMIME and the message cannot be converted "   \
    "to 7 bit: 8-bit octets in a header"

static const struct step sc_issue14_convert[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, T1},
    {EV, "BODY\n", 0},
    {LAST, "MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xbc=\r\n", 0},
    {SENT, "MAIL FROM:<>\r\n", 0},
    {SRV, "250 2.1.0 OK\r\n", 0},
    {SENT, "RCPT TO:<a@example.test>\r\n", 0},
    {SRV, "250 2.1.5 OK\r\n", 0},
    {SENT, "DATA\r\n", 0},
    {SRV, "354 OK\r\n", 0},
    {EV, "SEND\nSEND\nSEND\nBODY\n", 0},
    {LAST, "MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xbc=\r\n", 0},
    {SENT,
     "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC=3D\r\n"
     ".\r\n",
     0},
    {SRV, SAVED_A "\r\n", 0},
    {EV, "SEND\nRCPT 0 250 " SAVED_A "\nTXN_DONE\nREADY\n", 0},
    {START, NULL, T1},
    {EV, "BODY\n", 0},
    {LAST, "MIME-Version: 1.0\r\nSubject: \xc3\xbc\r\n\r\nx\r\n", 0},
    {EV, "RCPT 0 " NO8 "\nTXN_DONE\nREADY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

#define CLOSING_WHY                                                                                \
    "LMTP server is closing the session (awaiting MAIL/RCPT/DATA reply): 421 4.3.2 Shutting down"
#define CLOSING "451 4.4.2 " CLOSING_WHY

/* 421 in the middle of the RCPT replies, and after the first dot reply. */
static const struct step sc_421[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T3},
    {SENT, MAIL3_PIPE, 0},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n421 4.3.2 Shutting down\r\n250 2.1.5 OK\r\n", 0},
    {EV,
     "SEND\nRCPT 0 451 " CLOSING "\nRCPT 1 451 " CLOSING "\nRCPT 2 451 " CLOSING
     "\nTXN_DONE\nFAILED " CLOSING_WHY "\n",
     0},
    /* the session is dead: input, body, start and quit do nothing */
    {SRV, "250 2.0.0 OK\r\n", 0},
    {QUIT, NULL, 0},
    {ABORT, "timeout", 0},
    {END, NULL, 0},
};

static const struct step sc_421_after_dot[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T3},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n" NOBODY "\r\n250 2.1.5 OK\r\n354 OK\r\n", 0},
    {LAST, "x\r\n", 0},
    {SRV, SAVED_A "\r\n421 4.3.2 Shutting down\r\n", 0},
    {SENT, MAIL3_PIPE "x\r\n.\r\n", 0},
    {EV,
     "SEND\nRCPT 1 550 " NOBODY "\nBODY\nSEND\nRCPT 0 250 " SAVED_A "\nRCPT 2 451 451 4.4.2 LMTP "
     "server is closing the session (awaiting replies after end of data): 421 4.3.2 Shutting "
     "down\nTXN_DONE\nFAILED LMTP server is closing the session (awaiting replies after end of "
     "data): 421 4.3.2 Shutting down\n",
     0},
    {END, NULL, 0},
};

#define GARBAGE_RCPT "451 4.4.2 garbage from LMTP server (awaiting MAIL/RCPT/DATA reply)"

static const struct step sc_garbage[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T3},
    {SENT, MAIL3_PIPE, 0},
    {SRV, "250 2.1.0 OK\r\nHTTP/1.1 400 Bad Request\r\n\r\n", 0},
    {EV,
     "SEND\nRCPT 0 451 " GARBAGE_RCPT "\nRCPT 1 451 " GARBAGE_RCPT "\nRCPT 2 451 " GARBAGE_RCPT
     "\nTXN_DONE\nFAILED garbage from LMTP server (awaiting MAIL/RCPT/DATA reply)\n",
     0},
    {END, NULL, 0},
};

/* A 3xx where only 2xx/4xx/5xx make sense, and a bare LF reply. */
static const struct step sc_impossible[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, T1},
    {RUN, NULL, SCAN7},
    {SRV, "250 2.1.0 OK\r\n354 go\r\n", 0},
    {SENT, "MAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\n", 0},
    {EV,
     "SEND\nSEND\nRCPT 0 451 451 4.4.2 LMTP server gave an impossible reply (awaiting "
     "MAIL/RCPT/DATA reply): 354 go\nTXN_DONE\nFAILED LMTP server gave an impossible reply "
     "(awaiting MAIL/RCPT/DATA reply): 354 go\n",
     0},
    {END, NULL, 0},
};

static const struct step sc_bare_lf[] = {
    {SRV, "220 ready\n", 0},
    {EV, "FAILED garbage from LMTP server (awaiting greeting)\n", 0},
    {END, NULL, 0},
};

/* The glue gives up (timeout) in the middle of the body. */
static const struct step sc_abort_body[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T3},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n" NOBODY "\r\n250 2.1.5 OK\r\n354 OK\r\n", 0},
    {BODY, "part", 0},
    {ABORT, "timeout sending the body", 0},
    {LAST, "ignored", 0},
    {SENT, MAIL3_PIPE "part", 0},
    {EV,
     "SEND\nRCPT 1 550 " NOBODY "\nBODY\nSEND\nBODY\nRCPT 0 451 451 4.4.1 timeout sending the "
     "body\nRCPT 2 451 451 4.4.1 timeout sending the body\nTXN_DONE\nFAILED timeout sending the "
     "body\n",
     0},
    {END, NULL, 0},
};

/* Refusals at the start, replies when none is due, QUIT edge cases. */
static const struct step sc_greeting_refused[] = {
    {SRV, "554 5.3.2 Go away\r\n", 0},
    {EV, "FAILED LMTP server refused the session (awaiting greeting): 554 5.3.2 Go away\n", 0},
    {END, NULL, 0},
};

static const struct step sc_lhlo_refused[] = {
    {SRV, "220-vm\r\n220 ready\r\n", 0},
    {SENT, "LHLO mx.test\r\n", 0},
    {SRV, "500 5.5.1 Unknown command\r\n", 0},
    {EV, "SEND\nFAILED LMTP server refused LHLO (awaiting LHLO reply): 500 5.5.1 Unknown command\n",
     0},
    {END, NULL, 0},
};

static const struct step sc_unexpected_idle[] = {
    {RUN, NULL, GREET_PLAIN},
    {SRV, "421 4.4.2 vm Disconnected for inactivity\r\n", 0},
    {EV,
     "FAILED LMTP server is closing the session (awaiting nothing (idle)): 421 4.4.2 vm "
     "Disconnected for inactivity\n",
     0},
    {END, NULL, 0},
};

static const struct step sc_unexpected_body[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, T1},
    {RUN, NULL, SCAN7},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 OK\r\n250 2.0.0 early\r\n", 0},
    {SENT, "MAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n", 0},
    {EV,
     "SEND\nSEND\nSEND\nBODY\nRCPT 0 451 451 4.4.2 unexpected reply from LMTP server (awaiting "
     "the body from mxd): 250 2.0.0 early\nTXN_DONE\nFAILED unexpected reply from LMTP server "
     "(awaiting the body from mxd): 250 2.0.0 early\n",
     0},
    {LAST, "late", 0},
    {END, NULL, 0},
};

static const struct step sc_quit_edges[] = {
    {QUIT, NULL, 0}, /* before the greeting: nothing to say */
    {EV, "CLOSED\n", 0},
    {SRV, "220 late\r\n", 0},
    {END, NULL, 0},
};

static const struct step sc_quit_garbage[] = {
    {RUN, NULL, GREET_PLAIN}, {QUIT, NULL, 0},           {SRV, "\x16\x03\x01 tls?\r\n", 0},
    {SENT, "QUIT\r\n", 0},    {EV, "SEND\nCLOSED\n", 0}, {END, NULL, 0},
};

static const struct step sc_quit_closed_by_peer[] = {
    {RUN, NULL, GREET_PLAIN}, {QUIT, NULL, 0},           {ABORT, "connection closed", 0},
    {SENT, "QUIT\r\n", 0},    {EV, "SEND\nCLOSED\n", 0}, {END, NULL, 0},
};

static const struct step sc_quit_busy[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, T1},
    {RUN, NULL, SCAN7},
    {QUIT, NULL, 0},
    {SENT, "MAIL FROM:<>\r\n", 0},
    {EV,
     "SEND\nRCPT 0 451 451 4.4.1 session closed by mxd during a transaction\nTXN_DONE\n"
     "FAILED session closed by mxd during a transaction\n",
     0},
    {END, NULL, 0},
};

static const struct step sc_abort_idle[] = {
    {RUN, NULL, GREET_PLAIN},
    {ABORT, "connection reset", 0},
    {EV, "FAILED connection reset\n", 0},
    {START, NULL, T1}, /* too late: the session is not ready */
    {EV, "RCPT 0 451 451 4.4.2 LMTP session not ready\nTXN_DONE\n", 0},
    {END, NULL, 0},
};

/* verify_only (callahead): MAIL, RCPT, RSET; each RCPT reply is the
 * outcome. The callahead asks for QUIT as soon as TXN_DONE comes, before
 * the RSET reply: QUIT waits for it. */
#define VERIFY_TEMP "451 4.3.0 Temporary user lookup failure"

static const struct step sc_verify_pipe[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, TVERIFY},
    {SENT,
     "MAIL FROM:<> SIZE=0\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<nobody@example.test>\r\n"
     "RCPT TO:<b@example.test>\r\nRSET\r\n",
     0},
    {EV, "SEND\n", 0},
    {SRV, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n" NOBODY "\r\n" VERIFY_TEMP "\r\n", 0},
    {EV, "RCPT 0 250 250 2.1.5 OK\nRCPT 1 550 " NOBODY "\nRCPT 2 451 " VERIFY_TEMP "\nTXN_DONE\n",
     0},
    {QUIT, NULL, 0},
    {SENT, "", 0},
    {SRV, "250 2.0.0 OK\r\n", 0},
    {SENT, "QUIT\r\n", 0},
    {EV, "SEND\n", 0},
    {SRV, "221 2.0.0 Bye\r\n", 0},
    {EV, "CLOSED\n", 0},
    {END, NULL, 0},
};

static const struct step sc_verify_plain[] = {
    {RUN, NULL, GREET_PLAIN},
    {START, NULL, TVERIFY},
    {SENT, "MAIL FROM:<>\r\n", 0},
    {SRV, "250 2.1.0 OK\r\n", 0},
    {SENT, "RCPT TO:<a@example.test>\r\n", 0},
    {SRV, "250 2.1.5 OK\r\n", 0},
    {SENT, "RCPT TO:<nobody@example.test>\r\n", 0},
    {SRV, NOBODY "\r\n", 0},
    {SENT, "RCPT TO:<b@example.test>\r\n", 0},
    {SRV, "250 2.1.5 OK\r\n", 0},
    {SENT, "RSET\r\n", 0},
    {EV,
     "SEND\nSEND\nRCPT 0 250 250 2.1.5 OK\nSEND\nRCPT 1 550 " NOBODY
     "\nSEND\nRCPT 2 250 250 2.1.5 OK\nTXN_DONE\nSEND\n",
     0},
    {SRV, "250 2.0.0 OK\r\n", 0},
    {EV, "READY\n", 0},
    {RUN, NULL, QUIT_OK},
    {END, NULL, 0},
};

/* QUIT after TXN_DONE while the rest of a refused group is still due. */
static const struct step sc_quit_while_eating[] = {
    {RUN, NULL, GREET_PIPE},
    {START, NULL, T3},
    {SENT, MAIL3_PIPE, 0},
    {SRV, "555 5.5.4 Unsupported parameters\r\n", 0},
    {EV,
     "SEND\nRCPT 0 555 555 5.5.4 Unsupported parameters\nRCPT 1 555 555 5.5.4 Unsupported "
     "parameters\nRCPT 2 555 555 5.5.4 Unsupported parameters\nTXN_DONE\n",
     0},
    {QUIT, NULL, 0},
    {SRV, "503 5.5.0 MAIL needed first\r\n503 5.5.0 MAIL needed first\r\n", 0},
    {SENT, "", 0},
    {SRV, "503 5.5.0 MAIL needed first\r\n503 5.5.0 MAIL needed first\r\n", 0},
    {SENT, "RSET\r\n", 0},
    {SRV, "250 2.0.0 OK\r\n", 0},
    {SENT, "QUIT\r\n", 0},
    {SRV, "221 2.0.0 Bye\r\n", 0},
    {EV, "SEND\nSEND\nCLOSED\n", 0},
    {END, NULL, 0},
};

/* A big chunk (over the preallocated output) is stuffed in one SEND. */
static void
test_lmtp_big_chunk(void **state)
{
    size_t n = 300000;
    char *body = malloc(n);
    struct lmtp_proto *p = lmtp_proto_new("mx.test");
    struct lmtp_event e;
    size_t dots = 0;

    (void)state;
    assert_non_null(body);
    for (size_t i = 0; i < n; i += 2) {
        body[i] = '\n';
        body[i + 1] = '.';
    }
    assert_int_equal(lmtp_proto_feed(p, "220 x\r\n250-x\r\n250-8BITMIME\r\n250 PIPELINING\r\n", 44),
                     7);
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_SEND);
    assert_int_equal(lmtp_proto_feed(p, "250-x\r\n250-8BITMIME\r\n250 PIPELINING\r\n", 37), 37);
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_READY);
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_NONE);
    lmtp_proto_start(p, &txns[T1]);
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_SEND);
    assert_int_equal(lmtp_proto_feed(p, "250 a\r\n250 b\r\n354 c\r\n", 21), 21);
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_BODY);
    lmtp_proto_body(p, body, n, true);
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_SEND);
    assert_int_equal(e.len, n + n / 2 + 5);
    for (size_t i = 0; i < e.len; i++)
        dots += e.data[i] == '.';
    assert_int_equal(dots, n + 1);
    assert_memory_equal(e.data + e.len - 6, ".\r\n.\r\n", 6);
    assert_int_equal(lmtp_proto_next(p, &e), LMTP_EV_NONE);
    lmtp_proto_free(p);
    lmtp_proto_free(NULL);
    free(body);
}

static void
test_lmtp_ev_name(void **state)
{
    (void)state;
    assert_string_equal(lmtp_ev_name(LMTP_EV_NONE), "NONE");
    assert_string_equal(lmtp_ev_name(LMTP_EV_TXN_DONE), "TXN_DONE");
    assert_string_equal(lmtp_ev_name(LMTP_EV_CLOSED), "CLOSED");
    assert_string_equal(lmtp_ev_name((enum lmtp_ev)99), "?");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        SCENARIO(pipelining),
        SCENARIO(no_pipelining),
        SCENARIO(mail_refused_pipe),
        SCENARIO(mail_refused_plain),
        SCENARIO(all_refused_pipe),
        SCENARIO(all_refused_plain),
        SCENARIO(354_without_rcpt),
        SCENARIO(data_refused),
        SCENARIO(dotstuff),
        SCENARIO(prechecks),
        SCENARIO(smtputf8_not_offered),
        SCENARIO(issue14_smtputf8_not_needed),
        SCENARIO(issue14_smtputf8_offered),
        SCENARIO(issue14_convert),
        SCENARIO(421),
        SCENARIO(421_after_dot),
        SCENARIO(garbage),
        SCENARIO(impossible),
        SCENARIO(bare_lf),
        SCENARIO(abort_body),
        SCENARIO(greeting_refused),
        SCENARIO(lhlo_refused),
        SCENARIO(unexpected_idle),
        SCENARIO(unexpected_body),
        SCENARIO(quit_edges),
        SCENARIO(quit_garbage),
        SCENARIO(quit_closed_by_peer),
        SCENARIO(quit_busy),
        SCENARIO(abort_idle),
        SCENARIO(verify_pipe),
        SCENARIO(verify_plain),
        SCENARIO(quit_while_eating),
        cmocka_unit_test(test_lmtp_big_chunk),
        cmocka_unit_test(test_lmtp_ev_name),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
