"""Hostile input, one table: open relay tricks (percent hack, source routes,
quoted "@", domain literals, bang paths), SMTP smuggling in DATA and BDAT,
overlong commands and addresses, NUL bytes, non-ASCII without SMTPUTF8,
commands we do not offer, and STARTTLS injection; each row with the exact
reply code and enhanced code mxd must give (RFC 5321, RFC 6531, RFC 3030,
RFC 3207, and the reply table in DESIGN.md).

Every row runs in a fresh session; after its last step a NOOP must still
get 250 (the session is in sync: nothing the client smuggled became a
command). Rows whose address is for one of our domains complete the
transaction and check what was stored: the recipient stays a local
mailbox of example.test, never a route elsewhere. Smuggling rows check
that no second message was stored.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import MxdTestCase  # noqa: E402
from test_protocol import SMUGGLING_VARIANTS  # noqa: E402
from test_tls import INJECTIONS, TlsCase, setUpModule  # noqa: E402,F401 (PKI for TlsCase)

M = b"MAIL FROM:<a@client.test>\r\n"
RELAY = (550, "5.7.1")
RCPT_SYNTAX = (501, "5.1.3")
OK_RCPT = (250, "2.1.5")

# (name, steps, stored) - steps: [(bytes sent, (code, enh) of the one reply
# it gets)]; a step with None expects no reply. stored: for rows that
# accept a recipient, the (address, domain) mxd must store for it.
CASES = [
    # -- open relay: only the domain after the last "@" routes, and only ours
    ("percent hack to us", [(M, (250, "2.1.0")),
                            (b"RCPT TO:<user%other.test@example.test>\r\n", OK_RCPT)],
     ("user%other.test@example.test", "example.test")),
    ("percent hack elsewhere", [(M, (250, "2.1.0")),
                                (b"RCPT TO:<user%example.test@other.test>\r\n", RELAY)], None),
    ("source route via other to us", [(M, (250, "2.1.0")),
                                      (b"RCPT TO:<@other.test:user@example.test>\r\n", OK_RCPT)],
     ("user@example.test", "example.test")),
    ("source route via us elsewhere",
     [(M, (250, "2.1.0")), (b"RCPT TO:<@example.test,@x.test:user@other.test>\r\n", RELAY)], None),
    ("quoted @ to us", [(M, (250, "2.1.0")),
                        (b'RCPT TO:<"user@other.test"@example.test>\r\n', OK_RCPT)],
     ('"user@other.test"@example.test', "example.test")),
    ("quoted @ elsewhere", [(M, (250, "2.1.0")),
                            (b'RCPT TO:<"user@example.test"@other.test>\r\n', RELAY)], None),
    ("domain literal v4", [(M, (250, "2.1.0")), (b"RCPT TO:<user@[127.0.0.1]>\r\n", RELAY)], None),
    ("domain literal v6", [(M, (250, "2.1.0")), (b"RCPT TO:<user@[IPv6:::1]>\r\n", RELAY)], None),
    ("bang path to us", [(M, (250, "2.1.0")),
                         (b"RCPT TO:<other.test!user@example.test>\r\n", OK_RCPT)],
     ("other.test!user@example.test", "example.test")),
    ("bang path elsewhere", [(M, (250, "2.1.0")),
                             (b"RCPT TO:<example.test!user@other.test>\r\n", RELAY)], None),
    ("bang path without domain", [(M, (250, "2.1.0")),
                                  (b"RCPT TO:<other.test!user>\r\n", RCPT_SYNTAX)], None),
    ("unqualified", [(M, (250, "2.1.0")), (b"RCPT TO:<user>\r\n", RCPT_SYNTAX)], None),
    ("two @", [(M, (250, "2.1.0")), (b"RCPT TO:<user@other.test@example.test>\r\n", RCPT_SYNTAX)],
     None),
    ("trailing dot", [(M, (250, "2.1.0")), (b"RCPT TO:<user@example.test.>\r\n", RCPT_SYNTAX)],
     None),
    ("no angle brackets", [(M, (250, "2.1.0")), (b"RCPT TO:user@example.test\r\n", (501, "5.5.4"))],
     None),
    ("control octet in address", [(M, (250, "2.1.0")),
                                  (b"RCPT TO:<us\x01er@example.test>\r\n", RCPT_SYNTAX)], None),
    # -- overlong (RFC 5321 4.5.3.1)
    ("command of 512 octets", [(b"NOOP " + b"x" * 505 + b"\r\n", (250, "2.0.0"))], None),
    ("command of 513 octets", [(b"NOOP " + b"x" * 506 + b"\r\n", (500, "5.5.2"))], None),
    ("command of 100 KiB", [(b"MAIL FROM:<" + b"a" * 102400 + b"@x.test>\r\n", (500, "5.5.2"))],
     None),
    ("local part of 65 octets", [(M, (250, "2.1.0")),
                                 (b"RCPT TO:<" + b"a" * 65 + b"@example.test>\r\n", RCPT_SYNTAX)],
     None),
    ("domain of 256 octets", [(M, (250, "2.1.0")),
                              (b"RCPT TO:<a@" + (b"b" * 62 + b".") * 4 + b"test>\r\n",
                               RCPT_SYNTAX)], None),
    # -- NUL, bare CR/LF and non-ASCII in commands
    ("NUL in verb", [(b"NO\x00OP\r\n", (500, "5.5.2"))], None),
    ("NUL in address", [(b"MAIL FROM:<a\x00b@client.test>\r\n", (500, "5.5.2"))], None),
    # only CRLF ends a line (RFC 5321 2.3.8): the bare LF is inside this one
    ("bare LF inside a command", [(b"NOOP\nRSET\r\n", (500, "5.5.2"))], None),
    ("bare CR inside a command", [(b"NO\rOP\r\n", (500, "5.5.2"))], None),
    ("UTF-8 sender without SMTPUTF8", [("MAIL FROM:<é@client.test>\r\n".encode(), (553, "5.6.7"))],
     None),
    ("UTF-8 recipient without SMTPUTF8",
     [(M, (250, "2.1.0")), ("RCPT TO:<é@example.test>\r\n".encode(), (553, "5.6.7"))], None),
    ("Latin-1 recipient", [(M, (250, "2.1.0")), (b"RCPT TO:<\xe9@example.test>\r\n", RCPT_SYNTAX)],
     None),
    ("invalid UTF-8 with SMTPUTF8", [(b"MAIL FROM:<a@client.test> SMTPUTF8\r\n", (250, "2.1.0")),
                                     (b"RCPT TO:<\xc3@example.test>\r\n", RCPT_SYNTAX)], None),
    ("non-ASCII verb", [("MAİL FROM:<a@client.test>\r\n".encode(), (500, "5.5.1"))], None),
    # -- commands not offered
    ("AUTH", [(b"AUTH PLAIN AGFAYg==\r\n", (502, "5.5.1"))], None),
    ("EXPN", [(b"EXPN staff\r\n", (502, "5.5.1"))], None),
    ("TURN", [(b"TURN\r\n", (502, "5.5.1"))], None),
    # -- BDAT framing (RFC 3030): the chunk size, not the content, ends it
    ("BDAT chunk holding a dot line and a command",
     [(M, (250, "2.1.0")), (b"RCPT TO:<u@example.test>\r\n", OK_RCPT),
      (b"BDAT 23 LAST\r\nx\r\n.\r\nMAIL FROM:<e@x>\r\n", (250, "2.0.0"))], None),
    ("BDAT size overflow", [(M, (250, "2.1.0")), (b"RCPT TO:<u@example.test>\r\n", OK_RCPT),
                            (b"BDAT 99999999999999999999999\r\n", (501, "5.5.4"))], None),
    ("BDAT negative size", [(M, (250, "2.1.0")), (b"RCPT TO:<u@example.test>\r\n", OK_RCPT),
                            (b"BDAT -1\r\n", (501, "5.5.4"))], None),
]

# SMTP smuggling (CVE-2023-51764): a fake end of data followed by a second
# transaction inside one DATA. Only <CRLF>.<CRLF> ends it; the bare CR or
# LF refuses the one message.
SMUGGLED = (b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled %s\r\n")
for _name, _end in SMUGGLING_VARIANTS.items():
    CASES.append((f"smuggling {_name}", [
        (M, (250, "2.1.0")), (b"RCPT TO:<u@example.test>\r\n", OK_RCPT),
        (b"DATA\r\n", (354, None)),
        (b"Subject: s\r\n\r\nx" + _end + SMUGGLED % _name.encode() + b".\r\n", (550, "5.5.2"))],
        None))


class Hostile(MxdTestCase):
    def run_case(self, name, steps, stored):
        c = self.client()
        c.ehlo()
        for i, step in enumerate(steps):
            data, want = step
            c.send(data)
            if want is None:
                self.assertTrue(c.no_more_data(0.3), f"{name}: step {i}: a reply came")
                continue
            r = c.reply()
            self.assertEqual(r.code, want[0], f"{name}: step {i} sent {data[:80]!r}: got {r}")
            if want[1] is not None:
                self.assertEqual(r.enh, want[1], f"{name}: step {i}: got {r}")
        r = c.cmd("NOOP")
        self.assertEqual(r.code, 250, f"{name}: NOOP after the row: {r} (session out of sync)")
        self.assertTrue(c.no_more_data(0.05), f"{name}: an extra reply: {c.buf!r}")
        if stored:
            marker = f"hostile-{os.urandom(6).hex()}"
            c.send(b"DATA\r\n")
            self.assertEqual(c.reply().code, 354)
            c.send(f"Subject: {marker}\r\n\r\n{marker}\r\n.\r\n".encode())
            r = c.reply()
            self.assertEqual(r.code, 250, f"{name}: DATA: {r}")
            con = mxdtest.db_connect(self.mxd.db_path)
            try:
                rows = con.execute("SELECT r.address, r.domain FROM message_rcpts r JOIN messages m "
                                   "ON m.id = r.message_id WHERE m.qid = ?", (r.qid,)).fetchall()
            finally:
                con.close()
            self.assertEqual([tuple(r) for r in rows], [stored], f"{name}: stored recipient")
        c.cmd("QUIT")

    def test_table(self):
        for name, steps, stored in CASES:
            with self.subTest(name):
                self.run_case(name, steps, stored)
        self.assertNothingStored(b"smuggled")
        print(f"\nhostile: {len(CASES)} rows, each with its exact reply", file=sys.stderr)


class HostileStarttls(TlsCase):
    """STARTTLS injection (CVE-2011-0411): commands pipelined behind
    STARTTLS in the same write get no plaintext reply and are dropped (what
    happens after the handshake is test_tls.Injection)."""

    def test_injection_plaintext(self):
        for name, inject in INJECTIONS:
            with self.subTest(name):
                c = self.client()
                c.ehlo()
                c.send(b"STARTTLS\r\n" + inject)
                r = c.reply()
                self.assertEqual((r.code, r.enh), (220, "2.0.0"), f"{name}: {r}")
                self.assertTrue(c.no_more_data(0.5),
                                f"{name}: plaintext after the 220: {c.buf!r}")
                c.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
