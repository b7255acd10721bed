#!/usr/bin/env python3
"""Screening's cost (issue 16): a benchmark, not a test. Build with
optimisation, then:

    MXD=BUILD/src/mxd MXCTL=BUILD/src/mxctl python3 tests/bench/screening.py [-n N] [-r R]

One mxd on 127.0.0.1 under a temp dir per run, a backup domain whose
primary is down (messages are held, nothing is delivered), [auth] off (the
subject is screening), the project's scripted name server (authdns.py)
serving two blocklists, bl1.test (weight 2) and bl2.test (weight 1),
dnsbl_threshold 2. Prints, each the median of R runs with a fresh mxd:

1. held accept, smtp-source, 50 sessions, 4 KiB, from 127.0.0.1: screening
   off, then with the two DNSBLs (the client is cached: its answers are in
   the resolver's cache, or its pass in the screening's memory, after the
   first connection). The issue asks for >= 90% of the rate without.
2. new clients per second through DNSBL screening: 50 at a time, each a
   new address (10.0.0.0/8, sent as a PROXY v2 header from 127.0.0.1 to a
   listener marked proxy: the addresses are data, the traffic stays on
   loopback), greeting then QUIT; every 10th address is listed on bl1.test
   and refused at connect. With mxd's resolver latency (its histogram) and
   the same run with screening off for reference. The name server here is
   a private dnsmasq (tests/integration/primary.py's, records with TTL 0:
   every new client is a new name anyway), since the scripted Python one
   answers only about 1,500 queries a second and would be what is
   measured.
3. the name server silent (a socket that never answers): held accept from a
   client in trusted_networks (no lookups) against 1's rate without
   screening (the issue asks for >= 90%); and the wait of one client that
   is not trusted, from connect to its greeting (the DNSBL check's budget,
   dnsbl_timeout).
"""

import argparse
import atexit
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import compare  # noqa: E402
import mxdtest  # noqa: E402
from authdns import AuthDns, silent_port  # noqa: E402
from primary import Dnsmasq  # noqa: E402

SESSIONS = 50
DOMAIN = "held.test"
SITES = "bl1.test*2, bl2.test*1"


def smtp_source(port, count):
    """Messages/s (one recipient for all)."""
    return count / compare.smtp_source(port, SESSIONS, count, 4096, f"user@{DOMAIN}",
                                       spread=False)


def client_addr(i):
    i += 1
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def listed(i):
    return i % 10 == 0


def listed_names(n):
    """bl1.test lists every 10th client (127.0.0.2, weight 2); the others
    are NXDOMAIN on both lists."""
    return [".".join(reversed(client_addr(i).split("."))) + ".bl1.test"
            for i in range(n) if listed(i)]


def start_mxd(tmp, name, dns, screening, trusted=None):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    pport = mxdtest.free_port()
    mport = mxdtest.free_port()
    port = mxdtest.free_port()
    server = {"listen": f"127.0.0.1:{port}, 127.0.0.1:{pport} proxy",
              "proxy_networks": "127.0.0.1",
              "max_connections_per_ip": "2000", "max_connections": "4000",
              "metrics_listen": f"127.0.0.1:{mport}", "dns_servers": dns}
    if screening:
        server.update({"dnsbl_sites": SITES, "dnsbl_threshold": "2"})
    if trusted:
        server["trusted_networks"] = trusted
    m = mxdtest.Mxd(d, port=port, server=server,
                    domains={DOMAIN: {"mode": "backup", "primary": "127.0.0.1:1",
                                      "recipients": "any"}},
                    extra="[queue]\nretry_min = 1h\nretry_max = 2h\n")
    m.pport, m.mport = pport, mport
    m.start()
    return m


def metrics(m):
    with urllib.request.urlopen(f"http://127.0.0.1:{m.mport}/metrics", timeout=10) as r:
        return r.read().decode()


def dns_latency(text):
    """(queries, mean ms, p50 bucket bound, p99 bucket bound) of
    mxd_dns_lookup_seconds."""
    buckets = [(float(le), float(v)) for le, v in re.findall(
        r'^mxd_dns_lookup_seconds_bucket\{le="([^"+]+)"\} (\S+)$', text, re.M)]
    count = float(re.search(r"^mxd_dns_lookup_seconds_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^mxd_dns_lookup_seconds_sum (\S+)$", text, re.M).group(1))

    def q(p):
        for le, v in buckets:
            if v >= p * count:
                return le * 1000
        return float("inf")

    return count, (total / count * 1000 if count else 0), q(0.5), q(0.99)


async def _one_client(port, i, codes):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(mxdtest.proxy_header(client_addr(i)))
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError(f"closed before the greeting ({client_addr(i)})")
        if line[3:4] != b"-":
            break
    code = int(line[:3])
    codes[code] = codes.get(code, 0) + 1
    if code == 220:
        w.write(b"QUIT\r\n")
        await r.readline()
    w.close()
    try:
        await w.wait_closed()
    except ConnectionError:
        pass


async def _new_clients(port, n):
    ids = iter(range(n))
    codes = {}

    async def worker():
        for i in ids:
            await _one_client(port, i, codes)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(SESSIONS)))
    return n / (time.monotonic() - t0), codes


def new_clients(port, n):
    return asyncio.run(_new_clients(port, n))


def greeting_wait(port):
    """Seconds from connect to the greeting's final line, for one client
    (10.255.255.254, never listed) through the proxy listener."""
    async def go():
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(mxdtest.proxy_header("10.255.255.254"))
        while True:
            line = await r.readline()
            if not line or line[3:4] != b"-":
                break
        dt = time.monotonic() - t0
        w.close()
        return dt, line[:3].decode()
    return asyncio.run(go())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5000, help="messages per held-accept run")
    ap.add_argument("-c", type=int, default=3000, help="new clients per run")
    ap.add_argument("-r", type=int, default=3, help="repetitions (a fresh mxd each)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mxd-bench-screen-")
    # removed at exit (every server is stopped by then); BENCH_KEEP=1 keeps it
    if not os.environ.get("BENCH_KEEP"):
        atexit.register(shutil.rmtree, tmp, True)
    res = {k: [] for k in ("off", "dnsbl", "new_off", "new_dnsbl", "silent_trusted")}
    lat, codes, waits = [], {}, []
    # 1: the scripted server, answers cached (TTL and negative TTL 1 h)
    dns = AuthDns({}, ttl=3600, neg_ttl=3600)
    dns.start()
    fast = Dnsmasq(tmp, hosts=[(name, "127.0.0.2") for name in listed_names(args.c)])
    fast.start()
    silent = silent_port()
    try:
        for rep in range(args.r):
            # 1. held accept, screening off and on, alternating which goes first
            order = ["off", "dnsbl"] if rep % 2 == 0 else ["dnsbl", "off"]
            for key in order:
                m = start_mxd(tmp, f"{key}{rep}", dns.server, key == "dnsbl")
                try:
                    smtp_source(m.port, 200)  # warm-up (and the client's first lookups)
                    res[key].append(smtp_source(m.port, args.n))
                finally:
                    m.stop()
            # 2. new clients, screening off and on
            for key in ("new_off", "new_dnsbl"):
                m = start_mxd(tmp, f"{key}{rep}", fast.server, key == "new_dnsbl")
                try:
                    rate, got = new_clients(m.pport, args.c)
                    res[key].append(rate)
                    if key == "new_dnsbl":
                        lat.append(dns_latency(metrics(m)))
                        for c, k in got.items():
                            codes[c] = codes.get(c, 0) + k
                finally:
                    m.stop()
            # 3. the name server silent
            m = start_mxd(tmp, f"silent{rep}", f"127.0.0.1:{silent.getsockname()[1]}", True,
                          trusted="127.0.0.1")
            try:
                smtp_source(m.port, 200)
                res["silent_trusted"].append(smtp_source(m.port, args.n))
                waits.append(greeting_wait(m.pport))
            finally:
                m.stop()
    finally:
        dns.stop()
        fast.stop()
        silent.close()
        if not os.environ.get("MXD_KEEP_TMP"):
            subprocess.run(["rm", "-rf", tmp], check=False)
    med = statistics.median

    def runs(k):
        return ", ".join(f"{x:.0f}" for x in res[k])

    base = med(res["off"])
    print(f"held accept, {SESSIONS} sessions, 4 KiB, {args.n} messages a run, "
          f"median of {args.r} (a fresh mxd each)")
    print(f"1a. screening off                       {base:7.0f} msg/s   runs: {runs('off')}")
    d = med(res["dnsbl"])
    print(f"1b. two DNSBLs, cached client           {d:7.0f} msg/s ({d / base:4.0%})   "
          f"runs: {runs('dnsbl')}")
    print(f"new clients, {SESSIONS} at a time, {args.c} a run (1 in 10 listed), "
          f"greeting then QUIT")
    no = med(res["new_off"])
    nd = med(res["new_dnsbl"])
    print(f"2a. screening off                       {no:7.0f} clients/s   runs: {runs('new_off')}")
    print(f"2b. two DNSBLs                          {nd:7.0f} clients/s ({nd / no:4.0%})   "
          f"runs: {runs('new_dnsbl')}; replies {dict(sorted(codes.items()))}")
    print(f"    mxd's DNS lookups: {med(x[0] for x in lat):.0f} a run, mean "
          f"{med(x[1] for x in lat):.2f} ms, p50 <= {med(x[2] for x in lat):g} ms, "
          f"p99 <= {med(x[3] for x in lat):g} ms")
    s = med(res["silent_trusted"])
    print(f"3a. name server silent, trusted client  {s:7.0f} msg/s ({s / base:4.0%} of 1a)   "
          f"runs: {runs('silent_trusted')}")
    print(f"3b. name server silent, a new client waits {med(w[0] for w in waits):.2f} s "
          f"for its greeting ({', '.join(w[1] for w in waits)})")


if __name__ == "__main__":
    main()
