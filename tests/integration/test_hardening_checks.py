"""Issue 14, items 3 and 4: asynchronous sender checks are bounded.

3. A session runs at most one SPF check at a time: a new MAIL for the same
   identity takes over the running check, one for another identity waits
   for it. SPF, DKIM/DMARC and MX lookups run on mxd's own lookup threads,
   so sessions pipelining MAIL/RSET toward a sender domain whose DNS never
   answers cannot hold up the spool writes of an unrelated 1 MiB message
   (they took tens of seconds before: every MAIL queued a check on the
   libuv threadpool that spool writes share).
4. DKIM has a budget: at most `dkim_max_signatures` (5) signatures are
   verified, the rest are reported as one `dkim=neutral`, and the whole
   end-of-data verification (key lookups and DMARC) gets `dkim_timeout`
   (5 s): a message with 8 signatures whose key lookups never answer is
   answered in about 5 s (it took 8 x 4 s and more before), with
   `dkim=temperror` and `dmarc=temperror` where the time ran out.

DNS comes from authdns.py: names listed with ("TIMEOUT", None) never get
an answer, every other name answers at once.
"""

import base64
import os
import re
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from authdns import AuthDns  # noqa: E402

HOST = mxdtest.HOSTNAME
RCPT = "user@example.test"
SPF_OK = "v=spf1 ip4:127.0.0.1 ip6:::1 -all"
NSILENT = 20  # sender domains whose DNS never answers, per test
LOOKUP_THREADS = 32  # src/dns/lookup.h
BUSY = 2 * LOOKUP_THREADS + 4  # sessions that keep every lookup thread busy for 8 s
# each test its own: a check another test started may still be asking
SILENT = {t: [f"{t}{i}.silent.test" for i in range(BUSY if t == "busy" else NSILENT)]
          for t in ("one", "new", "big", "busy")}
SELECTORS = [f"s{i}" for i in range(1, 9)]  # 8 signatures, keys never answered
HOSTILE_SESSIONS = 5  # more than the libuv threadpool's 4 threads
PAIRS = 20  # MAIL/RSET pairs per hostile session
BUDGET = 5  # dkim_timeout's default, seconds


def zone():
    z = {"good.test": [("TXT", SPF_OK)], "slow.test": [("TXT", SPF_OK)],
         "_dmarc.slow.test": [("TIMEOUT", None)]}
    for names in SILENT.values():
        for d in names:
            z[d] = [("TIMEOUT", None)]
    for s in SELECTORS:
        z[f"{s}._domainkey.slow.test"] = [("TIMEOUT", None)]
    return z


def signed(marker, selectors):
    msg = (f"From: <a@slow.test>\r\nTo: <{RCPT}>\r\nSubject: signed\r\n\r\n"
           f"{marker}\r\n").encode()
    return "".join(signature(s) for s in selectors).encode() + msg


def send_timed(c, content):
    """DATA for a transaction whose RCPT was accepted: (reply, seconds from
    the final dot to the reply)."""
    assert c.cmd("DATA").code == 354
    c.send(mxdtest.dot_stuff(content))
    t0 = time.monotonic()
    c.send(b".\r\n")
    r = c.reply()
    return r, time.monotonic() - t0


def stored_ar(db_path, qid):
    row = mxdtest.message_by_qid(db_path, qid)
    return bytes(row["row"]["body"]).split(b"Received-SPF:", 1)[0].decode()


def dkim_rows(ar):
    """(result, reason, properties) per dkim= result."""
    return re.findall(r"\tdkim=([a-z]+)(?: \(([^)]*)\))?([^;\r\n]*)", ar)


def signature(selector):
    """A well-formed DKIM-Signature field (RFC 6376 3.5) for slow.test; it
    cannot verify, but only after its key has been looked up."""
    bh = base64.b64encode(os.urandom(32)).decode()
    b = base64.b64encode(os.urandom(256)).decode()
    return (f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=slow.test;\r\n"
            f" s={selector}; h=from:to:subject; bh={bh};\r\n b={b}\r\n")


class AsyncChecks(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.dns = AuthDns(zone()).start()
        cls.addClassCleanup(cls.dns.stop)
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server={"dns_servers": cls.dns.server},
                                  extra="[auth]\nspf = reject\ndkim = tag\ndmarc = tag\n"))

    def queried(self, suffix, since=0):
        return [q for q in self.dns.queries[since:] if q[0].endswith(suffix)]

    def hostile(self, senders):
        """A session that pipelines one MAIL/RSET pair per sender and reads
        the replies; returned open."""
        c = self.mxd.client(timeout=20)
        self.addCleanup(c.close)
        c.ehlo()
        c.send("".join(f"MAIL FROM:<x@{s}>\r\nRSET\r\n" for s in senders))
        for r in c.replies(2 * len(senders)):
            self.assertEqual(r.code, 250, str(r))
        return c

    def test_one_spf_check_per_session(self):
        # 20 MAIL/RSET pairs toward 20 silent domains: one check runs, the
        # others are superseded before they start.
        since = len(self.dns.queries)
        self.hostile(SILENT["one"])
        time.sleep(1.0)
        # only this test's names: a check an earlier test started (new0,
        # big0..) may still be retrying, slowly under valgrind
        asked = {q[0] for q in self.queried(".silent.test", since)} & set(SILENT["one"])
        self.assertEqual(asked, {SILENT["one"][0]}, "more than one SPF check ran at once")

    def test_new_identity_waits_for_the_running_check(self):
        # The silent check (about 4 s) still runs when the next transaction
        # needs SPF for another sender: that check starts once the first
        # returns, and the RCPT gets its answer from it (spf = reject).
        with self.mxd.client(timeout=20) as c:
            c.ehlo()
            self.assertEqual(c.cmd(f"MAIL FROM:<x@{SILENT['new'][0]}>").code, 250)
            self.assertEqual(c.cmd("RSET").code, 250)
            self.assertEqual(c.cmd("MAIL FROM:<b@good.test>").code, 250)
            t0 = time.monotonic()
            r = c.cmd(f"RCPT TO:<{RCPT}>")
            waited = time.monotonic() - t0
            self.assertEqual(r.code, 250, str(r))
            # the same sender again: the result is reused, no new lookup
            since = len(self.dns.queries)
            self.assertEqual(c.cmd("RSET").code, 250)
            self.assertEqual(c.cmd("MAIL FROM:<b@good.test>").code, 250)
            self.assertEqual(c.cmd(f"RCPT TO:<{RCPT}>").code, 250)
            self.assertEqual(self.queried("good.test", since), [])
        self.assertGreater(waited, 2.0, "the second check did not wait for the first")
        self.assertLess(waited, 15.0)

    def test_large_message_not_starved(self):
        # Five sessions pipeline MAIL/RSET pairs toward silent sender
        # domains (before issue 14: 100 checks of 4 s each on the 4 threads
        # that spool writes share); meanwhile a 1 MiB message goes to a
        # spool file and must be answered at once.
        clients = []
        starters = [threading.Thread(target=lambda i=i: clients.append(
            self.hostile([SILENT["big"][(i + j) % NSILENT] for j in range(PAIRS)])))
            for i in range(HOSTILE_SESSIONS)]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        self.assertEqual(len(clients), HOSTILE_SESSIONS)
        marker = f"big-{os.urandom(6).hex()}"
        line = (marker + " " + "x" * 90 + "\r\n").encode()
        body = b"From: <b@good.test>\r\nSubject: big\r\n\r\n" + line * (1048576 // len(line))
        with self.mxd.client(timeout=30) as c:
            c.ehlo()
            t0 = time.monotonic()
            self.assertEqual(c.cmd("MAIL FROM:<b@good.test>").code, 250)
            self.assertEqual(c.cmd(f"RCPT TO:<{RCPT}>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(body)
            t1 = time.monotonic()
            c.send(b".\r\n")
            r = c.reply()
            t2 = time.monotonic()
        print(f"1 MiB message beside {HOSTILE_SESSIONS} x {PAIRS} MAIL/RSET pairs toward silent "
              f"DNS: 250 {t2 - t1:.2f} s after the final dot, {t2 - t0:.2f} s from MAIL")
        self.assertEqual(r.code, 250, str(r))
        self.assertLess(t2 - t1, 2.0, "the 250 waited for DNS-bound work")
        self.assertLess(t2 - t0, 5.0)
        self.assertEqual(len(mxdtest.messages_containing(self.mxd.db_path, marker)), 1)

    def test_dkim_budget(self):
        # 8 signatures whose keys never answer, and a _dmarc record that
        # never answers: 5 verified (temperror), 3 not, one answer in about
        # dkim_timeout (5 s) instead of 8 x 4 s + 2 x 4 s.
        with self.mxd.client(timeout=20) as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<b@slow.test>").code, 250)
            self.assertEqual(c.cmd(f"RCPT TO:<{RCPT}>").code, 250)
            r, took = send_timed(c, signed(f"dkim-{os.urandom(6).hex()}", SELECTORS))
        print(f"8 DKIM signatures with silent key lookups: 250 after {took:.2f} s")
        self.assertEqual(r.code, 250, str(r))
        self.assertLess(took, BUDGET + 2.5, "end-of-data verification overran its budget")
        ar = stored_ar(self.mxd.db_path, r.qid)
        dkim = dkim_rows(ar)
        self.assertEqual(len(dkim), 6, ar)
        for i, (res, _why, props) in enumerate(dkim[:5]):
            self.assertEqual(res, "temperror", ar)
            self.assertIn(f"header.d=slow.test header.s={SELECTORS[i]} ", props + " ", ar)
        self.assertEqual(dkim[5][:2], ("neutral", "too many signatures: 3 not verified"), ar)
        self.assertIn("\tdmarc=temperror", ar)
        # the sixth to eighth keys were never asked for
        asked = {q[0] for q in self.dns.queries if q[0].endswith("._domainkey.slow.test")}
        self.assertFalse(asked & {f"{s}._domainkey.slow.test" for s in SELECTORS[5:]}, asked)


class LookupThreadsBusy(mxdtest.ClassMxd, unittest.TestCase):
    """Every lookup thread busy with SPF checks toward silent DNS, and more
    checks queued: a message's end-of-data job cannot get a thread within
    dkim_timeout, and the timer answers for it."""

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.dns = AuthDns(zone()).start()
        cls.addClassCleanup(cls.dns.stop)
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server={"dns_servers": cls.dns.server,
                                                      "max_connections_per_ip": "100"},
                                  extra="[auth]\nspf = reject\ndkim = tag\ndmarc = tag\n"))

    def test_timer_answers_when_no_thread_is_free(self):
        with self.mxd.client(timeout=30) as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<b@slow.test>").code, 250)
            self.assertEqual(c.cmd(f"RCPT TO:<{RCPT}>").code, 250)
            # now 68 sessions, one silent check each: 32 run for 4 s, 32
            # more wait for them, then the rest
            busy = []
            for d in SILENT["busy"]:
                h = self.mxd.client(timeout=20)
                self.addCleanup(h.close)
                h.ehlo()
                h.send(f"MAIL FROM:<x@{d}>\r\n")
                busy.append(h)
            for h in busy:
                self.assertEqual(h.reply().code, 250)
            r, took = send_timed(c, signed(f"busy-{os.urandom(6).hex()}", SELECTORS[:1]))
        print(f"end of data with every lookup thread busy: 250 after {took:.2f} s")
        self.assertEqual(r.code, 250, str(r))
        self.assertGreater(took, BUDGET - 0.5)  # no thread was free: the timer answered
        self.assertLess(took, BUDGET + 2.5)
        ar = stored_ar(self.mxd.db_path, r.qid)
        self.assertRegex(ar, r"\tdkim=temperror \(time budget spent\) header\.d=slow\.test "
                             r"header\.s=s1 header\.b=\S+;\r\n")
        self.assertIn("\tdmarc=temperror (time budget spent) header.from=slow.test\r\n", ar)
        self.assertRegex(self.mxd.stderr(), rf"{r.qid} auth verification timed out "
                                            rf"budget_ms={BUDGET * 1000}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
