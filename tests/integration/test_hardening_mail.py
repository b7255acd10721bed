"""Issue 14, delivery side: what mxd sends to its next hops.

- Pool race (item 16): a pooled LMTP connection whose idle QUIT is out is
  never handed a job. A scripted LMTP server holds its reply to QUIT, so
  the window in which the old code gave the closing connection a new
  message (451 4.4.2 LMTP session not ready) is seconds wide, not a race.
- 8-bit to a next hop without 8BITMIME (item 17): a scripted LMTP server
  whose LHLO reply lists no extensions gets 7-bit content (quoted-printable
  for 8-bit text parts), and a message that cannot be converted is bounced
  with 5.6.3 at once; the same towards a primary over SMTP.
- SMTPUTF8 (item 15), with the real private Dovecot 2.3 (no SMTPUTF8 in its
  LHLO reply): a message that carried SMTPUTF8 but is all ASCII is
  delivered; one with a UTF-8 local part bounces with 5.6.7.
- Ourselves by address (item 10): with primary = mx, an MX host under
  another name whose A record is mxd's own listen address is a loop
  (451 4.4.6, held), not a primary to forward to.

The scripted servers run in threads of the test process, on 127.0.0.1.
"""

import asyncio
import os
import quopri
import re
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from authdns import AuthDns  # noqa: E402
from dovecot import MxdDovecotCase, make_message, queue_counts, smtp_send, wait_for  # noqa: E402

SENDER = "sender@client.test"
DOMAIN = "example.test"
QUEUE_SLOW = "[queue]\nretry_min = 1h\nretry_max = 2h\n"


# --------------------------------------------------------------------------
# A scripted LMTP/SMTP server


class ScriptServer:
    """An LMTP (or, with smtp=True, SMTP) server on 127.0.0.1 in a thread.

    caps: the extension keywords of its LHLO/EHLO reply (none at all: the
    reply is a single "250 name" line). quit_delay: seconds to wait before
    answering QUIT (the connection stays open meanwhile). Every command line
    is recorded in .events as (connection number, line); every message in
    .messages as a dict with mail, rcpts and data (dot-stuffing undone)."""

    def __init__(self, caps=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"), quit_delay=0.0,
                 smtp=False, host="127.0.0.1", port=0):
        self.host = host
        self.want_port = port
        self.caps = list(caps)
        self.quit_delay = quit_delay
        self.smtp = smtp
        self.events = []
        self.messages = []
        self.port = None
        self._loop = None
        self._server = None
        self._thread = None
        self._nconn = 0
        self._lock = threading.Lock()

    def start(self):
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._session, self.host, self.want_port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise AssertionError("scripted server did not start")
        return self

    def stop(self):
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    @property
    def endpoint(self):
        return f"{self.host}:{self.port}"

    def lines(self, prefix):
        with self._lock:
            return [(n, l) for n, l in self.events if l.upper().startswith(prefix)]

    def _event(self, n, line):
        with self._lock:
            self.events.append((n, line))

    async def _session(self, reader, writer):
        self._nconn += 1
        n = self._nconn
        name = "script.test"

        def say(text):
            writer.write(text.encode() + b"\r\n")

        say(f"220 {name} ready")
        mail, rcpts = None, []
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self._event(n, line)
                verb = line.split(" ", 1)[0].upper()
                if verb in ("LHLO", "EHLO"):
                    if self.caps:
                        say("\r\n".join([f"250-{name}"] + [f"250-{c}" for c in self.caps[:-1]]
                                        + [f"250 {self.caps[-1]}"]))
                    else:
                        say(f"250 {name}")
                elif verb == "HELO":
                    say(f"250 {name}")
                elif verb == "MAIL":
                    mail, rcpts = line[5:].strip(), []
                    say("250 2.1.0 OK")
                elif verb == "RCPT":
                    rcpts.append(line[5:].strip())
                    say("250 2.1.5 OK")
                elif verb == "DATA":
                    say("354 go ahead")
                    await writer.drain()
                    data = bytearray()
                    while True:
                        l = await reader.readline()
                        if not l:
                            return
                        if l == b".\r\n":
                            break
                        data += l[1:] if l.startswith(b".") else l
                    with self._lock:
                        self.messages.append({"mail": mail, "rcpts": list(rcpts),
                                              "data": bytes(data), "conn": n})
                    for _ in ([0] if self.smtp else rcpts):
                        say("250 2.0.0 saved")
                elif verb == "RSET":
                    mail, rcpts = None, []
                    say("250 2.0.0 OK")
                elif verb == "NOOP":
                    say("250 2.0.0 OK")
                elif verb == "QUIT":
                    await writer.drain()
                    if self.quit_delay:
                        await asyncio.sleep(self.quit_delay)
                    say("221 2.0.0 bye")
                    await writer.drain()
                    return
                else:
                    say("502 5.5.2 not implemented")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


def wait_until(pred, timeout, what, diag=lambda: ""):
    if not wait_for(pred, timeout, poll=0.05):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}{diag()}")


def log_lines(mxd, qid, word):
    """mxd's `deliver <word>` lines for queue id qid."""
    return [l for l in mxd.all_stderr().splitlines()
            if qid in l and f" deliver {word} " in l]


class ScriptCase(mxdtest.ClassMxd, unittest.TestCase):
    """One scripted server and one mxd delivering to it, per class."""

    SERVER_KW = {}
    EXTRA = QUEUE_SLOW
    ENV = {}
    MODE = "lmtp"  # or "backup": the scripted server is the primary

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.srv = ScriptServer(smtp=cls.MODE == "backup", **cls.SERVER_KW).start()
        cls.addClassCleanup(cls.srv.stop)
        if cls.MODE == "backup":
            dom = {"mode": "backup", "primary": cls.srv.endpoint, "recipients": "any"}
        else:
            dom = {"mode": "local", "lmtp": cls.srv.endpoint, "recipients": "any"}
        server = {"control_socket": os.path.join(cls.tmpdir, "control.sock")}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, domains={DOMAIN: dom},
                                  extra=cls.EXTRA, env=dict(cls.ENV)))

    def diag(self):
        return f"\n--- mxd stderr (tail)\n{self.mxd.all_stderr()[-5000:]}"

    def counts(self):
        return queue_counts(self.mxd.db_path)

    def delivered(self, token):
        return [m for m in self.srv.messages if token.encode() in m["data"]]


# --------------------------------------------------------------------------
# Item 16: a closing pooled connection is never handed a job


class PoolRace(ScriptCase):
    """The idle close (MXD_TEST_IDLE_MS = 300 ms instead of 5 s) sends QUIT;
    the server answers it only 3 s later. A message committed in that window
    must go out on a new connection at once, not to the closing one (which
    deferred it with 451 4.4.2 and, with retry_min = 1h, kept it queued)."""

    SERVER_KW = {"quit_delay": 3.0}
    ENV = {"MXD_TEST_IDLE_MS": "300"}

    def test_job_due_while_idle_quit_is_out(self):
        tok1 = self.token()
        rcpt = f"u1@{DOMAIN}"
        smtp_send(self.mxd.port, SENDER, [rcpt],
                  make_message(SENDER, [rcpt], "first", ["one"], [f"X-Token: {tok1}"]))
        wait_until(lambda: self.delivered(tok1), 10, "the first message", self.diag)
        # The connection is idle now; its QUIT goes out after 300 ms and the
        # server sits on it for 3 s.
        wait_until(lambda: self.srv.lines("QUIT"), 5, "the idle QUIT", self.diag)
        quit_at = time.monotonic()
        tok2 = self.token()
        qid = smtp_send(self.mxd.port, SENDER, [rcpt],
                        make_message(SENDER, [rcpt], "second", ["two"], [f"X-Token: {tok2}"]))
        self.assertLess(time.monotonic() - quit_at, 2.5, "the window closed before the send")
        wait_until(lambda: self.delivered(tok2), 8, "the second message on a new connection",
                   self.diag)
        self.assertEqual(log_lines(self.mxd, qid, "deferred"), [],
                         "the second message was handed to the closing connection")
        # It went out on a connection other than the one that was quitting.
        quit_conn = self.srv.lines("QUIT")[0][0]
        self.assertNotEqual(self.delivered(tok2)[0]["conn"], quit_conn)


# --------------------------------------------------------------------------
# Item 17: 8-bit content never goes raw to a next hop without 8BITMIME

TEXT8 = "Gr\u00fc\u00dfe aus K\u00f6ln = 100 \u20ac \n.dot line\nend"


def mime8_message(token, rcpt):
    """A MIME message with one 8-bit text part and a 7-bit attachment."""
    body = TEXT8.replace("\n", "\r\n").encode("utf-8")
    return (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: 8bit {token}\r\n"
            f"X-Token: {token}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"=b1\"\r\n\r\n"
            "--=b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + body + \
        b"\r\n--=b1\r\nContent-Type: application/octet-stream\r\n" \
        b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--=b1--\r\n"


class SevenBitTests:
    """Mixed into a ScriptCase whose scripted next hop lists no 8BITMIME
    (not a TestCase itself: unittest would run it with the default caps)."""

    def arrive(self, content, opts=("BODY=8BITMIME",)):
        tok = re.search(rb"X-Token: (\S+)", content).group(1).decode()
        qid = smtp_send(self.mxd.port, SENDER, [f"u@{DOMAIN}"], content, list(opts))
        wait_until(lambda: self.delivered(tok), 10, "the message at the next hop", self.diag)
        return qid, self.delivered(tok)[0]

    def check_converted(self, content):
        qid, m = self.arrive(content)
        data = m["data"]
        self.assertFalse(any(b >= 0x80 for b in data), "8-bit octets reached the next hop")
        self.assertNotIn("8BITMIME", m["mail"].upper())
        part = data.split(b"--=b1\r\n")[1]
        hdr, _, enc = part.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Transfer-Encoding: quoted-printable", hdr)
        self.assertNotIn(b"8bit", hdr)
        self.assertEqual(quopri.decodestring(enc.rstrip(b"\r\n")).decode("utf-8"),
                         TEXT8.replace("\n", "\r\n"))
        # the rest is as it was
        self.assertIn(b"AAEC\r\n--=b1--\r\n", data)
        self.assertEqual(log_lines(self.mxd, qid, "bounced"), [])

    def check_bounced(self, content, why):
        qid = smtp_send(self.mxd.port, SENDER, [f"u@{DOMAIN}"], content, ["BODY=8BITMIME"])
        wait_until(lambda: log_lines(self.mxd, qid, "bounced"), 10, "the 5.6.3 bounce",
                   self.diag)
        line = log_lines(self.mxd, qid, "bounced")[0]
        self.assertIn("5.6.3", line)
        self.assertIn(why, line)
        self.assertIn("attempts=1", line, "bounced at once, not after retries")
        self.assertEqual(self.delivered(re.search(rb"X-Token: (\S+)", content).group(1).decode()),
                         [])

    def test_8bit_text_part_converted(self):
        self.check_converted(mime8_message(self.token(), f"u@{DOMAIN}"))

    def test_7bit_message_unchanged(self):
        tok = self.token()
        content = make_message(SENDER, [f"u@{DOMAIN}"], "plain", ["just ASCII", ".", "x"],
                               [f"X-Token: {tok}"])
        _, m = self.arrive(content)
        self.assertTrue(m["data"].endswith(content), "a 7-bit message was changed")

    def test_8bit_without_mime_bounced(self):
        tok = self.token()
        content = (f"Subject: raw\r\nX-Token: {tok}\r\n\r\n").encode() + \
            "K\u00f6ln\r\n".encode("utf-8")
        self.check_bounced(content, "without MIME-Version")

    def test_8bit_header_bounced(self):
        tok = self.token()
        content = (f"X-Token: {tok}\r\nMIME-Version: 1.0\r\n").encode() + \
            "Subject: K\u00f6ln\r\n\r\nx\r\n".encode("utf-8")
        self.check_bounced(content, "header")


class Lmtp7bit(SevenBitTests, ScriptCase):
    """An LMTP server whose LHLO reply lists no extensions at all."""

    SERVER_KW = {"caps": ()}


class Primary7bit(SevenBitTests, ScriptCase):
    """A primary (backup domain, SMTP) without 8BITMIME; SIZE= carries the
    converted size (BDAT's: unit test_smtp_client issue14_convert_bdat)."""

    MODE = "backup"
    SERVER_KW = {"caps": ("PIPELINING", "ENHANCEDSTATUSCODES", "SIZE 10000000")}


# --------------------------------------------------------------------------
# Item 15: SMTPUTF8 only when it is needed (real Dovecot 2.3)


class Smtputf8Dovecot(MxdDovecotCase):
    """Dovecot 2.3's LMTP does not offer SMTPUTF8. The sender is local, so
    a bounce's DSN lands in its maildir."""

    EXTRA = QUEUE_SLOW

    def lhlo_caps(self):
        import socket

        with socket.create_connection(("127.0.0.1", self.dov.port), timeout=10) as c:
            f = c.makefile("rb")
            f.readline()
            c.sendall(b"LHLO probe.test\r\n")
            caps = []
            while True:
                line = f.readline().decode()
                caps.append(line[4:].strip().upper())
                if line[3:4] != "-":
                    break
            c.sendall(b"QUIT\r\n")
        return caps

    def test_dovecot_lacks_smtputf8(self):
        caps = self.lhlo_caps()
        self.assertNotIn("SMTPUTF8", caps, "this Dovecot offers SMTPUTF8: the test is moot")
        self.assertIn("8BITMIME", caps)

    def test_ascii_message_with_smtputf8_is_delivered(self):
        tok = self.token()
        user = f"ascii@{DOMAIN}"
        content = make_message(SENDER, [user], "all ASCII", ["plain"], [f"X-Token: {tok}"])
        qid = smtp_send(self.mxd.port, SENDER, [user], content, ["SMTPUTF8"])
        self.wait_files(1, user, timeout=15)
        self.assertEqual(log_lines(self.mxd, qid, "bounced"), [])

    def test_utf8_local_part_bounces(self):
        tok = self.token()
        snd = f"snd-{tok[-6:]}@{DOMAIN}"
        user = f"j\u00f6rg@{DOMAIN}"
        content = make_message(snd, [user], "UTF-8 local part", ["x"], [f"X-Token: {tok}"])
        qid = smtp_send(self.mxd.port, snd, [user], content, ["SMTPUTF8"])
        wait_until(lambda: log_lines(self.mxd, qid, "bounced"), 15, "the bounce", self.diag)
        self.assertRegex(log_lines(self.mxd, qid, "bounced")[0], r"5\.6\.7")
        # the sender hears of it: the DSN reaches its mailbox
        self.wait_files(1, snd, timeout=15)
        dsn = self.dov.messages(snd)[0]
        self.assertIn(b"5.6.7", dsn)
        self.assertIn(tok.encode(), dsn)

    def test_utf8_header_bounces(self):
        # ASCII envelope, UTF-8 in the header: it needs SMTPUTF8 all the same
        tok = self.token()
        user = f"hdr@{DOMAIN}"
        content = make_message(SENDER, [user], "Gr\u00fc\u00dfe", ["x"], [f"X-Token: {tok}"])
        qid = smtp_send(self.mxd.port, SENDER, [user], content, ["SMTPUTF8"])
        wait_until(lambda: log_lines(self.mxd, qid, "bounced"), 15, "the bounce", self.diag)
        self.assertRegex(log_lines(self.mxd, qid, "bounced")[0], r"5\.6\.7")


# --------------------------------------------------------------------------
# Item 10: we recognise ourselves by address


class SelfByAddress(mxdtest.ClassMxd, unittest.TestCase):
    """primary = mx. MX targets use MXD_TEST_SMTP_PORT = mxd's own port, so
    a host whose A record is 127.0.0.1 is mxd itself: the old code forwarded
    to it (mxd queued its own message again, a loop). A primary listens at
    127.0.0.2 on that same port."""

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        port = mxdtest.free_port()
        cls.primary = ScriptServer(smtp=True, host="127.0.0.2", port=port,
                                   caps=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES")).start()
        cls.addClassCleanup(cls.primary.stop)
        zone = {
            # the only MX is us under another name
            "only.test": [("MX", (10, "alias.only.test"))],
            "alias.only.test": [("A", "127.0.0.1")],
            # us (by address) at 10, the primary worse at 20: not forwarded
            "worse.test": [("MX", (10, "alias.worse.test")), ("MX", (20, "p.worse.test"))],
            "alias.worse.test": [("A", "127.0.0.1")],
            "p.worse.test": [("A", "127.0.0.2")],
            # the primary better at 5, us at 10: forwarded to the primary
            "better.test": [("MX", (5, "p.better.test")), ("MX", (10, "alias.better.test"))],
            "p.better.test": [("A", "127.0.0.2")],
            "alias.better.test": [("A", "127.0.0.1")],
        }
        cls.dns = AuthDns(zone).start()
        cls.addClassCleanup(cls.dns.stop)
        domains = {d: {"mode": "backup", "primary": "mx", "recipients": "any"}
                   for d in ("only.test", "worse.test", "better.test")}
        server = {"dns_servers": cls.dns.server,
                  "control_socket": os.path.join(cls.tmpdir, "control.sock")}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, domains=domains, port=port,
                                  extra=QUEUE_SLOW, env={"MXD_TEST_SMTP_PORT": str(port)}))

    def diag(self):
        return f"\n--- mxd stderr (tail)\n{self.mxd.all_stderr()[-5000:]}"

    def queued_lines(self):
        return [l for l in self.mxd.all_stderr().splitlines() if " smtp queued " in l]

    def rcpt_row(self, addr):
        with self.mxd.db() as db:
            return db.execute("SELECT state, last_reply FROM message_rcpts WHERE address = ?",
                              (addr,)).fetchone()

    def assert_loop(self, rcpt):
        before = len(self.queued_lines())
        tok = self.token()
        smtp_send(self.mxd.port, SENDER, [rcpt],
                  make_message(SENDER, [rcpt], "loop", ["x"], [f"X-Token: {tok}"]))
        wait_until(lambda: (self.rcpt_row(rcpt) or (None, None))[1], 10,
                   f"an outcome for {rcpt}", self.diag)
        state, reply = self.rcpt_row(rcpt)
        self.assertEqual(state, "held", f"{rcpt}: {reply}{self.diag()}")
        self.assertRegex(reply, r"^451 4\.4\.6 .*loops back to myself")
        time.sleep(0.5)
        self.assertEqual(len(self.queued_lines()), before + 1,
                         f"mxd forwarded {rcpt} to itself{self.diag()}")
        self.assertEqual([m for m in self.primary.messages if tok.encode() in m["data"]], [])

    def test_only_mx_is_our_address(self):
        self.assert_loop("a@only.test")

    def test_worse_primary_than_our_address(self):
        self.assert_loop("a@worse.test")

    def test_better_primary_than_our_address(self):
        tok = self.token()
        rcpt = "a@better.test"
        smtp_send(self.mxd.port, SENDER, [rcpt],
                  make_message(SENDER, [rcpt], "better", ["x"], [f"X-Token: {tok}"]))
        wait_until(lambda: [m for m in self.primary.messages if tok.encode() in m["data"]], 10,
                   "the message at the better primary", self.diag)


if __name__ == "__main__":
    unittest.main(verbosity=2)
