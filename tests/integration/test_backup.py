"""Backup MX (mode = backup) against a real primary: a scripted aiosmtpd
server (tests/integration/primary.py) that the tests stop and start.

- Primary down: 300 messages (4 KiB, several recipients each) are accepted
  and held, `mxctl queue --json` shows every recipient "held" with the
  connect error; the primary comes back and all 300 arrive within seconds
  WITHOUT any `mxctl flush` (the primary watcher releases them), each body
  byte for byte what mxd stored (mxd's Received: first, then exactly what
  the client sent), none twice, the queue empty afterwards.
- ETRN (RFC 1985): advertised in EHLO; from an etrn_clients address it
  starts delivery; from others 458/459; unknown domains 459.
- Per-recipient RCPT replies from the primary: 550 -> bounced with a DSN
  (forwarded to a sender in the backup domain, or discarded with a log line
  for a remote sender without bounce_relay), 450 -> kept and retried, the
  other recipients delivered in the same transaction.
- recipients = primary (callahead, cached; an address never verified gets
  450 4.1.1 while the primary is down) and recipients = table.
"""

import concurrent.futures
import email
import email.policy
import os
import random
import re
import smtplib
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from dovecot import (json_recipients, make_message, mxctl_json, queue_counts,  # noqa: E402
                     rcpt_address, smtp_send, wait_for)
from primary import Primary  # noqa: E402

DOMAIN = "example.org"
SENDER = "sender@client.test"
USERS = [f"u{i:02d}@{DOMAIN}" for i in range(12)]
CONNECT_ERR = re.compile(r"refused|connect", re.I)
QUEUE_FAST = "[queue]\nretry_min = 1s\nretry_max = 5s\n"
QUEUE_SLOW = "[queue]\nretry_min = 1h\nretry_max = 2h\n"
TOKEN_RX = re.compile(rb"X-Token: (\S+)")


def token_of(body):
    m = TOKEN_RX.search(body[:8192])
    return m.group(1).decode() if m else None


def sized_message(sender, rcpts, token, size=4096):
    """A CRLF message of about `size` octets with an X-Token header and lines
    that need dot-stuffing (a leading dot, a lone dot)."""
    lines = [f"token {token}", ".leading dot stays", ".", "..two dots", ""]
    base = make_message(sender, rcpts, f"backup {token}", lines, [f"X-Token: {token}"])
    fill = []
    left = size - len(base)
    i = 0
    while left > 2:
        line = f"{i:04d} " + ("abcdefghijklmnopqrstuvwxyz0123456789" * 3)
        line = line[:max(1, min(76, left - 2))]
        fill.append(line)
        left -= len(line) + 2
        i += 1
    return make_message(sender, rcpts, f"backup {token}", lines + fill, [f"X-Token: {token}"])


def backup_domain(primary, recipients="any", **extra):
    d = {"mode": "backup", "primary": primary, "recipients": recipients}
    d.update({k: str(v) for k, v in extra.items()})
    return d


class BackupCase(mxdtest.ClassMxd, unittest.TestCase):
    """A Primary (started unless START_PRIMARY is False) and an mxd with
    [domain example.org] mode = backup, primary = the Primary, one pair per
    class, both stopped by PID in the class clean-up. Subclasses set:
      START_PRIMARY  False: the class starts with the primary down
      REJECT         {address: 550|450|reply} the primary refuses at RCPT
      RECIPIENTS     the domain's recipients = value
      DOMAIN_EXTRA   more [domain example.org] keys
      SERVER         more [server] keys (control_socket is always set)
      EXTRA          text appended to mxd.conf (default: fast retries)
      PRIMARY_VALUE  callable(primary) -> the primary = value
      PRIMARY_KW     more Primary() keyword arguments (size, smtputf8)
    """

    START_PRIMARY = True
    REJECT = {}
    RECIPIENTS = "any"
    DOMAIN_EXTRA = {}
    SERVER = {}
    EXTRA = QUEUE_FAST
    PRIMARY_VALUE = None
    PRIMARY_KW = {}
    MORE_DOMAINS = {}

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.primary = Primary(cls.tmpdir, reject=dict(cls.REJECT), **cls.PRIMARY_KW)
        cls.addClassCleanup(cls.primary.close)
        if cls.START_PRIMARY:
            cls.primary.start()
        value = cls.PRIMARY_VALUE(cls.primary) if cls.PRIMARY_VALUE else cls.primary.target
        server = {"control_socket": os.path.join(cls.tmpdir, "control.sock"),
                  "max_connections_per_ip": "200"}
        server.update(cls.SERVER)
        domains = {DOMAIN: backup_domain(value, cls.RECIPIENTS, **cls.DOMAIN_EXTRA)}
        domains.update(cls.MORE_DOMAINS)
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, domains=domains, extra=cls.EXTRA))

    # -- helpers

    def send(self, sender, rcpts, content, mail_options=()):
        return smtp_send(self.mxd.port, sender, rcpts, content, mail_options)

    def diag(self, limit=6000):
        return (f"\n--- mxd stderr (tail)\n{self.mxd.all_stderr()[-limit:]}"
                f"\n--- primary stderr (tail)\n{self.primary.logs(2000)}")

    def counts(self):
        return queue_counts(self.mxd.db_path)

    def queue_entries(self):
        return json_recipients(mxctl_json(self.mxd, "queue"))

    def entries_for(self, addr):
        return [e for e in self.queue_entries() if (rcpt_address(e) or "").lower() == addr.lower()]

    def wait_queue_empty(self, timeout=30):
        ok = wait_for(lambda: self.counts()[0] == 0, timeout, poll=0.2)
        if not ok:
            q = self.mxd.mxctl("queue")
            self.fail(f"queue not empty after {timeout}s: {self.counts()}\n"
                      f"{q.stdout.decode('utf-8', 'replace')[-4000:]}{self.diag()}")

    def wait_held(self, total, min_attempts=1, timeout=30, states=("held",), reply_rx=CONNECT_ERR,
                  qids=None):
        """Waits until `mxctl queue --json` lists `total` recipients (of the
        messages qids, when given), all in one of states, attempted at
        least min_attempts times, with a last_reply matching reply_rx.
        Returns the entries."""
        last = []

        def ok():
            nonlocal last
            last = self.queue_entries()
            if qids is not None:
                last = [e for e in last if e["message"].get("qid") in qids]
            return len(last) == total and all(
                e.get("state") in states and int(e.get("attempts") or 0) >= min_attempts
                and isinstance(e.get("last_reply"), str) and reply_rx.search(e["last_reply"])
                for e in last)

        if not wait_for(ok, timeout, poll=0.3):
            by_state = {}
            for e in last:
                by_state[e.get("state")] = by_state.get(e.get("state"), 0) + 1
            self.fail(f"after {timeout}s not all {total} recipients {'/'.join(states)} with "
                      f"attempts >= {min_attempts} and last_reply ~ {reply_rx.pattern!r}: "
                      f"{len(last)} listed, states {by_state}, e.g. {last[:3]!r}{self.diag()}")
        return last

    def stored_bodies(self, qids):
        """{qid: full stored body (bytes)}."""
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            out = {}
            for qid in qids:
                row = con.execute("SELECT body FROM messages WHERE qid = ?", (qid,)).fetchone()
                if row is None:
                    raise AssertionError(f"qid {qid} not in the database")
                out[qid] = bytes(row[0])
            return out
        finally:
            con.close()

    def arrived(self, token):
        """Messages at the primary carrying token, DSNs (sender <>, which
        quote the original headers) excluded."""
        return [m for m in self.primary.messages()
                if m.mail_from not in ("", "<>") and token_of(m.body) == token]

    def wait_gone(self, qid, timeout=30):
        """Waits until message qid has left mxd's queue (other tests'
        leftovers do not matter)."""
        def gone():
            return mxdtest.message_count(self.mxd.db_path, "qid = ?", (qid,)) == 0

        if not wait_for(gone, timeout, poll=0.2):
            q = self.mxd.mxctl("queue")
            self.fail(f"{qid} still queued after {timeout}s:\n"
                      f"{q.stdout.decode('utf-8', 'replace')[-4000:]}{self.diag()}")


# --------------------------------------------------------------------------


class HoldThenDrain(BackupCase):
    """The primary is down while 300 messages come in; it comes back and the
    watcher brings them all without an operator (retry_min 1s, retry_max
    5s, as an operator testing this would set them)."""

    START_PRIMARY = False
    N = 300
    DOWN_FOR = 0  # seconds the primary stays down after everything is held
    LIMIT = 30  # seconds allowed for the drain

    def test_hold_300_then_drain_without_flush(self):
        rnd = random.Random(4711)
        plan = []  # (token, rcpts, content)
        for i in range(self.N):
            rcpts = rnd.sample(USERS, rnd.choice([1, 2, 3]))
            token = f"hold-{i:03d}-{os.urandom(4).hex()}"
            plan.append((token, rcpts, sized_message(SENDER, rcpts, token)))
        total = sum(len(r) for _, r, _ in plan)

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            futs = [pool.submit(self.send, SENDER, r, c) for _, r, c in plan]
            qids = [f.result(timeout=120) for f in futs]
        t_send = time.monotonic() - t0
        self.assertTrue(all(qids), "a 250 reply without a queue id")
        self.assertEqual(len(set(qids)), self.N, "queue ids are not unique")
        by_token = {tok: (qid, rcpts, content) for (tok, rcpts, content), qid in zip(plan, qids)}

        # What mxd stored: its Received: header, then exactly what was sent.
        for tok, (qid, rcpts, content) in by_token.items():
            _, rest = mxdtest.stored_content(self.mxd.db_path, qid)
            if rest != content:
                self.fail(f"{qid}: stored content differs from what was sent at "
                          f"{mxdtest.first_diff(rest, content)}")
        stored = self.stored_bodies(qids)

        entries = self.wait_held(total, timeout=30)
        addrs = sorted((e["message"].get("qid") or e["message"].get("id"), rcpt_address(e))
                       for e in entries)
        want = sorted((qid, r) for qid, rcpts, _ in by_token.values() for r in rcpts)
        self.assertEqual(addrs, want, "mxctl queue --json lists other recipients than sent")
        print(f"\n{self.N} messages ({total} recipients) accepted in {t_send:.2f}s and held; "
              f"e.g. last_reply {entries[0].get('last_reply')!r}", file=sys.stderr)
        self.assertEqual(self.primary.count(), 0)
        # Once the primary is known to be down, new mail is held without a
        # connection of its own (the watcher's probes are the only ones):
        # not one failed connection per commit batch.
        failures = self.mxd.all_stderr().count("deliver destination unavailable")
        self.assertLessEqual(failures, 8, f"{failures} delivery connections while the primary "
                                          f"was known to be down{self.diag()}")
        if self.DOWN_FOR:
            time.sleep(self.DOWN_FOR)
            self.assertEqual(self.primary.count(), 0)

        # The primary comes back. No flush: the watcher must notice.
        t1 = time.monotonic()
        self.primary.start()
        got = self.primary.wait_rcpts(total, timeout=self.LIMIT, poll=0.02)
        drain = time.monotonic() - t1
        if got < total:
            self.fail(f"only {got} of {total} recipients reached the primary within "
                      f"{self.LIMIT}s of its return (no flush was run); queue {self.counts()}"
                      f"{self.diag()}")
        print(f"drain ({self.__class__.__name__}): {self.N} held messages ({total} recipients, "
              f"{self.primary.count()} transactions) reached the primary "
              f"{drain:.2f}s after it came back (it was down {self.DOWN_FOR}s after the last "
              f"message was held)", file=sys.stderr)

        # Give stragglers a moment to show up as duplicates.
        self.wait_queue_empty(timeout=15)
        time.sleep(1)
        seen = {}
        for m in self.primary.messages():
            tok = token_of(m.body)
            self.assertIn(tok, by_token, f"the primary got a message nobody sent: {m!r}")
            qid, rcpts, content = by_token[tok]
            self.assertEqual(m.mail_from, SENDER, f"{qid}: MAIL FROM changed")
            if m.body != stored[qid]:
                self.fail(f"{qid}: the primary got {len(m.body)} octets, mxd stored "
                          f"{len(stored[qid])}; first difference at "
                          f"{mxdtest.first_diff(m.body, stored[qid])}: "
                          f"got {m.body[:300]!r} stored {stored[qid][:300]!r}")
            hdr, rest = mxdtest.split_received(m.body)
            mxdtest.check_received(hdr, qid)
            self.assertEqual(rest, content, f"{qid}: forwarded content differs from what was sent")
            for r in m.rcpt_tos:
                seen.setdefault((tok, r.lower()), []).append(m.n)
        dups = {k: v for k, v in seen.items() if len(v) > 1}
        self.assertEqual(dups, {}, "recipients delivered more than once")
        want = {(tok, r.lower()) for tok, (_, rcpts, _) in by_token.items() for r in rcpts}
        self.assertEqual(set(seen), want, "the primary's recipients differ from what was sent")
        per_msg = {}
        for m in self.primary.messages():
            per_msg.setdefault(token_of(m.body), []).append(m.rcpt_tos)
        split = {by_token[t][0]: v for t, v in per_msg.items() if len(v) > 1}
        if split:
            print(f"note: {len(split)} message(s) reached the primary in more than one "
                  f"transaction (recipients split): {dict(list(split.items())[:5])}",
                  file=sys.stderr)
        self.assertEqual(self.counts(), (0, {}), "mxd's queue is not empty")
        flushes = [e for e in self.mxd.all_stderr().splitlines() if "flush" in e.lower()
                   and "control" in e.lower()]
        self.assertEqual(flushes, [], "somebody flushed the queue over the control socket")


class HoldThenDrainWatcherOnly(HoldThenDrain):
    """The same with retry_min = 1h: after the first failed attempt no
    message is due for an hour, so only the watcher can bring them within
    seconds. The primary stays down 10s more, so the watcher has backed off
    a few times before it returns."""

    EXTRA = QUEUE_SLOW
    DOWN_FOR = 10
    LIMIT = 30


# --------------------------------------------------------------------------
# ETRN


def etrn(port, arg, ehlo=True):
    """(EHLO reply or None, ETRN reply) in a fresh session."""
    with mxdtest.SmtpClient(port, timeout=15) as c:
        r = c.reply()
        assert r.code == 220, r
        e = c.ehlo() if ehlo else None
        cmd = "ETRN" if arg is None else f"ETRN {arg}"
        r = c.cmd(cmd)
        try:
            c.cmd("QUIT")
        except (OSError, mxdtest.ConnectionClosed):
            pass
        return e, r


def ehlo_keywords(reply):
    return [line.split()[0].upper() for line in reply.lines[1:] if line.split()]


class Etrn(BackupCase):
    """retry_min = 1h: after the first failed attempt only the watcher or
    ETRN releases held mail. 127.0.0.1 may ETRN."""

    START_PRIMARY = False
    EXTRA = QUEUE_SLOW
    SERVER = {"etrn_clients": "127.0.0.1, ::1"}

    def test_etrn_advertised(self):
        with mxdtest.SmtpClient(self.mxd.port) as c:
            c.reply()
            e = c.ehlo()
        self.assertIn("ETRN", ehlo_keywords(e), f"ETRN not in EHLO: {e}")

    def test_etrn_unknown_domain(self):
        _, r = etrn(self.mxd.port, "nosuch.test")
        self.assertEqual(r.code, 459, f"ETRN for a domain that is not ours: {r}")

    def test_etrn_without_argument(self):
        _, r = etrn(self.mxd.port, None)
        self.assertEqual(r.code, 501, f"ETRN without a node name (RFC 1985: 501): {r}")

    def test_etrn_starts_delivery(self):
        if self.primary.running():
            self.primary.stop()
        rcpts = ["e1@example.org", "e2@example.org"]
        sent = {}
        for i in range(5):
            tok = f"etrn-{i}-{os.urandom(4).hex()}"
            content = sized_message(SENDER, rcpts, tok, 1500)
            sent[tok] = self.send(SENDER, rcpts, content)
        total = len(sent) * len(rcpts)
        self.wait_held(total, timeout=20, qids=set(sent.values()))
        time.sleep(0.5)

        def mine():
            return [m for m in self.primary.messages() if token_of(m.body) in sent]

        self.assertEqual(mine(), [])
        self.primary.start()
        t0 = time.monotonic()
        e, r = etrn(self.mxd.port, DOMAIN)
        self.assertIn(r.code, (250, 251, 252, 253), f"ETRN {DOMAIN} from an allowed client: {r}")
        self.assertIn("ETRN", ehlo_keywords(e))
        ok = wait_for(lambda: sum(len(m.rcpt_tos) for m in mine()) >= total, 15, poll=0.02)
        took = time.monotonic() - t0
        if not ok:
            self.fail(f"{sum(len(m.rcpt_tos) for m in mine())} of {total} recipients delivered "
                      f"within 15s of ETRN ({r}){self.diag()}")
        print(f"\nETRN {DOMAIN} -> {r}; {len(sent)} messages at the primary {took:.2f}s later",
              file=sys.stderr)
        for qid in sent.values():
            self.wait_gone(qid, timeout=10)
        time.sleep(0.5)
        toks = sorted(token_of(m.body) for m in mine())
        self.assertEqual(toks, sorted(sent), "each held message exactly once")

    def test_etrn_releases_tempfailed_recipient(self):
        """The primary is up but said 450 at RCPT: with retry_min = 1h and no
        connection failure (so no watcher), only ETRN brings it now."""
        if not self.primary.running():
            self.primary.start()
        rcpt = "later@example.org"
        self.primary.reject(rcpt, 450)
        try:
            tok = self.token()
            qid = self.send(SENDER, [rcpt], sized_message(SENDER, [rcpt], tok, 1000))
            self.wait_held(1, timeout=15, states=("held", "deferred"),
                           reply_rx=re.compile(r"^450"), qids={qid})
            self.primary.unreject(rcpt)
            time.sleep(2.5)
            self.assertEqual(self.arrived(tok), [],
                             "a 450-deferred recipient was retried within 2.5s although "
                             "retry_min = 1h and the primary never went down")
            t0 = time.monotonic()
            _, r = etrn(self.mxd.port, DOMAIN)
            self.assertIn(r.code, (250, 251, 252, 253), f"ETRN {DOMAIN}: {r}")
            if not wait_for(lambda: self.arrived(tok), 10, poll=0.02):
                self.fail(f"ETRN did not release the 450-deferred recipient ({r}){self.diag()}")
            print(f"\nETRN released a 450-deferred recipient in {time.monotonic() - t0:.2f}s",
                  file=sys.stderr)
            self.wait_gone(qid, timeout=10)
        finally:
            self.primary.unreject(rcpt)

    def test_etrn_at_form(self):
        """RFC 1985 '@domain': the domain and its subdomains."""
        _, r = etrn(self.mxd.port, "@" + DOMAIN)
        self.assertIn(r.code, (250, 251, 252, 253), f"ETRN @{DOMAIN}: {r}")


class EtrnNotAllowed(BackupCase):
    """etrn_clients does not include 127.0.0.1: ETRN is refused."""

    START_PRIMARY = True
    SERVER = {"etrn_clients": "192.0.2.10, 2001:db8::/32"}

    def test_etrn_refused(self):
        e, r = etrn(self.mxd.port, DOMAIN)
        self.assertIn(r.code, (458, 459), f"ETRN from a client not in etrn_clients: {r}")
        if "ETRN" not in ehlo_keywords(e):
            print("\nnote: ETRN is not advertised to a client that may not use it",
                  file=sys.stderr)


class EtrnNoClients(BackupCase):
    """No etrn_clients at all: nobody may ETRN."""

    def test_etrn_refused(self):
        _, r = etrn(self.mxd.port, DOMAIN)
        self.assertIn(r.code, (458, 459), f"ETRN without etrn_clients configured: {r}")


# --------------------------------------------------------------------------
# Per-recipient replies from the primary

OK = "ok@example.org"
BAD = "bad@example.org"
TMP = "tmp@example.org"
ALICE = "alice@example.org"  # a sender in the backup domain: her DSN goes to the primary


class PrimaryRejects(BackupCase):
    REJECT = {BAD: 550, TMP: 450}

    def tearDown(self):
        # Restore the rejects a test may have lifted.
        self.primary.reject(BAD, 550)
        self.primary.reject(TMP, 450)

    def find_dsn(self, token, rcpt):
        """The DSN for token to rcpt: (source, bytes) from the primary
        (forwarded) or from mxd's queue, or None."""
        for m in self.primary.messages():
            if m.mail_from in ("", "<>") and token.encode() in m.body and \
                    rcpt.lower() in [r.lower() for r in m.rcpt_tos]:
                return "primary", m.body
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            for row in con.execute("SELECT qid, body FROM messages WHERE sender = '' AND "
                                   "instr(body, ?) > 0", (token.encode(),)):
                return f"mxd queue ({row[0]})", bytes(row[1])
        finally:
            con.close()
        return None

    def test_550_bounces_450_retried_rest_delivered(self):
        tok = self.token()
        rcpts = [OK, BAD, TMP]
        content = sized_message(ALICE, rcpts, tok, 2000)
        qid = self.send(ALICE, rcpts, content)

        # OK arrives, alone, in a transaction where BAD and TMP were refused.
        if not wait_for(lambda: self.arrived(tok), 15):
            self.fail(f"{OK} never reached the primary{self.diag()}")
        first = self.arrived(tok)[0]
        self.assertEqual([r.lower() for r in first.rcpt_tos], [OK])
        data_ev = [e for e in self.primary.events("data") if e.get("n") == first.n]
        self.assertEqual(len(data_ev), 1)
        peer = data_ev[0].get("peer")
        same = {e["address"].lower() for e in self.primary.events("rcpt")
                if e.get("peer") == peer}
        self.assertTrue({OK, BAD, TMP} <= same,
                        f"{OK} was not delivered in the same session as the refused "
                        f"recipients were tried (RCPTs in that session: {same})")

        # BAD: a DSN to alice (forwarded to the primary, or in mxd's queue).
        dsn = wait_for(lambda: self.find_dsn(tok, ALICE), 20, poll=0.2)
        if not dsn:
            self.fail(f"no DSN for {BAD} (neither at the primary nor in mxd's queue); "
                      f"queue {self.counts()}{self.diag()}")
        where, data = dsn
        print(f"\nDSN for {BAD} found in: {where}", file=sys.stderr)
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        text = data.decode("utf-8", "replace").replace("\r\n", "\n")
        self.assertRegex(text, re.compile(rf"^Final-Recipient:\s*rfc822;\s*{re.escape(BAD)}",
                                          re.I | re.M))
        self.assertRegex(text, re.compile(r"^Status:\s*5\.1\.1", re.M))
        self.assertRegex(text, re.compile(r"^Action:\s*failed", re.I | re.M))
        self.assertNotRegex(text, re.compile(rf"^Final-Recipient:\s*rfc822;\s*{re.escape(TMP)}"
                                             r"\s*\n(?:[^\n]+\n)*?Action:\s*failed", re.I | re.M),
                            "the 450 recipient was reported as failed")

        # TMP: still queued, retried (not in a hot loop), reason recorded.
        t0 = time.monotonic()
        tries0 = len(self.primary.rcpt_attempts(TMP))

        def retried():
            return len(self.primary.rcpt_attempts(TMP)) >= tries0 + 2

        if not wait_for(retried, 20, poll=0.2):
            self.fail(f"{TMP} (450 at RCPT) was not retried: {self.primary.rcpt_attempts(TMP)}"
                      f"{self.diag()}")
        time.sleep(max(0.0, 8 - (time.monotonic() - t0)))
        window = time.monotonic() - t0
        tries = len(self.primary.rcpt_attempts(TMP)) - tries0
        print(f"{TMP}: {tries} more RCPT attempts in {window:.1f}s (retry_min 1s, retry_max 5s)",
              file=sys.stderr)
        self.assertLessEqual(tries, 15, f"{TMP} is retried in a tight loop: {tries} attempts "
                                        f"in {window:.1f}s")
        ent = self.entries_for(TMP)
        self.assertEqual(len(ent), 1, f"{TMP} not (exactly once) in the queue: {ent}")
        self.assertIn(ent[0].get("state"), ("deferred", "held", "queued"), ent)
        self.assertIn("450", ent[0].get("last_reply") or "", ent)
        self.assertEqual(self.entries_for(BAD) and
                         [e for e in self.entries_for(BAD) if e.get("state") != "bounced"], [],
                         f"{BAD} still waiting in the queue")
        self.assertEqual(len(self.arrived(tok)), 1, f"{OK} delivered again")

        # The primary accepts TMP now: delivered once, OK not again.
        self.primary.unreject(TMP)
        ok = wait_for(lambda: any(TMP in [r.lower() for r in m.rcpt_tos]
                                  for m in self.arrived(tok)), 20, poll=0.2)
        if not ok:
            self.fail(f"{TMP} not delivered within 20s of the primary accepting it{self.diag()}")
        self.wait_gone(qid, timeout=20)
        time.sleep(1)
        got = sorted(r.lower() for m in self.arrived(tok) for r in m.rcpt_tos)
        self.assertEqual(got, sorted([OK, TMP]), "each good recipient exactly once, never BAD")
        stored_body = None
        for m in self.arrived(tok):
            hdr, rest = mxdtest.split_received(m.body)
            mxdtest.check_received(hdr, qid)
            self.assertEqual(rest, content)
            if stored_body is not None:
                self.assertEqual(m.body, stored_body, "the retry forwarded a different body")
            stored_body = m.body

    def test_550_remote_sender_dsn_by_mx(self):
        """No bounce_relay: the DSN to x@remote.test is queued for
        remote.test's MX hosts (issue 18; none here), not discarded."""
        tok = self.token()
        qid = self.send("x@remote.test", [BAD], sized_message("x@remote.test", [BAD], tok, 800))
        self.wait_gone(qid, timeout=20)

        def created():
            return re.findall(rf"{qid} store dsn created dsn=(\S+)", self.mxd.all_stderr())

        dsn = wait_for(created, 10)
        if not dsn:
            self.fail(f"no DSN created for {qid}{self.diag()}")
        tried = wait_for(lambda: [line for line in self.mxd.all_stderr().splitlines()
                                  if dsn[0] in line and "relay=remote:remote.test" in line], 20)
        self.assertTrue(tried, f"the DSN {dsn[0]} was not tried by MX{self.diag()}")
        r = self.mxd.mxctl("delete", dsn[0])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.arrived(tok), [], "a refused recipient's message reached the primary")

    def test_all_refused_null_sender(self):
        """The only recipient refused with 550 and the sender is <>: no DATA
        at the primary, no DSN (never one for <>), nothing left queued."""
        tok = self.token()
        qid = self.send("", [BAD], sized_message("mailer-daemon@client.test", [BAD], tok, 800))
        self.wait_gone(qid, timeout=20)
        time.sleep(1)
        self.assertEqual(self.arrived(tok), [])
        self.assertEqual([m for m in self.primary.messages() if tok.encode() in m.body], [],
                         "something about a null-sender message reached the primary")
        self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, tok), [],
                         "a DSN for a null-sender message was queued")


# --------------------------------------------------------------------------
# What the primary offers: SIZE, SMTPUTF8, 8BITMIME


class PrimarySize(BackupCase):
    """The primary says SIZE 3000: a bigger message is not sent; it fails
    with 5.3.4 and a DSN."""

    PRIMARY_KW = {"size": 3000}

    def test_too_big_for_the_primary(self):
        tok = self.token()
        rcpts = ["big@example.org"]
        qid = self.send(ALICE, rcpts, sized_message(ALICE, rcpts, tok, 6000))
        self.wait_gone(qid, timeout=20)
        self.assertEqual(self.arrived(tok), [], "a message over the primary's SIZE was sent")
        self.assertEqual([e for e in self.primary.events("data")
                          if tok in str(e)], [])
        log = [line for line in self.mxd.all_stderr().splitlines() if qid in line]
        self.assertTrue(any("5.3.4" in line for line in log),
                        "no log line with 5.3.4 for " + qid + ":\n" + "\n".join(log[-20:]))
        # The DSN: at the primary (if it fits there) or in mxd's queue; it
        # may itself be too big for the primary, then a log line says so.
        dsn = wait_for(lambda: PrimaryRejects.find_dsn(self, tok, ALICE), 10, poll=0.2)
        if dsn:
            where, data = dsn
            text = data.decode("utf-8", "replace")
            self.assertRegex(text, r"(?m)^Status:\s*5\.3\.4", f"DSN in {where}")
            print(f"\nDSN (5.3.4) found in {where}", file=sys.stderr)
        else:
            lines = [line for line in self.mxd.all_stderr().splitlines()
                     if "dsn" in line.lower() or "bounce" in line.lower()]
            print("\nnote: no DSN for the too-big message found at the primary or in the "
                  "queue; DSN-related log lines:\n" + "\n".join(lines[-10:]), file=sys.stderr)
            self.fail("no DSN for a message over the primary's SIZE" + self.diag())


class PrimaryWithoutSmtputf8(BackupCase):
    """aiosmtpd here offers 8BITMIME but not SMTPUTF8."""

    def test_smtputf8_message_needing_it_is_bounced(self):
        """Issue 14 (RFC 6531 3.4, as Postfix): a message that needs
        SMTPUTF8 (here a UTF-8 sender) and meets a primary without it is
        bounced with 5.6.7, never sent mangled."""
        tok = self.token()
        sender = "s\u00e9nder@client.test"
        rcpts = ["u8@example.org"]
        content = sized_message(sender, rcpts, tok, 1200)
        qid = self.send(sender, rcpts, content, mail_options=("SMTPUTF8",))

        def bounced():
            return [l for l in self.mxd.all_stderr().splitlines()
                    if qid in l and " deliver bounced " in l]

        if not wait_for(bounced, 20, poll=0.3):
            self.fail(f"an SMTPUTF8 message to a primary without SMTPUTF8: not bounced"
                      f"{self.diag()}")
        self.assertIn("5.6.7", bounced()[0])
        self.assertIn("SMTPUTF8", bounced()[0].upper())
        self.assertEqual(self.arrived(tok), [])
        self.wait_gone(qid, timeout=10)

    def test_smtputf8_message_not_needing_it_goes_without(self):
        """Issue 14: SMTPUTF8 on MAIL, but an ASCII envelope and header:
        forwarded without the parameter, byte for byte."""
        tok = self.token()
        rcpts = ["a8@example.org"]
        content = sized_message(SENDER, rcpts, tok, 1200)
        qid = self.send(SENDER, rcpts, content, mail_options=("SMTPUTF8",))
        if not wait_for(lambda: self.arrived(tok), 20):
            self.fail(f"ASCII message with SMTPUTF8 not forwarded{self.diag()}")
        m = self.arrived(tok)[0]
        _, rest = mxdtest.split_received(m.body)
        self.assertEqual(rest, content)
        opts = [o.upper() for o in m.envelope.get("mail_options") or []]
        self.assertNotIn("SMTPUTF8", opts)
        self.wait_gone(qid, timeout=10)

    def test_8bit_body_passed_with_8bitmime(self):
        tok = self.token()
        rcpts = ["e8@example.org"]
        content = make_message(SENDER, rcpts, f"8bit {tok}", ["gr\u00fc\u00dfe aus K\u00f6ln"],
                               [f"X-Token: {tok}", "MIME-Version: 1.0",
                                "Content-Type: text/plain; charset=utf-8",
                                "Content-Transfer-Encoding: 8bit"])
        qid = self.send(SENDER, rcpts, content, mail_options=("BODY=8BITMIME",))
        if not wait_for(lambda: self.arrived(tok), 20):
            self.fail(f"8-bit message not forwarded{self.diag()}")
        m = self.arrived(tok)[0]
        _, rest = mxdtest.split_received(m.body)
        self.assertEqual(rest, content, "8-bit body changed on the way")
        opts = [o.upper() for o in m.envelope.get("mail_options") or []]
        self.assertIn("BODY=8BITMIME", opts, f"BODY=8BITMIME not passed on: {opts}")
        self.wait_gone(qid, timeout=10)


class Lifetime(BackupCase):
    """The primary stays down past the domain's lifetime: the sender gets
    a 4.4.7 DSN (here alice@example.org, so the DSN itself waits in the
    queue for the primary)."""

    START_PRIMARY = False
    DOMAIN_EXTRA = {"lifetime": "3s"}

    def test_lifetime_ends_with_447_dsn(self):
        tok = self.token()
        rcpts = ["late@example.org"]
        qid = self.send(ALICE, rcpts, sized_message(ALICE, rcpts, tok, 1000))
        self.wait_held(1, timeout=15)

        def dsn():
            con = mxdtest.db_connect(self.mxd.db_path)
            try:
                return [bytes(r[0]) for r in con.execute(
                    "SELECT body FROM messages WHERE sender = '' AND instr(body, ?) > 0",
                    (tok.encode(),))]
            finally:
                con.close()

        found = wait_for(dsn, 25, poll=0.1)
        if not found:
            self.fail(f"no DSN queued for {qid} after its 3s lifetime{self.diag()}")
        text = found[0].decode("utf-8", "replace")
        self.assertRegex(text, r"(?m)^Status:\s*4\.4\.7")
        self.assertRegex(text, r"(?mi)^Action:\s*failed")
        self.assertRegex(text, r"(?mi)^Final-Recipient:\s*rfc822;\s*late@example\.org")
        self.assertEqual(mxdtest.message_count(self.mxd.db_path, "qid = ?", (qid,)), 0,
                         "the expired message is still queued")


# --------------------------------------------------------------------------
# Recipient validation for backup domains


def rcpt_reply(port, rcpt):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        code, _ = s.mail("sender@remote.test")
        if code != 250:
            raise AssertionError(f"MAIL refused: {code}")
        return s.rcpt(rcpt)


class CallaheadPrimary(BackupCase):
    """recipients = primary: RCPT asks the primary (MAIL FROM:<>, RCPT,
    RSET), answers are cached; while the primary is down the cache decides
    and an address never verified gets 450 4.1.1 (issue 18)."""

    RECIPIENTS = "primary"
    REJECT = {"nosuch@example.org": 550}

    def test_callahead_and_cache(self):
        code, text = rcpt_reply(self.mxd.port, "known@example.org")
        self.assertEqual(code, 250, text)
        asked = self.primary.rcpt_attempts("known@example.org")
        self.assertGreaterEqual(len(asked), 1, "the primary was not asked about known@")
        mails = [e for e in self.primary.events("mail")]
        self.assertTrue(any(e.get("address") in ("", "<>") for e in mails),
                        f"callahead did not use MAIL FROM:<>: {mails}")

        code, text = rcpt_reply(self.mxd.port, "nosuch@example.org")
        self.assertEqual(code, 550, text)
        self.assertIn(b"5.1.1", text)

        # Cached: asking again does not reach the primary.
        n_known = len(self.primary.rcpt_attempts("known@example.org"))
        n_nosuch = len(self.primary.rcpt_attempts("nosuch@example.org"))
        self.assertEqual(rcpt_reply(self.mxd.port, "known@example.org")[0], 250)
        self.assertEqual(rcpt_reply(self.mxd.port, "nosuch@example.org")[0], 550)
        self.assertEqual(len(self.primary.rcpt_attempts("known@example.org")), n_known,
                         "a cached positive answer asked the primary again")
        self.assertEqual(len(self.primary.rcpt_attempts("nosuch@example.org")), n_nosuch,
                         "a cached negative answer asked the primary again")

        # Primary down: the cache decides; a never-verified address gets 450.
        self.primary.stop()
        try:
            self.assertEqual(rcpt_reply(self.mxd.port, "known@example.org")[0], 250)
            code, text = rcpt_reply(self.mxd.port, "nosuch@example.org")
            self.assertEqual(code, 550, f"cached negative answer with the primary down: {text}")
            code, text = rcpt_reply(self.mxd.port, "never-seen@example.org")
            self.assertEqual(code, 450, f"an address never seen, primary down: {text}")
            self.assertIn(b"4.1.1", text)
        finally:
            self.primary.start()

    def test_known_user_gets_mail(self):
        tok = self.token()
        rcpts = ["known2@example.org"]
        qid = self.send(SENDER, rcpts, sized_message(SENDER, rcpts, tok, 1000))
        if not wait_for(lambda: self.arrived(tok), 20):
            self.fail(f"not forwarded{self.diag()}")
        self.wait_gone(qid, timeout=10)


class RecipientsTable(BackupCase):
    """recipients = table for a backup domain, as for local ones."""

    RECIPIENTS = "table"

    def test_table(self):
        p = self.mxd.mxctl("recipient", "add", "listed@example.org")
        self.assertEqual(p.returncode, 0, p.stderr)
        code, text = rcpt_reply(self.mxd.port, "listed@example.org")
        self.assertEqual(code, 250, text)
        code, text = rcpt_reply(self.mxd.port, "unlisted@example.org")
        self.assertEqual(code, 550, text)
        self.assertIn(b"5.1.1", text)
        self.assertEqual(self.primary.rcpt_attempts("unlisted@example.org"), [],
                         "recipients = table asked the primary")


if __name__ == "__main__":
    unittest.main(verbosity=2)
