"""Content filters over the milter protocol (issue 17): the real mxd
against real filters on loopback.

MilterFilterTest: a test filter on libmilter (tests/tools/milter_filter.c,
Debian libmilter-dev; its mode picked per test) on a port mxd's
`milters` names; each test starts the filter it needs. Checked: what the
filter saw (commands and macros, from its log), reject at RCPT (that
recipient only), tempfail at MAIL, a reply code with its text cleaned and
its class set, header fields added and inserted in the stored message,
discard (250, nothing stored), a filter that sleeps past
milter_content_timeout (default action, other sessions unaffected) and
one that is down (default action at connect).

RspamdTest: rspamd (Debian rspamd) in milter mode, a private instance
(its proxy worker with milter = yes and self_scan): a GTUBE message is
refused with rspamd's reply; a clean one is stored with rspamd's
X-Spamd-Result field; with rspamd stopped the default action applies.

Each test fails with check_milter removed from check_list.c: nothing is
refused, no header is added, the filter's log stays empty.
"""

import os
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from authdns import AuthDns  # noqa: E402
import tlsutil  # noqa: E402

FILTER = os.environ.get("MXD_MILTER_FILTER") or os.path.join(
    os.path.dirname(mxdtest.mxd_path()), "..", "tests", "milter_filter")
GTUBE = (b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X")


def wait_port(port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def message(token, subject="test", body=b"Hello.\r\n"):
    return (f"From: <a@sender.test>\r\nTo: <u@example.test>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{token}@sender.test>\r\n\r\n").encode() + body


class Filter:
    """One milter_filter process in a mode, logging what it got."""

    def __init__(self, tmpdir, port, mode, extra=()):
        self.log = os.path.join(tmpdir, f"filter-{mode}-{time.monotonic_ns()}.log")
        self.proc = subprocess.Popen(
            [FILTER, "-p", f"inet:{port}@127.0.0.1", "-m", mode, "-l", self.log, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(port):
            self.stop()
            raise AssertionError("milter_filter did not start")

    def lines(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return [ln.rstrip("\n") for ln in f]
        except FileNotFoundError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def need(ok, what):
    """A missing peer fails the test (never a skip counted as a pass)."""
    if not ok:
        raise AssertionError(f"{what} missing: bash tests/deps.sh installs it")


class MilterFilterTest(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        need(os.access(FILTER, os.X_OK), "tests/milter_filter (libmilter-dev)")
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.fport = mxdtest.free_port()
        server = {
            "milters": f"inet:127.0.0.1:{cls.fport}",
            "milter_default_action": "tempfail",
            "milter_connect_timeout": "2s",
            "milter_command_timeout": "2s",
            "milter_content_timeout": "2s",
        }
        # mxd's start waits for a greeting: a filter must answer by then
        f = Filter(cls.tmpdir, cls.fport, "accept")
        try:
            cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, control=True,
                                      env=mxdtest.small_asan_quarantine()))
        finally:
            f.stop()

    def setUp(self):
        super().setUp()
        self.filter = None

    def tearDown(self):
        if self.filter is not None:
            self.filter.stop()

    def start_filter(self, mode, extra=()):
        self.filter = Filter(self.tmpdir, self.fport, mode, extra)
        return self.filter

    def send(self, rcpts=("u@example.test",), content=None, token=None):
        token = token or self.token()
        c = self.mxd.client()
        c.ehlo("helo.test")
        r = c.cmd("MAIL FROM:<a@sender.test>")
        replies = {"mail": r}
        if r.code == 250:
            for rcpt in rcpts:
                replies[rcpt] = c.cmd(f"RCPT TO:<{rcpt}>")
            if any(replies[x].code == 250 for x in rcpts):
                r = c.cmd("DATA")
                if r.code == 354:
                    c.send(mxdtest.dot_stuff(content or message(token)) + b".\r\n")
                    replies["end"] = c.reply()
        c.cmd("QUIT")
        c.close()
        return replies, token

    def stored(self, token):
        return mxdtest.messages_containing(self.mxd.db_path, token)

    def body(self, qid):
        return bytes(mxdtest.message_by_qid(self.mxd.db_path, qid)["row"]["body"])

    def test_accept_and_what_the_filter_saw(self):
        f = self.start_filter("accept")
        replies, token = self.send()
        self.assertEqual(replies["end"].code, 250, replies)
        qid = replies["end"].qid
        self.assertEqual(self.stored(token), [qid])
        deadline = time.monotonic() + 5
        while "close - -" not in f.lines() and time.monotonic() < deadline:
            time.sleep(0.05)
        got = f.lines()
        for want in ["connect [127.0.0.1] -", f"macro j {mxdtest.HOSTNAME}",
                     "macro {daemon_name} mxd", "macro {client_addr} 127.0.0.1",
                     "macro {client_name} [127.0.0.1]", "helo helo.test -",
                     "mail <a@sender.test> -", "macro {mail_addr} a@sender.test",
                     f"macro i {qid}", "rcpt <u@example.test> -",
                     "macro {rcpt_addr} u@example.test", "macro {rcpt_mailer} lmtp",
                     "header Subject test", f"header Message-ID <{token}@sender.test>",
                     "eoh - -", "body 8 -", "eom - -", "close - -"]:
            self.assertIn(want, got)
        self.assertTrue(any(x.startswith("macro {client_port} ") for x in got), got)

    def test_reject_at_rcpt_is_for_that_recipient(self):
        self.start_filter("reject-rcpt")
        replies, token = self.send(rcpts=("reject@example.test", "u@example.test"))
        self.assertEqual(replies["reject@example.test"].code, 550)
        self.assertEqual(replies["reject@example.test"].enh, "5.7.1")
        self.assertEqual(replies["u@example.test"].code, 250)
        self.assertEqual(replies["end"].code, 250)
        rcpts = mxdtest.message_by_qid(self.mxd.db_path, replies["end"].qid)["rcpts"]
        self.assertEqual([r["address"] for r in rcpts], ["u@example.test"])

    def test_tempfail_at_mail(self):
        self.start_filter("tempfail-mail")
        replies, _ = self.send()
        self.assertEqual(replies["mail"].code, 451, replies)
        self.assertEqual(replies["mail"].enh, "4.7.1")

    def test_replycode_cleaned(self):
        self.start_filter("replycode")
        replies, token = self.send()
        r = replies["end"]
        # the filter said 554 4.7.0 with a tab and a control character
        self.assertEqual(r.code, 554, r)
        # class set to the code's; the tab and the control character gone
        self.assertRegex(r.text, r"^5\.7\.0 Go away please +now$")
        self.assertEqual(self.stored(token), [])
        self.assertIn("action=replycode", self.mxd.stderr())

    def head(self, qid):
        """The stored message's header below our Received:, and its body."""
        body = self.body(qid)
        head, rest = body.split(b"\r\n\r\n", 1) if b"\r\n\r\n" in body else (body, b"")
        ours = head.index(b"Received: from ")
        nxt = head.index(b"\r\n", ours)
        while head[nxt + 2:nxt + 3] in (b" ", b"\t"):
            nxt = head.index(b"\r\n", nxt + 2)
        return head[:ours], head[nxt + 2:] + b"\r\n", rest

    def test_add_and_insert_header(self):
        self.start_filter("addheader")
        replies, token = self.send()
        self.assertEqual(replies["end"].code, 250, replies)
        above, head, _ = self.head(replies["end"].qid)
        # inserted at index 0: the top of the header the filter saw (below
        # our Received:); added: after its last field
        self.assertTrue(head.startswith(b"X-Test-Top: first\r\n\tfolded\r\nFrom: "), head)
        self.assertTrue(head.endswith(b"Message-ID: <%s@sender.test>\r\nX-Test-Filter: seen\r\n"
                                      % token.encode()), head)
        self.assertNotIn(b"X-Test", above)

    def test_modify_header_and_envelope(self):
        self.start_filter("modify")
        token = self.token()
        content = (f"From: <a@sender.test>\r\nSubject: old\r\nX-Drop: me\r\n"
                   f"X-Twice: one\r\nX-Twice: two\r\n\tfolded\r\n"
                   f"Message-ID: <{token}@sender.test>\r\n\r\nBody.\r\n").encode()
        replies, _ = self.send(rcpts=("u@example.test", "del@example.test"), content=content,
                               token=token)
        self.assertEqual(replies["end"].code, 250, replies)
        qid = replies["end"].qid
        _, head, rest = self.head(qid)
        self.assertEqual(head, (f"From: <a@sender.test>\r\nX-Inserted: at1\r\nSubject: changed\r\n"
                                f"X-Twice: one\r\nX-Twice: second changed\r\n"
                                f"Message-ID: <{token}@sender.test>\r\nX-Added: last\r\n").encode())
        self.assertEqual(rest, b"Body.\r\n")
        m = mxdtest.message_by_qid(self.mxd.db_path, qid)
        self.assertEqual([r["address"] for r in m["rcpts"]],
                         ["u@example.test", "added@example.test", "par@example.test"])
        self.assertEqual(m["row"]["sender"], "new@sender.test")
        err = self.mxd.stderr()
        self.assertIn("ignored=add_rcpt reason=domain-not-served", err)
        self.assertIn('esmtp-args-ignored "NOTIFY=NEVER"', err)

    def test_replace_body(self):
        self.start_filter("replbody")
        replies, token = self.send()
        self.assertEqual(replies["end"].code, 250, replies)
        _, head, rest = self.head(replies["end"].qid)
        self.assertIn(f"Message-ID: <{token}@sender.test>".encode(), head)
        # LF line ends made CRLF
        self.assertEqual(rest, b"Replaced body\r\nline 2\r\n")

    def test_replace_body_large_is_spooled(self):
        # 3 MB of new body for a small message: spooled like a large one
        self.start_filter("replbody-big", ("-b", "3000000"))
        replies, token = self.send()
        self.assertEqual(replies["end"].code, 250, replies)
        _, _, rest = self.head(replies["end"].qid)
        # every LF made CRLF, nothing else changed
        self.assertEqual(len(rest), 3000000 + rest.count(b"\r\n"))
        self.assertEqual(rest.replace(b"\r\n", b""), b"x" * (3000000 - rest.count(b"\r\n")))
        self.assertNotIn(b"Hello.", rest)
        self.wait_spool_empty()

    def wait_spool_empty(self):
        deadline = time.monotonic() + 5
        while self.mxd.spool_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.mxd.spool_files(), [])

    def test_replace_body_filter_dies_midway(self):
        # half of a new body, then the filter is gone: nothing half-made is
        # stored, the client may retry (with default_action = accept too:
        # MisbehavingMilterTest), and no spool file is left
        self.start_filter("replbody-die", ("-b", "2000000"))
        replies, token = self.send()
        self.assertEqual(replies["end"].code, 451, replies)
        self.assertEqual(self.stored(token), [])
        self.assertIn("filter failed", self.mxd.stderr())
        self.wait_spool_empty()

    def test_quarantine_held_and_released(self):
        self.start_filter("quarantine")
        replies, token = self.send()
        self.assertEqual(replies["end"].code, 250, replies)
        qid = replies["end"].qid
        rcpts = mxdtest.message_by_qid(self.mxd.db_path, qid)["rcpts"]
        self.assertEqual([r["state"] for r in rcpts], ["held"])
        self.assertIn("test quarantine", rcpts[0]["last_reply"])
        q = self.mxd.mxctl("queue")
        self.assertEqual(q.returncode, 0, q)
        self.assertIn(qid, q.stdout.decode())
        self.assertIn("held", q.stdout.decode())
        self.assertIn("test quarantine", q.stdout.decode())
        r = self.mxd.mxctl("release", qid)
        self.assertEqual(r.returncode, 0, r)
        rcpts = mxdtest.message_by_qid(self.mxd.db_path, qid)["rcpts"]
        self.assertNotEqual(rcpts[0]["state"], "held")

    def test_progress_keeps_the_timeout_alive(self):
        # 4 s at the end of message, past milter_content_timeout (2 s),
        # with PROGRESS every half second: the message is accepted
        self.start_filter("progress", ("-s", "4"))
        replies, token = self.send()
        self.assertEqual(replies["end"].code, 250, replies)
        self.assertEqual(len(self.stored(token)), 1)

    def test_slow_filter_back_pressure_50mb(self):
        # a filter slower than the client: mxd stops reading instead of
        # queueing the message for it (or failing it past 1 MiB queued)
        f = self.start_filter("slow", ("-d", "4"))
        rss0 = self.mxd.rss_kib()
        token = self.token()
        line = b"y" * 998 + b"\r\n"
        c = self.mxd.client(timeout=120)
        c.ehlo("helo.test")
        self.assertEqual(c.cmd("MAIL FROM:<a@sender.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(message(token, body=b""))
        peak = 0
        total = 50 * 1000 * 1000
        sent = 0
        chunk = line * 1000
        while sent < total:
            c.send(chunk)
            sent += len(chunk)
            if sent % (5 * len(chunk)) == 0:
                peak = max(peak, self.mxd.rss_kib())
        c.send(b".\r\n")
        r = c.reply(timeout=120)
        c.close()
        self.assertEqual(r.code, 250, r)
        body_seen = sum(int(x.split()[1]) for x in f.lines() if x.startswith("body "))
        self.assertGreaterEqual(body_seen, total)
        grew = peak - rss0
        print(f"slow filter, 50 MB: rss before {rss0} KiB, peak {peak} KiB, grew {grew} KiB",
              file=sys.stderr)
        self.assertLess(grew, 24 * 1024, (rss0, peak))

    def test_discard(self):
        self.start_filter("discard")
        replies, token = self.send()
        self.assertEqual(replies["end"].code, 250, replies)
        self.assertIn("discarded", replies["end"].text)
        self.assertEqual(self.stored(token), [])

    def test_change_header(self):
        self.start_filter("chgheader")
        content = (b"From: <a@sender.test>\r\nSubject: old\r\nX-Drop: me\r\n"
                   b"Message-ID: <%s@sender.test>\r\n\r\nHi.\r\n")
        token = self.token()
        replies, _ = self.send(content=content % token.encode(), token=token)
        self.assertEqual(replies["end"].code, 250, replies)
        _, head, _ = self.head(replies["end"].qid)
        self.assertIn(b"Subject: changed\r\n", head)
        self.assertNotIn(b"X-Drop", head)
        self.assertNotIn(b"old", head)

    def test_slow_filter_default_action_and_no_stall(self):
        self.start_filter("sleep", ("-s", "6"))
        t0 = time.monotonic()
        c = self.mxd.client()
        c.ehlo("helo.test")
        self.assertEqual(c.cmd("MAIL FROM:<a@sender.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        token = self.token()
        c.send(mxdtest.dot_stuff(message(token)) + b".\r\n")
        # while that filter sleeps, another session goes on
        t1 = time.monotonic()
        other = self.mxd.client()
        self.assertEqual(other.ehlo("other.test").code, 250)
        other.close()
        self.assertLess(time.monotonic() - t1, 1.5)
        r = c.reply(timeout=10)
        waited = time.monotonic() - t0
        c.close()
        self.assertEqual(r.code, 451, r)
        self.assertEqual(r.enh, "4.7.1")
        self.assertGreaterEqual(waited, 1.8)
        self.assertLess(waited, 5)
        self.assertEqual(self.stored(token), [])
        self.assertIn("timeout waiting for a reply", self.mxd.stderr())

    def test_filter_down_default_action(self):
        # nothing listens on the filter's port
        c = self.mxd.client(banner=False)
        r = c.reply()
        c.close()
        self.assertEqual(r.code, 451, r)
        self.assertIn("filter failed", self.mxd.stderr())


class MilterFcrdnsTest(mxdtest.ClassMxd, unittest.TestCase):
    """With fcrdns = on, the filter is told the client's forward-confirmed
    name ({client_name}, the connect command's host name), not "[IP]"."""

    @classmethod
    def setUpClass(cls):
        need(os.access(FILTER, os.X_OK), "tests/milter_filter (libmilter-dev)")
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.dns = AuthDns({"1.0.0.127.in-addr.arpa": [("PTR", "client.good.test")],
                           "client.good.test": [("A", "127.0.0.1")]})
        cls.dns.start()
        cls.addClassCleanup(cls.dns.stop)
        cls.fport = mxdtest.free_port()
        f = Filter(cls.tmpdir, cls.fport, "accept")
        try:
            cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server={
                "milters": f"inet:127.0.0.1:{cls.fport}", "fcrdns": "on",
                "dns_servers": cls.dns.server}))
        finally:
            f.stop()

    def test_client_name_is_the_confirmed_name(self):
        f = Filter(self.tmpdir, self.fport, "accept")
        self.addCleanup(f.stop)
        c = self.mxd.client()
        c.ehlo("helo.test")
        c.cmd("QUIT")
        c.close()
        deadline = time.monotonic() + 5
        while "close - -" not in f.lines() and time.monotonic() < deadline:
            time.sleep(0.05)
        got = f.lines()
        self.assertIn("macro {client_name} client.good.test", got)
        self.assertIn("macro _ client.good.test [127.0.0.1]", got)
        self.assertIn("connect client.good.test -", got)


class MilterTlsTest(mxdtest.ClassMxd, unittest.TestCase):
    """After STARTTLS the filter is told {tls_version} and {cipher}."""

    @classmethod
    def setUpClass(cls):
        need(os.access(FILTER, os.X_OK), "tests/milter_filter (libmilter-dev)")
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        pki = tlsutil.make_pki(os.path.join(cls.tmpdir, "pki"))
        cls.fport = mxdtest.free_port()
        f = Filter(cls.tmpdir, cls.fport, "accept")
        try:
            cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server={
                "milters": f"inet:127.0.0.1:{cls.fport}"},
                extra=tlsutil.tls_section(pki.cert, pki.key)))
        finally:
            f.stop()

    def test_tls_macros(self):
        f = Filter(self.tmpdir, self.fport, "accept")
        self.addCleanup(f.stop)
        s = smtplib.SMTP("127.0.0.1", self.mxd.port, timeout=10)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s.starttls(context=ctx)
        s.sendmail("a@sender.test", ["u@example.test"], message(self.token()))
        s.quit()
        got = f.lines()
        self.assertTrue(any(x.startswith("macro {tls_version} TLS1.") for x in got), got)
        self.assertTrue(any(x.startswith("macro {cipher} ") for x in got), got)


class BadMilter:
    """A milter server written here that misbehaves on purpose, one way per
    connection: mode is read for each new connection."""

    def __init__(self, port):
        self.mode = "ok"
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.conns = []
        self.bodies = []  # the body each connection was sent, at its end of message
        self.content_segs = []  # "nr-count": TCP segments from DATA to end of message
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.talk, args=(c, self.mode), daemon=True).start()

    @staticmethod
    def packet(cmd, data=b""):
        return struct.pack(">I", len(data) + 1) + cmd + data

    @staticmethod
    def read_packet(c):
        head = b""
        while len(head) < 4:
            got = c.recv(4 - len(head))
            if not got:
                return None, None
            head += got
        n = struct.unpack(">I", head)[0]
        data = b""
        while len(data) < n:
            got = c.recv(n - len(data))
            if not got:
                return None, None
            data += got
        return data[:1], data[1:]

    @staticmethod
    def segs_in(c):
        # struct tcp_info's tcpi_segs_in (Linux: offset 140)
        return struct.unpack_from("<I", c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256),
                                  140)[0]

    def talk(self, c, mode):
        body = bytearray()
        segs0 = 0
        if mode == "nr-slow":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        try:
            while True:
                cmd, data = self.read_packet(c)
                if cmd is None:
                    return
                if cmd == b"T" and mode == "nr-count":
                    segs0 = self.segs_in(c)
                if cmd == b"E" and mode == "nr-count":
                    self.content_segs.append(self.segs_in(c) - segs0)
                if cmd == b"O":
                    # nr-slow, nr-count: no reply to header fields and body chunks
                    # (NR_HDR, NR_BODY), as rspamd asks
                    steps = 0x80 | 0x80000 if mode in ("nr-slow", "nr-count") else 0
                    c.sendall(self.packet(b"O", struct.pack(">III", 6, 0x1ff, steps)))
                elif cmd in (b"D", b"A"):
                    continue
                elif cmd == b"B" and mode == "close":
                    return
                elif cmd == b"B":
                    body += data
                    if mode == "nr-slow":
                        time.sleep(0.01)  # reads slower than mxd writes: its socket fills
                        continue
                    c.sendall(self.packet(b"c"))
                elif cmd in (b"B", b"L") and mode == "nr-count":
                    body += data if cmd == b"B" else b""
                    continue
                elif cmd == b"L" and mode == "nr-slow":
                    continue
                elif cmd == b"E":
                    self.bodies.append(bytes(body))
                    body = bytearray()
                    if mode == "silence":
                        time.sleep(30)
                        return
                    if mode == "half-body":
                        c.sendall(self.packet(b"b", b"half of a new body\r\n" * 100))
                        return
                    c.sendall(self.packet(b"a"))
                elif cmd == b"Q":
                    return
                elif cmd == b"C" and mode == "garbage":
                    c.sendall(b"\x00\x00\x00\x02Zgarbage")
                elif cmd == b"C" and mode == "oversized":
                    c.sendall(b"\x7f\xff\xff\xffc")
                else:
                    c.sendall(self.packet(b"c"))
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


class MisbehavingMilterTest(mxdtest.ClassMxd, unittest.TestCase):
    """A filter that answers garbage, an oversized length, closes
    mid-message or falls silent, with milter_default_action = accept:
    the message is stored as received (nothing accepted is lost), the
    filter's failure is logged, and other sessions go on meanwhile. A
    filter that dies halfway through a new body: 451, nothing stored."""

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.fport = mxdtest.free_port()
        cls.bad = BadMilter(cls.fport)
        cls.addClassCleanup(cls.bad.stop)
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server={
            "milters": f"inet:127.0.0.1:{cls.fport}",
            "milter_default_action": "accept",
            "milter_command_timeout": "2s",
            "milter_content_timeout": "2s"}))

    def deliver(self, mode):
        self.bad.mode = mode
        token = self.token()
        c = self.mxd.client(timeout=15)
        r = c.send_message("a@sender.test", ["u@example.test"],
                           mxdtest.dot_stuff(message(token)))
        c.close()
        return r, token

    def assert_stored_whole(self, r, token):
        self.assertEqual(r.code, 250, r)
        body = bytes(mxdtest.message_by_qid(self.mxd.db_path, r.qid)["row"]["body"])
        self.assertTrue(body.endswith(message(token)), body[-300:])

    def test_garbage(self):
        r, token = self.deliver("garbage")
        self.assert_stored_whole(r, token)
        self.assertIn("filter failed", self.mxd.stderr())

    def test_oversized_length(self):
        r, token = self.deliver("oversized")
        self.assert_stored_whole(r, token)

    def test_close_mid_message(self):
        r, token = self.deliver("close")
        self.assert_stored_whole(r, token)
        self.assertIn("connection closed by the filter", self.mxd.stderr())

    def test_silence_does_not_stall_others(self):
        self.bad.mode = "silence"
        token = self.token()
        c = self.mxd.client(timeout=15)
        c.ehlo()
        self.assertEqual(c.cmd("MAIL FROM:<a@sender.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(mxdtest.dot_stuff(message(token)) + b".\r\n")
        # meanwhile another session, with a filter that behaves
        self.bad.mode = "ok"
        t0 = time.monotonic()
        r2, token2 = self.deliver("ok")
        self.assertLess(time.monotonic() - t0, 1.5)
        self.assert_stored_whole(r2, token2)
        r = c.reply(timeout=10)
        c.close()
        self.assert_stored_whole(r, token)
        self.assertIn("timeout waiting for a reply", self.mxd.stderr())

    def test_no_reply_body_larger_than_the_socket_takes(self):
        # the filter asks for no reply to header fields and body chunks and
        # reads slowly: mxd's socket fills, what it does not take waits in
        # a write request, and the filter still gets the whole body in order
        self.bad.mode = "nr-slow"
        token = self.token()
        body = b"".join(b"%07d " % i + b"z" * 90 + b"\r\n" for i in range(80000))  # 7.8 MB
        del self.bad.bodies[:]
        c = self.mxd.client(timeout=60)
        r = c.send_message("a@sender.test", ["u@example.test"],
                           mxdtest.dot_stuff(message(token, body=body)))
        c.close()
        self.bad.mode = "ok"
        self.assertEqual(r.code, 250, r)
        self.assertEqual(len(self.bad.bodies), 1)
        self.assertEqual(len(self.bad.bodies[0]), len(body))
        self.assertTrue(self.bad.bodies[0] == body, "the filter got another body")
        stored = bytes(mxdtest.message_by_qid(self.mxd.db_path, r.qid)["row"]["body"])
        self.assertTrue(stored.endswith(body))

    def test_content_commands_go_together(self):
        # header fields, end of header and body chunks the filter does not
        # answer go out with one write per piece of content, not one per
        # field (rspamd, issue 22): 12 fields, about two segments from DATA
        # to end of message (the fields with EOH, the body with EOB), not 14
        self.bad.mode = "nr-count"
        del self.bad.content_segs[:]
        token = self.token()
        head = "".join(f"X-Field-{i}: value {i}\r\n" for i in range(8))
        content = (f"From: <a@sender.test>\r\nTo: <u@example.test>\r\nSubject: s\r\n"
                   f"Message-ID: <{token}@sender.test>\r\n{head}\r\n").encode() + b"Hello.\r\n"
        c = self.mxd.client(timeout=15)
        r = c.send_message("a@sender.test", ["u@example.test"], mxdtest.dot_stuff(content))
        c.close()
        self.bad.mode = "ok"
        self.assertEqual(r.code, 250, r)
        self.assertEqual(len(self.bad.content_segs), 1)
        self.assertLessEqual(self.bad.content_segs[0], 4, self.bad.content_segs)
        self.assertEqual(self.bad.bodies[-1], b"Hello.\r\n")

    def test_half_new_body_is_not_stored(self):
        r, token = self.deliver("half-body")
        self.assertEqual(r.code, 451, r)
        self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, token), [])
        self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, "half of a new"), [])


def rspamd_path():
    return shutil.which("rspamd")


class RspamdTest(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        need(rspamd_path(), "rspamd")
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.rport = mxdtest.free_port()
        cls.rspamd = cls.start_rspamd(cls.tmpdir, cls.rport)
        cls.addClassCleanup(cls.stop_rspamd)
        cls.mport = mxdtest.free_port()
        server = {
            "milters": f"inet:127.0.0.1:{cls.rport}",
            "milter_default_action": "tempfail",
            "milter_content_timeout": "20s",
            "milter_reuse": "on",  # rspamd takes QUIT_NC in any state
            "metrics_listen": f"127.0.0.1:{cls.mport}",
        }
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server))

    @classmethod
    def start_rspamd(cls, tmpdir, port, dns_port=None, headers=(), more_files=None,
                     dns_timeout="0.2s"):
        rdir = os.path.join(tmpdir, "rspamd")
        for d in ("db", "run", "log", "local.d"):
            os.makedirs(os.path.join(rdir, d), exist_ok=True)
        os.chmod(tmpdir, 0o755)
        tld = os.path.join(rdir, "tld.dat")
        with open(tld, "w") as f:
            f.write("test\ncom\nnet\norg\n")
        # dns_port: a name server for rspamd's lookups (tests/bench/stack.py);
        # by default a port where none listens
        ctl, normal, dns = mxdtest.free_port(), mxdtest.free_port(), dns_port or mxdtest.free_port()
        # Debian's rspamd.conf with our own LOCAL_CONFDIR: every module as
        # packaged, the sockets, paths and a few settings overridden
        files = {
            "override.d/worker-proxy.inc": f"""bind_socket = "127.0.0.1:{port}";
milter = yes;
timeout = 120s;
count = 1;
upstream "local" {{ default = yes; self_scan = yes; }}
""",
            "override.d/worker-normal.inc": f'bind_socket = "127.0.0.1:{normal}";\ncount = 1;\n',
            "override.d/worker-controller.inc": f'bind_socket = "127.0.0.1:{ctl}";\ncount = 1;\n',
            "override.d/options.inc": f"""url_tld = "{tld}";
dns {{ nameserver = ["127.0.0.1:{dns}"]; timeout = {dns_timeout}; retransmits = 1; }}
hs_cache_dir = "{rdir}/db";
""",
            "override.d/logging.inc": f'type = "file";\nfilename = "{rdir}/log/rspamd.log";\n'
                                      'level = "info";\n',
            "local.d/milter_headers.conf": "use = [" + ", ".join(
                f'"{h}"' for h in ("x-spamd-result", "x-spam-status", *headers)) + "];\n"
                                           "skip_local = false;\nskip_authenticated = false;\n",
        }
        files.update(more_files or {})
        os.makedirs(os.path.join(rdir, "override.d"), exist_ok=True)
        for name, text in files.items():
            with open(os.path.join(rdir, name), "w") as f:
                f.write(text)
        conf = "/etc/rspamd/rspamd.conf"
        uid = "nobody"
        subprocess.run(["chown", "-R", f"{uid}:nogroup", rdir], check=False)
        log = open(os.path.join(rdir, "stderr.log"), "w")
        proc = subprocess.Popen(
            ["rspamd", "-f", "-c", conf, "-u", uid, "-g", "nogroup", "-i",
             f"--var=DBDIR={rdir}/db", f"--var=RUNDIR={rdir}/run",
             f"--var=LOGDIR={rdir}/log", f"--var=LOCAL_CONFDIR={rdir}"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not wait_port(port, 60):
            proc.kill()
            proc.wait()
            with open(os.path.join(rdir, "stderr.log")) as f:
                raise AssertionError("rspamd did not start: " + f.read()[-3000:])
        return proc

    @classmethod
    def stop_rspamd(cls):
        if cls.rspamd.poll() is None:
            cls.rspamd.send_signal(signal.SIGTERM)
            try:
                cls.rspamd.wait(10)
            except subprocess.TimeoutExpired:
                cls.rspamd.kill()
                cls.rspamd.wait()

    def test_1_clean_message_gets_rspamd_headers(self):
        token = self.token()
        c = self.mxd.client()
        r = c.send_message("a@sender.test", ["u@example.test"],
                           mxdtest.dot_stuff(message(token)))
        c.close()
        self.assertEqual(r.code, 250, r)
        body = bytes(mxdtest.message_by_qid(self.mxd.db_path, r.qid)["row"]["body"])
        head = body.split(b"\r\n\r\n", 1)[0]
        self.assertIn(b"X-Spamd-Result:", head, head)

    def test_1b_connection_reused(self):
        name = f"inet:127.0.0.1:{self.rport}"
        before = metric_value(self.mport, "mxd_milter_events_total", filter=name, event="reuse")
        for _ in range(3):
            self.test_1_clean_message_gets_rspamd_headers()
            time.sleep(0.1)  # the session's end parks the connection
        after = metric_value(self.mport, "mxd_milter_events_total", filter=name, event="reuse")
        self.assertGreaterEqual(after - before, 2)

    def test_2_gtube_refused(self):
        token = self.token()
        c = self.mxd.client()
        c.ehlo()
        self.assertEqual(c.cmd("MAIL FROM:<a@sender.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(mxdtest.dot_stuff(message(token, body=GTUBE + b"\r\n")) + b".\r\n")
        r = c.reply(timeout=30)
        c.close()
        self.assertEqual(r.code, 554, r)
        self.assertIn("Gtube pattern", r.text)
        self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, token), [])

    def test_3_rspamd_stopped_default_action(self):
        self.stop_rspamd()
        c = self.mxd.client(banner=False)
        r = c.reply()
        c.close()
        self.assertEqual(r.code, 451, r)


def metric_value(port, name, **labels):
    """One series of mxd's /metrics (0 when absent)."""
    import re
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(name), re.escape(sel)), text, re.M)
    return int(m.group(1)) if m else 0


def milter_section(name, port, **keys):
    lines = [f"[milter {name}]", f"socket = inet:127.0.0.1:{port}"]
    lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


class NamedMiltersTest(mxdtest.ClassMxd, unittest.TestCase):
    """[milter NAME] sections and milters lists: two filters in order, a
    domain's own list (and the global list for a message with recipients
    in several domains), default_action per section, metrics per filter.
    Each fails without the sections: the config does not load, or the
    filters are asked as the [server] list alone says."""

    @classmethod
    def setUpClass(cls):
        need(os.access(FILTER, os.X_OK), "tests/milter_filter (libmilter-dev)")
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        ports = {n: mxdtest.free_port() for n in ("first", "second", "dom", "down", "downrej")}
        cls.mport = mxdtest.free_port()
        cls.filters = {}
        for name in ("first", "second", "dom"):
            f = Filter(cls.tmpdir, ports[name], "addheader", ("-n", name))
            cls.addClassCleanup(f.stop)
            cls.filters[name] = f
        extra = (milter_section("first", ports["first"])
                 + milter_section("second", ports["second"], command_timeout="3s")
                 + milter_section("dom", ports["dom"])
                 + milter_section("down", ports["down"], default_action="accept")
                 + milter_section("downrej", ports["downrej"], default_action="reject"))
        server = {
            "milters": "first, second",
            "milter_default_action": "tempfail",
            "milter_connect_timeout": "2s",
            "milter_command_timeout": "2s",
            "milter_content_timeout": "5s",
            "metrics_listen": f"127.0.0.1:{cls.mport}",
        }
        domains = {
            "example.test": {"mode": "local", "recipients": "any"},
            "other.test": {"mode": "local", "recipients": "any", "milters": "dom"},
            "skip.test": {"mode": "local", "recipients": "any", "milters": "down"},
            "rej.test": {"mode": "local", "recipients": "any", "milters": "downrej"},
            "none.test": {"mode": "local", "recipients": "any", "milters": "none"},
        }
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, domains=domains, extra=extra))

    def marks(self):
        return {n: len(f.lines()) for n, f in self.filters.items()}

    def new_lines(self, marks, name, wait_for=None):
        deadline = time.monotonic() + 5
        while True:
            got = self.filters[name].lines()[marks[name]:]
            if wait_for is None or wait_for in got or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def send(self, rcpts, token):
        c = self.mxd.client()
        c.ehlo("helo.test")
        replies = {"mail": c.cmd("MAIL FROM:<a@sender.test>")}
        for rcpt in rcpts:
            replies[rcpt] = c.cmd(f"RCPT TO:<{rcpt}>")
        if any(replies[x].code == 250 for x in rcpts):
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(mxdtest.dot_stuff(message(token)) + b".\r\n")
            replies["end"] = c.reply(timeout=20)
        c.cmd("QUIT")
        c.close()
        return replies

    def header(self, qid):
        body = bytes(mxdtest.message_by_qid(self.mxd.db_path, qid)["row"]["body"])
        return body.split(b"\r\n\r\n", 1)[0]

    def test_two_named_filters_in_order(self):
        calls = metric_value(self.mport, "mxd_milter_events_total", filter="second", event="call")
        token = self.token()
        m = self.marks()
        replies = self.send(["u@example.test"], token)
        self.assertEqual(replies["end"].code, 250, replies)
        head = self.header(replies["end"].qid)
        # each filter's changes in list order: first's field, then second's
        self.assertIn(b"X-Test-Filter: first\r\nX-Test-Filter: second", head)
        self.assertEqual(self.new_lines(m, "dom"), [])  # not in the global list
        for name in ("first", "second"):
            self.assertIn(f"header Message-ID <{token}@sender.test>",
                          self.new_lines(m, name, "eom - -"))
        # per filter: connect, HELO, MAIL, RCPT, end of message
        self.assertEqual(metric_value(self.mport, "mxd_milter_events_total", filter="second",
                                      event="call") - calls, 5)
        self.assertGreater(metric_value(self.mport, "mxd_milter_events_total", filter="first",
                                        event="accept"), 0)

    def test_domain_list(self):
        token = self.token()
        m = self.marks()
        replies = self.send(["u@other.test"], token)
        self.assertEqual(replies["end"].code, 250, replies)
        head = self.header(replies["end"].qid)
        self.assertTrue(head.endswith(b"X-Test-Filter: dom"), head)
        self.assertNotIn(b"X-Test-Filter: first", head)
        self.assertNotIn(b"X-Test-Filter: second", head)
        # dom joined at RCPT: told connect, HELO and MAIL first
        got = self.new_lines(m, "dom", "eom - -")
        for want in ["connect [127.0.0.1] -", "helo helo.test -", "mail <a@sender.test> -",
                     "rcpt <u@other.test> -", f"header Message-ID <{token}@sender.test>",
                     "eom - -"]:
            self.assertIn(want, got)
        self.assertLess(got.index("connect [127.0.0.1] -"), got.index("rcpt <u@other.test> -"))
        # the global filters saw MAIL (before any recipient), then ABORT
        got = self.new_lines(m, "first", "abort - -")
        self.assertIn("mail <a@sender.test> -", got)
        self.assertIn("abort - -", got)
        self.assertNotIn("rcpt <u@other.test> -", got)
        self.assertNotIn(f"header Message-ID <{token}@sender.test>", got)

    def test_recipients_in_two_domains_use_the_global_list(self):
        token = self.token()
        m = self.marks()
        replies = self.send(["u@other.test", "v@example.test"], token)
        self.assertEqual(replies["end"].code, 250, replies)
        head = self.header(replies["end"].qid)
        self.assertIn(b"X-Test-Filter: first\r\nX-Test-Filter: second", head)
        self.assertNotIn(b"X-Test-Filter: dom", head)
        # the global filters catch up on the first recipient
        got = self.new_lines(m, "second", "eom - -")
        self.assertIn("rcpt <u@other.test> -", got)
        self.assertIn("rcpt <v@example.test> -", got)
        self.assertIn(f"header Message-ID <{token}@sender.test>", got)
        got = self.new_lines(m, "dom", "abort - -")
        self.assertIn("rcpt <u@other.test> -", got)
        self.assertNotIn(f"header Message-ID <{token}@sender.test>", got)

    def test_domain_with_no_filters(self):
        token = self.token()
        replies = self.send(["u@none.test"], token)
        self.assertEqual(replies["end"].code, 250, replies)
        self.assertNotIn(b"X-Test-Filter", self.header(replies["end"].qid))

    def test_default_action_per_section(self):
        # [server] says tempfail; the sections say accept and reject
        token = self.token()
        replies = self.send(["u@skip.test"], token)
        self.assertEqual(replies["u@skip.test"].code, 250, replies)
        self.assertEqual(replies["end"].code, 250, replies)
        self.assertIn("filter failed filter=down", self.mxd.stderr())
        replies = self.send(["u@rej.test"], self.token())
        self.assertEqual(replies["u@rej.test"].code, 550, replies)
        self.assertEqual(replies["u@rej.test"].enh, "5.7.1")
        self.assertGreater(metric_value(self.mport, "mxd_milter_events_total", filter="downrej",
                                        event="error"), 0)


class MilterReuseTest(mxdtest.ClassMxd, unittest.TestCase):
    """reuse = on: a filter's connection outlives its SMTP session (QUIT_NC)
    and the next session takes it, without a connect or an option
    negotiation. libmilter takes a QUIT_NC only right after a message it
    answered with continue ("continue" mode); where it drops one ("accept"
    mode: after a message it accepted libmilter drops both the QUIT_NC and
    the CONNECT after it) one session waits for the filter's first reply
    (1 s here), starts over on a new connection, and from then on that
    filter's connections are parked only after a message it continued
    (never, for this one). Without reuse the counts of "reuse" stay 0."""

    @classmethod
    def setUpClass(cls):
        need(os.access(FILTER, os.X_OK), "tests/milter_filter (libmilter-dev)")
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.ports = {n: mxdtest.free_port() for n in ("cont", "acc")}
        cls.mport = mxdtest.free_port()
        cls.filters = {}
        for name, mode in (("cont", "continue"), ("acc", "accept")):
            f = Filter(cls.tmpdir, cls.ports[name], mode, ("-n", name))
            cls.addClassCleanup(f.stop)
            cls.filters[name] = f
        extra = (milter_section("cont", cls.ports["cont"], reuse="on")
                 + milter_section("acc", cls.ports["acc"], reuse="on", command_timeout="1s"))
        server = {"milters": "none", "milter_default_action": "tempfail",
                  "metrics_listen": f"127.0.0.1:{cls.mport}"}
        domains = {
            "example.test": {"mode": "local", "recipients": "any", "milters": "cont"},
            "acc.test": {"mode": "local", "recipients": "any", "milters": "acc"},
        }
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, domains=domains, extra=extra))

    def send(self, rcpt):
        token = self.token()
        c = self.mxd.client()
        r = c.send_message("a@sender.test", [rcpt], mxdtest.dot_stuff(message(token)))
        c.cmd("QUIT")
        c.close()
        return r, token

    def count(self, name, event):
        return metric_value(self.mport, "mxd_milter_events_total", filter=name, event=event)

    def test_reused_across_sessions(self):
        before = self.count("cont", "reuse")
        for _ in range(4):
            r, token = self.send("u@example.test")
            self.assertEqual(r.code, 250, r)
            self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, token), [r.qid])
            time.sleep(0.1)  # the session's end parks the connection
        self.assertGreaterEqual(self.count("cont", "reuse") - before, 3)
        lines = self.filters["cont"].lines()
        # the filter saw every session from the start: connect and HELO again
        self.assertGreaterEqual(sum(ln.startswith("connect ") for ln in lines), 4, lines)
        self.assertGreaterEqual(sum(ln.startswith("eom ") for ln in lines), 4, lines)

    def test_filter_ignoring_quit_nc_costs_one_timeout(self):
        start = time.monotonic()
        for _ in range(4):
            r, token = self.send("u@acc.test")
            self.assertEqual(r.code, 250, r)
            self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, token), [r.qid])
            time.sleep(0.1)
        self.assertEqual(self.count("acc", "reuse_failed"), 1)
        self.assertEqual(self.count("acc", "reuse"), 1)
        self.assertIn("it takes QUIT_NC only after a message", self.mxd.stderr())
        self.assertLess(time.monotonic() - start, 10)


class MilterReloadTest(mxdtest.ClassMxd, unittest.TestCase):
    """SIGHUP with a new filter list: new sessions ask the new filters, a
    session open across the reload keeps its filters and is not dropped."""

    @classmethod
    def setUpClass(cls):
        need(os.access(FILTER, os.X_OK), "tests/milter_filter (libmilter-dev)")
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.ports = {n: mxdtest.free_port() for n in ("old", "new")}
        for name in ("old", "new"):
            f = Filter(cls.tmpdir, cls.ports[name], "addheader", ("-n", name))
            cls.addClassCleanup(f.stop)
        server = {"milters": "old", "milter_command_timeout": "5s"}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server,
                                  extra=milter_section("old", cls.ports["old"])))

    def finish(self, c, token):
        self.assertEqual(c.cmd("MAIL FROM:<a@sender.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(mxdtest.dot_stuff(message(token)) + b".\r\n")
        r = c.reply(timeout=20)
        self.assertEqual(r.code, 250, r)
        body = bytes(mxdtest.message_by_qid(self.mxd.db_path, r.qid)["row"]["body"])
        return body.split(b"\r\n\r\n", 1)[0]

    def test_reload_new_list_for_new_sessions(self):
        before = self.mxd.client()
        self.addCleanup(before.close)
        before.ehlo("helo.test")
        self.mxd.server["milters"] = "new"
        self.mxd.extra = milter_section("new", self.ports["new"])
        self.mxd.write_config()
        self.mxd.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "mxd reloaded" not in self.mxd.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("mxd reloaded", self.mxd.stderr())
        after = self.mxd.client()
        self.addCleanup(after.close)
        after.ehlo("helo.test")
        head = self.finish(after, self.token())
        self.assertIn(b"X-Test-Filter: new", head)
        self.assertNotIn(b"X-Test-Filter: old", head)
        # the session from before the reload: its filters, not dropped
        head = self.finish(before, self.token())
        self.assertIn(b"X-Test-Filter: old", head)
        self.assertNotIn(b"X-Test-Filter: new", head)


if __name__ == "__main__":
    unittest.main()
