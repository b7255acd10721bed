"""Reload (SIGHUP and mxctl reload): a new domain is accepted after it, a
session open before it keeps the config it started with, a broken config
is refused with its errors logged while the old one keeps serving, and a
changed listen address is reopened."""

import os
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402

ANY = {"mode": "local", "recipients": "any"}


class Reload(unittest.TestCase):
    def setUp(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, "reload")
        self.mxd = mxdtest.Mxd(self.tmpdir, domains={"a.test": ANY}, control=True)
        self.addCleanup(self.mxd.kill)
        self.mxd.start()

    def tearDown(self):
        self.mxd.stop()

    def rcpt(self, addr, client=None):
        c = client or self.mxd.client()
        try:
            if client is None:
                c.ehlo()
            r = c.cmd("MAIL FROM:<s@sender.test>")
            self.assertEqual(r.code, 250, r)
            r = c.cmd(f"RCPT TO:<{addr}>")
            c.cmd("RSET")
            return r
        finally:
            if client is None:
                c.close()

    def wait_log(self, text, count=1, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.mxd.stderr().count(text) >= count:
                return
            time.sleep(0.05)
        self.fail(f"{text!r} not logged {count} time(s); stderr:\n{self.mxd.stderr()}")

    def sighup(self, expect, count=1):
        self.mxd.signal(signal.SIGHUP)
        self.wait_log(expect, count)

    def test_sighup_adds_a_domain(self):
        self.assertEqual(self.rcpt("u@b.test").code, 550)
        old = self.mxd.client()
        self.addCleanup(old.close)
        old.ehlo()
        self.mxd.domains["b.test"] = ANY
        self.mxd.write_config()
        self.sighup("mxd reloaded")
        self.assertEqual(self.rcpt("u@b.test").code, 250)
        self.assertEqual(self.rcpt("u@a.test").code, 250)
        # The session opened before the reload finishes with the old config.
        self.assertEqual(self.rcpt("u@b.test", client=old).code, 550)
        # ...and is not dropped: it can still send mail to the old domain.
        r = old.send_message("s@sender.test", ["u@a.test"], b"Subject: old\r\n\r\nx\r\n",
                             ehlo=False)
        self.assertEqual(r.code, 250, r)
        # A message to the new domain is stored.
        with self.mxd.client() as c:
            r = c.send_message("s@sender.test", ["u@b.test"], b"Subject: new\r\n\r\ny\r\n")
            self.assertEqual(r.code, 250, r)

    def test_broken_config_keeps_the_old_one(self):
        self.mxd.domains["b.test"] = ANY
        self.mxd.write_config()
        self.sighup("mxd reloaded")
        with open(self.mxd.conf_path, "a", encoding="utf-8") as f:
            f.write("\n[domain c.test]\nmode = sideways\nlmtp_concurrency = 0\n")
        self.sighup("reload refused", count=2)  # one line per error
        log = self.mxd.stderr()
        self.assertRegex(log, r"err - mxd reload refused error=\".*mxd\.conf:\d+: .*mode")
        # Still serving, with the last good config (b.test yes, c.test no).
        self.assertEqual(self.rcpt("u@b.test").code, 250)
        self.assertEqual(self.rcpt("u@c.test").code, 550)
        self.assertTrue(self.mxd.running())

    def test_bad_conninfo_refused(self):
        """Issue 21: a PostgreSQL connection string libpq cannot parse is
        refused by a reload as by --check (FILE:LINE, libpq's reason); the
        old config stays."""
        self.mxd.server["store"] = "postgresql"
        self.mxd.server["postgresql"] = "host=127.0.0.1 bogus_key=1"
        self.mxd.domains["b.test"] = ANY
        self.mxd.write_config()
        self.sighup("reload refused")
        self.assertRegex(self.mxd.stderr(), r"err - mxd reload refused error=\".*mxd\.conf:\d+: "
                                            r"postgresql: invalid connection option")
        self.assertEqual(self.rcpt("u@b.test").code, 550)
        self.assertTrue(self.mxd.running())

    def test_mxctl_reload(self):
        self.mxd.domains["c.test"] = {"mode": "local", "recipients": "table"}
        self.mxd.write_config()
        r = self.mxd.mxctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.rcpt("u@c.test").code, 550)  # table: not listed
        r = self.mxd.mxctl("recipient", "add", "u@c.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.rcpt("u@c.test").code, 250)
        # A certificate that cannot be loaded: mxd refuses the reload, mxctl
        # prints its reason and exits 1; mxd keeps serving the old config.
        missing = os.path.join(self.tmpdir, "missing.pem")
        self.mxd.domains["d.test"] = ANY
        self.mxd.write_config()
        with open(self.mxd.conf_path, "a", encoding="utf-8") as f:
            f.write(f"\n[tls]\ncertificate = {missing}\nkey = {missing}\n")
        r = self.mxd.mxctl("reload")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("missing.pem", r.stderr.decode())
        self.assertEqual(self.rcpt("u@c.test").code, 250)
        self.assertEqual(self.rcpt("u@d.test").code, 550)
        # A config mxctl itself cannot parse never reaches mxd.
        with open(self.mxd.conf_path, "a", encoding="utf-8") as f:
            f.write("\nnonsense = 1\n")
        r = self.mxd.mxctl("reload")
        self.assertEqual(r.returncode, 1)
        self.assertIn("nonsense", r.stderr.decode())
        self.assertTrue(self.mxd.running())

    def test_listener_moves(self):
        old_port = self.mxd.port
        self.mxd.set_port()
        self.sighup("mxd reloaded")
        self.wait_log(f"listening address=127.0.0.1:{self.mxd.port}")
        self.assertEqual(self.rcpt("u@a.test").code, 250)  # on the new port
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", old_port), timeout=2).close()

    def test_limits_change(self):
        self.mxd.server["max_recipients"] = "2"
        self.mxd.write_config()
        self.sighup("mxd reloaded")
        with self.mxd.client() as c:
            c.ehlo()
            c.cmd("MAIL FROM:<s@sender.test>")
            codes = [c.cmd(f"RCPT TO:<u{i}@a.test>").code for i in range(3)]
        self.assertEqual(codes, [250, 250, 452])


if __name__ == "__main__":
    mxdtest.main()
