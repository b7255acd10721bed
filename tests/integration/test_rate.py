"""Per-client rate limits (issue 16 part 4, Postfix's anvil): new
connections, MAIL and RCPT per client and minute, the exemption of
trusted_networks, the log line and the metric of each refusal, and the
error delay that grows past soft_error_limit.

Many clients without PROXY headers: Linux lets a loopback client bind any
127.0.0.0/8 source address, so every test speaks from addresses of its own
and the tests of a class (one mxd, one process-wide rate table) do not count
against each other. The limits are per minute; every test runs well inside
one. The least recently used eviction of the table is covered by the unit
test (tests/unit/check/test_anvil.c), with a small table."""

import os
import re
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import MxdTestCase  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


class Rates(MxdTestCase):
    """connection_rate_limit = 3, message_rate_limit = 3,
    recipient_rate_limit = 5; 127.0.0.7 is trusted."""

    @classmethod
    def setUpClass(cls):
        cls.mport = mxdtest.free_port()
        cls.SERVER = {"connection_rate_limit": "3", "message_rate_limit": "3",
                      "recipient_rate_limit": "5",
                      "trusted_networks": "127.0.0.7, 10.0.0.0/8, ::2",
                      "metrics_listen": f"127.0.0.1:{cls.mport}"}
        super().setUpClass()

    # -- helpers

    def metrics(self):
        url = f"http://127.0.0.1:{self.mport}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode("utf-8")
        out = {}
        for line in text.splitlines():
            m = SAMPLE.match(line)
            if m and not line.startswith("#"):
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def limited(self, rule):
        return self.metrics().get(f'mxd_rate_limited_total{{rule="{rule}"}}', 0)

    def assertLogged(self, client, rule, count, limit):
        want = re.compile(rf"check rate limit client={re.escape(client)} rule={rule}"
                          rf" count={count} limit={limit}\b")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if want.search(self.mxd.stderr(limit=1 << 20)):
                return
            time.sleep(0.05)
        self.fail(f"no log line {want.pattern!r}; stderr:\n{self.mxd.stderr()}")

    def greeted(self, source):
        """Connects from source: the first reply line, and whether mxd
        then closed the connection."""
        c = self.client(banner=False, source=source)
        r = c.reply()
        if r.code == 220:
            c.cmd("QUIT")
        closed = c.wait_closed(5)
        c.close()
        return r, closed

    def session(self, source):
        c = self.client(source=source)
        c.ehlo()
        return c

    # -- tests

    def test_connection_rate(self):
        before = self.limited("connection_rate_limit")
        for i in range(3):
            r, _ = self.greeted("127.0.0.5")
            self.assertReply(r, 220, msg=f"connection {i + 1}")
        r, closed = self.greeted("127.0.0.5")
        self.assertReply(r, 421, "4.7.0", "the 4th connection in a minute")
        self.assertIn("too many connections from your address", r.text)
        self.assertTrue(closed, "mxd did not close the refused connection")
        # Another client is not affected.
        r, _ = self.greeted("127.0.0.6")
        self.assertReply(r, 220)
        self.assertLogged("127.0.0.5", "connection_rate_limit", 4, 3)
        self.assertEqual(self.limited("connection_rate_limit"), before + 1)
        self.assertGreaterEqual(
            self.metrics().get('mxd_sessions_rejected_total{reason="check"}', 0), 1)

    def test_message_rate(self):
        before = self.limited("message_rate_limit")
        c = self.session("127.0.0.8")
        for i in range(3):
            self.assertReply(c.cmd("MAIL FROM:<s@client.test>"), 250, "2.1.0", f"MAIL {i + 1}")
            self.assertReply(c.cmd("RSET"), 250)
        r = c.cmd("MAIL FROM:<s@client.test>")
        # Postfix: "450 4.7.1 Error: too much mail from <address>"
        self.assertReply(r, 450, "4.7.1", "the 4th MAIL in a minute")
        self.assertEqual(r.text, "4.7.1 Error: too much mail from 127.0.0.8")
        # The session goes on (RCPT without a sender is out of sequence) ...
        self.assertReply(c.cmd("RCPT TO:<u@example.test>"), 503)
        # ... and the count is the client's, not the session's.
        c2 = self.session("127.0.0.8")
        self.assertReply(c2.cmd("MAIL FROM:<s@client.test>"), 450, "4.7.1")
        c3 = self.session("127.0.0.11")
        self.assertReply(c3.cmd("MAIL FROM:<s@client.test>"), 250)
        self.assertLogged("127.0.0.8", "message_rate_limit", 4, 3)
        self.assertEqual(self.limited("message_rate_limit"), before + 2)

    def test_recipient_rate(self):
        m = self.marker()
        before = self.limited("recipient_rate_limit")
        c = self.session("127.0.0.9")
        self.assertReply(c.cmd("MAIL FROM:<s@client.test>"), 250)
        for i in range(5):
            self.assertReply(c.cmd(f"RCPT TO:<u{i}@example.test>"), 250, "2.1.5")
        r = c.cmd("RCPT TO:<u5@example.test>")
        # Postfix: "450 4.7.1 Error: too many recipients from <address>"
        self.assertReply(r, 450, "4.7.1", "the 6th RCPT in a minute")
        self.assertEqual(r.text, "4.7.1 Error: too many recipients from 127.0.0.9")
        # The recipients accepted before the limit still get the message.
        self.assertReply(c.cmd("DATA"), 354)
        c.send(f"Subject: {m}\r\n\r\nfive\r\n.\r\n".encode())
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        msg = mxdtest.message_by_qid(self.mxd.db_path, r.qid)
        self.assertEqual(len(msg["rcpts"]), 5)
        self.assertLogged("127.0.0.9", "recipient_rate_limit", 6, 5)
        self.assertEqual(self.limited("recipient_rate_limit"), before + 1)

    def test_trusted_networks_exempt(self):
        # The same traffic from an address that is not trusted meets every
        # limit (this half fails when the limits are not enforced at all) ...
        for i in range(3):
            self.assertReply(self.greeted("127.0.0.10")[0], 220)
        self.assertReply(self.greeted("127.0.0.10")[0], 421, "4.7.0")
        # ... and from 127.0.0.7 none.
        for i in range(6):
            r, closed = self.greeted("127.0.0.7")
            self.assertReply(r, 220, msg=f"trusted connection {i + 1}")
        c = self.session("127.0.0.7")
        for i in range(5):
            self.assertReply(c.cmd("MAIL FROM:<s@client.test>"), 250, msg=f"trusted MAIL {i}")
            for j in range(3):
                self.assertReply(c.cmd(f"RCPT TO:<t{i}{j}@example.test>"), 250)
            self.assertReply(c.cmd("RSET"), 250)
        self.assertNotIn("rate limit client=127.0.0.7 ", self.mxd.stderr(limit=1 << 20))


class Tarpit(MxdTestCase):
    """Past soft_error_limit each refusal waits error_sleep x (errors -
    soft_error_limit): 1 s, then 2 s, ... (no rate limit involved)."""

    SERVER = {"soft_error_limit": "1", "hard_error_limit": "10", "error_sleep": "1s"}

    def test_error_delay_grows(self):
        c = self.client()
        c.ehlo()
        took = []
        for i in range(3):
            t0 = time.monotonic()
            r = c.cmd(f"BOGUS{i}")
            took.append(time.monotonic() - t0)
            self.assertEqual(r.code // 100, 5, str(r))
        self.assertLess(took[0], 0.8, took)        # error 1: at the soft limit, at once
        self.assertGreaterEqual(took[1], 0.9, took)  # error 2: 1 x error_sleep
        self.assertLess(took[1], 1.8, took)
        self.assertGreaterEqual(took[2], 1.9, took)  # error 3: 2 x error_sleep
        self.assertLess(took[2], 2.8, took)
        self.assertReply(c.cmd("QUIT"), 221)


if __name__ == "__main__":
    unittest.main(verbosity=2)
