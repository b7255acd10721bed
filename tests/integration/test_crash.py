"""Durability: SIGKILL mxd while 20 sessions are sending, restart it on the
same database, and find every message that got a 250 with its full body.
Three kill/restart cycles."""

import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import ConnectionClosed, MxdTestCase  # noqa: E402

SESSIONS = 20
CYCLES = 3


def make_content(cycle, session, seq):
    rnd = random.Random(cycle * 1000003 + session * 1009 + seq)
    size = rnd.choice([300, 2000, 20000, 150000, 600000])
    head = f"Subject: crash c{cycle} s{session} n{seq}\r\nX-Seq: {cycle}.{session}.{seq}\r\n\r\n"
    line = f"cycle {cycle} session {session} message {seq} ".encode()
    body = bytearray(head.encode())
    while len(body) < size:
        body += line + b"-" * rnd.randint(0, 60) + b"\r\n"
    return bytes(body)


class Crash(MxdTestCase):
    SERVER = {"max_connections_per_ip": "200"}

    def run_senders(self, cycle, kill_after):
        """Runs SESSIONS senders until mxd is SIGKILLed after kill_after
        acknowledgements. Returns {qid: content} of acknowledged messages."""
        acked = {}
        lock = threading.Lock()
        enough = threading.Event()
        stop = threading.Event()
        go = threading.Event()
        ready = []
        errors = []

        def sender(n):
            seq = 0
            try:
                c = mxdtest.SmtpClient(self.mxd.port, timeout=30)
            except OSError as e:
                errors.append(f"session {n}: connect: {e!r}")
                return
            try:
                c.reply()
                c.ehlo(f"crash{n}.test")
                with lock:
                    ready.append(n)
                go.wait(timeout=60)
                while not stop.is_set():
                    content = make_content(cycle, n, seq)
                    seq += 1
                    c.send(b"MAIL FROM:<crash@client.test>\r\nRCPT TO:<c"
                           + str(n).encode() + b"@example.test>\r\nDATA\r\n")
                    rs = c.replies(3)
                    if [r.code for r in rs] != [250, 250, 354]:
                        errors.append(f"session {n}: {[str(r) for r in rs]}")
                        return
                    c.send(mxdtest.dot_stuff(content) + b".\r\n")
                    r = c.reply()
                    if r.code != 250 or not r.qid:
                        errors.append(f"session {n}: data reply {r}")
                        return
                    with lock:
                        acked[r.qid] = content
                        if len(acked) >= kill_after:
                            enough.set()
            except (ConnectionClosed, OSError) as e:
                if not go.is_set():
                    errors.append(f"session {n}: before sending: {e!r}")
                # else: mxd was killed under us, as intended
            finally:
                c.close()

        threads = [threading.Thread(target=sender, args=(n,), daemon=True)
                   for n in range(SESSIONS)]
        for t in threads:
            t.start()
        # All sessions are open before any sends: the kill always lands on
        # SESSIONS busy sessions.
        deadline = time.monotonic() + 30
        while len(ready) + len(errors) < SESSIONS and time.monotonic() < deadline:
            time.sleep(0.01)
        go.set()
        got = enough.wait(timeout=120)
        with lock:
            n_at_kill = len(acked)
        self.mxd.signal(signal.SIGKILL)
        stop.set()
        self.mxd.wait(timeout=30)
        for t in threads:
            t.join(timeout=60)
        self.assertFalse([t for t in threads if t.is_alive()], "senders hung after the kill")
        self.assertEqual(errors, [], "sessions failed before the kill")
        self.assertTrue(got, f"only {n_at_kill} acknowledgements in 120s")
        with lock:
            return dict(acked), n_at_kill

    def check_all(self, acked):
        self.assertEqual(mxdtest.integrity_check(self.mxd.db_path), ["ok"])
        missing = []
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            for qid, content in acked.items():
                row = con.execute("SELECT id, body, body_file FROM messages WHERE qid = ?",
                                  (qid,)).fetchone()
                if row is None:
                    missing.append(qid)
                    continue
                _, rest = mxdtest.split_received(mxdtest.full_body(self.mxd.db_path, row))
                if rest != content:
                    self.fail(f"{qid}: stored body differs ({len(rest)} vs {len(content)} octets)")
                n = con.execute("SELECT count(*) FROM message_rcpts WHERE message_id = ?",
                                (row["id"],)).fetchone()[0]
                if n != 1:
                    self.fail(f"{qid}: {n} recipient rows instead of 1")
        finally:
            con.close()
        self.assertEqual(missing, [], f"{len(missing)} of {len(acked)} acknowledged "
                                      "messages lost after SIGKILL")

    def test_sigkill_loses_nothing(self):
        all_acked = {}
        for cycle in range(CYCLES):
            kill_after = 40 + 15 * cycle
            acked, n_at_kill = self.run_senders(cycle, kill_after)
            all_acked.update(acked)
            self.mxd.set_port()
            self.mxd.start()
            self.check_all(all_acked)
            self.assertSpoolEmpty()  # stale spool files of the killed mxd are gone
            total = mxdtest.message_count(self.mxd.db_path)
            print(f"\ncycle {cycle + 1}: SIGKILL after {n_at_kill} acks, {len(acked)} acked in"
                  f" all this cycle; {len(all_acked)} acked so far, all found; "
                  f"{total} messages in the db after restart",
                  file=sys.stderr)
        # The restarted mxd still takes mail.
        c = self.client()
        content = b"Subject: after the crashes\r\n\r\nstill alive\r\n"
        r = c.send_message("a@client.test", ["user@example.test"], content)
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, content)
        self.assertNotIn(r.qid, all_acked, "queue id reused after restart")


if __name__ == "__main__":
    mxdtest.main()
