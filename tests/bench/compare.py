#!/usr/bin/env python3
"""mxd against Postfix, side by side on this machine (a benchmark, not a
test: it never fails on a number, only when something does not work).

    bash tests/bench/run.sh [--quick | --full] [--no-docs]

run.sh builds mxd with optimisation (build-bench) and runs this script with
Debian's python3 as root. Everything runs privately on 127.0.0.1 under one
temp dir: mxd, a Postfix instance (postfix.py) configured as an inbound MX
for the same domain, one Dovecot LMTP server for both (mailboxes spread
over 100 maildirs), smtp-source as the client, smtp-sink as the reference
for "SMTP with no storage at all" and as the primary MX that comes back.

Per point (concurrency x message size) and MTA, alternating: accepted
messages/s (smtp-source's run time), delivered/s end to end (until the
last maildir file), CPU seconds per 1,000 messages (the MTA's processes
only, Dovecot apart), peak PSS (summed over the MTA's processes, shared pages divided among
them), and the ratio mxd/Postfix. Then: accept with delivery held (mxd: a backup domain
whose primary is down; Postfix: defer_transports) against smtp-sink, with
the fsync/fdatasync calls counted by strace; latency at concurrency 1 and
the final-dot-to-250 p99 at 50; RSS with 10,000 idle connections;
start-up time with N held messages; disk bytes per stored 4 KiB message;
the drain rate of held messages to a primary that comes back.

Default: a run of under 10 minutes with fewer messages per point than the
issue's 20,000 (--full uses 20,000 and 1,000,000 held; it takes much
longer); --quick (CI) checks that every part works in under 2 minutes.
Writes the table into docs/performance.md between the bench markers
unless --quick or --no-docs.
"""

import argparse
import asyncio
import atexit
import os
import platform
import re
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import mxdtest  # noqa: E402
from dovecot import Dovecot, _children, free_port, proc_cpu  # noqa: E402
from postfix import Postfix  # noqa: E402

DOMAIN = "bench.test"
HELD = "held.test"
SOURCE = "/usr/sbin/smtp-source"
SINK = "/usr/sbin/smtp-sink"
MARK_BEGIN = "<!-- bench:begin -->"
MARK_END = "<!-- bench:end -->"


# ---- process accounting ----------------------------------------------------

def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def tree_cpu(pid):
    """CPU seconds of pid (with its reaped children) and its live children."""
    if pid is None:
        return 0.0
    return proc_cpu(pid, children=True) + sum(proc_cpu(c, children=True) for c in _children(pid))


def rss_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    """Proportional set size: shared pages divided among the processes that
    map them, so summing it over Postfix's processes is fair."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak of the summed PSS of a process tree, sampled every 0.2 s."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(pss_kib(p) for p in tree(self.pid)))
            self._stop.wait(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


# ---- the MTAs ----------------------------------------------------------------

def subdir(tmpdir, name):
    d = os.path.join(tmpdir, name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    return d


class MxdMta:
    name = "mxd"

    def __init__(self, tmpdir, lmtp, hold=False):
        domains = {DOMAIN: {"mode": "local", "lmtp": f"unix:{lmtp}", "recipients": "any",
                            "lmtp_concurrency": "20"},
                   HELD: {"mode": "backup", "primary": "127.0.0.1:1", "recipients": "any"}}
        server = {"max_connections": "12000", "max_connections_per_ip": "12000"}
        self.mxd = mxdtest.Mxd(subdir(tmpdir, "mxd-held" if hold else "mxd-e2e"), server=server,
                               domains=domains,
                               extra="[queue]\nretry_min = 1h\nretry_max = 2h\n")
        self.hold = hold
        self.domain = HELD if hold else DOMAIN

    def start(self):
        self.mxd.start()

    def stop(self):
        if self.mxd.running():
            self.mxd.stop()

    port = property(lambda self: self.mxd.port)
    pid = property(lambda self: self.mxd.pid)

    def queued(self):
        con = sqlite3.connect(f"file:{self.mxd.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            con.close()

    def disk_bytes(self):
        return sum(os.path.getsize(p) for p in (self.mxd.db_path, self.mxd.db_path + "-wal")
                   if os.path.exists(p))


class PostfixMta:
    name = "postfix"

    def __init__(self, tmpdir, lmtp, hold=False):
        self.pf = Postfix(subdir(tmpdir, "postfix-held" if hold else "postfix-e2e"), free_port(),
                          HELD if hold else DOMAIN, lmtp, hold=hold)
        self.domain = HELD if hold else DOMAIN

    def start(self):
        self.pf.start()

    def stop(self):
        self.pf.stop()

    port = property(lambda self: self.pf.port)
    pid = property(lambda self: self.pf.pid)

    def queued(self):
        return self.pf.queue_files()

    def disk_bytes(self):
        return self.pf.queue_bytes()


# ---- measurements --------------------------------------------------------------

def smtp_source(port, sessions, count, size, rcpt, spread=True):
    argv = [SOURCE, "-s", str(sessions), "-m", str(count), "-l", str(size),
            "-f", "bench@source.test", "-t", rcpt]
    if spread:
        argv.append("-N")  # a new recipient per message: 100 maildirs via Dovecot
    argv.append(f"127.0.0.1:{port}")
    t0 = time.monotonic()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=3600)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({p.returncode}): {p.stderr[-500:]!r}")
    return dt


def wait_delivered(dov, target, timeout):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if dov.count() >= target:
            return time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"only {dov.count()} of {target} delivered within {timeout}s")


def run_point(mta, dov, sessions, size, count):
    base = dov.count()
    cpu0, dcpu0 = tree_cpu(mta.pid), dov.cpu_seconds()
    with RssSampler(mta.pid) as rss:
        t0 = time.monotonic()
        t_acc = smtp_source(mta.port, sessions, count, size, f"user@{DOMAIN}")
        t_e2e = wait_delivered(dov, base + count, 600 + count / 20) - t0
    cpu = tree_cpu(mta.pid) - cpu0
    return {"acc": count / t_acc, "e2e": count / t_e2e, "cpu_k": cpu / count * 1000,
            "dov_cpu_k": (dov.cpu_seconds() - dcpu0) / count * 1000, "rss": rss.peak}


def count_syncs(pid, fn):
    """Runs fn() with strace -c -f on pid; (fsync + fdatasync calls, fn's value),
    or (None, value) without strace."""
    exe = shutil.which("strace")
    if exe is None:
        return None, fn()
    out = tempfile.mktemp(prefix="mxd-strace-")
    st = subprocess.Popen([exe, "-c", "-f", "-e", "trace=fsync,fdatasync", "-o", out, "-p",
                           str(pid)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        value = fn()
    finally:
        st.terminate()
        st.wait(30)
    calls = 0
    with open(out, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)(?:\s+\d+)?\s+(fsync|fdatasync)$", line)
            if m:
                calls += int(m.group(1))
    os.unlink(out)
    return calls, value


class SinkServer:
    """smtp-sink on a free loopback port: SMTP with no storage at all."""

    def __enter__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([SINK, "-u", "nobody", f"127.0.0.1:{self.port}", "1000"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            mxdtest_wait_port(self.port)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


def mxdtest_wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def message(size, token="x"):
    head = (f"From: <bench@source.test>\r\nTo: <lat@{DOMAIN}>\r\nSubject: {token}\r\n"
            f"X-Token: {token}\r\n\r\n").encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    body = (line * (size // len(line) + 1))[:max(0, size - len(head) - 2)]
    return head + body + b"\r\n"


def smtp_once(port, rcpt, data):
    """One session, connect to QUIT, in plain sockets (little client cost)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if not line or line[3:4] != b"-":
                return line

    try:
        reply()
        for cmd in (b"EHLO bench.invalid\r\n", b"MAIL FROM:<bench@source.test>\r\n",
                    f"RCPT TO:<{rcpt}>\r\n".encode(), b"DATA\r\n"):
            s.sendall(cmd)
            r = reply()
            if r[:1] not in (b"2", b"3"):
                raise RuntimeError(f"{cmd!r} -> {r!r}")
        s.sendall(data + b".\r\n")
        r = reply()
        if not r.startswith(b"250"):
            raise RuntimeError(f"end of data -> {r!r}")
        s.sendall(b"QUIT\r\n")
        reply()
    finally:
        f.close()
        s.close()


def latency_c1(mta, dov, n):
    """Median connect-to-QUIT, and median SMTP-to-maildir (time from connect
    until the file is in the recipient's maildir), over n messages."""
    data = message(4096)
    rcpt = f"lat{os.getpid()}@{DOMAIN}"
    sess, e2e = [], []
    for _ in range(n):
        before = dov.count()
        t0 = time.perf_counter()
        smtp_once(mta.port, rcpt, data)
        t1 = time.perf_counter()
        deadline = t1 + 10
        while dov.count() <= before and time.perf_counter() < deadline:
            time.sleep(0.0005)
        e2e.append(time.perf_counter() - t0)
        sess.append(t1 - t0)
    return statistics.median(sess) * 1000, statistics.median(e2e) * 1000


async def _dot_latency(port, sessions, total, data):
    lat = []
    left = [total]

    async def one():
        while left[0] > 0:
            left[0] -= 1
            r, w = await asyncio.open_connection("127.0.0.1", port)

            async def reply():
                while True:
                    line = await r.readline()
                    if not line or line[3:4] != b"-":
                        return line

            await reply()
            for cmd in (b"EHLO bench.invalid\r\n", b"MAIL FROM:<bench@source.test>\r\n",
                        f"RCPT TO:<p99@{HELD}>\r\n".encode(), b"DATA\r\n"):
                w.write(cmd)
                await reply()
            w.write(data)
            await w.drain()
            t0 = time.perf_counter()
            w.write(b".\r\n")
            rr = await reply()
            lat.append(time.perf_counter() - t0)
            if not rr.startswith(b"250"):
                raise RuntimeError(f"end of data -> {rr!r}")
            w.write(b"QUIT\r\n")
            await reply()
            w.close()

    await asyncio.gather(*(one() for _ in range(sessions)))
    return lat


def dot_p99(port, sessions, total):
    lat = sorted(asyncio.run(_dot_latency(port, sessions, total, message(4096))))
    return lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000


def idle_memory(mta, n, measure):
    """measure() (KiB) before and with n idle connections, all from
    127.0.0.1 (10,000 fit in the ephemeral port range); each is greeted
    before the second reading."""
    socks = []
    base = measure()
    try:
        for _ in range(n):
            s = socket.socket()
            s.connect(("127.0.0.1", mta.port))
            socks.append(s)
        for s in socks:
            s.settimeout(30)
            if not s.recv(512).startswith(b"220"):
                raise RuntimeError("an idle connection was not greeted")
        time.sleep(1)
        return base, measure()
    finally:
        for s in socks:
            s.close()


def fill_held(db_path, n, size=4096):
    """n held messages for HELD (one recipient each), written with SQLite
    straight into a store mxd created (the schema is mxd's own)."""
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    body = message(size)
    now = int(time.time())
    never = (1 << 63) - 1
    batch = 20000
    with con:
        start = con.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0] + 1
    for lo in range(start, start + n, batch):
        hi = min(lo + batch, start + n)
        with con:
            con.executemany("INSERT INTO messages (id, qid, received, client_addr, helo, sender,"
                            " size, body) VALUES (?, ?, ?, '127.0.0.1', 'bench', "
                            "'bench@source.test', ?, ?)",
                            ((i, f"B{i:012d}", now, len(body), body) for i in range(lo, hi)))
            con.executemany("INSERT INTO message_rcpts (message_id, address, domain, state,"
                            " next_attempt) VALUES (?, ?, ?, 'held', ?)",
                            ((i, f"u{i % 100}@{HELD}", HELD, never) for i in range(lo, hi)))
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def startup_time(tmpdir, n):
    """Seconds from exec to the first 220 with n held messages in the store."""
    mta = MxdMta(subdir(tmpdir, "startup"), "/nonexistent", hold=True)
    mta.start()
    mta.stop()
    fill_held(mta.mxd.db_path, n)
    size = mta.disk_bytes()
    t0 = time.monotonic()
    mta.start()
    dt = time.monotonic() - t0
    mta.stop()
    os.unlink(mta.mxd.db_path)
    return dt, size / n


def drain(tmpdir, n, sessions=50):
    """n held 4 KiB messages accepted while the primary is down; smtp-sink
    starts as the primary; seconds until mxd's queue is empty."""
    port = free_port()
    domains = {HELD: {"mode": "backup", "primary": f"127.0.0.1:{port}", "recipients": "any"}}
    mxd = mxdtest.Mxd(subdir(tmpdir, "drain"), server={"max_connections_per_ip": "1000"},
                      domains=domains, extra="[queue]\nretry_min = 1s\nretry_max = 5s\n")
    mxd.start()
    try:
        smtp_source(mxd.port, sessions, n, 4096, f"user@{HELD}")
        mta = type("M", (), {"mxd": mxd})()
        rss_held = rss_kib(mxd.pid)
        sink = subprocess.Popen([SINK, "-u", "nobody", f"127.0.0.1:{port}", "1000"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        try:
            while MxdMta.queued(mta) > 0:
                if time.monotonic() - t0 > 600 + n / 50:
                    raise RuntimeError("drain did not finish")
                time.sleep(0.2)
            dt = time.monotonic() - t0
        finally:
            sink.terminate()
            sink.wait(10)
        return n / dt, dt, rss_held, rss_kib(mxd.pid, "VmHWM")
    finally:
        mxd.stop()


# ---- the run --------------------------------------------------------------------

def machine():
    cpu = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pf = subprocess.run(["/usr/sbin/postconf", "-d", "-h", "mail_version"], capture_output=True,
                        text=True).stdout.strip()
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}, "
            f"Postfix {pf}")


def fmt(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("compare.py: run as root (Postfix's master and smtp-sink need it)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if args.quick:
        conc, sizes = [10, 50], [4096]
        per_point = {1: 100, 10: 300, 50: 300}
        held_n, lat_n, p99_n, idle_n, start_n, drain_n = 1000, 30, 500, 500, 20000, 1000
        rounds = 1
    elif args.full:
        conc, sizes = [1, 10, 50, 200], [1024, 4096, 102400]
        per_point = {1: 2000, 10: 20000, 50: 20000, 200: 20000}
        held_n, lat_n, p99_n, idle_n, start_n, drain_n = 20000, 300, 10000, 10000, 1000000, 100000
        rounds = 3
    else:
        conc, sizes = [1, 10, 50, 200], [1024, 4096, 102400]
        per_point = {1: 300, 10: 2000, 50: 3000, 200: 3000}
        held_n, lat_n, p99_n, idle_n, start_n, drain_n = 10000, 100, 5000, 10000, 200000, 20000
        rounds = 3

    tmp = tempfile.mkdtemp(prefix="mxd-bench-")
    os.chmod(tmp, 0o755)
    lines = []

    def out(s=""):
        print(s, flush=True)
        lines.append(s)

    dov = Dovecot(tmpdir=tmp, mailbox_spread=100)
    dov.start()
    atexit.register(dov.stop)  # also when a step fails: no Dovecot left behind
    mtas = [MxdMta(tmp, dov.unix_path), PostfixMta(tmp, dov.unix_path)]
    try:
        for m in mtas:
            m.start()
        out(f"Machine: {machine()}")
        out()
        # latency first, while the maildirs are small
        for m in mtas:
            med, e2e = latency_c1(m, dov, lat_n)
            out(f"{m.name}: concurrency 1, 4 KiB: connect-to-QUIT median {med:.2f} ms, "
                f"SMTP-to-maildir median {e2e:.2f} ms ({lat_n} messages)")
        out()
        out("| conc | size | MTA | accepted/s | delivered/s | CPU s/1k msgs | Dovecot CPU s/1k |"
            " peak PSS MiB | mxd/Postfix accepted | mxd/Postfix delivered |")
        out("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for size in sizes:
            for c in conc:
                n = per_point[c] if size < 100000 else max(100, per_point[c] // 4)
                res = {}
                for m in mtas:
                    res[m.name] = run_point(m, dov, c, size, n)
                for m in mtas:
                    r = res[m.name]
                    ratio = ("", "")
                    if m.name == "mxd":
                        p = res["postfix"]
                        ratio = (f"{r['acc'] / p['acc']:.1f}x", f"{r['e2e'] / p['e2e']:.2f}x")
                    out(f"| {c} | {size // 1024} KiB | {m.name} | {fmt(r['acc'])} | "
                        f"{fmt(r['e2e'])} | {r['cpu_k']:.2f} | {r['dov_cpu_k']:.2f} | "
                        f"{r['rss'] / 1024:.1f} | {ratio[0]} | {ratio[1]} |")
        # smtp-source straight into Dovecot over LMTP: the pipeline's ceiling
        n = per_point[50]
        base = dov.count()
        t0 = time.monotonic()
        subprocess.run([SOURCE, "-L", "-s", "20", "-m", str(n), "-l", "4096", "-N",
                        "-f", "bench@source.test", "-t", f"user@{DOMAIN}",
                        f"unix:{dov.unix_path}"], check=True, capture_output=True, timeout=3600)
        lmtp_rate = n / (wait_delivered(dov, base + n, 600) - t0)
        out()
        out(f"smtp-source -L (LMTP straight into the same Dovecot, 20 sessions, 4 KiB): "
            f"{lmtp_rate:,.0f} delivered/s")
    finally:
        for m in mtas:
            m.stop()

    # accept with delivery held, against smtp-sink
    out()
    held = [MxdMta(tmp, dov.unix_path, hold=True), PostfixMta(tmp, dov.unix_path, hold=True)]
    try:
        for m in held:
            m.start()
            # strace -f slows Postfix's many processes down a lot: fewer here
            sn = min(held_n, 2000)
            syncs, _ = count_syncs(m.pid, lambda m=m, sn=sn: smtp_source(
                m.port, 50, sn, 4096, f"user@{HELD}"))
            per_msg = f"{syncs / sn:.3f}" if syncs is not None else "n/a"
            out(f"{m.name}, delivery held, 50 sessions, 4 KiB, {sn} messages under strace -f: "
                f"fsync+fdatasync {fmt(syncs)} ({per_msg}/message), "
                f"queue on disk {m.disk_bytes() / max(1, m.queued()):,.0f} bytes/message")
        # The rates and CPU without strace, in rounds that alternate mxd,
        # smtp-sink and Postfix: this VM's speed drifts by a third within
        # minutes, so only rates taken side by side compare.
        acc = {"mxd": [], "smtp-sink": [], "postfix": []}
        cpu_ms = {"mxd": [], "postfix": []}
        pf_n = max(1000, held_n // 2)  # Postfix is slow: fewer, same rate
        with SinkServer() as sink:
            for r in range(rounds):
                for name, port, n in (("mxd", held[0].port, held_n), ("smtp-sink", sink.port,
                                      held_n), ("postfix", held[1].port, pf_n)):
                    m = held[0] if name == "mxd" else held[1] if name == "postfix" else None
                    cpu0 = tree_cpu(m.pid) if m else 0.0
                    dt = smtp_source(port, 50, n, 4096, f"user@{HELD}")
                    if m:
                        cpu_ms[name].append((tree_cpu(m.pid) - cpu0) / n * 1000)
                    acc[name].append(n / dt)
                    if name == "postfix":
                        held[1].pf.settle()  # its qmgr defers the new mail: not during mxd's turn
                out(f"round {r + 1}, delivery held, 50 sessions, 4 KiB: mxd {fmt(acc['mxd'][-1])}/s"
                    f" ({held_n} messages, CPU {cpu_ms['mxd'][-1]:.3f} ms/message), smtp-sink "
                    f"{fmt(acc['smtp-sink'][-1])}/s, postfix {fmt(acc['postfix'][-1])}/s ({pf_n}"
                    f" messages, CPU {cpu_ms['postfix'][-1]:.3f} ms/message): mxd "
                    f"{acc['mxd'][-1] / acc['smtp-sink'][-1] * 100:.0f}% of smtp-sink, "
                    f"{acc['mxd'][-1] / acc['postfix'][-1]:.1f}x Postfix")
        med = {k: statistics.median(v) for k, v in acc.items()}
        out(f"median of {rounds} rounds: mxd {fmt(med['mxd'])}/s (CPU "
            f"{statistics.median(cpu_ms['mxd']):.3f} ms/message), smtp-sink "
            f"{fmt(med['smtp-sink'])}/s, postfix {fmt(med['postfix'])}/s (CPU "
            f"{statistics.median(cpu_ms['postfix']):.3f} ms/message); mxd "
            f"{med['mxd'] / med['smtp-sink'] * 100:.0f}% of smtp-sink, "
            f"{med['mxd'] / med['postfix']:.1f}x Postfix")
        # Postfix runs one smtpd process per connection (at most
        # default_process_limit = 300 here): measured with 250, scaled.
        pf_idle = min(idle_n, 250)
        base, with_idle = idle_memory(held[1], pf_idle,
                                      lambda: sum(pss_kib(p) for p in tree(held[1].pid)))
        each = (with_idle - base) / pf_idle
        out(f"postfix: PSS of all its processes {base / 1024:.1f} MiB, with {pf_idle} idle "
            f"connections {with_idle / 1024:.1f} MiB ({each:,.0f} KiB each; for {idle_n:,} "
            f"that would be about {(base + each * idle_n) / 1024:,.0f} MiB)")
        held[1].stop()  # its queue manager's work on the deferred mail would load the machine
        if held[0].mxd.running():
            p50, p99 = dot_p99(held[0].port, 50, p99_n)
            out(f"mxd: 50 sessions, final dot to 250: median {p50:.2f} ms, p99 {p99:.2f} ms "
                f"({p99_n} messages)")
            base, with_idle = idle_memory(held[0], idle_n, lambda: rss_kib(held[0].pid))
            out(f"mxd: RSS {base / 1024:.1f} MiB, with {idle_n:,} idle connections "
                f"{with_idle / 1024:.1f} MiB ({(with_idle - base) / idle_n:.1f} KiB each)")
    finally:
        for m in held:
            m.stop()

    dt, per = startup_time(tmp, start_n)
    out(f"mxd start-up with {start_n:,} held messages: {dt:.2f} s to the first 220; "
        f"{per:,.0f} disk bytes per stored 4 KiB message")
    rate, dt, rss_held, hwm = drain(tmp, drain_n)
    out(f"mxd drain: {drain_n:,} held 4 KiB messages to smtp-sink as the primary that came back:"
        f" {dt:.1f} s, {rate:,.0f} messages/s (RSS {rss_held / 1024:.1f} MiB holding, "
        f"peak {hwm / 1024:.1f} MiB)")
    dov.stop()
    if not args.quick and not args.no_docs:
        write_docs(lines, args)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def write_docs(lines, args):
    path = os.path.join(ROOT, "docs", "performance.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cmd = "bash tests/bench/run.sh" + (" --full" if args.full else "")
    # the default run and --full each keep their own block
    begin, end = MARK_BEGIN, MARK_END
    if args.full:
        begin, end = (m.replace("bench:", "bench-full:") for m in (begin, end))
    block = (f"{begin}\n## mxd and Postfix side by side (`{cmd}`)\n\n"
             f"Run on {time.strftime('%Y-%m-%d')}.\n\n" + "\n".join(lines) + f"\n{end}")
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
