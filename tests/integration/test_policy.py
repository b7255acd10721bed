"""Recipient policy: no relaying ever, address forms that stay local,
recipients = table managed with mxctl while mxd runs, catch-all."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import MxdTestCase  # noqa: E402


class Policy(MxdTestCase):
    DOMAINS = {
        "example.test": {"mode": "local", "recipients": "any"},
        "table.test": {"mode": "local", "recipients": "table"},
        "catch.test": {"mode": "local", "recipients": "table"},
    }

    def rcpt(self, address, c=None):
        """RCPT reply for address in a fresh transaction."""
        if c is None:
            c = self.client()
            c.ehlo()
        r = c.cmd("MAIL FROM:<policy@client.test>")
        self.assertReply(r, 250)
        r = c.cmd(f"RCPT TO:<{address}>")
        self.assertReply(c.cmd("RSET"), 250)
        return r

    def deliver(self, address):
        m = self.marker()
        content = f"Subject: {m}\r\n\r\nfor {address}\r\n".encode()
        c = self.client()
        r = c.send_message("policy@client.test", [address], content)
        self.assertReply(r, 250, "2.0.0")
        return self.assertStored(r.qid, content)

    def mxctl_ok(self, *args):
        p = self.mxd.mxctl(*args)
        self.assertEqual(p.returncode, 0,
                         f"mxctl {' '.join(args)} failed ({p.returncode}): "
                         f"{p.stdout!r} {p.stderr!r}")
        return p

    # -- relay denial

    def test_relay_denied(self):
        for addr in ("user@other.test", "user@sub.example.test", "user@example.test.evil",
                     "user@test", "user@xexample.test"):
            with self.subTest(addr=addr):
                self.assertReply(self.rcpt(addr), 550, "5.7.1", addr)

    def test_domain_literal_denied(self):
        self.assertReply(self.rcpt("postmaster@[127.0.0.1]"), 550, "5.7.1")
        self.assertReply(self.rcpt("user@[IPv6:::1]"), 550, "5.7.1")

    def test_domain_case_insensitive(self):
        self.assertReply(self.rcpt("user@EXAMPLE.Test"), 250)
        msg = self.deliver("User@Example.TEST")
        self.assertEqual(msg["rcpts"][0]["domain"], "example.test")

    def test_percent_hack_is_ours(self):
        addr = "user%other.test@example.test"
        self.assertReply(self.rcpt(addr), 250)
        msg = self.deliver(addr)
        self.assertEqual(len(msg["rcpts"]), 1)
        self.assertEqual(msg["rcpts"][0]["address"], addr)
        self.assertEqual(msg["rcpts"][0]["domain"], "example.test")

    def test_percent_hack_to_unlisted_domain(self):
        self.assertReply(self.rcpt("user%example.test@other.test"), 550, "5.7.1")

    def test_quoted_local_part_is_ours(self):
        addr = '"user@other.test"@example.test'
        self.assertReply(self.rcpt(addr), 250)
        msg = self.deliver(addr)
        self.assertEqual(msg["rcpts"][0]["domain"], "example.test")
        self.assertTrue(msg["rcpts"][0]["address"].endswith("@example.test"),
                        msg["rcpts"][0]["address"])
        self.assertIn("user@other.test", msg["rcpts"][0]["address"])

    def test_quoted_local_part_unlisted(self):
        self.assertReply(self.rcpt('"user@example.test"@other.test'), 550, "5.7.1")

    def test_source_route_ignored(self):
        # RFC 5321 4.1.2 / C: source routes are accepted and ignored.
        self.assertReply(self.rcpt("@other.test:user@example.test"), 250)
        self.assertReply(self.rcpt("@example.test:user@other.test"), 550, "5.7.1")
        self.assertReply(self.rcpt("@a.test,@example.test:user@other.test"), 550, "5.7.1")

    def test_bare_postmaster(self):
        # RFC 5321 4.1.1.3 / 4.5.1: "RCPT TO:<Postmaster>" without a domain
        # MUST be accepted.
        self.assertReply(self.rcpt("Postmaster"), 250)
        self.assertReply(self.rcpt("postmaster"), 250)

    # -- recipients = table

    def test_table_unknown_user(self):
        self.assertReply(self.rcpt("nobody@table.test"), 550, "5.1.1")

    def test_table_add_while_running(self):
        addr = "known@table.test"
        self.assertReply(self.rcpt(addr), 550, "5.1.1")
        self.mxctl_ok("recipient", "add", addr)
        self.assertIn(addr, self.mxctl_ok("recipient", "list").stdout.decode())
        self.assertReply(self.rcpt(addr), 250, msg="added recipient must be accepted at once")
        self.assertReply(self.rcpt("known@TABLE.TEST"), 250, msg="domain is case-insensitive")
        self.assertReply(self.rcpt("other@table.test"), 550, "5.1.1")
        msg = self.deliver(addr)
        self.assertEqual([r["address"] for r in msg["rcpts"]], [addr])
        self.mxctl_ok("recipient", "del", addr)
        self.assertReply(self.rcpt(addr), 550, "5.1.1", "deleted recipient")

    def test_table_added_in_open_session(self):
        addr = "late@table.test"
        c = self.client()
        c.ehlo()
        self.assertReply(self.rcpt(addr, c), 550, "5.1.1")
        self.mxctl_ok("recipient", "add", addr)
        self.assertReply(self.rcpt(addr, c), 250)

    def test_catch_all(self):
        self.assertReply(self.rcpt("anyone@catch.test"), 550, "5.1.1")
        self.mxctl_ok("recipient", "add", "@catch.test")
        for local in ("anyone", "Someone.Else", "x+tag"):
            self.assertReply(self.rcpt(f"{local}@catch.test"), 250, msg=local)
        # The catch-all is for its domain only.
        self.assertReply(self.rcpt("stranger@table.test"), 550, "5.1.1")
        self.deliver("whoever@catch.test")


if __name__ == "__main__":
    mxdtest.main()
