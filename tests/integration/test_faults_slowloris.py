"""Slowloris: 2,000 slow clients from 127.0.0.1 (each sending one octet
every 2 s and never a full command, reconnecting whenever mxd drops them)
while a well-behaved client sends 100 messages from ::1, the other loopback
address (only these two are ever used). mxd listens on both. Every one of
the 100 must be accepted within its normal latency (measured first without
the attack); 127.0.0.1 may hold max_connections_per_ip = 2,000 sessions,
and one more gets 421 4.7.0; command_timeout cuts the slow sessions; mxd's
RSS stays bounded (printed: before, with 2,000 sessions, after).

MXD_SLOWLORIS_CLIENTS and MXD_SLOWLORIS_SECONDS change the attack.
"""

import os
import resource
import selectors
import socket
import statistics
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import MxdTestCase  # noqa: E402

CLIENTS = int(os.environ.get("MXD_SLOWLORIS_CLIENTS", "2000"))
SLOW = "127.0.0.1"  # every slow client; max_connections_per_ip = CLIENTS
GOOD = "::1"  # the well-behaved client, a different address to mxd
MESSAGES = 100


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Slowloris:
    """CLIENTS sockets driven from one thread with a selector."""

    def __init__(self, port):
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.open = 0
        self.connects = 0
        self.banners = 0
        self.closed_by_server = 0
        self.replies = {}  # first three octets of what mxd said -> count
        self.thread = threading.Thread(target=self.run, daemon=True)

    def connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((SLOW, self.port))
        self.sel.register(s, selectors.EVENT_READ)
        self.open += 1
        self.connects += 1

    def drop(self, s, reconnect=True):
        self.sel.unregister(s)
        s.close()
        self.open -= 1
        if reconnect and not self.stop.is_set():
            self.connect()

    def on_read(self, s):
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.closed_by_server += 1
            self.drop(s)
            return
        for line in data.split(b"\r\n"):
            if len(line) >= 3:
                code = line[:3].decode("ascii", "replace")
                self.replies[code] = self.replies.get(code, 0) + 1
                self.banners += code == "220"

    def run(self):
        for _ in range(CLIENTS):
            self.connect()
        next_drip = time.monotonic() + 2
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.2):
                self.on_read(key.fileobj)
            if time.monotonic() >= next_drip:
                next_drip += 2
                for key in list(self.sel.get_map().values()):
                    try:
                        key.fileobj.send(b"X")
                    except OSError:
                        pass
        for key in list(self.sel.get_map().values()):
            self.drop(key.fileobj, reconnect=False)


class SlowClients(MxdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.fd_limit = raise_fd_limit(2 * CLIENTS + 1000)  # mxd inherits it
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        port = mxdtest.free_port()
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, port=port, server={
            "listen": f"{SLOW}:{port}, [{GOOD}]:{port}",
            "max_connections": str(CLIENTS + 100),
            "max_connections_per_ip": str(CLIENTS),
            "command_timeout": "15s"}))

    def send_timed(self, n, tag):
        lat = []
        for i in range(n):
            t = time.monotonic()
            c = self.mxd.client(host=GOOD)
            r = c.send_message("a@client.test", ["user@example.test"],
                               mxdtest.dot_stuff(f"Subject: {tag} {i}\r\n\r\nhello\r\n".encode()))
            c.cmd("QUIT")
            c.close()
            lat.append(time.monotonic() - t)
            self.assertReply(r, 250, "2.0.0", f"{tag} message {i}")
        return lat

    def test_slowloris(self):
        self.assertGreaterEqual(self.fd_limit, 2 * CLIENTS + 200, "open files limit too low")
        base = self.send_timed(MESSAGES, "baseline")
        rss0 = self.mxd.rss_kib()
        attack = Slowloris(self.mxd.port)
        t_attack = time.monotonic()
        attack.thread.start()
        try:
            deadline = t_attack + 30
            while attack.banners < CLIENTS and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertGreaterEqual(attack.banners, CLIENTS, "slow clients not all connected")
            rss_peak = self.mxd.rss_kib()
            # One more from the full address: refused before any other work.
            over = socket.create_connection((SLOW, self.mxd.port), timeout=10)
            over_reply = over.recv(4096)
            over.close()
            lat = self.send_timed(MESSAGES, "attack")
            rss_peak = max(rss_peak, self.mxd.rss_kib())
            # command_timeout (15 s) cuts every slow session
            while attack.replies.get("421", 0) < CLIENTS and time.monotonic() < t_attack + 45:
                time.sleep(0.2)
        finally:
            attack.stop.set()
            attack.thread.join(timeout=30)
        time.sleep(1)
        rss1 = self.mxd.rss_kib()
        p = lambda xs, q: sorted(xs)[int(q * (len(xs) - 1))]  # noqa: E731
        print(f"\nslowloris: {CLIENTS} slow clients from {SLOW}, messages from {GOOD} "
              f"({attack.connects} connections made, {attack.closed_by_server} closed by mxd, "
              f"replies {attack.replies}); {MESSAGES} messages: median {statistics.median(base)*1000:.1f} ms "
              f"/ max {max(base)*1000:.1f} ms without the attack, median "
              f"{statistics.median(lat)*1000:.1f} ms / p95 {p(lat, 0.95)*1000:.1f} ms / max "
              f"{max(lat)*1000:.1f} ms during it; mxd RSS {rss0} KiB before, {rss_peak} KiB "
              f"with {CLIENTS} sessions, {rss1} KiB after", file=sys.stderr)
        self.assertTrue(over_reply.startswith(b"421 4.7.0") and b"from your address" in over_reply,
                        f"connection {CLIENTS + 1} from {SLOW}: {over_reply!r}")
        self.assertGreaterEqual(attack.replies.get("421", 0), CLIENTS,
                           "command_timeout did not cut the slow sessions")
        self.assertLess(max(lat), max(1.0, 10 * max(base)), "a message was slow under attack")
        self.assertLess(statistics.median(lat), 5 * statistics.median(base) + 0.05)
        with open(f"/proc/{self.mxd.pid}/maps", encoding="ascii", errors="replace") as f:
            asan = "libasan" in f.read()
        per_session = 100 if asan else 40  # KiB; ASan's redzones and quarantine cost more
        self.assertLess(rss_peak - rss0, per_session * CLIENTS,
                        f"more than {per_session} KiB per slow session")


if __name__ == "__main__":
    unittest.main(verbosity=2)
