"""Issue 14, items 6-9: forged assertions and loops.

6. No Authentication-Results field claiming our authserv-id survives, also
   with every [auth] check off, and also when it is long or comes in one
   piece longer than the old 4 KiB window.
7. DMARC cannot be dodged by the From: field's shape: two From: fields, two
   authors in one From: (the strictest policy applies, RFC 7489 6.6.1), a
   From: longer than 4 KiB, or one longer than the bound.
8. An SPF exp= explanation holding CR LF and reply lines reaches the client
   as one reply line; a pipelining client stays in sync.
9. Hop count: more than [server] max_hops Received: fields is 554 5.4.6;
   two backup MXs that name each other as primary stop within the bound.

The DNS is tests/integration/authdns.py (a scripted server in this process).
"""

import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from authdns import AuthDns  # noqa: E402

HOST = mxdtest.HOSTNAME
RCPT = "user@example.test"
SPF_OK = "v=spf1 ip4:127.0.0.1 ip6:::1 -all"

ZONE = {
    # a protected domain: SPF never passes for us, DMARC p=reject
    "protected.test": [("TXT", "v=spf1 -all")],
    "_dmarc.protected.test": [("TXT", "v=DMARC1; p=reject")],
    # the envelope sender's domain: SPF passes, DMARC p=none
    "other.test": [("TXT", SPF_OK)],
    "_dmarc.other.test": [("TXT", "v=DMARC1; p=none")],
    "relaxed.test": [("TXT", "v=spf1 -all")],
    "_dmarc.relaxed.test": [("TXT", "v=DMARC1; p=none")],
    # SPF fail with an explanation that tries to inject reply lines
    "exp.test": [("TXT", "v=spf1 -all exp=why.exp.test")],
    "why.exp.test": [("TXT", "Go away\r\n250 2.0.0 injected\r\n354 go ahead\r\n\x1b[31m red")],
}


def send(port, sender, content, rcpts=(RCPT,)):
    """One transaction; the final reply (MAIL/RCPT must be accepted)."""
    with mxdtest.SmtpClient(port) as c:
        c.reply()
        return c.send_message(sender, list(rcpts), mxdtest.dot_stuff(content))


def stored_body(m, r):
    row = mxdtest.message_by_qid(m.db_path, r.qid)
    assert row is not None, f"{r.qid} not stored"
    return bytes(row["row"]["body"])


class AuthOffTest(mxdtest.MxdTestCase):
    """[auth] all off (mxdtest's default): the filter still runs."""

    def test_forged_authres_removed_with_auth_off(self):
        forged = f"Authentication-Results: {HOST}; spf=pass smtp.mailfrom=ceo@bank.example\r\n"
        long_one = (f"Authentication-Results: {HOST}; dkim=pass x=" + "a" * 6000 + "\r\n")
        comment = ("Authentication-Results: (" + "c " * 3000 + ")\r\n " + HOST +
                   "; dmarc=pass\r\n")
        other = "Authentication-Results: other.example; spf=pass\r\n"
        tok = self.marker()
        content = (forged + long_one + comment + other +
                   f"Subject: {tok}\r\n\r\nbody\r\n").encode()
        r = send(self.mxd.port, "a@other.test", content)
        self.assertReply(r, 250)
        body = stored_body(self.mxd, r)
        header = body.split(b"\r\n\r\n", 1)[0]
        self.assertFalse(HOST.encode() + b"; " in header,
                         f"a forged field survived: {header[:300]!r}...")
        self.assertIn(other.encode() + f"Subject: {tok}\r\n\r\nbody\r\n".encode(), body)
        # nothing checked, so mxd adds no Authentication-Results of its own
        self.assertTrue(body.startswith(b"Received: "), body[:200])
        self.assertRegex(self.mxd.stderr(), rf"{r.qid} auth removed authentication-results "
                                            r"count=3")

    def test_hops_refused_past_max_hops(self):
        hops = "".join(f"Received: from h{i}.example by h{i + 1}.example; "
                       "Mon, 1 Jan 2024 00:00:00 +0000\r\n" for i in range(100))
        tok = self.marker()
        ok = (hops + f"Subject: {tok}\r\n\r\nx\r\n").encode()
        r = send(self.mxd.port, "a@other.test", ok)
        self.assertReply(r, 250)  # 100 is the limit: accepted
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            (stored,) = con.execute("SELECT f.hops FROM message_facts f JOIN messages m "
                                    "ON m.id = f.message_id WHERE m.qid = ?", (r.qid,)).fetchone()
        finally:
            con.close()
        self.assertEqual(stored, 101)
        over = ("Received: from h.example by x.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                " (folded)\r\n" + hops + f"Subject: {tok}-2\r\n\r\nx\r\n").encode()
        with mxdtest.SmtpClient(self.mxd.port) as c:
            c.reply()
            r = c.send_message("a@other.test", [RCPT], mxdtest.dot_stuff(over))
            self.assertReply(r, 554, "5.4.6")
            self.assertIn("Too many hops", r.text)
            # the session goes on
            self.assertReply(c.cmd("NOOP"), 250)
        self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, f"{tok}-2"), [])
        self.assertEqual(self.mxd.spool_files(), [])


class AuthDnsTest(unittest.TestCase):
    """mxd with spf = reject, dkim = tag, dmarc = reject against AuthDns."""

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.dns = AuthDns(dict(ZONE)).start()
        cls.addClassCleanup(cls.dns.stop)
        cls.mxd = mxdtest.Mxd(cls.tmpdir, server={"dns_servers": cls.dns.server},
                              extra="[auth]\nspf = reject\ndkim = tag\ndmarc = reject\n")
        cls.mxd.start()
        cls.addClassCleanup(cls._stop)

    @classmethod
    def _stop(cls):
        cls.mxd.stop()
        cls.mxd.check_sanitizers()

    def deliver(self, from_field, sender="bounce@other.test", extra=""):
        tok = f"m{time.monotonic_ns()}"
        content = (f"{from_field}{extra}To: <{RCPT}>\r\nSubject: {tok}\r\n\r\n{tok}\r\n").encode()
        return send(self.mxd.port, sender, content), tok

    def assertRefused(self, r, tok, code, enh):
        self.assertEqual((r.code, r.enh), (code, enh), str(r))
        self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, tok), [])

    def test_control_single_author_accepted(self):
        r, _ = self.deliver("From: A <a@other.test>\r\n")
        self.assertEqual(r.code, 250, str(r))
        body = stored_body(self.mxd, r)
        self.assertIn(b"\tdmarc=pass (p=none dis=none) header.from=other.test "
                      b"policy.dmarc=none\r\n", body)
        r, tok = self.deliver("From: A <a@protected.test>\r\n")
        self.assertRefused(r, tok, 550, "5.7.1")

    def test_two_from_fields_refused(self):
        r, tok = self.deliver("From: a@other.test\r\n", extra="From: b@protected.test\r\n")
        self.assertRefused(r, tok, 550, "5.6.0")
        self.assertIn("several From: fields", r.text)
        # in either order
        r, tok = self.deliver("From: b@protected.test\r\n", extra="From: a@other.test\r\n")
        self.assertRefused(r, tok, 550, "5.6.0")

    def test_two_authors_strictest_policy(self):
        for value in ("a@other.test, b@protected.test",
                      "\"A, a\" <a@other.test>,\r\n B <b@Protected.Test.>",
                      "<a@other.test> <b@protected.test>",
                      "team: a@other.test, b@protected.test;"):
            with self.subTest(value=value):
                r, tok = self.deliver(f"From: {value}\r\n")
                self.assertRefused(r, tok, 550, "5.7.1")
                self.assertIn("protected.test", r.text)
        # both evaluated, both in Authentication-Results, p=none kept
        r, _ = self.deliver("From: a@other.test, b@relaxed.test\r\n")
        self.assertEqual(r.code, 250, str(r))
        body = stored_body(self.mxd, r)
        self.assertIn(b"\tdmarc=pass (p=none dis=none) header.from=other.test "
                      b"policy.dmarc=none;\r\n"
                      b"\tdmarc=fail (p=none dis=none) header.from=relaxed.test "
                      b"policy.dmarc=none\r\n", body)

    def test_long_from_parsed_whole(self):
        name = "x" * 5000
        r, tok = self.deliver(f"From: \"{name}\"\r\n <a@protected.test>\r\n")
        self.assertRefused(r, tok, 550, "5.7.1")
        folded = "".join(f" (c{i:05d})\r\n" for i in range(600))
        r, tok = self.deliver(f"From:{folded} a@protected.test\r\n")
        self.assertRefused(r, tok, 550, "5.7.1")

    def test_from_past_the_bound_refused(self):
        name = "y" * (40 * 1024)
        r, tok = self.deliver(f"From: \"{name}\" <a@other.test>\r\n")
        self.assertRefused(r, tok, 550, "5.6.0")
        self.assertIn("From: field too long", r.text)

    def test_too_many_authors_refused(self):
        r, tok = self.deliver("From: " + ", ".join(f"a@d{i}.other.test" for i in range(5)) +
                              "\r\n")
        self.assertRefused(r, tok, 550, "5.6.0")

    def test_spf_explanation_cannot_inject_replies(self):
        with mxdtest.SmtpClient(self.mxd.port) as c:
            c.reply()
            c.ehlo()
            # pipelined (RFC 2920): MAIL, RCPT, NOOP in one write
            c.send(b"MAIL FROM:<a@exp.test>\r\nRCPT TO:<" + RCPT.encode() + b">\r\nNOOP\r\n")
            mail, rcpt, noop = c.replies(3)
            self.assertEqual(mail.code, 250, str(mail))
            self.assertEqual((rcpt.code, rcpt.enh), (550, "5.7.23"), str(rcpt))
            self.assertEqual(len(rcpt.lines), 1, rcpt.raw)
            self.assertEqual(rcpt.raw.count(b"\r\n"), 1, rcpt.raw)
            self.assertNotIn(b"\x1b", rcpt.raw)
            # libspf2 writes the spaces as "%"; the injected lines are text
            # on the same line now, their CR LF and ESC turned into "?"
            self.assertRegex(rcpt.text, r"Go.away\?\?250.2\.0\.0.injected\?\?354.go.ahead\?\?\?\[31m")
            self.assertEqual(noop.raw, b"250 2.0.0 Ok\r\n")
            self.assertTrue(c.no_more_data(), c.buf)
            self.assertEqual(c.cmd("QUIT").code, 221)


class HopLoopTest(unittest.TestCase):
    """Two backup MXs for example.test, each naming the other as primary."""

    MAX_HOPS = 5

    def test_backups_pointing_at_each_other_stop(self):
        tmpdir = mxdtest.make_tmpdir(self.addCleanup, "hop-loop")
        pa, pb = mxdtest.free_port(), mxdtest.free_port()
        mxds = []
        for name, port, peer in (("a", pa, pb), ("b", pb, pa)):
            m = mxdtest.Mxd(tmpdir, name=name, port=port,
                            server={"hostname": f"{name}.mx.test",
                                    "database": os.path.join(tmpdir, f"{name}.db"),
                                    "max_hops": str(self.MAX_HOPS)},
                            domains={"example.test": {"mode": "backup",
                                                      "primary": f"127.0.0.1:{peer}",
                                                      "recipients": "any"}},
                            extra="[queue]\nretry_min = 1s\nretry_max = 2s\n"
                                  "\n[auth]\nspf = off\ndkim = off\ndmarc = off\n")
            mxds.append(m)
        for m in mxds:
            m.start()
            self.addCleanup(self._stop, m)
        a, b = mxds
        tok = f"loop-{os.urandom(6).hex()}"
        r = send(a.port, "sender@remote.test",
                 f"From: <sender@remote.test>\r\nSubject: {tok}\r\n\r\n{tok}\r\n".encode())
        self.assertEqual(r.code, 250, str(r))
        # Each hop stores a copy with one more Received: field; the one that
        # would pass max_hops is bounced (5.4.6), not forwarded. Final
        # messages leave the database, so the logs tell the story.
        bounce = re.compile(r"deliver bounced to=<user@example.test> relay=\S+ attempts=1 "
                            r"reply=\"554 5.4.6 too many hops")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(bounce.search(m.stderr()) for m in mxds):
            time.sleep(0.2)
        logs = [m.stderr() for m in mxds]
        self.assertTrue(any(bounce.search(x) for x in logs),
                        f"no bounce within 30s;\na: {logs[0][-3000:]}\nb: {logs[1][-3000:]}")
        time.sleep(2)  # nothing moves any more
        logs = [m.stderr() for m in mxds]
        queued = sum(x.count("smtp queued from=<sender@remote.test>") for x in logs)
        self.assertEqual(queued, self.MAX_HOPS + 1, logs)
        self.assertEqual(sum(len(bounce.findall(x)) for x in logs), 1, logs)
        # the sender is told once (issue 18: no bounce_relay, so the DSN
        # waits for remote.test's MX hosts, which do not exist here)
        self.assertEqual(sum(x.count("store dsn created") for x in logs), 1, logs)
        for m in mxds:
            self.assertEqual(mxdtest.message_count(m.db_path, "sender != ''"), 0, m.name)
        self.assertEqual(sum(mxdtest.message_count(m.db_path, "sender = ''") for m in mxds), 1)

    @staticmethod
    def _stop(m):
        if m.running():
            m.stop()
        m.check_sanitizers()


if __name__ == "__main__":
    unittest.main(verbosity=2)
