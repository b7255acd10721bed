#!/usr/bin/env python3
"""mxd against every peer a user would pick (issue 22), side by side in one
run: Postfix 3.7 (installed), Exim 4.96 and OpenSMTPD 6.8 (unpacked
privately: peers.py), and smtp-sink as "SMTP with no storage at all".
A benchmark, not a test: it fails only when something does not work.

    env MXD=build-bench/src/mxd SMTP_LOAD=build/tests/smtp_load \\
        LISTEN_BACKLOG=build/tests/liblisten_backlog.so \\
        /usr/bin/python3 tests/bench/peers_bench.py [--quick] [--rounds N]

Run as root. Everything is private on 127.0.0.1 under one temp dir. Every
server holds what it accepts for one domain (mxd: a backup domain whose
primary is down; Postfix: defer_transports; Exim: queue_only; OpenSMTPD:
`smtpctl pause mta`), with the same test certificate for STARTTLS.
Workloads (each: messages/s, CPU ms per message of the server's process
tree, peak PSS of the tree, final dot to 250 p50/p99 from smtp_load):

  1. plain SMTP, 50 sessions, 4 KiB
  2. the same with STARTTLS on every connection (TLS 1.3, a new handshake
     each time): the rate a real port 25 sees
  4. 10 MB messages, 10 sessions
  6. idle sessions, plain: PSS of the server's processes with N idle
     connections (10,000; Postfix and Exim run a process per session:
     measured with 250 and scaled, as compare.py does)

Each session sends one message (as smtp-source does). Rounds alternate
the servers (this VM's speed drifts); medians are printed. A peer that
cannot be started (no network for apt-get download, say) is left out and
said so. Workloads 3 (the realistic stack), 5 (end to end into Dovecot,
with mxd and Postfix in compare.py) and the TLS half of 6 are not here
yet.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import mxdtest  # noqa: E402
import peers  # noqa: E402
import tlsutil  # noqa: E402
from compare import SINK, RssSampler, idle_memory, pss_kib, subdir, tree, tree_cpu  # noqa: E402
from dovecot import free_port  # noqa: E402
from postfix import Postfix  # noqa: E402

HELD = "held.test"
LOAD = os.environ.get("SMTP_LOAD") or os.path.join(ROOT, "build", "tests", "smtp_load")
BACKLOG = os.environ.get("LISTEN_BACKLOG") or os.path.join(ROOT, "build", "tests",
                                                            "liblisten_backlog.so")


class Mxd:
    name = "mxd"
    durability = "fdatasync per commit (group commit), before every 250"

    def __init__(self, tmp, pki):
        server = {"max_connections": "12000", "max_connections_per_ip": "12000",
                  "max_message_size": "64M"}
        domains = {HELD: {"mode": "backup", "primary": "127.0.0.1:1", "recipients": "any"}}
        extra = (f"[tls]\ncertificate = {pki.cert}\nkey = {pki.key}\n"
                 "[queue]\nretry_min = 1h\nretry_max = 2h\n")
        self.mxd = mxdtest.Mxd(subdir(tmp, "mxd"), server=server, domains=domains, extra=extra)

    def start(self):
        self.mxd.start()

    def stop(self):
        if self.mxd.running():
            self.mxd.stop()

    port = property(lambda self: self.mxd.port)
    pid = property(lambda self: self.mxd.pid)


class Pf:
    name = "postfix"
    durability = "fsync per message (its default)"

    def __init__(self, tmp, pki):
        extra = (f"smtpd_tls_cert_file = {pki.cert}\nsmtpd_tls_key_file = {pki.key}\n"
                 "smtpd_tls_security_level = may\nmessage_size_limit = 67108864\n")
        self.pf = Postfix(subdir(tmp, "postfix"), free_port(), HELD, "/nonexistent/lmtp",
                          hold=True, extra=extra)

    def start(self):
        self.pf.start()

    def stop(self):
        self.pf.stop()

    port = property(lambda self: self.pf.port)
    pid = property(lambda self: self.pf.pid)


class Sink:
    name = "smtp-sink"
    durability = "none (stores nothing)"

    def __init__(self, _tmp, _pki):
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([SINK, "-u", "nobody", f"127.0.0.1:{self.port}", "1000"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        peers._wait_port(self.port, self.proc, "/dev/null")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    pid = property(lambda self: self.proc.pid if self.proc else None)


def load(port, sessions, n, size, tls):
    argv = [LOAD, "-p", str(port), "-c", str(sessions), "-n", str(n), "-s", str(size),
            "-t", f"user@{HELD}"] + (["-T"] if tls else [])
    p = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-300:])
    f = p.stdout.split()
    return {f[i]: float(f[i + 1]) for i in range(0, len(f), 2)}


def point(srv, sessions, n, size, tls):
    cpu0 = tree_cpu(srv.pid)
    with RssSampler(srv.pid) as rss:
        r = load(srv.port, sessions, n, size, tls)
    r["cpu_ms"] = (tree_cpu(srv.pid) - cpu0) / n * 1000
    r["pss_mib"] = rss.peak / 1024
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="each workload briefly (CI)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("peers_bench.py: run as root (Postfix, unshare)")
    rounds = 1 if args.quick else args.rounds
    # messages per point: (mxd and smtp-sink, the peers)
    sizes = {"plain": (3000, 1000), "tls": (1000, 500), "10mb": (40, 30)}
    if args.quick:
        sizes = {"plain": (200, 100), "tls": (100, 50), "10mb": (10, 10)}
    tmp = tempfile.mkdtemp(prefix="mxd-bench-peers-")
    os.chmod(tmp, 0o755)
    pki = tlsutil.make_pki(os.path.join(tmp, "pki"))
    for f in os.listdir(pki.dir):  # OpenSMTPD refuses a key others may read
        os.chmod(os.path.join(pki.dir, f), 0o600 if f.endswith(".key") else 0o644)
    servers = []
    for cls in (Mxd, Pf, Sink):
        servers.append(cls(tmp, pki))
    for cls, kw in ((peers.Exim, {}), (peers.OpenSMTPD, {"preload": BACKLOG})):
        try:
            servers.append(cls(tmp, free_port(), HELD, hold=True, tls=(pki.cert, pki.key), **kw))
        except Exception as e:  # noqa: BLE001 - a peer that cannot be had is said so
            print(f"{cls.name}: cannot be set up: {e}", flush=True)
    started = []
    failed = []  # of the servers this machine must have: the run fails
    try:
        for s in servers:
            try:
                s.start()
                started.append(s)
            except Exception as e:  # noqa: BLE001
                print(f"{s.name}: did not start: {e}", flush=True)
                failed.append(f"{s.name} did not start")
        print("durability as configured: " + "; ".join(f"{s.name}: {s.durability}"
                                                       for s in started), flush=True)
        res = {}
        work = [("plain", 50, 4096, False), ("tls", 50, 4096, True),
                ("10mb", 10, 10 * 1024 * 1024, False)]
        for r in range(rounds):
            for wname, sessions, size, tls in work:
                for s in started:
                    if tls and s.name == "smtp-sink":
                        continue
                    n = sizes[wname][0 if s.name in ("mxd", "smtp-sink") else 1]
                    try:
                        p = point(s, sessions, n, size, tls)
                    except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                        print(f"round {r + 1} {wname} {s.name}: failed: {e}", flush=True)
                        failed.append(f"{wname} {s.name}")
                        continue
                    res.setdefault((wname, s.name), []).append(p)
                    print(f"round {r + 1} {wname} {s.name}: {n} messages, {p['rate']:,.1f}/s, "
                          f"CPU {p['cpu_ms']:.3f} ms/message, peak PSS {p['pss_mib']:.1f} MiB,"
                          f" dot-to-250 p50 {p['p50_ms']:.2f} ms p99 {p['p99_ms']:.2f} ms",
                          flush=True)
                    if isinstance(s, Pf):
                        s.pf.settle()
                    time.sleep(0.5)
        idle_n = 500 if args.quick else 10000
        print(f"\nidle sessions (plain), PSS of the server's processes:")
        for s in started:
            if s.name == "smtp-sink":
                continue
            n = idle_n if s.name in ("mxd", "opensmtpd") else min(idle_n, 250)
            try:
                base, with_idle = idle_memory(s, n, lambda s=s: sum(pss_kib(p)
                                                                   for p in tree(s.pid)))
            except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                print(f"  {s.name}: failed: {e}")
                failed.append(f"idle {s.name}")
                continue
            each = (with_idle - base) / n
            print(f"  {s.name:10} {base / 1024:7.1f} MiB, with {n:,} idle "
                  f"{with_idle / 1024:7.1f} MiB: {each:,.1f} KiB each; for {idle_n:,}: "
                  f"{(base + each * idle_n) / 1024:,.0f} MiB")
        print(f"\nmedians of {rounds} round(s): messages/s / CPU ms per message / peak PSS MiB"
              " / p50 ms / p99 ms")
        for wname, _, _, _ in work:
            for s in started:
                v = res.get((wname, s.name))
                if not v:
                    continue
                m = {k: statistics.median(x[k] for x in v) for k in v[0]}
                mx = res.get((wname, "mxd"))
                ratio = ""
                if mx and s.name != "mxd":
                    ratio = (f"  mxd/{s.name} "
                             f"{statistics.median(x['rate'] for x in mx) / m['rate']:.2f}x")
                print(f"  {wname:6} {s.name:10} {m['rate']:9,.1f}/s {m['cpu_ms']:8.3f} "
                      f"{m['pss_mib']:7.1f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f}{ratio}")
    finally:
        for s in started:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - a benchmark cleans up what it can
                print(f"stopping {s.name}: {e}", file=sys.stderr)
    # Exim and OpenSMTPD are fetched at run time (and OpenSMTPD's STARTTLS
    # fails with OpenSSL 3): their failures are reported, not fatal
    fatal = [f for f in failed if f.split()[-1] in ("mxd", "postfix", "smtp-sink")
             or f.split()[0] in ("mxd", "postfix", "smtp-sink")]
    if fatal:
        print("FAILED: " + ", ".join(fatal))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
