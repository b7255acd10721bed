#!/usr/bin/env python3
"""exim_stack: Exim 4.96 on workload 3 of issue 22 (the realistic stack),
beside stack.py's mxd and Postfix: STARTTLS, SPF + DKIM + DMARC against
the scripted DNS of stack.Stack, two DNSBLs and the same rspamd, each
message held (queue_only) as in workloads 1 and 2.

Exim has no milter: it calls rspamd through its content-scanning interface
(`spamd_address = 127.0.0.1 PORT variant=rspamd`, rspamd's normal worker,
its HTTP protocol, and `spam = nobody:true` in the DATA ACL); rspamd's
verdict goes into an X-Spamd-Result header (action, score and symbols).
SPF (`spf =`, libspf2) is in Debian's exim4-daemon-heavy, not -light: that
package is unpacked privately into its own root (peers.unpack). DKIM is
Exim's own verification (acl_smtp_dkim, `${authresults}`). DMARC: Debian
builds no Exim with SUPPORT_DMARC ("Debian binary packages ... are not
built with DMARC support", exim4's changelog.Debian, 4.96-10), so the
DATA ACL evaluates it itself: the From domain's _dmarc TXT record (dnsdb),
SPF pass or a DKIM pass whose domain aligns (relaxed: the same last two
labels; no public suffix list), p=reject refused. Screening: `dnslists =
zen.bench.test : bl.bench.test` at RCPT (127.0.0.1 -> 1.0.0.127.<list>,
NXDOMAIN from the zone, cached by the resolver).

Exim's resolver (glibc, and libspf2's) reads /etc/resolv.conf, port 53
only, and Exim caches nothing between sessions (a process each): it gets
what a real Exim would have, a local caching resolver (DnsCache: dnsmasq
on port 53 of a free loopback address, forwarding to the scripted DNS),
named in a resolv.conf that exists only in Exim's mount namespace
(peers.py). Straight to the scripted DNS (one Python thread per query,
8 a message) its answers took 150 ms at the median and 1.4 s at p90
under load, and bounded Exim.

check_exim() raises unless a message in Exim's spool shows spf=pass,
dkim=pass and dmarc=pass in its Authentication-Results and rspamd's
verdict with R_SPF_ALLOW, R_DKIM_ALLOW and DMARC_POLICY_ALLOW.

Standalone (as root): starts the scripted DNS and rspamd (stack.Stack)
and this Exim, sends DKIM-signed messages over STARTTLS at 50 sessions,
prints msg/s and CPU ms/message, and checks:

    env MXD=build/src/mxd SMTP_LOAD=build/tests/smtp_load \\
        /usr/bin/python3 tests/bench/exim_stack.py [-n N] [-c SESSIONS]

(MXD: stack.py's rspamd helper, test_milter.py, wants it; mxd is not run.)
"""

import os
import re
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import peers  # noqa: E402

PACKAGES = ["exim4-daemon-heavy", "exim4-base", "libidn12"]  # libspf2-2, libmariadb3: deps.sh
LISTS = ("zen.bench.test", "bl.bench.test")
HOST = "exim.bench.invalid"


class DnsCache:
    """A caching resolver for Exim, as a real one would have (Exim caches
    lookups only inside each session's process): dnsmasq (dnsmasq-base) on
    port 53 of a free loopback address, forwarding to the scripted DNS
    (an AuthDns: its answers and negative answers carry a TTL of 300 s)."""

    def __init__(self, dns, logdir):
        self.dns = dns
        self.logdir = logdir
        self.proc = None
        self.addr = None

    def start(self):
        for i in range(2, 250):  # 127.0.53.i: one where nothing holds port 53
            addr = f"127.0.53.{i}"
            try:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((addr, 53))
            except OSError:
                continue
            self.addr = addr
            break
        else:
            raise RuntimeError("no loopback address with a free port 53")
        os.makedirs(self.logdir, exist_ok=True)
        log = open(os.path.join(self.logdir, "dnsmasq.log"), "ab")
        self.proc = subprocess.Popen(
            ["dnsmasq", "-k", "--port=53", f"--listen-address={self.addr}", "--bind-interfaces",
             "--no-resolv", "--no-hosts",
             f"--server={getattr(self.dns, 'host', '127.0.0.1')}#{self.dns.port}",
             "--cache-size=10000", "--dns-forward-max=1000", "--pid-file=", "-u", "nobody"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited with {self.proc.returncode}")
            try:
                socket.create_connection((self.addr, 53), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("dnsmasq does not listen")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def rspamd_normal_port(st):
    """The port of rspamd's normal worker (the one Exim's spam condition
    speaks to), read back from the override test_milter.start_rspamd wrote."""
    confdir = next(a[len("--var=LOCAL_CONFDIR="):] for a in st.rspamd.args
                   if a.startswith("--var=LOCAL_CONFDIR="))
    with open(os.path.join(confdir, "override.d", "worker-normal.inc"), encoding="utf-8") as f:
        return int(re.search(r":(\d+)\"", f.read()).group(1))


def _org(expr):
    """Exim expansion: the last two labels of a domain (relaxed alignment
    without a public suffix list)."""
    return r"${sg{${lc:" + expr + r"}}{\N^.*\.([^.]+\.[^.]+)$\N}{\$1}}"


# libspf2 passes every loopback client ("localhost is always allowed":
# SPF_request_query_mailfrom returns pass before any lookup, whatever the
# record says), and the bench's client is 127.0.0.1: without this shim
# (LD_PRELOAD; libspf2 calls it through its PLT) Exim's spf=pass would be
# checked nothing. mxd's own SPF layer does the same (src/check/spf.c).
SPF_SHIM = ("int SPF_request_is_loopback(const void *req);\n"
            "int SPF_request_is_loopback(const void *req) { (void)req; return 0; }\n")


def spf_shim(dirpath):
    """The shim built into dirpath (cc); its path."""
    src, so = os.path.join(dirpath, "spf_no_loopback.c"), os.path.join(dirpath,
                                                                        "spf_no_loopback.so")
    os.makedirs(dirpath, exist_ok=True)
    with open(src, "w", encoding="ascii") as f:
        f.write(SPF_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", so, src], check=True)
    return so


class EximStack:
    """What peers.Exim(stack=...) adds to its config; root: the unpacked
    exim4-daemon-heavy; nameserver: the resolver's address in its namespace;
    preload: the SPF shim."""

    def __init__(self, nameserver, rspamd_port, preload, lists=LISTS):
        self.root = peers.unpack(PACKAGES, "root-heavy")
        self.nameserver = nameserver
        self.preload = preload
        self.main = (f"spamd_address = 127.0.0.1 {rspamd_port} variant=rspamd\n"
                     "acl_smtp_dkim = acl_dkim\n"
                     "dns_retrans = 2s\ndns_retry = 2\n")
        # screening, then SPF once per recipient ($spf_result for the DATA ACL)
        self.rcpt = (f"  deny    message = $sender_host_address is listed in $dnslist_domain\n"
                     f"          dnslists = {' : '.join(lists)}\n"
                     "  warn    spf = pass : fail : softfail : neutral : none : permerror : "
                     "temperror\n"
                     "  deny    message = SPF: $sender_host_address not allowed for "
                     "$sender_address_domain\n"
                     "          condition = ${if eq{$spf_result}{fail}}\n")
        fdom = "$acl_m_from"
        aligned = (r"${if or{{and{{eq{$spf_result}{pass}}{eq{" + _org("$sender_address_domain")
                   + "}{" + _org(fdom) + r"}}}}{forany{$acl_m_dkim}{eq{" + _org("$item") + "}{"
                   + _org(fdom) + "}}}}{pass}{fail}}")
        self.data = (
            "  warn    set acl_m_from = ${lc:${domain:${address:$h_from:}}}\n"
            f"          set acl_m_dmarcrec = ${{lookup dnsdb{{defer_never,txt=_dmarc.{fdom}}}"
            "{$value}{}}\n"
            r"          set acl_m_dmarcp = ${if match{$acl_m_dmarcrec}{\N(?:^|;)\s*p=(\w+)\N}"
            r"{${lc:$1}}{none}}" "\n"
            r"          set acl_m_dmarc = ${if match{$acl_m_dmarcrec}{\N^v=DMARC1\N}{"
            + aligned + "}{none}}\n"
            "  deny    message = DMARC policy of $acl_m_from: reject\n"
            "          condition = ${if and{{eq{$acl_m_dmarc}{fail}}"
            "{eq{$acl_m_dmarcp}{reject}}}}\n"
            "  warn    spam = nobody:true\n"
            "          add_header = X-Spamd-Result: action=$spam_action score=$spam_score "
            "${sg{$spam_report}{\\N\\s*\\n\\s*\\N}{ }}\n"
            "  deny    message = rspamd: $spam_action\n"
            "          condition = ${if eq{$spam_action}{reject}}\n"
            f"  warn    add_header = :at_start:${{authresults{{{HOST}}}}};\\n\\t"
            f"dmarc=$acl_m_dmarc (exim ACL) policy.p=$acl_m_dmarcp header.from={fdom}\n")
        self.acls = ("\nacl_dkim:\n"
                     "  warn    dkim_status = pass\n"
                     "          set acl_m_dkim = $acl_m_dkim:${lc:$dkim_cur_signer}\n"
                     "  accept\n")


class EximStackServer:
    """Exim with the stack, as run_stack's servers (name, port, pid, start,
    stop) and check() for its assertion. st: a stack.Stack (its dns and
    rspamd); pki: the bench's certificate and key."""

    name = "exim"
    durability = peers.Exim.durability

    def __init__(self, tmp, st, pki, domain, port=None):
        self.st = st
        self.fwd = DnsCache(st.dns, os.path.join(tmp, "exim-dns"))
        self.tmp, self.pki, self.domain = tmp, pki, domain
        self.port = port or _free_port()
        self.exim = None

    def start(self):
        self.fwd.start()
        conf = EximStack(self.fwd.addr, rspamd_normal_port(self.st),
                         spf_shim(os.path.join(self.tmp, "exim-spf")))
        self.exim = peers.Exim(self.tmp, self.port, self.domain, hold=True,
                               tls=(self.pki.cert, self.pki.key), stack=conf)
        self.exim.start()

    def stop(self):
        if self.exim:
            self.exim.stop()
        self.fwd.stop()

    pid = property(lambda self: self.exim.pid if self.exim else None)

    def check(self):
        return check_exim(self.exim, self.st.dns)


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _unfold(text):
    return re.sub(r"\n[ \t]+", " ", text)


def spool_headers(exim):
    """The header section of the newest message in Exim's spool (its -H
    file: each header line after a length and a flag), unfolded."""
    newest = None
    for dirpath, _dirs, files in os.walk(os.path.join(exim.spool, "input")):
        for f in files:
            if f.endswith("-H"):
                p = os.path.join(dirpath, f)
                try:
                    m = os.stat(p).st_mtime
                except OSError:
                    continue
                if newest is None or m > newest[0]:
                    newest = (m, p)
    if newest is None:
        raise AssertionError("exim: no message in its spool")
    with open(newest[1], encoding="utf-8", errors="replace") as f:
        text = f.read()
    # header lines: "NNNc Name: value" (c: a flag, ' ' or '*' for deleted)
    lines = re.findall(r"^\d{3}[ A-Z*] (.*(?:\n[ \t].*)*)", text, re.M)
    return _unfold("\n".join(lines))


def check_exim(exim, dns=None):
    """Raises unless the newest spooled message shows Exim's SPF, DKIM and
    DMARC passes and rspamd's verdict (and, with dns, that both DNSBLs were
    asked about the client); returns the headers checked."""
    head = spool_headers(exim)
    lines = head.splitlines()
    ar = [ln for ln in lines if ln.lower().startswith("authentication-results:")]
    mine = [ln for ln in ar if "spf=pass" in ln and "dkim=pass" in ln and "dmarc=pass" in ln]
    spamd = [ln for ln in lines if ln.lower().startswith("x-spamd-result:")]
    sym = spamd and all(s in spamd[0] for s in ("R_SPF_ALLOW", "R_DKIM_ALLOW",
                                                "DMARC_POLICY_ALLOW"))
    if not mine or not sym:
        raise AssertionError(f"exim: checks not shown in the spooled headers:\n{head[:3000]}")
    if dns is not None:
        asked = {q for q, _t in dns.queries}
        missing = [f"1.0.0.127.{lst}" for lst in LISTS if f"1.0.0.127.{lst}" not in asked]
        if missing:
            raise AssertionError(f"exim: no DNSBL query for {', '.join(missing)}")
    return mine[0][:400], spamd[0][:1500]


def main():
    import argparse
    import tempfile

    import peers_bench as pb
    import stack
    import tlsutil
    from compare import subdir

    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=300, help="messages in the measured point")
    ap.add_argument("-c", type=int, default=50, help="sessions")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--drop", choices=("spf", "dkim", "dmarc"),
                    help="remove that record from the zone: the check must then fail")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("exim_stack.py: run as root (unshare)")
    tmp = tempfile.mkdtemp(prefix="mxd-exim-stack-")
    os.chmod(tmp, 0o755)
    pki = tlsutil.make_pki(os.path.join(tmp, "pki"))
    st = stack.Stack(subdir(tmp, "stack"))
    msg = stack.signed_message(os.path.join(tmp, "stack", "signed.eml"), f"user@{pb.HELD}")
    if args.drop:
        name = {"spf": stack.SENDER, "dkim": f"bench._domainkey.{stack.SENDER}",
                "dmarc": f"_dmarc.{stack.SENDER}"}[args.drop]
        st.dns.zone = {k: v for k, v in st.dns.zone.items() if k != name}
    srv = EximStackServer(tmp, st, pki, pb.HELD)
    try:
        srv.start()
        pb.load(srv.port, 5, 20, 0, True, file=msg)  # rspamd's first scans: not measured
        print("warm-up:\n    " + "\n    ".join(srv.check()), flush=True)
        rcpu0, q0 = pb.tree_cpu(st.rspamd.pid), len(st.dns.queries)
        p = pb.point(srv, args.c, args.n, 0, True, file=msg)
        queries = (len(st.dns.queries) - q0) / args.n
        rspamd_ms = (pb.tree_cpu(st.rspamd.pid) - rcpu0) / args.n * 1000
        shown = srv.check()
        print(f"exim stack: {args.n} messages at c={args.c}, {p['rate']:,.1f}/s, CPU "
              f"{p['cpu_ms']:.3f} ms/message (rspamd {rspamd_ms:.3f}), peak PSS "
              f"{p['pss_mib']:.1f} MiB, dot-to-250 p50 {p['p50_ms']:.2f} ms p99 "
              f"{p['p99_ms']:.2f} ms; {srv.exim.queued()} queued; {queries:.1f} DNS "
              "queries/message (Exim's and rspamd's)", flush=True)
        print("    " + "\n    ".join(shown), flush=True)
    finally:
        srv.stop()
        st.stop()
        if not args.keep:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
