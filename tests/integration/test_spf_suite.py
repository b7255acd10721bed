"""The openspf.org SPF conformance suites through mxd's SPF module
(src/check/spf.c: libspf2 behind mxd's DNS layer and record check,
src/check/spf_record.c), each result cross-checked against pyspf.

- RFC 7208 (release 2014.04, ../shared/testdata/spf): every test must
  give a result the suite allows, unless listed in KNOWN_DEVIATIONS.
- RFC 4408 (release 2009.10, from Debian's python3-spf documentation):
  mxd implements RFC 7208, which changed some of RFC 4408's answers; the
  tests whose RFC 4408 answer mxd does not give are listed in
  RFC4408_CHANGED with the RFC 7208 rule, and only they may differ.
- pyspf (Debian python3-spf, the reference implementation behind
  policyd-spf) runs the same tests on the same zones, in this process
  (its DNS lookups answered from the zone); where it and mxd give
  different results, PYSPF_DIFFERS says which test and why.

Each scenario's zone is served by a scripted DNS server (authdns.py); the
spf_probe tool runs mxd's SPF check for every test of the scenario. A
listed test that now agrees fails too, so the lists stay true. Prints
"spf rfc7208: N/M" and "spf rfc4408: N/M"."""

import gzip
import os
import socket
import subprocess
import sys
import threading
import time

import spf  # python3-spf
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from authdns import AuthDns  # noqa: E402

ROOT = os.environ.get("MXD_SOURCE_ROOT", ".")
SUITES = {
    "rfc7208": [os.environ.get("MXD_SPF_SUITE"),
                os.path.join(ROOT, "..", "shared", "testdata", "spf", "rfc7208-tests.yml"),
                "/work/shared/testdata/spf/rfc7208-tests.yml",
                "/usr/share/doc/python3-spf/rfc7208-tests.yml.gz"],
    "rfc4408": [os.environ.get("MXD_SPF_SUITE_4408"),
                "/usr/share/doc/python3-spf/rfc4408-tests.yml.gz",
                os.path.join(ROOT, "..", "shared", "testdata", "spf", "rfc4408-tests.yml")],
}

# RFC 7208 test name -> why mxd answers differently: none. (Issue 20 took
# the 57 it had away: libspf2's lax syntax, /0 prefixes, IPv4-mapped
# clients, redirect= beside all, PTR names, through spf_record.c and the DNS
# layer; null-text, an empty TXT record libunbound took for SERVFAIL, in
# resolver.c.)
KNOWN_DEVIATIONS = {}

# RFC 4408 test name -> the RFC 7208 rule that changed RFC 4408's answer:
# none (the RFC 4408 suite allows RFC 7208's answers where they changed).
RFC4408_CHANGED = {}

# (suite, test) -> why mxd and pyspf differ: none.
PYSPF_DIFFERS = {}


def suite_path(name):
    for p in SUITES[name]:
        if p and os.path.exists(p):
            return p
    raise AssertionError(f"{name} suite not found (set MXD_SPF_SUITE / MXD_SPF_SUITE_4408)")


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [sc for sc in yaml.safe_load_all(f) if sc]


def zone_of(zonedata):
    zone = {}
    for name, recs in (zonedata or {}).items():
        out = []
        for rec in recs or []:
            if rec == "TIMEOUT":
                out.append(("TIMEOUT", None))
                continue
            (rtype, value), = rec.items()
            if value == "NONE":
                # the suite's way of saying "no record of this type" (so a
                # TIMEOUT applies to it and no SPF record is copied to TXT)
                out.append((rtype + "-NONE", None))
                continue
            out.append((rtype, value))
        # The suite's drivers serve type SPF records as TXT when a name has
        # no TXT of its own (the file's header says so); with TIMEOUT the
        # TXT query times out.
        if not any(t in ("TXT", "TXT-NONE", "TIMEOUT") for t, _ in out):
            out += [("TXT", v) for t, v in out if t == "SPF"]
        zone[name.lower()] = out
    return zone


def pyspf_lookup(zone):
    """spf.DNSLookup answering from zone as authdns.py serves it: a name's
    TIMEOUT applies to the types it has no records of, CNAMEs are followed."""
    def lookup(name, qtype, strict=True, timeout=None, level=0):
        name = name.rstrip(".").lower()
        recs = zone.get(name)
        if recs is None:
            return []
        types = {t for t, _ in recs if not t.endswith("-NONE")}
        if qtype not in types and "CNAME" not in types and ("TIMEOUT", None) in recs:
            raise spf.TempError("DNS timeout")
        out = []
        for t, v in recs:
            if t == "CNAME" and qtype != "CNAME":
                out.append(((name, t), v))
                if level < 8:
                    out += lookup(v, qtype, strict, timeout, level + 1)
            elif t == qtype:
                if t in ("TXT", "SPF"):
                    v = tuple(s.encode("utf-8") for s in (v if isinstance(v, list) else [v]))
                elif t == "AAAA":
                    v = socket.inet_pton(socket.AF_INET6, v)
                elif t == "MX":
                    v = tuple(v)
                out.append(((name, t), v))
        return out
    return lookup


def pyspf_result(zone, t):
    spf.DNSLookup = pyspf_lookup(zone)
    q = spf.query(i=t["host"], s=t.get("mailfrom", ""), h=t.get("helo", ""), strict=True)
    res = q.check()[0]
    return {"unknown": "permerror", "error": "temperror"}.get(res, res)


def run_suite(name, probe, out):
    """Runs every test of one suite through mxd, with a name server of its
    own: out[name] = {test: (want, mxd's result, comment, zone, test)}."""
    results = {}
    dns = AuthDns().start()
    # A short query budget keeps the TIMEOUT scenarios quick: a silent name
    # gives up when it runs out (temperror, as at RESOLVER_TIMEOUT_MS).
    proc = subprocess.Popen([probe, dns.server, "1500"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        for sc in load(suite_path(name)):
            zone = zone_of(sc.get("zonedata"))
            dns.zone = zone
            for test, t in sc["tests"].items():
                want = t["result"] if isinstance(t["result"], list) else [t["result"]]
                proc.stdin.write(f"{t['host']}\t{t.get('helo', '')}\t{t.get('mailfrom', '')}\n")
                proc.stdin.flush()
                got = proc.stdout.readline().rstrip("\n").split("\t")
                results[test] = (want, got[0], got[4], zone, t)
        proc.stdin.close()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        dns.stop()
    out[name] = results


def report(name, results, listed):
    """Prints the count and the tests outside the suite's answers; returns
    the problems: unlisted failures, listed tests that pass."""
    bad = []
    ok = sum(r[1] in r[0] for r in results.values())
    print(f"spf {name}: {ok}/{len(results)}")
    for test, (want, got, why, _, _) in sorted(results.items()):
        if got not in want and test not in listed:
            bad.append(f"{name} {test}: want {want} got {got} ({why})")
        if got not in want and test in listed:
            print(f"  {test}: want {want} got {got}: {listed[test]}")
        if got in want and test in listed:
            bad.append(f"{name} {test}: now passes (remove it from the list)")
    return bad


def main():
    probe = os.environ.get("MXD_SPF_PROBE")
    assert probe and os.access(probe, os.X_OK), "MXD_SPF_PROBE not set (run through meson)"
    start = time.monotonic()
    # the suites at once: most of their time is waiting for silent names
    runs = {}
    threads = [threading.Thread(target=run_suite, args=(name, probe, runs)) for name in SUITES]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert set(runs) == set(SUITES), "a suite did not run"
    bad = report("rfc7208", runs["rfc7208"], KNOWN_DEVIATIONS)
    bad += report("rfc4408", runs["rfc4408"], RFC4408_CHANGED)
    agree = total = 0
    for name, results in runs.items():
        for test, (want, got, why, zone, t) in sorted(results.items()):
            py = pyspf_result(zone, t)
            total += 1
            agree += got == py
            if got != py and (name, test) not in PYSPF_DIFFERS:
                bad.append(f"pyspf {name} {test}: mxd {got} ({why}), pyspf {py}, want {want}")
            if got == py and (name, test) in PYSPF_DIFFERS:
                bad.append(f"pyspf {name} {test}: now agrees (remove it from PYSPF_DIFFERS)")
    print(f"spf pyspf: mxd and pyspf agree on {agree}/{total}; listed differences: "
          f"{len(PYSPF_DIFFERS)}")
    for (name, test), why in sorted(PYSPF_DIFFERS.items()):
        print(f"  {name} {test}: {why}")
    print(f"time: {time.monotonic() - start:.1f} s")
    for line in bad:
        print("UNEXPECTED", line)
    assert len(runs["rfc7208"]) == 203, "the RFC 7208 suite did not load"
    assert len(runs["rfc4408"]) > 150, "the RFC 4408 suite did not load"
    assert not bad
    print("ok")


if __name__ == "__main__":
    main()
