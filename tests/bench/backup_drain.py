#!/usr/bin/env python3
"""Backup-MX drain benchmark: N held 4 KiB messages reach the primary after
it comes back (no manual flush: the watcher does it).

    MXD=build/src/mxd MXCTL=build/src/mxctl /usr/bin/python3 tests/bench/backup_drain.py [N]
    ... backup_drain.py --postfix [--full] [--release-rate R] [--concurrency C] [N]

Prints mxd's RSS while holding, the time from the primary's start to the
last message received, and the rate. A measurement, not a test.

--postfix: the primary is a private Postfix (tests/bench/postfix.py) that
trusts mxd's XFORWARD and holds what it takes in its queue; its log then
gives each message's mxd queue id (orig_queue_id=), so the bench counts
lost and duplicated messages, and its connect/disconnect lines give the
peak number of connections mxd had open to it (the watcher's probes
included). --full: 20,000 messages (default 2,000; N overrides both).
--release-rate R, --concurrency C: the backup domain's release_rate and
primary_concurrency."""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
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


class PostfixPrimary:
    """A private Postfix primary, read through its log."""

    def __init__(self, tmp):
        from postfix import Postfix
        os.chmod(tmp, 0o755)  # Postfix's own users walk into it
        self.port = mxdtest.free_port()
        self.pf = Postfix(tmp, self.port, "example.org", os.path.join(tmp, "nowhere.sock"),
                          hold=True, extra="smtpd_authorized_xforward_hosts = 127.0.0.0/8")
        self.target = f"127.0.0.1:{self.port}"
        self.logpath = os.path.join(self.pf.log, "postfix.log")

    def start(self):
        self.pf.start()

    def close(self):
        self.pf.stop()

    def _log(self):
        try:
            with open(self.logpath, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def qids(self):
        """mxd queue ids of the messages Postfix took, in order (XFORWARD IDENT)."""
        return [m.group(1) for line in self._log()
                if (m := re.search(r"orig_queue_id=([^,\s]+)", line))]

    def count(self):
        return len(self.qids())

    def peak_connections(self):
        open_, peak = 0, 0
        for line in self._log():
            if "postfix/smtpd[" not in line:
                continue
            if ": connect from " in line:
                open_ += 1
                peak = max(peak, open_)
            elif ": disconnect from " in line:
                open_ -= 1
        return peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int)
    ap.add_argument("--postfix", action="store_true")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--release-rate", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=0)
    args = ap.parse_args()
    n = args.n or (20000 if args.full else 2000 if args.postfix else 10000)
    tmp = tempfile.mkdtemp(prefix="mxd-drain-")
    primary = PostfixPrimary(tmp) if args.postfix else Primary(tmp)
    extra = "[queue]\nretry_min = 1s\nretry_max = 5s\n"
    dom = {"mode": "backup", "primary": primary.target, "recipients": "any"}
    if args.release_rate:
        dom["release_rate"] = str(args.release_rate)
    if args.concurrency:
        dom["primary_concurrency"] = str(args.concurrency)
    mxd = mxdtest.Mxd(tmp, server={"max_connections_per_ip": "500"},
                      domains={"example.org": dom}, extra=extra)
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
        deadline = time.monotonic() + 1800
        while primary.count() < n and time.monotonic() < deadline:
            time.sleep(0.2)
        took = time.monotonic() - t1
        got = primary.count()
        print(f"drain: {got}/{n} messages at the primary {took:.1f}s after it started "
              f"({got / took:.0f}/s); mxd RSS after {rss_kib(mxd.pid) / 1024:.1f} MiB")
        if args.postfix:
            time.sleep(3)  # a duplicate would arrive now
            qids = primary.qids()
            print(f"postfix: {len(qids)} messages, {len(set(qids))} distinct mxd queue ids, "
                  f"lost {n - len(set(qids))}, duplicated {len(qids) - len(set(qids))}; "
                  f"peak concurrent connections {primary.peak_connections()}; "
                  f"mxd held/queued left {held_count(mxd.db_path)}")
    finally:
        mxd.stop()
        primary.close()


if __name__ == "__main__":
    main()
