"""Issue 18, part 2: paced release of held mail to a returning primary.

The scripted primary (primary_server.py, aiosmtpd) logs connect,
disconnect, MAIL and DATA events with the peer's address and port. It is
down while mxd accepts mail for two backup domains, so every message is
held; then it starts and the watcher releases the mail.

- slow start: until the primary has taken a message, mxd has at most 2
  delivery connections open to it (the watcher's probe, which sends no
  MAIL, is not counted); the pool then grows, never past its limit (4).
- release_rate = 4 on the second domain: its messages reach the primary
  at no more than 4 a second.
Nothing is lost or duplicated: every message arrives once.
"""

import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from primary import Primary  # noqa: E402

N_FAST = 16  # example.org: no release_rate
N_RATE = 9   # example.net: release_rate = 4


def held_count(db):
    con = mxdtest.db_connect(db)
    try:
        return con.execute("SELECT count(*) FROM message_rcpts WHERE state = 'held'").fetchone()[0]
    finally:
        con.close()


def sessions(events):
    """{(ip, port): {"start": t, "end": t or None, "mail": [t...], "rcpts": [...]}}"""
    out = {}
    for e in events:
        peer = tuple(e.get("peer") or ())
        if not peer:
            continue
        s = out.setdefault(peer, {"start": None, "end": None, "mail": [], "data": [],
                                  "domain": None})
        if e["event"] == "connect":
            s["start"] = e["t"]
        elif e["event"] == "disconnect":
            s["end"] = e["t"]
        elif e["event"] == "mail":
            s["mail"].append(e["t"])
        elif e["event"] == "rcpt":
            s["domain"] = (e.get("address") or "").rsplit("@", 1)[-1].lower()
        elif e["event"] == "data":
            s["data"].append((e["t"], tuple(e.get("rcpts") or ())))
    return out


def open_at(sess, t, domain):
    """Delivery sessions for domain (they sent RCPT) open at time t."""
    return sum(1 for s in sess.values() if s["domain"] == domain and s["start"] is not None
               and s["start"] <= t and (s["end"] is None or s["end"] > t))


class ReleasePacing(mxdtest.MxdTestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.primary = Primary(cls.tmpdir)
        cls.addClassCleanup(cls.primary.close)
        rate = os.environ.get("PACE_RELEASE_RATE", "4")
        domains = {
            "example.org": {"mode": "backup", "primary": cls.primary.target,
                            "recipients": "any"},
            "example.net": {"mode": "backup", "primary": cls.primary.target,
                            "recipients": "any", "release_rate": rate},
        }
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, domains=domains,
                                  server={"max_connections_per_ip": "100"},
                                  extra="[queue]\nretry_min = 1s\nretry_max = 5s\n"))

    def source(self, n, rcpt):
        subprocess.run(["/usr/sbin/smtp-source", "-s", "4", "-m", str(n), "-l", "1024",
                        "-f", "s@source.test", "-t", rcpt, f"127.0.0.1:{self.mxd.port}"],
                       check=True, stdin=subprocess.DEVNULL, timeout=60)

    def test_slow_start_and_release_rate(self):
        self.source(N_FAST, "user@example.org")
        self.source(N_RATE, "user@example.net")
        deadline = time.monotonic() + 30
        while held_count(self.mxd.db_path) < N_FAST + N_RATE and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(held_count(self.mxd.db_path), N_FAST + N_RATE,
                         self.mxd.all_stderr()[-3000:])
        self.primary.start()
        got = self.primary.wait_count(N_FAST + N_RATE, timeout=60)
        time.sleep(1)  # anything extra (a duplicate) would show now
        self.assertEqual(self.primary.count(), N_FAST + N_RATE, got)
        ev = self.primary.events()
        sess = sessions(ev)
        datas = sorted((t, r) for s in sess.values() for t, r in s["data"])
        org = "example.org"
        first_data = min(t for t, r in datas if r and r[0].endswith("@" + org))
        # slow start: at most 2 delivery connections before the first message
        starts = sorted(s["start"] for s in sess.values() if s["domain"] == org and s["start"])
        before = max(open_at(sess, t, org) for t in starts if t <= first_data)
        peak = max(open_at(sess, t, org) for t in starts)
        print(f"\n{org}: {len(starts)} delivery sessions; open before the first message: "
              f"{before}; peak: {peak}", file=sys.stderr)
        self.assertLessEqual(before, 2)
        self.assertLessEqual(peak, 4)
        # release_rate: example.net's messages at no more than 4/s
        net = [t for t, r in datas if r and r[0].endswith("@example.net")]
        self.assertEqual(len(net), N_RATE)
        span = net[-1] - net[0]
        rate = (len(net) - 1) / span if span > 0 else float("inf")
        print(f"example.net: {len(net)} messages over {span:.2f}s ({rate:.1f}/s); "
              f"example.org: {len(datas) - len(net)}", file=sys.stderr)
        self.assertLessEqual(rate, 4.4)
        # nothing lost or duplicated: each message's Message-ID once
        ids = [m.body.split(b"Message-Id:", 1)[-1].split(b"\r\n", 1)[0]
               for m in self.primary.messages()]
        self.assertEqual(len(set(ids)), N_FAST + N_RATE)


if __name__ == "__main__":
    unittest.main()
