"""DSNs to senders outside our domains go to [queue] bounce_relay over
SMTP. The relay here is the same kind of scripted SMTP server as the backup
tests' primary: a backup domain's primary refuses a recipient with 550,
mxd bounces it, and the DSN (null sender, to the remote sender) arrives at
the relay."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from dovecot import make_message, smtp_send  # noqa: E402
from primary import Primary  # noqa: E402

BAD = "bad@example.org"
SENDER = "someone@remote.test"


class BounceRelay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.primary = Primary(os.path.join(cls.tmpdir, "p"), name="primary",
                              reject={BAD: 550})
        cls.addClassCleanup(cls.primary.close)
        cls.primary.start()
        cls.relay = Primary(os.path.join(cls.tmpdir, "r"), name="relay")
        cls.addClassCleanup(cls.relay.close)
        cls.relay.start()
        extra = f"[queue]\nretry_min = 1s\nretry_max = 5s\nbounce_relay = {cls.relay.target}\n"
        domains = {"example.org": {"mode": "backup", "primary": cls.primary.target,
                                   "recipients": "any"}}
        cls.mxd = mxdtest.Mxd(cls.tmpdir, domains=domains, extra=extra)
        cls.addClassCleanup(cls.mxd.stop)
        cls.mxd.start()

    def test_dsn_goes_to_the_relay(self):
        token = os.urandom(6).hex()
        content = make_message(SENDER, [BAD], f"relay {token}", ["please bounce"],
                               [f"X-Token: {token}"])
        smtp_send(self.mxd.port, SENDER, [BAD], content)
        deadline = time.monotonic() + 30
        got = []
        while time.monotonic() < deadline and not got:
            got = [m for m in self.relay.messages() if token.encode() in m.body]
            time.sleep(0.2)
        self.assertTrue(got, f"no DSN reached the bounce relay\n{self.mxd.all_stderr()[-4000:]}")
        dsn = got[0]
        self.assertIn(dsn.mail_from, ("", "<>"), "a DSN has the null sender")
        self.assertEqual([r.lower() for r in dsn.rcpt_tos], [SENDER])
        text = dsn.body.decode("utf-8", "replace")
        self.assertIn("multipart/report", text)
        self.assertIn("Status: 5.1.1", text)
        self.assertRegex(text, rf"Final-Recipient: rfc822; ?{BAD}")
        # Nothing of it stays in mxd's queue.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            con = mxdtest.db_connect(self.mxd.db_path)
            try:
                n = con.execute("SELECT count(*) FROM messages").fetchone()[0]
            finally:
                con.close()
            if n == 0:
                break
            time.sleep(0.2)
        self.assertEqual(n, 0, "the original or the DSN is still queued")


if __name__ == "__main__":
    unittest.main(verbosity=2)
