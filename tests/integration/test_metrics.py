"""metrics_listen: Prometheus text (format 0.0.4) over a minimal HTTP
responder. Scraped with curl and urllib and parsed; the counters move as
mail flows (connections, accepted messages and bytes, refused recipients,
queue gauges, group-commit histograms, delivery attempts), `mxctl stats`
prints the same series, and the HTTP side refuses everything but
GET /metrics, oversized requests and silent clients."""

import os
import re
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse(text):
    """{series: float}; checks every sample's family was typed first."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, f"sample before TYPE: {line!r}"
        out[name + (m.group(2) or "")] = float(m.group(3))
    return out


class Metrics(unittest.TestCase):
    def setUp(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, "metrics")
        self.mport = mxdtest.free_port()
        dead = mxdtest.free_port()  # an LMTP server that is not there: deferrals
        self.mxd = mxdtest.Mxd(
            self.tmpdir, control=True,
            server={"metrics_listen": f"127.0.0.1:{self.mport}"},
            domains={"example.test": {"mode": "local", "lmtp": f"127.0.0.1:{dead}"}})
        self.addCleanup(self.mxd.kill)
        self.mxd.start()
        self.url = f"http://127.0.0.1:{self.mport}/metrics"

    def tearDown(self):
        self.mxd.stop()

    def scrape(self):
        with urllib.request.urlopen(self.url, timeout=10) as r:
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers["Content-Type"],
                             "text/plain; version=0.0.4; charset=utf-8")
            return parse(r.read().decode("utf-8"))

    def curl(self):
        r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "10", self.url],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return parse(r.stdout)

    def raw(self, data, read_timeout=15):
        with socket.create_connection(("127.0.0.1", self.mport), timeout=read_timeout) as s:
            if data:
                s.sendall(data)
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                out += chunk

    def test_counters_move_with_mail(self):
        before = self.curl()
        for key in ("mxd_connections_total", "mxd_messages_accepted_total",
                    "mxd_store_batch_size_count", "mxd_queue_messages"):
            self.assertIn(key, before)
        body = b"Subject: metrics\r\n\r\n" + b"x" * 1000 + b"\r\n"
        with self.mxd.client() as c:
            for rcpts in (["a@example.test"], ["b@example.test", "c@example.test"],
                          ["d@example.test"]):
                r = c.send_message("s@sender.test", rcpts, body)
                self.assertEqual(r.code, 250, r)
            c.cmd("MAIL FROM:<s@sender.test>")
            self.assertEqual(c.cmd("RCPT TO:<x@not-ours.test>").code, 550)
            self.assertEqual(c.cmd("RCPT TO:<y@not-ours.test>").code, 550)
        deadline = time.monotonic() + 20
        while True:
            after = self.scrape()
            attempts = after.get(
                'mxd_delivery_attempts_total{outcome="deferred",'
                f'destination="lmtp:127.0.0.1:{self.mxd.domains["example.test"]["lmtp"].split(":")[1]}"}}',
                0)
            if attempts >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        d = lambda k: after.get(k, 0) - before.get(k, 0)  # noqa: E731
        self.assertEqual(d("mxd_messages_accepted_total"), 3)
        self.assertGreater(d("mxd_bytes_accepted_total"), 3 * 1000)
        self.assertGreaterEqual(d("mxd_connections_total"), 1)
        self.assertEqual(after['mxd_recipients_rejected_total{status="5.7.1"}'], 2)
        self.assertGreaterEqual(d("mxd_store_batch_size_count"), 1)
        self.assertEqual(d("mxd_store_batch_size_sum"), 3)
        self.assertGreaterEqual(d("mxd_store_commit_seconds_count"), 1)
        self.assertGreater(after["mxd_store_commit_seconds_sum"], 0)
        self.assertEqual(attempts, 4, after)
        # The queue gauges: all four recipients wait (deferred) in 3 messages.
        self.assertEqual(after["mxd_queue_messages"], 3)
        waiting = sum(v for k, v in after.items()
                      if k.startswith('mxd_queue_recipients{domain="example.test"'))
        self.assertEqual(waiting, 4)
        self.assertGreaterEqual(after["mxd_queue_oldest_age_seconds"], 0)
        # mxctl stats prints the same series.
        r = self.mxd.mxctl("stats")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = dict(line.rsplit(" ", 1) for line in r.stdout.decode().splitlines())
        for key in ("mxd_messages_accepted_total", "mxd_bytes_accepted_total",
                    'mxd_recipients_rejected_total{status="5.7.1"}',
                    "mxd_store_batch_size_count"):
            self.assertEqual(float(lines[key]), after[key], key)

    def test_http_refuses_everything_else(self):
        r = self.raw(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(r.startswith(b"HTTP/1.1 405 "), r[:100])
        r = self.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(r.startswith(b"HTTP/1.1 404 "), r[:100])
        r = self.raw(b"hello\r\n\r\n")
        self.assertTrue(r.startswith(b"HTTP/1.1 400 "), r[:100])
        r = self.raw(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
        self.assertTrue(r.startswith(b"HTTP/1.1 431 "), r[:100])
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(self.url.replace("/metrics", "/other"), timeout=10)
        self.assertEqual(cm.exception.code, 404)
        # A client that sends nothing is dropped (10 s), without an answer.
        started = time.monotonic()
        self.assertEqual(self.raw(b"GET /metr", read_timeout=30), b"")
        self.assertLess(time.monotonic() - started, 20)
        # Still serving.
        self.assertIn("mxd_connections_total", self.scrape())

    def test_metrics_listen_moves_on_reload(self):
        old = self.mport
        self.mport = mxdtest.free_port()
        self.mxd.server["metrics_listen"] = f"127.0.0.1:{self.mport}"
        self.mxd.write_config()
        r = self.mxd.mxctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.url = f"http://127.0.0.1:{self.mport}/metrics"
        self.assertEqual(self.scrape()["mxd_config_reloads_total"], 1)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", old), timeout=2).close()


if __name__ == "__main__":
    mxdtest.main()
