"""DANE (RFC 7672) when forwarding as a backup MX (issue 19), against a real
validating setup: a zone signed with ldnsutils, served by a private unbound
(tests/integration/dnssec.py), mxd's resolver given the zone's DS record as
its trust anchor (dnssec_trust_anchor), and the aiosmtpd primary with a
certificate from the test CA (its chain: the certificate, then the CA).

Every domain is `mode = backup`, `primary = mx`, `tls = dane` (one
`dane-only`); MX targets use MXD_TEST_SMTP_PORT, and the TLSA records sit
at _<that port>._tcp.<MX host>.

- ee.dane.example: TLSA 3 1 1 of the primary's key: delivered, over TLS,
  logged policy=dane verified=yes, counted verified.
- ta.dane.example: TLSA 2 1 1 of the CA's key (the certificate names
  *.dane.example): delivered.
- bad.dane.example: a TLSA record that matches nothing: deferred with
  4.7.5, nothing reaches the primary, the message stays queued (held: a
  backup domain's mail waits for its primary).
- bogus.dane.example: the TLSA record changed after signing: deferred with
  4.7.5 (DNSSEC validation failed), nothing sent.
- plain.test: an unsigned zone: opportunistic TLS, delivered.
- strict.plain.test with tls = dane-only: deferred with 4.7.5.
"""

import json
import os
import re
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
import tlsutil  # noqa: E402
from dnssec import SignedDns, spki_sha256  # noqa: E402
from dovecot import json_recipients, make_message, mxctl_json, rcpt_address, smtp_send  # noqa: E402
from dovecot import wait_for  # noqa: E402
from primary import Primary  # noqa: E402
from test_backup import QUEUE_FAST  # noqa: E402

SENDER = "sender@client.test"
WRONG = "ab" * 32  # a SHA-256 that matches no key
POLICY = os.environ.get("MXD_DANE_TEST_POLICY", "dane")  # to show the tests can fail


def dane_zone(port, ee, ca):
    recs = []
    for name, tlsa in (("ee", f"3 1 1 {ee}"), ("ta", f"2 1 1 {ca}"), ("bad", f"3 1 1 {WRONG}"),
                       ("bogus", f"3 1 1 {ee}")):
        recs += [f"{name} IN MX 10 mx-{name}.dane.example.", f"mx-{name} IN A 127.0.0.1",
                 f"_{port}._tcp.mx-{name} IN TLSA {tlsa}"]
    return recs


PLAIN_ZONE = ["@ IN MX 10 mx.plain.test.", "mx IN A 127.0.0.1",
              "strict IN MX 10 mx.plain.test."]


class DaneCase(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, "dane")
        cls.pki = tlsutil.make_pki(os.path.join(cls.tmpdir, "pki"), hostname="*.dane.example")
        cls.primary = Primary(cls.tmpdir, tls=(cls.pki.chain, cls.pki.key))
        cls.addClassCleanup(cls.primary.close)
        cls.primary.start()
        cls.dns = SignedDns(cls.tmpdir)
        cls.addClassCleanup(cls.dns.close)
        ee = spki_sha256(cls.pki.cert)
        cls.dns.add_zone("dane.example", dane_zone(cls.primary.port, ee,
                                                   spki_sha256(cls.pki.ca_cert)))
        cls.dns.add_zone("plain.test", PLAIN_ZONE, signed=False)
        cls.dns.build()
        # after signing: the signature over this TLSA RRset no longer verifies
        bogus = f"mx-bogus.dane.example.\t300\tIN\tTLSA\t3 1 1 "
        cls.dns.bogus("dane.example", bogus + ee, bogus + WRONG)
        cls.dns.start()
        cls.metrics_port = mxdtest.free_port()
        server = {"control_socket": os.path.join(cls.tmpdir, "control.sock"),
                  "dns_servers": cls.dns.server, "dnssec_trust_anchor": cls.dns.trust_anchor,
                  "metrics_listen": f"127.0.0.1:{cls.metrics_port}"}
        domains = {d: {"mode": "backup", "primary": "mx", "tls": POLICY}
                   for d in ("ee.dane.example", "ta.dane.example", "bad.dane.example",
                             "bogus.dane.example", "plain.test")}
        domains["strict.plain.test"] = {"mode": "backup", "primary": "mx",
                                        "tls": "dane-only" if POLICY == "dane" else POLICY}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, domains=domains, extra=QUEUE_FAST,
                                  env={"MXD_TEST_SMTP_PORT": str(cls.primary.port)}))

    def diag(self):
        return (f"\n--- mxd stderr (tail)\n{self.mxd.all_stderr()[-5000:]}"
                f"\n--- unbound\n{self.dns.logs(1500)}")

    def send(self, domain):
        token = os.urandom(4).hex()
        rcpt = f"u-{token}@{domain}"
        msg = make_message(SENDER, [rcpt], f"dane {token}", [f"token {token}"],
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
        m = self.arrived(token)[0]
        self.assertTrue(m.envelope.get("tls"), f"{domain}: delivered without TLS")
        rx = re.compile(rf"tls established server=mx[-.]\S+ .*"
                        rf"verified={'yes' if verified else 'no'} .*policy={policy}$", re.M)
        self.assertRegex(self.mxd.all_stderr(), rx)

    def assert_deferred(self, domain, why):
        token, rcpt = self.send(domain)

        def deferred():
            e = self.entry(rcpt)
            # a backup domain's mail waits "held" while its primary is unusable
            ok = e and e.get("state") in ("deferred", "held") and e.get("last_reply")
            return e if ok else None

        e = wait_for(deferred, 20)
        if not e:
            self.fail(f"{domain}: not deferred; queue {self.entry(rcpt)}{self.diag()}")
        self.assertIn("4.7.5", e["last_reply"], e)
        self.assertRegex(e["last_reply"], why)
        time.sleep(1.5)  # retries (retry_min = 1s) send nothing either
        self.assertEqual(self.arrived(token), [], f"{domain}: sent despite DANE")
        self.assertIn(self.entry(rcpt).get("state"), ("deferred", "held"))

    def metric(self, policy, result):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        m = re.search(rf'^mxd_outbound_tls_total\{{policy="{policy}",result="{result}"\}} (\d+)',
                      text, re.M)
        return int(m.group(1)) if m else 0

    def test_dane_ee_311_delivered(self):
        self.assert_delivered("ee.dane.example", "dane", True)
        self.assertGreaterEqual(self.metric("dane", "verified"), 1)

    def test_dane_ta_211_delivered(self):
        self.assert_delivered("ta.dane.example", "dane", True)

    def test_mismatch_defers(self):
        self.assert_deferred("bad.dane.example", r"DANE verification failed")
        self.assertGreaterEqual(self.metric("dane", "failed"), 1)

    def test_bogus_defers(self):
        self.assert_deferred("bogus.dane.example", r"DNSSEC validation")
        self.assertGreaterEqual(self.metric("dane", "deferred"), 1)

    def test_unsigned_opportunistic(self):
        self.assert_delivered("plain.test", "opportunistic", False)

    def test_dane_only_unsigned_defers(self):
        self.assert_deferred("strict.plain.test", r"dane-only")

    def tls_policy(self, domain):
        p = self.mxd.mxctl("tls-policy", domain, "--json")
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return json.loads(p.stdout)

    def test_mxctl_tls_policy(self):
        """mxctl tls-policy (issue 19): what the validating lookups say now."""
        doc = self.tls_policy("ee.dane.example")
        self.assertEqual((doc["policy"], doc["mx_dnssec"]), (POLICY, "secure"), doc)
        hop = doc["hops"][0]
        self.assertEqual((hop["host"], hop["tlsa"], hop["records"], hop["usable"]),
                         ("mx-ee.dane.example", "secure", 1, 1), doc)
        if POLICY == "dane":
            self.assertRegex(doc["requiretls"], r"^sent only to the 1 next hops with usable TLSA")
        self.assertEqual(self.tls_policy("bogus.dane.example")["hops"][0]["tlsa"], "bogus")
        doc = self.tls_policy("plain.test")
        self.assertEqual((doc["mx_dnssec"], doc["hops"][0]["tlsa"]), ("insecure", "none"), doc)
        self.assertRegex(doc["requiretls"], r"^bounced 5\.7\.30")


class DaneConfig(unittest.TestCase):
    def test_unreadable_trust_anchor_refused(self):
        tmp = mxdtest.make_tmpdir(self.addCleanup, "dane-conf")
        path = os.path.join(tmp, "mxd.conf")
        with open(path, "w", encoding="ascii") as f:
            f.write(f"[server]\nhostname = {mxdtest.HOSTNAME}\n"
                    f"database = {os.path.join(tmp, 'q.db')}\n"
                    f"dnssec_trust_anchor = {os.path.join(tmp, 'missing.ds')}\n"
                    "[domain example.org]\nmode = backup\nprimary = mx\ntls = dane-only\n")
        p = subprocess.run([mxdtest.mxd_path(), "--check", "-c", path], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertRegex(p.stderr, r"mxd\.conf:4: dnssec_trust_anchor: cannot read .*missing\.ds")


if __name__ == "__main__":
    unittest.main()
