#!/usr/bin/env python3
"""Backup-MX drain benchmark: N held 4 KiB messages reach the primary after
it comes back (no manual flush: the watcher does it).

    MXD=build/src/mxd MXCTL=build/src/mxctl /usr/bin/python3 tests/bench/backup_drain.py [N]

Prints mxd's RSS while holding, the time from the primary's start to the
last message received, and the rate. A measurement, not a test."""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import mxdtest  # noqa: E402
from primary import Primary  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def held_count(db):
    con = mxdtest.db_connect(db)
    try:
        return con.execute("SELECT count(*) FROM message_rcpts WHERE state = 'held'").fetchone()[0]
    finally:
        con.close()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    import tempfile
    tmp = tempfile.mkdtemp(prefix="mxd-drain-")
    primary = Primary(tmp)
    extra = "[queue]\nretry_min = 1s\nretry_max = 5s\n"
    domains = {"example.org": {"mode": "backup", "primary": primary.target,
                               "recipients": "any"}}
    mxd = mxdtest.Mxd(tmp, server={"max_connections_per_ip": "500"}, domains=domains,
                      extra=extra)
    mxd.start()
    try:
        t0 = time.monotonic()
        subprocess.run(["/usr/sbin/smtp-source", "-s", "20", "-m", str(n), "-l", "4096",
                        "-f", "bench@source.test", "-t", "user@example.org",
                        f"127.0.0.1:{mxd.port}"], check=True, stdin=subprocess.DEVNULL)
        accept = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while held_count(mxd.db_path) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        held = held_count(mxd.db_path)
        rss = rss_kib(mxd.pid)
        print(f"accepted {n} in {accept:.1f}s ({n / accept:.0f}/s); held {held}; "
              f"mxd RSS while holding {rss / 1024:.1f} MiB")
        t1 = time.monotonic()
        primary.start()
        deadline = time.monotonic() + 600
        while primary.count() < n and time.monotonic() < deadline:
            time.sleep(0.2)
        took = time.monotonic() - t1
        got = primary.count()
        print(f"drain: {got}/{n} messages at the primary {took:.1f}s after it started "
              f"({got / took:.0f}/s); mxd RSS after {rss_kib(mxd.pid) / 1024:.1f} MiB")
    finally:
        mxd.stop()
        primary.close()


if __name__ == "__main__":
    main()
