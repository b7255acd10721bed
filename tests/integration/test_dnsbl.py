"""DNSBL and DNSWL scoring and FCrDNS (issue 16 part 3) against the real
mxd, with the scripted DNS server (authdns.py) serving a blocklist under a
private query key, two small blocklists, an allowlist and reverse zones.
Every client address comes in a PROXY header from 127.0.0.1 (the listener
is marked proxy), so all traffic stays on loopback.

Cases: a listed client is refused in the greeting's place with 554 5.7.1
naming the public list (dnsbl_reply_map), never the private key, an IPv6
one too (nibble query names); weights sum across lists (two lists of
weight 1 reach the threshold 2, one does not); an answer outside a list's
filter does not count; 127.255.255.254 never counts (logged as a list
error); a DNSWL-listed client is trusted and spared greylisting;
trusted_networks skip the lookups; dnsbl_action = enforce refuses each
RCPT instead, with a log line per attempt; a silent DNS server costs a
bounded wait (dnsbl_timeout), then the client is taken as not listed;
FCrDNS confirmed (IPv4, IPv6) puts the name in Received:, an unconfirmed
one adds fcrdns_weight to the score; the metrics count it all. Each test
fails with check_dnsbl removed from check_list.c (the listed clients get
220, the names are missing, the log lines and metrics absent).

ScreeningTest: the DNSBL test as one of the screening's tests, beside the
pre-greet test: a silent list delays the greeting by greet_wait, not
dnsbl_timeout, and a listed client is refused right after the wait; a
pass is remembered (the store's screen table) and the next connection
asks no query and is greeted at once; a listed client is not remembered;
client_trusted (greylisting spared) needs both tests remembered; an
allowlisted client ends the pre-greet wait and is remembered for both.
These fail on the code before the two were joined (the greeting waits
dnsbl_timeout, nothing is remembered, the pre-greet pass alone trusts).
"""

import os
import re
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from authdns import AuthDns, silent_port  # noqa: E402

KEY = "s3cr3tkey.dq.bl.test"  # the private query key
PUBLIC = "zen.bl.test"  # what replies show instead
SITES = (f"{KEY}*3, small.test=127.0.0.[2..11]*1, other.test*1, wl.test*-5")


def rev4(ip):
    return ".".join(reversed(ip.split(".")))


def nibbles(ip6):
    import ipaddress
    return ".".join(reversed(ipaddress.ip_address(ip6).exploded.replace(":", "")))


ZONE = {
    # 192.0.2.10: on the private list alone (weight 3)
    f"{rev4('192.0.2.10')}.{KEY}": [("A", "127.0.0.2")],
    # 192.0.2.11: on both lists of weight 1 (2: the threshold)
    f"{rev4('192.0.2.11')}.small.test": [("A", "127.0.0.3")],
    f"{rev4('192.0.2.11')}.other.test": [("A", "127.0.0.2")],
    # 192.0.2.12: on one list of weight 1
    f"{rev4('192.0.2.12')}.small.test": [("A", "127.0.0.2")],
    # 192.0.2.13: small.test answers outside its filter, other.test lists
    f"{rev4('192.0.2.13')}.small.test": [("A", "127.0.0.12")],
    f"{rev4('192.0.2.13')}.other.test": [("A", "127.0.0.2")],
    # 192.0.2.14: the private list refuses the query (Spamhaus's error code)
    f"{rev4('192.0.2.14')}.{KEY}": [("A", "127.255.255.254")],
    # 192.0.2.15: on the allowlist
    f"{rev4('192.0.2.15')}.wl.test": [("A", "127.0.10.2")],
    # 192.0.2.16: listed, but in trusted_networks
    f"{rev4('192.0.2.16')}.{KEY}": [("A", "127.0.0.2")],
    # 2001:db8::10: listed
    f"{nibbles('2001:db8::10')}.{KEY}": [("A", "127.0.0.4")],
    # FCrDNS: .20 confirmed, .21 forged, .22 without PTR, 2001:db8::20 confirmed
    f"{rev4('192.0.2.20')}.in-addr.arpa": [("PTR", "mail.good.test")],
    "mail.good.test": [("A", "192.0.2.20")],
    f"{rev4('192.0.2.21')}.in-addr.arpa": [("PTR", "forged.test")],
    "forged.test": [("A", "192.0.2.99")],
    f"{rev4('192.0.2.20')}.small.test": [("A", "127.0.0.2")],
    f"{rev4('192.0.2.21')}.small.test": [("A", "127.0.0.2")],
    f"{nibbles('2001:db8::20')}.ip6.arpa": [("PTR", "v6.good.test")],
    "v6.good.test": [("AAAA", "2001:db8::20")],
    f"{rev4('192.0.2.23')}.in-addr.arpa": [("PTR", "mx23.good.test")],
    "mx23.good.test": [("A", "192.0.2.23")],
    # the screening (ScreeningTest): .40 the private list never answers;
    # .41 listed there (3), small.test never answers; .43 a list error
    f"{rev4('192.0.2.40')}.{KEY}": [("TIMEOUT", None)],
    f"{rev4('192.0.2.41')}.{KEY}": [("A", "127.0.0.2")],
    f"{rev4('192.0.2.41')}.small.test": [("TIMEOUT", None)],
    f"{rev4('192.0.2.43')}.{KEY}": [("A", "127.255.255.254")],
    f"{rev4('192.0.2.45')}.wl.test": [("A", "127.0.10.2")],
}

DOMAINS = {
    "example.test": {"mode": "local", "recipients": "any"},
    "grey.test": {"mode": "local", "recipients": "any", "greylist": "on"},
}


class DnsblCase(mxdtest.ClassMxd, unittest.TestCase):
    """One mxd behind a proxy listener, DNS from cls.dns (or SILENT)."""

    SERVER = {}
    SILENT = False

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        if cls.SILENT:
            cls.silent = silent_port()
            cls.addClassCleanup(cls.silent.close)
            dns = f"127.0.0.1:{cls.silent.getsockname()[1]}"
        else:
            cls.dns = AuthDns(ZONE).start()
            cls.addClassCleanup(cls.dns.stop)
            dns = cls.dns.server
        cls.mport = mxdtest.free_port()
        server = {
            "dns_servers": dns,
            "proxy_networks": "127.0.0.1/32",
            "metrics_listen": f"127.0.0.1:{cls.mport}",
            "dnsbl_sites": SITES,
            "dnsbl_reply_map": f"{KEY}={PUBLIC}",
            "dnsbl_threshold": "2",
            "dnsbl_timeout": "2s",
            "trusted_networks": "192.0.2.16/32",
            **cls.SERVER,
        }
        mxd = mxdtest.Mxd(cls.tmpdir, server=server, domains=DOMAINS)
        mxd.server["listen"] = f"127.0.0.1:{mxd.port} proxy"
        mxd.write_config()
        cls.start_mxd(mxd)

    def connect(self, ip, banner=True):
        c = self.mxd.client(proxy=ip, banner=banner, timeout=15)
        self.addCleanup(c.close)
        return c

    def metrics(self):
        url = f"http://127.0.0.1:{self.mport}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()

    def metric(self, name, **labels):
        sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
        m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(name), re.escape(sel)), self.metrics(),
                      re.M)
        return int(m.group(1)) if m else 0

    def log_line(self, ip):
        """The decision's log line for client ip (waits for it a little)."""
        pat = re.compile(r"check dnsbl client=%s result=.*" % re.escape(ip))
        deadline = time.monotonic() + 5
        while True:
            m = pat.search(self.mxd.stderr())
            if m or time.monotonic() > deadline:
                self.assertIsNotNone(m, f"no dnsbl log line for {ip}")
                return m.group(0)
            time.sleep(0.05)

    def assertLogged(self, text, timeout=5):
        """text shows up in the log (the file may lag a reply a little)."""
        deadline = time.monotonic() + timeout
        while text not in self.mxd.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn(text, self.mxd.stderr())

    def assertRefusedAtConnect(self, ip, public):
        c = self.connect(ip, banner=False)
        r = c.reply()
        self.assertEqual(r.code, 554, r)
        self.assertEqual(r.enh, "5.7.1", r)
        self.assertIn(f"client [{ip}] blocked using {public}", r.text)
        self.assertTrue(c.wait_closed(), "the session stays open after 554")
        return r

    def send(self, ip, rcpt="alice@example.test"):
        """A message from ip; returns (final reply, qid)."""
        c = self.connect(ip)
        content = f"Subject: t\r\n\r\n{self.token()}\r\n".encode()
        r = c.send_message("someone@sender.test", [rcpt], content)
        return r, r.qid


class RejectTest(DnsblCase):
    def test_listed_refused_names_public_list(self):
        before = self.metric("mxd_dnsbl_total", result="listed")
        r = self.assertRefusedAtConnect("192.0.2.10", PUBLIC)
        self.assertNotIn("s3cr3tkey", r.text)
        line = self.log_line("192.0.2.10")
        self.assertIn("result=listed score=3 threshold=2 lists=zen.bl.test:3", line)
        self.assertIn("action=reject", line)
        self.assertNotIn("s3cr3tkey", line)
        # the query used the private key
        self.assertIn((f"{rev4('192.0.2.10')}.{KEY}", "A"), self.dns.queries)
        self.assertEqual(self.metric("mxd_dnsbl_total", result="listed"), before + 1)
        self.assertGreaterEqual(self.metric("mxd_dnsbl_list_answers_total", list=PUBLIC,
                                            result="listed"), 1)
        self.assertNotIn("s3cr3tkey", self.metrics())

    def test_ipv6_listed(self):
        self.assertRefusedAtConnect("2001:db8::10", PUBLIC)
        self.assertIn("result=listed score=3", self.log_line("2001:db8::10"))

    def test_weights_sum(self):
        # two lists of weight 1: 2, the threshold; the reply names one
        r = self.assertRefusedAtConnect("192.0.2.11", "small.test")
        self.assertIn("lists=small.test:1,other.test:1", self.log_line("192.0.2.11"))
        self.assertNotIn("s3cr3tkey", r.text)
        # one list of weight 1 only: accepted
        r, qid = self.send("192.0.2.12")
        self.assertEqual(r.code, 250, r)
        self.assertIn("result=pass score=1 threshold=2 lists=small.test:1",
                      self.log_line("192.0.2.12"))

    def test_answer_filtered_out(self):
        # small.test's 127.0.0.12 is outside 127.0.0.[2..11]: 1, not 2
        r, _ = self.send("192.0.2.13")
        self.assertEqual(r.code, 250, r)
        self.assertIn("result=pass score=1 threshold=2 lists=other.test:1 list_errors=-",
                      self.log_line("192.0.2.13"))

    def test_list_error_not_counted(self):
        errors = self.metric("mxd_dnsbl_list_answers_total", list=PUBLIC, result="error")
        r, _ = self.send("192.0.2.14")
        self.assertEqual(r.code, 250, r)
        line = self.log_line("192.0.2.14")
        self.assertIn("result=pass score=0 threshold=2 lists=- list_errors=zen.bl.test", line)
        self.assertEqual(self.metric("mxd_dnsbl_list_answers_total", list=PUBLIC,
                                     result="error"), errors + 1)

    def test_allowlisted_trusted_spared_greylisting(self):
        trusted = self.metric("mxd_dnsbl_total", result="trusted")
        r, qid = self.send("192.0.2.15", rcpt="bob@grey.test")
        self.assertEqual(r.code, 250, r)
        self.assertIn("result=trusted score=-5", self.log_line("192.0.2.15"))
        self.assertRegex(self.mxd.stderr(), r"check greylist client=192\.0\.2\.15 .* "
                                            r"action=skip reason=")
        self.assertEqual(self.metric("mxd_dnsbl_total", result="trusted"), trusted + 1)
        # a client the allowlist does not know is greylisted
        c = self.connect("192.0.2.30")
        c.ehlo()
        self.assertEqual(c.cmd("MAIL FROM:<x@sender.test>").code, 250)
        r = c.cmd("RCPT TO:<bob@grey.test>")
        self.assertEqual((r.code, r.enh), (451, "4.7.1"), r)

    def test_trusted_networks_skipped(self):
        asked = len(self.dns.queries)
        r, _ = self.send("192.0.2.16")
        self.assertEqual(r.code, 250, r)
        self.assertIn("check dnsbl client=192.0.2.16 result=skip reason=trusted_networks",
                      self.mxd.stderr())
        self.assertFalse([q for q in self.dns.queries[asked:] if "16.2.0.192" in q[0]],
                         "a trusted client was looked up")


class EnforceTest(DnsblCase):
    SERVER = {"dnsbl_action": "enforce"}

    def test_each_rcpt_refused(self):
        refused = self.metric("mxd_dnsbl_total", result="refused-rcpt")
        c = self.connect("192.0.2.10")  # the greeting comes
        c.ehlo()
        self.assertEqual(c.cmd("MAIL FROM:<spammer@sender.test>").code, 250)
        for rcpt in ("a@example.test", "b@example.test"):
            r = c.cmd(f"RCPT TO:<{rcpt}>")
            self.assertEqual((r.code, r.enh), (554, "5.7.1"), r)
            self.assertIn(f"blocked using {PUBLIC}", r.text)
            self.assertNotIn("s3cr3tkey", r.text)
        self.assertIn("result=listed score=3", self.log_line("192.0.2.10"))
        self.assertIn("action=enforce", self.log_line("192.0.2.10"))
        want = [f"check dnsbl client=192.0.2.10 sender=<spammer@sender.test> "
                f"rcpt=<{rcpt}> result=refused action=enforce"
                for rcpt in ("a@example.test", "b@example.test")]
        for w in want:
            self.assertLogged(w)
        self.assertEqual(self.metric("mxd_dnsbl_total", result="refused-rcpt"), refused + 2)
        # a clean client is not refused
        r, _ = self.send("192.0.2.31")
        self.assertEqual(r.code, 250, r)


class SilentDnsTest(DnsblCase):
    SILENT = True
    SERVER = {"dnsbl_timeout": "1s"}

    def test_bounded_wait_then_not_listed(self):
        t0 = time.monotonic()
        c = self.connect("192.0.2.10", banner=False)
        r = c.reply(timeout=10)
        waited = time.monotonic() - t0
        self.assertEqual(r.code, 220, r)
        self.assertGreater(waited, 0.8)
        self.assertLess(waited, 3.0)
        line = self.log_line("192.0.2.10")
        self.assertIn("result=pass score=0", line)
        self.assertIn("timeouts=zen.bl.test,small.test,other.test,wl.test", line)
        self.assertGreaterEqual(self.metric("mxd_dnsbl_list_answers_total", list=PUBLIC,
                                            result="timeout"), 1)
        c.ehlo()
        content = f"Subject: t\r\n\r\n{self.token()}\r\n".encode()
        r = c.send_message("someone@sender.test", ["a@example.test"], content, ehlo=False)
        self.assertEqual(r.code, 250, r)


class FcrdnsTest(DnsblCase):
    SERVER = {"dnsbl_sites": "small.test=127.0.0.[2..11]*1", "dnsbl_reply_map": None,
              "fcrdns": "on", "fcrdns_weight": "1"}

    def received(self, qid):
        msg = mxdtest.message_by_qid(self.mxd.db_path, qid)
        hdr, _ = mxdtest.split_received(msg["row"]["body"])
        return mxdtest.unfold(hdr)

    def test_confirmed_name_in_received(self):
        confirmed = self.metric("mxd_fcrdns_total", result="confirmed")
        r, qid = self.send("192.0.2.20")  # listed once (1), confirmed: 1 < 2
        self.assertEqual(r.code, 250, r)
        self.assertIn("from client.test (mail.good.test [192.0.2.20])", self.received(qid))
        line = self.log_line("192.0.2.20")
        self.assertIn("result=pass score=1", line)
        self.assertIn("fcrdns=confirmed name=mail.good.test", line)
        self.assertEqual(self.metric("mxd_fcrdns_total", result="confirmed"), confirmed + 1)

    def test_ipv6_confirmed(self):
        r, qid = self.send("2001:db8::20")
        self.assertEqual(r.code, 250, r)
        self.assertIn("(v6.good.test [IPv6:2001:db8::20])", self.received(qid))

    def test_unconfirmed_adds_weight(self):
        # forged PTR (its name points elsewhere) + one list = 2: refused
        self.assertRefusedAtConnect("192.0.2.21", "small.test")
        line = self.log_line("192.0.2.21")
        self.assertIn("result=listed score=2", line)
        self.assertIn("fcrdns=unconfirmed name=-", line)
        # no PTR and no listing: 1, accepted, no name in Received:
        r, qid = self.send("192.0.2.22")
        self.assertEqual(r.code, 250, r)
        self.assertIn("from client.test ([192.0.2.22])", self.received(qid))
        self.assertIn("fcrdns=unconfirmed", self.log_line("192.0.2.22"))
        self.assertGreaterEqual(self.metric("mxd_fcrdns_total", result="unconfirmed"), 2)

    def test_remembered_client_name_still_looked_up(self):
        # not listed, confirmed: remembered; next time no list is asked,
        # but the PTR is, for the name in Received:
        ip = "192.0.2.23"
        r, qid = self.send(ip)
        self.assertEqual(r.code, 250, r)
        self.assertIn("remembered=yes", self.log_line(ip))
        asked = len(self.dns.queries)
        r, qid = self.send(ip)
        self.assertEqual(r.code, 250, r)
        self.assertIn("(mx23.good.test [192.0.2.23])", self.received(qid))
        self.assertLogged(f"check dnsbl client={ip} result=known fcrdns=confirmed "
                          f"name=mx23.good.test")
        names = [q[0] for q in self.dns.queries[asked:]]
        self.assertIn(f"{rev4(ip)}.in-addr.arpa", names)
        self.assertNotIn(f"{rev4(ip)}.small.test", names)


class DnsblOnlyTest(DnsblCase):
    """With the pre-greet test off, a remembered DNSBL pass skips the
    lookups but does not make the client trusted: not being listed says
    nothing of its behaviour, so greylisting still applies (only a DNSWL
    spares it)."""

    SERVER = {"greylist_delay": "1h"}

    def test_dnsbl_pass_alone_does_not_spare_greylisting(self):
        ip = "192.0.2.44"  # on no list
        for attempt in range(2):
            c = self.connect(ip)
            if attempt == 1:
                self.assertLogged(f"check dnsbl client={ip} result=known")
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<s@sender.test>").code, 250)
            r = c.cmd(f"RCPT TO:<bob{attempt}@grey.test>")
            self.assertEqual(r.code, 451, f"attempt {attempt}: {r}")
            c.close()
            if attempt == 0:  # the pass is written by the store's writer
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    db = self.mxd.db()
                    try:
                        row = db.execute("SELECT 1 FROM screen WHERE client = ? AND test = "
                                         "'dnsbl'", (ip,)).fetchone()
                    finally:
                        db.close()
                    if row:
                        break
                    time.sleep(0.1)
                self.assertTrue(row, "the DNSBL pass was not remembered")


class ScreeningTest(DnsblCase):
    """The DNSBL test inside the screening, beside the pre-greet test
    (greet_wait 1s, dnsbl_timeout 4s): the greeting waits no longer than
    the pre-greet wait for the lists; a pass is remembered and skips the
    lookups; a DNSWL ends the wait; client_trusted needs both passes."""

    WAIT = 1.0
    SERVER = {"greet_action": "reject", "greet_wait": "1s", "dnsbl_timeout": "4s",
              "trusted_networks": "127.0.0.1, 192.0.2.16/32", "greylist_delay": "1h"}

    def greet(self, ip):
        """Connects: (client, greeting, seconds to the greeting's last line)."""
        t0 = time.monotonic()
        c = self.connect(ip, banner=False)
        r = c.reply(timeout=10)
        return c, r, time.monotonic() - t0

    def asked(self, ip, since=0):
        """DNSBL/DNSWL queries for ip since index since of the query log."""
        return [q for q in self.dns.queries[since:] if q[0].startswith(rev4(ip) + ".")]

    def remembered(self, ip, test="dnsbl", timeout=5):
        """Whether the store's screen table has ip's pass of test (waits a
        little for the write)."""
        deadline = time.monotonic() + timeout
        while True:
            db = self.mxd.db()
            try:
                row = db.execute("SELECT 1 FROM screen WHERE client = ? AND test = ?",
                                 (ip, test)).fetchone()
            finally:
                db.close()
            if row is not None or time.monotonic() > deadline:
                return row is not None
            time.sleep(0.1)

    def greylisted(self, c):
        """The client's first RCPT to a greylisted domain: 451 (True) or 250."""
        c.ehlo()
        self.assertEqual(c.cmd("MAIL FROM:<s@sender.test>").code, 250)
        r = c.cmd("RCPT TO:<bob@grey.test>")
        self.assertIn(r.code, (250, 451), r)
        return r.code == 451

    def test_silent_list_greeting_after_greet_wait(self):
        c, r, took = self.greet("192.0.2.40")
        self.assertEqual(r.code, 220, r)
        self.assertEqual(len(r.lines), 2, "teaser and greeting")
        self.assertGreaterEqual(took, self.WAIT - 0.05)
        self.assertLess(took, self.WAIT + 1.0, "the greeting waited for the silent list")
        line = self.log_line("192.0.2.40")
        self.assertIn("result=pass score=0", line)
        self.assertIn("timeouts=zen.bl.test ", line)
        self.assertIn("remembered=no", line)  # a list did not answer

    def test_listed_refused_after_the_wait(self):
        c, r, took = self.greet("192.0.2.41")  # small.test (silent) still out
        self.assertEqual(r.code, 220, r)  # the teaser's greeting ends ...
        self.assertGreaterEqual(took, self.WAIT - 0.05)
        self.assertLess(took, self.WAIT + 1.0, "the verdict waited for the silent list")
        r = c.cmd("EHLO client.test")  # ... and its first command is refused
        self.assertEqual((r.code, r.enh), (554, "5.7.1"), r)
        self.assertIn(f"blocked using {PUBLIC}", r.text)
        self.assertTrue(c.wait_closed())
        line = self.log_line("192.0.2.41")
        self.assertIn("result=listed score=3", line)
        self.assertIn("timeouts=small.test ", line)
        self.assertIn("remembered=no", line)

    def test_pass_remembered_lookups_skipped(self):
        ip, listed = "192.0.2.42", "192.0.2.10"
        c, r, took = self.greet(ip)
        self.assertEqual((r.code, len(r.lines)), (220, 2), r)  # teaser, then the wait
        self.assertTrue(self.asked(ip))
        self.assertIn("result=pass score=0", self.log_line(ip))
        self.assertIn("remembered=yes", self.log_line(ip))
        self.assertTrue(self.greylisted(c), "trusted before both tests passed")
        c.close()
        # a listed client is refused and not remembered
        c, r, _ = self.greet(listed)
        self.assertEqual(c.cmd("EHLO client.test").code, 554)
        self.assertIn("remembered=no", self.log_line(listed))
        self.assertTrue(self.remembered(ip))
        self.assertFalse(self.remembered(listed, timeout=0.5))
        self.assertTrue(self.remembered(listed, test="pregreet"))  # it waited
        # next time: no query at all, greeted at once, trusted
        asked = len(self.dns.queries)
        known = self.metric("mxd_dnsbl_total", result="known")
        c, r, took = self.greet(ip)
        self.assertEqual((r.code, len(r.lines)), (220, 1), r)
        self.assertLess(took, 0.5)
        self.assertFalse(self.asked(ip, asked), "a remembered client was looked up")
        self.assertLogged(f"check dnsbl client={ip} result=known")
        self.assertEqual(self.metric("mxd_dnsbl_total", result="known"), known + 1)
        self.assertFalse(self.greylisted(c), "both tests passed: greylisting spares it")
        # the listed client is asked again (and refused, now without a wait)
        asked = len(self.dns.queries)
        c, r, took = self.greet(listed)
        self.assertEqual((r.code, r.enh), (554, "5.7.1"), r)
        self.assertTrue(self.asked(listed, asked))

    def test_trusted_only_when_every_test_passed(self):
        # pre-greet passes, the DNSBL test does not count (a list error)
        ip = "192.0.2.43"
        c, r, _ = self.greet(ip)
        self.assertEqual((r.code, len(r.lines)), (220, 2), r)
        self.assertIn("list_errors=zen.bl.test", self.log_line(ip))
        self.assertIn("remembered=no", self.log_line(ip))
        c.close()
        self.assertTrue(self.remembered(ip, test="pregreet"))
        asked = len(self.dns.queries)
        c, r, took = self.greet(ip)
        self.assertEqual((r.code, len(r.lines)), (220, 1), r)  # pre-greet remembered
        self.assertTrue(self.asked(ip, asked), "the DNSBL test is taken again")
        self.assertTrue(self.greylisted(c), "trusted with the DNSBL test not passed")

    def test_allowlisted_ends_the_wait(self):
        ip = "192.0.2.45"
        allow = self.metric("mxd_pregreet_total", result="allowlisted")
        c, r, took = self.greet(ip)
        self.assertEqual((r.code, len(r.lines)), (220, 2), r)  # the teaser went out
        self.assertLess(took, self.WAIT / 2, "an allowlisted client waited")
        self.assertIn("result=trusted score=-5", self.log_line(ip))
        self.assertLogged(f"check pregreet client={ip} result=allowlisted")
        self.assertEqual(self.metric("mxd_pregreet_total", result="allowlisted"), allow + 1)
        self.assertFalse(self.greylisted(c))
        c.close()
        # both tests count as passed: next time no wait, no lookup, trusted
        self.assertTrue(self.remembered(ip, test="pregreet"))
        self.assertTrue(self.remembered(ip))
        asked = len(self.dns.queries)
        c, r, took = self.greet(ip)
        self.assertEqual((r.code, len(r.lines)), (220, 1), r)
        self.assertLess(took, 0.5)
        self.assertFalse(self.asked(ip, asked))
        self.assertFalse(self.greylisted(c))


if __name__ == "__main__":
    mxdtest.main()
