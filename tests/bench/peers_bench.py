#!/usr/bin/env python3
"""mxd against every peer a user would pick (issue 22), side by side in one
run: Postfix 3.7 (installed), Exim 4.96 and OpenSMTPD 6.8 (unpacked
privately: peers.py), and smtp-sink as "SMTP with no storage at all".
A benchmark, not a test: it fails only when something does not work.

    env MXD=build-bench/src/mxd SMTP_LOAD=build/tests/smtp_load \\
        LISTEN_BACKLOG=build/tests/liblisten_backlog.so \\
        /usr/bin/python3 tests/bench/peers_bench.py [--quick] [--rounds N] \\
        [--only load|idle|e2e|stack]

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
  5. end to end into one private Dovecot LMTP (its unix socket; mailboxes
     spread over 100 maildirs, a recipient per message), 50 sessions, 4 KiB
     and 100 KiB: delivered/s until the last maildir file appears, CPU of
     the server's tree (Dovecot's apart), peak PSS. Each server runs a
     second instance for this (mxd: a local domain, lmtp_concurrency 20;
     Postfix: virtual_transport lmtp, 20 at a time; Exim: its lmtp transport;
     OpenSMTPD: `action lmtp "SOCKET" rcpt-to`, its mail.lmtp per message)
  6. idle sessions, plain and after STARTTLS: PSS of the server's processes
     with N idle connections (10,000; Postfix and Exim run a process per
     session: measured with 250 and scaled, as compare.py does)

Each session sends one message (as smtp-source does). Rounds alternate
the servers (this VM's speed drifts); medians are printed. A peer that
cannot be started (no network for apt-get download, say) is left out and
said so.

Workload 3 (the realistic stack, stack.py; exim_stack.py): mxd, Postfix
and Exim, STARTTLS + screening (pre-greet test, two DNSBLs, passes
cached; Postfix: postscreen)
+ SPF + DKIM + DMARC against a scripted DNS (Postfix: policyd-spf and
rspamd's) + the rspamd milter, held, 50 sessions, one DKIM-signed 4 KiB
message; the run asserts from a stored message and the log of each that
every check ran. `--only stack` runs it alone; `--stack-lean` lets rspamd
skip SPF/DKIM/DMARC for mxd's mail (an rspamd settings rule, stack.py);
`--rspamd-workers N` (both servers); `--ecdsa`: a P-256 certificate for
every server in every workload instead of RSA 2048. Not yet: OpenSMTPD
in it.
"""

import argparse
import atexit
import os
import shutil
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
import exim_stack  # noqa: E402
import peers  # noqa: E402
import stack  # noqa: E402
import tlsutil  # noqa: E402
from compare import SINK, RssSampler, idle_memory, pss_kib, subdir, tree, tree_cpu  # noqa: E402
from dovecot import Dovecot, free_port  # noqa: E402
from postfix import Postfix  # noqa: E402

HELD = "held.test"
E2E = "e2e.test"
LOAD = os.environ.get("SMTP_LOAD") or os.path.join(ROOT, "build", "tests", "smtp_load")
BACKLOG = os.environ.get("LISTEN_BACKLOG") or os.path.join(ROOT, "build", "tests",
                                                            "liblisten_backlog.so")


class Mxd:
    name = "mxd"
    durability = "fdatasync per commit (group commit), before every 250"

    def __init__(self, tmp, pki, lmtp=None, stack=None):
        server = {"max_connections": "12000", "max_connections_per_ip": "12000",
                  "max_message_size": "64M"}
        more = ""
        if stack:  # workload 3: SPF, DKIM, DMARC and rspamd (stack.py)
            keys, more = stack.mxd_config()
            server.update(keys)
        domains = {HELD: {"mode": "backup", "primary": "127.0.0.1:1", "recipients": "any"}}
        if lmtp:  # end to end: a local domain delivered over LMTP, as compare.py
            domains = {E2E: {"mode": "local", "lmtp": f"unix:{lmtp}", "recipients": "any",
                             "lmtp_concurrency": "20"}}
        extra = (f"[tls]\ncertificate = {pki.cert}\nkey = {pki.key}\n"
                 "[queue]\nretry_min = 1h\nretry_max = 2h\n" + more)
        name = "mxd-e2e" if lmtp else "mxd-stack" if stack else "mxd"
        self.mxd = mxdtest.Mxd(subdir(tmp, name), server=server,
                               domains=domains, extra=extra)

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

    def __init__(self, tmp, pki, lmtp=None, stack=None):
        extra = (f"smtpd_tls_cert_file = {pki.cert}\nsmtpd_tls_key_file = {pki.key}\n"
                 "smtpd_tls_security_level = may\nmessage_size_limit = 67108864\n")
        if stack:
            extra += stack.postfix_config()
        name = "postfix-e2e" if lmtp else "postfix-stack" if stack else "postfix"
        self.pf = Postfix(subdir(tmp, name), free_port(),
                          E2E if lmtp else HELD, lmtp or "/nonexistent/lmtp",
                          hold=not lmtp, extra=extra)
        if stack:  # postscreen, policyd-spf, the scripted DNS (stack.py)
            stack.postfix_setup(self.pf)

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


def idle_limit(srv):
    """How many idle sessions srv can hold: OpenSMTPD's limit follows its
    open-files limit (peers.OpenSMTPD.max_sessions: 9,950 with this
    machine's 20,000, which cannot be raised here); it is measured at that
    and scaled, as Postfix and Exim are at 250."""
    limit = getattr(srv, "max_sessions", None)
    return limit() if limit else 1 << 30


class _Skip(Exception):
    """--only stack or e2e: workloads 1, 2, 4 and 6 are not run."""


def start_all(servers, started, failed, prefix):
    """Starts each server: into started, or said so and into failed (a
    start that failed half-way is stopped: it may have left processes)."""
    for s in servers:
        try:
            s.start()
            started.append(s)
        except Exception as e:  # noqa: BLE001 - the run goes on, the failure is counted
            print(f"{prefix}{s.name}: did not start: {e}", flush=True)
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                pass
            failed.append(f"{prefix}{s.name} did not start")


def load(port, sessions, n, size, tls, rcpt=f"user@{HELD}", spread=False, file=None):
    argv = [LOAD, "-p", str(port), "-c", str(sessions), "-n", str(n), "-s", str(size),
            "-t", rcpt] + (["-T"] if tls else []) + (["-N"] if spread else [])
    if file:
        argv += ["-f", file]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-300:])
    f = p.stdout.split()
    return {f[i]: float(f[i + 1]) for i in range(0, len(f), 2)}


def quiesce(pids, limit=60.0):
    """Waits until none of pids' process trees burns CPU (under 10 ms in
    0.5 s), at most limit seconds: a server goes on after its point (mxd:
    each held message's delivery attempt; Postfix: its queue manager;
    OpenSMTPD: its queue after 10 MB bodies), and that work must not land
    in the next server's point (it slowed smtp-sink by a quarter)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(tree_cpu(p) for p in pids)
        time.sleep(0.5)
        if sum(tree_cpu(p) for p in pids) - before < 0.010:
            return


def point(srv, sessions, n, size, tls, file=None, cpu=tree_cpu):
    cpu0 = cpu(srv.pid)
    with RssSampler(srv.pid) as rss:
        r = load(srv.port, sessions, n, size, tls, file=file)
    r["cpu_ms"] = (cpu(srv.pid) - cpu0) / n * 1000
    r["pss_mib"] = rss.peak / 1024
    return r


def e2e_point(srv, dov, sessions, n, size):
    """n messages end to end into dov: delivered/s from the first connect
    to the last maildir file; CPU of the server's tree and of Dovecot's."""
    base = dov.count()
    cpu0, dcpu0 = tree_cpu(srv.pid), dov.cpu_seconds()
    with RssSampler(srv.pid) as rss:
        t0 = time.monotonic()
        r = load(srv.port, sessions, n, size, False, rcpt=f"user@{E2E}", spread=True)
        deadline = time.monotonic() + 120 + n / 5
        while dov.count() < base + n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{dov.count() - base} of {n} delivered after "
                                   f"{deadline - t0:.0f} s")
            time.sleep(0.02)
        dt = time.monotonic() - t0
    r["acc"] = r["rate"]
    r["rate"] = n / dt
    r["cpu_ms"] = (tree_cpu(srv.pid) - cpu0) / n * 1000
    r["dov_cpu_ms"] = (dov.cpu_seconds() - dcpu0) / n * 1000
    r["pss_mib"] = rss.peak / 1024
    return r


def idle_tls(srv, n):
    """PSS (KiB) of the server's tree before and with n idle sessions that
    completed STARTTLS (smtp_load -I -T holds them until its stdin ends)."""
    measure = lambda: sum(pss_kib(p) for p in tree(srv.pid))  # noqa: E731
    base = measure()
    p = subprocess.Popen([LOAD, "-p", str(srv.port), "-n", str(n), "-I", "-T"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline()
        if not line.startswith("idle"):
            p.wait(30)
            raise RuntimeError(p.stderr.read().strip()[-300:] or f"exit {p.returncode}")
        time.sleep(1)
        return base, measure(), float(line.split()[3])
    finally:
        if p.poll() is None:
            p.stdin.close()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_e2e(tmp, pki, rounds, sizes, failed):
    """Workload 5: every server in a second instance delivering to one
    private Dovecot; returns {(workload, name): [points]}."""
    res = {}
    dov = Dovecot(tmpdir=tmp, mailbox_spread=100)
    dov.start()
    e2e = subdir(tmp, "e2e")
    servers = [Mxd(tmp, pki, lmtp=dov.unix_path), Pf(tmp, pki, lmtp=dov.unix_path)]
    for cls, kw in ((peers.Exim, {}), (peers.OpenSMTPD, {"preload": BACKLOG})):
        try:
            servers.append(cls(e2e, free_port(), E2E, lmtp=dov.unix_path, hold=False, **kw))
        except Exception as e:  # noqa: BLE001 - a peer that cannot be had is said so
            print(f"e2e {cls.name}: cannot be set up: {e}", flush=True)
    started = []
    try:
        start_all(servers, started, failed, "e2e ")
        for r in range(rounds):
            for wname, size in (("e2e-4k", 4096), ("e2e-100k", 102400)):
                for s in started:
                    n = sizes[wname][0 if s.name == "mxd" else 1]
                    quiesce([x.pid for x in started])
                    try:
                        p = e2e_point(s, dov, 50, n, size)
                    except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                        print(f"round {r + 1} {wname} {s.name}: failed: {e}", flush=True)
                        failed.append(f"{wname} {s.name}")
                        continue
                    res.setdefault((wname, s.name), []).append(p)
                    print(f"round {r + 1} {wname} {s.name}: {n} messages, accepted "
                          f"{p['acc']:,.1f}/s, delivered {p['rate']:,.1f}/s, CPU "
                          f"{p['cpu_ms']:.3f} ms/message (Dovecot {p['dov_cpu_ms']:.3f}), "
                          f"peak PSS {p['pss_mib']:.1f} MiB", flush=True)
                    time.sleep(0.5)
    finally:
        for s in started:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - a benchmark cleans up what it can
                print(f"stopping {s.name}: {e}", file=sys.stderr)
        dov.stop()
    return res


def run_stack(tmp, pki, rounds, sizes, failed, lean=False, rspamd_workers=1):
    """Workload 3 (stack.py; Exim's in exim_stack.py): mxd, Postfix and
    Exim, STARTTLS + screening (two DNSBLs; pre-greet) + SPF + DKIM +
    DMARC (+ policyd-spf for Postfix) + the rspamd milter, held; then
    asserts from a stored message and the log of each that the checks ran.
    lean: rspamd skips SPF/DKIM/DMARC for mxd's mail (stack.py)."""
    res = {}
    st = stack.Stack(subdir(tmp, "stack"), mxd_lean=lean, rspamd_workers=rspamd_workers)
    msg = stack.signed_message(os.path.join(tmp, "stack", "signed.eml"), f"user@{HELD}")
    servers = [Mxd(tmp, pki, stack=st), Pf(tmp, pki, stack=st)]
    started = []
    try:
        for s in servers:
            s.start()
            started.append(s)
        # Exim (exim_stack.py): its own SPF/DKIM, DMARC in its ACLs, the
        # same DNSBLs, rspamd over its spamd interface; a failure to start
        # it is recorded, mxd's and Postfix's points still run
        ex = exim_stack.EximStackServer(tmp, st, pki, HELD)
        try:
            ex.start()
            started.append(ex)
        except Exception as e:  # noqa: BLE001 - a peer that cannot be had is said so
            print(f"stack exim: cannot be started: {e}", flush=True)
            failed.append("stack exim")
            try:
                ex.stop()
            except Exception:  # noqa: BLE001 - half-started: stop what there is
                pass
        # not measured: rspamd compiles its regexps and loads its maps, the
        # screening's first wait passes the client; 50 sessions at once so
        # that Postfix has its smtpd processes, each with its policyd-spf
        # (a Python process: about 0.2 s of CPU to start), as in its steady
        # state, where one serves 100 sessions (max_use)
        for s in started:
            load(s.port, 50, sizes["stack"][2], 0, True, file=msg)
        for r in range(rounds):
            for s in started:
                n = sizes["stack"][0 if s.name == "mxd" else 1]
                quiesce([x.pid for x in started] + [st.rspamd.pid])
                rcpu0, q0 = tree_cpu(st.rspamd.pid), len(st.dns.queries)
                names0 = stack.cpu_by_name(s.pid)
                try:
                    p = point(s, 50, n, 0, True, file=msg,
                              cpu=lambda pid: sum(stack.cpu_by_name(pid).values()))
                    p["rspamd_ms"] = (tree_cpu(st.rspamd.pid) - rcpu0) / n * 1000
                    p["dns_q"] = (len(st.dns.queries) - q0) / n
                    names1 = stack.cpu_by_name(s.pid)
                    by_name = {k: (v - names0.get(k, 0.0)) / n * 1000
                               for k, v in names1.items()}
                    shown = (stack.check_mxd(s.mxd.db_path, s.mxd.all_stderr())
                             if s.name == "mxd" else s.check() if s.name == "exim"
                             else stack.check_postfix(s.pf))
                except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                    print(f"round {r + 1} stack {s.name}: failed: {e}", flush=True)
                    failed.append(f"stack {s.name}")
                    continue
                res.setdefault(("stack", s.name), []).append(p)
                print(f"round {r + 1} stack {s.name}: {n} messages, {p['rate']:,.1f}/s, "
                      f"CPU {p['cpu_ms']:.3f} ms/message (rspamd {p['rspamd_ms']:.3f}; "
                      f"{p['dns_q']:.1f} DNS queries/message), "
                      f"peak PSS {p['pss_mib']:.1f} MiB, dot-to-250 p50 {p['p50_ms']:.2f} ms "
                      f"p99 {p['p99_ms']:.2f} ms", flush=True)
                print("    CPU ms/message by process (live ones; exited ones are in "
                      "their parent's): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(
                          by_name.items(), key=lambda kv: -kv[1]) if v >= 0.01), flush=True)
                if r == 0:
                    print("    " + "\n    ".join(shown), flush=True)
                if isinstance(s, Pf):
                    s.pf.settle()
                time.sleep(0.5)
    finally:
        for s in started:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - a benchmark cleans up what it can
                print(f"stopping {s.name}: {e}", file=sys.stderr)
        st.stop()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="each workload briefly (CI)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", choices=("load", "idle", "e2e", "stack"),
                    help="one part only: load (workloads 1, 2, 4), idle (6), e2e (5), stack (3)")
    ap.add_argument("--stack-lean", action="store_true",
                    help="workload 3: rspamd skips SPF/DKIM/DMARC for mxd's mail (stack.py)")
    ap.add_argument("--rspamd-workers", type=int, default=1,
                    help="workload 3: rspamd proxy (scanning) workers, for both servers")
    ap.add_argument("--ecdsa", action="store_true",
                    help="a P-256 ECDSA server certificate for every server (RSA 2048 if not)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("peers_bench.py: run as root (Postfix, unshare)")
    rounds = 1 if args.quick else args.rounds
    # messages per point: (mxd and smtp-sink, the peers)
    sizes = {"plain": (3000, 1000), "tls": (1000, 500), "10mb": (40, 30),
             "e2e-4k": (2000, 1000), "e2e-100k": (1000, 500),
             "stack": (1000, 500, 500)}  # (mxd, Postfix, the warm-up of each)
    if args.quick:
        sizes = {"plain": (200, 100), "tls": (100, 50), "10mb": (10, 10),
                 "e2e-4k": (100, 100), "e2e-100k": (50, 50), "stack": (50, 30, 50)}
    tmp = tempfile.mkdtemp(prefix="mxd-bench-peers-")
    # removed at exit (every server is stopped by then); BENCH_KEEP=1 keeps it
    if not os.environ.get("BENCH_KEEP"):
        atexit.register(shutil.rmtree, tmp, True)
    os.chmod(tmp, 0o755)
    pki = tlsutil.make_pki(os.path.join(tmp, "pki"), key="ecdsa" if args.ecdsa else "rsa")
    print(f"server certificate: {'ECDSA P-256' if args.ecdsa else 'RSA 2048'}, every server",
          flush=True)
    for f in os.listdir(pki.dir):  # OpenSMTPD refuses a key others may read
        os.chmod(os.path.join(pki.dir, f), 0o600 if f.endswith(".key") else 0o644)
    first = args.only in (None, "load", "idle")  # the servers of workloads 1, 2, 4, 6
    servers = []
    for cls in (Mxd, Pf, Sink) if first else ():
        servers.append(cls(tmp, pki))
    for cls, kw in ((peers.Exim, {}), (peers.OpenSMTPD, {"preload": BACKLOG})):
        if not first:
            break
        try:
            servers.append(cls(tmp, free_port(), HELD, hold=True, tls=(pki.cert, pki.key), **kw))
        except Exception as e:  # noqa: BLE001 - a peer that cannot be had is said so
            print(f"{cls.name}: cannot be set up: {e}", flush=True)
    started = []
    failed = []  # of the servers this machine must have: the run fails
    res = {}
    work = []
    try:
        if not first:
            raise _Skip
        start_all(servers, started, failed, "")
        print("durability as configured: " + "; ".join(f"{s.name}: {s.durability}"
                                                       for s in started), flush=True)
        work = [("plain", 50, 4096, False), ("tls", 50, 4096, True),
                ("10mb", 10, 10 * 1024 * 1024, False)]
        for r in range(rounds if args.only in (None, "load") else 0):
            for wname, sessions, size, tls in work:
                for s in started:
                    if tls and s.name == "smtp-sink":
                        continue
                    n = sizes[wname][0 if s.name in ("mxd", "smtp-sink") else 1]
                    quiesce([x.pid for x in started])
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
        idle = [] if args.only not in (None, "idle") else [s for s in started
                                                             if s.name != "smtp-sink"]
        if idle:
            print("\nidle sessions (plain), PSS of the server's processes:")
        for s in idle:
            n = idle_n if s.name in ("mxd", "opensmtpd") else min(idle_n, 250)
            n = min(n, idle_limit(s))
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
        tls_n = 200 if args.quick else 10000
        if idle:
            print("\nidle sessions after STARTTLS (TLS 1.3), PSS of the server's processes:")
        for s in idle:
            n = tls_n if s.name in ("mxd", "opensmtpd") else min(tls_n, 250)
            n = min(n, idle_limit(s))
            try:
                if isinstance(s, Pf):  # its smtpd processes of the plain idle sessions
                    s.stop()           # linger (max_idle) and would be reused
                    s.start()
                base, with_idle, secs = idle_tls(s, n)
            except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                print(f"  {s.name}: failed: {e}")
                failed.append(f"idle-tls {s.name}")
                continue
            each = (with_idle - base) / n
            print(f"  {s.name:10} {base / 1024:7.1f} MiB, with {n:,} idle TLS "
                  f"{with_idle / 1024:7.1f} MiB: {each:,.1f} KiB each; for {tls_n:,}: "
                  f"{(base + each * tls_n) / 1024:,.0f} MiB ({n:,} opened in {secs:.1f} s)",
                  flush=True)
    except _Skip:  # --only stack|e2e
        pass
    finally:
        for s in started:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - a benchmark cleans up what it can
                print(f"stopping {s.name}: {e}", file=sys.stderr)
    if args.only in (None, "e2e"):
        print("\nworkload 5, end to end into Dovecot (second instances):", flush=True)
        try:
            res.update(run_e2e(tmp, pki, rounds, sizes, failed))
        except Exception as e:  # noqa: BLE001 - Dovecot failed: so did mxd's workload
            print(f"e2e: failed: {e}", flush=True)
            failed.append("e2e mxd")
    if args.only in (None, "stack"):
        print("\nworkload 3: STARTTLS + screening + SPF + DKIM + DMARC + rspamd, held"
              f"{' (rspamd lean for mxd)' if args.stack_lean else ''}, "
              f"{args.rspamd_workers} rspamd worker(s):", flush=True)
        try:
            res.update(run_stack(tmp, pki, rounds, sizes, failed, lean=args.stack_lean,
                                 rspamd_workers=args.rspamd_workers))
        except Exception as e:  # noqa: BLE001 - the DNS or rspamd failed: mxd's workload too
            print(f"stack: failed: {e}", flush=True)
            failed.append("stack mxd")
    print(f"\nmedians of {rounds} round(s): messages/s / CPU ms per message / peak PSS MiB"
          " / p50 ms / p99 ms (e2e: delivered/s, the server's CPU without Dovecot's)")
    names = ["mxd"] + [n for n in dict.fromkeys(k[1] for k in res) if n != "mxd"]
    for wname in [w[0] for w in work] + ["e2e-4k", "e2e-100k", "stack"]:
        for name in names:
            v = res.get((wname, name))
            if not v:
                continue
            m = {k: statistics.median(x[k] for x in v) for k in v[0]}
            mx = res.get((wname, "mxd"))
            ratio = ""
            if mx and name != "mxd":
                ratio = (f"  mxd/{name} "
                         f"{statistics.median(x['rate'] for x in mx) / m['rate']:.2f}x")
            print(f"  {wname:8} {name:10} {m['rate']:9,.1f}/s {m['cpu_ms']:8.3f} "
                  f"{m['pss_mib']:7.1f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f}{ratio}"
                  + (f"  rspamd {m['rspamd_ms']:.3f} ms/msg" if "rspamd_ms" in m else ""))
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
