"""SIGKILL mxd while it delivers to Dovecot, restart it on the same
database: every accepted message reaches its maildirs at least once. The
test prints how many duplicates the kills caused (a recipient is marked
delivered only after Dovecot's 2xx, so a kill between Dovecot's save and
mxd's commit delivers that recipient again) and asserts nothing is lost."""

import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dovecot  # noqa: E402
import mxdtest  # noqa: E402
from dovecot import MxdDovecotCase, make_message, tokens_by_user  # noqa: E402

SENDER = "crash@client.test"
USERS = [f"k{i:02d}@example.test" for i in range(20)]
MESSAGES = 300
THREADS = 4
KILL_AT = (0.15, 0.5)  # fractions of all deliveries present when mxd is killed


class LmtpCrash(MxdDovecotCase):
    START_DOVECOT = False  # the queue fills first, then delivery starts at once

    def send_all(self):
        rnd = random.Random(3003)
        plan = []
        for i in range(MESSAGES):
            rcpts = rnd.sample(USERS, 2 if i % 5 == 0 else 1)
            token = f"crash{i:03d}-{os.urandom(4).hex()}"
            lines = [f"token {token}"] + [f"{i} line {n} " + "z" * 60
                                          for n in range(rnd.choice([10, 100, 400]))]
            plan.append((token, rcpts, make_message(SENDER, rcpts, f"crash {i}", lines,
                                                    [f"X-Token: {token}"])))
        errors = []

        def worker(k):
            import smtplib

            try:
                c = smtplib.SMTP("127.0.0.1", self.mxd.port, local_hostname="client.test",
                                 timeout=30)
                c.ehlo("client.test")
                for token, rcpts, content in plan[k::THREADS]:
                    dovecot.smtp_send(None, SENDER, rcpts, content, conn=c)
                c.quit()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"session {k}: {e!r}")

        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertFalse([t for t in threads if t.is_alive()], "senders hung")
        self.assertEqual(errors, [], "sending failed")
        return plan

    def kill_when(self, n, timeout=60):
        """SIGKILLs mxd as soon as n files are in the maildirs; returns the
        count at the kill (and right after it)."""
        deadline = time.monotonic() + timeout
        while self.dov.count() < n:
            if time.monotonic() > deadline:
                self.fail(f"only {self.dov.count()} of {n} files after {timeout}s; "
                          f"queue {self.counts()}{self.diag()}")
            if not self.mxd.running():
                self.fail(f"mxd died by itself{self.diag()}")
            time.sleep(0.002)
        before = self.dov.count()
        self.mxd.kill()
        self.kill_times.append(time.time())
        return before

    def dup_ages(self, plan):
        """For each duplicated delivery: how long before the nearest kill
        its first copy was saved (ms; negative: after the kill)."""
        import re

        rx = re.compile(rb"X-Token: (\S+)")
        first = {}
        for user, files in self.dov.all_files().items():
            for p in files:
                with open(p, "rb") as f:
                    m = rx.search(f.read(65536))
                if m:
                    first.setdefault((user, m.group(1).decode()), []).append(os.stat(p).st_mtime)
        ages = []
        for key, times in first.items():
            if len(times) > 1:
                t = min(times)
                k = min((kt for kt in self.kill_times if kt >= t - 5), default=None,
                        key=lambda kt: abs(kt - t))
                if k is not None:
                    ages.append(round((k - t) * 1000))
        return sorted(ages)

    def test_kill_during_delivery(self):
        self.kill_times = []
        plan = self.send_all()
        total = sum(len(r) for _, r, _ in plan)
        n, _ = self.counts()
        self.assertEqual(n, MESSAGES, "all messages queued while Dovecot is down")
        self.dov.start()
        p = self.mxd.mxctl("flush")
        self.assertEqual(p.returncode, 0, f"mxctl flush: {p.stdout!r} {p.stderr!r}")
        kills = []
        for frac in KILL_AT:
            at = self.kill_when(int(total * frac))
            time.sleep(0.3)  # let Dovecot finish whatever it had
            kills.append((at, self.dov.count()))
            self.mxd.start()
        self.wait_queue_empty(timeout=90)
        time.sleep(1.5)
        per_user = tokens_by_user(self.dov)
        lost, dups, stray = [], 0, []
        for token, rcpts, _ in plan:
            for u in rcpts:
                c = per_user.get(u, {}).get(token, 0)
                if c == 0:
                    lost.append((u, token))
                dups += max(0, c - 1)
        wanted = {(u, t) for t, rcpts, _ in plan for u in rcpts}
        for u, d in per_user.items():
            for t in d:
                if (u, t) not in wanted:
                    stray.append((u, t))
        files = self.dov.count()
        print(f"\n{MESSAGES} messages, {total} deliveries; kills at {kills} "
              f"(files at the kill, files 0.3s later); {files} files in the end: "
              f"{dups} duplicates, {len(lost)} lost", file=sys.stderr)
        if dups:
            print(f"duplicates: first copy saved this many ms before the kill: "
                  f"{self.dup_ages(plan)}", file=sys.stderr)
        for at, _ in kills:
            if at >= total:
                print("warning: a kill came after every delivery was done; the crash "
                      "window was not exercised", file=sys.stderr)
        self.assertEqual(lost, [], f"lost deliveries{self.diag()}")
        self.assertEqual(stray, [], "files nobody sent")
        self.assertEqual(files, total + dups)
        self.assertEqual(mxdtest.integrity_check(self.mxd.db_path), ["ok"])
        self.assertEqual(self.counts(), (0, {}))


if __name__ == "__main__":
    unittest.main(verbosity=2)
