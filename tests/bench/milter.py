#!/usr/bin/env python3
"""Content filters (issue 17): the held-accept rate of mxd with no filter,
one no-op libmilter filter and rspamd, and Postfix with the same rspamd
milter, side by side in one run (a benchmark, not a test: it fails only
when something does not work).

    env MXD=BUILD/src/mxd MXD_MILTER_FILTER=BUILD/tests/milter_filter \\
        /usr/bin/python3 tests/bench/milter.py [--n 4000] [--rspamd-n 1000] [--rounds 2]

Run as root (Postfix). Everything is private on 127.0.0.1 under one temp
dir. Delivery is held (mxd: a backup domain whose primary is down;
Postfix: defer_transports), so the rate is what the MTA accepts and
commits, with 50 smtp-source sessions and 4 KiB messages. Rounds
alternate the MTAs (this VM's speed drifts). CPU per message is read from
/proc/PID/stat (utime + stime) of the MTA's processes, and of the
filter's separately: mxd's milter dialogue costs the difference between
mxd with the no-op filter and mxd without one.
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
from dovecot import free_port, proc_cpu  # noqa: E402
from compare import smtp_source, subdir, tree, tree_cpu  # noqa: E402
from postfix import Postfix  # noqa: E402
from test_milter import RspamdTest, wait_port  # noqa: E402

HELD = "held.test"
FILTER = os.environ.get("MXD_MILTER_FILTER") or os.path.join(
    os.path.dirname(mxdtest.mxd_path()), "..", "tests", "milter_filter")


def cpu_of(pid):
    """CPU seconds of a process tree (threads included)."""
    return sum(proc_cpu(p, children=True) for p in tree(pid)) if pid else 0.0


class Mxd:
    def __init__(self, tmpdir, name, milters=None, reuse=False):
        server = {"max_connections": "12000", "max_connections_per_ip": "12000"}
        if milters:
            server.update({"milters": milters, "milter_content_timeout": "60s",
                           "milter_command_timeout": "60s",
                           "milter_reuse": "on" if reuse else "off"})
        domains = {HELD: {"mode": "backup", "primary": "127.0.0.1:1", "recipients": "any"}}
        self.name = name
        self.mxd = mxdtest.Mxd(subdir(tmpdir, name), server=server, domains=domains,
                               extra="[queue]\nretry_min = 1h\nretry_max = 2h\n")

    def start(self):
        self.mxd.start()

    def stop(self):
        if self.mxd.running():
            self.mxd.stop()

    port = property(lambda self: self.mxd.port)
    pid = property(lambda self: self.mxd.pid)

    def settle(self):
        pass


class Pf:
    def __init__(self, tmpdir, name, extra=""):
        self.name = name
        self.pf = Postfix(subdir(tmpdir, name), free_port(), HELD, "/nonexistent/lmtp",
                          hold=True, extra=extra)

    def start(self):
        self.pf.start()

    def stop(self):
        self.pf.stop()

    port = property(lambda self: self.pf.port)
    pid = property(lambda self: self.pf.pid)

    def settle(self):
        self.pf.settle()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000, help="messages per point (no filter, no-op)")
    ap.add_argument("--rspamd-n", type=int, default=1000, help="messages per point with rspamd")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mxd-bench-milter-")
    os.chmod(tmp, 0o755)
    procs = []
    mtas = []
    try:
        fport = free_port()
        # continue everywhere (the end of message too): libmilter then
        # takes the QUIT_NC of reuse = on
        flt = subprocess.Popen([FILTER, "-p", f"inet:{fport}@127.0.0.1", "-m", "continue"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(flt)
        if not wait_port(fport):
            raise RuntimeError("milter_filter did not start")
        rport = free_port()
        rspamd = RspamdTest.start_rspamd(tmp, rport)
        procs.append(rspamd)
        mtas = [Mxd(tmp, "mxd"), Mxd(tmp, "mxd-noop", f"inet:127.0.0.1:{fport}"),
                Mxd(tmp, "mxd-noop-reuse", f"inet:127.0.0.1:{fport}", reuse=True),
                Mxd(tmp, "mxd-rspamd", f"inet:127.0.0.1:{rport}"),
                Mxd(tmp, "mxd-rspamd-reuse", f"inet:127.0.0.1:{rport}", reuse=True),
                Pf(tmp, "postfix"),
                Pf(tmp, "postfix-rspamd", f"smtpd_milters = inet:127.0.0.1:{rport}\n"
                   "milter_default_action = tempfail\nmilter_protocol = 6\n")]
        for m in mtas:
            m.start()
        rate = {m.name: [] for m in mtas}
        cpu = {m.name: [] for m in mtas}
        fcpu = {m.name: [] for m in mtas}
        for r in range(args.rounds):
            for m in mtas:
                n = args.rspamd_n if "rspamd" in m.name or m.name == "postfix" else args.n
                fpid = flt.pid if "noop" in m.name else rspamd.pid if "rspamd" in m.name \
                    else None
                c0, f0 = tree_cpu(m.pid), cpu_of(fpid)
                dt = smtp_source(m.port, 50, n, 4096, f"user@{HELD}", spread=False)
                rate[m.name].append(n / dt)
                cpu[m.name].append((tree_cpu(m.pid) - c0) / n * 1000)
                fcpu[m.name].append((cpu_of(fpid) - f0) / n * 1000)
                m.settle()
                print(f"round {r + 1} {m.name}: {n} messages, {n / dt:,.0f}/s, CPU "
                      f"{cpu[m.name][-1]:.3f} ms/message, filter CPU "
                      f"{fcpu[m.name][-1]:.3f} ms/message", flush=True)
        med = {k: statistics.median(v) for k, v in rate.items()}
        mc = {k: statistics.median(v) for k, v in cpu.items()}
        mf = {k: statistics.median(v) for k, v in fcpu.items()}
        print(f"\nmedian of {args.rounds} rounds, delivery held, 50 sessions, 4 KiB:")
        for k in rate:
            print(f"  {k:15} {med[k]:7,.0f}/s  MTA CPU {mc[k]:.3f} ms/message"
                  + (f"  filter CPU {mf[k]:.3f} ms/message" if mf[k] > 0 else ""))
        print(f"mxd's milter dialogue (no-op filter minus none): "
              f"{mc['mxd-noop'] - mc['mxd']:.3f} ms CPU/message, "
              f"{mc['mxd-noop-reuse'] - mc['mxd']:.3f} with reuse; with rspamd "
              f"{mc['mxd-rspamd'] - mc['mxd']:.3f}, {mc['mxd-rspamd-reuse'] - mc['mxd']:.3f} "
              f"with reuse; rate "
              f"{med['mxd-noop'] / med['mxd'] * 100:.0f}% of no filter; with rspamd "
              f"{med['mxd-rspamd'] / med['mxd'] * 100:.0f}%; mxd+rspamd "
              f"{med['mxd-rspamd'] / med['postfix-rspamd']:.1f}x Postfix+rspamd")
    finally:
        for m in mtas:
            try:
                m.stop()
            except Exception as e:  # noqa: BLE001 - a benchmark cleans up what it can
                print(f"stopping {m.name}: {e}", file=sys.stderr)
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        subprocess.run(["rm", "-rf", tmp], check=False)


if __name__ == "__main__":
    time.tzset()
    main()
