"""Round trips: a message sent with smtplib, swaks or raw DATA/BDAT is stored
byte for byte (after mxd's Received header) with the right envelope."""

import os
import random
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import CRLF, MxdTestCase  # noqa: E402


def crlf(text):
    """Text with \\n line ends -> CRLF bytes."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    return text.replace(b"\n", b"\r\n")


def sample_lines(n, seed, width=(0, 120)):
    rnd = random.Random(seed)
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_=+/"
    out = []
    for i in range(n):
        k = rnd.randint(*width)
        line = bytes(rnd.choice(alphabet) for _ in range(k))
        if i % 17 == 0:
            line = b"." + line  # needs dot-stuffing
        out.append(line + CRLF)
    return b"".join(out)


class RoundTrip(MxdTestCase):
    def smtplib_send(self, content, rcpts=("user@example.test",), sender="sender@client.test",
                     options=()):
        s = smtplib.SMTP("127.0.0.1", self.mxd.port, local_hostname="client.test", timeout=30)
        self.addCleanup(s.close)
        code, _ = s.ehlo()
        self.assertEqual(code, 250)
        code, resp = s.mail(sender, list(options))
        self.assertEqual(code, 250, resp)
        for r in rcpts:
            code, resp = s.rcpt(r)
            self.assertEqual(code, 250, resp)
        code, resp = s.data(content)
        self.assertEqual(code, 250, resp)
        text = resp.decode("utf-8", "replace")
        self.assertRegex(text, r"^2\.0\.0 Ok: queued as \S+$")
        s.quit()
        return text.rsplit(" ", 1)[1]

    # -- DATA via smtplib

    def test_smtplib_dot_stuffing(self):
        m = self.marker()
        content = crlf(
            f"Subject: dots {m}\nFrom: <sender@client.test>\n\n"
            ".\n..\n...\n.leading dot\n..two leading dots\nnormal . line\n .space dot\n"
            "end with dot.\n.\n"
        )
        qid = self.smtplib_send(content)
        msg = self.assertStored(qid, content)
        row = msg["row"]
        self.assertEqual(row["sender"], "sender@client.test")
        self.assertEqual(row["client_addr"], "127.0.0.1")
        self.assertEqual(row["helo"], "client.test")

    def test_smtplib_8bitmime(self):
        m = self.marker()
        high = bytes(range(0x80, 0x100))
        content = crlf(f"Subject: 8bit {m}\nContent-Type: text/plain; charset=latin1\n\n".encode()
                       + b"caf\xe9 \xfc\xf6\xe4\n" + high + b"\n" + bytes(range(1, 10)) + b"\n")
        self.assertNotIn(b"\r\r", content)
        qid = self.smtplib_send(content, options=["BODY=8BITMIME"])
        msg = self.assertStored(qid, content)
        self.assertEqual(msg["row"]["body_8bit"], 1)

    def test_smtplib_smtputf8(self):
        m = self.marker()
        rcpt = "δοκιμή@example.test"
        sender = "sénder@exämple.test"
        content = crlf(f"Subject: ünïcödé {m}\nFrom: <{sender}>\nTo: <{rcpt}>\n\nΚαλημέρα κόσμε\n")
        qid = self.smtplib_send(content, rcpts=[rcpt], sender=sender,
                                options=["SMTPUTF8", "BODY=8BITMIME"])
        msg = self.assertStored(qid, content, with_proto="UTF8SMTP")
        self.assertEqual(msg["row"]["smtputf8"], 1)
        self.assertEqual(msg["row"]["sender"], sender)
        self.assertEqual([r["address"] for r in msg["rcpts"]], [rcpt])
        self.assertEqual(msg["rcpts"][0]["domain"], "example.test")

    def test_smtplib_2mib(self):
        m = self.marker()
        content = crlf(f"Subject: big {m}\n\n") + sample_lines(30000, seed=7)
        content += b"x" * (2 * 1024 * 1024 + 1000 - len(content)) + CRLF
        self.assertGreater(len(content), 2 * 1024 * 1024)
        qid = self.smtplib_send(content)
        msg = self.assertStored(qid, content)
        body_len = len(bytes(msg["row"]["body"]))
        self.assertIn(msg["row"]["size"], (len(content), body_len),
                      "messages.size is neither the content nor the stored body length")
        self.assertSpoolEmpty()

    def test_multiple_recipients(self):
        m = self.marker()
        rcpts = ["One@Example.TEST", "two@example.test", "Three.Four@EXAMPLE.test"]
        content = crlf(f"Subject: many {m}\n\nhello\n")
        before = int(time.time())
        qid = self.smtplib_send(content, rcpts=rcpts)
        msg = self.assertStored(qid, content)
        got = msg["rcpts"]
        self.assertEqual(len(got), 3, got)
        for want, row in zip(rcpts, got):
            local, dom = row["address"].rsplit("@", 1)
            self.assertEqual(local, want.rsplit("@", 1)[0], "local part case must be kept")
            self.assertEqual(dom.lower(), "example.test")
            self.assertEqual(row["domain"], "example.test", "domain must be lower-cased")
            # The domain has no lmtp server: the scheduler may already have
            # tried and deferred it (attempt 1, retry later).
            self.assertIn(row["state"], ("queued", "deferred"))
            self.assertEqual(row["attempts"], 0 if row["state"] == "queued" else 1)
            self.assertIsInstance(row["next_attempt"], int)
            self.assertLessEqual(row["next_attempt"], int(time.time()) + 3600 * 2)
        self.assertGreaterEqual(msg["row"]["received"], before - 5)
        self.assertLessEqual(msg["row"]["received"], int(time.time()) + 5)

    def test_null_sender(self):
        m = self.marker()
        c = self.client()
        c.ehlo()
        content = crlf(f"Subject: bounce {m}\n\nnull sender\n")
        r = c.send_message("", ["user@example.test"], content, ehlo=False)
        self.assertReply(r, 250, "2.0.0")
        msg = self.assertStored(r.qid, content)
        self.assertEqual(msg["row"]["sender"], "")

    # -- raw DATA

    def test_raw_empty_body(self):
        c = self.client()
        r = c.send_message("empty@client.test", ["user@example.test"], b"")
        self.assertReply(r, 250, "2.0.0")
        self.assertRegex(r.lines[-1], r"^2\.0\.0 Ok: queued as \S+$")
        self.assertStored(r.qid, b"")

    def test_raw_received_header(self):
        m = self.marker()
        c = self.client()
        content = crlf(f"Subject: trace {m}\n\nbody\n")
        before = time.time()
        r = c.send_message("trace@client.test", ["user@example.test"], content)
        self.assertReply(r, 250, "2.0.0")
        msg = self.assertStored(r.qid, content)
        hdr, _ = mxdtest.split_received(msg["row"]["body"])
        text = mxdtest.check_received(hdr, r.qid)
        # RFC 5321 4.4: "from" the EHLO name (and TCP info), then "; date-time".
        self.assertRegex(text, r"^Received: from client\.test\b")
        self.assertIn("127.0.0.1", text)
        when = mxdtest.received_date(text)
        self.assertLess(abs(when.timestamp() - before), 60, f"Received date {when} is off")
        for line in hdr.split(CRLF)[:-1]:
            self.assertLessEqual(len(line), 998, "header line over 998 octets (RFC 5322 2.1.1)")

    def test_raw_dot_stuffed_data(self):
        m = self.marker()
        content = crlf(f"Subject: raw {m}\n\n.\n..\n.x\n")
        c = self.client()
        r = c.send_message("raw@client.test", ["user@example.test"], mxdtest.dot_stuff(content))
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, content)

    def test_two_messages_one_session(self):
        c = self.client()
        c.ehlo()
        qids = []
        for i in range(3):
            content = crlf(f"Subject: {self.marker()} {i}\n\nmessage {i}\n")
            r = c.send_message("s@client.test", ["user@example.test"], content, ehlo=False)
            self.assertReply(r, 250, "2.0.0")
            self.assertStored(r.qid, content)
            qids.append(r.qid)
        self.assertEqual(len(set(qids)), 3, f"queue ids not unique: {qids}")

    # -- swaks

    def test_swaks(self):
        m = self.marker()
        content = crlf(
            f"Subject: swaks {m}\nFrom: <swaks@client.test>\nTo: <user@example.test>\n\n"
            "first line\n.\n..\n.dot line\n\nlast line\n"
        )
        path = os.path.join(self.tmpdir, f"{m}.eml")
        with open(path, "wb") as f:
            # swaks sends "\r\n.\r\n" after the file: the file's last line
            # must not have its own line end.
            f.write(content[:-2])
        p = mxdtest.swaks(self.mxd.port, "--to", "user@example.test", "--from",
                          "swaks@client.test", "--helo", "client.test", "--data", "@" + path)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, f"swaks failed:\n{out}\n{p.stderr!r}")
        qids = mxdtest.swaks_qids(out)
        self.assertEqual(len(qids), 1, f"no single queued reply in swaks output:\n{out}")
        msg = self.assertStored(qids[0], content)
        self.assertEqual(msg["row"]["sender"], "swaks@client.test")
        self.assertEqual([r["address"] for r in msg["rcpts"]], ["user@example.test"])

    def test_swaks_pipelining(self):
        m = self.marker()
        content = crlf(f"Subject: swaks pipe {m}\n\nbody\n")
        path = os.path.join(self.tmpdir, f"{m}.eml")
        with open(path, "wb") as f:
            f.write(content[:-2])
        p = mxdtest.swaks(self.mxd.port, "--pipeline", "--to",
                          "a@example.test,b@example.test", "--from", "p@client.test",
                          "--data", "@" + path)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, f"swaks failed:\n{out}\n{p.stderr!r}")
        qids = mxdtest.swaks_qids(out)
        self.assertEqual(len(qids), 1, out)
        msg = self.assertStored(qids[0], content)
        self.assertEqual(sorted(r["address"] for r in msg["rcpts"]),
                         ["a@example.test", "b@example.test"])

    # -- BDAT (RFC 3030)

    def bdat_session(self, params=""):
        c = self.client()
        r = c.ehlo()
        self.assertIn("CHUNKING", [ln.split(" ")[0].upper() for ln in r.lines[1:]])
        self.assertReply(c.cmd(f"MAIL FROM:<bdat@client.test>{params}"), 250)
        self.assertReply(c.cmd("RCPT TO:<user@example.test>"), 250)
        return c

    def test_bdat_single_last(self):
        content = crlf(f"Subject: bdat {self.marker()}\n\none chunk\n")
        c = self.bdat_session()
        c.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertRegex(r.lines[-1], r"^2\.0\.0 Ok: queued as \S+$")
        self.assertStored(r.qid, content)

    def test_bdat_chunks(self):
        content = crlf(f"Subject: chunks {self.marker()}\n\n") + sample_lines(300, seed=3)
        # Cut inside a CRLF pair and inside lines, so a chunk ends with CR.
        cr = content.index(b"\r\n", 40) + 1
        cuts = [0, cr, cr + 1, cr + 1000, len(content) - 7, len(content)]
        chunks = [content[a:b] for a, b in zip(cuts, cuts[1:])]
        self.assertTrue(chunks[0].endswith(b"\r") and chunks[1] == b"\n")
        c = self.bdat_session()
        for i, ch in enumerate(chunks):
            last = i == len(chunks) - 1
            c.send(f"BDAT {len(ch)}{' LAST' if last else ''}\r\n".encode() + ch)
            r = c.reply()
            if not last:
                self.assertReply(r, 250, msg=f"chunk {i}")
                self.assertIsNone(r.qid, "a non-LAST chunk must not be queued yet")
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, content)

    def test_bdat_zero_last_empty(self):
        c = self.bdat_session()
        c.send(b"BDAT 0 LAST\r\n")
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, b"")

    def test_bdat_zero_last_after_chunks(self):
        content = crlf(f"Subject: zero {self.marker()}\n\nthen zero\n")
        c = self.bdat_session()
        c.send(f"BDAT {len(content)}\r\n".encode() + content)
        self.assertReply(c.reply(), 250)
        c.send(b"BDAT 0 LAST\r\n")
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, content)

    def test_bdat_no_unstuffing(self):
        content = crlf(f"Subject: verbatim {self.marker()}\n\n.\n..two\n.\nend\n")
        c = self.bdat_session()
        c.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, content)

    def test_bdat_bare_lf_refused(self):
        m = self.marker()
        content = crlf(f"Subject: bare lf {m}\n\nline") + b"\n.\r\nmore\r\n"
        c = self.bdat_session()
        c.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
        r = c.reply()
        self.assertEqual(r.code // 100, 5, f"bare LF in BDAT must be refused: {r}")
        self.assertEqual(r.enh, "5.5.2", str(r))
        self.assertNothingStored(m)
        # The session is still usable.
        self.assertReply(c.cmd("RSET"), 250)
        ok = crlf(f"Subject: after {m}\n\nfine\n")
        r = c.send_message("bdat@client.test", ["user@example.test"], ok, ehlo=False)
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, ok)

    def test_bdat_bare_lf_in_first_chunk(self):
        m = self.marker()
        first = crlf(f"Subject: bare lf {m}\n\n") + b"a\nb\r\n"
        last = b"tail\r\n"
        c = self.bdat_session()
        c.send(f"BDAT {len(first)}\r\n".encode() + first)
        r = c.reply()
        if r.code == 250:
            c.send(f"BDAT {len(last)} LAST\r\n".encode() + last)
            r = c.reply()
        self.assertEqual(r.code // 100, 5, str(r))
        self.assertEqual(r.enh, "5.5.2", str(r))
        self.assertNothingStored(m)

    def test_bdat_bare_cr_refused(self):
        m = self.marker()
        content = crlf(f"Subject: bare cr {m}\n\nline") + b"\r.\rmore\r\n"
        c = self.bdat_session()
        c.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
        r = c.reply()
        self.assertEqual(r.code // 100, 5, str(r))
        self.assertEqual(r.enh, "5.5.2", str(r))
        self.assertNothingStored(m)

    def test_bdat_pipelined(self):
        content = crlf(f"Subject: piped {self.marker()}\n\nalpha\nbeta\n")
        a, b = content[:20], content[20:]
        c = self.client()
        c.ehlo()
        c.send(b"MAIL FROM:<p@client.test> BODY=8BITMIME\r\nRCPT TO:<user@example.test>\r\n"
               + f"BDAT {len(a)}\r\n".encode() + a + f"BDAT {len(b)} LAST\r\n".encode() + b
               + b"NOOP\r\n")
        rs = c.replies(5)
        for r in rs[:3]:
            self.assertReply(r, 250)
        self.assertIsNone(rs[2].qid)
        self.assertReply(rs[3], 250, "2.0.0")
        self.assertIsNotNone(rs[3].qid, str(rs[3]))
        self.assertReply(rs[4], 250)
        self.assertStored(rs[3].qid, content)

    def test_bdat_2mib(self):
        content = crlf(f"Subject: big bdat {self.marker()}\n\n") + sample_lines(35000, seed=11)
        self.assertGreater(len(content), 2 * 1024 * 1024)
        c = self.bdat_session(" BODY=8BITMIME")
        step = 65536
        for off in range(0, len(content), step):
            ch = content[off:off + step]
            last = off + step >= len(content)
            c.send(f"BDAT {len(ch)}{' LAST' if last else ''}\r\n".encode() + ch)
            r = c.reply(timeout=60)
            self.assertReply(r, 250, msg=f"chunk at {off}")
        self.assertStored(r.qid, content)
        self.assertSpoolEmpty()


if __name__ == "__main__":
    mxdtest.main()
