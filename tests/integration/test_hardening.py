"""Issue 14: hardening against hostile clients, the items the lead took:
refused recipients count toward the error limit and slow the client down
(5), callahead connections are limited and reused (5), postmaster@ every
domain of ours is accepted (11), peer values in log lines are one field
each (12), and what operators see: the queued line names DATA or BDAT,
mxctl shows a held recipient's next retry (18)."""

import json
import os
import re
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402

DOMAIN = "example.test"


def log_fields(line):
    """Splits a log line the way the simplest reader would: key=value or
    key="..." (backslash escapes inside quotes), nothing else."""
    out = []
    for m in re.finditer(r'(?:^| )([a-z0-9_]+)=("(?:[^"\\]|\\.)*"|[^ ]*)', line):
        out.append((m.group(1), m.group(2)))
    return out


def log_lines(mxd, pattern):
    return [ln for ln in mxd.stderr(limit=10_000_000).splitlines() if re.search(pattern, ln)]


class FakeLmtp:
    """A scripted LMTP server for callahead: every RCPT is answered after
    `delay` seconds (550 unless the local part starts with "known"); counts
    connections, the most open at once, the RCPTs asked and the most
    being answered at once."""

    def __init__(self, delay=0.3):
        self.delay = delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.open = self.max_open = self.connections = self.rcpts = 0
        self.asking = self.max_asking = 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open += 1
                self.max_open = max(self.max_open, self.open)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            c.sendall(b"220 fake LMTP\r\n")
            for line in f:
                verb = line[:4].upper()
                if verb == b"LHLO":
                    c.sendall(b"250-fake\r\n250 PIPELINING\r\n")
                elif verb == b"RCPT":
                    with self.lock:
                        self.asking += 1
                        self.max_asking = max(self.max_asking, self.asking)
                    time.sleep(self.delay)
                    with self.lock:
                        self.rcpts += 1
                        self.asking -= 1
                    known = b"<known" in line.lower()
                    c.sendall(b"250 2.1.5 ok\r\n" if known else b"550 5.1.1 no such user\r\n")
                elif verb == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    break
                else:
                    c.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1
            c.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


class Harvest(mxdtest.MxdTestCase):
    """Item 5: a directory harvest, one session guessing recipients."""

    SERVER = {"soft_error_limit": "3", "hard_error_limit": "6", "error_sleep": "1s"}
    DOMAINS = {DOMAIN: {"mode": "local", "recipients": "table"}}

    def test_refused_rcpts_slow_down_then_421(self):
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<h@remote.test>"), 250)
        took = []
        for i in range(6):
            t0 = time.monotonic()
            r = c.cmd(f"RCPT TO:<guess{i}@{DOMAIN}>")
            took.append(time.monotonic() - t0)
            self.assertReply(r, 550, "5.1.1")
        # The first three refusals come at once, the next ones wait error_sleep.
        self.assertTrue(all(t < 0.8 for t in took[:3]), took)
        self.assertTrue(all(t >= 0.9 for t in took[3:]), took)
        # The sixth error spent the budget: 421 follows and mxd hangs up.
        self.assertReply(c.reply(), 421, "4.7.0")
        self.assertTrue(c.wait_closed(5))

    def test_accepted_rcpts_do_not_count(self):
        # Protocol errors and refusals count, 250s do not: a session with a
        # few refusals among many good recipients is served normally.
        self.mxd.mxctl("recipient", "add", f"good@{DOMAIN}")
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<h@remote.test>"), 250)
        for i in range(20):
            self.assertReply(c.cmd(f"RCPT TO:<good@{DOMAIN}>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<nobody@{DOMAIN}>"), 550, "5.1.1")
        self.assertReply(c.cmd("NOOP"), 250)


class CallaheadLimits(mxdtest.MxdTestCase):
    """Item 5: guesses that miss the cache are asked on at most
    callahead_max_per_client connections for one client, and a connection
    asks several of them before QUIT."""

    @classmethod
    def setUpClass(cls):
        cls.lmtp = FakeLmtp(delay=0.25)
        cls.addClassCleanup(cls.lmtp.stop)
        cls.SERVER = {"callahead_max_connections": "3", "callahead_max_per_client": "2",
                      "soft_error_limit": "100", "hard_error_limit": "100"}
        cls.DOMAINS = {DOMAIN: {"mode": "local", "recipients": "lmtp",
                                "lmtp": f"127.0.0.1:{cls.lmtp.port}"}}
        super().setUpClass()

    def test_connections_limited_and_reused(self):
        sessions, per = 6, 3
        results = []
        errors = []

        def one(n):
            try:
                with mxdtest.SmtpClient(self.mxd.port, timeout=60) as c:
                    c.reply()
                    c.ehlo()
                    c.cmd("MAIL FROM:<h@remote.test>")
                    for i in range(per):
                        results.append(c.cmd(f"RCPT TO:<guess-{n}-{i}@{DOMAIN}>", timeout=60))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=one, args=(n,)) for n in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), sessions * per)
        for r in results:
            self.assertReply(r, 550, "5.1.1")
        self.assertEqual(self.lmtp.rcpts, sessions * per)
        print(f"callahead limits: {sessions * per} questions from {sessions} sessions, "
              f"{self.lmtp.connections} connections, at most {self.lmtp.max_open} open and "
              f"{self.lmtp.max_asking} questions at once",
              file=sys.stderr)
        # Every client here is 127.0.0.1: two questions at most at once
        # (callahead_max_per_client), on three connections at most
        # (callahead_max_connections; one may be saying QUIT).
        self.assertLessEqual(self.lmtp.max_asking, 2, "per-client callahead limit")
        self.assertLessEqual(self.lmtp.max_open, 3, "callahead connection limit")
        # Connections were used for several questions each.
        self.assertLess(self.lmtp.connections, sessions * per * 2 // 3,
                        f"{self.lmtp.connections} connections for {sessions * per} questions")
        # The callahead lines are one field per value.
        for line in log_lines(self.mxd, r"callahead answer "):
            keys = [k for k, _ in log_fields(line)]
            self.assertEqual(keys, ["to", "reply"], line)


class Postmaster(mxdtest.MxdTestCase):
    """Item 11: RFC 5321 4.5.1, postmaster at every domain we serve, in any
    case, whatever its recipients policy; never for a domain not ours."""

    DOMAINS = {DOMAIN: {"mode": "local", "recipients": "table"},
               "other.test": {"mode": "local", "recipients": "table"}}

    def rcpt(self, c, addr):
        return c.cmd(f"RCPT TO:<{addr}>")

    def test_postmaster_everywhere(self):
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<s@remote.test>"), 250)
        for addr in (f"postmaster@{DOMAIN}", "PostMaster@Example.TEST", "postmaster@other.test",
                     f'"postmaster"@{DOMAIN}', "Postmaster"):
            self.assertReply(self.rcpt(c, addr), 250, msg=addr)
        self.assertReply(self.rcpt(c, f"someone@{DOMAIN}"), 550, "5.1.1")
        self.assertReply(self.rcpt(c, "postmaster@not-ours.test"), 550, "5.7.1")
        self.assertReply(self.rcpt(c, f"postmasters@{DOMAIN}"), 550, "5.1.1")
        self.assertReply(c.cmd("DATA"), 354)
        c.send(b"Subject: to the postmaster\r\n\r\nhi\r\n.\r\n")
        r = c.reply()
        self.assertReply(r, 250)
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            got = sorted(a for (a,) in con.execute(
                "SELECT address FROM message_rcpts JOIN messages ON messages.id = message_id "
                "WHERE qid = ?", (r.qid,)))
        finally:
            con.close()
        self.assertEqual(got, sorted([f"postmaster@{DOMAIN}", "PostMaster@Example.TEST",
                                      "postmaster@other.test", f'"postmaster"@{DOMAIN}',
                                      f"Postmaster@{DOMAIN}"]))


class LogFields(mxdtest.MxdTestCase):
    """Item 12 and 18: a quoted local part cannot forge fields in the
    deliver and queued lines; UTF-8 is escaped the same way in both; the
    queued line says DATA or BDAT."""

    @classmethod
    def setUpClass(cls):
        cls.DOMAINS = {DOMAIN: {"mode": "local", "recipients": "any",
                                "lmtp": f"127.0.0.1:{mxdtest.free_port()}"}}
        cls.SERVER = {}
        super().setUpClass()

    def send(self, c, sender, rcpt, params="", bdat=False):
        c.ehlo()
        self.assertReply(c.cmd(f"MAIL FROM:<{sender}>{params}"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{rcpt}>"), 250)
        body = b"Subject: x\r\n\r\nhello\r\n"
        if bdat:
            c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        else:
            self.assertReply(c.cmd("DATA"), 354)
            c.send(body + b".\r\n")
        r = c.reply()
        self.assertReply(r, 250)
        return r.qid

    def wait_line(self, qid, what, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = log_lines(self.mxd, rf" {qid} .*{what}")
            if got:
                return got[0]
            time.sleep(0.05)
        self.fail(f"no '{what}' line for {qid}:\n{self.mxd.stderr()}")

    def test_quoted_local_part_is_one_field(self):
        forged = '"x> relay=evil reply=\\"250 ok\\""@' + DOMAIN
        c = self.client()
        qid = self.send(c, '"a b=c"@remote.test', forged)
        line = self.wait_line(qid, r"deliver (deferred|held) ")
        fields = log_fields(line)
        self.assertEqual([k for k, _ in fields], ["to", "relay", "attempts", "reply"], line)
        self.assertNotEqual(dict(fields)["relay"], "evil", line)
        self.assertTrue(dict(fields)["to"].startswith('"<'), line)
        queued = self.wait_line(qid, "smtp queued ")
        keys = [k for k, _ in log_fields(queued)]
        self.assertEqual(keys, ["from", "size", "nrcpt", "client", "tls", "cmd"], queued)
        self.assertIn("cmd=DATA", queued)

    def test_utf8_escaped_alike_and_bdat(self):
        c = self.client()
        qid = self.send(c, "j\u00f6rg@remote.test", "b\u00f6b@" + DOMAIN, " SMTPUTF8", bdat=True)
        queued = self.wait_line(qid, "smtp queued ")
        deliver = self.wait_line(qid, r"deliver (deferred|held) ")
        self.assertIn(r"from=<j\xc3\xb6rg@remote.test>", queued)
        self.assertIn("cmd=BDAT", queued)
        self.assertIn(r"to=<b\xc3\xb6b@example.test>", deliver)


class HeldNext(mxdtest.MxdTestCase):
    """Item 18: mxctl queue shows the next retry of a held recipient; only
    an operator's hold has none."""

    CONTROL = True

    @classmethod
    def setUpClass(cls):
        cls.DOMAINS = {"backup.test": {"mode": "backup", "recipients": "any",
                                       "primary": f"127.0.0.1:{mxdtest.free_port()}"}}
        cls.SERVER = {}
        cls.EXTRA = "[queue]\nretry_min = 1h\nretry_max = 2h\n"
        super().setUpClass()

    def test_held_has_next_attempt(self):
        c = self.client()
        r = c.send_message("s@remote.test", ["u@backup.test"], b"Subject: held\r\n\r\nx\r\n")
        self.assertReply(r, 250)
        qid = r.qid
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = json.loads(self.mxd.mxctl("queue", "--json").stdout)
            rc = [m for m in out["messages"] if m["qid"] == qid][0]["rcpts"][0]
            if rc["state"] == "held" and rc["attempts"] >= 1:
                break
            time.sleep(0.1)
        self.assertEqual(rc["state"], "held", rc)
        self.assertIsInstance(rc["next_attempt"], int, rc)
        self.assertGreater(rc["next_attempt"], time.time() + 60)
        text = self.mxd.mxctl("queue").stdout.decode()
        self.assertRegex(text, r"<u@backup.test> held attempts=1 next=in ")
        self.assertEqual(self.mxd.mxctl("hold", qid).returncode, 0)
        out = json.loads(self.mxd.mxctl("queue", "--json").stdout)
        rc = [m for m in out["messages"] if m["qid"] == qid][0]["rcpts"][0]
        self.assertIsNone(rc["next_attempt"], rc)
        self.assertIn("held attempts=1 next=- ", self.mxd.mxctl("queue").stdout.decode())


if __name__ == "__main__":
    unittest.main(verbosity=2)
