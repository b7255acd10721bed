"""SIGTERM: mxd stops accepting, finishes in-flight commits, sends 421 to
open sessions, closes the database cleanly and exits 0."""

import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import ConnectionClosed  # noqa: E402

RCPT = "user@example.test"


class Shutdown(unittest.TestCase):
    def setUp(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, "shutdown")
        self.mxd = mxdtest.Mxd(self.tmpdir, server={"max_connections_per_ip": "100"})
        self.addCleanup(self.mxd.kill)
        self.mxd.start()

    def client(self):
        c = self.mxd.client()
        self.addCleanup(c.close)
        return c

    def expect_421_and_close(self, c, what):
        try:
            r = c.reply(timeout=10)
        except ConnectionClosed:
            self.fail(f"{what}: closed without a 421")
        self.assertEqual(r.code, 421, f"{what}: {r}")
        self.assertTrue(c.wait_closed(10), f"{what}: not closed after 421")

    def sigterm_and_wait(self, timeout=10):
        started = time.monotonic()
        self.mxd.signal(signal.SIGTERM)
        rc = self.mxd.wait(timeout)
        took = time.monotonic() - started
        if rc is None:
            self.fail(f"mxd still running {timeout}s after SIGTERM; stderr:\n{self.mxd.stderr()}")
        self.assertEqual(rc, 0, f"exit status after SIGTERM; stderr:\n{self.mxd.stderr()}")
        self.mxd.check_sanitizers()
        return took

    def assert_clean_db(self):
        self.assertEqual(mxdtest.integrity_check(self.mxd.db_path), ["ok"])
        wal = self.mxd.db_path + "-wal"
        self.assertFalse(os.path.exists(wal) and os.path.getsize(wal) > 0,
                         "WAL not checkpointed: the database was not closed cleanly")

    def test_sigterm_with_open_sessions(self):
        sent = {}
        c = self.client()
        c.ehlo()
        for i in range(3):
            content = f"Subject: before shutdown {i}\r\n\r\nbody {i}\r\n".encode()
            r = c.send_message("a@client.test", [RCPT], content, ehlo=False)
            self.assertEqual(r.code, 250, str(r))
            sent[r.qid] = content
        idle = self.client()  # banner only
        ehloed = self.client()
        ehloed.ehlo()
        in_txn = self.client()
        in_txn.ehlo()
        self.assertEqual(in_txn.cmd("MAIL FROM:<b@client.test>").code, 250)
        self.assertEqual(in_txn.cmd(f"RCPT TO:<{RCPT}>").code, 250)
        in_data = self.client()
        in_data.ehlo()
        self.assertEqual(in_data.cmd("MAIL FROM:<b@client.test>").code, 250)
        self.assertEqual(in_data.cmd(f"RCPT TO:<{RCPT}>").code, 250)
        self.assertEqual(in_data.cmd("DATA").code, 354)
        in_data.send(b"Subject: unfinished at shutdown\r\n\r\npartial\r\n")
        time.sleep(0.3)

        took = self.sigterm_and_wait()
        for cl, what in ((idle, "idle session"), (ehloed, "session after EHLO"),
                         (in_txn, "session in a transaction"), (in_data, "session in DATA"),
                         (c, "session after messages")):
            self.expect_421_and_close(cl, what)
        print(f"\nmxd exited {took:.2f}s after SIGTERM", file=sys.stderr)
        with self.assertRaises(OSError):
            mxdtest.SmtpClient(self.mxd.port, timeout=2).close()

        self.assert_clean_db()
        for qid, content in sent.items():
            msg = mxdtest.message_by_qid(self.mxd.db_path, qid)
            self.assertIsNotNone(msg, f"{qid} lost")
            self.assertEqual(mxdtest.split_received(msg["row"]["body"])[1], content)
        self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, b"unfinished at shutdown"),
                         [])
        self.assertEqual(mxdtest.message_count(self.mxd.db_path), 3)

        # A clean restart on the same database keeps everything.
        self.mxd.set_port()
        self.mxd.start()
        self.assertEqual(mxdtest.message_count(self.mxd.db_path), 3)
        self.sigterm_and_wait()

    def test_sigterm_under_load(self):
        """SIGTERM while 20 sessions send: every 250 is durable, every session
        ends (421 or closed), mxd exits 0."""
        acked = {}
        lock = threading.Lock()
        stop = threading.Event()
        go = threading.Event()
        ready = []
        ends = {}

        def sender(n):
            c = None
            try:
                c = mxdtest.SmtpClient(self.mxd.port, timeout=30)
                c.reply()
                c.ehlo()
                with lock:
                    ready.append(n)
                go.wait(timeout=60)
                seq = 0
                while not stop.is_set():
                    content = (f"Subject: load {n}.{seq}\r\n\r\n".encode()
                               + b"payload line\r\n" * (50 + 200 * (seq % 5)))
                    seq += 1
                    r = c.cmd("MAIL FROM:<load@client.test>")
                    if r.code != 250:
                        ends[n] = str(r)
                        return
                    r = c.cmd(f"RCPT TO:<l{n}@example.test>")
                    if r.code != 250:
                        ends[n] = str(r)
                        return
                    r = c.cmd("DATA")
                    if r.code != 354:
                        ends[n] = str(r)
                        return
                    c.send(content + b".\r\n")
                    r = c.reply()
                    if r.code != 250:
                        ends[n] = str(r)
                        return
                    with lock:
                        acked[r.qid] = content
            except (ConnectionClosed, OSError) as e:
                ends[n] = repr(e)
            finally:
                if c is not None:
                    c.close()

        threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(20)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(ready) + len(ends) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(ends, {}, "sessions failed before sending")
        go.set()
        deadline = time.monotonic() + 60
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertGreaterEqual(len(acked), 60, "senders too slow")
        took = self.sigterm_and_wait(timeout=20)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        self.assertFalse([t for t in threads if t.is_alive()], "sessions hang after shutdown")
        bad = {n: e for n, e in ends.items() if not (e.startswith("421") or "Closed" in e
                                                     or "Reset" in e or "Broken" in e)}
        self.assertEqual(bad, {}, "sessions ended with something other than 421/close")
        self.assert_clean_db()
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            missing = [q for q in acked
                       if con.execute("SELECT 1 FROM messages WHERE qid = ?", (q,)).fetchone()
                       is None]
        finally:
            con.close()
        self.assertEqual(missing, [], f"{len(missing)} acknowledged messages lost at SIGTERM")
        print(f"\n{len(acked)} acknowledged before/while SIGTERM, all stored; exit after "
              f"{took:.2f}s", file=sys.stderr)


if __name__ == "__main__":
    mxdtest.main()
