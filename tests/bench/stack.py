"""stack: workload 3 for peers_bench.py (issue 22), mxd and Postfix:
STARTTLS on every connection, SPF + DKIM + DMARC against a scripted DNS
(tests/integration/authdns.py), screening (pre-greet test and two DNSBLs,
passes cached) and one rspamd milter, each message held (queue only) as in
workloads 1 and 2.

The sender domain source.test (smtp_load's MAIL FROM) publishes
"v=spf1 ip4:127.0.0.0/8 -all", a DKIM key (selector bench, python3-dkim's
2048-bit test key) and "v=DMARC1; p=reject"; every message is the same
4 KiB one, DKIM-signed (relaxed/relaxed) for source.test, so each check
passes. mxd checks SPF, DKIM and DMARC itself ([auth] ... = tag,
dns_servers = the scripted DNS) and calls rspamd; Postfix has rspamd as its
smtpd_milters, and rspamd (its dns nameserver: the same scripted DNS) does
SPF, DKIM and DMARC for it (its Authentication-Results header); Postfix
also runs Debian's postfix-policyd-spf-python (spawn, check_policy_service
in smtpd_recipient_restrictions: its Received-SPF header).
rspamd's rbl module (URIBL, DBL, SURBL) is off: its lookups overwhelm the
scripted DNS (RSPAMD_LOCAL below); rspamd waits up to 2 s per query (0.2 s
in the tests).

Screening, as an operator of each would set it: two DNSBLs, zen.bench.test
(weight 3) and bl.bench.test (weight 2), threshold 3, and the pre-greet
test. 127.0.0.1 (the load) is listed in neither (NXDOMAIN, negative TTL 5
min); 127.0.0.2 is listed in both (RFC 5782's test entry). A pass is
remembered (mxd: screen_ttl; postscreen: its cache), so after the first
connection the client is known and asks no list: the "cached clients" of
the issue. mxd: greet_action = reject, dnsbl_sites; Postfix: postscreen
(smtp inet ... postscreen, smtpd pass, dnsblog, tlsproxy) with
postscreen_dnsbl_sites and postscreen_greet_action = enforce. No
after-greeting tests (postscreen's pipelining/non-SMTP/bare-newline, which
make a new client come back): smtpd does the STARTTLS, postscreen hands it
the connection first. Both exempt no one: postscreen_access_list's default
permit_mynetworks and policyd-spf's default skip_addresses (127.0.0.0/8)
would spare the loopback load every check, as rspamd's check_local = false
would; they are emptied here as rspamd's is turned on.

The scripted DNS listens on port 53 of an address of 127.0.0.0/8 of its
own: Postfix's dnsblog (the C library's resolver) and policyd-spf
(dnspython) read /etc/resolv.conf, which names no port. Postfix is started
inside `unshare -m` with a private resolv.conf bind-mounted over
/etc/resolv.conf (its master, and every process it starts, keeps that mount
namespace); the machine's file is never changed.

mxd_lean (peers_bench.py --stack-lean): rspamd does not redo SPF, DKIM and
DMARC for mail from mxd, which did them already and says so in its
Authentication-Results: an rspamd settings rule (local.d/settings.conf)
selected by the request header MTA-Name, which rspamd's milter proxy fills
from the {daemon_name} macro (mxd sends "mxd"), disables the groups spf,
dkim and dmarc. That is the operator's setting for rspamd behind an MTA that
authenticates (rspamd's settings documentation: "split inbound and
outbound mail flows ... from the MTA side"). Postfix's mail (daemon_name:
its default, the host name) still gets the full rspamd.

The run then asserts from a stored message of each server that the checks
really ran: mxd's Authentication-Results (spf=pass, dkim=pass, dmarc=pass)
and rspamd's X-Spamd-Result in the message in mxd's SQLite; rspamd's
Authentication-Results and X-Spamd-Result (R_SPF_ALLOW, R_DKIM_ALLOW,
DMARC_POLICY_ALLOW) and policyd-spf's "Received-SPF: Pass" in a Postfix
queue file (postcat); and from each server's log that the screening ran:
mxd's "check dnsbl ... result=pass" and "check pregreet ... result=pass",
postscreen's "PASS NEW [127.0.0.1]" (both DNSBLs asked, the pre-greet wait
passed).
"""

import errno
import os
import random
import re
import subprocess

import dkim  # python3-dkim

import mxdtest
from authdns import AuthDns
from compare import tree
from dovecot import proc_cpu
from test_milter import RspamdTest

DKIM_DATA = "/usr/lib/python3/dist-packages/dkim/tests/data"
SENDER = "source.test"
# the client is on 127.0.0.1: rspamd skips these checks for local clients
# unless told (the load comes from loopback, real mail would not)
RSPAMD_LOCAL = {f"local.d/{m}.conf": "check_local = true;\ncheck_authed = true;\n"
                for m in ("spf", "dkim", "dmarc")}
# its URIBL/DBL/SURBL lookups (about 7 names a message, all NXDOMAIN here)
# would go to the scripted DNS, one Python thread, which drops some under
# load: rspamd then marks its only name server down and DMARC fails with
# "query timed out". Off: the DNSBLs of the stack are the MTAs' screening
RSPAMD_LOCAL["local.d/rbl.conf"] = "enabled = false;\n"
# mxd_lean: no second SPF/DKIM/DMARC for mail mxd checked (the docstring)
RSPAMD_LEAN = """mxd_authenticated {
  priority = high;
  request_header = { "MTA-Name" = "^mxd$"; }
  apply { groups_disabled = ["spf", "dkim", "dmarc"]; }
}
"""
DNSBLS = (("zen.bench.test", 3), ("bl.bench.test", 2))
DNSBL_THRESHOLD = 3
POLICYD_SPF = "/usr/bin/policyd-spf"


def zone():
    with open(os.path.join(DKIM_DATA, "2048_testkey_wo_markers.pub.txt"), encoding="ascii") as f:
        key_txt = f.read().strip()
    z = {SENDER: [("TXT", "v=spf1 ip4:127.0.0.0/8 -all")],
         f"bench._domainkey.{SENDER}": [("TXT", key_txt)],
         f"_dmarc.{SENDER}": [("TXT", "v=DMARC1; p=reject")]}
    for bl, _w in DNSBLS:  # 127.0.0.2 listed (RFC 5782), 127.0.0.1 not
        z[f"2.0.0.127.{bl}"] = [("A", "127.0.0.2"), ("TXT", "listed for the test")]
        z[bl] = [("TXT", "bench DNSBL")]
    return z


def signed_message(path, rcpt, size=4096):
    """Writes a DKIM-signed message of about size octets (CRLF, no line
    starting with a dot) for smtp_load -f."""
    with open(os.path.join(DKIM_DATA, "2048_testkey.key"), "rb") as f:
        key = f.read()
    head = (f"From: Bench <bench@{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: stack\r\n"
            f"Date: Mon, 07 Dec 2026 00:00:00 +0000\r\n"
            f"Message-ID: <stack-1@{SENDER}>\r\n\r\n").encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    msg = head + body
    sig = dkim.sign(msg, b"bench", SENDER.encode(), key,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    sig = sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with open(path, "wb") as f:
        f.write(sig + msg)
    return path


def _dns_on_53(dns):
    """Starts dns on port 53 of a free address of 127.0.0.0/8."""
    for _ in range(50):
        host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        try:
            return dns.start(host=host, port=53)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise RuntimeError("no free loopback address for the scripted DNS on port 53")


class Stack:
    """The scripted DNS and rspamd, shared by both servers."""

    def __init__(self, tmp, mxd_lean=False, rspamd_workers=1):
        self.tmp = tmp
        # records and negative answers with a TTL of 5 minutes, as real ones:
        # mxd's resolver caches them (rspamd caches SPF records, not the rest)
        self.dns = _dns_on_53(AuthDns(zone(), ttl=300, neg_ttl=300))
        self.resolv = os.path.join(tmp, "resolv.conf")
        with open(self.resolv, "w", encoding="ascii") as f:
            f.write(f"nameserver {self.dns.host}\noptions timeout:2 attempts:2\n")
        os.chmod(self.resolv, 0o644)
        self.rport = mxdtest.free_port()
        files = dict(RSPAMD_LOCAL)
        if mxd_lean:
            files["local.d/settings.conf"] = RSPAMD_LEAN
        self.lean = mxd_lean
        # start_rspamd's own override.d files, with the name server's
        # address (it names 127.0.0.1) and the proxy's worker count: the
        # proxy scans itself (self_scan), so its count is the number of
        # rspamd processes that scan, for both servers alike
        rdir = os.path.join(tmp, "rspamd")
        files["override.d/options.inc"] = (
            f'url_tld = "{rdir}/tld.dat";\n'
            f'dns {{ nameserver = ["{self.dns.server}"]; timeout = 2s; retransmits = 1; }}\n'
            f'hs_cache_dir = "{rdir}/db";\n')
        files["override.d/worker-proxy.inc"] = (
            f'bind_socket = "127.0.0.1:{self.rport}";\nmilter = yes;\ntimeout = 120s;\n'
            f"count = {rspamd_workers};\n"
            "upstream \"local\" { default = yes; self_scan = yes; }\n")
        self.rspamd = RspamdTest.start_rspamd(tmp, self.rport, dns_port=self.dns.port,
                                              headers=("authentication-results",),
                                              more_files=files, dns_timeout="2s")

    milter = property(lambda self: f"inet:127.0.0.1:{self.rport}")

    def stop(self):
        if self.rspamd.poll() is None:
            self.rspamd.terminate()
            try:
                self.rspamd.wait(15)
            except subprocess.TimeoutExpired:
                self.rspamd.kill()
                self.rspamd.wait()
        self.dns.stop()

    def mxd_config(self):
        """(server keys, extra text) for mxd with the checks, the screening
        and the milter."""
        server = {"dns_servers": self.dns.server, "milters": self.milter,
                  "milter_default_action": "tempfail", "milter_content_timeout": "20s",
                  "milter_reuse": "on",
                  "dnsbl_sites": ", ".join(f"{bl}*{w}" for bl, w in DNSBLS),
                  "dnsbl_threshold": str(DNSBL_THRESHOLD), "greet_action": "reject"}
        return server, "[auth]\nspf = tag\ndkim = tag\ndmarc = tag\n"

    def postfix_config(self):
        """main.cf lines: the milter, postscreen, policyd-spf."""
        sites = ", ".join(f"{bl}*{w}" for bl, w in DNSBLS)
        return (f"smtpd_milters = {self.milter}\nmilter_default_action = tempfail\n"
                "milter_content_timeout = 20s\n"
                f"postscreen_dnsbl_sites = {sites}\n"
                f"postscreen_dnsbl_threshold = {DNSBL_THRESHOLD}\n"
                "postscreen_dnsbl_action = enforce\npostscreen_greet_action = enforce\n"
                "postscreen_cache_map = btree:$data_directory/postscreen_cache\n"
                # its default permit_mynetworks would spare the loopback load
                "postscreen_access_list =\n"
                "smtpd_recipient_restrictions = reject_unauth_destination,\n"
                "    check_policy_service unix:private/policyd-spf\n"
                "policyd-spf_time_limit = 3600\n")

    def postfix_setup(self, pf):
        """After Postfix(...) wrote its files: postscreen in front of smtpd,
        dnsblog, tlsproxy and policyd-spf in master.cf, policyd-spf's
        config, and the start inside `unshare -m` with the scripted DNS in
        its /etc/resolv.conf."""
        conf = os.path.join(pf.etc, "policyd-spf.conf")
        with open("/etc/postfix-policyd-spf-python/policyd-spf.conf", encoding="utf-8") as f:
            text = f.read()
        # its default skip_addresses (127.0.0.0/8, ::1) would spare the load
        text = re.sub(r"(?m)^skip_addresses\s*=.*$", "skip_addresses = 192.0.2.0/24", text)
        with open(conf, "w", encoding="utf-8") as f:
            f.write(text)
        master = os.path.join(pf.etc, "master.cf")
        with open(master, encoding="utf-8") as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            fields = line.split()
            if len(fields) >= 8 and fields[0] == f"127.0.0.1:{pf.port}":
                out.append(f"127.0.0.1:{pf.port} inet n - n - 1 postscreen")
                out.append("smtpd pass - - n - - smtpd")
                out.append("dnsblog unix - - n - 0 dnsblog")
                out.append("tlsproxy unix - - n - 0 tlsproxy")
                continue
            out.append(line)
        out.append("policyd-spf unix - n n - 0 spawn")
        out.append(f"  user=policyd-spf argv={POLICYD_SPF} {conf}")
        with open(master, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        pf.prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                     'mount --bind "$0" /etc/resolv.conf && exec "$@"', self.resolv]


def cpu_by_name(pid):
    """{process name: CPU seconds} over pid's whole tree, each live process
    with its reaped children: Postfix's policyd-spf runs under spawn, a
    grandchild of master that compare.tree_cpu would not see."""
    out = {}
    for p in tree(pid) if pid else ():
        try:
            with open(f"/proc/{p}/comm", encoding="utf-8") as f:
                name = f.read().strip()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + proc_cpu(p, children=True)
    return out


def _unfold(head):
    return re.sub(rb"\r?\n[ \t]+", b" ", head).decode("utf-8", "replace")


def check_mxd(db_path, log_text=None):
    """Raises unless the newest stored message shows mxd's SPF, DKIM and
    DMARC passes and rspamd's verdict, and (log_text: mxd's log) the
    screening passed the load's client; returns what was checked."""
    con = mxdtest.db_connect(db_path)
    try:
        row = con.execute("SELECT body FROM messages ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        con.close()
    if row is None:
        raise AssertionError("mxd: no stored message")
    head = _unfold(bytes(row[0]).split(b"\r\n\r\n", 1)[0])
    ar = [ln for ln in head.splitlines() if ln.lower().startswith("authentication-results:")]
    mine = [ln for ln in ar if "spf=pass" in ln and "dkim=pass" in ln and "dmarc=pass" in ln]
    spamd = [ln for ln in head.splitlines() if ln.lower().startswith("x-spamd-result:")]
    if not mine or not spamd:
        raise AssertionError(f"mxd: checks not shown in the stored headers:\n{head[:3000]}")
    shown = [mine[0][:300], spamd[0][:1500]]
    if log_text is not None:
        for test in ("dnsbl", "pregreet"):
            m = re.search(rf"check {test} client=127\.0\.0\.1 result=pass[^\n]*", log_text)
            if not m:
                raise AssertionError(f"mxd: no screening pass ({test}) in its log")
            shown.append("log: " + m.group(0))
    return tuple(shown)


def check_postfix(pf, screening=True):
    """Raises unless a queued message shows rspamd's SPF, DKIM and DMARC
    passes and policyd-spf's Received-SPF: Pass, and (screening) the log
    shows postscreen passing the load's client; returns what was checked."""
    extra = []
    if screening:
        with open(os.path.join(pf.log, "postfix.log"), encoding="utf-8", errors="replace") as f:
            m = re.search(r"postscreen\[\d+\]: PASS NEW \[127\.0\.0\.1\][^\n]*", f.read())
        if not m:
            raise AssertionError("postfix: no postscreen PASS NEW [127.0.0.1] in its log")
        extra.append("log: " + m.group(0))
    for sub in ("deferred", "active", "incoming"):
        for dirpath, _dirs, files in os.walk(os.path.join(pf.queue, sub)):
            for f in files:
                p = subprocess.run(["/usr/sbin/postcat", "-c", pf.etc, "-h",
                                    os.path.join(dirpath, f)], capture_output=True, timeout=30)
                if p.returncode != 0:
                    continue  # moved meanwhile
                head = _unfold(p.stdout)
                spamd = [ln for ln in head.splitlines()
                         if ln.lower().startswith("x-spamd-result:")]
                ar = [ln for ln in head.splitlines()
                      if ln.lower().startswith("authentication-results:")]
                ok = [ln for ln in ar
                      if "spf=pass" in ln and "dkim=pass" in ln and "dmarc=pass" in ln]
                sym = spamd and all(s in spamd[0] for s in ("R_SPF_ALLOW", "R_DKIM_ALLOW",
                                                            "DMARC_POLICY_ALLOW"))
                rspf = [ln for ln in head.splitlines()
                        if ln.lower().startswith("received-spf: pass")]
                if not ok or not sym or not rspf:
                    raise AssertionError(f"postfix: checks not shown in {f}:\n{head[:3000]}")
                return (ok[0][:300], spamd[0][:1500], rspf[0][:300], *extra)
    raise AssertionError("postfix: no queued message")
