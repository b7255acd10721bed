"""Held at accept (issue 22): mail for a backup domain whose primary the
watcher knows is down is stored held at once, in the transaction that
accepts it, instead of queued, then claimed, tried (deliver fails it at
once without a connection while the watcher probes) and deferred.

- The primary (tests/integration/primary.py) is down. A first message is
  queued and tried as usual: mxd logs "destination unavailable" and holds
  it. Messages accepted right after (within the watcher's probe interval)
  are held at accept: logged "held ... at=accept" before their 250, never
  tried by the delivery path ("held" logged again without at=accept), and
  their rows say held, attempts 1, the connect error as last reply, next
  attempt a retry interval away (retry_min = 1h here), exactly what the
  failed attempt would have recorded.
- The primary comes back: the watcher releases every message, held at
  accept or not, and each arrives once; the queue is empty.

Without the change the later messages go the delivery path: each has a
"held" line without at=accept, and the test fails on that.
"""

import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from dovecot import wait_for  # noqa: E402
from test_backup import (CONNECT_ERR, DOMAIN, QUEUE_SLOW, SENDER, BackupCase,  # noqa: E402
                         sized_message, token_of)


class HeldAtAccept(BackupCase):
    START_PRIMARY = False
    EXTRA = QUEUE_SLOW

    def held_lines(self, qid):
        return [ln for ln in self.mxd.all_stderr().splitlines()
                if qid in ln and re.search(r"\bheld to=", ln)]

    def test_held_at_accept_then_released(self):
        first = f"u00@{DOMAIN}"
        tok0 = f"first-{os.urandom(4).hex()}"
        q0 = self.send(SENDER, [first], sized_message(SENDER, [first], tok0))
        self.assertTrue(wait_for(
            lambda: "destination unavailable" in self.mxd.all_stderr(), 20, poll=0.02),
            f"the first message was not tried{self.diag()}")
        # at once, within the watcher's first probe interval (1 s)
        plan = {}
        t_sent = time.time()
        for i in range(3):
            rcpts = [f"u{i + 1:02d}@{DOMAIN}", f"u{i + 5:02d}@{DOMAIN}"]
            tok = f"later-{i}-{os.urandom(4).hex()}"
            qid = self.send(SENDER, rcpts, sized_message(SENDER, rcpts, tok))
            plan[qid] = (tok, rcpts)
        time.sleep(1.0)  # what the delivery path would do, it has done by now
        for qid, (_, rcpts) in plan.items():
            lines = self.held_lines(qid)
            tried = [ln for ln in lines if "at=accept" not in ln]
            self.assertEqual(tried, [], f"{qid} was tried after it was accepted{self.diag()}")
            self.assertEqual(len(lines), len(rcpts),
                             f"{qid}: not held at accept: {lines}{self.diag()}")
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            rows = con.execute(
                "SELECT m.qid, r.state, r.attempts, r.next_attempt, r.last_reply "
                "FROM message_rcpts r JOIN messages m ON m.id = r.message_id").fetchall()
        finally:
            con.close()
        later = [r for r in rows if r[0] in plan]
        self.assertEqual(len(later), 6, rows)
        for qid, state, attempts, next_attempt, reply in later:
            self.assertEqual((state, attempts), ("held", 1), (qid, state, attempts, reply))
            self.assertRegex(reply or "", CONNECT_ERR)
            self.assertGreater(next_attempt, t_sent + 1800, "due within half an hour")
        self.assertEqual([r[1] for r in rows if r[0] == q0], ["held"], rows)

        self.primary.start()
        self.wait_queue_empty(timeout=60)
        seen = {}
        for m in self.primary.messages():
            for r in m.rcpt_tos:
                key = (token_of(m.body), r.lower())
                seen[key] = seen.get(key, 0) + 1
        want = {(tok0, first)} | {(tok, r) for tok, rcpts in plan.values() for r in rcpts}
        self.assertEqual(set(seen), want, f"delivered {seen}{self.diag()}")
        self.assertEqual(sum(seen.values()), len(want), f"a recipient twice: {seen}")


if __name__ == "__main__":
    unittest.main()
