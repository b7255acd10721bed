#!/usr/bin/env python3
"""The screening's memory and message commits (issue 16 part 3): a
benchmark, not a test. Does writing the passes of the pre-greet test hold
up the store's message commits? Build with optimisation, then:

    MXD=BUILD/src/mxd MXCTL=BUILD/src/mxctl python3 tests/bench/screen.py [-n N] [-c C]

One mxd per run on 127.0.0.1 under a temp dir, greet_wait = 1s, a backup
domain whose primary is down (messages are held, nothing is delivered).
smtp-source sends N 4 KiB messages over 50 sessions from 127.0.0.1
(trusted_networks: its sessions skip the test). Beside it, a flood of C
concurrent new clients on a listener marked proxy, each with an address
of its own in its PROXY header, each waiting out the pre-greet wait, then
QUIT, again and again. Prints messages/s, the mean group commit (BEGIN to
durable COMMIT) and the flood's clients/s for:

1. messages alone;
2. messages + a flood of clients that wait and pass: every pass is
   written (greet_action = reject), one screen job at a time in the
   writer's group commits;
3. messages + the same flood with nothing written: greet_action =
   ignore and each flood client says NOOP after the teaser (it fails,
   is served after the same wait, and is not remembered): the same
   connections, waits and loop work as 2, no screen writes.

2 against 3 is the cost of the writes; 1 against 3 the cost of the
connections themselves (the loop's and the clients' CPU, on the same
cores).
"""

import argparse
import asyncio
import ipaddress
import os
import re
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


def smtp_source(port, count):
    """Messages/s (a new recipient per message)."""
    return count / compare.smtp_source(port, SESSIONS, count, 4096, "user@held.test")


async def _reply(r):
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def _flood(port, conc, stop, talk, counter):
    base = int(ipaddress.ip_address("10.0.0.0"))

    async def one(k):
        i = k
        while not stop.is_set():
            i += conc
            client = str(ipaddress.ip_address(base + i))
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(mxdtest.proxy_header(client))
            if talk:
                await r.readline()  # the teaser
                w.write(b"NOOP\r\n")
            await _reply(r)  # the greeting, after the wait
            if talk:
                await _reply(r)  # the NOOP's answer
            w.write(b"QUIT\r\n")
            await _reply(r)
            w.close()
            counter[0] += 1

    await asyncio.gather(*(one(k) for k in range(conc)))


def metrics(mport):
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
        text = r.read().decode()

    def get(key):
        m = re.search(rf"^{re.escape(key)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return {"commits": get("mxd_store_commit_seconds_count"),
            "commit_s": get("mxd_store_commit_seconds_sum"),
            "recorded": get("mxd_screen_passes_recorded_total"),
            "passes": get('mxd_pregreet_total{result="pass"}')}


def start_mxd(tmp, name, action):
    mport = mxdtest.free_port()
    pport = mxdtest.free_port()
    d = os.path.join(tmp, name)
    os.makedirs(d)
    m = mxdtest.Mxd(d, domains={"held.test": {"mode": "backup", "primary": "127.0.0.1:1",
                                              "recipients": "any"}},
                    server={"max_connections_per_ip": "1000", "max_connections": "5000",
                            "greet_action": action, "greet_wait": "1s",
                            "trusted_networks": "127.0.0.1", "proxy_networks": "127.0.0.1",
                            "metrics_listen": f"127.0.0.1:{mport}"},
                    extra="[queue]\nretry_min = 1h\nretry_max = 2h\n")
    m.server["listen"] = f"127.0.0.1:{m.port}, 127.0.0.1:{pport} proxy"
    m.write_config()
    m.mport, m.pport = mport, pport
    m.start()
    smtp_source(m.port, 500)  # warm-up
    return m


def run(m, n, conc, talk):
    """messages/s, mean commit ms, flood clients/s, passes written."""
    stop = threading.Event()
    counter = [0]
    th = None
    if conc:
        th = threading.Thread(target=lambda: asyncio.run(
            _flood(m.pport, conc, stop, talk, counter)), daemon=True)
        th.start()
        time.sleep(2.5)  # the flood is in its stride
    before, c0, t0 = metrics(m.mport), counter[0], time.monotonic()
    rate = smtp_source(m.port, n)
    after, c1, t1 = metrics(m.mport), counter[0], time.monotonic()
    stop.set()
    if th is not None:
        th.join(timeout=30)
    commits = after["commits"] - before["commits"]
    mean_ms = 1000 * (after["commit_s"] - before["commit_s"]) / commits if commits else 0
    return rate, mean_ms, (c1 - c0) / (t1 - t0), after["recorded"] - before["recorded"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5000, help="messages per run")
    ap.add_argument("-c", type=int, default=300, help="concurrent flood clients")
    ap.add_argument("-r", type=int, default=3, help="repetitions (a fresh mxd each)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mxd-bench-screen-")
    rows = {1: [], 2: [], 3: []}
    for rep in range(args.r):
        for case, action, conc, talk in ((1, "reject", 0, False), (2, "reject", args.c, False),
                                         (3, "ignore", args.c, True)):
            m = start_mxd(tmp, f"r{rep}c{case}", action)
            try:
                rows[case].append(run(m, args.n, conc, talk))
            finally:
                m.stop()
            print(f"rep {rep + 1} case {case}: {rows[case][-1]}", file=sys.stderr, flush=True)
    labels = {1: "messages alone", 2: "+ passing flood (passes written)",
              3: "+ same flood, nothing written"}
    print(f"{args.n} messages (4 KiB, {SESSIONS} sessions), flood of {args.c} clients, "
          f"greet_wait 1s, {args.r} runs; median of runs")
    print(f"{'case':<36} {'msg/s':>8} {'commit ms':>10} {'clients/s':>10} {'passes written':>15}")
    for case in (1, 2, 3):
        rs = sorted(rows[case])
        mid = rs[len(rs) // 2]
        print(f"{labels[case]:<36} {mid[0]:8.0f} {mid[1]:10.2f} {mid[2]:10.0f} {mid[3]:15.0f}")


if __name__ == "__main__":
    main()
