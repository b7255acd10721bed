"""SMTP protocol conformance over raw sockets: every reply the contract
names, pipelining, sequencing, SMTP smuggling (CVE-2023-51764)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import HOSTNAME, ConnectionClosed, MxdTestCase  # noqa: E402

RCPT = "user@example.test"

# Every way a client (or a broken/malicious outbound relay) can end a line
# other than CRLF around a dot: only <CRLF>.<CRLF> ends DATA.
SMUGGLING_VARIANTS = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "cr_dot_cr": b"\r.\r",
    "crlf_dot_lf": b"\r\n.\n",
    "cr_dot_crlf": b"\r.\r\n",
    "crlf_dot_cr": b"\r\n.\r",
    "lf_dot_cr": b"\n.\r",
    "cr_dot_lf": b"\r.\n",
}


class Protocol(MxdTestCase):
    def session(self, ehlo=True):
        c = self.client()
        if ehlo:
            c.ehlo()
        return c

    def after_error(self, c, probe=b"HELP\r\n"):
        """Sends probe and returns the next reply, or None when the server
        has closed the connection (or says 421 and closes)."""
        try:
            c.send(probe)
            r = c.reply()
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
            return None
        if r.code == 421:
            return None
        return r

    # -- greeting and EHLO

    def test_banner(self):
        c = self.client(banner=False)
        r = c.reply()
        self.assertReply(r, 220)
        self.assertEqual(r.lines[0].split()[:2], [HOSTNAME, "ESMTP"], str(r))
        self.assertTrue(r.raw.startswith(f"220 {HOSTNAME} ESMTP".encode())
                        or r.raw.startswith(f"220-{HOSTNAME} ESMTP".encode()), str(r))

    def test_ehlo_keywords(self):
        c = self.session(ehlo=False)
        r = c.cmd("EHLO client.test")
        self.assertReply(r, 250)
        self.assertEqual(r.lines[0].split()[0], HOSTNAME, str(r))
        kw = {}
        for line in r.lines[1:]:
            parts = line.split()
            kw[parts[0].upper()] = parts[1:]
        for want in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                     "CHUNKING"):
            self.assertIn(want, kw, f"EHLO does not advertise {want}: {r}")
        self.assertEqual(kw["SIZE"], [str(50 * 1024 * 1024)], f"SIZE must be 50m in octets: {r}")

    def test_ehlo_without_domain(self):
        c = self.session(ehlo=False)
        r = c.cmd("EHLO")
        self.assertReply(r, 501)
        self.assertReply(c.cmd("EHLO client.test"), 250)

    def test_helo_then_mail(self):
        m = self.marker()
        c = self.session(ehlo=False)
        r = c.cmd("HELO client.test")
        self.assertReply(r, 250)
        self.assertEqual(len(r.lines), 1, f"HELO reply must be one line: {r}")
        content = f"Subject: helo {m}\r\n\r\nold school\r\n".encode()
        r = c.send_message("old@client.test", [RCPT], content, ehlo=False)
        self.assertReply(r, 250, "2.0.0")
        msg = self.assertStored(r.qid, content, with_proto="SMTP")
        self.assertEqual(msg["row"]["helo"], "client.test")

    def test_ehlo_again_resets_transaction(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("EHLO again.test"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 503, "5.5.1")
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)

    # -- simple commands

    def test_noop(self):
        c = self.session()
        r = c.cmd("NOOP")
        self.assertReply(r, 250)
        self.assertEqual(r.enh[0], "2", f"ENHANCEDSTATUSCODES: {r}")
        self.assertReply(c.cmd("NOOP some text"), 250)

    def test_rset(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        r = c.cmd("RSET")
        self.assertReply(r, 250)
        self.assertEqual(r.enh[0], "2", str(r))
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 503, "5.5.1")
        self.assertReply(c.cmd("MAIL FROM:<b@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)

    def test_vrfy_252(self):
        c = self.session()
        r = c.cmd(f"VRFY {RCPT}")
        self.assertReply(r, 252)
        self.assertNotIn(RCPT, r.text, "VRFY must not disclose anything")
        self.assertReply(c.cmd("VRFY nosuchuser"), 252)

    def test_help_214(self):
        c = self.session()
        self.assertReply(c.cmd("HELP"), 214)
        self.assertReply(c.cmd("HELP MAIL"), 214)

    def test_quit_221(self):
        c = self.session()
        r = c.cmd("QUIT")
        self.assertReply(r, 221)
        self.assertTrue(c.wait_closed(5), "connection not closed after QUIT")
        self.assertEqual(c.buf, b"", "data after the QUIT reply")

    def test_case_insensitive_verbs(self):
        m = self.marker()
        c = self.client()
        self.assertReply(c.cmd("eHlO client.test"), 250)
        self.assertReply(c.cmd("noop"), 250)
        self.assertReply(c.cmd("mail from:<lower@client.test>"), 250)
        self.assertReply(c.cmd(f"rCpT tO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("data"), 354)
        content = f"Subject: lower {m}\r\n\r\nx\r\n".encode()
        c.send(content + b".\r\n")
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, content)
        self.assertReply(c.cmd("rset"), 250)
        self.assertReply(c.cmd("vrfy x"), 252)
        self.assertReply(c.cmd("help"), 214)
        self.assertReply(c.cmd("quit"), 221)

    def test_unknown_command(self):
        c = self.session()
        self.assertReply(c.cmd("FOOBAR"), 500, "5.5.1")
        self.assertReply(c.cmd("MAILFROM:<a@b>"), 500, "5.5.1")
        self.assertReply(c.cmd("NOOP"), 250)

    def test_enhanced_status_codes(self):
        # RFC 2034 3: with ENHANCEDSTATUSCODES every 2xx, 4xx and 5xx reply
        # but the greeting and the HELO/EHLO replies carries a status code
        # of the same class.
        c = self.session()
        replies = [c.cmd(x) for x in (
            "NOOP", "RSET", "VRFY someone", "HELP", "FOOBAR", "RCPT TO:<a@example.test>",
            "MAIL FROM:<a@client.test>", "RCPT TO:<a@other.test>", "RCPT TO:<a@example.test>",
            "DATA")]
        c.send(b"Subject: esc\r\n\r\nx\r\n.\r\n")
        replies.append(c.reply())
        replies.append(c.cmd("QUIT"))
        for r in replies:
            if r.code == 354:
                continue
            self.assertIsNotNone(r.enh, f"no enhanced status code: {r}")
            self.assertEqual(r.enh[0], str(r.code)[0], f"status code class differs: {r}")

    # -- sequencing (503 5.5.1)

    def test_mail_before_ehlo(self):
        c = self.session(ehlo=False)
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 503, "5.5.1")

    def test_rcpt_before_mail(self):
        c = self.session()
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 503, "5.5.1")

    def test_data_before_rcpt(self):
        c = self.session()
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        # Still in the transaction: a recipient then DATA works.
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(b".\r\n")
        self.assertReply(c.reply(), 250, "2.0.0")

    def test_nested_mail(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd("MAIL FROM:<b@client.test>"), 503, "5.5.1")

    def test_bdat_before_mail_consumes_chunk(self):
        # RFC 3030 2: the chunk's octets are data whatever the reply; they
        # must never be read as commands (here a HELP that would answer 214).
        c = self.session()
        c.send(b"BDAT 6\r\nHELP\r\nRSET\r\nNOOP\r\n")
        r1, r2, r3 = c.replies(3)
        self.assertReply(r1, 503, "5.5.1")
        self.assertReply(r2, 250, msg="RSET after the refused BDAT")
        self.assertReply(r3, 250, msg="NOOP")

    def test_data_after_bdat_503(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        c.send(b"BDAT 5\r\nhello")
        self.assertReply(c.reply(), 250)
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")

    # -- syntax and limits on command lines

    def test_line_too_long(self):
        c = self.session()
        r = c.cmd("NOOP " + "x" * 1000)
        self.assertReply(r, 500, "5.5.2")
        self.assertReply(c.cmd("NOOP"), 250, msg="session unusable after a long line")
        # A line far larger than any input buffer gets one reply, too.
        c.send(b"NOOP " + b"y" * 200000 + b"\r\nNOOP\r\n")
        self.assertReply(c.reply(timeout=20), 500, "5.5.2")
        self.assertReply(c.reply(), 250)
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)

    def test_line_length_boundary(self):
        # RFC 5321 4.5.3.1.4: 512 octets including CRLF is legal, 513 is not.
        c = self.session()
        line = "NOOP " + "x" * (512 - 2 - 5)
        self.assertEqual(len(line) + 2, 512)
        self.assertReply(c.cmd(line), 250, msg="a 512-octet command line is legal")
        self.assertReply(c.cmd(line + "x"), 500, "5.5.2")
        self.assertReply(c.cmd("NOOP"), 250)

    def test_bare_lf_in_command(self):
        c = self.session()
        c.send(b"NOOP\nHELP\r\n")
        r = c.reply()
        self.assertReply(r, 500, "5.5.2")
        nxt = self.after_error(c, b"NOOP\r\n")
        if nxt is not None:
            self.assertReply(nxt, 250, msg="the text after a bare LF must not be a command")

    def test_bare_cr_in_command(self):
        c = self.session()
        c.send(b"NOOP\rHELP\r\n")
        r = c.reply()
        self.assertReply(r, 500, "5.5.2")
        nxt = self.after_error(c, b"NOOP\r\n")
        if nxt is not None:
            self.assertReply(nxt, 250, msg="the text after a bare CR must not be a command")

    def test_bare_lf_in_mail_command(self):
        c = self.session()
        c.send(b"MAIL FROM:<a@client.test>\nRCPT TO:<user@example.test>\r\n")
        self.assertReply(c.reply(), 500, "5.5.2")
        nxt = self.after_error(c, f"RCPT TO:<{RCPT}>\r\n".encode())
        if nxt is not None:
            self.assertReply(nxt, 503, "5.5.1", "MAIL with a bare LF must not start a transaction")

    def test_unknown_mail_parameter(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test> FOO=BAR"), 555, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@client.test> XFOO"), 555, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@client.test> SIZE=100 BODY=7BIT"), 250)

    def test_unknown_rcpt_parameter(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}> FOO=BAR"), 555, "5.5.4")

    def test_mail_size_param(self):
        c = self.session()
        limit = 50 * 1024 * 1024
        self.assertReply(c.cmd(f"MAIL FROM:<a@client.test> SIZE={limit + 1}"), 552, "5.3.4")
        self.assertReply(c.cmd(f"MAIL FROM:<a@client.test> SIZE={limit}"), 250)

    def test_non_ascii_without_smtputf8(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<sénder@client.test>"), 553, "5.6.7")
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd("RCPT TO:<üser@example.test>"), 553, "5.6.7")
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)

    def test_non_ascii_with_smtputf8(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<sénder@client.test> SMTPUTF8"), 250)
        self.assertReply(c.cmd("RCPT TO:<üser@example.test>"), 250)

    # -- pipelining (RFC 2920)

    def test_pipelined_transaction(self):
        m = self.marker()
        content = f"Subject: pipelined {m}\r\n\r\n.dotted\r\nbody\r\n".encode()
        c = self.session()
        c.send(b"MAIL FROM:<p@client.test>\r\nRCPT TO:<a@example.test>\r\n"
               b"RCPT TO:<b@example.test>\r\nDATA\r\n")
        rs = c.replies(4)
        self.assertEqual([r.code for r in rs], [250, 250, 250, 354], [str(r) for r in rs])
        c.send(mxdtest.dot_stuff(content) + b".\r\n")
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        msg = self.assertStored(r.qid, content)
        self.assertEqual([x["address"] for x in msg["rcpts"]], ["a@example.test", "b@example.test"])

    def test_whole_transaction_in_one_send(self):
        m = self.marker()
        content = f"Subject: one write {m}\r\n\r\nall at once\r\n".encode()
        c = self.session()
        c.send(b"MAIL FROM:<p@client.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n"
               + content + b".\r\nMAIL FROM:<q@client.test>\r\nRCPT TO:<b@example.test>\r\n"
               b"DATA\r\n" + content + b".\r\nQUIT\r\n")
        rs = c.replies(7)
        self.assertEqual([r.code for r in rs], [250, 250, 354, 250, 250, 250, 354],
                         [str(r) for r in rs])
        last = c.reply()
        self.assertReply(last, 250, "2.0.0")
        self.assertReply(c.reply(), 221)
        self.assertStored(rs[3].qid, content)
        self.assertStored(last.qid, content)
        self.assertNotEqual(rs[3].qid, last.qid)

    def test_pipelined_failing_rcpt(self):
        m = self.marker()
        c = self.session()
        c.send(b"MAIL FROM:<p@client.test>\r\nRCPT TO:<good1@example.test>\r\n"
               b"RCPT TO:<bad@other.test>\r\nRCPT TO:<good2@example.test>\r\nDATA\r\n")
        rs = c.replies(5)
        self.assertEqual([r.code for r in rs], [250, 250, 550, 250, 354], [str(r) for r in rs])
        self.assertEqual(rs[2].enh, "5.7.1", str(rs[2]))
        content = f"Subject: partial {m}\r\n\r\nx\r\n".encode()
        c.send(content + b".\r\n")
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        msg = self.assertStored(r.qid, content)
        self.assertEqual([x["address"] for x in msg["rcpts"]],
                         ["good1@example.test", "good2@example.test"])

    def test_pipelined_no_valid_rcpt(self):
        c = self.session()
        c.send(b"MAIL FROM:<p@client.test>\r\nRCPT TO:<bad@other.test>\r\nDATA\r\n")
        rs = c.replies(3)
        self.assertReply(rs[0], 250)
        self.assertReply(rs[1], 550, "5.7.1")
        self.assertIn(rs[2].code, (503, 554), f"DATA without valid recipients: {rs[2]}")
        self.assertReply(c.cmd("RSET"), 250)

    def test_pipelined_many_commands(self):
        c = self.session()
        n = 200
        c.send(b"NOOP\r\n" * n + b"MAIL FROM:<p@client.test>\r\n"
               + b"".join(f"RCPT TO:<u{i}@example.test>\r\n".encode() for i in range(50))
               + b"RSET\r\nHELP\r\n")
        rs = c.replies(n + 1 + 50 + 2, timeout=20)
        self.assertTrue(all(r.code == 250 for r in rs[: n + 51]), [str(r) for r in rs if r.code != 250])
        self.assertReply(rs[-2], 250)
        self.assertReply(rs[-1], 214)
        self.assertTrue(c.no_more_data(0.3), f"extra data after the replies: {c.buf!r}")

    def test_pipelined_replies_past_the_output_limit(self):
        # 1,300 HELPs in one go (7.8 KiB, one read): their replies (about
        # 120 KiB, 95 octets for every 6 read) pass the session's 64 KiB
        # output mark, where it pauses. The socket takes the first 64 KiB at
        # once, so no write callback comes to resume it, and no more input
        # will: the session must go on by itself, not stall.
        c = self.session()
        n = 1300
        c.send(b"HELP\r\n" * n + b"NOOP\r\n")
        rs = c.replies(n + 1, timeout=20)
        self.assertTrue(all(r.code == 214 for r in rs[:n]), [str(r) for r in rs if r.code != 214][:5])
        self.assertReply(rs[-1], 250)
        self.assertTrue(c.no_more_data(0.3), f"extra data after the replies: {c.buf!r}")

    # -- DATA framing and SMTP smuggling

    def smuggle(self, variant):
        outer = self.marker()
        inner = self.marker()
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<attacker@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        payload = (f"Subject: outer {outer}\r\n\r\nouter body".encode() + variant
                   + b"MAIL FROM:<x@y.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
                   + f"Subject: smuggled {inner}\r\nFrom: <x@y.test>\r\n\r\nevil\r\n".encode()
                   + b".\r\n")
        c.send(payload + b"HELP\r\n")
        r = c.reply()
        self.assertReply(r, 550, "5.5.2", f"variant {variant!r}")
        nxt = None
        try:
            nxt = c.reply()
        except ConnectionClosed:
            pass
        if nxt is not None and nxt.code != 421:
            self.assertReply(nxt, 214, msg=f"exactly one reply for the data ({variant!r})")
        self.assertNothingStored(outer)
        self.assertNothingStored(inner)
        self.assertEqual(mxdtest.message_count(self.mxd.db_path, "sender = ?", ("x@y.test",)), 0)

    def test_smuggling_variants(self):
        for name, variant in SMUGGLING_VARIANTS.items():
            with self.subTest(variant=name):
                self.smuggle(variant)

    def test_bare_lf_in_data(self):
        m = self.marker()
        c = self.session()
        c.send(b"MAIL FROM:<a@client.test>\r\n" + f"RCPT TO:<{RCPT}>\r\n".encode() + b"DATA\r\n")
        self.assertEqual([r.code for r in c.replies(3)], [250, 250, 354])
        c.send(f"Subject: {m}\r\n\r\nline one\nline two\r\n.\r\n".encode())
        self.assertReply(c.reply(), 550, "5.5.2")
        self.assertNothingStored(m)
        nxt = self.after_error(c, b"RSET\r\n")
        if nxt is not None:
            self.assertReply(nxt, 250)
            ok = f"Subject: fine {m}x\r\n\r\nok\r\n".encode()
            r = c.send_message("a@client.test", [RCPT], ok, ehlo=False)
            self.assertReply(r, 250, "2.0.0")
            self.assertStored(r.qid, ok)

    def test_bare_cr_in_data(self):
        m = self.marker()
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(f"Subject: {m}\r\n\r\nline one\rline two\r\n.\r\n".encode())
        self.assertReply(c.reply(), 550, "5.5.2")
        self.assertNothingStored(m)

    def test_data_end_split_across_writes(self):
        # The end-of-data marker arrives one octet per segment.
        m = self.marker()
        content = f"Subject: split {m}\r\n\r\nbody\r\n".encode()
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(content[:-2])
        for b in (b"\r", b"\n", b".", b"\r", b"\n"):
            time.sleep(0.05)
            c.send(b)
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, content)

    def test_dot_line_inside_data_is_not_end(self):
        # "..\r\n" unstuffs to ".", and ". \r\n" is text: neither ends data.
        m = self.marker()
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(f"Subject: {m}\r\n\r\n..\r\n. \r\n.x\r\n".encode() + b".\r\n")
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        # RFC 5321 4.5.2: a leading dot is removed from every line that has one.
        self.assertStored(r.qid, f"Subject: {m}\r\n\r\n.\r\n \r\nx\r\n".encode())


if __name__ == "__main__":
    mxdtest.main()
