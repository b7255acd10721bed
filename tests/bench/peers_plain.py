"""Workload 1 of peers_bench.py alone (held accept, plain SMTP, c=50,
4 KiB, one message per session): mxd against smtp-sink, the same classes
and point(), ROUNDS rounds (default 5) alternating the servers, N
messages a point (default 3000). MXD_BASE (optional): a second mxd
binary (e.g. a build of main) run in the same rounds, to compare builds.
  env MXD=... SMTP_LOAD=... [MXD_BASE=...] /usr/bin/python3 \
      tests/bench/peers_plain.py [ROUNDS [N]]"""
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_bench as pb  # noqa: E402

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
tmp = tempfile.mkdtemp(prefix="mxd-bench-plain-")
os.chmod(tmp, 0o755)
pki = pb.tlsutil.make_pki(os.path.join(tmp, "pki"))
servers = [pb.Mxd(tmp, pki), pb.Sink(tmp, pki)]
base = os.environ.get("MXD_BASE")
if base:
    b = pb.Mxd(os.path.join(tmp, "base"), pki)
    b.name = "mxd-base"
    servers.append(b)
started, failed = [], []
for s in servers:
    if s.name == "mxd-base":
        mine = os.environ["MXD"]
        os.environ["MXD"] = base
        try:
            pb.start_all([s], started, failed, "")
        finally:
            os.environ["MXD"] = mine
    else:
        pb.start_all([s], started, failed, "")


res = {}
try:
    for r in range(rounds):
        for s in (started if r % 2 == 0 else started[::-1]):
            pb.quiesce([x.pid for x in started])
            p = pb.point(s, 50, n, 4096, False)
            res.setdefault(s.name, []).append(p)
            print(f"round {r + 1} plain {s.name}: {n} messages, {p['rate']:,.1f}/s, CPU "
                  f"{p['cpu_ms']:.3f} ms/message, peak PSS {p['pss_mib']:.1f} MiB, p50 "
                  f"{p['p50_ms']:.2f} ms p99 {p['p99_ms']:.2f} ms", flush=True)
            time.sleep(0.5)
finally:
    for s in started:
        s.stop()
    shutil.rmtree(tmp, ignore_errors=True)
sink = res.get("smtp-sink")
print(f"medians of {rounds} rounds: msg/s, CPU ms/message; ratio to smtp-sink "
      "(median of the per-round ratios)")
for name, v in res.items():
    rate = statistics.median(x["rate"] for x in v)
    cpu = statistics.median(x["cpu_ms"] for x in v)
    ratio = ""
    if sink and name != "smtp-sink":
        ratio = "  %.2fx" % statistics.median(a["rate"] / b["rate"] for a, b in zip(v, sink))
    print(f"  {name:10} {rate:9,.1f}/s {cpu:.3f} ms{ratio}")
