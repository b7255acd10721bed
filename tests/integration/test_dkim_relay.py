"""A DKIM-signed message relayed by mxd through a real Postfix and back
still verifies (issue 20): mxd changes no byte of the body on the way in
or out (dot-stuffing, line ends, trailing space, lines of one dot).

client -> mxd A (relay.test: backup, primary = Postfix)
       -> Postfix (private instance: relay.test delivered over SMTP)
       -> mxd B (relay.test: backup, primary = aiosmtpd) -> aiosmtpd

mxd B verifies the signature (c=simple/simple: any change fails) with
the key served by the scripted DNS server, and the message aiosmtpd gets
ends with the signed message, byte for byte.
"""

import os
import sys
import tempfile
import unittest

import dkim  # python3-dkim

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import mxdtest  # noqa: E402
from authdns import AuthDns  # noqa: E402
from postfix import Postfix  # noqa: E402
from primary import Primary  # noqa: E402

DATA = "/usr/lib/python3/dist-packages/dkim/tests/data"

BODY = (b"Lines that SMTP must carry unchanged:\r\n"
        b".\r\n"
        b"..\r\n"
        b".leading dot\r\n"
        b"trailing space   \r\n"
        b"\ttab first\r\n"
        b"\r\n"
        b"a long line " + b"x" * 900 + b"\r\n"
        b"..two dots\r\n"
        b"\r\n"
        b"\r\n")


def signed_message():
    with open(os.path.join(DATA, "2048_testkey.key"), "rb") as f:
        key = f.read()
    msg = (b"From: Sender <a@sender.test>\r\nTo: <user@relay.test>\r\n"
           b"Subject: relayed\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
           b"Message-ID: <relay-1@sender.test>\r\n\r\n" + BODY)
    sig = dkim.sign(msg, b"sel", b"sender.test", key, canonicalize=(b"simple", b"simple"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + msg


@unittest.skipUnless(os.path.exists("/usr/sbin/postfix"), "postfix not installed")
class DkimRelayTest(unittest.TestCase):
    def test_relay_through_postfix(self):
        with open(os.path.join(DATA, "2048_testkey_wo_markers.pub.txt"), encoding="ascii") as f:
            key_txt = f.read().strip()
        with tempfile.TemporaryDirectory(prefix="mxd-dkim-relay-") as tmp, \
                AuthDns({"sel._domainkey.sender.test": [("TXT", key_txt)],
                         "_dmarc.sender.test": [("TXT", "v=DMARC1; p=reject")]}) as dns:
            dns.start()
            auth = "[auth]\nspf = off\ndkim = tag\ndmarc = tag\n"
            sink = Primary(tmp)
            sink.start()
            b_port, pf_port = mxdtest.free_port(), mxdtest.free_port()
            b = mxdtest.Mxd(tmp, name="b", port=b_port, server={"dns_servers": dns.server},
                            domains={"relay.test": {"mode": "backup", "primary": sink.target,
                                                    "recipients": "any"}}, extra=auth)
            os.chmod(tmp, 0o755)  # Postfix's own users reach its queue below it
            pf = Postfix(tmp, pf_port, "relay.test", "/nonexistent",
                         extra="smtp_tls_security_level = none\n")
            # relay.test goes on over SMTP to mxd B, not over LMTP
            main_cf = os.path.join(pf.etc, "main.cf")
            with open(main_cf, encoding="utf-8") as f:
                conf = f.read().replace("virtual_transport = lmtp:unix:/nonexistent",
                                        f"virtual_transport = smtp:[127.0.0.1]:{b_port}")
            with open(main_cf, "w", encoding="utf-8") as f:
                f.write(conf)
            a = mxdtest.Mxd(tmp, name="a", server={"dns_servers": dns.server},
                            domains={"relay.test": {"mode": "backup",
                                                    "primary": f"127.0.0.1:{pf_port}",
                                                    "recipients": "any"}}, extra=auth)
            started = []
            try:
                for peer in (b, pf, a):
                    peer.start()
                    started.append(peer)
                signed = signed_message()
                with mxdtest.SmtpClient(a.port) as c:
                    c.reply()
                    c.ehlo("client.test")
                    r = c.send_message("a@sender.test", ["user@relay.test"],
                                       mxdtest.dot_stuff(signed), ehlo=False)
                self.assertEqual(r.code, 250, str(r))
                sink.wait_count(1, timeout=60)
                got = sink.messages()[0].body
                # What B stored: its own verification of what Postfix sent.
                self.assertIn(b"\tdkim=pass header.d=sender.test header.s=sel", got)
                self.assertIn(b"\tdmarc=pass (p=reject dis=none) header.from=sender.test", got)
                self.assertIn(b"Received: from", got)  # Postfix's trace field above
                self.assertTrue(got.endswith(signed), got[-300:])
            finally:
                for peer in reversed(started):
                    peer.stop()
                for m in (a, b):
                    if m in started:
                        m.check_sanitizers()
                sink.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
