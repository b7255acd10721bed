"""REQUIRETLS (RFC 8689, issue 19) against real peers: a private Postfix
3.7 as the primary (it does not speak REQUIRETLS), on two listeners (one
without STARTTLS, one with a certificate from the test CA), and the
aiosmtpd primary (tests/integration/primary_server.py --requiretls) that
offers REQUIRETLS over TLS with a certificate from the same CA.

One mxd, backup domains (every message comes from s@sink.test, so each
DSN goes back to the sink, over verified TLS):

- sink.test: the aiosmtpd primary, tls = verify with the test CA: a
  REQUIRETLS message arrives over TLS with MAIL ... REQUIRETLS.
- plain.test: Postfix without STARTTLS, tls = opportunistic: bounced
  5.7.30 (no TLS), Postfix never sees MAIL.
- enc.test: Postfix with STARTTLS, tls = opportunistic (TLS not
  authenticated): bounced 5.7.30, no MAIL.
- ver.test: Postfix with STARTTLS, tls = verify (authenticated): Postfix
  does not offer REQUIRETLS: bounced 5.7.30, no MAIL; a message without
  REQUIRETLS goes to it (the path itself works).
- Each DSN reaches the sink from <> with MAIL ... REQUIRETLS (RFC 8689 5).
- Inbound: REQUIRETLS is not in EHLO before STARTTLS, MAIL ... REQUIRETLS
  without TLS gets 530 5.7.10; after STARTTLS EHLO offers it.
- strict.test: tls = dane-only to a primary given as an IP literal (no
  TLSA records, so nothing may go): a message with "TLS-Required: No" is
  delivered anyway (RFC 8689 5), one without it stays deferred (4.7.5).

- mxctl tls-policy DOMAIN (through the control socket): the policy, its
  source, the next hops and their TLSA state, what a REQUIRETLS message
  meets, in text and JSON.

MXD_RTLS_BREAK=1 sends every message without REQUIRETLS (the tests of
the bounces and of the sink's MAIL parameter then fail).
"""

import json
import os
import re
import smtplib
import ssl
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import mxdtest  # noqa: E402
import tlsutil  # noqa: E402
from dovecot import make_message, wait_for  # noqa: E402
from primary import Primary  # noqa: E402

SENDER = "s@sink.test"
BREAK = os.environ.get("MXD_RTLS_BREAK") == "1"


class RequireTls(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from postfix import Postfix

        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        os.chmod(cls.tmpdir, 0o755)  # Postfix's own users walk into it
        cls.pki = tlsutil.make_pki(os.path.join(cls.tmpdir, "pki"))
        for name in os.listdir(cls.pki.dir):
            os.chmod(os.path.join(cls.pki.dir, name), 0o644)  # test keys, for Postfix
        cls.sink = Primary(cls.tmpdir, name="sink", tls=(cls.pki.cert, cls.pki.key),
                           requiretls=True)
        cls.addClassCleanup(cls.sink.close)
        cls.sink.start()
        cls.plain_sink = Primary(cls.tmpdir, name="plain-sink")
        cls.addClassCleanup(cls.plain_sink.close)
        cls.plain_sink.start()
        cls.pf_tls, cls.pf_plain = mxdtest.free_port(), mxdtest.free_port()
        tls = (f"smtpd_tls_cert_file = {cls.pki.cert}\nsmtpd_tls_key_file = {cls.pki.key}\n"
               "smtpd_tls_security_level = may\n")
        cls.pf = Postfix(cls.tmpdir, cls.pf_tls, "plain.test, enc.test, ver.test",
                         os.path.join(cls.tmpdir, "nowhere.sock"), hold=True, extra=tls)
        with open(os.path.join(cls.pf.etc, "master.cf"), "a", encoding="utf-8") as f:
            f.write(f"127.0.0.1:{cls.pf_plain} inet n - n - - smtpd "
                    "-o smtpd_tls_security_level=none\n")
        cls.pf.start()
        cls.addClassCleanup(cls.pf.stop)
        ca = cls.pki.ca_cert
        pf = f"127.0.0.1:{cls.pf_tls}"
        domains = {
            "sink.test": {"mode": "backup", "primary": cls.sink.target, "recipients": "any",
                          "tls": "verify", "ca_file": ca},
            "plain.test": {"mode": "backup", "primary": f"127.0.0.1:{cls.pf_plain}",
                           "recipients": "any", "tls": "opportunistic"},
            "enc.test": {"mode": "backup", "primary": pf, "recipients": "any",
                         "tls": "opportunistic"},
            "ver.test": {"mode": "backup", "primary": pf, "recipients": "any", "tls": "verify",
                         "ca_file": ca},
            "strict.test": {"mode": "backup", "primary": cls.plain_sink.target,
                            "recipients": "any", "tls": "dane-only"},
        }
        extra = ("[queue]\nretry_min = 1s\nretry_max = 2s\n"
                 "[auth]\nspf = off\ndkim = off\ndmarc = off\n"
                 + tlsutil.tls_section(cls.pki.cert, cls.pki.key))
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, domains=domains, extra=extra, control=True))

    # -- helpers

    def diag(self):
        return (f"\n--- mxd:\n{self.mxd.all_stderr()[-4000:]}\n--- sink:\n{self.sink.logs(2000)}"
                f"\n--- postfix:\n{self.pf_log()[-2000:]}")

    def pf_log(self):
        try:
            with open(os.path.join(self.pf.log, "postfix.log"), encoding="utf-8",
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def send(self, rcpt, requiretls=True, headers=()):
        tok = self.token()
        msg = make_message(SENDER, [rcpt], f"rtls {tok}", ["secret"],
                           [f"X-Token: {tok}", *headers])
        ctx = ssl.create_default_context(cafile=self.pki.ca_cert)
        with smtplib.SMTP("127.0.0.1", self.mxd.port, local_hostname="client.test",
                          timeout=30) as s:
            s.starttls(context=ctx)  # mxd's certificate names 127.0.0.1 too
            s.ehlo("client.test")
            self.assertTrue(s.has_extn("requiretls"), "REQUIRETLS not offered over TLS")
            opts = ["REQUIRETLS"] if requiretls and not BREAK else []
            s.sendmail(SENDER, [rcpt], msg, mail_options=opts)
        return tok

    def arrived(self, primary, tok, timeout=30):
        def find():
            for m in primary.messages():
                if f"X-Token: {tok}".encode() in m.body:
                    return m
            return None

        m = wait_for(find, timeout)
        if m is None:
            self.fail(f"{tok} did not reach {primary.name}{self.diag()}")
        return m

    def assert_bounced(self, rcpt, reason_rx):
        tok = self.send(rcpt)
        dsn = self.arrived(self.sink, tok)  # the DSN quotes the original header
        text = dsn.body.decode("utf-8", "replace").replace("\r\n ", " ")  # unfolded
        self.assertIn(dsn.envelope["mail_from"], ("", "<>"), "not a DSN")
        self.assertRegex(text, r"Status: 5\.7\.30")
        self.assertRegex(text, reason_rx)
        self.assertNotIn("secret", text.split("X-Token")[-1], "the body went back")
        # RFC 8689 5: the DSN itself goes with REQUIRETLS (over verified TLS)
        self.assertIn("REQUIRETLS", dsn.envelope["mail_options"])
        self.assertIsNotNone(dsn.envelope.get("tls"))
        # nothing of it reached Postfix: no MAIL on any of its sessions
        time.sleep(0.5)
        mails = [ln for ln in self.pf_log().splitlines()
                 if "disconnect from" in ln and " mail=" in ln]
        self.assertEqual(mails, [], "Postfix was given MAIL for a REQUIRETLS message")

    # -- tests

    def test_inbound_only_over_tls(self):
        c = self.mxd.client()
        self.addCleanup(c.close)
        r = c.ehlo("client.test")
        self.assertNotIn("REQUIRETLS", r.text)
        self.assertIn("STARTTLS", r.text)
        r = c.cmd(f"MAIL FROM:<{SENDER}> REQUIRETLS")
        self.assertEqual((r.code, r.enh), (530, "5.7.10"), str(r))
        r = c.cmd(f"MAIL FROM:<{SENDER}>")
        self.assertEqual(r.code, 250, str(r))

    def test_sink_gets_requiretls(self):
        tok = self.send("a@sink.test")
        m = self.arrived(self.sink, tok)
        self.assertIsNotNone(m.envelope.get("tls"), "came in plain text")
        self.assertIn("REQUIRETLS", m.envelope["mail_options"])
        self.assertRegex(self.mxd.all_stderr(), r"queued from=<s@sink\.test> .* requiretls=yes")

    def test_postfix_plain_bounced(self):
        self.assert_bounced("a@plain.test", r"5\.7\.30 REQUIRETLS support required: no TLS")

    def test_postfix_tls_unverified_bounced(self):
        self.assert_bounced("a@enc.test", r"5\.7\.30 REQUIRETLS support required: the next "
                            r"hop's certificate is not authenticated")

    def test_postfix_tls_verified_bounced(self):
        self.assert_bounced("a@ver.test", r"5\.7\.30 REQUIRETLS support required: the next "
                            r"hop does not offer REQUIRETLS")
        # the same path takes a message without REQUIRETLS: Postfix queues it
        n = self.pf.queue_files()
        self.send("b@ver.test", requiretls=False)
        if not wait_for(lambda: self.pf.queue_files() > n, 30):
            self.fail(f"a plain message did not reach Postfix{self.diag()}")

    def test_tls_required_no_relaxes_dane(self):
        tok_no = self.send("a@strict.test", requiretls=False, headers=["TLS-Required: No"])
        tok = self.send("b@strict.test", requiretls=False)
        self.arrived(self.plain_sink, tok_no)
        time.sleep(1)
        self.assertFalse([m for m in self.plain_sink.messages()
                          if f"X-Token: {tok}".encode() in m.body],
                         "dane-only sent a message without TLS-Required: No")
        con = self.mxd.db()
        try:
            rows = con.execute("SELECT r.last_reply FROM message_rcpts r JOIN messages m ON "
                               "m.id = r.message_id WHERE r.address = 'b@strict.test'").fetchall()
        finally:
            con.close()
        self.assertTrue(rows and rows[0][0] and re.match(r"4\d\d 4\.7\.5", rows[0][0]),
                        f"{rows}{self.diag()}")

    def tls_policy(self, domain, *opts):
        p = self.mxd.mxctl("tls-policy", domain, *opts)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return p.stdout.decode()

    def test_mxctl_tls_policy(self):
        out = self.tls_policy("ver.test")
        self.assertIn("policy: verify (from [domain ver.test] tls", out)
        self.assertIn(f"next hop: primary = 127.0.0.1:{self.pf_tls}", out)
        self.assertIn(f"hop: 127.0.0.1 port {self.pf_tls} tlsa=none", out)
        self.assertRegex(out, r"requiretls: sent over verified TLS with REQUIRETLS")
        self.assertIn("mta-sts: does not apply (not delivered by MX lookup)", out)
        out = self.tls_policy("enc.test")
        self.assertRegex(out, r"requiretls: bounced 5\.7\.30: no authenticated TLS")
        doc = json.loads(self.tls_policy("strict.test", "--json"))
        self.assertEqual((doc["policy"], doc["role"]), ("dane-only", "backup"))
        self.assertEqual(doc["hops"][0]["tlsa"], "none")
        self.assertIn("deferred 4.7.5 (dane-only)", doc["applies"])
        p = self.mxd.mxctl("tls-policy")
        self.assertEqual(p.returncode, 2, p.stderr.decode())


if __name__ == "__main__":
    unittest.main(verbosity=2)
