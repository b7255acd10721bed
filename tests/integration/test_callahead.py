"""recipients = lmtp: at RCPT time mxd asks the domain's LMTP server
(Dovecot with a fixed user list) whether the user exists. Known users are
accepted, unknown ones get 550 5.1.1 at RCPT (nothing is queued for them),
answers are cached, and an unreachable LMTP server gives 450 4.1.1 so the
sender retries."""

import os
import smtplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from dovecot import MxdDovecotCase  # noqa: E402

ALICE = "alice@example.test"
BOB = "bob@example.test"


def rcpt_reply(port, rcpt):
    """(code, text) of RCPT TO:<rcpt> in a fresh session."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        code, _ = s.mail("sender@remote.test")
        if code != 250:
            raise AssertionError(f"MAIL refused: {code}")
        return s.rcpt(rcpt)


class Callahead(MxdDovecotCase):
    DOVECOT_USERS = {ALICE: "", BOB: ""}
    RECIPIENTS = "lmtp"

    def test_known_user_accepted(self):
        code, text = rcpt_reply(self.mxd.port, ALICE)
        self.assertEqual(code, 250, text)

    def test_unknown_user_refused(self):
        code, text = rcpt_reply(self.mxd.port, "nosuch@example.test")
        self.assertEqual(code, 550, text)
        self.assertIn(b"5.1.1", text)
        # Nothing queued for the refused recipient.
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            n = con.execute("SELECT count(*) FROM message_rcpts WHERE address = ?",
                            ("nosuch@example.test",)).fetchone()[0]
        finally:
            con.close()
        self.assertEqual(n, 0)

    def test_answers_are_cached(self):
        self.assertEqual(rcpt_reply(self.mxd.port, BOB)[0], 250)
        self.assertEqual(rcpt_reply(self.mxd.port, "ghost@example.test")[0], 550)
        # mxd logs one "callahead answer" line per question it really asks.
        asked = "callahead answer to=<ghost@example.test>"
        before = self.mxd.stderr().count(asked)
        self.assertEqual(before, 1, "the first RCPT must ask the LMTP server")
        self.assertEqual(rcpt_reply(self.mxd.port, "ghost@example.test")[0], 550)
        self.assertEqual(rcpt_reply(self.mxd.port, BOB)[0], 250)
        after = self.mxd.stderr().count(asked)
        self.assertEqual(before, after, "a cached answer must not ask Dovecot again")

    def test_known_user_gets_mail(self):
        token = self.token()
        content = (f"From: sender@remote.test\r\nTo: {ALICE}\r\nSubject: {token}\r\n\r\n"
                   f"callahead {token}\r\n").encode()
        self.send("sender@remote.test", [ALICE], content)
        got = self.dov.wait_count(1, user=ALICE, timeout=30)
        self.assertTrue(got, f"not delivered{self.diag()}")


class CallaheadDown(MxdDovecotCase):
    """Dovecot is not running: the answer is temporary."""

    DOVECOT_USERS = {ALICE: ""}
    RECIPIENTS = "lmtp"
    START_DOVECOT = False

    def test_unreachable_is_temporary(self):
        code, text = rcpt_reply(self.mxd.port, ALICE)
        self.assertEqual(code, 450, text)
        self.assertIn(b"4.1.1", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
