"""Permanent LMTP failures produce RFC 3464 DSNs. Dovecot has a fixed user
list (passwd-file: alice, bob, full) so it refuses nosuch@example.test at
RCPT with 550 5.1.1 even though mxd itself takes any recipient
(recipients = any); full@example.test has a 1 KiB quota, so Dovecot says
552 5.2.2 after DATA. A local sender gets the DSN in its maildir; the null
sender gets none; a remote sender's DSN goes to its MX hosts (no
bounce_relay; issue 18). bounce_policy = always here (tests/integration/
mxdtest.py): SPF is off, so no return path would count as authenticated."""

import email
import email.policy
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from dovecot import MxdDovecotCase, make_message, strip_added, tokens_by_user, wait_for  # noqa: E402

ALICE = "alice@example.test"
BOB = "bob@example.test"
FULL = "full@example.test"
NOSUCH = "nosuch@example.test"


class Dsn(MxdDovecotCase):
    DOVECOT_USERS = {ALICE: "", BOB: "", FULL: "userdb_quota_rule=*:storage=1"}
    DOVECOT_KW = {"quota": True}

    def original(self, sender, rcpts, token, lines=("please deliver",)):
        return make_message(sender, rcpts, f"dsn test {token}", list(lines),
                            [f"X-Token: {token}"])

    def files_with(self, user, token):
        return [d for d in self.dov.messages(user) if token.encode() in d]

    def wait_dsn(self, user, token, timeout=30):
        got = wait_for(lambda: self.files_with(user, token), timeout)
        if not got:
            self.fail(f"no DSN for {token} in {user}'s maildir after {timeout}s; "
                      f"queue {self.counts()}{self.diag()}")
        return got

    def parse_dsn(self, data):
        """Checks the RFC 3464 structure; returns (message, {rcpt: fields})."""
        added, _ = strip_added(data)
        self.assertEqual(added["return-path"], "Return-Path: <>", "a DSN has the null sender")
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        frm = msg.get("From", "")
        self.assertRegex(frm, re.compile(rf"\bMAILER-DAEMON@{re.escape(mxdtest.HOSTNAME)}\b",
                                         re.I), "From: of the DSN")
        self.assertEqual(msg.get_content_type(), "multipart/report", msg.get("Content-Type"))
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        parts = msg.get_payload()
        self.assertIsInstance(parts, list, "multipart/report without parts")
        types = [p.get_content_type() for p in parts]
        self.assertGreaterEqual(len(parts), 2, types)
        self.assertEqual(types[0], "text/plain", types)
        self.assertEqual(types[1], "message/delivery-status", types)
        if len(parts) > 2:
            self.assertIn(types[2], ("text/rfc822-headers", "message/rfc822"), types)
        # message/delivery-status: per-message fields, then one block per rcpt.
        status = parts[1]
        raw = status.as_bytes().decode("utf-8", "replace")
        body = raw.split("\n\n", 1)[1] if "\n\n" in raw else raw
        text = body.replace("\r\n", "\n")
        self.assertRegex(text, re.compile(r"^Reporting-MTA:\s*dns;\s*" +
                                          re.escape(mxdtest.HOSTNAME), re.I | re.M))
        rcpts = {}
        for block in re.split(r"\n\s*\n", text):
            m = re.search(r"^Final-Recipient:\s*rfc822;\s*(\S+)", block, re.I | re.M)
            if m:
                fields = {}
                for line in block.splitlines():
                    if ":" in line and not line[:1].isspace():
                        k, v = line.split(":", 1)
                        fields[k.strip().lower()] = v.strip()
                rcpts[m.group(1).lower()] = fields
        return msg, parts, rcpts, text

    def test_unknown_user_dsn_to_local_sender(self):
        token = self.token()
        qid = self.send(ALICE, [NOSUCH], self.original(ALICE, [NOSUCH], token))
        files = self.wait_dsn(ALICE, token)
        self.assertEqual(len(files), 1, "one DSN")
        msg, parts, rcpts, text = self.parse_dsn(files[0])
        self.assertIn("Final-Recipient: rfc822; nosuch@example.test", text)
        self.assertIn("Status: 5.1.1", text)
        self.assertEqual(list(rcpts), [NOSUCH])
        self.assertEqual(rcpts[NOSUCH].get("action", "").lower(), "failed")
        self.assertIn("550", rcpts[NOSUCH].get("diagnostic-code", ""), rcpts)
        self.assertTrue(any(token in p.as_string() for p in parts[2:]) or token in parts[0]
                        .as_string(), "the original headers are in the DSN")
        if qid and qid not in files[0].decode("utf-8", "replace"):
            print(f"\nnote: the DSN does not mention the original queue id {qid}",
                  file=sys.stderr)
        self.wait_queue_empty(timeout=20)

    def test_5xx_after_data(self):
        """Dovecot accepts the RCPT and refuses after DATA (quota): 552 5.2.2."""
        token = self.token()
        self.send(ALICE, [FULL], self.original(ALICE, [FULL], token, ["x" * 900] * 4))
        files = self.wait_dsn(ALICE, token)
        self.assertEqual(len(files), 1)
        msg, parts, rcpts, text = self.parse_dsn(files[0])
        self.assertEqual(list(rcpts), [FULL])
        self.assertIn("Status: 5.2.2", text)
        self.assertIn("552", rcpts[FULL].get("diagnostic-code", ""), rcpts)
        self.assertEqual(self.files_with(FULL, token), [])
        self.wait_queue_empty(timeout=20)

    def test_partial_failure_one_dsn(self):
        """One message to bob (ok), nosuch (550 at RCPT) and full (552 after
        DATA): bob gets it, alice gets one DSN naming both failures."""
        token = self.token()
        rcpts = [BOB, NOSUCH, FULL]
        content = self.original(ALICE, rcpts, token, ["y" * 900] * 4)
        self.send(ALICE, rcpts, content)
        files = self.wait_dsn(ALICE, token)
        self.wait_queue_empty(timeout=20)
        time.sleep(1)
        files = self.files_with(ALICE, token)
        self.assertEqual(len(files), 1, "exactly one DSN for the message")
        self.assertEqual(len(self.files_with(BOB, token)), 1, "bob got the message once")
        msg, parts, r, text = self.parse_dsn(files[0])
        self.assertEqual(sorted(r), sorted([NOSUCH, FULL]), text)
        self.assertEqual(r[NOSUCH].get("status"), "5.1.1", r)
        self.assertEqual(r[FULL].get("status"), "5.2.2", r)

    def test_null_sender_gets_no_dsn(self):
        token = self.token()
        self.send("", [NOSUCH], self.original("mailer-daemon@client.test", [NOSUCH], token))
        self.wait_queue_empty(timeout=20)
        time.sleep(2)
        found = {u: d[token] for u, d in tokens_by_user(self.dov).items() if token in d}
        self.assertEqual(found, {}, "a DSN for a message with the null sender")
        self.assertEqual(self.counts(), (0, {}))

    def test_no_dsn_loop_for_unknown_local_sender(self):
        """ghost@example.test (not a Dovecot user) sends to nosuch: the DSN to
        ghost fails too, and that DSN (sender <>) gets no DSN."""
        token = self.token()
        self.send("ghost@example.test", [NOSUCH],
                  self.original("ghost@example.test", [NOSUCH], token))
        self.wait_queue_empty(timeout=30)
        time.sleep(2)
        self.assertEqual(self.counts(), (0, {}), "something was queued after the double bounce")
        found = {u: d[token] for u, d in tokens_by_user(self.dov).items() if token in d}
        self.assertEqual(found, {})

    def test_remote_sender_dsn_goes_by_mx(self):
        """No bounce_relay: the DSN for x@remote.test is no longer discarded
        (issue 18) but queued for remote.test's MX hosts; remote.test has
        none here, so it waits, and the test deletes it."""
        token = self.token()
        qid = self.send("x@remote.test", [NOSUCH],
                        self.original("x@remote.test", [NOSUCH], token))

        def created():
            return re.findall(rf"{qid} store dsn created dsn=(\S+) kind=failure",
                              self.mxd.all_stderr())

        dsn = wait_for(created, 20)
        if not dsn:
            self.fail(f"no DSN created for {qid}{self.diag()}")
        tried = wait_for(lambda: [line for line in self.mxd.all_stderr().splitlines()
                                  if dsn[0] in line and "to=<x@remote.test>" in line
                                  and "relay=remote:remote.test" in line], 20)
        self.assertTrue(tried, f"the DSN {dsn[0]} was not tried by MX{self.diag()}")
        r = self.mxd.mxctl("delete", dsn[0])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.wait_queue_empty(timeout=20)
        found = {u: d[token] for u, d in tokens_by_user(self.dov).items() if token in d}
        self.assertEqual(found, {})

if __name__ == "__main__":
    unittest.main(verbosity=2)
