"""Cluster mode (issue 21) and a backup domain: held mail is released by
whichever node sees the primary return first, once (not once per node), and
ETRN on any node releases the mail every node accepted.

Every test starts a private PostgreSQL 15 (pgcluster.py), three mxd nodes
with store = postgresql on one database (each its own node_name, spool and
metrics port), [domain example-backup.test] mode = backup on each, and one
scripted primary MX (primary.py, aiosmtpd) that the test stops and starts.
retry_min = 1h: after the first failed attempt no recipient is due for an
hour, so only the primary watcher or ETRN can bring the mail within seconds.

1. WatcherRelease: the primary is down; every node accepts mail and holds it
   (each node's own attempt fails, so every node watches the primary). The
   primary comes back: every recipient of every message reaches it exactly
   once (counted per message token and recipient at the primary, and per
   "delivered" log line over all nodes): duplicates 0, lost 0, the queue
   empty, no node counted a lease takeover.
2. EtrnAnyNode: the primary is up but says 450 at RCPT (no failed
   connection, so no watcher), mail accepted on nodes 1 and 2 waits; the
   primary takes the recipients again but nothing moves for seconds; `ETRN
   example-backup.test` on node 0, which accepted none of it, releases all
   of it, each recipient once.

Messages carry a unique token (Subject, X-Token, Message-ID).
"""

import collections
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
import pgcluster  # noqa: E402
import test_cluster  # noqa: E402
from dovecot import smtp_send, wait_for  # noqa: E402
from primary import Primary  # noqa: E402
from test_backup import etrn, token_of  # noqa: E402

DOMAIN = "example-backup.test"
SENDER = "load@client.test"
USERS = [f"b{i:02d}@{DOMAIN}" for i in range(8)]
QUEUE_SLOW = "[queue]\nretry_min = 1h\nretry_max = 2h\n"
PER_NODE = 8  # messages accepted by each node
WATCH_MAX = 15  # deliver_dest.c WATCH_MAX_MS: the watcher's longest probe interval
DELIVERED_RX = re.compile(r"(\S+) deliver delivered to=<?([^>\s]+)")


def rcpts_for(i):
    """One recipient, two for every third message."""
    first = USERS[i % len(USERS)]
    return [first, USERS[(i + 3) % len(USERS)]] if i % 3 == 0 else [first]


class ClusterBackupCase(test_cluster.ClusterCase):
    NODES = 3
    START_PRIMARY = False
    REJECT = {}

    def setUp(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, type(self).__name__)
        # cleanups run last-in first-out: PostgreSQL stops after the nodes
        self.pg = pgcluster.PgCluster(standby=False)
        self.addCleanup(self.pg.close)
        self.pg.start()
        self.dbname = self.pg.create_database("mxd")
        self.primary = Primary(self.tmpdir, reject=dict(self.REJECT))
        self.addCleanup(self.primary.close)
        if self.START_PRIMARY:
            self.primary.start()
        self.nodes = [self.make_node(i) for i in range(self.NODES)]
        for n in self.nodes:
            self.addCleanup(self.stop_node, n)
            n.start(timeout=60)
        self.wait_registered()
        self.sent = {}  # token -> (node index, qid, recipients)

    def make_node(self, i):
        return mxdtest.Mxd(
            self.tmpdir, name=f"node{i}",
            server=self.node_server(i, etrn_clients="127.0.0.1, ::1"),
            domains={DOMAIN: {"mode": "backup", "primary": self.primary.target,
                              "recipients": "any"}},
            extra=QUEUE_SLOW)

    def diag(self, limit=4000):
        out = [f"\n--- {n.name} stderr (tail)\n{n.all_stderr()[-limit:]}" for n in self.nodes]
        out.append(f"\n--- primary (tail)\n{self.primary.logs(limit)}")
        out.append("\n" + self.pg.logs()[-2 * limit:])
        return "".join(out)

    # -- sending and counting

    def send_on(self, node_idx, count):
        for i in range(count):
            token = f"bk-n{node_idx}-{i:03d}-{os.urandom(3).hex()}"
            rcpts = rcpts_for(len(self.sent))
            qid = smtp_send(self.nodes[node_idx].port, SENDER, rcpts,
                            test_cluster.message(token, rcpts))
            self.assertTrue(qid, f"node{node_idx}: 250 without a queue id")
            self.sent[token] = (node_idx, qid, rcpts)

    def total(self):
        return sum(len(r) for _, _, r in self.sent.values())

    def wait_waiting(self, states, reply_rx, timeout=30):
        """Waits until every recipient sent is in PostgreSQL in one of states,
        attempted at least once, its last reply matching reply_rx."""
        rows = []

        def ok():
            nonlocal rows
            rows = self.sql("SELECT r.state, r.attempts, coalesce(r.last_reply, ''), "
                            "r.lease_owner FROM message_rcpts r")
            return len(rows) == self.total() and all(
                s in states and a >= 1 and re.search(reply_rx, lr) for s, a, lr, _ in rows)

        if not wait_for(ok, timeout, poll=0.3):
            self.fail(f"after {timeout}s not all {self.total()} recipients {states} with a "
                      f"reply ~ {reply_rx!r}: {rows[:6]}{self.diag()}")

    def at_primary(self):
        """{(token, recipient): transactions that carried it}, and the
        number of transactions; fails on anything nobody sent."""
        seen = collections.Counter()
        n = 0
        for m in self.primary.messages():
            tok = token_of(m.body)
            self.assertIn(tok, self.sent, f"the primary got a message nobody sent: {m!r}")
            self.assertIn(f"Message-ID: <{tok}@client.test>".encode(), m.body)
            n += 1
            for r in m.rcpt_tos:
                seen[(tok, r.lower())] += 1
        return seen, n

    def wait_all_arrived(self, timeout):
        want = self.total()
        if self.primary.wait_rcpts(want, timeout=timeout, poll=0.05) < want:
            seen, _ = self.at_primary()
            self.fail(f"{sum(seen.values())} of {want} recipients at the primary after "
                      f"{timeout}s; queue {self.queue_state()}{self.diag()}")

    def assert_once_each(self, what):
        """Every recipient of every message exactly once at the primary and
        in exactly one node's "delivered" log line; the queue empty.
        Returns (transactions, {node: recipients it delivered})."""
        self.wait_queue_empty(timeout=30)
        time.sleep(2)  # a second delivery by another node would show up now
        seen, transactions = self.at_primary()
        want = {(t, r.lower()) for t, (_, _, rcpts) in self.sent.items() for r in rcpts}
        dups = {k: v for k, v in seen.items() if v > 1}
        lost = sorted(want - set(seen))
        self.assertEqual(dups, {}, f"{what}: recipients delivered more than once "
                                   f"({len(dups)} of {len(want)}){self.diag()}")
        self.assertEqual(lost, [], f"{what}: recipients never delivered{self.diag()}")
        self.assertEqual(set(seen), want, what)
        qid_to_token = {qid: t for t, (_, qid, _) in self.sent.items()}
        by_node = collections.Counter()
        logged = collections.Counter()
        for n in self.nodes:
            for qid, to in DELIVERED_RX.findall(n.all_stderr()):
                if qid in qid_to_token:
                    by_node[n.name] += 1
                    logged[(qid_to_token[qid], to.lower())] += 1
        self.assertEqual({k: v for k, v in logged.items() if v > 1}, {},
                         f"{what}: nodes logged more than one delivery of a recipient")
        self.assertEqual(set(logged), want, f"{what}: deliveries in the nodes' logs")
        takeovers = sum(self.metric(n, "mxd_cluster_duplicates_total") for n in self.nodes)
        self.assertEqual(takeovers, 0, f"{what}: lease takeovers with every node alive")
        return transactions, dict(sorted(by_node.items()))

    def reachable(self):
        """{node: "primary reachable" lines it logged}: the watchers that
        saw the primary return."""
        return {n.name: n.all_stderr().count(f"primary reachable domain={DOMAIN}")
                for n in self.nodes}


class WatcherRelease(ClusterBackupCase):
    def test_primary_returns_released_once(self):
        for i in range(self.NODES):
            self.send_on(i, PER_NODE)
        self.wait_waiting(("held",), r"(?i)refused|connect")
        watching = {n.name: "destination unavailable" in n.all_stderr() for n in self.nodes}
        self.assertEqual(list(watching.values()), [True] * self.NODES,
                         f"every node tried the primary and watches it: {watching}")
        time.sleep(1)
        self.assertEqual(self.primary.count(), 0)
        before = self.reachable()
        self.assertEqual(sum(before.values()), 0, before)

        self.primary.start()
        t0 = time.monotonic()
        self.wait_all_arrived(timeout=2 * WATCH_MAX + 15)
        took = time.monotonic() - t0
        transactions, by_node = self.assert_once_each("watcher release")
        seen_by = self.reachable()
        self.assertGreaterEqual(sum(seen_by.values()), 1, f"no watcher saw the primary: {seen_by}")
        accepted = collections.Counter(f"node{n}" for n, _, _ in self.sent.values())
        print(f"\nwatcher release: {len(self.sent)} messages ({self.total()} recipients) held, "
              f"accepted by {dict(sorted(accepted.items()))}; all at the primary {took:.2f}s "
              f"after it returned, in {transactions} transactions, each recipient once; "
              f"'primary reachable' per node {seen_by}; delivered by {by_node}",
              file=sys.stderr)


class EtrnAnyNode(ClusterBackupCase):
    START_PRIMARY = True
    REJECT = {u: 450 for u in USERS}

    def test_etrn_on_one_node_releases_all(self):
        for i in (1, 2):
            self.send_on(i, PER_NODE)
        self.wait_waiting(("held", "deferred"), r"^450")
        for u in USERS:
            self.primary.unreject(u)
        time.sleep(3)
        self.assertEqual(self.primary.rcpt_count(), 0,
                         "deferred recipients were retried without ETRN although retry_min = 1h "
                         "and the primary never went down")
        self.assertEqual(sum(self.reachable().values()), 0, "a watcher ran: the test proves "
                                                            "nothing about ETRN")
        t0 = time.monotonic()
        _, r = etrn(self.nodes[0].port, DOMAIN)
        self.assertIn(r.code, (250, 251, 252, 253), f"ETRN {DOMAIN} on node0: {r}")
        self.wait_all_arrived(timeout=20)
        took = time.monotonic() - t0
        transactions, by_node = self.assert_once_each("ETRN on node0")
        print(f"\nETRN on node0: {len(self.sent)} messages ({self.total()} recipients) "
              f"accepted by node1 and node2, 450-deferred, all at the primary {took:.2f}s "
              f"after `ETRN {DOMAIN}` ({r.code}), in {transactions} transactions, each "
              f"recipient once; delivered by {by_node}", file=sys.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
