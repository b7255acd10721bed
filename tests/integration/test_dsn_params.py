"""Issue 18, parts 4 and 5: RFC 3461 DSN parameters, delay warnings,
bounce_policy and DSNs to remote senders by MX lookup.

- DsnLmtp: a private Dovecot (LMTP, DSN offered) behind mxd. Every bad
  parameter gets its reply; NOTIFY and ORCPT reach Dovecot (its
  `lmtp_hdr_delivery_address = original` writes the ORCPT address into
  Delivered-To:); NOTIFY=SUCCESS gives a "delivered" DSN with
  Original-Envelope-Id and Original-Recipient; NOTIFY=NEVER gives none;
  RET=FULL returns the body, RET=HDRS only the headers.
- DsnPostfixPrimary: a private Postfix as a backup domain's primary, its
  delivery deferred so the message stays in its queue: postcat shows the
  DSN attributes mxd passed on (envelope_id, ret_flags, notify_flags,
  dsn_orig_rcpt), ORCPT built from the recipient when the client gave none.
- BouncePolicy: the scripted DNS server (authdns.py) gives SPF pass for
  good.test and fail for bad.test, and MX records for both pointing at a
  scripted SMTP sink on loopback (MXD_TEST_SMTP_PORT), which is also the
  backup domain's primary. authenticated: the DSN goes by MX to the good
  sender, none to the bad one (logged, counted, the message leaves the
  queue); "relayed" for NOTIFY=SUCCESS to a primary without DSN; one delay
  warning per message (delay_warning = 2s); always/never by reload.
"""

import os
import re
import signal
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import mxdtest  # noqa: E402
from authdns import AuthDns  # noqa: E402
from dovecot import (QUEUE_FAST, MxdDovecotCase, make_message, wait_for)  # noqa: E402
from primary import Primary  # noqa: E402

ALICE = "alice@example.test"
BOB = "bob@example.test"
NOSUCH = "nosuch@example.test"


def transaction(c, sender, mail_params, rcpts, content):
    """MAIL with mail_params, RCPT (address, params) each, DATA; returns the
    final reply (asserts every step)."""
    r = c.cmd(f"MAIL FROM:<{sender}>{' ' + mail_params if mail_params else ''}")
    assert r.code == 250, f"MAIL refused: {r}"
    for addr, params in rcpts:
        r = c.cmd(f"RCPT TO:<{addr}>{' ' + params if params else ''}")
        assert r.code == 250, f"RCPT {addr} {params} refused: {r}"
    r = c.cmd("DATA")
    assert r.code == 354, f"DATA refused: {r}"
    c.send(content + b".\r\n")
    r = c.reply()
    assert r.code == 250, f"end of data refused: {r}"
    return r


def dsn_fields(data):
    """The message/delivery-status part as {'msg': {...}, rcpt: {...}}."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    m = re.search(r"Content-Type: message/delivery-status\n\n(.*?)\n--", text, re.S)
    assert m, f"no delivery-status part in:\n{text[:3000]}"
    out = {}
    for i, block in enumerate(re.split(r"\n\s*\n", m.group(1).strip())):
        fields = {}
        for line in block.splitlines():
            if ":" in line and not line[:1].isspace():
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        key = "msg" if i == 0 else fields.get("final-recipient", "").split(";")[-1].strip()
        out[key.lower()] = fields
    return out, text


class DsnLmtp(MxdDovecotCase):
    DOVECOT_USERS = {ALICE: "", BOB: ""}
    DOVECOT_KW = {"extra_conf": "lmtp_hdr_delivery_address = original\n"}
    EXTRA = QUEUE_FAST

    def dsn_for(self, user, token, timeout=20):
        got = wait_for(lambda: [d for d in self.dov.messages(user)
                                if token.encode() in d and b"delivery-status" in d], timeout)
        if not got:
            self.fail(f"no DSN for {token} in {user}'s maildir{self.diag()}")
        return got

    def no_dsn(self, user, token, settle=1.5):
        time.sleep(settle)
        self.assertEqual([d for d in self.dov.messages(user)
                          if token.encode() in d and b"delivery-status" in d], [],
                         f"an unexpected DSN for {token}")

    def test_bad_parameters(self):
        """Every malformed RFC 3461 parameter: 501 5.5.4; unknown ones 555."""
        mail_bad = ["RET=", "RET=BODY", "RET=FULL RET=HDRS", "ENVID=", "ENVID=a+ZZ",
                    "ENVID=a=b", "ENVID=a+0A", "ENVID=" + "x" * 101, "ENVID=a ENVID=b"]
        rcpt_bad = ["NOTIFY=", "NOTIFY", "NOTIFY=ALWAYS", "NOTIFY=NEVER,SUCCESS",
                    "NOTIFY=SUCCESS,", "NOTIFY=DELAY,DELAY", "NOTIFY=DELAY NOTIFY=FAILURE",
                    "ORCPT=alice@example.test", "ORCPT=rfc822;", "ORCPT=;a@b.test",
                    "ORCPT=rfc(822);a@b.test", "ORCPT=rfc822;a+4@b.test",
                    "ORCPT=rfc822;a+2b@b.test", "ORCPT=rfc822;a=b", "ORCPT=utf-8;a\\x{}b",
                    "ORCPT=rfc822;" + "x" * 500,
                    "ORCPT=rfc822;a@b.test ORCPT=rfc822;a@b.test"]
        with self.mxd.client() as c:
            r = c.ehlo()
            self.assertIn("DSN", r.lines, "EHLO does not advertise DSN")
        # one connection each: a session's errors are limited
        for verb, p in [("MAIL", p) for p in mail_bad] + [("RCPT", p) for p in rcpt_bad]:
            with self.mxd.client() as c:
                c.ehlo()
                if verb == "RCPT":
                    self.assertEqual(c.cmd(f"MAIL FROM:<{ALICE}> RET=HDRS ENVID=ok+2B1").code, 250)
                    r = c.cmd(f"RCPT TO:<{BOB}> {p}")
                else:
                    r = c.cmd(f"MAIL FROM:<{ALICE}> {p}")
                self.assertEqual((r.code, r.enh), (501, "5.5.4"), f"{verb} {p}: {r}")
        with self.mxd.client() as c:
            c.ehlo()
            self.assertEqual(c.cmd(f"MAIL FROM:<{ALICE}>").code, 250)
            r = c.cmd(f"RCPT TO:<{BOB}> FOO=BAR")
            self.assertEqual(r.code, 555, r)
            r = c.cmd(f"RCPT TO:<{BOB}> NOTIFY=success,Delay ORCPT=rfc822;b+2Bx@example.test")
            self.assertEqual(r.code, 250, r)

    def test_success_dsn_and_orcpt_to_lmtp(self):
        """NOTIFY=SUCCESS and ORCPT reach Dovecot; mxd sends a "delivered"
        DSN with the envelope id and the original recipient; the recipient
        without ORCPT gets one built from its address."""
        tok = self.token()
        content = make_message(BOB, [ALICE], f"success {tok}", ["hello"], [f"X-Token: {tok}"])
        with self.mxd.client() as c:
            c.ehlo()
            # one recipient a transaction: Dovecot writes Delivered-To only then
            transaction(c, BOB, "ENVID=env+2B" + tok, [
                (ALICE, "NOTIFY=SUCCESS ORCPT=rfc822;list+2Balias@example.test")], content)
            transaction(c, BOB, "", [(BOB, "NOTIFY=FAILURE")], content)
        got = wait_for(lambda: [d for d in self.dov.messages(ALICE) if tok.encode() in d], 20)
        self.assertTrue(got, f"alice did not get the message{self.diag()}")
        # Dovecot's Delivered-To: is the ORCPT address (lmtp_hdr_delivery_address)
        self.assertIn(b"Delivered-To: list+alias@example.test", got[0].split(b"\n\n")[0])
        dsn = self.dsn_for(BOB, tok)
        self.assertEqual(len(dsn), 1, "one success DSN (bob asked for FAILURE only)")
        f, text = dsn_fields(dsn[0])
        self.assertEqual(f["msg"].get("original-envelope-id"), "env+" + tok, text)
        self.assertEqual(f[ALICE].get("action"), "delivered", text)
        self.assertEqual(f[ALICE].get("status"), "2.0.0", text)
        self.assertEqual(f[ALICE].get("original-recipient"), "rfc822; list+alias@example.test")
        self.assertNotIn(BOB, f, "bob (NOTIFY=FAILURE) is in the success DSN")
        self.assertIn("Subject: Successful Mail Delivery Report", text)

    def test_notify_never_and_success_only(self):
        """NOTIFY=NEVER and NOTIFY=SUCCESS: a failure gets no DSN."""
        for notify in ("NEVER", "SUCCESS"):
            tok = self.token()
            content = make_message(BOB, [NOSUCH], f"never {tok}", ["x"], [f"X-Token: {tok}"])
            with self.mxd.client() as c:
                c.ehlo()
                transaction(c, BOB, "", [(NOSUCH, f"NOTIFY={notify}")], content)
            self.wait_queue_empty(timeout=20)
            self.no_dsn(BOB, tok)

    def test_ret_full_and_hdrs(self):
        """RET=FULL returns the body (message/rfc822), RET=HDRS only the
        header (text/rfc822-headers); ORCPT shows as Original-Recipient."""
        seen = {}
        for ret in ("FULL", "HDRS"):
            tok = self.token()
            body = f"secret-body-{tok}"
            content = make_message(BOB, [NOSUCH], f"ret {tok}", [body], [f"X-Token: {tok}"])
            with self.mxd.client() as c:
                c.ehlo()
                transaction(c, BOB, f"RET={ret}",
                            [(NOSUCH, "ORCPT=rfc822;old+2Dname@example.test")], content)
            dsn = self.dsn_for(BOB, tok)[0]
            f, text = dsn_fields(dsn)
            self.assertEqual(f[NOSUCH].get("action"), "failed")
            self.assertEqual(f[NOSUCH].get("original-recipient"), "rfc822; old-name@example.test")
            seen[ret] = (body in text, "message/rfc822" in text,
                         "text/rfc822-headers" in text)
        self.assertEqual(seen["FULL"], (True, True, False), "RET=FULL")
        self.assertEqual(seen["HDRS"], (False, False, True), "RET=HDRS")


class DsnPostfixPrimary(mxdtest.MxdTestCase):
    """A private Postfix (it offers DSN) as the primary of example.org, its
    delivery deferred: what mxd passed on stays in its queue for postcat."""

    @classmethod
    def setUpClass(cls):
        from postfix import Postfix
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        os.chmod(cls.tmpdir, 0o755)  # Postfix's own users walk into it
        port = mxdtest.free_port()
        cls.pf = Postfix(cls.tmpdir, port, "example.org",
                         os.path.join(cls.tmpdir, "nowhere.sock"), hold=True)
        cls.pf.start()
        cls.addClassCleanup(cls.pf.stop)
        domains = {"example.org": {"mode": "backup", "primary": f"127.0.0.1:{port}",
                                   "recipients": "any"}}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, domains=domains,
                                  extra="[queue]\nretry_min = 1s\nretry_max = 2s\n"))

    def postcat(self):
        out = []
        for sub in ("incoming", "active", "deferred"):
            for dirpath, _dirs, files in os.walk(os.path.join(self.pf.queue, sub)):
                for name in files:
                    p = subprocess.run(["postcat", "-c", self.pf.etc, "-e",
                                        os.path.join(dirpath, name)],
                                       capture_output=True, timeout=30)
                    out.append(p.stdout.decode("utf-8", "replace"))
        return "\n".join(out)

    def test_postfix_gets_dsn_parameters(self):
        tok = self.token()
        content = make_message("s@remote.test", ["a@example.org", "b@example.org"],
                               f"pf {tok}", ["x"], [f"X-Token: {tok}"])
        with self.client() as c:
            c.ehlo()
            transaction(c, "s@remote.test", f"RET=HDRS ENVID=E{tok}", [
                ("a@example.org", "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;orig+2Ba@example.org"),
                ("b@example.org", "")], content)
        text = wait_for(lambda: (lambda t: t if tok in t and "b@example.org" in t else "")(
            self.postcat()), 20)
        self.assertTrue(text, f"nothing reached Postfix\n{self.mxd.all_stderr()[-3000:]}")
        self.assertIn(f"envelope_id=E{tok}\n", text)
        self.assertIn("ret_flags=2\n", text)  # RET=HDRS
        # a's NOTIFY (SUCCESS 2 + DELAY 8) and ORCPT as given; b's ORCPT built
        self.assertIn("notify_flags=10\nnamed_attribute: dsn_orig_rcpt=rfc822;orig+a@example.org\n"
                      "original_recipient: a@example.org\n", text)
        self.assertIn("dsn_orig_rcpt=rfc822;b@example.org\n", text)
        # Postfix took the DSN over: mxd writes no "relayed" DSN
        time.sleep(1)
        self.assertNotIn("kind=success", self.mxd.all_stderr())


SINK_DOMAINS = ("good.test", "bad.test")


class BouncePolicy(mxdtest.MxdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.sink = Primary(cls.tmpdir, name="sink", reject={"bad@example.org": 550})
        cls.addClassCleanup(cls.sink.close)
        cls.sink.start()
        zone = {"mx.sink.test": [("A", "127.0.0.1")]}
        zone["good.test"] = [("TXT", "v=spf1 ip4:127.0.0.0/8 -all"), ("MX", (10, "mx.sink.test"))]
        zone["bad.test"] = [("TXT", "v=spf1 -all"), ("MX", (10, "mx.sink.test"))]
        cls.dns = AuthDns(zone).start()
        cls.addClassCleanup(cls.dns.stop)
        cls.metrics_port = mxdtest.free_port()
        cls.extra = ("[queue]\nretry_min = 1s\nretry_max = 2s\ndelay_warning = 2s\n"
                     "bounce_policy = authenticated\n"
                     "[auth]\nspf = tag\ndkim = off\ndmarc = off\n")
        server = {"dns_servers": cls.dns.server,
                  "metrics_listen": f"127.0.0.1:{cls.metrics_port}"}
        domains = {"example.org": {"mode": "backup", "primary": cls.sink.target,
                                   "recipients": "any"}}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server, domains=domains, extra=cls.extra,
                                  env={"MXD_TEST_SMTP_PORT": str(cls.sink.port)}))

    def send(self, sender, rcpts, tok, mail_params=""):
        content = make_message(sender, [a for a, _ in rcpts], f"policy {tok}", ["x"],
                               [f"X-Token: {tok}"])
        with self.client() as c:
            c.ehlo()
            return transaction(c, sender, mail_params, rcpts, content).qid

    def dsns(self, tok, to):
        return [m for m in self.sink.messages() if tok.encode() in m.body
                and m.mail_from in ("", "<>") and [r.lower() for r in m.rcpt_tos] == [to]]

    def suppressed(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as r:
            m = re.search(rb"^mxd_bounces_suppressed_total (\d+)", r.read(), re.M)
        return int(m.group(1)) if m else None

    def queue_empty_of(self, qid):
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            return con.execute("SELECT count(*) FROM messages WHERE qid = ?",
                               (qid,)).fetchone()[0] == 0
        finally:
            con.close()

    def set_policy(self, policy):
        self.mxd.extra = self.extra.replace("bounce_policy = authenticated",
                                            f"bounce_policy = {policy}")
        self.mxd.write_config()
        mark = len(self.mxd.all_stderr())
        self.mxd.signal(signal.SIGHUP)
        ok = wait_for(lambda: "reloaded" in self.mxd.all_stderr()[mark:], 10)
        self.assertTrue(ok, "mxd did not reload")

    def test_1_spf_pass_dsn_by_mx(self):
        """SPF pass for good.test: the DSN goes to its MX (the sink)."""
        tok = self.token()
        self.send("x@good.test", [("bad@example.org", "")], tok)
        got = wait_for(lambda: self.dsns(tok, "x@good.test"), 20)
        self.assertTrue(got, f"no DSN by MX to x@good.test\n{self.mxd.all_stderr()[-4000:]}")
        self.assertIn(b"Action: failed", got[0].body)
        self.assertRegex(self.mxd.all_stderr(), r"relay=remote:good\.test|mx\.sink\.test")

    def test_2_spf_fail_suppressed(self):
        """SPF fail for bad.test: no DSN, logged and counted; the message
        leaves the queue."""
        before = self.suppressed()
        tok = self.token()
        qid = self.send("x@bad.test", [("bad@example.org", "")], tok)
        self.assertTrue(wait_for(lambda: self.queue_empty_of(qid), 20), "still queued")
        self.assertTrue(wait_for(lambda: (self.suppressed() or 0) > (before or 0), 5),
                        f"mxd_bounces_suppressed_total {before} -> {self.suppressed()}")
        self.assertIn(f"{qid} store dsn suppressed kind=failure", self.mxd.all_stderr())
        time.sleep(1)
        self.assertEqual(self.dsns(tok, "x@bad.test"), [])

    def test_3_relayed_success_dsn(self):
        """NOTIFY=SUCCESS to a primary without DSN: a "relayed" DSN."""
        tok = self.token()
        self.send("x@good.test", [("ok@example.org", "NOTIFY=SUCCESS")], tok)
        got = wait_for(lambda: self.dsns(tok, "x@good.test"), 20)
        self.assertTrue(got, f"no relayed DSN\n{self.mxd.all_stderr()[-4000:]}")
        self.assertIn(b"Action: relayed", got[0].body)

    def test_4_one_delay_warning(self):
        """The primary says 450 for a while: one "delayed" DSN (after
        delay_warning = 2s), not one per retry; none for NOTIFY=FAILURE."""
        tok = self.token()
        for rcpt in ("late@example.org", "quiet@example.org"):
            self.sink.reject(rcpt, 450)
            self.addCleanup(self.sink.unreject, rcpt)
        qid = self.send("x@good.test", [("late@example.org", ""),
                                        ("quiet@example.org", "NOTIFY=FAILURE")], tok)
        got = wait_for(lambda: self.dsns(tok, "x@good.test"), 20)
        self.assertTrue(got, f"no delay warning\n{self.mxd.all_stderr()[-4000:]}")
        time.sleep(4)  # more retries: still one warning
        got = self.dsns(tok, "x@good.test")
        self.assertEqual(len(got), 1, "one delay warning per message")
        body = got[0].body
        self.assertIn(b"Action: delayed", body)
        self.assertIn(b"late@example.org", body)
        self.assertNotIn(b"Final-Recipient: rfc822; quiet@example.org", body)
        self.sink.unreject("late@example.org")
        self.sink.unreject("quiet@example.org")
        self.assertTrue(wait_for(lambda: self.queue_empty_of(qid), 20), "still queued")

    def test_5_always_and_never(self):
        """always: bad.test gets its DSN after all; never: good.test none."""
        self.addCleanup(self.set_policy, "authenticated")
        self.set_policy("always")
        tok = self.token()
        self.send("x@bad.test", [("bad@example.org", "")], tok)
        self.assertTrue(wait_for(lambda: self.dsns(tok, "x@bad.test"), 20),
                        f"always: no DSN\n{self.mxd.all_stderr()[-3000:]}")
        self.set_policy("never")
        tok = self.token()
        qid = self.send("x@good.test", [("bad@example.org", "")], tok)
        self.assertTrue(wait_for(lambda: self.queue_empty_of(qid), 20), "still queued")
        time.sleep(1)
        self.assertEqual(self.dsns(tok, "x@good.test"), [])
        self.assertIn(f"{qid} store dsn suppressed kind=failure rcpts=1 "
                      "reason=\"bounce_policy = never\"", self.mxd.all_stderr())


if __name__ == "__main__":
    unittest.main(verbosity=2)
