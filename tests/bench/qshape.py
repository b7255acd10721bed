#!/usr/bin/env python3
"""`mxctl queue --summary` on a large queue (issue 23): a benchmark, not a
test. Build with optimisation, then:

    MXCTL=BUILD/src/mxctl python3 tests/bench/qshape.py [-r 1000000] [-k 4]

Makes a queue.db with mxd's own schema (mxctl creates and migrates it),
fills it with R recipients, K per message (R/K messages of 2 KiB: --body), spread
over 2,000 domains (a few big ones, a long tail), arrival times over the
last 3 days and states queued, deferred and held (70/25/5 %), then times
`mxctl -d DB queue --summary` (and --json) a few times, warm (the file in
the page cache, as on a live server). Prints the best and the median.
Keep the database for more runs with --db PATH (it is reused when it
already has R recipients).
"""

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

DOMAINS = 2000


def domain_of(rnd):
    # A few big destinations and a long tail, as on a real MX's queue.
    if rnd.random() < 0.6:
        return f"big{int(rnd.paretovariate(1.2)) % 20}.example"
    return f"d{rnd.randrange(DOMAINS)}.example"


def fill(db, rcpts, per_msg, now, body=2048):
    rnd = random.Random(23)
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous=OFF")
    nmsg = rcpts // per_msg
    body = b"X" * body
    with con:
        for i in range(nmsg):
            received = now - int(rnd.random() ** 2 * 3 * 86400)
            cur = con.execute(
                "INSERT INTO messages (qid, received, client_addr, helo, sender, size, body)"
                " VALUES (?, ?, '192.0.2.1', 'client.example', 'a@b.example', ?, ?)",
                (f"Q{i:010d}", received, len(body), body))
            mid = cur.lastrowid
            rows = []
            for k in range(per_msg):
                dom = domain_of(rnd)
                x = rnd.random()
                state = "queued" if x < 0.7 else "deferred" if x < 0.95 else "held"
                rows.append((mid, f"u{i}.{k}@{dom}", dom, state, received + 60))
            con.executemany(
                "INSERT INTO message_rcpts (message_id, address, domain, state, next_attempt)"
                " VALUES (?, ?, ?, ?, ?)", rows)
    con.close()


def count(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM message_rcpts").fetchone()[0]
    finally:
        con.close()


def timed(cmd, runs):
    times = []
    out = b""
    for _ in range(runs):
        t0 = time.monotonic()
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout
        times.append(time.monotonic() - t0)
    return min(times), statistics.median(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-r", "--rcpts", type=int, default=1_000_000)
    ap.add_argument("-k", "--per-message", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--body", type=int, default=2048, help="octets per message (2048)")
    ap.add_argument("--db", help="keep the database here (reused if it has R recipients)")
    args = ap.parse_args()
    mxctl = os.environ.get("MXCTL")
    if not mxctl:
        sys.exit("set MXCTL to the mxctl binary")
    tmp = None
    if args.db:
        db = args.db
    else:
        tmp = tempfile.TemporaryDirectory(prefix="mxd-qshape-")
        db = os.path.join(tmp.name, "queue.db")
    if not os.path.exists(db) or count(db) != args.rcpts:
        if os.path.exists(db):
            os.unlink(db)
        subprocess.run([mxctl, "-d", db, "recipient", "add", "@bench.example"], check=True,
                       stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        fill(db, args.rcpts, args.per_message, int(time.time()), args.body)
        print(f"filled {args.rcpts} recipients ({args.rcpts // args.per_message} messages) "
              f"in {time.monotonic() - t0:.1f} s, {os.path.getsize(db) >> 20} MiB")
    for label, extra in (("text", []), ("json", ["--json"])):
        best, med, out = timed([mxctl, "-d", db, "queue", "--summary"] + extra, args.runs)
        print(f"queue --summary {label}: best {best:.3f} s, median {med:.3f} s "
              f"({args.runs} runs, {args.rcpts} recipients)")
    sys.stdout.write(out.decode() if not out.startswith(b"{") else "")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
