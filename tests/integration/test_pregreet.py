"""The pre-greet test (issue 16 part 3, postscreen's) and the memory of the
clients that passed it (schema 005, screen_ttl), with greet_wait = 1s.

A client that waits gets the teaser "220-<hostname> ESMTP" at once, the
final 220 line after the wait, and can send mail; one that talks before
the greeting (EHLO after the teaser, or a whole pipelined transaction
before anything) is refused (reject: 554 5.5.1, or drop: closed without a
word), logged and counted, and nothing it sent is taken as a command; a
client that passed gets its greeting at once next time, also after a
restart of mxd (the pass is in SQLite); trusted_networks skip the test;
with the test off nothing changes.

Many clients: every test speaks from 127.0.0.N addresses of its own
(Linux lets a loopback client bind any of them), or through a listener
marked proxy with PROXY headers, so the memory of one test does not
answer for another. 127.0.0.1 is trusted in every class: the harness's
start-up probe (it sends QUIT as soon as it sees a 220 line) is not a
client under test."""

import os
import re
import socket
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import HOSTNAME, Mxd, MxdTestCase, proxy_header  # noqa: E402

WAIT = 1.0  # greet_wait
FAST = 0.2  # a greeting without the wait comes within this
TEASER = f"220-{HOSTNAME} ESMTP\r\n".encode()
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
REFUSAL = "5.5.1 Error: SMTP protocol violation, talked before the greeting"


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode("utf-8")
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def read_all(sock, timeout=5):
    """Everything mxd sends until it closes (or timeout)."""
    data = b""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


class Screening:
    """Helpers for a class with one mxd (cls.mxd) and a metrics port."""

    def pregreet(self, result):
        return metrics(self.mport).get(f'mxd_pregreet_total{{result="{result}"}}', 0)

    def assertLogged(self, pattern, timeout=5):
        want = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want.search(self.mxd.stderr(limit=1 << 20)):
                return
            time.sleep(0.05)
        self.fail(f"no log line {pattern!r}; stderr:\n{self.mxd.stderr()}")

    def raw(self, source, port=None):
        s = socket.create_connection(("127.0.0.1", port or self.mxd.port), timeout=10,
                                     source_address=(source, 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.addCleanup(s.close)
        return s

    def greet(self, source, **kw):
        """Connects and reads the whole greeting: (client, greeting reply,
        seconds it took, the first line and when it came)."""
        t0 = time.monotonic()
        c = self.client(banner=False, source=source, **kw)
        first = c._line(time.monotonic() + 5)
        t_first = time.monotonic() - t0
        c.buf = first + c.buf
        r = c.reply(timeout=5)
        return c, r, time.monotonic() - t0, first, t_first

    def passed(self, source, **kw):
        """A client that waits: teaser at once, the rest after the wait."""
        c, r, took, first, t_first = self.greet(source, **kw)
        self.assertEqual(first, TEASER)
        self.assertLess(t_first, FAST, "the teaser comes at once")
        self.assertReply(r, 220)
        self.assertEqual(r.lines, [f"{HOSTNAME} ESMTP", f"{HOSTNAME} ESMTP mxd"])
        self.assertGreaterEqual(took, WAIT - 0.05, "the greeting came before greet_wait")
        self.assertLess(took, WAIT + 1.0)
        return c


class Reject(Screening, MxdTestCase):
    """greet_action = reject, greet_wait = 1s; a listener marked proxy."""

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.mport = mxdtest.free_port()
        cls.pport = mxdtest.free_port()
        mxd = Mxd(cls.tmpdir, server={"greet_action": "reject", "greet_wait": "1s",
                                      "trusted_networks": "127.0.0.1, 127.0.0.40",
                                      "proxy_networks": "127.0.0.1",
                                      "metrics_listen": f"127.0.0.1:{cls.mport}"})
        mxd.server["listen"] = f"127.0.0.1:{mxd.port}, 127.0.0.1:{cls.pport} proxy"
        mxd.write_config()
        cls.start_mxd(mxd)

    def test_waiting_client_sends_mail(self):
        before = self.pregreet("pass")
        c = self.passed("127.0.0.20")
        m = self.marker()
        r = c.send_message("s@client.test", ["u@example.test"],
                           f"Subject: {m}\r\n\r\nwaited\r\n".encode())
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, f"Subject: {m}\r\n\r\nwaited\r\n".encode())
        self.assertLogged(r"check pregreet client=127\.0\.0\.20 result=pass wait_ms=1000\b")
        self.assertEqual(self.pregreet("pass"), before + 1)

    def test_ehlo_after_teaser_refused(self):
        before = self.pregreet("fail")
        rejected = metrics(self.mport).get('mxd_sessions_rejected_total{reason="check"}', 0)
        c = self.client(banner=False, source="127.0.0.21")
        self.assertEqual(c._line(time.monotonic() + 5), TEASER)
        c.send(b"EHLO early.test\r\n")
        # The greeting ends with its 220 line (one code per reply, RFC 5321
        # 4.2.1), then the refusal answers the EHLO, then mxd closes.
        t0 = time.monotonic()
        r = c.reply()
        self.assertReply(r, 220)
        self.assertEqual(r.lines, [f"{HOSTNAME} ESMTP mxd"])
        r = c.reply()
        self.assertReply(r, 554, "5.5.1")
        self.assertEqual(r.text, REFUSAL)
        self.assertLess(time.monotonic() - t0, FAST, "refused at once, not after the wait")
        self.assertTrue(c.wait_closed(2), "mxd did not close the connection")
        self.assertLogged(r"check pregreet client=127\.0\.0\.21 result=fail action=reject "
                          r"after_ms=\d+ octets=17 input=\"EHLO early\.test\\x0d\\x0a\"")
        self.assertLogged(r"smtp refused client=127\.0\.0\.21 reason=check reply=554")
        self.assertEqual(self.pregreet("fail"), before + 1)
        self.assertEqual(
            metrics(self.mport).get('mxd_sessions_rejected_total{reason="check"}', 0),
            rejected + 1)
        # Failing is not passing: the next connection waits again.
        c2 = self.passed("127.0.0.21")
        c2.cmd("QUIT")

    def test_pipelined_transaction_not_taken(self):
        m = self.marker()
        s = self.raw("127.0.0.22")
        s.sendall(b"EHLO early.test\r\nMAIL FROM:<s@client.test>\r\nRCPT TO:<u@example.test>\r\n"
                  b"DATA\r\n" + f"Subject: {m}\r\n\r\nearly\r\n.\r\nQUIT\r\n".encode())
        data, closed = read_all(s)
        self.assertTrue(closed, f"mxd did not close; sent {data!r}")
        # Before the teaser: the refusal is the greeting; after it: the
        # greeting's end, then the refusal. Never an answer to a command.
        lines = data.split(b"\r\n")[:-1]
        self.assertEqual(lines[-1], f"554 {REFUSAL}".encode(), data)
        self.assertIn(lines[:-1], ([], [TEASER[:-2], f"220 {HOSTNAME} ESMTP mxd".encode()]), data)
        self.assertNothingStored(m)
        self.assertLogged(r"check pregreet client=127\.0\.0\.22 result=fail action=reject .*"
                          r"input=\"EHLO early\.test")

    def test_passed_client_greeted_at_once(self):
        c = self.passed("127.0.0.23")
        c.cmd("QUIT")
        before = self.pregreet("known")
        c, r, took, first, _ = self.greet("127.0.0.23")
        self.assertReply(r, 220)
        self.assertEqual(r.lines, [f"{HOSTNAME} ESMTP mxd"], "no teaser")
        self.assertLess(took, FAST)
        self.assertReply(c.cmd("EHLO known.test"), 250)
        self.assertLogged(r"check pregreet client=127\.0\.0\.23 result=known")
        self.assertEqual(self.pregreet("known"), before + 1)

    def test_trusted_networks_skip(self):
        before = self.pregreet("trusted")
        # Talking at once is fine for a trusted client: no teaser, no wait.
        t0 = time.monotonic()
        c = self.client(banner=False, source="127.0.0.40")
        c.send(b"EHLO trusted.test\r\n")
        r = c.reply()
        self.assertLess(time.monotonic() - t0, FAST)
        self.assertReply(r, 220)
        self.assertEqual(r.lines, [f"{HOSTNAME} ESMTP mxd"])
        self.assertReply(c.reply(), 250)
        self.assertEqual(self.pregreet("trusted"), before + 1)
        self.assertNotIn("pregreet client=127.0.0.40 ", self.mxd.stderr(limit=1 << 20))

    def test_proxy_client(self):
        # The client a PROXY header names is the one tested and remembered.
        c = self.passed("127.0.0.1", port=self.pport, proxy="192.0.2.50")
        c.cmd("QUIT")
        self.assertLogged(r"check pregreet client=192\.0\.2\.50 result=pass")
        c, r, took, _, _ = self.greet("127.0.0.1", port=self.pport, proxy="192.0.2.50")
        self.assertEqual(r.lines, [f"{HOSTNAME} ESMTP mxd"])
        self.assertLess(took, FAST)
        # Octets that come with the header are early too.
        s = self.raw("127.0.0.1", port=self.pport)
        s.sendall(proxy_header("192.0.2.51") + b"EHLO early.test\r\n")
        data, closed = read_all(s)
        self.assertTrue(closed)
        self.assertEqual(data, f"554 {REFUSAL}\r\n".encode())
        self.assertLogged(r"check pregreet client=192\.0\.2\.51 result=fail action=reject")

    def test_hangup(self):
        before = self.pregreet("hangup")
        s = self.raw("127.0.0.24")
        self.assertEqual(s.recv(100), TEASER)
        s.shutdown(socket.SHUT_WR)
        data, closed = read_all(s, timeout=WAIT / 2)
        self.assertTrue(closed, "mxd kept a client that hung up until the end of the wait")
        self.assertEqual(data, b"")
        self.assertLogged(r"check pregreet client=127\.0\.0\.24 result=hangup after_ms=\d+")
        self.assertEqual(self.pregreet("hangup"), before + 1)


class Drop(Screening, MxdTestCase):
    """greet_action = drop, greet_banner = off: the wait without a teaser."""

    @classmethod
    def setUpClass(cls):
        cls.mport = mxdtest.free_port()
        cls.SERVER = {"greet_action": "drop", "greet_wait": "1s", "greet_banner": "off",
                      "trusted_networks": "127.0.0.1",
                      "metrics_listen": f"127.0.0.1:{cls.mport}"}
        super().setUpClass()

    def test_silent_wait_then_greeting(self):
        c, r, took, first, _ = self.greet("127.0.0.25")
        self.assertEqual(r.lines, [f"{HOSTNAME} ESMTP mxd"], "no teaser with greet_banner = off")
        self.assertGreaterEqual(took, WAIT - 0.05)
        self.assertReply(c.cmd("EHLO waited.test"), 250)

    def test_early_talker_dropped(self):
        before = self.pregreet("fail")
        s = self.raw("127.0.0.26")
        time.sleep(0.1)  # after the memory was asked: the test is waiting
        s.sendall(b"EHLO early.test\r\n")
        t0 = time.monotonic()
        data, closed = read_all(s)
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - t0, WAIT / 2, "dropped at once")
        self.assertEqual(data, b"", "a drop says nothing")
        self.assertLogged(r"check pregreet client=127\.0\.0\.26 result=fail action=drop")
        self.assertLogged(r"smtp dropped client=127\.0\.0\.26 reason=check")
        self.assertEqual(self.pregreet("fail"), before + 1)


class Ignore(Screening, MxdTestCase):
    """greet_action = ignore: logged and counted only."""

    @classmethod
    def setUpClass(cls):
        cls.mport = mxdtest.free_port()
        cls.SERVER = {"greet_action": "ignore", "greet_wait": "1s",
                      "trusted_networks": "127.0.0.1",
                      "metrics_listen": f"127.0.0.1:{cls.mport}"}
        super().setUpClass()

    def test_early_talker_served_after_the_wait(self):
        t0 = time.monotonic()
        c = self.client(banner=False, source="127.0.0.27")
        c.send(b"EHLO early.test\r\n")
        r = c.reply()
        self.assertReply(r, 220)
        self.assertGreaterEqual(time.monotonic() - t0, WAIT - 0.05)
        self.assertReply(c.reply(), 250, msg="its EHLO is answered after the greeting")
        self.assertLogged(r"check pregreet client=127\.0\.0\.27 result=fail action=ignore")
        # not remembered: the next connection waits again
        c2 = self.passed("127.0.0.27")
        c2.cmd("QUIT")


class Off(MxdTestCase):
    """The default: no test, no teaser, no wait, nothing logged."""

    SERVER = {"greet_wait": "1s"}

    def test_nothing_changes(self):
        t0 = time.monotonic()
        c = self.client(banner=False, source="127.0.0.28")
        c.send(b"EHLO early.test\r\n")
        r = c.reply()
        self.assertLess(time.monotonic() - t0, FAST)
        self.assertEqual(r.raw, f"220 {HOSTNAME} ESMTP mxd\r\n".encode())
        self.assertReply(c.reply(), 250)
        self.assertNotIn("pregreet", self.mxd.stderr(limit=1 << 20))


class Restart(Screening, MxdTestCase):
    """A pass survives a restart of mxd: it is in queue.db."""

    @classmethod
    def setUpClass(cls):
        cls.mport = mxdtest.free_port()
        cls.SERVER = {"greet_action": "reject", "greet_wait": "1s",
                      "trusted_networks": "127.0.0.1", "screen_ttl": "1h",
                      "metrics_listen": f"127.0.0.1:{cls.mport}"}
        super().setUpClass()

    def test_pass_survives_restart(self):
        c = self.passed("127.0.0.29")
        c.cmd("QUIT")
        c.close()
        t_pass = time.time()
        self.mxd.stop()
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            rows = con.execute("SELECT client, test, passed, expires FROM screen").fetchall()
        finally:
            con.close()
        self.assertEqual(len(rows), 1, rows)
        client, test, passed, expires = rows[0]
        self.assertEqual((client, test), ("127.0.0.29", "pregreet"))
        self.assertLessEqual(abs(passed - t_pass), 5)
        self.assertEqual(expires - passed, 3600)
        self.mxd.start()
        c, r, took, _, _ = self.greet("127.0.0.29")
        self.assertEqual(r.lines, [f"{HOSTNAME} ESMTP mxd"], "no teaser")
        self.assertLess(took, FAST)
        self.assertLogged(r"check pregreet client=127\.0\.0\.29 result=known")
        m = metrics(self.mport)
        self.assertEqual(m.get('mxd_screen_lookups_total{source="store",result="known"}'), 1)
        # Another client is still tested.
        c2 = self.passed("127.0.0.30")
        c2.cmd("QUIT")


class Greylisting(Screening, MxdTestCase):
    """A client that passed the pre-greet test in an earlier connection is
    client_trusted: greylisting spares it (the screening's facts and
    client_trusted are the connection's and outlive MAIL)."""

    @classmethod
    def setUpClass(cls):
        cls.mport = mxdtest.free_port()
        cls.SERVER = {"greet_action": "reject", "greet_wait": "1s",
                      "trusted_networks": "127.0.0.1", "greylist_delay": "1h",
                      "metrics_listen": f"127.0.0.1:{cls.mport}"}
        cls.DOMAINS = {"grey.test": {"mode": "local", "recipients": "any",
                                     "greylist": "on"}}
        super().setUpClass()

    def test_passed_client_spared_greylisting(self):
        # First connection: the test passes now, but the client was not
        # known at connect, so its first triplet is greylisted.
        c = self.passed("127.0.0.32")
        self.assertReply(c.cmd("EHLO first.test"), 250)
        self.assertReply(c.cmd("MAIL FROM:<s@client.test>"), 250)
        self.assertReply(c.cmd("RCPT TO:<u@grey.test>"), 451, "4.7.1")
        c.cmd("QUIT")
        c.close()
        # Next connection: known, greeted at once, trusted: two
        # transactions (the second after a MAIL reset the transaction's
        # facts) pass without greylisting.
        c, r, took, _, _ = self.greet("127.0.0.32")
        self.assertEqual(r.lines, [f"{HOSTNAME} ESMTP mxd"], "no teaser")
        for n in range(2):
            m = self.marker()
            r = c.send_message("s@client.test", ["u@grey.test"],
                               f"Subject: {m}\r\n\r\nknown {n}\r\n".encode(), ehlo=n == 0)
            self.assertReply(r, 250, "2.0.0")
        self.assertLogged(r"check greylist client=127\.0\.0\.32 .*action=skip "
                          r"reason=client_trusted")
        # A client never screened before is still greylisted.
        c2 = self.passed("127.0.0.33")
        self.assertReply(c2.cmd("EHLO other.test"), 250)
        self.assertReply(c2.cmd("MAIL FROM:<s@client.test>"), 250)
        self.assertReply(c2.cmd("RCPT TO:<u@grey.test>"), 451, "4.7.1")


if __name__ == "__main__":
    mxdtest.main()
