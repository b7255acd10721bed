"""SPF at the SMTP layer (issue 6): mxd checks the envelope sender (or the
HELO name for <>) against a private dnsmasq (dns_servers), from 127.0.0.1
and ::1, and stores Authentication-Results and Received-SPF above its
Received: field; `spf = reject` refuses fail with 550 5.7.23 and temperror
with 451 4.7.24; a name server that never answers gives temperror in
bounded time; the RFC 7208 limits (10 DNS-querying terms, 2 void lookups)
hold; Authentication-Results fields claiming our authserv-id are removed
from the message, others kept.
"""

import os
import re
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from primary import Dnsmasq  # noqa: E402

HOST = mxdtest.HOSTNAME
RCPT = "user@example.test"

MANY = [f"h{i}.many.test" for i in range(1, 12)]
TXT = [
    ("pass.test", "v=spf1 ip4:127.0.0.1 ip6:::1 -all"),
    ("fail.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("softfail.test", "v=spf1 ip4:192.0.2.1 ~all"),
    ("neutral.test", "v=spf1 ?all"),
    # include chain: inc -> inc2 -> pass
    ("inc.test", "v=spf1 include:inc2.test -all"),
    ("inc2.test", "v=spf1 include:pass.test -all"),
    ("redir.test", "v=spf1 redirect=pass.test"),
    # 10 DNS-querying terms, then the match: pass; 11: permerror.
    ("ten.test", "v=spf1 " + " ".join(f"a:{h}" for h in MANY[:10]) + " ip4:127.0.0.1 ip6:::1 -all"),
    ("eleven.test", "v=spf1 " + " ".join(f"a:{h}" for h in MANY) + " ip4:127.0.0.1 ip6:::1 -all"),
    # The limit across includes: 1 + 1 + 9 = 11 terms.
    ("incmany.test", "v=spf1 a:h1.many.test include:nine.test ip4:127.0.0.1 ip6:::1 -all"),
    ("nine.test", "v=spf1 " + " ".join(f"a:{h}" for h in MANY[:9]) + " ?all"),
    # two void lookups are allowed, a third is permerror
    ("void2.test", "v=spf1 a:v1.nx.test a:v2.nx.test ip4:127.0.0.1 ip6:::1 -all"),
    ("void3.test", "v=spf1 a:v1.nx.test a:v2.nx.test a:v3.nx.test ip4:127.0.0.1 ip6:::1 -all"),
    ("notspf.test", "hello world - not an SPF record"),
    ("helo.test", "v=spf1 ip4:127.0.0.1 ip6:::1 -all"),
]
HOSTS = [(h, "192.0.2.99") for h in MANY]


def ar_block(body):
    """The Authentication-Results and Received-SPF fields, as stored, in
    front of Received:."""
    head = bytes(body).split(b"Received: from", 1)[0]
    return head.decode()


def expect_headers(result, ident, ident_value, comment, ip, env_from, helo="client.test"):
    return (f"Authentication-Results: {HOST};\r\n"
            f"\tspf={result} {ident}={ident_value}\r\n"
            f"Received-SPF: {result} ({HOST}: {comment})\r\n"
            f"\tclient-ip={ip}; envelope-from={env_from}; helo={helo};\r\n"
            f"\treceiver={HOST}; identity={'helo' if ident == 'smtp.helo' else 'mailfrom'}\r\n")


class AuthSpfTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="mxd-auth-spf-")
        cls.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        cls.silent.bind(("127.0.0.1", 0))
        cls.dns = Dnsmasq(cls.tmp.name, hosts=HOSTS, txt=TXT,
                          forward=[("timeout.test", f"127.0.0.1#{cls.silent.getsockname()[1]}")])
        cls.dns.start()
        cls.mxd = cls.start_mxd("tag")

    @classmethod
    def start_mxd(cls, mode, name="mxd"):
        port = mxdtest.free_port()
        m = mxdtest.Mxd(cls.tmp.name, name=name, port=port,
                        server={"dns_servers": cls.dns.server,
                                "listen": f"127.0.0.1:{port}, [::1]:{port}"},
                        extra=f"[auth]\nspf = {mode}\ndkim = off\ndmarc = off\n")
        m.start()
        return m

    @classmethod
    def tearDownClass(cls):
        for m in (cls.mxd, getattr(cls, "rej", None)):
            if m is not None:
                m.stop()
                m.check_sanitizers()
        cls.dns.stop()
        cls.silent.close()
        cls.tmp.cleanup()

    def send(self, sender, host="127.0.0.1", helo="client.test", content=None, m=None):
        m = m or self.mxd
        marker = f"marker-{time.monotonic_ns()}"
        content = content or f"Subject: t\r\n\r\n{marker}\r\n".encode()
        with mxdtest.SmtpClient(m.port, host=host) as c:
            c.reply()  # banner
            c.ehlo(helo)
            r = c.send_message(sender, [RCPT], content, ehlo=False)
        self.assertEqual(r.code, 250, str(r))
        row = mxdtest.message_by_qid(m.db_path, r.qid)
        self.assertIsNotNone(row)
        return bytes(row["row"]["body"]), r.qid

    def check(self, sender, result, comment_fmt, host="127.0.0.1", helo="client.test"):
        body, _ = self.send(sender, host=host, helo=helo)
        ident = "smtp.helo" if sender == "" else "smtp.mailfrom"
        value = helo if sender == "" else sender
        env_from = f"postmaster@{helo}" if sender == "" else sender
        comment = comment_fmt.format(id=value if sender else helo, ip=host)
        want = expect_headers(result, ident, value, comment.format(ip=host), host, env_from, helo)
        self.assertEqual(ar_block(body), want)

    def test_results_ipv4_and_ipv6(self):
        cases = [
            ("a@pass.test", "pass", "domain of {id} designates {ip} as permitted sender"),
            ("a@fail.test", "fail", "domain of {id} does not designate {ip} as permitted sender"),
            ("a@softfail.test", "softfail",
             "domain of transitioning {id} does not designate {ip} as permitted sender"),
            ("a@neutral.test", "neutral", "{ip} is neither permitted nor denied by domain of {id}"),
            ("a@inc.test", "pass", "domain of {id} designates {ip} as permitted sender"),
            ("a@redir.test", "pass", "domain of {id} designates {ip} as permitted sender"),
            ("a@notspf.test", "none", "domain of {id} does not designate permitted sender hosts"),
            ("a@nosuch.test", "none", "domain of {id} does not designate permitted sender hosts"),
        ]
        for host in ("127.0.0.1", "::1"):
            for sender, result, comment in cases:
                with self.subTest(sender=sender, host=host):
                    self.check(sender, result, comment, host=host)

    def test_null_sender_checks_helo(self):
        self.check("", "pass", "domain of {id} designates {ip} as permitted sender",
                   helo="helo.test")
        self.check("", "fail", "domain of {id} does not designate {ip} as permitted sender",
                   host="::1", helo="fail.test")

    def test_limits(self):
        self.check("a@ten.test", "pass", "domain of {id} designates {ip} as permitted sender")
        self.check("a@void2.test", "pass", "domain of {id} designates {ip} as permitted sender")
        for sender, why in (("a@eleven.test", "more than 10 DNS-querying terms"),
                            ("a@incmany.test", "more than 10 DNS-querying terms"),
                            ("a@void3.test", "more than 2 void lookups")):
            with self.subTest(sender=sender):
                self.check(sender, "permerror",
                           "permanent error in processing domain of {id}: " + why)

    def test_timeout_is_temperror(self):
        t0 = time.monotonic()
        self.check("a@timeout.test", "temperror",
                   "error in processing during lookup of {id}: DNS failure")
        self.assertLess(time.monotonic() - t0, 15)

    def test_existing_authentication_results(self):
        content = (f"Authentication-Results: {HOST.upper()}; spf=pass smtp.mailfrom=forged\r\n"
                   "Authentication-Results: other.example;\r\n dkim=pass header.d=x\r\n"
                   f"authentication-results: {HOST};\r\n\tdmarc=pass\r\n"
                   "Subject: kept\r\n\r\nbody\r\n").encode()
        body, qid = self.send("a@pass.test", content=content)
        rest = body.split(b"Received: from", 1)[1].split(b"\r\n\r\n", 1)[0]
        self.assertNotIn(b"forged", body)
        self.assertNotIn(b"dmarc=pass", body)
        self.assertIn(b"Authentication-Results: other.example;\r\n dkim=pass header.d=x\r\n", rest)
        self.assertEqual(body.count(f"Authentication-Results: {HOST};".encode()), 1)
        self.assertRegex(self.mxd.stderr(), rf"{qid} auth removed authentication-results count=2")

    def test_log_line_and_latency(self):
        _, qid = self.send("a@pass.test")
        m = re.search(rf"{qid} auth spf result=pass identity=mailfrom id=<a@pass.test> "
                      r"client=127.0.0.1 queries=(\d+) voids=0 ms=([\d.]+)", self.mxd.stderr())
        self.assertIsNotNone(m, self.mxd.stderr()[-2000:])
        self.assertEqual(m.group(1), "1")
        print(f"SPF check latency against local dnsmasq: {m.group(2)} ms")

    def test_reject_mode(self):
        if getattr(type(self), "rej", None) is None:
            type(self).rej = self.start_mxd("reject", name="rej")
        m = type(self).rej
        for host in ("127.0.0.1", "::1"):
            with mxdtest.SmtpClient(m.port, host=host) as c:
                c.reply()  # banner
                c.ehlo()
                self.assertEqual(c.cmd("MAIL FROM:<a@fail.test>").code, 250)
                r = c.cmd(f"RCPT TO:<{RCPT}>")
                self.assertEqual((r.code, r.enh), (550, "5.7.23"), str(r))
                self.assertEqual(c.cmd("RSET").code, 250)
                t0 = time.monotonic()
                self.assertEqual(c.cmd("MAIL FROM:<a@timeout.test>").code, 250)
                r = c.cmd(f"RCPT TO:<{RCPT}>", timeout=30)
                self.assertEqual((r.code, r.enh), (451, "4.7.24"), str(r))
                self.assertLess(time.monotonic() - t0, 15)
                self.assertEqual(c.cmd("RSET").code, 250)
                # softfail and pass are accepted, with pipelining
                c.send(f"MAIL FROM:<a@softfail.test>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n".encode())
                self.assertEqual([x.code for x in c.replies(3)], [250, 250, 354])
                c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
                self.assertEqual(c.reply().code, 250)
        body, _ = self.send("a@pass.test", m=m)
        self.assertIn("spf=pass smtp.mailfrom=a@pass.test", ar_block(body))


if __name__ == "__main__":
    unittest.main(verbosity=2)
