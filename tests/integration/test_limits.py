"""Configured limits: recipients per transaction, message size (SIZE and
actual), connections per IP, command and data timeouts, line length."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import ConnectionClosed, MxdTestCase  # noqa: E402

RCPT = "user@example.test"
LIMIT = 10 * 1024


def body_of(size, marker):
    head = f"Subject: {marker}\r\n\r\n".encode()
    line = b"0123456789" * 7 + b"\r\n"
    n = max(0, size - len(head)) // len(line) + 1
    return head + line * n


class Limits(MxdTestCase):
    SERVER = {
        "max_recipients": "3",
        "max_message_size": "10k",
    }

    def session(self):
        c = self.client()
        c.ehlo()
        return c

    def test_ehlo_size(self):
        c = self.client()
        r = c.ehlo()
        sizes = [ln.split() for ln in r.lines[1:] if ln.upper().startswith("SIZE")]
        self.assertEqual(sizes, [["SIZE", str(LIMIT)]], str(r))

    def test_max_recipients(self):
        m = self.marker()
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        for i in range(3):
            self.assertReply(c.cmd(f"RCPT TO:<u{i}@example.test>"), 250)
        self.assertReply(c.cmd("RCPT TO:<u3@example.test>"), 452, "4.5.3")
        self.assertReply(c.cmd("RCPT TO:<u4@example.test>"), 452, "4.5.3")
        self.assertReply(c.cmd("DATA"), 354)
        content = f"Subject: {m}\r\n\r\nthree\r\n".encode()
        c.send(content + b".\r\n")
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        msg = self.assertStored(r.qid, content)
        self.assertEqual([x["address"] for x in msg["rcpts"]],
                         ["u0@example.test", "u1@example.test", "u2@example.test"])
        # The count is per transaction.
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        for i in range(3):
            self.assertReply(c.cmd(f"RCPT TO:<v{i}@example.test>"), 250)

    def test_size_param(self):
        c = self.session()
        self.assertReply(c.cmd(f"MAIL FROM:<a@client.test> SIZE={LIMIT + 1}"), 552, "5.3.4")
        self.assertReply(c.cmd("MAIL FROM:<a@client.test> SIZE=99999999999999"), 552, "5.3.4")
        self.assertReply(c.cmd(f"MAIL FROM:<a@client.test> SIZE={LIMIT}"), 250)

    def test_oversize_data_then_in_sync(self):
        m = self.marker()
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        big = body_of(3 * LIMIT, m)
        c.send(big + b".\r\n")
        self.assertReply(c.reply(), 552, "5.3.4")
        self.assertNothingStored(m)
        self.assertSpoolEmpty()
        # Same session, in sync: a small message goes through.
        small = body_of(LIMIT // 2, m + "-small")
        r = c.send_message("a@client.test", [RCPT], small, ehlo=False)
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, small)

    def test_oversize_data_huge_pipelined(self):
        # 100 times the limit, with dot lines inside that must not end it.
        m = self.marker()
        c = self.session()
        c.send(b"MAIL FROM:<a@client.test>\r\n" + f"RCPT TO:<{RCPT}>\r\n".encode() + b"DATA\r\n")
        self.assertEqual([r.code for r in c.replies(3)], [250, 250, 354])
        chunk = b"..not the end\r\n" + b"z" * 990 + b"\r\n"
        for _ in range(1000):
            c.send(chunk)
        c.send(b".\r\nNOOP\r\n")
        self.assertReply(c.reply(timeout=30), 552, "5.3.4")
        self.assertReply(c.reply(), 250, msg="NOOP after the oversize message")
        self.assertNothingStored(m)
        self.assertSpoolEmpty()

    def test_oversize_bdat(self):
        m = self.marker()
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        big = body_of(3 * LIMIT, m)
        chunks = [big[i:i + 8000] for i in range(0, len(big), 8000)]
        refused = None
        for i, ch in enumerate(chunks):
            last = i == len(chunks) - 1
            c.send(f"BDAT {len(ch)}{' LAST' if last else ''}\r\n".encode() + ch)
            r = c.reply()
            if r.code != 250:
                refused = r
                break
            self.assertIsNone(r.qid, f"oversize BDAT message queued: {r}")
        self.assertIsNotNone(refused, "oversize BDAT message accepted")
        self.assertReply(refused, 552, "5.3.4")
        self.assertReply(c.cmd("RSET"), 250)
        self.assertNothingStored(m)
        self.assertSpoolEmpty()
        small = body_of(1000, m + "-small")
        r = c.send_message("a@client.test", [RCPT], small, ehlo=False)
        self.assertReply(r, 250, "2.0.0")

    def test_line_too_long(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<" + "a" * 600 + "@client.test>"), 500, "5.5.2")
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        # RCPT lines may be 500 + 32 octets longer (RFC 3461 4: ORCPT and
        # NOTIFY): a 600-octet address is read, and refused as an address
        self.assertReply(c.cmd("RCPT TO:<" + "b" * 600 + "@example.test>"), 501, "5.1.3")
        self.assertReply(c.cmd("RCPT TO:<" + "b" * 1100 + "@example.test>"), 500, "5.5.2")
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)


class PerIpLimit(MxdTestCase):
    # Its own mxd: sessions closed by one test are released asynchronously
    # and must not count against the next test.
    SERVER = {"max_connections_per_ip": "3"}

    def test_max_connections_per_ip(self):
        held = []
        deadline = time.monotonic() + 10
        # Earlier tests' sessions may take a moment to be released by mxd.
        while len(held) < 3:
            c = mxdtest.SmtpClient(self.mxd.port)
            self.addCleanup(c.close)
            r = c.reply()
            if r.code == 220:
                held.append(c)
                continue
            c.close()
            self.assertReply(r, 421, "4.7.0")
            self.assertLess(time.monotonic(), deadline, "connections are not released")
            time.sleep(0.1)
        extra = mxdtest.SmtpClient(self.mxd.port)
        self.addCleanup(extra.close)
        r = extra.reply()
        self.assertReply(r, 421, "4.7.0")
        self.assertTrue(extra.wait_closed(5), "connection over the limit not closed")
        # The held sessions still work.
        for c in held:
            self.assertReply(c.cmd("NOOP"), 250)
        # Freeing one slot admits a new connection.
        self.assertReply(held[0].cmd("QUIT"), 221)
        held[0].close()
        deadline = time.monotonic() + 5
        while True:
            c = mxdtest.SmtpClient(self.mxd.port)
            self.addCleanup(c.close)
            r = c.reply()
            if r.code == 220 or time.monotonic() > deadline:
                break
            c.close()
            time.sleep(0.1)
        self.assertReply(r, 220, msg="slot not released after QUIT")
        for c in held[1:]:
            c.close()


class MaxConnections(MxdTestCase):
    SERVER = {"max_connections": "4", "max_connections_per_ip": "100"}

    def test_max_connections(self):
        held = []
        deadline = time.monotonic() + 10
        while len(held) < 4:
            c = mxdtest.SmtpClient(self.mxd.port)
            self.addCleanup(c.close)
            r = c.reply()
            if r.code == 220:
                held.append(c)
                continue
            c.close()
            self.assertReply(r, 421, "4.7.0")
            self.assertLess(time.monotonic(), deadline, "connections are not released")
            time.sleep(0.1)
        extra = mxdtest.SmtpClient(self.mxd.port)
        self.addCleanup(extra.close)
        r = extra.reply()
        self.assertEqual(r.code, 421, f"connection over max_connections: {r}")
        self.assertEqual(r.enh[:2], "4.", str(r))
        self.assertTrue(extra.wait_closed(5), "connection over the limit not closed")
        for c in held:
            self.assertReply(c.cmd("NOOP"), 250)


class BoundedMemory(MxdTestCase):
    """DESIGN: memory per session is bounded whatever the message size:
    receiving a 40 MiB message must not grow mxd by anything like 40 MiB."""

    ENV = mxdtest.small_asan_quarantine()
    SIZE = 40 * 1024 * 1024
    ALLOWED_GROWTH_KIB = 16 * 1024

    def sample_rss(self, stop, peak):
        while not stop.is_set():
            try:
                peak.append(self.mxd.rss_kib())
            except (OSError, AssertionError):
                return
            time.sleep(0.02)

    def send_big(self, bdat):
        m = self.marker()
        line = b"0123456789abcdef" * 6 + b"\r\n"
        head = f"Subject: {m}\r\n\r\n".encode()
        n = (self.SIZE - len(head)) // len(line)
        c = self.client(timeout=120)
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<big@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        block = line * 10000
        if bdat:
            c.send(f"BDAT {len(head)}\r\n".encode() + head)
            self.assertReply(c.reply(), 250)
        else:
            self.assertReply(c.cmd("DATA"), 354)
            c.send(head)
        sent = 0
        while sent + 10000 <= n:
            if bdat:
                c.send(f"BDAT {len(block)}\r\n".encode())
            c.send(block)
            if bdat:
                self.assertReply(c.reply(timeout=60), 250)
            sent += 10000
        if bdat:
            c.send(b"BDAT 0 LAST\r\n")
        else:
            c.send(b".\r\n")
        r = c.reply(timeout=120)
        self.assertReply(r, 250, "2.0.0")
        return r.qid, head + block * (sent // 10000)

    warmed = False

    def measure(self, bdat):
        # A first big message fills the writer's page cache (a fixed,
        # process-wide bound); growth after that is per-message memory.
        if not type(self).warmed:
            self.send_big(bdat=False)
            type(self).warmed = True
        base = self.mxd.rss_kib()
        stop = threading.Event()
        peak = []
        t = threading.Thread(target=self.sample_rss, args=(stop, peak), daemon=True)
        t.start()
        try:
            qid, content = self.send_big(bdat)
        finally:
            stop.set()
            t.join(timeout=10)
        grew = max(peak + [self.mxd.rss_kib()]) - base
        print(f"\n{'BDAT' if bdat else 'DATA'} {len(content) >> 20} MiB: mxd RSS grew by "
              f"{grew} KiB", file=sys.stderr)
        self.assertStored(qid, content)
        self.assertLess(grew, self.ALLOWED_GROWTH_KIB,
                        f"mxd grew by {grew} KiB while receiving a {len(content)}-octet message")
        self.assertSpoolEmpty()

    def test_data_40mib(self):
        self.measure(bdat=False)

    def test_bdat_40mib(self):
        self.measure(bdat=True)


class CommandTimeout(MxdTestCase):
    SERVER = {"command_timeout": "2s", "data_timeout": "60s"}

    def expect_timeout(self, c, started, lo=1.5, hi=8):
        try:
            r = c.reply(timeout=hi + 5)
        except ConnectionClosed:
            self.fail("connection closed without a 421 reply")
        took = time.monotonic() - started
        self.assertReply(r, 421, "4.4.2")
        self.assertGreaterEqual(took, lo, f"timed out too early ({took:.1f}s)")
        self.assertLessEqual(took, hi, f"timed out too late ({took:.1f}s)")
        self.assertTrue(c.wait_closed(5), "connection not closed after 421")

    def test_idle_after_banner(self):
        c = self.client()
        self.expect_timeout(c, time.monotonic())

    def test_idle_in_transaction(self):
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.expect_timeout(c, time.monotonic())

    def test_idle_in_partial_line(self):
        c = self.client()
        c.ehlo()
        c.send(b"NOOP")
        self.expect_timeout(c, time.monotonic())

    def test_activity_resets_timer(self):
        c = self.client()
        c.ehlo()
        for _ in range(5):
            time.sleep(1)
            self.assertReply(c.cmd("NOOP"), 250)

    def test_data_phase_uses_data_timeout(self):
        # RFC 5321 4.5.3.2: inside DATA the data block timeout applies, not
        # the command timeout.
        m = self.marker()
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        head = f"Subject: {m}\r\n\r\n".encode()
        c.send(head)
        time.sleep(4)
        c.send(b"late\r\n.\r\n")
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, head + b"late\r\n")


class DataTimeout(MxdTestCase):
    SERVER = {"command_timeout": "60s", "data_timeout": "2s"}

    def start_data(self, m):
        c = self.client()
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 250)
        self.assertReply(c.cmd(f"RCPT TO:<{RCPT}>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(f"Subject: {m}\r\n\r\npartial\r\n".encode())
        return c

    def test_data_timeout(self):
        m = self.marker()
        c = self.start_data(m)
        c.send((b"y" * 98 + b"\r\n") * 3000)  # 300 kB: large enough to be spooled
        time.sleep(0.2)
        started = time.monotonic()
        try:
            r = c.reply(timeout=15)
        except ConnectionClosed:
            self.fail("connection closed without a 421 reply")
        took = time.monotonic() - started
        self.assertReply(r, 421, "4.4.2")
        self.assertGreaterEqual(took, 1.5, f"{took:.1f}s")
        self.assertLessEqual(took, 8, f"{took:.1f}s")
        self.assertTrue(c.wait_closed(5), "connection not closed after 421")
        self.assertNothingStored(m)
        self.assertSpoolEmpty()

    def test_data_timer_per_read(self):
        # Data that keeps flowing never times out, however long the message.
        m = self.marker()
        c = self.start_data(m)
        for i in range(6):
            time.sleep(0.8)
            c.send(f"line {i}\r\n".encode())
        c.send(b".\r\n")
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertStored(r.qid, f"Subject: {m}\r\n\r\npartial\r\n".encode()
                          + b"".join(f"line {i}\r\n".encode() for i in range(6)))

    def test_command_phase_not_data_timeout(self):
        c = self.client()
        c.ehlo()
        time.sleep(4)
        self.assertReply(c.cmd("NOOP"), 250)


if __name__ == "__main__":
    mxdtest.main()
