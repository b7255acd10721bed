"""Cluster mode (issue 21): several mxd nodes on one PostgreSQL queue, with
real failures. Every test starts a private PostgreSQL 15 (pgcluster.py: a
primary, and for the failover test a synchronous streaming standby), two or
three mxd nodes with store = postgresql on one database (each its own
node_name, spool and metrics port) and a private Dovecot they deliver to.

1. NodeKill: load on every node, SIGKILL one mid-load. Every message any
   node acknowledged (250 after DATA) reaches every one of its recipients'
   mailboxes; the dead node's leases are taken over once they expire; the
   duplicates Dovecot saw are at most the survivors' count
   (mxd_cluster_duplicates_total), which is at most the recipients the dead
   node held leases on when it died. `mxctl cluster` lists the three
   nodes, the killed one dead with no leases.
2. PrimaryFailover: load on two nodes, SIGKILL the PostgreSQL primary (its
   whole process group) mid-load, promote the standby (pg_ctl promote). No
   session is cut: every reply is 250 or 451 4.3.0; both nodes take mail
   again by themselves (multi-host conninfo, target_session_attrs); every
   acknowledged message is delivered.
3. Unreachable: PostgreSQL stopped. New mail gets 451 4.3.0 (also from a node
   started while it is down); when it returns the nodes take mail again by
   themselves; every 250 is delivered and nothing refused is.

Messages carry a unique token (Subject, X-Token, Message-ID) so deliveries
are counted per message and recipient in Dovecot's maildirs (delivered
messages leave the database). Every wait is bounded. The short form (CI)
sends tens of messages; MXD_CLUSTER_LONG=1 sends thousands.
"""

import os
import re
import socket
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dovecot  # noqa: E402
import mxdtest  # noqa: E402
import pgcluster  # noqa: E402

LONG = os.environ.get("MXD_CLUSTER_LONG") == "1"
LEASE = 6  # cluster_lease, seconds (heartbeat every LEASE/3)
SENDER = "load@client.test"
USERS = [f"u{i:02d}@example.test" for i in range(20)]
THREADS = 3  # sessions per node
BODY_LINES = 20  # ~1.5 KiB messages
DELIVER_TIMEOUT = 3 * LEASE + (240 if LONG else 60)


def message(token, rcpts):
    lines = [f"token {token}"] + [f"{token} line {n} " + "x" * 60 for n in range(BODY_LINES)]
    hdr = [f"From: <{SENDER}>", f"To: {', '.join('<' + r + '>' for r in rcpts)}",
           f"Subject: cluster {token}", f"Message-ID: <{token}@client.test>",
           f"X-Token: {token}"]
    return ("\r\n".join(hdr) + "\r\n\r\n" + "".join(x + "\r\n" for x in lines)).encode()


def rcpts_for(i):
    """One recipient, two for every fourth message (leases are per recipient)."""
    first = USERS[i % len(USERS)]
    return [first, USERS[(i + 7) % len(USERS)]] if i % 4 == 0 else [first]


def tempfail(r):
    return r.code == 451 and r.enh == "4.3.0"


class Load:
    """Sessions against every node, each message with a unique token.
    Outcomes per token: "acked" (250 after DATA), "451" (451 4.3.0 at MAIL,
    RCPT, DATA or after the data), "cut" (connection closed, reset or timed
    out), "bad" (any other reply)."""

    def __init__(self, nodes, prefix, total, threads=THREADS, timeout=30):
        """Sends until total messages are acknowledged (at most 4 * total +
        50 attempts: refusals during an outage do not end the load early)."""
        self.nodes = nodes
        self.prefix = prefix
        self.total = total
        self.max_attempts = 4 * total + 50
        self.acked = 0
        self.threads_per_node = threads
        self.timeout = timeout
        self.lock = threading.Lock()
        self.next = 0
        self.stop = threading.Event()
        self.dead = set()  # node indexes killed on purpose
        self.outcome = {}  # token -> (node index, outcome, detail)
        self.rcpts = {}  # token -> recipients
        self.threads = []

    def take(self):
        with self.lock:
            if self.acked >= self.total or self.next >= self.max_attempts or \
                    self.stop.is_set():
                return None
            i = self.next
            self.next += 1
        return i

    def record(self, token, node, what, detail=""):
        with self.lock:
            self.outcome[token] = (node, what, detail)
            self.acked += what == "acked"

    def count(self, what, node=None):
        with self.lock:
            return sum(1 for n, w, _ in self.outcome.values()
                       if w == what and (node is None or n == node))

    def tokens(self, what, node=None):
        with self.lock:
            return [t for t, (n, w, _) in self.outcome.items()
                    if w == what and (node is None or n == node)]

    def problems(self, exclude_dead=True):
        """(token, node, outcome, detail) of every "bad" outcome, and every
        "cut" on a node that was not killed."""
        with self.lock:
            return [(t, n, w, d) for t, (n, w, d) in sorted(self.outcome.items())
                    if w == "bad" or (w == "cut" and not (exclude_dead and n in self.dead))]

    def one(self, c, token, rcpts):
        content = message(token, rcpts)
        steps = [f"MAIL FROM:<{SENDER}>"] + [f"RCPT TO:<{r}>" for r in rcpts]
        for line in steps:
            r = c.cmd(line)
            if r.code != 250:
                return r, line.split(":")[0]
        r = c.cmd("DATA")
        if r.code != 354:
            return r, "DATA"
        c.send(mxdtest.dot_stuff(content) + b".\r\n")
        return c.reply(), "end"

    def worker(self, node):
        mxd = self.nodes[node]
        c = None
        while not self.stop.is_set() and node not in self.dead:
            if c is None:
                try:
                    c = mxd.client(timeout=self.timeout)
                    c.ehlo()
                except (OSError, mxdtest.ConnectionClosed, AssertionError):
                    c = None
                    if node in self.dead or not mxd.running():
                        return
                    time.sleep(0.2)
                    continue
            i = self.take()
            if i is None:
                break
            token = f"{self.prefix}-{i:05d}-{os.urandom(3).hex()}"
            rcpts = rcpts_for(i)
            with self.lock:
                self.rcpts[token] = rcpts
            try:
                r, stage = self.one(c, token, rcpts)
            except (OSError, mxdtest.ConnectionClosed, socket.timeout) as e:
                self.record(token, node, "cut", repr(e)[:200])
                c.close()
                c = None
                continue
            if stage == "end" and r.code == 250:
                self.record(token, node, "acked", r.qid or "")
            elif tempfail(r):
                self.record(token, node, "451", f"{stage}: {r}")
                time.sleep(0.1)  # as a sender would, not a tight loop
            else:
                self.record(token, node, "bad", f"{stage}: {r}")
            if stage != "end" or r.code != 250:
                try:
                    if c.cmd("RSET").code != 250:
                        raise OSError("RSET refused")
                except (OSError, mxdtest.ConnectionClosed, socket.timeout):
                    c.close()
                    c = None
        if c is not None:
            try:
                c.cmd("QUIT", timeout=5)
            except (OSError, mxdtest.ConnectionClosed, socket.timeout):
                pass
            c.close()

    def start(self):
        for node in range(len(self.nodes)):
            for _ in range(self.threads_per_node):
                t = threading.Thread(target=self.worker, args=(node,), daemon=True)
                t.start()
                self.threads.append(t)
        return self

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        return [t for t in self.threads if t.is_alive()]

    def wait_until(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.01)
        return pred()


class ClusterCase(unittest.TestCase):
    STANDBY = False
    NODES = 3

    def setUp(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, type(self).__name__)
        # cleanups run last-in first-out: PostgreSQL stops after the nodes
        self.pg = pgcluster.PgCluster(standby=self.STANDBY)
        self.addCleanup(self.pg.close)
        self.pg.start()
        self.dbname = self.pg.create_database("mxd")
        self.dov = dovecot.Dovecot(tmpdir=self.tmpdir)
        self.addCleanup(self.dov.close)
        self.dov.start()
        self.nodes = []
        for i in range(self.NODES):
            self.nodes.append(self.make_node(i))
        for n in self.nodes:
            self.addCleanup(self.stop_node, n)
            n.start(timeout=60)
        self.wait_registered()

    def wait_registered(self, timeout=LEASE + 10):
        """Every node made or found the schema and has its row in
        cluster_nodes (the queue really is in PostgreSQL)."""
        want = [(n.server["node_name"],) for n in self.nodes]
        deadline = time.monotonic() + timeout
        rows = None
        while time.monotonic() < deadline:
            try:
                rows = self.sql("SELECT name FROM cluster_nodes ORDER BY name")
                if rows == want:
                    return
            except Exception as e:  # noqa: BLE001 - no schema yet
                rows = f"{type(e).__name__}: {str(e).strip()}"
            time.sleep(0.2)
        self.fail(f"cluster_nodes in PostgreSQL: {rows}, want {want} ({timeout}s after the "
                  f"nodes answered){self.diag()}")

    def node_server(self, i, **more):
        """[server] keys of cluster node i on the test's database, its own
        directory (spool, control socket) under tmpdir; more: added."""
        d = os.path.join(self.tmpdir, f"node{i}")
        os.mkdir(d)
        return {"database": os.path.join(d, "queue.db"),  # ignored: spool in d/spool
                "store": "postgresql",
                "postgresql": self.pg.conninfo(self.dbname),
                "node_name": f"node{i}",
                "cluster_lease": f"{LEASE}s",
                "metrics_listen": f"127.0.0.1:{mxdtest.free_port()}",
                "control_socket": os.path.join(d, "control.sock"),
                "max_connections_per_ip": "200", **more}

    def make_node(self, i):
        return mxdtest.Mxd(self.tmpdir, name=f"node{i}", server=self.node_server(i),
                           domains={"example.test": dovecot.mxd_domain(self.dov.lmtp_tcp)},
                           extra=dovecot.QUEUE_FAST)

    @staticmethod
    def stop_node(n):
        if n.running():
            n.stop(check=True)
        else:
            n.check_sanitizers()

    # -- observations

    def sql(self, query, args=None):
        return self.pg.query(query, args, db=self.dbname, timeout=10)

    def metric(self, node, name):
        """The value of metric name (summed over its label sets) on node;
        AssertionError when the node does not export it."""
        url = f"http://{node.server['metrics_listen']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode("utf-8", "replace")
        vals = [float(m.group(1)) for m in
                re.finditer(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)]
        if not vals:
            raise AssertionError(f"{node.name} does not export {name}")
        return sum(vals)

    def delivered(self):
        """{(token, user): number of files} over every maildir."""
        out = {}
        for user, toks in dovecot.tokens_by_user(self.dov).items():
            for tok, n in toks.items():
                out[(tok, user)] = n
        return out

    def missing(self, load, tokens):
        got = self.delivered()
        return [(t, u) for t in tokens for u in load.rcpts[t] if got.get((t, u), 0) == 0]

    def wait_delivered(self, load, tokens, timeout=DELIVER_TIMEOUT):
        """Waits until every recipient of every token has its message;
        fails with what is missing. Returns the delivery counts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.missing(load, tokens):
                return self.delivered()
            time.sleep(0.5)
        miss = self.missing(load, tokens)
        if miss:
            self.fail(f"{len(miss)} of {sum(len(load.rcpts[t]) for t in tokens)} acknowledged "
                      f"deliveries missing after {timeout}s (lost?), e.g. {miss[:5]}; "
                      f"queue {self.queue_state()}{self.diag()}")
        return self.delivered()

    def queue_state(self):
        try:
            return self.sql("SELECT state, lease_owner, count(*) FROM message_rcpts "
                            "GROUP BY 1, 2 ORDER BY 1, 2")
        except Exception as e:  # noqa: BLE001 - for a failure message
            return f"(no queue: {e})"

    def wait_queue_empty(self, timeout=60):
        deadline = time.monotonic() + timeout
        n = None
        while time.monotonic() < deadline:
            n = self.sql("SELECT count(*) FROM messages")[0][0]
            if n == 0:
                return
            time.sleep(0.5)
        try:
            rows = self.sql("SELECT m.qid, r.address, r.state, r.lease_owner, r.attempts, "
                            "r.last_reply FROM messages m LEFT JOIN message_rcpts r ON "
                            "r.message_id = m.id ORDER BY m.id, r.id LIMIT 20")
        except Exception as e:  # noqa: BLE001 - for the failure message
            rows = repr(e)
        self.fail(f"{n} messages still in the queue after {timeout}s: {self.queue_state()}; "
                  f"{rows}{self.diag()}")

    def diag(self, limit=4000):
        out = []
        for n in self.nodes:
            out.append(f"\n--- {n.name} stderr (tail)\n{n.all_stderr()[-limit:]}")
        out.append(f"\n--- dovecot log (tail)\n{self.dov.log_text()[-limit:]}")
        out.append("\n" + self.pg.logs()[-2 * limit:])
        return "".join(out)

    def probe(self, node, token):
        """One message on a fresh session: ("acked"|"451"|"bad"|"cut", detail)."""
        load = Load([node], token, 1)
        try:
            c = node.client(timeout=30)
            c.ehlo()
        except (OSError, mxdtest.ConnectionClosed, AssertionError) as e:
            return "cut", repr(e)[:200]
        try:
            r, stage = load.one(c, token, [USERS[0]])
        except (OSError, mxdtest.ConnectionClosed, socket.timeout) as e:
            return "cut", repr(e)[:200]
        finally:
            c.close()
        if stage == "end" and r.code == 250:
            return "acked", r.qid
        return ("451" if tempfail(r) else "bad"), f"{stage}: {r}"

    def wait_accepting(self, node, prefix, timeout, load=None):
        """Sends probes to node until one gets 250 (within timeout); every
        probe is recorded in load (as outcome and recipients). Returns the
        acknowledged probe's token."""
        deadline = time.monotonic() + timeout
        i = 0
        last = None
        while time.monotonic() < deadline:
            i += 1
            token = f"{prefix}-probe{i:03d}-{os.urandom(3).hex()}"
            what, detail = self.probe(node, token)
            if load is not None:
                with load.lock:
                    load.rcpts[token] = [USERS[0]]
                load.record(token, self.nodes.index(node), what, detail)
            if what == "acked":
                return token
            if what in ("bad",):
                self.fail(f"{node.name}: probe got {detail} (only 250 or 451 4.3.0 allowed)")
            last = (what, detail)
            self.assertTrue(node.running(), f"{node.name} died{self.diag()}")
            time.sleep(0.5)
        self.fail(f"{node.name} did not take mail again within {timeout}s (last {last})"
                  f"{self.diag()}")


class NodeKill(ClusterCase):
    NODES = 3
    TOTAL = 3000 if LONG else 90
    KILL_AFTER = 400 if LONG else 10  # acknowledgements by the victim

    def test_sigkill_node_mid_load(self):
        victim = 1
        load = Load(self.nodes, "kill", self.TOTAL).start()
        got = load.wait_until(lambda: load.count("acked", victim) >= self.KILL_AFTER or
                              load.acked >= self.TOTAL, 120)
        acked_by_victim = load.count("acked", victim)
        load.dead.add(victim)
        self.nodes[victim].kill()
        killed = time.monotonic()
        # what the dead node held: its leases stay until they expire
        leased = self.sql("SELECT count(*) FROM message_rcpts WHERE lease_owner = %s "
                          "AND state <> 'delivered'", ("node1",))[0][0]
        hung = load.join(180)
        self.assertEqual(hung, [], "sessions hung")
        self.assertTrue(got, f"victim acknowledged only {acked_by_victim} in 120s; "
                             f"outcomes: acked {load.count('acked')}, 451 {load.count('451')}, "
                             f"bad {load.count('bad')}{self.diag()}")
        self.assertEqual(load.problems(), [], "survivors refused or cut sessions")
        self.assertEqual(load.count("451"), 0, "451 from a healthy cluster")
        acked = load.tokens("acked")
        counts = self.wait_delivered(load, acked)
        self.wait_queue_empty()
        dups = sum(counts.get((t, u), 0) - 1 for t in acked for u in load.rcpts[t]
                   if counts.get((t, u), 0) > 1)
        takeovers = sum(self.metric(n, "mxd_cluster_duplicates_total")
                        for i, n in enumerate(self.nodes) if i != victim)
        print(f"\nnode kill: {len(acked)} acknowledged ({acked_by_victim}+ by the victim before "
              f"SIGKILL, {len(load.tokens('acked', victim))} in all), all delivered; victim held "
              f"{leased} leases; duplicates in Dovecot {dups}, counted by the survivors "
              f"{takeovers:.0f}", file=sys.stderr)
        self.assertLessEqual(dups, takeovers, "duplicates Dovecot saw that no node counted")
        self.assertLessEqual(takeovers, leased, "more takeover deliveries than leases held")
        # the cluster view: every node, the dead one holding nothing any more
        for n in (self.nodes[0], self.nodes[2]):
            self.assertTrue(n.running(), f"{n.name} died{self.diag()}")
        # `mxctl cluster --json`: [{"name", "started", "heartbeat",
        # "heartbeat_age", "alive", "leases"}]; dead once the heartbeat is
        # more than twice cluster_lease old
        deadline = killed + 2 * LEASE + 15
        while True:
            doc = dovecot.mxctl_json(self.nodes[0], "cluster")
            by_name = {r.get("name"): r for r in doc if isinstance(r, dict)}
            if by_name.get("node1", {}).get("alive") is False or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(sorted(by_name), ["node0", "node1", "node2"], f"mxctl cluster: {doc}")
        self.assertIs(by_name["node1"].get("alive"), False, f"dead node: {doc}")
        self.assertEqual(by_name["node1"].get("leases"), 0, f"dead node's leases: {doc}")
        self.assertGreater(by_name["node1"].get("heartbeat_age", -1), 2 * LEASE,
                           f"dead node's heartbeat age: {doc}")
        for live in ("node0", "node2"):
            self.assertIs(by_name[live].get("alive"), True, f"{live}: {doc}")
            self.assertLess(by_name[live].get("heartbeat_age", 1e9), LEASE,
                            f"{live}'s heartbeat age: {doc}")
        text = self.nodes[2].mxctl("cluster")
        self.assertEqual(text.returncode, 0, text.stderr)
        lines = {ln.split()[0]: ln.split() for ln in text.stdout.decode().splitlines()
                 if ln.strip() and ln.split()[0].startswith("node")}
        self.assertEqual(sorted(lines), ["node0", "node1", "node2"], text.stdout)
        self.assertIn("dead", lines["node1"], text.stdout)
        self.assertIn("alive", lines["node0"], text.stdout)
        rows = self.sql("SELECT name FROM cluster_nodes ORDER BY name")
        self.assertEqual(rows, [("node0",), ("node1",), ("node2",)])


class PrimaryFailover(ClusterCase):
    STANDBY = True
    NODES = 2
    TOTAL = 3000 if LONG else 90
    KILL_AFTER = 1000 if LONG else 30  # acknowledgements before the primary dies

    def test_sigkill_primary_promote_standby(self):
        load = Load(self.nodes, "failover", self.TOTAL).start()
        got = load.wait_until(lambda: load.count("acked") >= self.KILL_AFTER or
                              load.acked >= self.TOTAL, 120)
        before = load.count("acked")
        self.pg.kill("primary")
        time.sleep(1)  # the time a failover manager takes to decide
        self.pg.promote("standby")
        promoted = time.monotonic()
        hung = load.join(240)
        self.assertEqual(hung, [], "sessions hung across the failover")
        self.assertTrue(got, f"only {before} acknowledged in 120s{self.diag()}")
        # both nodes take mail again by themselves
        for n in self.nodes:
            self.wait_accepting(n, f"after-{n.name}", 60, load)
        back = time.monotonic() - promoted
        self.assertEqual(load.problems(exclude_dead=False), [],
                         "sessions cut or answered other than 250 / 451 4.3.0")
        acked = load.tokens("acked")
        counts = self.wait_delivered(load, acked)
        self.wait_queue_empty()
        dups = sum(counts.get((t, u), 0) - 1 for t in acked for u in load.rcpts[t]
                   if counts.get((t, u), 0) > 1)
        print(f"\nprimary failover: {before} acknowledged before SIGKILL of the primary, "
              f"{len(acked)} in all, all delivered; {load.count('451')} got 451 4.3.0; "
              f"both nodes took mail {back:.1f}s after the promotion; {dups} duplicates",
              file=sys.stderr)
        for n in self.nodes:
            self.assertTrue(n.running(), f"{n.name} died{self.diag()}")


class Unreachable(ClusterCase):
    NODES = 2

    def test_postgresql_down_then_back(self):
        load = Load(self.nodes, "down", 0)
        tokens_ok = []
        for i in range(6):
            node = self.nodes[i % 2]
            token = f"down-before{i}-{os.urandom(3).hex()}"
            what, detail = self.probe(node, token)
            load.rcpts[token] = [USERS[0]]
            load.record(token, i % 2, what, detail)
            self.assertEqual(what, "acked", f"{node.name}: {detail}")
            tokens_ok.append(token)
        self.pg.stop("primary")
        refused = []
        for i in range(6):
            node = self.nodes[i % 2]
            token = f"down-while{i}-{os.urandom(3).hex()}"
            t0 = time.monotonic()
            what, detail = self.probe(node, token)
            load.rcpts[token] = [USERS[0]]
            self.assertEqual(what, "451", f"{node.name} with PostgreSQL down: {detail}")
            self.assertLess(time.monotonic() - t0, 30, "the 451 took too long")
            refused.append(token)
        for n in self.nodes:
            self.assertTrue(n.running(), f"{n.name} died with PostgreSQL down{self.diag()}")
        # a node that starts while PostgreSQL is down comes up and says 451
        self.nodes[1].stop(check=True)
        self.nodes[1].start(timeout=60)
        token = f"down-restarted-{os.urandom(3).hex()}"
        what, detail = self.probe(self.nodes[1], token)
        load.rcpts[token] = [USERS[0]]
        self.assertEqual(what, "451", f"node started with PostgreSQL down: {detail}")
        refused.append(token)
        # PostgreSQL returns: both nodes recover by themselves
        self.pg.primary.start()
        back = time.monotonic()
        for n in self.nodes:
            tokens_ok.append(self.wait_accepting(n, f"down-back-{n.name}", 60, load))
        took = time.monotonic() - back
        refused += load.tokens("451")
        self.assertEqual(load.problems(), [], "other replies than 250 / 451 4.3.0")
        self.wait_delivered(load, tokens_ok)
        self.wait_queue_empty()
        time.sleep(2)  # anything refused that was queued anyway would arrive now
        got = self.delivered()
        wrongly = [t for t in refused if got.get((t, USERS[0]), 0)]
        self.assertEqual(wrongly, [], "refused with 451 but delivered (committed after all)")
        print(f"\npostgresql down: {len(refused)} refused with 451 4.3.0, none delivered; "
              f"{len(tokens_ok)} acknowledged, all delivered; mail taken {took:.1f}s after "
              f"PostgreSQL came back", file=sys.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
