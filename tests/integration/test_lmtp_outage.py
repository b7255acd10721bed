"""Dovecot down: mxd still accepts (250), defers every recipient with the
reason in `mxctl queue --json`; Dovecot back and `mxctl flush`: everything
is delivered, nothing twice. With a long retry_min, only the flush brings
the mail (the backoff holds otherwise)."""

import os
import random
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dovecot import (MxdDovecotCase, json_recipients, make_message, mxctl_json,  # noqa: E402
                     rcpt_address, tokens_by_user, wait_for)

SENDER = "sender@client.test"
USERS = [f"o{i:02d}@example.test" for i in range(10)]


class OutageBase(MxdDovecotCase):
    START_DOVECOT = False

    def send_plan(self, n, seed):
        rnd = random.Random(seed)
        plan = []
        for i in range(n):
            rcpts = rnd.sample(USERS, rnd.choice([1, 2]))
            token = f"out{seed}-{i:02d}-{os.urandom(4).hex()}"
            content = make_message(SENDER, rcpts, f"outage {i}", [f"token {token}", "." * 3],
                                   [f"X-Token: {token}"])
            qid = self.send(SENDER, rcpts, content)
            self.assertIsNotNone(qid, "no queue id in the 250 reply")
            plan.append((qid, token, rcpts))
        return plan

    def queue_entries(self):
        return json_recipients(mxctl_json(self.mxd, "queue"))

    def wait_all_deferred(self, total, min_attempts=1, timeout=20):
        """Waits until `mxctl queue --json` lists total recipients, all
        deferred after at least min_attempts; returns the entries."""
        last = []

        def ok():
            nonlocal last
            last = self.queue_entries()
            return len(last) == total and all(
                e.get("state") == "deferred" and int(e.get("attempts") or 0) >= min_attempts
                for e in last)

        if not wait_for(ok, timeout, poll=0.3):
            self.fail(f"after {timeout}s not all {total} recipients deferred "
                      f"(attempts >= {min_attempts}): {last[:5]!r}...{self.diag()}")
        return last

    def check_reason(self, entries):
        for e in entries:
            reply = e.get("last_reply")
            self.assertIsInstance(reply, str, f"no last_reply in {e!r}")
            self.assertTrue(reply.strip(), f"empty last_reply in {e!r}")
            self.assertRegex(reply, re.compile(r"refused|connect", re.I),
                             f"last_reply does not say why: {e!r}")

    def check_once(self, plan):
        per_user = tokens_by_user(self.dov)
        expected = {}
        for qid, token, rcpts in plan:
            for u in rcpts:
                expected.setdefault(u, {})[token] = 1
        dups = {u: {t: n for t, n in d.items() if n > 1} for u, d in per_user.items()}
        dups = {u: d for u, d in dups.items() if d}
        self.assertEqual(dups, {}, "delivered more than once")
        self.assertEqual(per_user, expected, "maildirs differ from what was sent")


class OutageThenFlush(OutageBase):
    """retry_min = 1s: mxd keeps retrying on its own; Dovecot starts, flush."""

    def test_outage_flush(self):
        plan = self.send_plan(30, 1)
        total = sum(len(p[2]) for p in plan)
        entries = self.wait_all_deferred(total)
        self.check_reason(entries)
        sent_qids = {p[0] for p in plan}
        json_qids = {e["message"].get("qid") for e in entries}
        self.assertEqual(json_qids, sent_qids, "queue ids in mxctl queue --json")
        self.assertEqual({rcpt_address(e) for e in entries},
                         {u for p in plan for u in p[2]},
                         "recipient addresses in mxctl queue --json")
        print(f"\nexample deferral: {entries[0]!r}", file=sys.stderr)
        self.assertEqual(self.dov.count(), 0)

        self.dov.start()
        p = self.mxd.mxctl("flush")
        self.assertEqual(p.returncode, 0, f"mxctl flush: {p.stdout!r} {p.stderr!r}")
        self.wait_files(total, timeout=20)
        self.wait_queue_empty(timeout=20)
        # Retries of deferred recipients never deliver a second copy.
        time.sleep(2.5)
        self.assertEqual(self.dov.count(), total, f"more files than deliveries{self.diag()}")
        self.check_once(plan)
        self.assertEqual(self.queue_entries(), [], "mxctl queue --json lists recipients")


class OutageFlushOnly(OutageBase):
    """retry_min = 1h: after the first failed attempt nothing happens until
    an operator flushes (the domain form `flush example.test`)."""

    EXTRA = "[queue]\nretry_min = 1h\nretry_max = 2h\n"

    def test_flush_brings_mail(self):
        plan = self.send_plan(5, 2)
        total = sum(len(p[2]) for p in plan)
        entries = self.wait_all_deferred(total)
        self.check_reason(entries)
        attempts = sorted(int(e["attempts"]) for e in entries)
        self.dov.start()
        time.sleep(3)
        self.assertEqual(self.dov.count(), 0,
                         "delivered before the retry time without a flush")
        again = self.queue_entries()
        self.assertEqual(sorted(int(e["attempts"]) for e in again), attempts,
                         "attempts grew without a flush (retry_min = 1h)")
        p = self.mxd.mxctl("flush", "example.test")
        self.assertEqual(p.returncode, 0, f"mxctl flush example.test: {p.stdout!r} {p.stderr!r}")
        self.wait_files(total, timeout=15)
        self.wait_queue_empty(timeout=15)
        time.sleep(1)
        self.check_once(plan)


class TempFailAfterData(OutageBase):
    """Dovecot up, one recipient over quota with quota_full_tempfail = yes:
    452 4.2.2 after DATA. That recipient is deferred and retried alone (the
    other one of the same message is not delivered twice); once the quota
    is lifted (Dovecot re-reads its passwd-file) it is delivered."""

    START_DOVECOT = True
    DOVECOT_USERS = {"tf@example.test": "userdb_quota_rule=*:storage=1",
                     "ok@example.test": ""}
    DOVECOT_KW = {"quota": True, "extra_conf": "quota_full_tempfail = yes\n"}

    def test_4xx_after_data_defers(self):
        token = f"tf-{os.urandom(4).hex()}"
        rcpts = ["ok@example.test", "tf@example.test"]
        content = make_message(SENDER, rcpts, "tempfail", ["z" * 900] * 4,
                               [f"X-Token: {token}"])
        qid = self.send(SENDER, rcpts, content)
        self.wait_files(1, "ok@example.test", timeout=20)
        last = []

        def deferred():
            nonlocal last
            last = self.queue_entries()
            return [e for e in last if rcpt_address(e) == "tf@example.test"
                    and e.get("state") == "deferred" and int(e.get("attempts") or 0) >= 2]

        got = wait_for(deferred, 20, poll=0.3)
        if not got:
            self.fail(f"tf@example.test not deferred twice: {last!r}{self.diag()}")
        self.assertRegex(got[0].get("last_reply") or "", r"^452 4\.2\.2 .*Quota",
                         f"last_reply {got[0]!r}")
        self.assertEqual({rcpt_address(e): e.get("state") for e in last},
                         {"ok@example.test": "delivered", "tf@example.test": "deferred"},
                         f"the queue shows the delivered and the deferred recipient: {last!r}")
        self.assertEqual(got[0]["message"].get("qid"), qid)
        self.assertEqual(self.dov.count("tf@example.test"), 0)
        # Lift the quota; the next retry (retry_max = 2s) delivers. (An
        # explicit rule: without one Dovecot keeps the old limit it wrote
        # into the maildirsize file.)
        self.dov.users["tf@example.test"] = "userdb_quota_rule=*:storage=100M"
        self.dov.write_config()
        self.wait_files(1, "tf@example.test", timeout=20)
        self.wait_queue_empty(timeout=20)
        time.sleep(1)
        self.check_once([(qid, token, rcpts)])


if __name__ == "__main__":
    unittest.main(verbosity=2)
