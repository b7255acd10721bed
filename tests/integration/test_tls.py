"""STARTTLS on the inbound SMTP server (RFC 3207, RFC 3848).

Certificates come from tlsutil (certtool, generated into a temporary
directory at test time). Clients: raw sockets wrapped with python's ssl
module (byte-exact, for the protocol and the CVE-2011-0411 injection
tests), smtplib.starttls(), swaks --tls and gnutls-cli --starttls-proto=smtp.

Covered: advertisement only when [tls] is set and not after TLS is up;
220 / 501 / 503 / 502 replies; state reset after the handshake (EHLO
again, transaction and HELO name forgotten); plaintext pipelined behind
STARTTLS discarded; failed, abandoned and stalled handshakes (closed,
logged with the GnuTLS reason, other sessions unaffected); Received: "with
ESMTPS" / "UTF8SMTPS" naming the TLS version, and the log line; TLS 1.2 and
1.3 accepted, TLS 1.1 refused by the default priority (and accepted when the
priority allows it); mxd --check on missing, mismatched and expired
certificates; 50 concurrent TLS sessions; SIGHUP certificate swap.
"""

import hashlib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
import tlsutil  # noqa: E402
from mxdtest import HOSTNAME, ConnectionClosed, MxdTestCase  # noqa: E402

RCPT = "user@example.test"
TLS_VERSION = re.compile(r"TLS ?1\.[23]")

# --------------------------------------------------------------------------
# One PKI for the whole module.


def setUpModule():
    tlsutil.setup_module_pki("tls-pki")


pki = tlsutil.module_pki


# --------------------------------------------------------------------------
# Helpers


def log_size(mxd):
    try:
        return os.path.getsize(mxd.log_path)
    except (OSError, TypeError):
        return 0


def log_since(mxd, offset):
    with open(mxd.log_path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def wait_log(mxd, offset, pred, timeout=5):
    """The first stderr line written after offset for which pred(line) is
    true, waiting up to timeout; None if there is none."""
    deadline = time.monotonic() + timeout
    while True:
        for line in log_since(mxd, offset).splitlines():
            if pred(line):
                return line
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def is_handshake_failure_line(line):
    low = line.lower()
    return "tls" in low and "handshake" in low


def client_hello(ctx=None):
    """The bytes of a TLS ClientHello as python's ssl would send it."""
    ctx = ctx or pki().client_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=HOSTNAME)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = out.read()
    assert data and data[0] == 0x16, f"not a handshake record: {data[:16]!r}"
    return data


def tls_read_more(c, wait=0.5):
    """Whatever arrives on the (TLS) client within wait seconds: b"" if
    nothing, None on EOF. (SmtpClient.no_more_data peeks, which SSLSocket
    does not support.)"""
    if c.buf:
        return c.buf
    c.sock.settimeout(wait)
    try:
        data = c.sock.recv(65536)
    except socket.timeout:
        return b""
    except (ssl.SSLError, OSError):
        return None
    return data if data else None


def is_ehlo_reply(r):
    """An EHLO reply: 250, multi-line, greeting line names the host."""
    return r.code == 250 and len(r.lines) > 1 and r.lines[0].split()[0] == HOSTNAME


def ext_keywords(r):
    return {ln.split()[0].upper() for ln in r.lines[1:] if ln.split()}


def sized_content(size, subject):
    """Exactly size octets: a header, then lines of at most 1000 octets."""
    pad = 0
    while (size - len(subject) - pad - 4) % 1000 == 1:
        pad += 1
    head = (subject + "x" * pad + "\r\n\r\n").encode()
    left = size - len(head)
    full, rest = divmod(left, 1000)
    body = (b"z" * 998 + b"\r\n") * full
    if rest:
        body += b"z" * (rest - 2) + b"\r\n"
    content = head + body
    assert len(content) == size, (len(content), size)
    return content


def content_for(marker, extra=""):
    return (f"Subject: tls {marker}\r\nFrom: <a@client.test>\r\n\r\n"
            f"body over tls {marker}\r\n{extra}..leading dot\r\n").encode()


# --------------------------------------------------------------------------
# Base class: an mxd with [tls] set to the test certificate


class TlsCase(MxdTestCase):
    CERT = "cert"  # attribute names of the Pki to configure
    KEY = "key"
    PRIORITY = None
    SERVER = {"max_connections_per_ip": "1000"}

    @classmethod
    def setUpClass(cls):
        cls.EXTRA = cls.tls_extra()
        super().setUpClass()

    @classmethod
    def tls_extra(cls):
        p = pki()
        return tlsutil.tls_section(getattr(p, cls.CERT), getattr(p, cls.KEY), cls.PRIORITY)

    # -- clients

    def starttls(self, c=None, inject=b"", ehlo="client.test", ctx=None):
        """EHLO (unless ehlo is None), STARTTLS + inject in one write, the
        220, then the TLS handshake on the same socket. Returns c (now
        speaking TLS; its buffer is empty)."""
        c = c or self.client()
        if ehlo:
            r = c.ehlo(ehlo)
            self.assertIn("STARTTLS", ext_keywords(r), f"STARTTLS not advertised: {r}")
        c.send(b"STARTTLS\r\n" + inject)
        r = c.reply()
        self.assertReply(r, 220, "2.0.0", "STARTTLS")
        self.assertEqual(c.buf, b"",
                         f"plaintext after the 220 (sent STARTTLS\\r\\n + {inject!r})")
        ctx = ctx or pki().client_context()
        c.sock.settimeout(10)
        try:
            c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        except (ssl.SSLError, OSError) as e:
            self.fail(f"TLS handshake after 'STARTTLS\\r\\n' + {inject!r} failed: {e!r}; "
                      f"mxd stderr:\n{self.mxd.stderr()[-3000:]}")
        return c

    def smtplib_tls(self, ctx=None, local_hostname="client.test"):
        s = smtplib.SMTP("127.0.0.1", self.mxd.port, local_hostname=local_hostname, timeout=30)
        self.addCleanup(s.close)
        s.ehlo()
        self.assertTrue(s.has_extn("starttls"), "STARTTLS not advertised to smtplib")
        code, resp = s.starttls(context=ctx or pki().client_context())
        self.assertEqual(code, 220, resp)
        return s

    def queued_line(self, qid, timeout=5):
        return wait_log(self.mxd, 0, lambda ln: qid in ln and "queued" in ln, timeout)

    def assertServing(self):
        """mxd still accepts a new session and completes a TLS one."""
        self.assertTrue(self.mxd.running(), f"mxd died:\n{self.mxd.stderr()}")
        c = self.starttls()
        self.assertTrue(is_ehlo_reply(c.cmd("EHLO after.test")))
        self.assertReply(c.cmd("QUIT"), 221)


# --------------------------------------------------------------------------
# Without [tls]


class NoTls(MxdTestCase):
    def test_not_advertised(self):
        c = self.client()
        r = c.ehlo()
        self.assertNotIn("STARTTLS", ext_keywords(r), str(r))

    def test_starttls_502(self):
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("STARTTLS"), 502, "5.5.1")
        self.assertReply(c.cmd("NOOP"), 250)  # still plaintext, still talking


# --------------------------------------------------------------------------
# Protocol


class Protocol(TlsCase):
    def test_advertised_in_ehlo_not_helo(self):
        c = self.client()
        r = c.ehlo()
        self.assertIn("STARTTLS", ext_keywords(r))
        # Other extensions are still there.
        self.assertIn("PIPELINING", ext_keywords(r))
        r = c.cmd("HELO client.test")
        self.assertReply(r, 250)
        self.assertEqual(len(r.lines), 1, f"HELO reply is multi-line: {r}")

    def test_ready_then_ehlo_required(self):
        c = self.starttls()
        # RFC 3207 4.2: state reset; the client must EHLO again.
        r = c.cmd("MAIL FROM:<a@client.test>")
        self.assertReply(r, 503, None, "MAIL before EHLO after STARTTLS")
        r = c.cmd("EHLO client.test")
        self.assertTrue(is_ehlo_reply(r), f"EHLO over TLS: {r}")
        kw = ext_keywords(r)
        self.assertNotIn("STARTTLS", kw, f"STARTTLS advertised again over TLS: {r}")
        for want in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"):
            self.assertIn(want, kw, f"{want} missing after TLS: {r}")
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd("QUIT"), 221)
        self.assertTrue(c.wait_closed(5))

    def test_starttls_with_argument_501(self):
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("STARTTLS now"), 501, "5.5.4")
        self.assertReply(c.cmd("NOOP"), 250, None, "still plaintext after the 501")
        # Still offered and still possible.
        self.starttls(c)
        self.assertTrue(is_ehlo_reply(c.cmd("EHLO client.test")))

    def test_starttls_in_tls_503(self):
        c = self.starttls()
        self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS before EHLO, in TLS")
        self.assertTrue(is_ehlo_reply(c.cmd("EHLO client.test")))
        self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1", "STARTTLS after EHLO, in TLS")
        self.assertReply(c.cmd("NOOP"), 250, None, "session goes on over TLS")

    def test_transaction_and_helo_forgotten(self):
        m = self.marker()
        c = self.client()
        c.ehlo("before.test")
        self.assertReply(c.cmd("MAIL FROM:<old@client.test>"), 250)
        c.send(b"STARTTLS\r\n")
        r = c.reply()
        if r.code != 220:
            # Refusing STARTTLS inside a transaction is also fine.
            self.assertReply(r, 503, None, "STARTTLS inside a transaction")
            return
        c.sock = pki().client_context().wrap_socket(c.sock, server_hostname=HOSTNAME)
        self.assertTrue(is_ehlo_reply(c.cmd("EHLO after.test")))
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 503, None,
                         "RCPT after STARTTLS: the earlier MAIL must be forgotten")
        content = content_for(m)
        r = c.send_message("new@client.test", [RCPT], mxdtest.dot_stuff(content), ehlo=False)
        self.assertReply(r, 250, "2.0.0")
        msg = self.assertStored(r.qid, content, with_proto="ESMTPS")
        self.assertEqual(msg["row"]["sender"], "new@client.test")
        hdr = mxdtest.unfold(mxdtest.split_received(msg["row"]["body"])[0])
        self.assertIn("from after.test", hdr)
        self.assertNotIn("before.test", hdr)

    def test_pipelined_group_over_tls(self):
        m = self.marker()
        c = self.starttls()
        content = content_for(m)
        c.send(b"EHLO client.test\r\nMAIL FROM:<p@client.test>\r\n"
               + f"RCPT TO:<{RCPT}>\r\nDATA\r\n".encode())
        r = c.replies(4)
        self.assertTrue(is_ehlo_reply(r[0]), str(r[0]))
        self.assertEqual([x.code for x in r[1:]], [250, 250, 354], [str(x) for x in r])
        c.send(mxdtest.dot_stuff(content) + b".\r\nQUIT\r\n")
        r = c.replies(2)
        self.assertReply(r[0], 250, "2.0.0")
        self.assertReply(r[1], 221)
        self.assertStored(r[0].qid, content, with_proto="ESMTPS")

    def test_large_messages_over_tls(self):
        # Many TLS records per read, a full input buffer, spooling. The
        # whole message is written at once, as a fast client would.
        for size in (30000, 60000, 65000, 66000, 70000, 300000, 3000000):
            with self.subTest(octets=size):
                m = self.marker()
                c = self.starttls()
                content = sized_content(size, f"Subject: big {m}")
                try:
                    r = c.send_message("big@client.test", [RCPT], content)
                except (socket.timeout, ConnectionClosed, ssl.SSLError) as e:
                    self.fail(f"EHLO/MAIL/RCPT/DATA over TLS, then {len(content)} octets of "
                              f"content and '.': no reply ({e!r})")
                self.assertReply(r, 250, "2.0.0")
                self.assertStored(r.qid, content, with_proto="ESMTPS")
                c.close()
        self.assertSpoolEmpty(timeout=10)

    def test_close_notify_after_quit(self):
        # RFC 8446 6.1 / RFC 5246 7.2.1: close_notify before closing.
        for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(ver.name):
                c = self.client()
                c.ehlo()
                self.assertReply(c.cmd("STARTTLS"), 220)
                ctx = pki().client_context(ver, ver)
                # Some Python builds set this by default; it hides a missing
                # close_notify.
                ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
                c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME,
                                         suppress_ragged_eofs=False)
                c.ehlo()
                self.assertReply(c.cmd("QUIT"), 221)
                c.sock.settimeout(5)
                try:
                    data = c.sock.recv(100)
                except ssl.SSLError as e:  # SSLEOFError, or SSLError on some builds
                    self.fail(f"after QUIT -> 221 over {ver.name}, TCP closed without a "
                              f"TLS close_notify alert ({e})")
                self.assertEqual(data, b"")


# --------------------------------------------------------------------------
# CVE-2011-0411: plaintext pipelined behind STARTTLS


INJECTIONS = [
    ("rset", b"RSET\r\n"),
    ("mail", b"MAIL FROM:<evil@x.test>\r\n"),
    ("noop", b"NOOP\r\n"),
    ("noops", b"NOOP\r\nNOOP\r\nNOOP\r\n"),
    ("ehlo", b"EHLO evil.test\r\n"),
    ("transaction", b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<" + RCPT.encode()
     + b">\r\nDATA\r\nSubject: injected\r\n\r\ninjected\r\n.\r\n"),
    ("partial line", b"NOOP"),
    ("quit", b"QUIT\r\n"),
    ("starttls again", b"STARTTLS\r\n"),
]


class Injection(TlsCase):
    def check_injection(self, inject):
        c = self.starttls(inject=inject)
        # The first reply over TLS answers the first TLS command.
        r = c.cmd("EHLO client.test")
        self.assertTrue(is_ehlo_reply(r),
                        f"sent 'STARTTLS\\r\\n' + {inject!r} in one write; after the handshake "
                        f"sent 'EHLO client.test\\r\\n', first reply over TLS was {r}")
        # Nothing else is queued behind it.
        extra = tls_read_more(c, 0.5)
        self.assertEqual(extra, b"", f"more data after the EHLO reply: {extra!r}")
        # The injected MAIL (if any) was not kept.
        r = c.cmd(f"RCPT TO:<{RCPT}>")
        self.assertReply(r, 503, None, f"RCPT right after EHLO (injected {inject!r})")
        r = c.cmd("MAIL FROM:<good@client.test>")
        self.assertReply(r, 250, None, f"MAIL after EHLO (injected {inject!r})")
        self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(c.cmd("NOOP"), 250)
        self.assertEqual(tls_read_more(c, 0.3), b"")
        self.assertReply(c.cmd("QUIT"), 221)

    def test_injections(self):
        for name, inject in INJECTIONS:
            with self.subTest(name):
                self.check_injection(inject)
        n = mxdtest.message_count(self.mxd.db_path, "instr(body, ?) > 0",
                                  (b"injected",))
        self.assertEqual(n, 0, "an injected message was stored")

    def test_injection_then_noop_first(self):
        # Same, but the first TLS command is NOOP: its reply must be the
        # only one (an injected NOOP/RSET answer would make two).
        for name, inject in (("noop", b"NOOP\r\n"), ("rset", b"RSET\r\n"),
                             ("mail", b"MAIL FROM:<evil@x.test>\r\n")):
            with self.subTest(name):
                c = self.starttls(inject=inject)
                r = c.cmd("NOOP")
                self.assertReply(r, 250, None, f"first reply over TLS after injected {inject!r}")
                self.assertEqual(tls_read_more(c, 0.5), b"",
                                 f"a second reply after one NOOP (injected {inject!r})")
                self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 503, None,
                                 "MAIL before EHLO over TLS (no injected EHLO state)")
                c.close()

    def test_injection_separate_write(self):
        # Plaintext sent right after STARTTLS without waiting for the 220,
        # in its own write. Depending on timing mxd reads it with the
        # STARTTLS line (discarded) or as the first TLS bytes (handshake
        # fails). Either way no reply to it may ever appear over TLS.
        for _ in range(5):
            c = self.client()
            c.ehlo()
            c.send(b"STARTTLS\r\n")
            c.send(b"NOOP\r\n")
            r = c.reply()
            self.assertReply(r, 220, "2.0.0")
            self.assertEqual(c.buf, b"")
            try:
                c.sock = pki().client_context().wrap_socket(c.sock, server_hostname=HOSTNAME)
            except (ssl.SSLError, OSError):
                c.close()
                continue  # the NOOP was taken as TLS: refused, fine
            try:
                r = c.cmd("EHLO client.test")
            except (ConnectionClosed, ssl.SSLError, OSError):
                c.close()
                continue
            self.assertTrue(is_ehlo_reply(r), f"first reply over TLS: {r}")
            self.assertEqual(tls_read_more(c, 0.3), b"")
            c.close()
        self.assertServing()


# --------------------------------------------------------------------------
# Failed handshakes


class FailedHandshake(TlsCase):
    def after_220(self):
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
        return c

    def check_logged(self, offset, what):
        line = wait_log(self.mxd, offset, is_handshake_failure_line, 5)
        self.assertIsNotNone(line, f"{what}: no stderr line with 'tls' and 'handshake' in:\n"
                                   f"{log_since(self.mxd, offset)}")
        return line

    def test_garbage_instead_of_client_hello(self):
        off = log_size(self.mxd)
        c = self.after_220()
        c.send(b"EHLO this is not a ClientHello\r\n" * 4)
        self.assertTrue(c.wait_closed(5),
                        f"connection still open 5s after garbage; received {c.buf!r}")
        # mxd may send a TLS alert, never an SMTP reply.
        self.assertFalse(re.match(rb"^[2-5]\d\d[ -]", c.buf), f"SMTP reply to garbage: {c.buf!r}")
        line = self.check_logged(off, "garbage")
        # The GnuTLS reason (gnutls_strerror text) is in the line.
        self.assertRegex(line, r"(?i)packet|record|version|unexpected|TLS connection|"
                               r"handshake failed|decod|invalid|error",
                         f"no GnuTLS reason in {line!r}")
        self.assertServing()

    def test_http_request_instead_of_client_hello(self):
        off = log_size(self.mxd)
        c = self.after_220()
        c.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        self.assertTrue(c.wait_closed(5))
        self.check_logged(off, "HTTP request")
        self.assertServing()

    def test_close_after_220(self):
        off = log_size(self.mxd)
        c = self.after_220()
        c.close()
        self.check_logged(off, "close after 220")
        self.assertServing()

    def test_close_mid_client_hello(self):
        off = log_size(self.mxd)
        c = self.after_220()
        hello = client_hello()
        c.send(hello[: len(hello) // 2])
        time.sleep(0.2)
        c.close()
        self.check_logged(off, "close mid ClientHello")
        self.assertServing()

    def test_client_rejects_certificate(self):
        # A client that does not trust the certificate aborts with an alert.
        off = log_size(self.mxd)
        c = self.after_220()
        ctx = ssl.create_default_context()  # system CAs: not our test CA
        with self.assertRaises(ssl.SSLError):
            c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        self.check_logged(off, "client aborted (unknown CA)")
        self.assertServing()

    def test_stalled_handshake_does_not_block_others(self):
        # Two sessions stuck inside the handshake (nothing after the 220;
        # half a ClientHello) while a third does a full TLS transaction.
        quiet = self.after_220()
        half = self.after_220()
        hello = client_hello()
        half.send(hello[: len(hello) // 2])
        m = self.marker()
        started = time.monotonic()
        c = self.starttls()
        r = c.send_message("o@client.test", [RCPT], mxdtest.dot_stuff(content_for(m)))
        took = time.monotonic() - started
        self.assertReply(r, 250, "2.0.0")
        self.assertLess(took, 5, f"a TLS session took {took:.1f}s next to stalled handshakes")
        self.assertStored(r.qid, content_for(m), with_proto="ESMTPS")
        # The stalled ones are still open (command_timeout is 5m here).
        self.assertFalse(quiet.wait_closed(0.2))
        self.assertFalse(half.wait_closed(0.2))


class HandshakeTimeout(TlsCase):
    SERVER = {"max_connections_per_ip": "1000", "command_timeout": "2s"}

    def after_220(self):
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("STARTTLS"), 220, "2.0.0")
        return c

    def test_nothing_after_220(self):
        c = self.after_220()
        started = time.monotonic()
        self.assertTrue(c.wait_closed(10), "stalled handshake not closed within 10s")
        took = time.monotonic() - started
        self.assertGreaterEqual(took, 1.5, f"closed after {took:.1f}s")
        self.assertFalse(re.match(rb"^[2-5]\d\d[ -]", c.buf),
                         f"plaintext SMTP reply after 220 while waiting for TLS: {c.buf!r}")

    def test_half_client_hello(self):
        c = self.after_220()
        hello = client_hello()
        c.send(hello[:20])
        self.assertTrue(c.wait_closed(10), "half-handshake not closed within 10s")

    def test_idle_over_tls_421(self):
        # The command timeout inside TLS: the 421 comes over TLS.
        c = self.starttls()
        self.assertTrue(is_ehlo_reply(c.cmd("EHLO client.test")))
        try:
            r = c.reply(timeout=10)
        except (ssl.SSLError, OSError) as e:
            self.fail(f"no 421 over TLS on command timeout: {e!r}")
        self.assertReply(r, 421, "4.4.2")


# --------------------------------------------------------------------------
# Messages over TLS


class Delivery(TlsCase):
    def check_tls_received(self, qid, content, version=None, proto="ESMTPS"):
        msg = self.assertStored(qid, content, with_proto=proto)
        hdr = mxdtest.unfold(mxdtest.split_received(msg["row"]["body"])[0])
        self.assertRegex(hdr, version or TLS_VERSION, f"TLS version not in {hdr!r}")
        line = self.queued_line(qid)
        self.assertIsNotNone(line, f"no 'queued' log line for {qid}:\n{self.mxd.stderr()}")
        self.assertRegex(line, version or TLS_VERSION, f"TLS version not in log line {line!r}")
        return hdr, line

    def test_smtplib(self):
        m = self.marker()
        s = self.smtplib_tls()
        content = content_for(m)
        s.ehlo()
        self.assertFalse(s.has_extn("starttls"), "STARTTLS offered again over TLS")
        s.mail("a@client.test")
        s.rcpt(RCPT)
        code, resp = s.data(content)
        self.assertEqual(code, 250, resp)
        qid = resp.decode().rsplit(" ", 1)[1]
        self.check_tls_received(qid, content)
        s.quit()

    def test_tls12_and_tls13(self):
        for ver, name in ((ssl.TLSVersion.TLSv1_2, "TLS1.2"), (ssl.TLSVersion.TLSv1_3, "TLS1.3")):
            with self.subTest(name):
                m = self.marker()
                ctx = pki().client_context(minimum=ver, maximum=ver)
                c = self.starttls(ctx=ctx)
                self.assertEqual(c.sock.version().replace("v", ""), name)
                content = content_for(m)
                r = c.send_message("v@client.test", [RCPT], mxdtest.dot_stuff(content))
                self.assertReply(r, 250, "2.0.0")
                self.check_tls_received(r.qid, content, re.compile(re.escape(name)))
                c.close()

    def test_plaintext_is_not_esmtps(self):
        m = self.marker()
        c = self.client()
        content = content_for(m)
        r = c.send_message("p@client.test", [RCPT], mxdtest.dot_stuff(content))
        self.assertReply(r, 250, "2.0.0")
        msg = self.assertStored(r.qid, content, with_proto="ESMTP")
        hdr = mxdtest.unfold(mxdtest.split_received(msg["row"]["body"])[0])
        self.assertNotRegex(hdr, TLS_VERSION)
        line = self.queued_line(r.qid)
        self.assertIsNotNone(line)
        self.assertNotRegex(line, TLS_VERSION)

    def test_smtputf8_over_tls(self):
        # RFC 6531 4.3: UTF8SMTPS.
        m = self.marker()
        c = self.starttls()
        content = f"Subject: utf8 {m}\r\n\r\nsnö\r\n".encode()
        r = c.send_message("sénder@client.test", [RCPT], content, mail_params="SMTPUTF8")
        self.assertReply(r, 250, "2.0.0")
        self.check_tls_received(r.qid, content, proto="UTF8SMTPS")

    def test_swaks(self):
        m = self.marker()
        p = mxdtest.swaks(self.mxd.port, "--tls", "--tls-verify", "--tls-ca-path", pki().ca_cert,
                          "--tls-sni", HOSTNAME,
                          "--ehlo", "swaks.test", "--from", "s@client.test", "--to", RCPT,
                          "--header", f"Subject: swaks {m}", "--body", f"swaks body {m}")
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, f"swaks failed:\n{out}\n{p.stderr!r}")
        self.assertIn("STARTTLS", out)
        # swaks marks lines read over TLS with "<~" instead of "<-".
        qids = re.findall(r"<[-~]\s+250[ -].*?queued as (\S+)", out)
        self.assertEqual(len(qids), 1, out)
        msg = mxdtest.message_by_qid(self.mxd.db_path, qids[0])
        self.assertIsNotNone(msg)
        hdr = mxdtest.check_received(mxdtest.split_received(msg["row"]["body"])[0], qids[0],
                                     "ESMTPS")
        self.assertRegex(hdr, TLS_VERSION)
        self.assertIn(f"swaks body {m}".encode(), bytes(msg["row"]["body"]))


# --------------------------------------------------------------------------
# gnutls-cli


class GnutlsCli:
    """gnutls-cli --starttls-proto=smtp with a pipe on stdin; collects
    stdout and stderr in the background; everything bounded in time."""

    def __init__(self, port, ca, priority=None, timeout=30):
        exe = mxdtest.require_tool("gnutls-cli")
        args = [exe, "--starttls-proto=smtp", "-p", str(port), "--x509cafile", ca]
        if priority:
            args += ["--priority", priority]
        args.append("127.0.0.1")
        self.args = args
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.out = b""
        self.err = b""
        self.cond = threading.Condition()
        self.deadline = time.monotonic() + timeout
        self.threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, "out"),
                                         daemon=True),
                        threading.Thread(target=self._pump, args=(self.proc.stderr, "err"),
                                         daemon=True)]
        for t in self.threads:
            t.start()

    def _pump(self, f, attr):
        while True:
            chunk = os.read(f.fileno(), 65536)
            with self.cond:
                if not chunk:
                    self.cond.notify_all()
                    return
                setattr(self, attr, getattr(self, attr) + chunk)
                self.cond.notify_all()

    def expect(self, pattern, start=0, timeout=10):
        """Waits for pattern (bytes regex) in stdout from offset start;
        returns the match or None."""
        rx = re.compile(pattern)
        end = min(self.deadline, time.monotonic() + timeout)
        with self.cond:
            while True:
                m = rx.search(self.out, start)
                if m:
                    return m
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.threads[0].is_alive()):
                    return None
                self.cond.wait(min(left, 0.2))

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def finish(self, stdin=b""):
        """Writes stdin, closes it, waits for the exit; returns the status."""
        try:
            if stdin:
                self.proc.stdin.write(stdin)
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            rc = self.proc.wait(timeout=max(1, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            rc = None
        self._close_pipes()
        return rc

    def _close_pipes(self):
        for t in self.threads:
            t.join(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass

    def kill(self):
        """Clean-up: stops gnutls-cli (our own child, by its PID) if it runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._close_pipes()

    def output(self):
        return (f"$ {' '.join(self.args)}\n--- stdout:\n{self.out.decode('utf-8', 'replace')}"
                f"\n--- stderr:\n{self.err.decode('utf-8', 'replace')}")


class GnutlsCliCase(TlsCase):
    def gnutls_cli(self, priority=None):
        g = GnutlsCli(self.mxd.port, pki().ca_cert, priority)
        self.addCleanup(g.kill)
        return g

    def after_handshake(self, g):
        """stdout after gnutls-cli's 'Handshake was completed' (prefixed with
        CRLF so that the first reply line matches \\r\\n250)."""
        marker = b"- Handshake was completed"
        self.assertIn(marker, g.out, "no completed handshake:\n" + g.output())
        return b"\r\n" + g.out.split(marker, 1)[1].split(b"- Simple Client Mode:", 1)[-1].lstrip()

    def ehlo_quit(self, priority):
        g = self.gnutls_cli(priority)
        # The handshake must be done before stdin is read; wait for it.
        rc = g.finish(b"EHLO gnutls.test\r\nQUIT\r\n")
        return g, rc

    def test_tls12_and_tls13(self):
        for ver in ("1.2", "1.3"):
            with self.subTest(ver):
                off = log_size(self.mxd)
                g, rc = self.ehlo_quit(f"NORMAL:-VERS-ALL:+VERS-TLS{ver}")
                # (Its exit status is not checked: gnutls-cli exits 1 when
                # the server closes without close_notify, a separate test.)
                self.assertIsNotNone(rc, "gnutls-cli did not exit:\n" + g.output())
                after = self.after_handshake(g)
                self.assertIn(f"(TLS{ver}-".encode(), g.out, g.output())
                self.assertRegex(after, rb"\r\n250-" + re.escape(HOSTNAME.encode()), g.output())
                self.assertNotIn(b"STARTTLS", after, "STARTTLS advertised over TLS:\n"
                                 + g.output())
                self.assertRegex(after, rb"\r\n221 ", g.output())
                self.assertIsNone(wait_log(self.mxd, off, is_handshake_failure_line, 0.3))

    def test_tls11_refused_by_default(self):
        off = log_size(self.mxd)
        g, rc = self.ehlo_quit("NORMAL:-VERS-ALL:+VERS-TLS1.1")
        self.assertNotIn(b"Handshake was completed", g.out,
                         "TLS 1.1 accepted with the default priority:\n" + g.output())
        self.assertNotEqual(rc, 0, g.output())
        # A 221 reply line; the port in gnutls-cli's "Connecting to" may hold 221.
        self.assertNotRegex(g.out, rb"(^|\n)221[ -]", g.output())
        self.assertIsNotNone(wait_log(self.mxd, off, is_handshake_failure_line, 5),
                             f"refused handshake not logged:\n{log_since(self.mxd, off)}")
        self.assertServing()

    def test_tls10_refused_by_default(self):
        g, rc = self.ehlo_quit("NORMAL:-VERS-ALL:+VERS-TLS1.0")
        self.assertNotIn(b"Handshake was completed", g.out,
                         "TLS 1.0 accepted with the default priority:\n" + g.output())
        self.assertNotEqual(rc, 0, g.output())
        self.assertServing()

    def test_message(self):
        m = self.marker()
        g = self.gnutls_cli()
        # gnutls-cli reads stdin only after the handshake: talk step by step.
        g.send(b"EHLO gnutls.test\r\n")
        self.assertIsNotNone(g.expect(rb"250 [^\r\n]*\r\n"), g.output())
        pos = len(g.out)
        g.send(b"MAIL FROM:<g@client.test>\r\n")
        self.assertIsNotNone(g.expect(rb"250 [^\r\n]*\r\n", pos), g.output())
        pos = len(g.out)
        g.send(f"RCPT TO:<{RCPT}>\r\n".encode())
        self.assertIsNotNone(g.expect(rb"250 [^\r\n]*\r\n", pos), g.output())
        pos = len(g.out)
        g.send(b"DATA\r\n")
        self.assertIsNotNone(g.expect(rb"354 [^\r\n]*\r\n", pos), g.output())
        pos = len(g.out)
        content = content_for(m)
        g.send(mxdtest.dot_stuff(content) + b".\r\n")
        mm = g.expect(rb"250 [^\r\n]*queued as (\S+)\r\n", pos)
        self.assertIsNotNone(mm, g.output())
        qid = mm.group(1).decode()
        rc = g.finish(b"QUIT\r\n")
        self.assertIsNotNone(rc, "gnutls-cli did not exit:\n" + g.output())
        self.assertRegex(g.out[pos:], rb"\r\n221 ", g.output())
        self.assertStored(qid, content, with_proto="ESMTPS")


class Tls11Allowed(GnutlsCliCase):
    """Positive control: with a priority that allows TLS 1.1 the same
    gnutls-cli command succeeds, so the refusal above is mxd's default."""

    PRIORITY = "NORMAL:+VERS-TLS1.1"

    def test_tls11_accepted(self):
        g, rc = self.ehlo_quit("NORMAL:-VERS-ALL:+VERS-TLS1.1")
        self.assertIn(b"Handshake was completed", g.out,
                      "TLS 1.1 refused although the priority allows it:\n" + g.output())
        self.assertIn(b"(TLS1.1-", g.out, g.output())
        self.assertRegex(self.after_handshake(g), rb"\r\n250-" + re.escape(HOSTNAME.encode()),
                         g.output())

    # Not repeated here (None: not collected by unittest).
    test_tls12_and_tls13 = None
    test_tls11_refused_by_default = None
    test_tls10_refused_by_default = None
    test_message = None


# --------------------------------------------------------------------------
# Configuration: mxd --check and start-up


class CheckConfig(unittest.TestCase):
    def setUp(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, "tls-check")
        self.port = mxdtest.free_port()

    def write(self, cert, key, priority=None):
        text = mxdtest.config_text(mxdtest.default_server(self.tmpdir, self.port),
                                   mxdtest.DEFAULT_DOMAINS,
                                   tlsutil.tls_section(cert, key, priority))
        path = os.path.join(self.tmpdir, "mxd.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def check(self, cert, key, priority=None):
        path = self.write(cert, key, priority)
        p = subprocess.run([mxdtest.mxd_path(), "--check", "-c", path], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30, cwd=self.tmpdir)
        return p.returncode, p.stderr.decode("utf-8", "replace")

    def test_valid(self):
        rc, err = self.check(pki().cert, pki().key)
        self.assertEqual(rc, 0, err)
        self.assertNotRegex(err, r"(?i)expire", err)

    def test_chain(self):
        rc, err = self.check(pki().chain, pki().key)
        self.assertEqual(rc, 0, err)

    def test_missing_certificate(self):
        missing = os.path.join(self.tmpdir, "no-such-cert.pem")
        rc, err = self.check(missing, pki().key)
        self.assertEqual(rc, 1, err)
        self.assertIn(missing, err, "message does not name the missing file")

    def test_missing_key(self):
        missing = os.path.join(self.tmpdir, "no-such-key.pem")
        rc, err = self.check(pki().cert, missing)
        self.assertEqual(rc, 1, err)
        self.assertIn(missing, err, "message does not name the missing file")

    def test_key_does_not_match(self):
        rc, err = self.check(pki().cert, pki().other_key)
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"(?i)match", "message does not say the key does not match")

    def test_not_a_certificate(self):
        junk = os.path.join(self.tmpdir, "junk.pem")
        with open(junk, "w") as f:
            f.write("this is not PEM\n")
        rc, err = self.check(junk, pki().key)
        self.assertEqual(rc, 1, err)
        self.assertIn(junk, err)

    def test_expired_is_a_warning(self):
        rc, err = self.check(pki().expired_cert, pki().expired_key)
        self.assertEqual(rc, 0, err)
        self.assertRegex(err, r"(?i)expired", "no warning about the expired certificate")
        self.assertIn(pki().expired_cert, err)

    def test_bad_priority(self):
        rc, err = self.check(pki().cert, pki().key, "NORMAL:+NO-SUCH-THING")
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"(?i)priority")

    def test_certificate_without_key(self):
        text = mxdtest.config_text(mxdtest.default_server(self.tmpdir, self.port),
                                   mxdtest.DEFAULT_DOMAINS,
                                   f"[tls]\ncertificate = {pki().cert}\n")
        path = os.path.join(self.tmpdir, "mxd.conf")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([mxdtest.mxd_path(), "--check", "-c", path], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)

    def test_start_refused_with_mismatched_key(self):
        mxd = mxdtest.Mxd(self.tmpdir, extra=tlsutil.tls_section(pki().cert, pki().other_key))
        with self.assertRaisesRegex(AssertionError, "exited with status"):
            try:
                mxd.start(timeout=10)
            finally:
                if mxd.running():
                    mxd.kill()

    def test_start_with_expired_certificate(self):
        mxd = mxdtest.Mxd(self.tmpdir,
                          extra=tlsutil.tls_section(pki().expired_cert, pki().expired_key))
        mxd.start()
        try:
            c = mxd.client()
            self.addCleanup(c.close)
            self.assertIn("STARTTLS", ext_keywords(c.ehlo()))
            r = c.cmd("STARTTLS")
            self.assertEqual(r.code, 220, str(r))
            ctx = ssl.create_default_context(cafile=pki().ca_cert)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # it is expired; encrypt anyway
            c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
            self.assertTrue(is_ehlo_reply(c.cmd("EHLO client.test")))
            c.close()
        finally:
            mxd.stop(check=True)


# --------------------------------------------------------------------------
# Concurrency


class Concurrent(TlsCase):
    SESSIONS = 50

    def test_50_tls_sessions(self):
        n = self.SESSIONS
        marker = self.marker()
        barrier = threading.Barrier(n, timeout=60)
        results, errors = {}, {}
        lock = threading.Lock()
        ctx = pki().client_context()

        def worker(i):
            s = None
            try:
                s = smtplib.SMTP("127.0.0.1", self.mxd.port, local_hostname=f"c{i}.test",
                                 timeout=120)
                s.ehlo()
                barrier.wait()  # all handshakes at the same time
                code, resp = s.starttls(context=ctx)
                if code != 220:
                    raise RuntimeError(f"STARTTLS {code} {resp!r}")
                s.ehlo()
                s.mail(f"s{i}@client.test")
                s.rcpt(RCPT)
                code, resp = s.data(content_for(marker, f"session {i}\r\n"))
                with lock:
                    results[i] = (code, resp.decode("utf-8", "replace"))
                s.quit()
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors[i] = repr(e)
                barrier.abort()
            finally:
                if s is not None:
                    s.close()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1, 180 - (time.monotonic() - started)))
        took = time.monotonic() - started
        self.assertEqual([t for t in threads if t.is_alive()], [],
                         f"sessions still running after {took:.0f}s")
        real = {i: e for i, e in errors.items() if "BrokenBarrierError" not in e}
        self.assertEqual(real or errors, {}, "sessions failed")
        bad = {i: r for i, r in results.items() if r[0] != 250}
        self.assertEqual(bad, {})
        self.assertEqual(len(results), n)
        for i, (_, resp) in results.items():
            qid = resp.rsplit(" ", 1)[1]
            self.assertStored(qid, content_for(marker, f"session {i}\r\n"), with_proto="ESMTPS")
        self.assertEqual(len(mxdtest.messages_containing(self.mxd.db_path, marker)), n)
        print(f"\n{n} concurrent TLS sessions stored in {took:.2f}s", file=sys.stderr)


# --------------------------------------------------------------------------
# SIGHUP: the certificate is reloaded; open sessions go on


class Reload(TlsCase):
    @classmethod
    def tls_extra(cls):
        p = pki()
        d = mxdtest.make_tmpdir(cls.addClassCleanup, "tls-live")
        cls.live_cert = os.path.join(d, "live.pem")
        cls.live_key = os.path.join(d, "live.key")
        shutil.copyfile(p.cert, cls.live_cert)
        shutil.copyfile(p.key, cls.live_key)
        return tlsutil.tls_section(cls.live_cert, cls.live_key)

    def served_fingerprint(self):
        c = self.starttls()
        der = c.sock.getpeercert(binary_form=True)
        c.close()
        return hashlib.sha256(der).hexdigest()

    def test_sighup_swaps_certificate(self):
        p = pki()
        self.assertEqual(self.served_fingerprint(), p.fingerprint(p.cert))
        m = self.marker()
        old = self.starttls()
        self.assertTrue(is_ehlo_reply(old.cmd("EHLO old.test")))
        self.assertReply(old.cmd("MAIL FROM:<old@client.test>"), 250)
        tmp_cert, tmp_key = self.live_cert + ".new", self.live_key + ".new"
        shutil.copyfile(p.cert2, tmp_cert)
        shutil.copyfile(p.key2, tmp_key)
        os.replace(tmp_key, self.live_key)
        os.replace(tmp_cert, self.live_cert)
        off = log_size(self.mxd)
        self.mxd.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        fp = None
        while time.monotonic() < deadline:
            fp = self.served_fingerprint()
            if fp == p.fingerprint(p.cert2):
                break
            time.sleep(0.2)
        self.assertEqual(fp, p.fingerprint(p.cert2),
                         "new certificate not served after SIGHUP; stderr since:\n"
                         + log_since(self.mxd, off))
        # The session opened before the reload goes on.
        self.assertReply(old.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(old.cmd("DATA"), 354)
        old.send(mxdtest.dot_stuff(content_for(m)) + b".\r\n")
        r = old.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, content_for(m), with_proto="ESMTPS")


if __name__ == "__main__":
    mxdtest.main()
