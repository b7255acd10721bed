"""Workload 4 of peers_bench.py alone (10 MB at c=10): mxd, Postfix and
OpenSMTPD, the same classes and point(), ROUNDS rounds (default 2):
  env MXD=... SMTP_LOAD=... LISTEN_BACKLOG=... /usr/bin/python3 \
      tests/bench/peers_large.py [ROUNDS]
Run as root (Postfix, unshare), like peers_bench.py."""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_bench as pb  # noqa: E402

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
tmp = tempfile.mkdtemp(prefix="mxd-bench-large-")
os.chmod(tmp, 0o755)
pki = pb.tlsutil.make_pki(os.path.join(tmp, "pki"))
for f in os.listdir(pki.dir):
    os.chmod(os.path.join(pki.dir, f), 0o600 if f.endswith(".key") else 0o644)
servers = [pb.Mxd(tmp, pki), pb.Pf(tmp, pki)]
try:
    servers.append(pb.peers.OpenSMTPD(tmp, pb.free_port(), pb.HELD, hold=True,
                                      tls=(pki.cert, pki.key), preload=pb.BACKLOG))
except Exception as e:  # noqa: BLE001
    print("opensmtpd: cannot be set up:", e)
started, failed = [], []
pb.start_all(servers, started, failed, "")
try:
    for r in range(rounds):
        for s in started:
            n = 40 if s.name == "mxd" else 30
            p = pb.point(s, 10, n, 10 * 1024 * 1024, False)
            print(f"round {r + 1} 10mb {s.name}: {n} messages, {p['rate']:,.1f}/s, CPU "
                  f"{p['cpu_ms']:.1f} ms/message, peak PSS {p['pss_mib']:.1f} MiB, p50 "
                  f"{p['p50_ms']:.0f} ms p99 {p['p99_ms']:.0f} ms", flush=True)
            if isinstance(s, pb.Pf):
                s.pf.settle()
            time.sleep(0.5)
finally:
    for s in started:
        s.stop()
    shutil.rmtree(tmp, ignore_errors=True)
