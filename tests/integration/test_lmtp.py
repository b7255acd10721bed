"""LMTP delivery into a real Dovecot: messages sent to mxd with smtplib end
up exactly once in the right maildirs, byte for byte apart from the headers
Dovecot adds (Return-Path, Delivered-To, its Received) and mxd's Received,
and the queue empties. Over Dovecot's TCP listener and its unix socket."""

import os
import random
import re
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dovecot  # noqa: E402
import mxdtest  # noqa: E402
from dovecot import MxdDovecotCase, delivered_content, make_message, tokens_by_user  # noqa: E402

USERS = [f"u{i:02d}@example.test" for i in range(20)]
SENDER = "sender@client.test"
MESSAGES = 200
THREADS = 4


def message_for(i, token, rcpts):
    """Message i: various sizes, dot lines, empty lines, some 8-bit text.
    Returns (content, mail_options)."""
    rnd = random.Random(i)
    eight = i % 10 == 3
    body = [f"message {i} token {token}", ".", "..", ".leading dot", "", "",
            "trailing space ", "\ttab", "x" * 990]
    if eight:
        body.append("Gr\u00fc\u00dfe aus K\u00f6ln \u2013 8-bit body")
    size = rnd.choice([100, 2000, 20000, 150000])
    n = 0
    while sum(len(b) + 2 for b in body) < size:
        n += 1
        body.append(f"{i}:{n} " + "abcdefghij" * rnd.randint(0, 9))
        if n % 37 == 0:
            body.append(".")
    body.append("end.")
    hdrs = [f"X-Token: {token}"]
    content = make_message(SENDER, rcpts, f"lmtp test {i} {token}", body, hdrs)
    return content, (["BODY=8BITMIME"] if eight else [])


class LmtpBase(MxdDovecotCase):
    def check_delivered(self, user, token, content, sender=SENDER, nrcpts=1):
        """Exactly one file with token in user's maildir, equal to content."""
        found = []
        for data in self.dov.messages(user):
            if f"X-Token: {token}".encode() in data:
                found.append(data)
        self.assertEqual(len(found), 1, f"{user}: {len(found)} files with token {token}")
        added, received, rest = delivered_content(found[0])
        self.assertEqual(added["return-path"], f"Return-Path: <{sender}>")
        if nrcpts == 1:
            self.assertEqual(added.get("delivered-to"), f"Delivered-To: {user}")
        self.assertIn(f"by {mxdtest.HOSTNAME}", received, "mxd's Received header")
        if rest != content:
            self.fail(f"{user} {token}: delivered content differs from what was sent "
                      f"({len(rest)} vs {len(content)} octets, first difference at "
                      f"{mxdtest.first_diff(rest, content)}): delivered "
                      f"{rest[:300]!r}... sent {content[:300]!r}...")
        return added


class LmtpTcp(LmtpBase):
    LMTP = "tcp"

    def test_200_messages(self):
        """200 messages, 1-3 recipients each over 20 users, 4 sessions."""
        rnd = random.Random(4242)
        plan = []
        for i in range(MESSAGES):
            rcpts = rnd.sample(USERS, rnd.choice([1, 1, 2, 3]))
            token = f"t{i:03d}-{os.urandom(4).hex()}"
            content, opts = message_for(i, token, rcpts)
            plan.append((i, token, rcpts, content, opts))
        errors = []
        qids = {}

        def worker(k):
            import smtplib

            try:
                c = smtplib.SMTP("127.0.0.1", self.mxd.port, local_hostname="client.test",
                                 timeout=30)
                c.ehlo("client.test")
                for i, token, rcpts, content, opts in plan[k::THREADS]:
                    qids[i] = dovecot.smtp_send(None, SENDER, rcpts, content, opts, conn=c)
                c.quit()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"session {k}: {e!r}")

        t0 = time.monotonic()
        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertFalse([t for t in threads if t.is_alive()], "senders hung")
        self.assertEqual(errors, [], "sending failed")
        self.assertEqual(len(qids), MESSAGES)
        t_sent = time.monotonic() - t0
        total = sum(len(p[2]) for p in plan)
        self.wait_files(total, timeout=60)
        t_done = time.monotonic() - t0
        self.wait_queue_empty(timeout=30)
        print(f"\n{MESSAGES} messages ({total} deliveries) accepted in {t_sent:.2f}s, "
              f"all delivered after {t_done:.2f}s", file=sys.stderr)
        # Nothing more arrives later (no duplicate from a late retry).
        time.sleep(1.0)
        self.assertEqual(self.dov.count(), total, "more files than deliveries")
        per_user = tokens_by_user(self.dov)
        for i, token, rcpts, content, opts in plan:
            for user in rcpts:
                self.check_delivered(user, token, content, nrcpts=len(rcpts))
        # No file in a maildir that was not a recipient of it.
        expected = {}
        for i, token, rcpts, content, opts in plan:
            for user in rcpts:
                expected.setdefault(user, {})[token] = 1
        self.assertEqual(per_user, expected, "maildir contents differ from the plan")
        n, states = self.counts()
        self.assertEqual((n, states), (0, {}), "messages left in the store")

    def test_three_recipients_one_transaction(self):
        """A message to 3 users goes to Dovecot in one LMTP transaction: the
        three files carry the same Dovecot transaction id in its Received
        header and no Delivered-To (Dovecot adds that only for a single
        recipient)."""
        token = self.token()
        rcpts = ["tx1@example.test", "tx2@example.test", "tx3@example.test"]
        content = make_message(SENDER, rcpts, f"three {token}", ["three recipients"],
                               [f"X-Token: {token}"])
        self.send(SENDER, rcpts, content)
        for u in rcpts:
            self.wait_files(1, u, timeout=30)
        self.wait_queue_empty(timeout=20)
        ids = set()
        for u in rcpts:
            added = self.check_delivered(u, token, content, nrcpts=3)
            self.assertNotIn("delivered-to", added,
                             f"{u}: Delivered-To present: mxd did not send the 3 recipients "
                             f"in one LMTP transaction{self.diag()}")
            m = re.search(r"\bwith LMTP id (\S+)", added["dovecot-received"])
            self.assertIsNotNone(m, added["dovecot-received"])
            ids.add(m.group(1))
        self.assertEqual(len(ids), 1, f"Dovecot transaction ids differ: {ids}")

    def test_dot_lines_and_empty_body(self):
        """Lines that need dot-stuffing on the LMTP leg, and a header-only
        message."""
        token = self.token()
        u = "dots@example.test"
        content = (f"X-Token: {token}\r\nSubject: dots\r\n\r\n.\r\n..\r\n...\r\n.x\r\n"
                   f"a\r\n.\r\n").encode()
        self.send(SENDER, [u], content)
        token2 = self.token()
        content2 = f"X-Token: {token2}\r\nSubject: header only\r\n".encode()
        self.send(SENDER, [u], content2)
        self.wait_files(2, u, timeout=30)
        self.wait_queue_empty(timeout=20)
        self.check_delivered(u, token, content)
        self.check_delivered(u, token2, content2)

    def test_null_sender(self):
        token = self.token()
        u = "nullsender@example.test"
        content = make_message("mailer-daemon@client.test", [u], f"null {token}", ["bounce"],
                               [f"X-Token: {token}"])
        self.send("", [u], content)
        self.wait_files(1, u, timeout=30)
        self.wait_queue_empty(timeout=20)
        self.check_delivered(u, token, content, sender="")


class LmtpUnix(LmtpBase):
    """The same over Dovecot's unix socket listener (lmtp = unix:PATH)."""

    LMTP = "unix"

    def test_unix_socket(self):
        rnd = random.Random(77)
        plan = []
        for i in range(30):
            rcpts = rnd.sample(USERS[:5], rnd.choice([1, 2]))
            token = f"unix{i:02d}-{os.urandom(4).hex()}"
            content, opts = message_for(1000 + i, token, rcpts)
            plan.append((token, rcpts, content))
            self.send(SENDER, rcpts, content, opts)
        total = sum(len(p[1]) for p in plan)
        self.wait_files(total, timeout=60)
        self.wait_queue_empty(timeout=20)
        time.sleep(0.5)
        self.assertEqual(self.dov.count(), total)
        for token, rcpts, content in plan:
            for u in rcpts:
                self.check_delivered(u, token, content, nrcpts=len(rcpts))
        # Dovecot saw these over its unix listener ("Connect from local"); the
        # only TCP connection is the harness's start-up probe.
        log = self.dov.log_text()
        self.assertGreaterEqual(log.count("Connect from local"), 2, self.diag())
        self.assertEqual(log.count("Connect from 127.0.0.1"), 1, self.diag())


if __name__ == "__main__":
    unittest.main(verbosity=2)
