"""Greylisting (issue 16 part 5): real smtplib clients from several
loopback source addresses (any 127/8 address can be bound on Linux) against
the real mxd with short greylist times, the scripted DNS (authdns.py)
serving SPF records, and the triplets read back from queue.db.

The first attempt of a triplet gets 451 4.7.1, a retry before
greylist_delay 451 again (the delay still runs from the first), a retry
after it passes and the message is stored; another address of the same /24
is the same client; a retry from another network passes when SPF passes
for the sender's domain (a provider's pool), not without; triplets survive
a restart; trusted_networks, the postmaster and domains with greylist off
are spared; unknown users are refused before any triplet is made. Each
test also shows a recipient that is greylisted, so each fails with the
check removed from check_list.c.
"""

import os
import re
import smtplib
import sqlite3
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from authdns import AuthDns  # noqa: E402

# greylist_delay in seconds; the store counts whole seconds, so a retry
# passes when its second is DELAY seconds past the first attempt's.
DELAY = 3
# After an attempt has returned, a retry this much later surely passes.
PAST_DELAY = DELAY + 1.1
# The provider's pool: two /24 networks, both in its SPF record.
ZONE = {"pool.test": [("TXT", "v=spf1 ip4:127.0.1.0/24 ip4:127.0.2.0/24 -all")]}


class GreylistTest(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.dns = AuthDns(ZONE).start()
        cls.addClassCleanup(cls.dns.stop)
        cls.mport = mxdtest.free_port()
        server = {
            "dns_servers": cls.dns.server,
            "metrics_listen": f"127.0.0.1:{cls.mport}",
            "greylist_delay": f"{DELAY}s",
            "greylist_window": "1m",
            "greylist_ttl": "1h",
            "trusted_networks": "127.0.9.0/24",
        }
        domains = {
            "grey.test": {"mode": "local", "recipients": "any", "greylist": "on"},
            "table.test": {"mode": "local", "recipients": "table", "greylist": "on"},
            "plain.test": {"mode": "local", "recipients": "any"},
        }
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, domains=domains,
                                  extra="[auth]\nspf = tag\ndkim = off\ndmarc = off\n"))
        with sqlite3.connect(cls.mxd.db_path) as con:
            con.execute("INSERT INTO recipients (address) VALUES ('known@table.test')")

    # -- helpers

    def attempt(self, src, sender, rcpts, data=True):
        """One SMTP session from source address src: MAIL, RCPT for each
        recipient, and DATA when one was accepted. Returns the RCPT replies
        as (code, text) and the queue id (or None)."""
        marker = f"marker-{self.token()}"
        with smtplib.SMTP("127.0.0.1", self.mxd.port, local_hostname="client.test",
                          source_address=(src, 0), timeout=30) as s:
            s.ehlo()
            code, msg = s.mail(sender)
            self.assertEqual(code, 250, msg)
            replies = [(c, m.decode()) for c, m in (s.rcpt(r) for r in rcpts)]
            qid = None
            if data and any(c == 250 for c, _ in replies):
                code, msg = s.data(f"Subject: greylist\r\n\r\n{marker}\r\n".encode())
                self.assertEqual(code, 250, msg)
                qid = re.search(r"queued as (\S+)", msg.decode()).group(1)
                self.assertIsNotNone(mxdtest.message_by_qid(self.mxd.db_path, qid))
        return replies, qid

    def assertGreylisted(self, reply):
        self.assertEqual(reply, (451, "4.7.1 Greylisted, try again later"))

    def rows(self, where="1", args=()):
        with sqlite3.connect(f"file:{self.mxd.db_path}?mode=ro", uri=True) as con:
            return con.execute(f"SELECT client, sender, rcpt, first_seen, passed FROM greylist "
                               f"WHERE {where}", args).fetchall()

    def metric(self, action):
        url = f"http://127.0.0.1:{self.mport}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        m = re.search(r'^mxd_greylist_total\{action="%s"\} (\d+)$' % action, text, re.M)
        return int(m.group(1)) if m else 0

    @staticmethod
    def second_start():
        """Waits until just past the start of a second, and returns it."""
        now = time.time()
        time.sleep(1.05 - (now - int(now)))
        return int(time.time())

    # -- tests

    def test_defer_retry_pass(self):
        sender, rcpt = f"{self.token()}@nospf.test", "alice@grey.test"
        defers, passes = self.metric("defer"), self.metric("pass")
        t0 = self.second_start()
        r, qid = self.attempt("127.0.3.1", sender, [rcpt])
        self.assertGreylisted(r[0])
        self.assertIsNone(qid)
        # too early, from another address of the same /24: 451 again, and
        # the delay still runs from the first attempt: the retry in second
        # t0 + DELAY passes, though it is only DELAY - 1 after this one
        time.sleep(max(0, t0 + 1.5 - time.time()))
        r, _ = self.attempt("127.0.3.200", sender, [rcpt])
        self.assertGreylisted(r[0])
        time.sleep(max(0, t0 + DELAY + 0.3 - time.time()))
        r, qid = self.attempt("127.0.3.77", sender, [rcpt])
        self.assertEqual(r[0][0], 250, r)
        self.assertIsNotNone(qid)
        # known from now on: passes at once
        r, qid = self.attempt("127.0.3.1", sender, [rcpt])
        self.assertEqual(r[0][0], 250, r)
        rows = self.rows("sender = ?", (sender.lower(),))
        self.assertEqual(len(rows), 1, rows)
        client, _, row_rcpt, first, passed = rows[0]
        self.assertEqual((client, row_rcpt), ("net:127.0.3.0/24", rcpt))
        self.assertLessEqual(abs(first - t0), 1)
        self.assertIsNotNone(passed)
        log = self.mxd.stderr()
        self.assertRegex(log, r"check greylist client=127\.0\.3\.1 sender=<%s> rcpt=<%s> "
                              r"key=net:127\.0\.3\.0/24 action=defer state=new"
                         % (re.escape(sender), re.escape(rcpt)))
        self.assertIn("action=defer state=early", log)
        self.assertRegex(log, r"client=127\.0\.3\.77 sender=<%s> .* action=pass state=retry"
                         % re.escape(sender))
        self.assertEqual(self.metric("defer"), defers + 2)
        self.assertEqual(self.metric("pass"), passes + 2)

    def test_spf_pass_keys_by_domain(self):
        """A retry from another network of the sender's SPF pool passes; the
        same without SPF (another sender domain) is a new triplet."""
        tok = self.token()
        pool, nospf, rcpt = f"{tok}@pool.test", f"{tok}@nospf.test", "bob@grey.test"
        r, _ = self.attempt("127.0.1.5", pool, [rcpt])
        self.assertGreylisted(r[0])
        r, _ = self.attempt("127.0.4.5", nospf, [rcpt])
        self.assertGreylisted(r[0])
        time.sleep(PAST_DELAY)
        r, qid = self.attempt("127.0.2.9", pool, [rcpt])
        self.assertEqual(r[0][0], 250, r)
        self.assertIsNotNone(qid)
        r, _ = self.attempt("127.0.5.5", nospf, [rcpt])
        self.assertGreylisted(r[0])
        self.assertEqual([row[0] for row in self.rows("sender = ?", (pool,))], ["spf:pool.test"])
        self.assertEqual(sorted(row[0] for row in self.rows("sender = ?", (nospf,))),
                         ["net:127.0.4.0/24", "net:127.0.5.0/24"])
        self.assertIn("key=spf:pool.test action=pass state=retry", self.mxd.stderr())

    def test_triplets_survive_restart(self):
        sender, rcpt = f"{self.token()}@nospf.test", "carol@grey.test"
        known = f"{self.token()}@nospf.test"
        r, _ = self.attempt("127.0.6.1", sender, [rcpt])
        self.assertGreylisted(r[0])
        r, _ = self.attempt("127.0.6.1", known, [rcpt])
        self.assertGreylisted(r[0])
        time.sleep(PAST_DELAY)
        r, _ = self.attempt("127.0.6.1", known, [rcpt])
        self.assertEqual(r[0][0], 250, r)
        self.mxd.stop()
        self.mxd.start()
        # the greylisted one passes (its first attempt was before the
        # restart), and the passed one is still known
        r, qid = self.attempt("127.0.6.1", sender, [rcpt])
        self.assertEqual(r[0][0], 250, r)
        self.assertIsNotNone(qid)
        r, _ = self.attempt("127.0.6.1", known, [rcpt])
        self.assertEqual(r[0][0], 250, r)
        log = self.mxd.stderr()
        self.assertIn(f"sender=<{sender}> rcpt=<{rcpt}> key=net:127.0.6.0/24 action=pass "
                      f"state=retry", log)
        self.assertIn(f"sender=<{known}> rcpt=<{rcpt}> key=net:127.0.6.0/24 action=pass "
                      f"state=known", log)

    def test_trusted_networks_spared(self):
        sender, rcpt = f"{self.token()}@nospf.test", "dave@grey.test"
        r, qid = self.attempt("127.0.9.9", sender, [rcpt])
        self.assertEqual(r[0][0], 250, r)
        self.assertIsNotNone(qid)
        # the same triplet from outside the trusted networks is greylisted
        r, _ = self.attempt("127.0.8.9", sender, [rcpt])
        self.assertGreylisted(r[0])
        self.assertEqual(len(self.rows("sender = ?", (sender,))), 1)
        self.assertRegex(self.mxd.stderr(), r"check greylist client=127\.0\.9\.9 .* "
                                            r"action=skip reason=trusted_networks")

    def test_off_domain_and_postmaster_spared(self):
        sender = f"{self.token()}@nospf.test"
        rcpts = ["erin@plain.test", "postmaster@grey.test", "<postmaster>", "erin@grey.test"]
        r, qid = self.attempt("127.0.7.1", sender, rcpts)
        self.assertEqual([c for c, _ in r[:3]], [250, 250, 250], r)
        self.assertGreylisted(r[3])
        self.assertIsNotNone(qid)
        self.assertEqual([row[2] for row in self.rows("sender = ?", (sender,))],
                         ["erin@grey.test"])
        self.assertIn("action=skip reason=postmaster", self.mxd.stderr())

    def test_unknown_user_refused_first(self):
        """The recipient policy runs first: an unknown user gets 550 and
        leaves no triplet; a known one is greylisted."""
        sender = f"{self.token()}@nospf.test"
        r, _ = self.attempt("127.0.7.2", sender, ["nobody@table.test", "known@table.test"])
        self.assertEqual(r[0][0], 550, r)
        self.assertGreylisted(r[1])
        self.assertEqual([row[2] for row in self.rows("sender = ?", (sender,))],
                         ["known@table.test"])


if __name__ == "__main__":
    mxdtest.main()
