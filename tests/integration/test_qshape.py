#!/usr/bin/env python3
"""`mxctl queue --summary` (issue 23): the queue's shape as qshape shows it.

A queue.db made by mxctl (mxd's schema, migrations included) is filled with
messages of known arrival times, recipients of known domains and states,
and the summary must count them exactly: recipients per domain (top N by
count, then "other"), per qshape age bucket (by the message's arrival),
and per state; delivered and bounced recipients are not waiting and do not
count. One test also runs the real mxd: what it accepted shows up.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402

BUCKETS = ["0-5m", "5-10m", "20m", "40m", "80m", "160m", "320m", "640m", "1280m", "1280m+"]
MIN = 60

# (age in seconds, [(domain, state), ...]) per message.
MESSAGES = [
    (10, [("a.test", "queued"), ("a.test", "queued"), ("b.test", "deferred")]),
    (299, [("a.test", "deferred")]),
    (300, [("a.test", "queued"), ("c.test", "held")]),          # 5-10m
    (15 * MIN, [("b.test", "deferred"), ("b.test", "delivered")]),  # 20m
    (39 * MIN, [("c.test", "held"), ("a.test", "bounced")]),    # 40m
    (100 * MIN, [("b.test", "queued")]),                        # 160m
    (1279 * MIN, [("d.test", "deferred")]),                     # 1280m
    (1280 * MIN, [("a.test", "deferred"), ("b.test", "held")]),  # 1280m+
    (5 * 86400, [("e.test", "delivered")]),                     # nothing waiting
    (-3600, [("d.test", "queued")]),                            # from the future: 0-5m
]


def zeros():
    return [0] * len(BUCKETS)


class QueueSummary(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = mxdtest.make_tmpdir(cls.addClassCleanup, "mxd-qshape-")
        cls.db = os.path.join(cls.tmp, "queue.db")
        cls.mxctl = mxdtest.mxctl_path()
        subprocess.run([cls.mxctl, "-d", cls.db, "recipient", "add", "@x.test"], check=True,
                       stderr=subprocess.DEVNULL, timeout=30)
        cls.now = int(time.time())
        con = sqlite3.connect(cls.db)
        with con:
            for i, (age, rcpts) in enumerate(MESSAGES):
                mid = con.execute(
                    "INSERT INTO messages (qid, received, client_addr, helo, sender, size, body)"
                    " VALUES (?, ?, '192.0.2.1', 'h', 's@x.test', 1, x'41')",
                    (f"Q{i}", cls.now - age)).lastrowid
                for k, (dom, state) in enumerate(rcpts):
                    con.execute(
                        "INSERT INTO message_rcpts (message_id, address, domain, state,"
                        " next_attempt) VALUES (?, ?, ?, ?, 0)", (mid, f"u{k}@{dom}", dom, state))
        con.close()

    def summary(self, *args):
        """mxctl's output for the rows aged as MESSAGES says: the ages are
        exact to the second (299 s and 300 s fall in different buckets),
        so the rows are moved to this second first, and the run is taken
        only if it ended within that second (mxctl's clock read between)."""
        for _ in range(5):
            t = int(time.time())
            con = sqlite3.connect(self.db)
            with con:
                con.execute("UPDATE messages SET received = received + ?",
                            (t - QueueSummary.now,))
            con.close()
            QueueSummary.now = t
            p = subprocess.run([self.mxctl, "-d", self.db, "queue", "--summary", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                               text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            if int(time.time()) == t:
                return p.stdout
        self.fail("mxctl never ran within one second of the rows' ages")

    def expected(self):
        """{domain: (total, ages, queued, deferred, held)} from MESSAGES."""
        bounds = [5, 10, 20, 40, 80, 160, 320, 640, 1280]
        want = {}
        for age, rcpts in MESSAGES:
            b = next((i for i, m in enumerate(bounds) if age < m * MIN), 9)
            for dom, state in rcpts:
                if state not in ("queued", "deferred", "held"):
                    continue
                row = want.setdefault(dom, {"total": 0, "ages": zeros(), "queued": 0,
                                            "deferred": 0, "held": 0})
                row["total"] += 1
                row["ages"][b] += 1
                row[state] += 1
        return want

    def test_json_exact_counts(self):
        got = json.loads(self.summary("--json", "--top", "2"))
        self.assertEqual(got["buckets"], BUCKETS)
        # The hand-counted truth, independent of expected(): a.test has 5
        # waiting (its bounced one does not count), b.test 4 (not the
        # delivered one), c.test 2, d.test 2, e.test none.
        self.assertEqual([(d["domain"], d["total"]) for d in got["domains"]],
                         [("a.test", 5), ("b.test", 4)])
        a = got["domains"][0]
        self.assertEqual(a["ages"], [3, 1, 0, 0, 0, 0, 0, 0, 0, 1])
        self.assertEqual((a["queued"], a["deferred"], a["held"]), (3, 2, 0))
        b = got["domains"][1]
        self.assertEqual(b["ages"], [1, 0, 1, 0, 0, 1, 0, 0, 0, 1])
        self.assertEqual((b["queued"], b["deferred"], b["held"]), (1, 2, 1))
        # other: c.test (2 held, 5-10m and 40m) and d.test (1280m, 0-5m).
        self.assertEqual(got["other"], {"total": 4, "ages": [1, 1, 0, 1, 0, 0, 0, 0, 1, 0],
                                        "queued": 1, "deferred": 1, "held": 2})
        self.assertEqual(got["total"]["total"], 13)
        self.assertEqual(got["total"]["ages"], [5, 2, 1, 1, 0, 1, 0, 0, 1, 2])
        self.assertEqual((got["total"]["queued"], got["total"]["deferred"],
                          got["total"]["held"]), (5, 5, 3))
        want = self.expected()
        for d in got["domains"]:
            self.assertEqual({k: d[k] for k in want[d["domain"]]}, want[d["domain"]])

    def test_text_table(self):
        lines = self.summary().splitlines()
        self.assertEqual(lines[0].split(), ["DOMAIN", "TOTAL"] + BUCKETS
                         + ["QUEUED", "DEFERRED", "HELD"])
        rows = {ln.split()[0]: [int(x) for x in ln.split()[1:]] for ln in lines[1:]}
        self.assertEqual(lines[1].split()[0], "TOTAL")
        self.assertEqual(rows["TOTAL"], [13, 5, 2, 1, 1, 0, 1, 0, 0, 1, 2, 5, 5, 3])
        # Default top 10: every domain shown, no "other"; most recipients first.
        self.assertEqual([ln.split()[0] for ln in lines[2:]],
                         ["a.test", "b.test", "c.test", "d.test"])
        want = self.expected()
        for dom, w in want.items():
            self.assertEqual(rows[dom], [w["total"]] + w["ages"]
                             + [w["queued"], w["deferred"], w["held"]])

    def test_top_zero_and_usage(self):
        got = json.loads(self.summary("--json", "--top", "0"))
        self.assertEqual(got["domains"], [])
        self.assertEqual(got["other"]["total"], 13)
        for bad in (["--top", "x", "--summary"], ["--top", "3"], ["--bogus"]):
            p = subprocess.run([self.mxctl, "-d", self.db, "queue", *bad],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(p.returncode, 2, bad)

    def test_query_uses_the_indexes(self):
        # The summary must not walk the tables (a 1M-recipient queue: 12 s
        # that way, under 1 s through the indexes; docs/performance.md).
        con = sqlite3.connect(self.db)
        try:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master"
                                               " WHERE type = 'index'")}
        finally:
            con.close()
        self.assertTrue({"messages_received", "message_rcpts_shape"} <= names, names)


class SummaryOfRealMxd(mxdtest.MxdTestCase):
    """What mxd itself queued: a backup domain whose primary is down holds."""

    DOMAINS = {
        "example.test": {"mode": "local", "recipients": "any",
                         "lmtp": "127.0.0.1:1"},   # nothing listens: deferred
    }

    def test_accepted_mail_is_counted(self):
        with self.client() as c:
            c.ehlo()
            for _ in range(3):
                r = c.send_message("s@x.test", ["a@example.test", "b@example.test"],
                                   b"Subject: t\r\n\r\nhi\r\n")
                self.assertReply(r, 250)
        deadline = time.monotonic() + 10
        while True:
            out = self.mxd.mxctl("queue", "--summary", "--json")
            got = json.loads(out.stdout)
            if got["total"]["total"] == 6 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual([(d["domain"], d["total"]) for d in got["domains"]],
                         [("example.test", 6)])
        self.assertEqual(got["total"]["ages"][0], 6)
        self.assertEqual(got["total"]["queued"] + got["total"]["deferred"], 6)


if __name__ == "__main__":
    mxdtest.main()
