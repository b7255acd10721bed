"""PROXY protocol v1 and v2 (issue 16 part 2) on a listener marked proxy.

- A real HAProxy (private config, loopback only) in front of mxd, one
  frontend with `send-proxy` (v1) and one with `send-proxy-v2` (with a
  unique-id TLV and LOCAL health checks), its outgoing address 127.0.0.9
  (the only proxy_networks entry) and the client's 127.0.0.7: mxd logs and
  stores 127.0.0.7, never 127.0.0.9.
- A Python client sending headers itself: v1 and v2 claiming 192.0.2.44
  and 2001:db8::7 are logged, stored in Received: and the messages row;
  malformed, truncated, oversized and slow headers, no header, and a
  header from outside proxy_networks are refused with a log line and a
  metric; the per-IP limit and etrn_clients see the proxied address;
  a reload can mark and unmark a listener.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import Mxd, proxy_header  # noqa: E402

RCPT = "user@example.test"
SIG = mxdtest.PROXY_V2_SIG
TIMEOUT = 1  # proxy_timeout, seconds
A4 = bytes([192, 0, 2, 44, 127, 0, 0, 1, 0x30, 0x39, 0, 25])


def wait_log(mxd, pattern, timeout=5, count=1):
    """The log lines matching pattern (a regex), once there are count."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in mxd.stderr(10**7).splitlines() if re.search(pattern, ln)]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def wrap(sock):
    """An SmtpClient over a socket the test opened and wrote to itself."""
    c = mxdtest.SmtpClient.__new__(mxdtest.SmtpClient)
    c.sock, c.buf, c.eof, c.timeout, c.banner = sock, b"", False, 10, None
    return c


def closed_silently(sock, timeout):
    """True when the server closes sock within timeout without sending."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        return False
    if data:
        raise AssertionError(f"mxd sent {data!r} on a refused PROXY connection")
    return True


class ProxyCase(mxdtest.ClassMxd, unittest.TestCase):
    """One mxd: a plain listener (mxd.port) and one marked proxy (pport)
    for the balancer 127.0.0.1."""

    NETWORKS = "127.0.0.1/32, ::1"
    SERVER = {}

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.pport = mxdtest.free_port()
        cls.mport = mxdtest.free_port()
        mxd = Mxd(cls.tmpdir, server={
            "proxy_networks": cls.NETWORKS,
            "proxy_timeout": str(TIMEOUT),
            "metrics_listen": f"127.0.0.1:{cls.mport}",
            **cls.SERVER,
        })
        mxd.server["listen"] = f"127.0.0.1:{mxd.port}, 127.0.0.1:{cls.pport} proxy"
        mxd.write_config()
        cls.start_mxd(mxd)

    def pclient(self, claim, version=2, banner=True, **kw):
        """A client of the proxy listener claiming to be claim."""
        c = self.mxd.client(port=self.pport, proxy=claim, proxy_version=version, banner=banner,
                            **kw)
        self.addCleanup(c.close)
        return c

    def raw(self, data=b"", source=None):
        """A socket to the proxy listener that has sent data."""
        s = socket.create_connection(("127.0.0.1", self.pport), timeout=10,
                                     source_address=(source, 0) if source else None)
        self.addCleanup(s.close)
        if data:
            s.sendall(data)
        return s

    def metric(self, result, reason):
        url = f"http://127.0.0.1:{self.mport}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        m = re.search(rf'^mxd_proxy_headers_total{{result="{result}",reason="{reason}"}} (\d+)$',
                      text, re.M)
        return int(m.group(1)) if m else 0

    def send(self, c, marker):
        content = f"Subject: {marker}\r\n\r\nvia a balancer\r\n".encode()
        r = c.send_message("s@sender.test", [RCPT], content)
        self.assertEqual(r.code, 250, r)
        msg, rest = mxdtest.stored_content(self.mxd.db_path, r.qid)
        self.assertEqual(rest, content)
        return msg, mxdtest.unfold(mxdtest.split_received(msg["row"]["body"])[0])

    def assertRefused(self, sock, reason, before, timeout=5):
        """sock is closed without a word, the refusal is logged with reason
        and counted."""
        self.assertTrue(closed_silently(sock, timeout), "refused connection still open")
        lines = wait_log(self.mxd, rf"proxy refused client=127\.0\.0\.1 reason={reason}\b",
                         count=before + 1)
        self.assertEqual(len(lines), before + 1, f"no refusal logged with reason={reason}:\n"
                         f"{self.mxd.stderr()}")
        return lines[-1]

    def refusals(self, reason):
        return len(wait_log(self.mxd, rf"proxy refused client=\S+ reason={reason}\b", timeout=0))


class Direct(ProxyCase):
    """Headers written by the test itself."""

    SERVER = {"max_connections_per_ip": "2", "etrn_clients": "192.0.2.10"}

    def test_claimed_addresses_everywhere(self):
        for version in (1, 2):
            for claim, shown in (("192.0.2.44", "[192.0.2.44]"),
                                 ("2001:db8::7", "[IPv6:2001:db8::7]")):
                with self.subTest(version=version, claim=claim):
                    before = self.metric("accepted", f"v{version}")
                    c = self.pclient(claim, version)
                    msg, received = self.send(c, self.token())
                    self.assertIn(f"({shown})", received)
                    self.assertEqual(msg["row"]["client_addr"], claim)
                    c.cmd("QUIT")
                    self.assertTrue(wait_log(
                        self.mxd, rf"proxy client={re.escape(claim)} port=40000 via=127\.0\.0\.1"
                        rf" header=v{version}$"))
                    self.assertTrue(wait_log(self.mxd, rf"disconnect client={re.escape(claim)} "))
                    self.assertEqual(self.metric("accepted", f"v{version}"), before + 1)

    def test_v4_mapped_is_ipv4(self):
        c = self.pclient("::ffff:198.51.100.3", 1)
        _, received = self.send(c, self.token())
        self.assertIn("([198.51.100.3])", received)

    def test_tlvs_skipped(self):
        # ALPN, a 128-octet unique id, an empty NOOP
        tlvs = b"\x01\x00\x04smtp" + b"\x05\x00\x80" + b"u" * 128 + b"\x04\x00\x00"
        c = wrap(self.raw(proxy_header("192.0.2.44", 2, tlvs=tlvs)))
        self.assertEqual(c.reply().code, 220)
        _, received = self.send(c, self.token())
        self.assertIn("([192.0.2.44])", received)

    def test_local_and_unknown_keep_the_balancer(self):
        for version, what in ((1, "v1-unknown"), (2, "v2-local")):
            with self.subTest(version=version):
                c = self.pclient("local", version)
                _, received = self.send(c, self.token())
                self.assertIn("([127.0.0.1])", received)
                self.assertTrue(wait_log(self.mxd, rf"proxy client=127\.0\.0\.1 via=127\.0\.0\.1"
                                                   rf" header={what}$"))

    def test_smtp_in_the_same_segment(self):
        # The header and the client's first commands in one write: what
        # follows the header is SMTP, answered after the banner.
        c = wrap(self.raw(proxy_header("192.0.2.45", 1) + b"EHLO a.test\r\nNOOP\r\n"))
        self.assertEqual([r.code for r in c.replies(3)], [220, 250, 250])
        self.assertTrue(wait_log(self.mxd, r"proxy client=192\.0\.2\.45 "))

    def test_malformed_headers_refused(self):
        cases = [
            ("not-proxy", b"EHLO client.test\r\n"),
            ("not-proxy", b"GET / HTTP/1.1\r\n\r\n"),
            ("not-proxy", b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + A4),
            ("v1-syntax", b"PROXY TCP4 192.0.2.44 127.0.0.1 1 25\n"),
            ("v1-syntax", b"PROXY TCP4  192.0.2.44 127.0.0.1 1 25\r\n"),
            ("v1-syntax", b"PROXY TCP4 192.0.2.44 127.0.0.1 1\r\n"),
            ("v1-protocol", b"PROXY UDP4 192.0.2.44 127.0.0.1 1 25\r\n"),
            ("v1-address", b"PROXY TCP4 2001:db8::7 127.0.0.1 1 25\r\n"),
            ("v1-address", b"PROXY TCP4 192.0.2.256 127.0.0.1 1 25\r\n"),
            ("v1-address", b"PROXY TCP6 mx.example ::1 1 25\r\n"),
            ("v1-port", b"PROXY TCP4 192.0.2.44 127.0.0.1 65536 25\r\n"),
            ("v1-port", b"PROXY TCP4 192.0.2.44 127.0.0.1 025 25\r\n"),
            ("v1-too-long", b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n"),
            ("v2-version", SIG + b"\x11\x11\x00\x0c" + A4),
            ("v2-command", SIG + b"\x22\x11\x00\x0c" + A4),
            ("v2-family", SIG + b"\x21\x12\x00\x0c" + A4),
            ("v2-family", SIG + b"\x21\x41\x00\x0c" + A4),
            ("v2-length", SIG + b"\x21\x21\x00\x0c" + A4),
            ("v2-too-long", SIG + b"\x21\x11\x04\x00" + A4 + b"\x04\x03\xf1" + b"x" * 1009),
            ("v2-too-long", SIG + b"\x21\x11\xff\xff" + A4),
            ("v2-tlv", SIG + b"\x21\x11\x00\x10" + A4 + b"\x01\x00\x09x"),
        ]
        for reason, data in cases:
            with self.subTest(reason=reason, data=data[:40]):
                before, counted = self.refusals(reason), self.metric("refused", reason)
                line = self.assertRefused(self.raw(data), reason, before)
                self.assertIn("detail=", line)
                self.assertEqual(self.metric("refused", reason), counted + 1)

    def test_truncated_header(self):
        # Part of a header, then the balancer closes; or waits: timeout.
        before = self.refusals("closed")
        s = self.raw(proxy_header("192.0.2.46", 2)[:20])
        s.shutdown(socket.SHUT_WR)
        self.assertRefused(s, "closed", before)
        before = self.refusals("timeout")
        t0 = time.monotonic()
        s = self.raw(b"PROXY TCP4 192.0.2.46 127.0")
        self.assertRefused(s, "timeout", before, timeout=TIMEOUT + 5)
        self.assertGreaterEqual(time.monotonic() - t0, TIMEOUT - 0.1)

    def test_no_header_times_out(self):
        before, counted = self.refusals("timeout"), self.metric("refused", "timeout")
        t0 = time.monotonic()
        self.assertRefused(self.raw(), "timeout", before, timeout=TIMEOUT + 5)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, TIMEOUT - 0.1)
        self.assertLess(took, TIMEOUT + 2)
        self.assertEqual(self.metric("refused", "timeout"), counted + 1)

    def test_slow_header(self):
        # One octet at a time within proxy_timeout: accepted...
        s = self.raw()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hdr = proxy_header("192.0.2.47", 1)
        for i in range(len(hdr)):
            s.sendall(hdr[i:i + 1])
            time.sleep(TIMEOUT * 0.5 / len(hdr))
        s.settimeout(5)
        self.assertTrue(s.recv(100).startswith(b"220 "))
        self.assertTrue(wait_log(self.mxd, r"proxy client=192\.0\.2\.47 "))
        # ... trickled past it (the timeout is for the whole header): refused.
        before = self.refusals("timeout")
        s = self.raw()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.monotonic()
        hdr = proxy_header("192.0.2.48", 1)
        try:
            for i in range(len(hdr)):
                s.sendall(hdr[i:i + 1])
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.assertRefused(s, "timeout", before)
        self.assertLess(time.monotonic() - t0, TIMEOUT + 3)
        self.assertEqual(wait_log(self.mxd, r"proxy client=192\.0\.2\.48 ", timeout=0), [])

    def test_outside_proxy_networks(self):
        # 127.0.0.5 is not a balancer: its header is not believed, whatever it says.
        before = self.metric("refused", "not-in-proxy-networks")
        s = self.raw(proxy_header("192.0.2.99", 2), source="127.0.0.5")
        self.assertTrue(closed_silently(s, 5))
        self.assertTrue(wait_log(
            self.mxd, r"proxy refused client=127\.0\.0\.5 reason=not-in-proxy-networks$"))
        self.assertEqual(wait_log(self.mxd, r"192\.0\.2\.99", timeout=0.3), [])
        self.assertEqual(self.metric("refused", "not-in-proxy-networks"), before + 1)

    def test_plain_listener_takes_no_header(self):
        # On a listener not marked proxy a header is an unknown command.
        c = mxdtest.SmtpClient(self.mxd.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply().code, 220)
        r = c.cmd(proxy_header("192.0.2.98", 1).rstrip(b"\r\n"))
        self.assertEqual(r.code // 100, 5, r)
        self.assertEqual(wait_log(self.mxd, r"proxy client=192\.0\.2\.98", timeout=0.3), [])

    def test_per_ip_limit_counts_the_client(self):
        # max_connections_per_ip = 2, all from the balancer 127.0.0.1.
        held = [self.pclient("198.51.100.7", v) for v in (1, 2)]
        others = [self.pclient(a) for a in ("198.51.100.8", "2001:db8:1::8")]
        third = self.pclient("198.51.100.7", banner=False)
        r = third.reply()
        self.assertEqual((r.code, r.enh), (421, "4.7.0"), r)
        self.assertIn("from your address", r.text)
        self.assertTrue(third.wait_closed())
        self.assertTrue(wait_log(
            self.mxd, r"refused client=198\.51\.100\.7 reason=per-ip-limit"))
        for c in held + others:  # still served
            self.assertEqual(c.cmd("NOOP").code, 250)
        for c in held:
            c.cmd("QUIT")
            c.wait_closed()
        # Their slots are freed under the proxied address, not the balancer's.
        c = self.pclient("198.51.100.7")
        self.assertEqual(c.cmd("NOOP").code, 250)

    def test_etrn_clients_see_the_client(self):
        # etrn_clients = 192.0.2.10: allowed, 459 for a domain that is not
        # a backup domain; anyone else (the balancer too) 458.
        for claim, code in (("192.0.2.10", 459), ("192.0.2.11", 458), ("local", 458)):
            with self.subTest(claim=claim):
                c = self.pclient(claim)
                c.ehlo()
                self.assertEqual(c.cmd("ETRN nosuch.test").code, 459 if code == 459 else 458)


class Shutdown(ProxyCase):
    """SIGTERM does not wait for a header still coming (proxy_timeout 60 s)."""

    SERVER = {"proxy_timeout": "60s"}

    def test_header_pending(self):
        s = self.raw(b"PROXY TCP4 ")
        time.sleep(0.3)
        t0 = time.monotonic()
        self.mxd.stop(timeout=20, check=True)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertTrue(closed_silently(s, 5))


class Reload(ProxyCase):
    """SIGHUP marks and unmarks a listener; sessions keep their conf."""

    def sighup(self, count):
        self.mxd.signal(signal.SIGHUP)
        self.assertEqual(len(wait_log(self.mxd, r"mxd reloaded", count=count)), count,
                         self.mxd.stderr())

    def test_mark_unmark(self):
        old = self.pclient("192.0.2.60")
        listen = self.mxd.server["listen"]
        self.mxd.server["listen"] = listen.replace(" proxy", "")
        self.mxd.server["proxy_networks"] = None
        self.mxd.write_config()
        self.sighup(1)
        self.assertTrue(wait_log(self.mxd, rf"listener address=127\.0\.0\.1:{self.pport} proxy=no"))
        c = mxdtest.SmtpClient(self.pport)
        self.addCleanup(c.close)
        self.assertEqual(c.reply().code, 220)  # no header needed now
        self.assertEqual(old.cmd("NOOP").code, 250)
        _, received = self.send(old, self.token())  # still the proxied client
        self.assertIn("([192.0.2.60])", received)
        self.mxd.server["listen"] = listen
        self.mxd.server["proxy_networks"] = self.NETWORKS
        self.mxd.write_config()
        self.sighup(2)
        self.assertTrue(wait_log(self.mxd,
                                 rf"listener address=127\.0\.0\.1:{self.pport} proxy=yes"))
        before = self.refusals("not-proxy")
        s = self.raw(b"EHLO x\r\n")
        self.assertRefused(s, "not-proxy", before)
        c = self.pclient("192.0.2.61", 1)
        self.assertEqual(c.cmd("NOOP").code, 250)

    def test_bad_reload_keeps_the_old(self):
        # A marked listener without proxy_networks: refused, the old conf runs.
        self.mxd.server["proxy_networks"] = None
        self.mxd.write_config()
        self.mxd.signal(signal.SIGHUP)
        lines = wait_log(self.mxd, r"reload refused")
        self.assertTrue(lines, self.mxd.stderr())
        self.assertIn("needs proxy_networks", lines[-1])
        self.mxd.server["proxy_networks"] = self.NETWORKS
        self.mxd.write_config()
        c = self.pclient("192.0.2.62")
        self.assertEqual(c.cmd("NOOP").code, 250)


class Check(unittest.TestCase):
    """mxd --check: the keys, with FILE:LINE."""

    def check(self, text):
        tmp = mxdtest.make_tmpdir(self.addCleanup, "proxycheck")
        path = os.path.join(tmp, "mxd.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        r = subprocess.run([mxdtest.mxd_path(), "--check", "-c", path], capture_output=True,
                           timeout=30, text=True)
        return r.returncode, r.stdout + r.stderr, path

    def test_check(self):
        base = "[server]\nhostname = mx.test.invalid\ndatabase = q.db\n"
        rc, out, _ = self.check(base + "listen = 127.0.0.1:25 proxy\nproxy_networks = 10.0.0.0/8"
                                "\nproxy_timeout = 3s\n")
        self.assertEqual(rc, 0, out)
        for extra, line, msg in (
                ("listen = 127.0.0.1:25 proxy\n", 4, "needs proxy_networks"),
                ("proxy_networks = 10.0.0.0/8\n", 4, "no listen address is marked proxy"),
                ("listen = 127.0.0.1:25 proxi\n", 4, "unknown listen option"),
                ("listen = 127.0.0.1:25 proxy\nproxy_networks = 10.0.0.1/8\n", 5,
                 "host bits set"),
                ("proxy_timeout = never\n", 4, "want a duration")):
            with self.subTest(extra=extra):
                rc, out, path = self.check(base + extra)
                self.assertEqual(rc, 1, out)
                self.assertIn(f"{path}:{line}: ", out)
                self.assertIn(msg, out)


HAPROXY_CFG = """\
global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe_v1
    bind 127.0.0.1:{p1}
    bind [::1]:{p1}
    default_backend be_v1

backend be_v1
    server mxd 127.0.0.1:{mxd} send-proxy source 127.0.0.9

frontend fe_v2
    bind 127.0.0.1:{p2}
    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    default_backend be_v2

backend be_v2
    option smtpchk EHLO haproxy.test
    server mxd 127.0.0.1:{mxd} send-proxy-v2 proxy-v2-options unique-id source 127.0.0.9 \
check check-send-proxy inter 500ms
"""


class Haproxy(ProxyCase):
    """A real HAProxy in front: it connects from 127.0.0.9 (the balancer),
    its clients from 127.0.0.7."""

    NETWORKS = "127.0.0.9"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        exe = mxdtest.require_tool("haproxy", ["/usr/sbin/haproxy"])
        cls.p1, cls.p2 = mxdtest.free_port(), mxdtest.free_port()
        cfg = os.path.join(cls.tmpdir, "haproxy.cfg")
        with open(cfg, "w", encoding="ascii") as f:
            f.write(HAPROXY_CFG.format(p1=cls.p1, p2=cls.p2, mxd=cls.pport))
        r = subprocess.run([exe, "-c", "-f", cfg], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"haproxy -c: {r.stdout}{r.stderr}")
        cls.hlog = open(os.path.join(cls.tmpdir, "haproxy.log"), "wb")
        cls.addClassCleanup(cls.hlog.close)
        cls.haproxy = subprocess.Popen([exe, "-db", "-f", cfg], stdin=subprocess.DEVNULL,
                                       stdout=cls.hlog, stderr=cls.hlog, cwd=cls.tmpdir)
        cls.addClassCleanup(cls._stop_haproxy)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", cls.p2), timeout=1).close()
                socket.create_connection(("127.0.0.1", cls.p1), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or cls.haproxy.poll() is not None:
                    raise AssertionError("haproxy did not start")
                time.sleep(0.05)

    @classmethod
    def _stop_haproxy(cls):
        if cls.haproxy.poll() is None:
            cls.haproxy.terminate()
            try:
                cls.haproxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                cls.haproxy.kill()
                cls.haproxy.wait(timeout=10)

    def via(self, port, version, source="127.0.0.7", shown="[127.0.0.7]", host="127.0.0.1"):
        c = mxdtest.SmtpClient(port, host=host, source=source)
        self.addCleanup(c.close)
        self.assertEqual(c.reply().code, 220)
        msg, received = self.send(c, self.token())
        self.assertIn(f"({shown})", received)
        self.assertNotIn("127.0.0.9", received)
        self.assertEqual(msg["row"]["client_addr"], shown.strip("[]").replace("IPv6:", ""))
        self.assertTrue(wait_log(
            self.mxd, rf"proxy client={re.escape(source)} port=\d+ via=127\.0\.0\.9 "
                      rf"header=v{version}$"))

    def test_send_proxy_v1(self):
        self.via(self.p1, 1)

    def test_send_proxy_v1_ipv6_client(self):
        self.via(self.p1, 1, source="::1", shown="[IPv6:::1]", host="::1")

    def test_send_proxy_v2_with_tlv(self):
        self.via(self.p2, 2)

    def test_health_check_local(self):
        # check-send-proxy: HAProxy's health checks send a v2 LOCAL header,
        # then (option smtpchk) wait for the banner and say EHLO and QUIT.
        self.assertTrue(wait_log(
            self.mxd, r"proxy client=127\.0\.0\.9 via=127\.0\.0\.9 header=v2-local$", timeout=10))
        self.assertTrue(wait_log(self.mxd, r"disconnect client=127\.0\.0\.9 messages=0 rejects=0"))

    def test_direct_connection_refused(self):
        # Straight to mxd's proxy listener, not through HAProxy.
        s = self.raw(proxy_header("192.0.2.77", 1))
        self.assertTrue(closed_silently(s, 5))
        self.assertTrue(wait_log(
            self.mxd, r"proxy refused client=127\.0\.0\.1 reason=not-in-proxy-networks$"))
        self.assertEqual(wait_log(self.mxd, r"client=192\.0\.2\.77", timeout=0.3), [])


if __name__ == "__main__":
    mxdtest.main()
