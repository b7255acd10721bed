"""Crash test under load: 50 concurrent SMTP sessions send messages with
unique tokens while mxd delivers them to a private Dovecot over LMTP, and
mxd is SIGKILLed at random moments (>= 20 times) and restarted on the same
database each time. Every token that got a 250 must in the end be in
Dovecot's maildirs (or still in the store). Prints kills (how many hit a
commit in flight, how many hit deliveries in flight), acknowledged, lost
and duplicate deliveries. Required: 0 lost.

PowerCut does the same with the power cut simulated below the file
system: mxd runs under the LD_PRELOAD shim tests/shim/fsfault.c, which logs
the old contents of every write to the database and its WAL; after each
SIGKILL the test rolls back every write not followed by an fsync of its
file (fsfault.power_cut) before restarting, so only what SQLite synced
survives, as after a power failure.

Environment for longer runs:
  MXD_CRASH_KILLS     kills per run (default 22)
  MXD_POWERCUT_KILLS  kills per power-cut run (default 12)
  MXD_CRASH_SESSIONS  concurrent sessions (default 50)
  MXD_CRASH_SEED      random seed (default: random, printed)
"""

import os
import random
import re
import smtplib
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsfault  # noqa: E402
import mxdtest  # noqa: E402
from dovecot import MxdDovecotCase, make_message, tokens_by_user, wait_for  # noqa: E402

KILLS = int(os.environ.get("MXD_CRASH_KILLS", "22"))
SESSIONS = int(os.environ.get("MXD_CRASH_SESSIONS", "50"))
USERS = [f"load{i:02d}@example.test" for i in range(20)]
SENDER = "load@client.test"
PAUSE = 0.25  # per session between messages: keeps Dovecot's backlog short


class Load:
    """SESSIONS sender threads; each reconnects after mxd goes away."""

    def __init__(self, port, seed):
        self.port = port
        self.seed = seed
        self.acked = {}  # token -> recipients
        self.sent = 0
        self.in_commit = 0  # sessions waiting for the reply to the final "."
        self.errors = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True)
                        for k in range(SESSIONS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        return [t for t in self.threads if t.is_alive()]

    def message(self, rnd, k, seq):
        token = f"L{k:02d}-{seq:05d}-{rnd.getrandbits(32):08x}"
        rcpts = rnd.sample(USERS, 2 if seq % 7 == 0 else 1)
        lines = [f"token {token}"] + ["y" * 70 for _ in range(rnd.choice([5, 40, 200]))]
        return token, rcpts, make_message(SENDER, rcpts, f"load {token}", lines,
                                          [f"X-Token: {token}"])

    def transaction(self, c, token, rcpts, content):
        code, _ = c.mail(SENDER)
        if code != 250:
            return
        for r in rcpts:
            if c.rcpt(r)[0] != 250:
                return
        c.putcmd("data")
        code, _ = c.getreply()
        if code != 354:
            return
        with self.lock:
            self.in_commit += 1
        try:
            c.send(re.sub(rb"(?m)^\.", b"..", content) + b".\r\n")
            code, _ = c.getreply()
        finally:
            with self.lock:
                self.in_commit -= 1
        if code == 250:
            with self.lock:
                self.acked[token] = rcpts

    def run(self, k):
        rnd = random.Random(self.seed * 1000 + k)
        seq = 0
        while not self.stop.is_set():
            try:
                c = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test",
                                 timeout=20)
                c.ehlo("client.test")
                while not self.stop.is_set():
                    token, rcpts, content = self.message(rnd, k, seq)
                    seq += 1
                    with self.lock:
                        self.sent += 1
                    self.transaction(c, token, rcpts, content)
                    time.sleep(PAUSE * rnd.random() * 2)
                c.quit()
            except (OSError, smtplib.SMTPException):
                with self.lock:
                    self.errors += 1
                time.sleep(0.05)


class CrashLoad(MxdDovecotCase):
    SERVER = {"max_connections_per_ip": "400"}
    KILLS = KILLS
    LABEL = "crash load"

    def after_kill(self):
        """What happens between the SIGKILL and the restart."""
        return None

    def store_tokens(self):
        """{token: recipients still in the store}, read from the database."""
        out = {}
        rx = re.compile(rb"X-Token: (\S+)")
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            for body, rcpt in con.execute(
                    "SELECT m.body, r.address FROM messages m JOIN message_rcpts r "
                    "ON r.message_id = m.id WHERE r.state != 'delivered'"):
                m = rx.search(bytes(body[:4096]))
                if m:
                    out.setdefault(m.group(1).decode(), set()).add(rcpt)
        finally:
            con.close()
        return out

    def test_kill_under_load(self):
        seed = int(os.environ.get("MXD_CRASH_SEED", random.randrange(1 << 30)))
        rnd = random.Random(seed)
        load = Load(self.mxd.port, seed)
        load.start()
        kills = in_commit = in_delivery = 0
        t0 = time.monotonic()
        try:
            for _ in range(self.KILLS):
                time.sleep(rnd.uniform(0.8, 3.0))
                files_before = self.dov.count()
                time.sleep(0.1)
                with load.lock:
                    committing = load.in_commit
                delivering = self.dov.count() > files_before
                self.assertTrue(self.mxd.running(), f"mxd died by itself{self.diag()}")
                self.mxd.kill()
                self.after_kill()
                kills += 1
                in_commit += committing > 0
                in_delivery += delivering
                self.mxd.start()
        finally:
            stuck = load.join()
        load_s = time.monotonic() - t0
        self.assertEqual(stuck, [], "sender threads hung")
        acked = dict(load.acked)
        self.assertTrue(acked, "nothing was acknowledged")
        # Let the queue drain into Dovecot (retries are 1-2 s).
        wait_for(lambda: self.counts()[0] == 0, 240, poll=0.5)
        time.sleep(1.0)
        per_user = tokens_by_user(self.dov)
        in_store = self.store_tokens()
        lost, dups, deliveries = [], 0, 0
        for token, rcpts in acked.items():
            for u in rcpts:
                n = per_user.get(u, {}).get(token, 0)
                deliveries += 1
                if n == 0 and u not in in_store.get(token, ()):
                    lost.append((u, token))
                dups += max(0, n - 1)
        print(f"\n{self.LABEL}: seed {seed}, {SESSIONS} sessions, {load_s:.0f}s of load; "
              f"kills {kills} ({in_commit} with a commit in flight, {in_delivery} during "
              f"deliveries); sent {load.sent}, acknowledged {len(acked)} messages "
              f"({deliveries} deliveries); lost {len(lost)}; duplicates {dups}; "
              f"left in the store {len(in_store)}", file=sys.stderr)
        self.assertGreaterEqual(kills, min(self.KILLS, 20))
        self.assertGreater(in_commit, 0, "no kill hit a commit in flight")
        self.assertGreater(in_delivery, 0, "no kill hit a delivery in flight")
        self.assertEqual(lost, [], f"acknowledged but lost{self.diag()}")
        self.assertEqual(mxdtest.integrity_check(self.mxd.db_path), ["ok"])


class PowerCut(CrashLoad):
    KILLS = int(os.environ.get("MXD_POWERCUT_KILLS", "12"))
    LABEL = "power cut"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mxd.stop()
        cls.undo = os.path.join(cls.tmpdir, "undo.log")
        cls.mxd.env = fsfault.env(cls.mxd.db_path, undo=cls.undo)
        cls.cuts = []
        cls.mxd.start()

    def after_kill(self):
        self.cuts.append(fsfault.power_cut(self.undo))

    def test_kill_under_load(self):
        super().test_kill_under_load()
        rolled = [c for c in self.cuts if c[2] > 0]
        print(f"power cut: {len(self.cuts)} cuts, {len(rolled)} rolled back unsynced writes "
              f"({sum(c[2] for c in self.cuts)} octets in all); "
              f"{sum(c[0] for c in self.cuts)} undo records", file=sys.stderr)
        self.assertTrue(rolled, "no power cut found unsynced writes: the shim saw nothing")


if __name__ == "__main__":
    unittest.main(verbosity=2)
