#!/usr/bin/env python3
"""Greylisting's cost on the store (issue 16 part 5): a benchmark, not a
test. Build with optimisation, then:

    MXD=BUILD/src/mxd MXCTL=BUILD/src/mxctl python3 tests/bench/greylist.py [-n N]

One mxd on 127.0.0.1 under a temp dir, two backup domains whose primary is
down (messages are held, nothing is delivered), `grey.test` with greylist =
on and `plain.test` without; smtp-source sends 4 KiB messages over 50
sessions, a new recipient per message (-N). Prints messages/s for:

1. plain.test: no greylisting (the base line);
2. grey.test, every triplet known and fresh: the reader answers each RCPT,
   no write;
3. grey.test, every triplet known and due for its refresh: one writer job
   per RCPT, answered after the group commit that holds it;
4. new triplets alone: an asyncio client (50 sessions, 5 triplets per
   connection: MAIL, RCPT -> 451, RSET) counts deferrals/s, one row
   inserted per deferral;
5. 1 and 4 at the same time: message commits sharing the writer (and its
   fsyncs) with a flood of triplet inserts;
6. 1 beside the same client refused at RCPT by a rule that asks no store
   (550 relay access denied): the share of 5's loss that is the clients'
   and the loop's CPU, not the writer;
7. one session, 200 RCPTs each: the RCPT round trip without greylisting,
   answered by the reader, and through the writer (a refresh, a new
   triplet), which waits for a group commit and its fsync.
"""

import argparse
import asyncio
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import compare  # noqa: E402
import mxdtest  # noqa: E402

SESSIONS = 50
SENDER = "bench@source.test"


def smtp_source(port, count, domain):
    """Messages/s (a new recipient per message; the sender is SENDER)."""
    return count / compare.smtp_source(port, SESSIONS, count, 4096, f"user@{domain}")


async def _reply(r):
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def _flood(port, total, domain, code, per_conn=5):
    ids = iter(range(total))
    done = 0

    async def one():
        nonlocal done
        while True:
            batch = [i for _, i in zip(range(per_conn), ids)]
            if not batch:
                return
            r, w = await asyncio.open_connection("127.0.0.1", port)
            await _reply(r)
            w.write(b"EHLO flood.test\r\n")
            await _reply(r)
            for i in batch:
                w.write(f"MAIL FROM:<s{i}@flood.test>\r\n".encode())
                assert await _reply(r) == 250
                w.write(f"RCPT TO:<v{i}@{domain}>\r\n".encode())
                assert await _reply(r) == code
                w.write(b"RSET\r\n")
                await _reply(r)
                done += 1
            w.write(b"QUIT\r\n")
            await _reply(r)
            w.close()

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(SESSIONS)))
    return done / (time.monotonic() - t0)


def flood(port, total, domain="grey.test", code=451):
    return asyncio.run(_flood(port, total, domain, code))


def seed(db, count, fresh, fmt="{i}user@grey.test"):
    """Passed rows for smtp-source's triplets 0user..count+1user@grey.test."""
    now = int(time.time())
    seen = now if fresh else now - 2 * 86400
    con = sqlite3.connect(db, timeout=30)
    with con:
        con.execute("DELETE FROM greylist")
        con.executemany(
            "INSERT INTO greylist VALUES ('net:127.0.0.0/24', ?, ?, ?, ?, ?, ?)",
            [(SENDER, fmt.format(i=i), seen - 600, seen, seen, seen + 35 * 86400)
             for i in range(count + 2)])
    con.close()


def rcpt_latency(port, n, fmt, code, per_conn=5):
    """Median and p99 RCPT round trip (ms) of n recipients, each in its own
    transaction (MAIL, RCPT, RSET), per_conn to a session (a session with
    more deferrals than hard_error_limit is closed)."""
    times = []
    for first in range(0, n, per_conn):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        f = s.makefile("rb")

        def reply():
            while True:
                line = f.readline()
                if line[3:4] != b"-":
                    return int(line[:3])

        reply()
        s.sendall(b"EHLO lat.test\r\n")
        reply()
        for i in range(first, min(n, first + per_conn)):
            s.sendall(f"MAIL FROM:<{SENDER}>\r\n".encode())
            reply()
            t0 = time.perf_counter()
            s.sendall(f"RCPT TO:<{fmt.format(i=i)}>\r\n".encode())
            got = reply()
            times.append((time.perf_counter() - t0) * 1000)
            assert got == code, (got, code)
            s.sendall(b"RSET\r\n")
            reply()
        s.sendall(b"QUIT\r\n")
        reply()
        f.close()
        s.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


def commits(mport):
    """(group commits, seconds in them) so far, from GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
        text = r.read().decode()
    val = {}
    for key in ("mxd_store_commit_seconds_count", "mxd_store_commit_seconds_sum"):
        val[key] = float(re.search(rf"^{key} (\S+)$", text, re.M).group(1))
    return val["mxd_store_commit_seconds_count"], val["mxd_store_commit_seconds_sum"]


def start_mxd(tmp, rep):
    domains = {d: {"mode": "backup", "primary": "127.0.0.1:1", "recipients": "any"}
               for d in ("grey.test", "plain.test")}
    domains["grey.test"]["greylist"] = "on"
    mport = mxdtest.free_port()
    d = os.path.join(tmp, f"rep{rep}")
    os.makedirs(d)
    m = mxdtest.Mxd(d, domains=domains,
        server={"max_connections_per_ip": "1000", "max_connections": "2000",
                "metrics_listen": f"127.0.0.1:{mport}"},
        extra="[queue]\nretry_min = 1h\nretry_max = 2h\n")
    m.mport = mport
    m.start()
    smtp_source(m.port, 500, "plain.test")  # warm-up
    return m


# RCPT round trips at concurrency 1: label, recipients, reply, seeded rows
LATENCY = [
    ("7a. RCPT, greylist off", "l{i}@plain.test", 250, None),
    ("7b. RCPT, known triplet (reader)", "l{i}@grey.test", 250, True),
    ("7c. RCPT, known, refreshed (writer)", "l{i}@grey.test", 250, False),
    ("7d. RCPT, new triplet (writer)", "n{i}@grey.test", 451, None),
]

SCENARIOS = {
    "off": ("1. greylist off", "plain.test", None),
    "fresh": ("2. known triplets (reader, no write)", "grey.test", True),
    "stale": ("3. known, refreshed (a writer job per RCPT)", "grey.test", False),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5000, help="messages per run")
    ap.add_argument("-r", type=int, default=3, help="repetitions (a fresh mxd each)")
    args = ap.parse_args()
    n = args.n
    tmp = tempfile.mkdtemp(prefix="mxd-bench-grey-")
    rates = {k: [] for k in SCENARIOS}
    per_msg = {k: [] for k in SCENARIOS}
    floods, mixed, flood_mixed, mixed_ref, flood_ref = [], [], [], [], []
    lat = {key: [] for key, _, _, _ in LATENCY}
    order = list(SCENARIOS)
    try:
        for rep in range(args.r):
            m = start_mxd(tmp, rep)
            try:
                for key in order[rep % 3:] + order[:rep % 3]:
                    _, domain, fresh = SCENARIOS[key]
                    if fresh is not None:
                        seed(m.db_path, n, fresh)
                    c0 = commits(m.mport)
                    rates[key].append(smtp_source(m.port, n, domain))
                    c1 = commits(m.mport)
                    per_msg[key].append(((c1[0] - c0[0]) / n, (c1[1] - c0[1]) / n * 1e6))
                floods.append(flood(m.port, n))
                res = {}
                t = threading.Thread(target=lambda: res.update(d=flood(m.port, 4 * n)))
                t.start()
                mixed.append(smtp_source(m.port, n, "plain.test"))
                t.join()
                flood_mixed.append(res["d"])
                t = threading.Thread(target=lambda: res.update(
                    d=flood(m.port, 4 * n, "elsewhere.test", 550)))
                t.start()
                mixed_ref.append(smtp_source(m.port, n, "plain.test"))
                t.join()
                flood_ref.append(res["d"])
                for key, fmt, code, fresh in LATENCY:
                    if fresh is not None:
                        seed(m.db_path, 200, fresh, fmt)
                    lat[key].append(rcpt_latency(m.port, 200, fmt, code))
            finally:
                m.stop()
    finally:
        if not os.environ.get("MXD_KEEP_TMP"):
            subprocess.run(["rm", "-rf", tmp], check=False)
    med = statistics.median
    base = med(rates["off"])
    print(f"{SESSIONS} sessions, 4 KiB, {n} messages per run, median of {args.r} "
          f"(each run: msg/s, group commits per message, commit time per message)")
    for key, (label, _, _) in SCENARIOS.items():
        r = med(rates[key])
        cm = med(x[0] for x in per_msg[key])
        us = med(x[1] for x in per_msg[key])
        print(f"{label:46} {r:6.0f} msg/s ({r / base:4.0%})  {cm:.3f} commits/msg  "
              f"{us:5.0f} us/msg  runs: {', '.join(f'{x:.0f}' for x in rates[key])}")
    print(f"{'4. new triplets alone':46} {med(floods):6.0f} deferrals/s")
    print(f"{'5. greylist off, beside a flood of new ones':46} {med(mixed):6.0f} msg/s "
          f"({med(mixed) / base:4.0%}); the flood: {med(flood_mixed):.0f} deferrals/s")
    print(f"{'6. the same beside a flood of 550s (no store)':46} {med(mixed_ref):6.0f} msg/s "
          f"({med(mixed_ref) / base:4.0%}); the flood: {med(flood_ref):.0f} refusals/s")
    for key, _, _, _ in LATENCY:
        print(f"{key:46} median {med(x[0] for x in lat[key]):6.2f} ms, "
              f"p99 {med(x[1] for x in lat[key]):6.2f} ms")


if __name__ == "__main__":
    main()
