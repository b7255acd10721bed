"""Backup MX with `primary = mx`: mxd looks the domain's MX records up in a
private dnsmasq (dns_servers = 127.0.0.1:PORT) and forwards only to hosts
with a strictly better preference than the record naming its own hostname.

MX forwarding always uses port 25, which a test cannot bind reliably, so
mxd runs with MXD_TEST_SMTP_PORT=<the primary's port>: a test-only override
that makes the forwarding SMTP client use that port for targets that came
from an MX lookup. Every address in the zone is loopback (127.0.0.1 or ::1).

Cases: delivery to the better MX; fall back to the next MX and from an
AAAA to an A address; the implicit MX (no MX records: the domain itself);
the loop cases (we are the best MX, share the best preference, or are the
only MX) stay queued with "loops back to myself"; DNS server down ->
deferred, and delivered once it answers.
"""

import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from dovecot import json_recipients, mxctl_json, queue_counts, rcpt_address, smtp_send, wait_for  # noqa: E402
from primary import Dnsmasq, Primary, dns_query, free_port_udp_tcp  # noqa: E402
from test_backup import QUEUE_FAST, sized_message, token_of  # noqa: E402

SELF = mxdtest.HOSTNAME  # mxd's [server] hostname
SENDER = "sender@client.test"
LOOP_RX = re.compile(r"loops back to myself", re.I)

# (domain, host, preference)
MX = [
    # The normal case: the primary is better than us.
    ("example.org", "primary.example.org", 10),
    ("example.org", SELF, 20),
    # We are the best MX.
    ("loop.test", SELF, 5),
    ("loop.test", "primary.example.org", 10),
    # We share the best preference with another host (not strictly better).
    ("equal.test", "primary.example.org", 20),
    ("equal.test", SELF, 20),
    # We are the only MX.
    ("only.test", SELF, 10),
    # The best MX has only an IPv6 address where nothing listens; the next
    # one is the primary.
    ("fallback.test", "dead.fallback.test", 5),
    ("fallback.test", "primary.example.org", 10),
    ("fallback.test", SELF, 50),
    # One MX host with AAAA ::1 (nothing listens) and A 127.0.0.1.
    ("dual.test", "both.dual.test", 10),
    ("dual.test", SELF, 20),
]
HOSTS = [
    ("primary.example.org", "127.0.0.1"),
    ("dead.fallback.test", "::1"),
    ("both.dual.test", "::1"),
    ("both.dual.test", "127.0.0.1"),
    # No MX records at all: the implicit MX is the domain's own address.
    ("implicit.test", "127.0.0.1"),
]
DOMAINS = ["example.org", "loop.test", "equal.test", "only.test", "fallback.test", "dual.test",
           "implicit.test"]


def mx_domain(recipients="any"):
    return {"mode": "backup", "primary": "mx", "recipients": recipients}


class MxCase(mxdtest.ClassMxd, unittest.TestCase):
    """A Primary, a dnsmasq with the zone above (unless START_DNS is
    False: then its port is reserved in the config but nothing answers),
    and an mxd using both; one set per class, stopped by PID."""

    START_DNS = True
    EXTRA = QUEUE_FAST

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.primary = Primary(cls.tmpdir)
        cls.addClassCleanup(cls.primary.close)
        cls.primary.start()
        cls.dns = Dnsmasq(cls.tmpdir, mx=MX, hosts=HOSTS, port=free_port_udp_tcp())
        cls.addClassCleanup(cls.dns.close)
        if cls.START_DNS:
            cls.dns.start()
        server = {"control_socket": os.path.join(cls.tmpdir, "control.sock"),
                  "dns_servers": cls.dns.server, "max_connections_per_ip": "200"}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server=server,
                                  domains={d: mx_domain() for d in DOMAINS}, extra=cls.EXTRA,
                                  env={"MXD_TEST_SMTP_PORT": str(cls.primary.port)}))

    def diag(self, limit=6000):
        return (f"\n--- mxd stderr (tail)\n{self.mxd.all_stderr()[-limit:]}"
                f"\n--- dnsmasq\n{self.dns.logs(3000)}"
                f"\n--- primary stderr (tail)\n{self.primary.logs(2000)}")

    def counts(self):
        return queue_counts(self.mxd.db_path)

    def arrived(self, token):
        return [m for m in self.primary.messages() if token_of(m.body) == token]

    def entries_for(self, addrs):
        want = {a.lower() for a in addrs}
        return [e for e in json_recipients(mxctl_json(self.mxd, "queue"))
                if (rcpt_address(e) or "").lower() in want]

    def send_one(self, rcpts, size=1500):
        tok = self.token()
        content = sized_message(SENDER, rcpts, tok, size)
        qid = smtp_send(self.mxd.port, SENDER, rcpts, content)
        self.assertIsNotNone(qid)
        return tok, qid, content

    def assert_forwarded(self, rcpts, timeout=20):
        tok, qid, content = self.send_one(rcpts)
        ok = wait_for(lambda: sum(len(m.rcpt_tos) for m in self.arrived(tok)) >= len(rcpts),
                      timeout, poll=0.1)
        if not ok:
            self.fail(f"{rcpts} not at the primary within {timeout}s; queue entries "
                      f"{self.entries_for(rcpts)}{self.diag()}")
        ok = wait_for(lambda: not self.entries_for(rcpts), 10, poll=0.2)
        self.assertTrue(ok, f"still queued after delivery: {self.entries_for(rcpts)}")
        time.sleep(0.5)
        got = sorted(r.lower() for m in self.arrived(tok) for r in m.rcpt_tos)
        self.assertEqual(got, sorted(r.lower() for r in rcpts), "each recipient exactly once")
        for m in self.arrived(tok):
            self.assertEqual(m.mail_from, SENDER)
            hdr, rest = mxdtest.split_received(m.body)
            mxdtest.check_received(hdr, qid)
            self.assertEqual(rest, content, "forwarded content differs from what was sent")
        return tok

    def assert_loops(self, rcpts, timeout=20):
        tok, qid, _ = self.send_one(rcpts)
        last = []

        def looped():
            nonlocal last
            last = self.entries_for(rcpts)
            return len(last) == len(rcpts) and all(
                e.get("state") in ("deferred", "held") and int(e.get("attempts") or 0) >= 1
                and LOOP_RX.search(e.get("last_reply") or "") for e in last)

        if not wait_for(looped, timeout, poll=0.3):
            self.fail(f"{rcpts}: not deferred/held with 'loops back to myself' within "
                      f"{timeout}s: {last}{self.diag()}")
        print(f"\n{rcpts[0].split('@')[1]}: {last[0].get('state')}, "
              f"last_reply {last[0].get('last_reply')!r}", file=sys.stderr)
        self.assertEqual(self.arrived(tok), [], "mail that loops reached the primary")
        return tok


class MxForwarding(MxCase):

    def test_zone(self):
        """The test DNS serves what the other tests assume."""
        rcode, ans = dns_query(self.dns.port, "example.org", "MX")
        self.assertEqual(rcode, 0)
        self.assertEqual(sorted(ans), [(10, "primary.example.org"), (20, SELF)])
        self.assertEqual(dns_query(self.dns.port, "primary.example.org", "A"), (0, ["127.0.0.1"]))
        self.assertEqual(dns_query(self.dns.port, "primary.example.org", "AAAA"), (0, []))

    def test_better_mx(self):
        self.assert_forwarded(["a@example.org", "b@example.org"])

    def test_fallback_to_next_mx(self):
        self.assert_forwarded(["a@fallback.test"])

    def test_fallback_aaaa_to_a(self):
        self.assert_forwarded(["a@dual.test"])

    def test_implicit_mx(self):
        """No MX records: the domain's own address at preference 0."""
        self.assert_forwarded(["a@implicit.test"])

    def test_loop_best_mx(self):
        self.assert_loops(["a@loop.test", "b@loop.test"])

    def test_loop_equal_preference(self):
        self.assert_loops(["a@equal.test"])

    def test_loop_only_mx(self):
        self.assert_loops(["a@only.test"])

    def test_loop_is_not_bounced(self):
        """Looping mail is kept (held/deferred), not bounced, after retries."""
        rcpts = ["keep@loop.test"]
        self.assert_loops(rcpts)
        time.sleep(4)  # several retries at retry_min = 1s
        ent = self.entries_for(rcpts)
        self.assertEqual(len(ent), 1, ent)
        self.assertIn(ent[0].get("state"), ("deferred", "held"), ent)
        # Retried with the backoff (1s, 2s, 4s, 5s ...), not in a loop.
        attempts = int(ent[0].get("attempts") or 0)
        print(f"keep@loop.test: {attempts} attempts after ~5s", file=sys.stderr)
        self.assertLessEqual(attempts, 10, f"looping mail retried too often: {ent}")
        queries = self.dns.logs(10 ** 7).count("query[MX] loop.test")
        self.assertLessEqual(queries, 60, f"{queries} MX queries for loop.test: a lookup loop?")


class MxDnsDown(MxCase):
    """dns_servers points at a port where nothing answers: the lookup fails
    temporarily and the mail is deferred; once dnsmasq answers there, it is
    delivered."""

    START_DNS = False

    def test_dns_down_defers_then_delivers(self):
        rcpts = ["d1@example.org", "d2@example.org"]
        tok, qid, content = self.send_one(rcpts)
        last = []

        def deferred():
            nonlocal last
            last = self.entries_for(rcpts)
            return len(last) == len(rcpts) and all(
                e.get("state") in ("deferred", "held") and int(e.get("attempts") or 0) >= 1
                and (e.get("last_reply") or "").strip() for e in last)

        if not wait_for(deferred, 45, poll=0.3):
            self.fail(f"not deferred with a reason within 45s of a DNS failure: {last}"
                      f"{self.diag()}")
        print(f"\nDNS down: {last[0].get('state')}, last_reply {last[0].get('last_reply')!r}",
              file=sys.stderr)
        self.assertTrue(all(str(e.get("last_reply"))[:1] == "4" or
                            re.search(r"dns|resolv|lookup|timeout|temporar",
                                      e.get("last_reply") or "", re.I) for e in last),
                        f"last_reply does not look like a temporary DNS failure: {last}")
        self.assertEqual(self.arrived(tok), [])
        self.assertEqual(self.counts()[1].get("bounced", 0), 0, "a DNS failure bounced mail")

        self.dns.start()
        t0 = time.monotonic()
        ok = wait_for(lambda: sum(len(m.rcpt_tos) for m in self.arrived(tok)) >= len(rcpts),
                      45, poll=0.1)
        if not ok:
            self.fail(f"not delivered within 45s of DNS answering; {self.entries_for(rcpts)}"
                      f"{self.diag()}")
        print(f"delivered {time.monotonic() - t0:.1f}s after DNS came back", file=sys.stderr)
        wait_for(lambda: self.counts()[0] == 0, 15, poll=0.2)
        self.assertEqual(self.counts(), (0, {}))
        got = sorted(r.lower() for m in self.arrived(tok) for r in m.rcpt_tos)
        self.assertEqual(got, sorted(rcpts))


if __name__ == "__main__":
    unittest.main(verbosity=2)
