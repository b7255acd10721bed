#!/usr/bin/env python3
"""Held-accept on SQLite and on PostgreSQL, side by side (issue 21).

    env MXD=build-bench/src/mxd SMTP_LOAD=build-bench/tests/smtp_load \\
        /usr/bin/python3 tests/bench/pg_accept.py [--quick] [-n N]

Run as root (PostgreSQL itself runs as the postgres user, privately, on
127.0.0.1: tests/integration/pgcluster.py). In one run, at 50 concurrent
sessions with 4 KiB messages for a backup domain whose primary is down (so
nothing is delivered: accept and commit only, smtp_load as the client):

  sqlite       mxd on its SQLite store (the default)
  pg-local     mxd on a PostgreSQL 15 primary on this machine
  pg-sync      mxd on a primary with a synchronous streaming standby
               (synchronous_commit = on: a commit is on two servers)

prints messages/s for each and the ratio to SQLite (issue 21's goal:
pg-sync at least half of sqlite). Then end to end: two mxd nodes on the
pg-sync database deliver into one private Dovecot over LMTP; 25 sessions
each; messages/s from the first connection until the last maildir file.

A benchmark, not a test: it fails (exit status 1) only when something does
not work, e.g. an mxd without the PostgreSQL store refuses the config.
Each held-accept point also prints the CPU time a message cost mxd and
the PostgreSQL servers (primary, standby and their backends), which the
other load on a shared machine disturbs much less than the rate.
--quick: few messages, to check that every part works. --points: only
some of sqlite, pg-local, pg-sync, e2e.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import dovecot  # noqa: E402
import mxdtest  # noqa: E402
import pgcluster  # noqa: E402

HELD = "held.test"
DOMAIN = "bench.test"
SIZE = 4096
SESSIONS = 50
LOAD = os.environ.get("SMTP_LOAD") or os.path.join(ROOT, "build", "tests", "smtp_load")


def smtp_load(port, sessions, count, rcpt, spread=False, timeout=1800):
    """Runs smtp_load; returns (messages, seconds, rate, p50 ms, p99 ms)."""
    if not os.access(LOAD, os.X_OK):
        raise RuntimeError(f"{LOAD}: no smtp_load (set SMTP_LOAD, build tests/tools)")
    args = [LOAD, "-p", str(port), "-c", str(sessions), "-n", str(count), "-s", str(SIZE),
            "-t", rcpt] + (["-N"] if spread else [])
    p = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        raise RuntimeError(f"smtp_load exit {p.returncode}: {out.strip()} "
                           f"{p.stderr.decode('utf-8', 'replace').strip()[:500]}")
    m = re.search(r"messages (\d+) seconds (\S+) rate (\S+) p50_ms (\S+) p99_ms (\S+)", out)
    if not m:
        raise RuntimeError(f"smtp_load printed {out!r}")
    return int(m.group(1)), float(m.group(2)), float(m.group(3)), float(m.group(4)), \
        float(m.group(5))


def cpu_seconds(pids):
    """CPU seconds (user + system) of pids and of the children they reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone: counted in its parent's reaped children
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


def cpu_by_title(pids):
    """{process title: CPU seconds} of pids (the title's words after 'postgres:', with
    the database and client address dropped: backend kinds are summed)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode("utf-8", "replace").split()
        except OSError:
            continue
        key = " ".join(w for w in title[:4] if not re.match(r"[\d.(]", w))
        out[key] = out.get(key, 0) + sum(int(x) for x in fields[11:15]) / tick
    return out


def pg_pids(pg):
    if pg is None:
        return []
    nodes = [pg.primary] + ([pg.standby] if pg.standby is not None else [])
    return [p for node in nodes if node.pid for p in [node.pid] + node.children()]


def node_server(tmpdir, name, pg=None, dbname=None):
    d = os.path.join(tmpdir, name)
    os.makedirs(d, exist_ok=True)
    server = {"database": os.path.join(d, "queue.db"),
              "max_connections": "2000", "max_connections_per_ip": "2000"}
    if pg is not None:
        server.update({"store": "postgresql", "postgresql": pg.conninfo(dbname),
                       "node_name": name, "cluster_lease": "60s"})
    return server


def held_accept(tmpdir, name, n, pg=None):
    """msg/s, p50, p99 of n held 4 KiB messages at c=50 into one mxd."""
    dbname = pg.create_database(f"bench_{name.replace('-', '_')}") if pg else None
    mxd = mxdtest.Mxd(tmpdir, name=name, server=node_server(tmpdir, name, pg, dbname),
                      domains={HELD: {"mode": "backup", "primary": "127.0.0.1:1",
                                      "recipients": "any"}},
                      extra="[queue]\nretry_min = 1h\nretry_max = 2h\n")
    mxd.start(timeout=60)
    try:
        smtp_load(mxd.port, SESSIONS, min(200, n), f"warm@{HELD}")  # warm-up
        time.sleep(1)  # the warm-up's deferrals recorded
        if pg is not None and os.environ.get("PG_STATEMENTS"):
            pg.primary.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", db=dbname)
            pg.primary.query("SELECT pg_stat_statements_reset()", db=dbname)
        pids = pg_pids(pg)
        cpu0 = cpu_seconds([mxd.pid]), cpu_seconds(pids)
        by0 = cpu_by_title(pids)
        _, secs, rate, p50, p99 = smtp_load(mxd.port, SESSIONS, n, f"user@{HELD}")
        time.sleep(1)  # and the run's
        cpu = cpu_seconds([mxd.pid]) - cpu0[0], cpu_seconds(pids) - cpu0[1]
        if pg is not None and os.environ.get("PG_STATEMENTS"):
            rows = pg.primary.query(
                "SELECT round(total_exec_time::numeric, 1), calls, rows, "
                "left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_statements "
                "ORDER BY total_exec_time DESC LIMIT 12", db=dbname)
            for r in rows:
                print(f"    {r[0]:>9} ms {r[1]:>7} calls {r[2]:>7} rows  {r[3]}", flush=True)
            for q in os.environ.get("PG_EXPLAIN", "").split(";"):
                if q.strip():
                    q = q.replace("NOW", str(int(time.time())))
                    for r in pg.primary.query("EXPLAIN (ANALYZE, BUFFERS) " + q, db=dbname):
                        print("      " + r[0], flush=True)
        if pg is not None and os.environ.get("PG_CPU_DETAIL"):
            print("    " + ", ".join(f"{k}: {1000 * (v - by0.get(k, 0)) / n:.3f}"
                                     for k, v in sorted(cpu_by_title(pids).items())), flush=True)
    finally:
        mxd.stop(check=False)
    return rate, p50, p99, secs, (1000 * cpu[0] / n, 1000 * cpu[1] / n)


def two_nodes_e2e(tmpdir, n, pg, dov):
    """Two nodes on one pg-sync database delivering into Dovecot: msg/s from
    the start of the load until the last maildir file."""
    dbname = pg.create_database("bench_e2e")
    nodes = []
    for i in range(2):
        name = f"e2e{i}"
        nodes.append(mxdtest.Mxd(
            tmpdir, name=name, server=node_server(tmpdir, name, pg, dbname),
            domains={DOMAIN: {"mode": "local", "lmtp": dov.lmtp_unix,
                              "recipients": "any", "lmtp_concurrency": "20"}},
            extra=dovecot.QUEUE_FAST))
    try:
        for node in nodes:
            node.start(timeout=60)
        base = dov.count()
        errors = []
        t0 = time.monotonic()

        def run(node, count):
            try:
                smtp_load(node.port, SESSIONS // 2, count, f"user@{DOMAIN}", spread=True)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{node.name}: {e}")

        threads = [threading.Thread(target=run, args=(node, n // 2)) for node in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=1800)
        if errors:
            raise RuntimeError("; ".join(errors))
        accepted = time.monotonic() - t0
        want = base + 2 * (n // 2)
        got = dov.wait_count(want, timeout=600, poll=0.05)
        if got < want:
            raise RuntimeError(f"only {got - base} of {2 * (n // 2)} delivered in 600 s")
        secs = time.monotonic() - t0
        return 2 * (n // 2) / secs, 2 * (n // 2) / accepted, secs
    finally:
        for node in nodes:
            node.stop(check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few messages: does every part work")
    ap.add_argument("-n", type=int, default=None, help="messages per held-accept point")
    ap.add_argument("--points", default="sqlite,pg-local,pg-sync,e2e",
                    help="comma-separated subset of sqlite,pg-local,pg-sync,e2e to run")
    args = ap.parse_args()
    points = set(args.points.split(","))
    n = args.n or (400 if args.quick else 20000)
    n_e2e = 200 if args.quick else 10000
    tmpdir = tempfile.mkdtemp(prefix="mxdbench-pg-")
    os.chmod(tmpdir, 0o755)
    results = {}
    failed = []
    print(f"held-accept, c={SESSIONS}, {SIZE} octets, {n} messages per point", flush=True)
    plan = [(name, standby) for name, standby in
            [("sqlite", None), ("pg-local", False), ("pg-sync", True)] if name in points]
    for name, standby in plan:
        pg = None
        try:
            if standby is not None:
                conf = (["shared_preload_libraries = 'pg_stat_statements'",
                         "pg_stat_statements.track_planning = on"]
                        if os.environ.get("PG_STATEMENTS") else None)
                pg = pgcluster.PgCluster(standby=standby, conf=conf).start()
            rate, p50, p99, secs, cpu = held_accept(tmpdir, name, n, pg)
            results[name] = rate
            print(f"  {name:9} {rate:9.0f} msg/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
                  f"({secs:.1f} s)  CPU ms/msg: mxd {cpu[0]:.3f} postgres {cpu[1]:.3f}",
                  flush=True)
        except Exception as e:  # noqa: BLE001 - the next case still runs
            failed.append(name)
            print(f"  {name:9} FAILED: {str(e)[:2000]}", flush=True)
        finally:
            if pg is not None:
                pg.close()
    base = results.get("sqlite")
    if base:
        for name in ("pg-local", "pg-sync"):
            if name in results:
                print(f"  {name} / sqlite = {results[name] / base:.2f}"
                      + (" (goal: >= 0.50)" if name == "pg-sync" else ""))
    if "e2e" not in points:
        if not os.environ.get("MXD_KEEP_TMP"):
            subprocess.run(["rm", "-rf", tmpdir], check=False)
        return 1 if failed else 0
    print(f"end to end, two nodes on pg-sync into Dovecot, {n_e2e} messages, "
          f"c={SESSIONS // 2} per node", flush=True)
    pg = dov = None
    try:
        pg = pgcluster.PgCluster(standby=True).start()
        dov = dovecot.Dovecot(mailbox_spread=100)
        dov.start()
        rate, acc, secs = two_nodes_e2e(tmpdir, n_e2e, pg, dov)
        print(f"  e2e-2node {rate:9.0f} msg/s delivered  (accepted {acc:.0f} msg/s; "
              f"{secs:.1f} s)")
    except Exception as e:  # noqa: BLE001
        failed.append("e2e-2node")
        print(f"  e2e-2node FAILED: {str(e)[:2000]}")
    finally:
        if dov is not None:
            dov.close()
        if pg is not None:
            pg.close()
    if not os.environ.get("MXD_KEEP_TMP"):
        subprocess.run(["rm", "-rf", tmpdir], check=False)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
