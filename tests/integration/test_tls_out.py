"""Outbound STARTTLS (RFC 3207) when forwarding as a backup MX, against a
real TLS server: the aiosmtpd primary (tests/integration/primary.py) with
Python's ssl and certificates made by certtool for the test.

- tls = opportunistic, primary offers STARTTLS: the message arrives over
  TLS; the next connection resumes the TLS session from the ticket the
  primary gave (the primary's ssl object says session_reused).
- opportunistic, the handshake fails (the primary wants TLS 1.3, mxd's
  priority allows 1.2 only): mxd connects again in plain text and the
  message arrives, in plain text.
- tls = required, primary without STARTTLS: nothing is sent (no MAIL at
  the primary), the recipient is held with 4.7.4.
- tls = verify, primary with a self-signed certificate: held, the reason
  names the certificate verification; nothing is sent.
- tls = verify with ca_file = the test CA: delivered over TLS.
- tls = verify with a ca_file that cannot be read: mxd refuses to start
  and says why.
- LMTP over TCP to a Dovecot with ssl = yes, tls = verify: STARTTLS in
  LHLO, verified, delivered into the maildir.
"""

import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
import tlsutil  # noqa: E402
from dovecot import Dovecot, make_message, smtp_send, wait_for  # noqa: E402
from test_backup import DOMAIN, QUEUE_FAST, SENDER, BackupCase  # noqa: E402

PRIMARY_NAME = "primary.test.invalid"


class TlsCase(BackupCase):
    """BackupCase with a test PKI made before the primary starts.
    PRIMARY_TLS: "ca" (certificate from the test CA), "self" (self-signed)
    or None (no STARTTLS). TLS_MIN: the primary's minimum version."""

    PRIMARY_TLS = "ca"
    TLS_MIN = None

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__ + "-pki")
        cls.pki = tlsutil.make_pki(cls.pki_dir, hostname=PRIMARY_NAME)
        tls = None
        if cls.PRIMARY_TLS == "ca":
            tls = (cls.pki.cert, cls.pki.key)
        elif cls.PRIMARY_TLS == "self":
            tls = tlsutil.make_self_signed(cls.pki, cn=PRIMARY_NAME)
        cls.PRIMARY_KW = dict(cls.PRIMARY_KW, tls=tls, tls_min=cls.TLS_MIN)
        extra = cls.domain_extra()
        if extra:
            cls.DOMAIN_EXTRA = dict(cls.DOMAIN_EXTRA, **extra)
        super().setUpClass()

    @classmethod
    def domain_extra(cls):
        return {}

    def send_one(self, tag):
        token = f"{tag}-{os.urandom(4).hex()}"
        msg = make_message(SENDER, [f"u01@{DOMAIN}"], f"tls {token}", [f"token {token}"],
                           [f"X-Token: {token}"])
        qid = self.send(SENDER, [f"u01@{DOMAIN}"], msg)
        return token, qid

    def arrived(self, token, timeout=30):
        def find():
            for m in self.primary.messages():
                if f"X-Token: {token}".encode() in m.body:
                    return m
            return None

        m = wait_for(find, timeout)
        if m is None:
            self.fail(f"message {token} did not reach the primary{self.diag()}")
        return m

    def mails_at_primary(self):
        return len(self.primary.events("mail"))


class TestOpportunistic(TlsCase):
    DOMAIN_EXTRA = {"tls": "opportunistic"}

    def test_delivered_over_tls_then_resumed(self):
        quits = len(self.primary.events("quit"))  # the start-up probe's
        token, _ = self.send_one("opp1")
        m = self.arrived(token)
        tls = m.envelope.get("tls")
        self.assertIsNotNone(tls, f"first message came in plain text: {m.envelope}")
        self.assertIn(tls["version"], ("TLSv1.2", "TLSv1.3"))
        # mxd closes an idle connection after 5 s; the next message needs a
        # new connection, which offers the ticket from the first.
        if not wait_for(lambda: len(self.primary.events("quit")) > quits, 20):
            self.fail(f"mxd did not QUIT the idle connection{self.diag()}")
        token2, _ = self.send_one("opp2")
        m2 = self.arrived(token2)
        tls2 = m2.envelope.get("tls")
        self.assertIsNotNone(tls2, f"second message came in plain text: {m2.envelope}")
        self.assertTrue(tls2["resumed"], f"second TLS session not resumed: {tls2}{self.diag()}")
        self.assertRegex(self.mxd.all_stderr(), r"tls established server=\S+ tls=\"TLS1\.\d "
                         r"[^\"]+\" verified=no resumed=yes")


class TestOpportunisticFallback(TlsCase):
    """The handshake fails: a new plain-text connection, never plain text
    on the failed one."""
    TLS_MIN = "1.3"
    DOMAIN_EXTRA = {"tls": "opportunistic"}
    EXTRA = QUEUE_FAST + "[tls]\npriority = NORMAL:-VERS-ALL:+VERS-TLS1.2\n"

    def test_plain_after_failed_handshake(self):
        token, _ = self.send_one("fallback")
        m = self.arrived(token)
        self.assertIsNone(m.envelope.get("tls"), m.envelope)
        self.assertRegex(self.mxd.all_stderr(), r"tls failed server=\S+ reason=\"[^\"]+\" "
                         r"retry=plain")
        # two connections: the failed handshake, then the plain one
        self.assertGreaterEqual(len(self.primary.events("connect")), 2)


class TestRequiredWithoutTls(TlsCase):
    PRIMARY_TLS = None
    DOMAIN_EXTRA = {"tls": "required"}

    def test_held_not_sent(self):
        _, qid = self.send_one("required")
        self.wait_held(1, qids={qid}, states=("held", "deferred"),
                       reply_rx=re.compile(r"^451 4\.7\.4 TLS required.*does not offer STARTTLS"))
        self.assertEqual(self.mails_at_primary(), 0, "MAIL was sent without TLS")
        self.assertEqual(self.primary.count(), 0)


class TestVerifySelfSigned(TlsCase):
    PRIMARY_TLS = "self"
    DOMAIN_EXTRA = {"tls": "verify"}

    @classmethod
    def domain_extra(cls):
        return {"ca_file": cls.pki.ca_cert}

    def test_held_not_sent(self):
        _, qid = self.send_one("selfsigned")
        self.wait_held(1, qids={qid}, states=("held", "deferred"),
                       reply_rx=re.compile(r"^451 4\.7\.5 TLS handshake with \S+ failed: certificate "
                                           r"verification failed"))
        self.assertEqual(self.mails_at_primary(), 0, "MAIL was sent to an unverified server")


class TestVerifyWithCaFile(TlsCase):
    DOMAIN_EXTRA = {"tls": "verify"}

    @classmethod
    def domain_extra(cls):
        return {"ca_file": cls.pki.ca_cert}

    def test_delivered_verified(self):
        token, _ = self.send_one("verified")
        m = self.arrived(token)
        self.assertIsNotNone(m.envelope.get("tls"), m.envelope)
        self.assertRegex(self.mxd.all_stderr(), r"tls established server=\S+ tls=\"[^\"]+\" "
                         r"verified=yes")


class TestLmtpTcpTls(unittest.TestCase):
    def test_dovecot_lmtp_starttls_verified(self):
        tmp = mxdtest.make_tmpdir(self.addCleanup, "lmtp-tls")
        os.chmod(tmp, 0o755)
        pki = tlsutil.make_pki(os.path.join(tmp, "pki"), hostname="127.0.0.1")
        extra = f"ssl = yes\nssl_cert = <{pki.cert}\nssl_key = <{pki.key}\n"
        dov = Dovecot(tmpdir=tmp, extra_conf=extra, unix=False)
        self.addCleanup(dov.close)
        dov.start()
        mxd = mxdtest.Mxd(tmp, domains={"example.test": {
            "mode": "local", "lmtp": dov.lmtp_tcp, "tls": "verify", "ca_file": pki.ca_cert}})
        mxd.start()
        self.addCleanup(lambda: mxd.stop() if mxd.running() else None)
        msg = make_message("a@client.test", ["u@example.test"], "lmtp tls", ["over TLS"])
        smtp_send(mxd.port, "a@client.test", ["u@example.test"], msg)
        if not wait_for(lambda: dov.count("u@example.test"), 20):
            self.fail(f"not delivered:\n{mxd.all_stderr()[-3000:]}\n{dov.logs(3000)}")
        self.assertRegex(mxd.all_stderr(), r"lmtp tls established server=127\.0\.0\.1:\d+ "
                         r"tls=\"TLS1\.[23] [^\"]+\" verified=yes")


class TestUnreadableCaFile(unittest.TestCase):
    def test_refuses_to_start(self):
        tmpdir = mxdtest.make_tmpdir(self.addCleanup, "ca-missing")
        mxd = mxdtest.Mxd(tmpdir, domains={DOMAIN: {"mode": "backup", "primary": "127.0.0.1:9",
                                                     "tls": "verify",
                                                     "ca_file": "/nonexistent/ca.pem"}})
        with self.assertRaisesRegex(AssertionError, r"(?s)exited with status [1-9].*"
                                    r"cannot load trust anchors from /nonexistent/ca\.pem"):
            mxd.start(timeout=15)


if __name__ == "__main__":
    unittest.main(verbosity=2)
