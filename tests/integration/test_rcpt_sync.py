"""Issue 18 part 1: recipients a backup knows, and how fresh they are.

- recipients = sync, recipients_source = file:/path: listed 250, unlisted
  550 5.1.1, @domain catch-all; a change (rename or rewrite in place) is
  seen within a second; a broken file keeps the old list and logs why.
- The freshness contract: once the list is older than recipients_max_age
  (the file is gone), unlisted addresses get 450 4.1.1 (listed ones still
  250), counted in mxd_recipients_unsure_total{reason="stale"}.
- recipients_source = ldap://...: a real private slapd (tests/integration/
  slapd.py); its anonymous size limit (3) is below the entries (8): the
  search is paged; an entry added is seen at the next refresh; slapd
  stopped past recipients_max_age: 450 for unlisted.
- recipients = primary: the callahead answers survive a restart and are
  used while the primary is down; an address never verified gets 450.
- Every bad value of the new keys is a FILE:LINE error of mxd --check.
"""

import os
import re
import signal
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mxdtest  # noqa: E402
import slapd  # noqa: E402
from primary import Primary  # noqa: E402


def rcpt(port, address):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        code, _ = s.mail("sender@remote.test")
        assert code == 250, code
        return s.rcpt(address)


def wait_for(fn, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return fn()


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.rename(tmp, path)


def metric(port, name):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^" + re.escape(name) + r" (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


class FileSync(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.users = os.path.join(cls.tmpdir, "lists", "users")
        os.makedirs(os.path.dirname(cls.users))
        write_atomic(cls.users, "# backup users\nalice@example.org\n  Carol@Example.org \r\n"
                                "@catch.example\n")
        src = f"file:{cls.users}"
        dom = {"mode": "local", "recipients": "sync", "recipients_source": src,
               "recipients_refresh": "1h", "recipients_max_age": "2h"}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, domains={"example.org": dom,
                                                       "catch.example": dict(dom)}))

    def code(self, address):
        return rcpt(self.mxd.port, address)[0]

    def test_1_listed_unlisted_catchall(self):
        self.assertTrue(wait_for(lambda: self.code("alice@example.org") == 250, 5),
                        self.mxd.stderr())
        self.assertEqual(self.code("carol@example.org"), 250)  # case and blanks
        code, text = rcpt(self.mxd.port, "nobody@example.org")
        self.assertEqual(code, 550, text)
        self.assertIn(b"5.1.1", text)
        self.assertEqual(self.code("anyone@catch.example"), 250)
        self.assertEqual(self.code("postmaster@example.org"), 250)

    def test_2_change_is_seen(self):
        self.assertTrue(wait_for(lambda: self.code("alice@example.org") == 250, 5))
        write_atomic(self.users, "alice@example.org\nbob@example.org\n")  # rename
        self.assertTrue(wait_for(lambda: self.code("bob@example.org") == 250, 5),
                        "a renamed file was not read again")
        self.assertEqual(self.code("anyone@catch.example"), 550)  # catch-all gone
        with open(self.users, "w", encoding="utf-8") as f:  # in place
            f.write("bob@example.org\ndave@example.org\n")
        self.assertTrue(wait_for(lambda: self.code("dave@example.org") == 250, 5),
                        "a file rewritten in place was not read again")
        self.assertEqual(self.code("alice@example.org"), 550)

    def test_3_broken_file_keeps_old_list(self):
        write_atomic(self.users, "erin@example.org\n")
        self.assertTrue(wait_for(lambda: self.code("erin@example.org") == 250, 5))
        for broken, why in (("erin@example.org\nnot an address\n", "line 2"),
                            ("erin@example.org\nfrank@example.org", "no newline"),
                            ("", "empty file")):
            write_atomic(self.users, broken)
            self.assertTrue(wait_for(lambda: why in self.mxd.stderr(), 5),
                            f"no log of the broken file ({why}): {self.mxd.stderr()[-2000:]}")
            self.assertEqual(self.code("erin@example.org"), 250)
            self.assertEqual(self.code("frank@example.org"), 550, "half a list was used")
        self.assertIn("keeping=old-list", self.mxd.stderr())

    def test_4_reload_switches_source(self):
        other = os.path.join(self.tmpdir, "lists", "other")
        write_atomic(other, "zed@example.org\n")
        self.mxd.domains["example.org"]["recipients_source"] = f"file:{other}"
        self.mxd.write_config()
        self.mxd.signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: self.code("zed@example.org") == 250, 5),
                        f"the new source after a reload: {self.mxd.stderr()[-2000:]}")
        self.assertEqual(self.code("erin@example.org"), 550)
        # catch.example still reads the first file: its watch stays
        write_atomic(self.users, "@catch.example\n")
        self.assertTrue(wait_for(lambda: self.code("x@catch.example") == 250, 5))
        # the first file dropped by both domains: no longer read (nor watched)
        self.mxd.domains["catch.example"]["recipients_source"] = f"file:{other}"
        self.mxd.write_config()
        self.mxd.signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: self.code("x@catch.example") == 550, 5))
        write_atomic(self.users, "@catch.example\n")
        time.sleep(0.5)
        self.assertEqual(self.code("x@catch.example"), 550)


class Freshness(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.users = os.path.join(cls.tmpdir, "users")
        write_atomic(cls.users, "alice@example.org\n")
        cls.mport = mxdtest.free_port()
        dom = {"mode": "local", "recipients": "sync", "recipients_source": f"file:{cls.users}",
               "recipients_refresh": "1s", "recipients_max_age": "3s"}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, domains={"example.org": dom},
                                  server={"metrics_listen": f"127.0.0.1:{cls.mport}"}))

    def test_stale_list_tempfails_unlisted(self):
        port = self.mxd.port
        self.assertTrue(wait_for(lambda: rcpt(port, "alice@example.org")[0] == 250, 5))
        self.assertEqual(rcpt(port, "nobody@example.org")[0], 550)
        os.unlink(self.users)  # the source is gone: the list grows old
        stale = wait_for(lambda: rcpt(port, "nobody@example.org")[0] == 450, 8)
        code, text = rcpt(port, "nobody@example.org")
        self.assertTrue(stale, f"unlisted after max_age: {code} {text}")
        self.assertIn(b"4.1.1", text)
        self.assertEqual(rcpt(port, "alice@example.org")[0], 250, "listed: still 250")
        self.assertGreater(metric(self.mport, 'mxd_recipients_unsure_total{reason="stale"}'), 0)
        self.assertIn("stale list", self.mxd.stderr())
        self.assertIn("unreachable", self.mxd.stderr())
        write_atomic(self.users, "alice@example.org\n")  # back: fresh again
        self.assertTrue(wait_for(lambda: rcpt(port, "nobody@example.org")[0] == 550, 5))


@unittest.skipUnless(slapd.available(), "slapd and ldap-utils are not installed")
class LdapSync(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        people = [f"user{i}@example.org" for i in range(7)] + ["@catch.example"]
        cls.ldap = slapd.Slapd(cls.tmpdir, people=people)
        cls.addClassCleanup(cls.ldap.stop)
        cls.ldap.start()
        src = f"{cls.ldap.url}/ou=people,dc=example,dc=org?mail?sub?(objectClass=inetOrgPerson)"
        dom = {"mode": "local", "recipients": "sync", "recipients_source": src,
               "recipients_refresh": "1s", "recipients_max_age": "3s"}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, domains={"example.org": dom,
                                                       "catch.example": dict(dom)}))

    def test_ldap(self):
        port = self.mxd.port
        self.assertTrue(wait_for(lambda: rcpt(port, "user6@example.org")[0] == 250, 8),
                        f"paged search past the size limit: {self.mxd.stderr()[-2000:]}")
        self.assertEqual(rcpt(port, "user0@example.org")[0], 250)
        self.assertEqual(rcpt(port, "someone@catch.example")[0], 250)
        code, text = rcpt(port, "nobody@example.org")
        self.assertEqual(code, 550, text)
        self.ldap.add_person("new", "newcomer@example.org")
        self.assertTrue(wait_for(lambda: rcpt(port, "newcomer@example.org")[0] == 250, 8))
        self.ldap.stop()
        try:
            self.assertTrue(wait_for(lambda: rcpt(port, "nobody@example.org")[0] == 450, 10),
                            "slapd down past max_age: unlisted not 450")
            self.assertEqual(rcpt(port, "user3@example.org")[0], 250)
            self.assertIn("unreachable", self.mxd.stderr())
        finally:
            self.ldap.start()
        self.assertTrue(wait_for(lambda: rcpt(port, "nobody@example.org")[0] == 550, 8))


class CallaheadPersists(unittest.TestCase):
    """recipients = primary: answers kept in queue.db across a restart and
    used with the primary down; never verified: 450 4.1.1."""

    def test_restart_with_primary_down(self):
        tmpdir = mxdtest.make_tmpdir(self.addCleanup, "CallaheadPersists")
        primary = Primary(tmpdir, reject={"nosuch@example.org": 550})
        self.addCleanup(primary.close)
        primary.start()
        dom = {"mode": "backup", "primary": primary.target, "recipients": "primary",
               "verify_positive_ttl": "10d", "verify_negative_ttl": "1d"}
        mxd = mxdtest.Mxd(tmpdir, domains={"example.org": dom})
        self.addCleanup(lambda: mxd.running() and mxd.stop())
        mxd.start()
        self.assertEqual(rcpt(mxd.port, "known@example.org")[0], 250)
        self.assertEqual(rcpt(mxd.port, "nosuch@example.org")[0], 550)
        mxd.stop()
        primary.stop()
        mxd.start()
        self.assertEqual(rcpt(mxd.port, "known@example.org")[0], 250,
                         "a verified address after a restart, primary down")
        code, text = rcpt(mxd.port, "nosuch@example.org")
        self.assertEqual(code, 550, text)
        code, text = rcpt(mxd.port, "never-seen@example.org")
        self.assertEqual(code, 450, text)
        self.assertIn(b"4.1.1", text)
        con = mxdtest.db_connect(mxd.db_path)
        try:
            got = dict(con.execute("SELECT address, ok FROM verify_cache").fetchall())
        finally:
            con.close()
        self.assertEqual(got, {"known@example.org": 1, "nosuch@example.org": 0})
        mxd.stop()


BAD = [
    ("recipients = sync\n", "recipients = sync: needs recipients_source"),
    ("recipients = sync\nrecipients_source = /etc/users\n", "want file:/path or ldap://"),
    ("recipients = sync\nrecipients_source = file:users\n", "absolute path"),
    ("recipients = sync\nrecipients_source = ldap:///dc=x?mail?sub\n", "needs a host"),
    ("recipients = sync\nrecipients_source = ldap://h:99999/dc=x?mail\n", "bad LDAP port"),
    ("recipients = sync\nrecipients_source = ldap://h/dc=x?mail?deep\n", "LDAP scope"),
    ("recipients = sync\nrecipients_source = ldap://h/dc=x?mail?sub?(mail=*\n",
     "bad LDAP filter"),
    ("recipients = sync\nrecipients_source = ldap://h/dc=x??sub\n", "one attribute"),
    ("recipients = sync\nrecipients_source = ldap://h/dc=x?mail?sub?(a=b)?x-ext\n",
     "extensions"),
    ("recipients = sync\nrecipients_source = ldap://h/dc=%zz?mail\n", "%-escape"),
    ("recipients = sync\nrecipients_source = ldap://h\n", "needs /base"),
    ("recipients_source = file:/u\n", "only valid with recipients = sync"),
    ("recipients_refresh = 5m\n", "only valid with recipients = sync"),
    ("recipients = sync\nrecipients_source = file:/u\nrecipients_refresh = 0s\n",
     "greater than zero"),
    ("recipients = sync\nrecipients_source = file:/u\nrecipients_max_age = soon\n",
     "want a duration"),
    ("recipients = sync\nrecipients_source = file:/u\nrecipients_refresh = 1h\n"
     "recipients_max_age = 30m\n", "must be longer than recipients_refresh"),
    ("recipients = primary\nverify_positive_ttl = 1x\n", "want a duration"),
    ("recipients = any\nverify_negative_ttl = 1d\n", "only valid with recipients = primary"),
    ("recipients = maybe\n", "want any|table|lmtp|primary|sync"),
]


class BadConfig(unittest.TestCase):
    def test_every_bad_value_has_file_line(self):
        tmpdir = mxdtest.make_tmpdir(self.addCleanup, "BadConfig")
        for body, want in BAD:
            with self.subTest(body=body):
                backup = "primary" in body and "recipients = primary" in body
                head = ("[domain example.org]\nmode = backup\nprimary = 127.0.0.1:2525\n"
                        if backup else "[domain example.org]\nmode = local\n")
                path = os.path.join(tmpdir, "bad.conf")
                text = (f"[server]\nhostname = mx.test\ndatabase = {tmpdir}/q.db\n\n"
                        + head + body)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
                line = head.count("\n") + 5 + body.count("\n") - 1
                r = subprocess.run([mxdtest.mxd_path(), "--check", "-c", path],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(want, r.stderr)
                m = re.search(re.escape(path) + r":(\d+): .*" + re.escape(want), r.stderr)
                self.assertIsNotNone(m, f"no FILE:LINE for {want!r}: {r.stderr}")
                self.assertLessEqual(int(m.group(1)), line)
                self.assertGreater(int(m.group(1)), 4)
        # primary = mx gives callahead no host to ask
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"[server]\nhostname = mx.test\ndatabase = {tmpdir}/q.db\n"
                    "[domain example.org]\nmode = backup\nprimary = mx\nrecipients = primary\n")
        r = subprocess.run([mxdtest.mxd_path(), "--check", "-c", path], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{path}:7: recipients = primary: needs primary hosts", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
