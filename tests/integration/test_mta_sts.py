"""MTA-STS (RFC 8461) when forwarding as a backup MX (issue 19).

The scripted DNS (authdns.py) serves each domain's MX (mx.<domain>, at
127.0.0.1), its _mta-sts TXT record and mta-sts.<domain> (127.0.0.1); a
private HTTPS server (http.server with TLS, a certificate from the test CA
naming every mta-sts.<domain> and mx.<domain> but mx.nocert.test) serves
the policies; mxd is given the test CA as [server] mta_sts_ca_file,
MXD_TEST_HTTPS_PORT and MXD_TEST_SMTP_PORT. The primary is the aiosmtpd
TLS sink with the same certificate. Every domain is `mode = backup`,
`primary = mx`, with the default outbound_tls = opportunistic.

- enf.test, enforce, MX matches: delivered over verified TLS, policy=mta-sts;
  the policy is cached in the store (table mta_sts).
- bad.test, enforce, MX not in the policy: deferred 4.7.5, nothing sent.
- nocert.test, enforce, MX certificate not valid for its name: deferred.
- tst.test, testing, MX not in the policy: delivered, the mismatch logged.
- cached.test: the fetch fails (HTTP 404), a cached enforce policy
  (inserted into the store before first use) with a non-matching MX:
  enforced, deferred.
- gone.test: the fetch fails, no cached policy: opportunistic, delivered.
- big.test (a 70 KiB policy) and redir.test (HTTP 301): refused with
  their reason, delivered opportunistically.

MXD_STS_TEST_OFF=1 runs the same with mta_sts = off (to show the tests fail).
"""

import http.server
import os
import re
import sqlite3
import ssl
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
import tlsutil  # noqa: E402
from authdns import AuthDns  # noqa: E402
from dovecot import json_recipients, make_message, mxctl_json, rcpt_address, smtp_send  # noqa: E402
from dovecot import wait_for  # noqa: E402
from primary import Primary  # noqa: E402
from test_backup import QUEUE_FAST  # noqa: E402

SENDER = "sender@client.test"
OFF = os.environ.get("MXD_STS_TEST_OFF") == "1"


def policy(mode, *mx, max_age=86400):
    lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {m}" for m in mx]
    return ("\r\n".join(lines + [f"max_age: {max_age}"]) + "\r\n").encode()


# domain: (HTTP status, body, extra headers)
POLICIES = {
    "enf.test": (200, policy("enforce", "mx.enf.test", "*.other.test"), {}),
    "bad.test": (200, policy("enforce", "mx.elsewhere.test"), {}),
    "nocert.test": (200, policy("enforce", "*.nocert.test"), {}),
    "tst.test": (200, policy("testing", "mx.elsewhere.test"), {}),
    "cached.test": (404, b"not here\n", {}),
    "gone.test": (404, b"not here\n", {}),
    "big.test": (200, policy("enforce", "mx.elsewhere.test") + b"x-pad: " + b"p" * 70000 + b"\n",
                 {}),
    "redir.test": (301, b"", {"Location": "https://elsewhere.test/.well-known/mta-sts.txt"}),
}
CACHED = policy("enforce", "mx.elsewhere.test").decode()


class PolicyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        host = (self.headers.get("Host") or "").split(":")[0]
        dom = host[len("mta-sts."):] if host.startswith("mta-sts.") else ""
        self.server.seen.append((host, self.path))
        status, body, extra = POLICIES.get(dom, (404, b"", {}))
        if self.path != "/.well-known/mta-sts.txt":
            status, body, extra = 404, b"", {}
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def make_cert(pki, names):
    tmpl = tlsutil._template(pki.dir, "sts.tmpl", "cn = \"mta-sts test\"\nserial = 9\n" +
                             "".join(f"dns_name = \"{n}\"\n" for n in names) +
                             "tls_www_server\nsigning_key\nencryption_key\nexpiration_days = 3\n")
    key, cert = pki.path("sts.key"), pki.path("sts.pem")
    tlsutil._privkey(key)
    tlsutil._certtool("--generate-certificate", "--load-privkey", key,
                      "--load-ca-certificate", pki.ca_cert, "--load-ca-privkey", pki.ca_key,
                      "--template", tmpl, "--outfile", cert)
    chain = pki.path("sts-chain.pem")
    with open(chain, "w", encoding="ascii") as out:
        for part in (cert, pki.ca_cert):
            with open(part, encoding="ascii") as f:
                out.write(f.read())
    return chain, key


class MtaStsCase(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, "mta-sts")
        cls.pki = tlsutil.make_pki(os.path.join(cls.tmpdir, "pki"))
        names = [f"mta-sts.{d}" for d in POLICIES] + [f"mx.{d}" for d in POLICIES
                                                      if d != "nocert.test"]
        chain, key = make_cert(cls.pki, names)
        cls.primary = Primary(cls.tmpdir, tls=(chain, key))
        cls.addClassCleanup(cls.primary.close)
        cls.primary.start()
        # the policy server
        cls.https = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PolicyHandler)
        cls.https.seen = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key)
        cls.https.socket = ctx.wrap_socket(cls.https.socket, server_side=True)
        threading.Thread(target=cls.https.serve_forever, daemon=True).start()
        cls.addClassCleanup(cls.https.server_close)
        cls.addClassCleanup(cls.https.shutdown)
        zone = {}
        for n, d in enumerate(POLICIES):
            zone[d] = [("MX", (10, f"mx.{d}"))]
            zone[f"mx.{d}"] = [("A", "127.0.0.1")]
            zone[f"_mta-sts.{d}"] = [("TXT", f"v=STSv1; id={n + 1}x;"), ("TXT", "v=spf1 -all")]
            zone[f"mta-sts.{d}"] = [("A", "127.0.0.1")]
        cls.dns = AuthDns(zone).start()
        cls.addClassCleanup(cls.dns.stop)
        cls.metrics_port = mxdtest.free_port()
        server = {"control_socket": os.path.join(cls.tmpdir, "control.sock"),
                  "dns_servers": cls.dns.server, "mta_sts_ca_file": cls.pki.ca_cert,
                  "mta_sts": "off" if OFF else "on",
                  "metrics_listen": f"127.0.0.1:{cls.metrics_port}"}
        domains = {d: {"mode": "backup", "primary": "mx"} for d in POLICIES}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, domains=domains, extra=QUEUE_FAST,
                                  control=True, env={"MXD_TEST_SMTP_PORT": str(cls.primary.port),
                                       "MXD_TEST_HTTPS_PORT": str(cls.https.server_port)}))
        # a policy cached earlier for cached.test (its fetch now fails)
        now = int(time.time())
        db = sqlite3.connect(cls.mxd.db_path, timeout=10)
        with db:
            db.execute("INSERT INTO mta_sts VALUES (?, ?, ?, ?, ?)",
                       ("cached.test", "old", CACHED, now - 60, now + 86400))
        db.close()

    def diag(self):
        return f"\n--- mxd stderr (tail)\n{self.mxd.all_stderr()[-5000:]}"

    def send(self, domain):
        token = os.urandom(4).hex()
        rcpt = f"u-{token}@{domain}"
        msg = make_message(SENDER, [rcpt], f"sts {token}", [f"token {token}"],
                           [f"X-Token: {token}"])
        smtp_send(self.mxd.port, SENDER, [rcpt], msg)
        return token, rcpt

    def arrived(self, token):
        return [m for m in self.primary.messages() if f"X-Token: {token}".encode() in m.body]

    def entry(self, rcpt):
        for e in json_recipients(mxctl_json(self.mxd, "queue")):
            if (rcpt_address(e) or "").lower() == rcpt.lower():
                return e
        return None

    def assert_delivered(self, domain, policy, verified):
        token, rcpt = self.send(domain)
        if not wait_for(lambda: self.arrived(token), 20):
            self.fail(f"{domain}: not delivered; queue {self.entry(rcpt)}{self.diag()}")
        self.assertTrue(self.arrived(token)[0].envelope.get("tls"), f"{domain}: without TLS")
        rx = re.compile(rf"tls established server=mx\.{re.escape(domain)}\S* .*"
                        rf"verified={'yes' if verified else 'no'} .*policy={policy}$", re.M)
        self.assertRegex(self.mxd.all_stderr(), rx, self.diag())

    def assert_deferred(self, domain, why):
        token, rcpt = self.send(domain)

        def deferred():
            e = self.entry(rcpt)
            ok = e and e.get("state") in ("deferred", "held") and e.get("last_reply")
            return e if ok else None

        e = wait_for(deferred, 20)
        if not e:
            self.fail(f"{domain}: not deferred; queue {self.entry(rcpt)}{self.diag()}")
        self.assertIn("4.7.", e["last_reply"], e)
        self.assertRegex(e["last_reply"], why)
        time.sleep(1.5)  # retries (retry_min = 1s) send nothing either
        self.assertEqual(self.arrived(token), [], f"{domain}: sent despite MTA-STS")

    def metric(self, result):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        m = re.search(rf'^mxd_outbound_tls_total\{{policy="mta-sts",result="{result}"\}} (\d+)',
                      text, re.M)
        return int(m.group(1)) if m else 0

    def test_enforce_matching_mx_delivered_verified(self):
        self.assert_delivered("enf.test", "mta-sts", True)
        self.assertGreaterEqual(self.metric("verified"), 1)
        self.assertRegex(self.mxd.all_stderr(),
                         r"mta-sts policy domain=enf\.test id=1x mode=enforce .*result=fetched")
        db = sqlite3.connect(self.mxd.db_path, timeout=10)
        rows = db.execute("SELECT id, expires - fetched FROM mta_sts WHERE domain = ?",
                          ("enf.test",)).fetchall()
        db.close()
        self.assertEqual(rows, [("1x", 86400)])
        # mxctl tls-policy shows the policy in force, and what REQUIRETLS gets
        p = self.mxd.mxctl("tls-policy", "enf.test")
        out = p.stdout.decode()
        self.assertRegex(out, r"mta-sts: mode enforce, id 1x, 2 mx patterns, fetched \d+s ago")
        self.assertIn("requiretls: sent over TLS verified as the MTA-STS policy demands", out)

    def test_enforce_other_mx_deferred(self):
        self.assert_deferred("bad.test", r"4\.7\.5 .*mx\.bad\.test is not in the MTA-STS policy")
        self.assertGreaterEqual(self.metric("deferred"), 1)

    def test_enforce_unverified_certificate_deferred(self):
        self.assert_deferred("nocert.test", r"4\.7\.5 ")

    def test_testing_mode_delivers_and_logs(self):
        self.assert_delivered("tst.test", "opportunistic", False)
        self.assertRegex(self.mxd.all_stderr(), r"mta-sts testing relay=mx\.tst\.test\S* "
                         r"domain=tst\.test mx=mx\.tst\.test match=no")

    def test_fetch_fails_cached_policy_enforced(self):
        self.assert_deferred("cached.test", r"not in the MTA-STS policy of cached\.test \(id old\)")
        self.assertRegex(self.mxd.all_stderr(),
                         r"mta-sts fetch failed domain=cached\.test reason=\"?HTTP 404\"? "
                         r"fallback=enforce")

    def test_fetch_fails_no_cache_opportunistic(self):
        self.assert_delivered("gone.test", "opportunistic", False)
        self.assertRegex(self.mxd.all_stderr(),
                         r"mta-sts fetch failed domain=gone\.test .*fallback=none")

    def test_too_big_refused(self):
        self.assert_delivered("big.test", "opportunistic", False)
        self.assertRegex(self.mxd.all_stderr(), r"mta-sts fetch failed domain=big\.test "
                         r"reason=\"policy larger than 65536 octets\" fallback=none")

    def test_redirect_refused(self):
        self.assert_delivered("redir.test", "opportunistic", False)
        self.assertRegex(self.mxd.all_stderr(), r"mta-sts fetch failed domain=redir\.test "
                         r"reason=\"HTTP 301: redirects are not followed")
        self.assertNotIn("elsewhere.test", str(self.https.seen))


if __name__ == "__main__":
    unittest.main()
