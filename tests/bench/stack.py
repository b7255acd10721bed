"""stack: workload 3's first steps for peers_bench.py (issue 22), mxd and
Postfix only: STARTTLS on every connection, SPF + DKIM + DMARC against a
scripted DNS (tests/integration/authdns.py) and one rspamd milter, each
message held (queue only) as in workloads 1 and 2.

The sender domain source.test (smtp_load's MAIL FROM) publishes
"v=spf1 ip4:127.0.0.0/8 -all", a DKIM key (selector bench, python3-dkim's
2048-bit test key) and "v=DMARC1; p=reject"; every message is the same
4 KiB one, DKIM-signed (relaxed/relaxed) for source.test, so each check
passes. mxd checks SPF, DKIM and DMARC itself ([auth] ... = tag,
dns_servers = the scripted DNS) and calls rspamd; Postfix has rspamd as its
smtpd_milters, and rspamd (its dns nameserver: the same scripted DNS) does
SPF, DKIM and DMARC for it (its Authentication-Results header).
postfix-policyd-spf-python and postscreen with DNSBLs are not part of it
yet, nor are Exim and OpenSMTPD. rspamd's rbl module (URIBL, DBL, SURBL)
is off: its lookups overwhelm the scripted DNS (RSPAMD_LOCAL below); rspamd
waits up to 2 s per query (0.2 s in the tests).

The run then asserts from a stored message of each server that the checks
really ran: mxd's Authentication-Results (spf=pass, dkim=pass, dmarc=pass)
and rspamd's X-Spamd-Result in the message in mxd's SQLite; rspamd's
Authentication-Results and X-Spamd-Result (R_SPF_ALLOW, R_DKIM_ALLOW,
DMARC_POLICY_ALLOW) in a Postfix queue file (postcat).
"""

import os
import re
import subprocess

import dkim  # python3-dkim

import mxdtest
from authdns import AuthDns
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


def zone():
    with open(os.path.join(DKIM_DATA, "2048_testkey_wo_markers.pub.txt"), encoding="ascii") as f:
        key_txt = f.read().strip()
    return {SENDER: [("TXT", "v=spf1 ip4:127.0.0.0/8 -all")],
            f"bench._domainkey.{SENDER}": [("TXT", key_txt)],
            f"_dmarc.{SENDER}": [("TXT", "v=DMARC1; p=reject")]}


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


class Stack:
    """The scripted DNS and rspamd, shared by both servers."""

    def __init__(self, tmp):
        # records and negative answers with a TTL of 5 minutes, as real ones:
        # mxd's resolver caches them (rspamd caches SPF records, not the rest)
        self.dns = AuthDns(zone(), ttl=300, neg_ttl=300).start()
        self.rport = mxdtest.free_port()
        self.rspamd = RspamdTest.start_rspamd(tmp, self.rport, dns_port=self.dns.port,
                                              headers=("authentication-results",),
                                              more_files=RSPAMD_LOCAL, dns_timeout="2s")

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
        """(server keys, extra text) for mxd with the checks and the milter."""
        server = {"dns_servers": self.dns.server, "milters": self.milter,
                  "milter_default_action": "tempfail", "milter_content_timeout": "20s",
                  "milter_reuse": "on"}
        return server, "[auth]\nspf = tag\ndkim = tag\ndmarc = tag\n"

    def postfix_config(self):
        return (f"smtpd_milters = {self.milter}\nmilter_default_action = tempfail\n"
                "milter_content_timeout = 20s\n")


def _unfold(head):
    return re.sub(rb"\r?\n[ \t]+", b" ", head).decode("utf-8", "replace")


def check_mxd(db_path):
    """Raises unless the newest stored message shows mxd's SPF, DKIM and
    DMARC passes and rspamd's verdict; returns the headers checked."""
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
    return mine[0][:300], spamd[0][:1500]


def check_postfix(pf):
    """Raises unless a queued message shows rspamd's SPF, DKIM and DMARC
    passes; returns the headers checked."""
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
                if not ok or not sym:
                    raise AssertionError(f"postfix: checks not shown in {f}:\n{head[:3000]}")
                return ok[0][:300], spamd[0][:1500]
    raise AssertionError("postfix: no queued message")
