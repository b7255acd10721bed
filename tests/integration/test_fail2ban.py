#!/usr/bin/env python3
"""The shipped fail2ban filter (issue 23): conf/fail2ban/filter.d/mxd.conf
with the jail example conf/fail2ban/jail.d/mxd.local.

A real mxd (a listener marked proxy, so each client has its own address,
all on loopback; DNS from the scripted server authdns.py) is driven by
clients that misbehave in each way the filter bans, and by good clients;
then `fail2ban-regex` runs the filter over the log mxd wrote, and each
address must match exactly as often as it misbehaved:

- 192.0.2.60 talks before the greeting, 3 times (the pre-greet test);
- 192.0.2.10 is on a DNS blocklist, 3 connections;
- 192.0.2.70 sends 5 unknown commands: the fifth reaches
  hard_error_limit = 5 and ends the session with 421 (5 lines);
- 192.0.2.80 asks for 4 unknown users (harvesting, 550 5.1.1);
- 192.0.2.90 tries to relay 2 recipients (550 5.7.1);
- good clients (192.0.2.50, 192.0.2.51, 2001:db8::51) send mail, one
  is greylisted first (451 4.7.1), one sends a message too big (552),
  one uses RSET, NOOP, VRFY-less sessions: none of their lines match.

The jail example is checked too: fail2ban-client -t -c on a copy of the
configuration directory with it (the filter found, the jail valid).
"""

import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from authdns import AuthDns  # noqa: E402

ROOT = mxdtest.source_root()
FILTER = os.path.join(ROOT, "conf", "fail2ban", "filter.d", "mxd.conf")
JAIL = os.path.join(ROOT, "conf", "fail2ban", "jail.d", "mxd.local")

LISTED = "192.0.2.10"
TALKER = "192.0.2.60"
BROKEN = "192.0.2.70"
HARVESTER = "192.0.2.80"
RELAYER = "192.0.2.90"
GOOD = ("192.0.2.50", "192.0.2.51", "2001:db8::51")

# address: matches expected
EXPECTED = {TALKER: 3, LISTED: 3, BROKEN: 5, HARVESTER: 4, RELAYER: 2}


def rev4(ip):
    return ".".join(reversed(ip.split(".")))


ZONE = {f"{rev4(LISTED)}.bl.test": [("A", "127.0.0.2")]}


class Fail2banFilter(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.regex = mxdtest.require_tool("fail2ban-regex")
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, "mxd-fail2ban-")
        cls.dns = AuthDns(ZONE).start()
        cls.addClassCleanup(cls.dns.stop)
        server = {
            "dns_servers": cls.dns.server,
            "proxy_networks": "127.0.0.1/32",
            "dnsbl_sites": "bl.test*3",
            "dnsbl_threshold": "2",
            "dnsbl_timeout": "2s",
            "greet_action": "reject",
            "greet_wait": "1s",
            "hard_error_limit": "5",
            "soft_error_limit": "5",
            "trusted_networks": "127.0.0.1/32",  # the harness's probe talks first
            "max_message_size": "10k",
        }
        domains = {
            "example.test": {"mode": "local", "recipients": "table"},
            "grey.test": {"mode": "local", "recipients": "any", "greylist": "on"},
        }
        mxd = mxdtest.Mxd(cls.tmpdir, server=server, domains=domains)
        mxd.server["listen"] = f"127.0.0.1:{mxd.port} proxy"
        mxd.write_config()
        p = mxd.mxctl("recipient", "add", "alice@example.test", "bob@example.test")
        assert p.returncode == 0, p.stderr
        cls.mxd = mxd
        cls.addClassCleanup(lambda: mxd.running() and mxd.kill())
        mxd.start()
        cls.drive()
        mxd.stop(check=True)  # every line written, a clean exit
        cls.log = mxd.log_path

    # -- the clients

    @classmethod
    def connect(cls, ip, banner=True):
        return cls.mxd.client(proxy=ip, banner=banner, timeout=15)

    @classmethod
    def drive(cls):
        """Every client at once (each waits the pre-greet test's second)."""
        errors = []

        def run(fn):
            try:
                fn()
            except BaseException as e:  # noqa: B036 - reported below
                errors.append(f"{fn.__name__}: {e!r}")

        threads = [threading.Thread(target=run, args=(fn,))
                   for fn in (cls.drive_talker, cls.drive_listed, cls.drive_broken,
                              cls.drive_harvester, cls.drive_relayer, cls.drive_good,
                              cls.drive_good_greylisted)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors

    @classmethod
    def drive_talker(cls):
        for _ in range(3):  # talks first: EHLO right after the teaser
            with cls.connect(TALKER, banner=False) as c:
                c.send(b"EHLO talker.test\r\n")
                r = c.reply()
                while r.code == 220:
                    r = c.reply()
                assert r.code == 554, r
                c.wait_closed()

    @classmethod
    def drive_listed(cls):
        for _ in range(3):
            # The first time, refused after the pre-greet wait: the teaser's
            # greeting ends, the first command gets 554 5.7.1; then (the
            # pre-greet pass remembered) in the greeting's place.
            with cls.connect(LISTED, banner=False) as c:
                r = c.reply()
                if r.code == 220:
                    r = c.cmd("EHLO listed.test")
                assert (r.code, r.enh) == (554, "5.7.1"), r
                c.wait_closed()

    @classmethod
    def drive_broken(cls):
        with cls.connect(BROKEN) as c:
            c.ehlo("broken.test")
            codes = [c.cmd(f"X-BOGUS{i}").code for i in range(5)]
            # the fifth reaches hard_error_limit: its 500 and a 421 together
            assert codes == [500] * 5, codes
            assert c.wait_closed()
            c.wait_closed()

    @classmethod
    def drive_harvester(cls):
        with cls.connect(HARVESTER) as c:
            c.ehlo("harvest.test")
            assert c.cmd("MAIL FROM:<h@spam.test>").code == 250
            for u in ("admin", "info", "sales", "root"):
                r = c.cmd(f"RCPT TO:<{u}@example.test>")
                assert r.code == 550, r
            c.cmd("QUIT")

    @classmethod
    def drive_relayer(cls):
        with cls.connect(RELAYER) as c:
            c.ehlo("relay.test")
            assert c.cmd("MAIL FROM:<r@spam.test>").code == 250
            for dom in ("elsewhere.test", "gmail.test"):
                assert c.cmd(f"RCPT TO:<v@{dom}>").code == 550
            c.cmd("QUIT")

    @classmethod
    def drive_good(cls):
        body = b"Subject: hello\r\n\r\nhello\r\n"
        for ip in GOOD:
            with cls.connect(ip) as c:
                c.ehlo("good.test")
                assert c.send_message("s@good.test", ["alice@example.test"], body,
                                      ehlo=False).code == 250
                assert c.cmd("RSET").code == 250
                assert c.cmd("NOOP").code == 250
                c.cmd("QUIT")

    @classmethod
    def drive_good_greylisted(cls):
        with cls.connect(GOOD[1]) as c:  # greylisted, then a message too big
            c.ehlo("good.test")
            assert c.cmd("MAIL FROM:<s@good.test>").code == 250
            assert c.cmd("RCPT TO:<carol@grey.test>").code == 451
            assert c.cmd("RSET").code == 250
            assert c.cmd("MAIL FROM:<s@good.test> SIZE=999999").code == 552
            c.cmd("QUIT")

    # -- the checks

    def run_regex(self, *args, log=None):
        p = subprocess.run([self.regex, *args, log or self.log, FILTER], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    def matched_hosts(self, log=None):
        out = self.run_regex("-o", "ip", log=log)
        return collections.Counter(line.strip() for line in out.splitlines() if line.strip())

    def test_journal_form(self):
        # Under systemd, each journal entry's MESSAGE is the line without
        # its time and level (docs/logging.md): the same matches.
        journal = os.path.join(self.tmpdir, "journal.txt")
        with open(self.log, encoding="utf-8") as f, open(journal, "w", encoding="utf-8") as out:
            for line in f:
                out.write(re.sub(r"^\S+ (?:err|warn|info|debug) ", "", line))
        self.assertEqual(dict(self.matched_hosts(log=journal)), EXPECTED)

    def test_counts_per_client(self):
        self.assertEqual(dict(self.matched_hosts()), EXPECTED)

    def test_good_clients_never_match(self):
        got = self.matched_hosts()
        for ip in GOOD:
            self.assertNotIn(ip, got)
        # and they were there: their mail was queued, greylisted, refused
        with open(self.log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for ip in GOOD:
            self.assertIn(f"client={ip} ", text)
        self.assertIn(f"check greylist client={GOOD[1]} ", text)

    def test_summary_line(self):
        out = self.run_regex()
        total = sum(EXPECTED.values())
        m = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", out, re.M)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(3)), total, out)
        # every line's time was recognised by the filter's date pattern
        hits = re.search(r"^\|  \[(\d+)\] \^Year-Month-DayT24hour", out, re.M)
        self.assertIsNotNone(hits, out)
        self.assertEqual(int(hits.group(1)), int(m.group(1)), out)

    def test_jail_example(self):
        client = mxdtest.require_tool("fail2ban-client")
        conf = os.path.join(self.tmpdir, "fail2ban")
        shutil.copytree("/etc/fail2ban", conf)
        # Debian's default jail (sshd) needs a log this machine lacks
        for name in os.listdir(os.path.join(conf, "jail.d")):
            os.unlink(os.path.join(conf, "jail.d", name))
        shutil.copy(FILTER, os.path.join(conf, "filter.d", "mxd.conf"))
        shutil.copy(JAIL, os.path.join(conf, "jail.d", "mxd.local"))
        p = subprocess.run([client, "-c", conf, "-t"], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("OK: configuration test is successful", p.stdout + p.stderr)
        p = subprocess.run([client, "-c", conf, "-d"], capture_output=True, text=True,
                           timeout=120)
        self.assertIn("['add', 'mxd', 'systemd']", p.stdout)
        self.assertIn("['set', 'mxd', 'maxretry', 5]", p.stdout)


if __name__ == "__main__":
    mxdtest.main()
