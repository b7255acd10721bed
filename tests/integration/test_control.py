#!/usr/bin/env python3
"""mxd's control socket, driven with mxctl against the real daemon: stats,
flush, hold, release, delete and bounce change what `mxctl queue --json`
shows; unknown ids are refused; the socket is private (0600), replaces a
stale one at start and is removed at SIGTERM; the raw protocol (one line
in, one JSON line out) answers bad requests with code 2.

Deliveries go to `lmtp = 127.0.0.1:1`, where nothing listens, with
retry_min = 1h: every attempt defers and the message stays queued, so a
new attempt (attempts + 1) shows that flush or release kicked the
scheduler.

Run: MXD=build/src/mxd MXCTL=build/src/mxctl python3 tests/integration/test_control.py
"""

import json
import os
import signal
import socket
import stat
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402

DOMAINS = {"example.test": {"mode": "local", "lmtp": "127.0.0.1:1", "recipients": "any"}}
EXTRA = "[queue]\nretry_min = 1h\nretry_max = 2h\n"
WAIT = 15  # seconds for the daemon to act on something


def wait_socket(path, timeout=5):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not os.path.exists(path):
        raise AssertionError(f"mxd did not create its control socket {path}")


def raw_request(path, data, timeout=15):
    """Sends data on a fresh connection and returns everything until EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return out  # mxd closed with our surplus octets unread
            if not chunk:
                return out
            out += chunk


class Control(mxdtest.MxdTestCase):
    CONTROL = True
    DOMAINS = DOMAINS
    EXTRA = EXTRA

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        wait_socket(cls.mxd.control_path)

    # -- helpers

    def ctl(self, *args):
        return self.mxd.mxctl(*args)

    def ctl_ok(self, *args):
        p = self.ctl(*args)
        self.assertEqual(p.returncode, 0, f"mxctl {' '.join(args)}: {p.stderr.decode()}\n"
                         f"mxd stderr:\n{self.mxd.stderr()}")
        return p.stdout

    def queue(self):
        out = self.ctl_ok("queue", "--json")
        return {m["qid"]: m for m in json.loads(out)["messages"]}

    def wait_for(self, what, pred, timeout=WAIT):
        """Polls `mxctl queue --json` until pred(queue) is truthy; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            q = self.queue()
            got = pred(q)
            if got:
                return got
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}; queue: {json.dumps(q)[:3000]}\n"
                          f"mxd stderr:\n{self.mxd.stderr()}")
            time.sleep(0.1)

    def send(self, sender=None, rcpts=("user@example.test",)):
        sender = sender or f"sender-{os.urandom(4).hex()}@example.test"
        c = self.client()
        content = f"Subject: {self.marker()}\r\n\r\nbody\r\n".encode()
        r = c.send_message(sender, list(rcpts), content)
        self.assertReply(r, 250)
        c.cmd("QUIT")
        self.assertIsNotNone(r.qid)
        return r.qid

    def rcpts(self, qid):
        return self.queue()[qid]["rcpts"]

    def send_deferred(self, **kw):
        """A message whose first delivery attempt has failed: deferred for 1h."""
        qid = self.send(**kw)

        def deferred(q):
            m = q.get(qid)
            return m and all(r["state"] == "deferred" and r["attempts"] >= 1 for r in m["rcpts"])

        self.wait_for(f"{qid} deferred", deferred)
        return qid, self.rcpts(qid)[0]["attempts"]

    def wait_attempts(self, qid, more_than, what):
        def tried(q):
            m = q.get(qid)
            return m and all(r["attempts"] > more_than and r["state"] == "deferred"
                             for r in m["rcpts"])

        self.wait_for(f"{qid}: a new attempt after {what}", tried)

    # -- tests

    def test_socket_mode(self):
        st = os.lstat(self.mxd.control_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode), oct(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, oct(st.st_mode))
        self.assertEqual(st.st_uid, os.getuid())

    def test_stats(self):
        self.send()
        stats = json.loads(self.ctl_ok("stats", "--json"))
        for section, keys in {
            "smtp": ("connections_total", "connections_open", "messages_accepted",
                     "bytes_accepted"),
            "store": ("commits", "failures", "batches", "max_batch"),
            "deliver": ("delivered", "deferred", "bounced", "sessions", "in_flight"),
            "queue": ("messages", "queued", "deferred", "held", "delivered", "bounced"),
        }.items():
            self.assertIsInstance(stats.get(section), dict, f"{section} in {stats}")
            for key in keys:
                self.assertIsInstance(stats[section].get(key), int, f"{section}.{key}: {stats}")
                self.assertGreaterEqual(stats[section][key], 0)
        self.assertGreaterEqual(stats["smtp"]["messages_accepted"], 1)
        self.assertGreaterEqual(stats["smtp"]["connections_total"], 1)
        self.assertGreaterEqual(stats["store"]["commits"], 1)
        self.assertGreaterEqual(stats["queue"]["messages"], 1)
        self.assertIsInstance(stats.get("uptime"), int)
        # Counters move.
        before = stats["smtp"]["messages_accepted"]
        self.send()
        after = json.loads(self.ctl_ok("--json", "stats"))
        self.assertEqual(after["smtp"]["messages_accepted"], before + 1)
        # Without --json: "section.counter value" lines, then the metrics
        # endpoint's series ("mxd_..." and a number, histogram sums are not
        # integers).
        lines = self.ctl_ok("stats").decode().splitlines()
        self.assertTrue(any(line.startswith("smtp.messages_accepted ") for line in lines), lines)
        self.assertTrue(all(len(line.split()) == 2 and line.split()[1].isdigit()
                            for line in lines if not line.startswith("mxd_")), lines)
        self.assertTrue(any(line.startswith("mxd_messages_accepted_total ") for line in lines))
        for line in lines:
            if line.startswith("mxd_"):
                float(line.rsplit(" ", 1)[1])

    def test_hold_release(self):
        qid, attempts = self.send_deferred()
        self.assertEqual(self.ctl_ok("hold", qid), b"")
        [r] = self.rcpts(qid)
        self.assertEqual(r["state"], "held")
        self.assertIsNone(r["next_attempt"])
        # A flush leaves held mail alone.
        self.ctl_ok("flush")
        time.sleep(1)
        [r] = self.rcpts(qid)
        self.assertEqual((r["state"], r["attempts"]), ("held", attempts))
        # Released: due now, and the scheduler tries it at once.
        self.ctl_ok("release", qid)
        self.wait_attempts(qid, attempts, "release")

    def test_flush(self):
        qid, attempts = self.send_deferred()
        [r] = self.rcpts(qid)
        self.assertGreater(r["next_attempt"], time.time() + 1800, r)
        self.ctl_ok("flush")
        self.wait_attempts(qid, attempts, "flush")
        self.ctl_ok("flush", "Example.TEST")
        self.wait_attempts(qid, attempts + 1, "flush example.test")
        # Another domain's flush does not touch it; an unknown domain is no error.
        self.ctl_ok("flush", "other.example")
        time.sleep(1)
        [r] = self.rcpts(qid)
        self.assertEqual(r["attempts"], attempts + 2)

    def test_delete(self):
        qid, _ = self.send_deferred()
        self.ctl_ok("delete", qid)
        self.assertNotIn(qid, self.queue())
        p = self.ctl("show", qid)
        self.assertEqual(p.returncode, 1)
        p = self.ctl("delete", qid)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"no such message", p.stderr)

    def test_bounce(self):
        sender = f"bounced-{os.urandom(4).hex()}@example.test"
        qid, _ = self.send_deferred(sender=sender)
        self.ctl_ok("bounce", qid)

        def final(q):
            m = q.get(qid)
            return m is None or all(r["state"] == "bounced" for r in m["rcpts"])

        self.wait_for(f"{qid} bounced", final)

        # The DSN goes to the (local) sender, from <>, and is queued like any mail.
        def dsn(q):
            return [m for m in q.values()
                    if m["sender"] == "" and [r["address"] for r in m["rcpts"]] == [sender]]

        self.wait_for(f"a DSN to {sender}", dsn)

    def test_unknown_id(self):
        for verb in ("hold", "release", "delete", "bounce"):
            p = self.ctl(verb, "0NOSUCHQID000")
            self.assertEqual(p.returncode, 1, verb)
            self.assertEqual(p.stderr.decode(), f"mxctl: {verb} 0NOSUCHQID000: no such message\n")
            self.assertEqual(p.stdout, b"")

    def test_raw_protocol(self):
        path = self.mxd.control_path
        for req, code in ((b"frob\n", 2), (b"\n", 2), (b"hold\n", 2), (b"stats now\n", 2),
                          (b"hold a\x01b\n", 2), (b"hold " + b"A" * 200 + b"\n", 2),
                          (b"x" * 2000, 2), (b"hold 0NOSUCHQID000\n", 1),
                          (b"release 0NOSUCHQID000\r\n", 1)):
            out = raw_request(path, req)
            self.assertTrue(out.endswith(b"\n") and out.count(b"\n") == 1, (req, out))
            reply = json.loads(out)
            self.assertEqual((reply["ok"], reply["code"]), (False, code), (req, reply))
            self.assertIsInstance(reply["error"], str)
        reply = json.loads(raw_request(path, b"stats\n"))
        self.assertIs(reply["ok"], True)
        self.assertIsInstance(reply["stats"]["smtp"]["connections_total"], int)
        self.assertEqual(json.loads(raw_request(path, b"flush\n")), {"ok": True})

    def test_idle_client(self):
        """A client that says nothing blocks nobody and is dropped after 10 s."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
            idle.connect(self.mxd.control_path)
            idle.sendall(b"sta")
            started = time.monotonic()
            json.loads(self.ctl_ok("stats", "--json"))
            idle.settimeout(20)
            self.assertEqual(idle.recv(100), b"")
            self.assertLess(time.monotonic() - started, 15)


class ControlLifecycle(unittest.TestCase):
    """The socket file across start and stop (one mxd per test)."""

    def start(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, "control-life")
        self.mxd = mxdtest.Mxd(self.tmpdir, domains=DOMAINS, extra=EXTRA, control=True)
        self.addCleanup(self.mxd.kill)
        return self.mxd

    def test_stale_socket_replaced_removed_at_stop(self):
        mxd = self.start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(mxd.control_path)  # left behind by a crashed mxd
        mxd.start()
        wait_socket(mxd.control_path)
        self.assertEqual(stat.S_IMODE(os.lstat(mxd.control_path).st_mode), 0o600)
        p = mxd.mxctl("stats", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        json.loads(p.stdout)
        mxd.stop()
        self.assertFalse(os.path.exists(mxd.control_path), "control socket left after SIGTERM")
        p = mxd.mxctl("stats")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"(is it running?)", p.stderr)

    def test_sigterm_with_open_clients(self):
        """Open control connections do not hold up a clean stop."""
        mxd = self.start()
        mxd.start()
        wait_socket(mxd.control_path)
        idle = []
        for data in (b"", b"hol", b"hold 0NOSUCHQID000"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(s.close)
            s.connect(mxd.control_path)
            if data:
                s.sendall(data)
            idle.append(s)
        time.sleep(0.2)
        started = time.monotonic()
        mxd.signal(signal.SIGTERM)
        rc = mxd.wait(9)
        self.assertEqual(rc, 0, f"exit status after SIGTERM (None: still running); "
                         f"stderr:\n{mxd.stderr()}")
        self.assertLess(time.monotonic() - started, 9)
        mxd.check_sanitizers()
        self.assertFalse(os.path.exists(mxd.control_path))


if __name__ == "__main__":
    mxdtest.main()
