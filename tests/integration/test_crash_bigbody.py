"""Large bodies in files (issue 22, schema 013): on SQLite a body of 256 KiB
or more is not copied into the database but kept in bodies/ beside it,
fdatasynced and linked before its row commits. SIGKILL mxd while sessions
send such messages (and it delivers them to a private Dovecot over LMTP),
restart it on the same database, several times. Then:
  - every acknowledged message is delivered, whole: its size and SHA-256
    are those sent;
  - after each restart every file in bodies/ is named by a row (a crash
    between the link and the commit leaves nothing behind), and once the
    queue is empty bodies/ and spool/ are empty (a delivered message's file
    is unlinked after its deletion committed).
"""

import hashlib
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from dovecot import MxdDovecotCase, delivered_content, make_message, wait_for  # noqa: E402
from mxdtest import ConnectionClosed  # noqa: E402

SESSIONS = 8
CYCLES = 3
USER = "big@example.test"


def content(cycle, session, seq):
    """A message of 0.3 to 1.5 MiB (some below the 256 KiB threshold)."""
    rnd = random.Random(cycle * 1000003 + session * 1009 + seq)
    token = f"B{cycle}-{session}-{seq}-{rnd.getrandbits(32):08x}"
    size = rnd.choice([100_000, 300_000, 700_000, 1_500_000])
    line = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(76))
    lines = [f"{k:08d} {line}" for k in range(size // 88)]
    return token, make_message("big@client.test", [USER], f"big {token}", lines,
                               [f"X-Token: {token}"])


class CrashBigBody(MxdDovecotCase):
    SERVER = {"max_message_size": "8M"}

    def send_until_killed(self, cycle, kill_after):
        """SESSIONS senders until mxd is SIGKILLed after kill_after acks:
        {token: content} of the acknowledged messages."""
        acked, errors = {}, []
        lock = threading.Lock()
        enough, stop = threading.Event(), threading.Event()

        def sender(n):
            seq = 0
            try:
                c = mxdtest.SmtpClient(self.mxd.port, timeout=60)
            except OSError as e:
                errors.append(f"session {n}: connect: {e!r}")
                return
            try:
                c.reply()
                c.ehlo(f"big{n}.test")
                while not stop.is_set():
                    token, data = content(cycle, n, seq)
                    seq += 1
                    c.send(b"MAIL FROM:<big@client.test>\r\nRCPT TO:<" + USER.encode()
                           + b">\r\nDATA\r\n")
                    rs = c.replies(3)
                    if [r.code for r in rs] != [250, 250, 354]:
                        errors.append(f"session {n}: {[str(r) for r in rs]}")
                        return
                    c.send(mxdtest.dot_stuff(data) + b".\r\n")
                    r = c.reply()
                    if r.code != 250:
                        errors.append(f"session {n}: data reply {r}")
                        return
                    with lock:
                        acked[token] = data
                        if len(acked) >= kill_after:
                            enough.set()
            except (ConnectionClosed, OSError):
                pass  # mxd was killed under us, as intended
            finally:
                c.close()

        threads = [threading.Thread(target=sender, args=(n,), daemon=True)
                   for n in range(SESSIONS)]
        for t in threads:
            t.start()
        got = enough.wait(timeout=120)
        time.sleep(random.uniform(0, 0.3))  # lands anywhere in the next commits
        self.mxd.signal(signal.SIGKILL)
        stop.set()
        self.mxd.wait(timeout=30)
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [], "sessions failed before the kill")
        self.assertTrue(got, f"only {len(acked)} acknowledgements in 120 s")
        with lock:
            return dict(acked)

    def body_files(self):
        try:
            return sorted(os.listdir(mxdtest.bodies_dir(self.mxd.db_path)))
        except FileNotFoundError:
            return []

    def named_files(self):
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            return sorted(r[0] for r in con.execute(
                "SELECT body_file FROM messages WHERE body_file IS NOT NULL"))
        finally:
            con.close()

    def test_sigkill_big_bodies(self):
        acked = {}
        files_seen = 0
        for cycle in range(CYCLES):
            acked.update(self.send_until_killed(cycle, 10 + 5 * cycle))
            files_seen += len(self.body_files())
            self.mxd.set_port()
            self.mxd.start()
            # the sweep ran at start-up: each file left is a row's body
            self.assertEqual(self.body_files(), self.named_files(), "body files leaked")
            self.assertNotIn("body file missing", self.mxd.all_stderr())
        # every acknowledged message arrives whole
        self.wait_queue_empty(timeout=180)
        got = {}
        for data in self.dov.messages(USER):
            _, _, rest = delivered_content(data)
            tok = rest.split(b"X-Token: ", 1)[1].split(b"\r\n", 1)[0].decode()
            got.setdefault(tok, []).append(rest)
        lost = [t for t in acked if t not in got]
        self.assertEqual(lost, [], f"{len(lost)} of {len(acked)} acknowledged messages lost"
                                   f"{self.diag()}")
        for tok, data in acked.items():
            for rest in got[tok]:
                self.assertEqual((len(rest), hashlib.sha256(rest).hexdigest()),
                                 (len(data), hashlib.sha256(data).hexdigest()),
                                 f"{tok}: delivered body differs")
        big = sum(len(d) >= 256 * 1024 for d in acked.values())
        self.assertGreater(big, 0)
        # delivered and deleted: every body file is gone, nothing spooled
        self.assertTrue(wait_for(lambda: not self.body_files(), 10),
                        f"body files left after delivery: {self.body_files()}")
        self.assertTrue(wait_for(lambda: not self.mxd.spool_files(), 5),
                        f"files left in {self.mxd.spool_dir}")
        print(f"\n{len(acked)} acknowledged ({big} with a body file) over {CYCLES} SIGKILLs,"
              f" all delivered intact; {files_seen} body files found at the kills",
              file=sys.stderr)


class BigBodyOps(MxdDovecotCase):
    """Queued big bodies (Dovecot down: nothing is delivered) through the
    readers of sdb_body_read: mxctl show, a DSN's copy of the original
    headers (mxctl bounce), and mxctl delete (the file goes with the row)."""
    START_DOVECOT = False
    SERVER = {"max_message_size": "8M"}

    def queue_big(self, n):
        out = []
        for k in range(n):
            token, data = content(9, 0, k * 4 + 2)  # 700,000 octets
            c = mxdtest.SmtpClient(self.mxd.port, timeout=60)
            try:
                c.reply()
                r = c.send_message(f"ops{k}@example.test", [USER], mxdtest.dot_stuff(data))
            finally:
                c.close()
            self.assertEqual(r.code, 250, str(r))
            self.assertEqual(mxdtest.stored_content(self.mxd.db_path, r.qid)[1], data)
            out.append((r.qid, token, data))
        return out

    def file_of(self, qid):
        return mxdtest.message_by_qid(self.mxd.db_path, qid)["row"]["body_file"]

    def test_show_bounce_delete(self):
        (q1, t1, d1), (q2, _, d2), (q3, _, _) = self.queue_big(3)
        bodies = mxdtest.bodies_dir(self.mxd.db_path)
        for q in (q1, q2, q3):
            self.assertIsNotNone(self.file_of(q), f"{q}: body not in a file")
        # mxctl show prints the whole stored body: our Received:, then the content
        p = self.mxd.mxctl("show", q2)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.endswith(d2), p.stdout[-300:])
        # a bounce: the DSN (to ops0@example.test, queued here) carries the
        # original's headers, read from the row and its file
        f1 = os.path.join(bodies, self.file_of(q1))
        p = self.mxd.mxctl("bounce", q1)
        self.assertEqual(p.returncode, 0, p.stderr)
        dsn = wait_for(lambda: mxdtest.messages_containing(self.mxd.db_path,
                                                           f"X-Token: {t1}".encode()), 20)
        self.assertTrue(dsn, f"no DSN with the original headers{self.diag()}")
        self.assertNotIn(q1, dsn)
        self.assertTrue(wait_for(lambda: not os.path.exists(f1), 10), "bounced: file kept")
        # delete: the row, then its file
        f3 = os.path.join(bodies, self.file_of(q3))
        p = self.mxd.mxctl("delete", q3)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIsNone(mxdtest.message_by_qid(self.mxd.db_path, q3))
        self.assertTrue(wait_for(lambda: not os.path.exists(f3), 10), "deleted: file kept")
        self.assertTrue(os.path.exists(os.path.join(bodies, self.file_of(q2))))


if __name__ == "__main__":
    mxdtest.main()
