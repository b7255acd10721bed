"""Faults mxd must survive without losing or half-storing mail.

DiskFull: the disk fills up under the store (the LD_PRELOAD shim
tests/shim/fsfault.c makes every write to queue.db, its WAL and the spool
fail with ENOSPC while a flag file exists). DiskFullLoop: the same on a
real, small ext4 file system (a 24 MiB image, loop-mounted; skipped, with
the reason, where the sandbox does not allow mount) filled up with a
filler file. Clients get 451 4.3.0, nothing of a refused message is kept,
and once space returns the same running mxd accepts mail again by itself.

LmtpFaults: the mailbox server misbehaves (a scripted LMTP server in this
file: accepts and never answers, answers garbage, closes in the middle of a
reply, sends one byte per second). The affected mail is deferred, not lost
or bounced; mail for a healthy mailbox server keeps flowing meanwhile; when
the server is fixed everything arrives.
"""

import errno
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsfault  # noqa: E402
import mxdtest  # noqa: E402
from mxdtest import MxdTestCase  # noqa: E402

RCPT = "user@example.test"


def message(marker, size=300):
    head = f"Subject: {marker}\r\nX-Token: {marker}\r\n\r\n".encode()
    line = f"{marker} ".encode() + b"x" * 60 + b"\r\n"
    body = bytearray(head)
    while len(body) < size:
        body += line
    return bytes(body)


class FullDisk:
    """What both disk-full tests do: 3 messages stored, then make_full();
    while full, each of full_sizes gets 451 4.3.0 and mxd stays up; then
    make_room() and each of after_sizes is stored again without a restart.
    Every stored message is there once, nothing refused is there even in
    part, no spool file is left, and the database passes its integrity
    check. Returns (stored, refused)."""

    def send(self, marker, size=300):
        c = self.client()
        r = c.send_message("a@client.test", [RCPT], mxdtest.dot_stuff(message(marker, size)))
        try:
            c.cmd("QUIT")
        except (mxdtest.ConnectionClosed, OSError):
            pass
        return r

    def full_then_back(self, make_full, make_room, full_sizes, after_sizes, what):
        base = self.marker()
        stored, refused = [], []
        for i in range(3):
            r = self.send(f"{base}-before{i}")
            self.assertReply(r, 250, "2.0.0")
            stored.append((f"{base}-before{i}", r.qid))
        make_full()
        try:
            for i, size in enumerate(full_sizes):
                marker = f"{base}-full{i}"
                r = self.send(marker, size)
                self.assertReply(r, 451, "4.3.0", f"{what}, {size} octets")
                refused.append(marker)
            self.assertTrue(self.mxd.running(), f"mxd died on ENOSPC:\n{self.mxd.stderr()}")
        finally:
            make_room()
        for i, size in enumerate(after_sizes):
            r = self.send(f"{base}-after{i}", size)
            self.assertReply(r, 250, "2.0.0", "space is back")
            stored.append((f"{base}-after{i}", r.qid))
        for marker, qid in stored:
            self.assertEqual(mxdtest.messages_containing(self.mxd.db_path, marker), [qid])
        for marker in refused:
            self.assertNothingStored(marker)
        self.assertSpoolEmpty()
        self.assertEqual(mxdtest.integrity_check(self.mxd.db_path), ["ok"])
        return stored, refused


class DiskFull(FullDisk, MxdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.ENV = None
        cls.mport = mxdtest.free_port()
        cls.SERVER = {"metrics_listen": f"127.0.0.1:{cls.mport}"}
        super().setUpClass()
        cls.mxd.stop()
        # On PostgreSQL (MXD_TEST_STORE=postgresql) the flag also fills the
        # server's data directory: its WAL write fails, the server goes down.
        cls.flag = mxdtest.store_fault_flag(os.path.join(cls.tmpdir, "disk-full"))
        # queue.db, queue.db-wal, queue.db-shm; the spool is TMP/spool/
        cls.mxd.env = fsfault.env(os.path.dirname(cls.mxd.db_path) + "/",
                                  enospc=cls.flag)
        cls.mxd.start()

    def test_disk_full_then_space_returns(self):
        # small bodies (in memory) and a large one (spooled to disk)
        stored, refused = self.full_then_back(
            lambda: open(self.flag, "w").close(), self.make_room,
            (300, 2000, 400_000, 300), (300_000, 300, 300), "disk full")
        # the commits that failed are counted (alert MxdStoreCommitErrors);
        # a spooled body may fail before its commit, so not all four
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics", timeout=10) as r:
            m = re.search(r"^mxd_store_commit_failures_total (\d+)$", r.read().decode(), re.M)
        self.assertIsNotNone(m)
        self.assertTrue(1 <= int(m.group(1)) <= len(refused) + self.probes_refused, m.group(0))
        print(f"\ndisk full ({mxdtest.store_backend()}): {len(refused)} refused with 451 4.3.0 "
              f"while full, "
              f"{len(stored)} stored before and after, 0 half-stored", file=sys.stderr)


    def make_room(self):
        os.unlink(self.flag)
        # PostgreSQL: restarted, and probes until mxd stores again
        self.probes_refused = mxdtest.store_space_back(self.mxd)


class DiskFullLoop(FullDisk, MxdTestCase):
    """The store on a real file system that runs out of space."""

    @classmethod
    def setUpClass(cls):
        if mxdtest.store_backend() == "postgresql":
            # PostgreSQL writes its commits into WAL segments it allocated
            # in advance: a full file system fails a commit only when a new
            # segment is needed, so "every message gets 451 while full" is
            # not what it promises. DiskFull covers it with the shim.
            raise unittest.SkipTest("the store is PostgreSQL: see DiskFull")
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        img = os.path.join(cls.tmpdir, "fs.img")
        cls.mnt = os.path.join(cls.tmpdir, "fs")
        os.mkdir(cls.mnt)
        with open(img, "wb") as f:
            f.truncate(24 << 20)
        mkfs = mxdtest.require_tool("mkfs.ext4", ["/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"])
        subprocess.run([mkfs, "-q", "-F", img], check=True, capture_output=True, timeout=60)
        p = subprocess.run(["mount", "-o", "loop", img, cls.mnt], capture_output=True, timeout=60)
        if p.returncode != 0:
            raise unittest.SkipTest(f"cannot loop-mount here: {p.stderr.decode().strip()} "
                                    "(DiskFull covers this with the ENOSPC shim)")
        cls.addClassCleanup(subprocess.run, ["umount", "-l", cls.mnt], timeout=60)
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir,
                                  server={"database": os.path.join(cls.mnt, "q.db")}))

    def fill(self):
        """Fills the file system; returns the filler's path."""
        path = os.path.join(self.mnt, "filler")
        with open(path, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)
            try:
                while True:  # the last partial megabyte
                    f.write(b"\0" * 4096)
                    f.flush()
            except OSError:
                pass
        return path

    def test_real_disk_full(self):
        state = {}

        def make_full():
            state["filler"] = self.fill()
            state["st"] = os.statvfs(self.mnt)

        # bigger than the WAL space already allocated: the WAL must grow
        stored, refused = self.full_then_back(
            make_full, lambda: os.unlink(state["filler"]), (100_000, 120_000, 400_000),
            (400_000, 100_000, 100_000), "file system full")
        print(f"\ndisk full (ext4 on loop, {state['st'].f_bavail} blocks free when full): "
              f"{len(refused)} refused with 451 4.3.0, {len(stored)} stored before and after",
              file=sys.stderr)


class FakeLmtp:
    """A scripted LMTP server on 127.0.0.1. mode (read per connection):
    good      a correct LMTP server (PIPELINING, one reply per recipient)
    silent    accepts the connection and never sends a byte
    garbage   a 220, then garbage instead of the LHLO reply
    close_mid a correct session until the data is in (and "saved"), then
              half a reply and the connection closed
    slow      a correct session with every octet of every reply sent one
              per second
    delivered: (recipient, token) for every message it saved."""

    def __init__(self, mode):
        self.mode = mode
        self.delivered = []
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closing = False
        self.conns = []
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def close(self):
        self.closing = True
        self.sock.close()
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    def accept_loop(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            threading.Thread(target=self.session, args=(conn, self.mode), daemon=True).start()

    def session(self, conn, mode):
        conn.settimeout(120)
        try:
            if mode == "silent":
                while not self.closing and conn.recv(4096):
                    pass
                return
            self.converse(conn, mode)
        except OSError:
            pass
        finally:
            conn.close()

    def converse(self, conn, mode):
        f = conn.makefile("rb")

        def send(data):
            if mode != "slow":
                conn.sendall(data)
                return
            for i in range(len(data)):
                conn.sendall(data[i:i + 1])
                time.sleep(1.0)

        send(b"220 s\r\n" if mode == "slow" else b"220 fake LMTP ready\r\n")
        rcpts = []
        while True:
            line = f.readline()
            if not line:
                return
            verb = line[:4].upper()
            if mode == "garbage":
                conn.sendall(b"\x16\x03\x01 garbage \x00\xff\r\n")
                continue
            if verb == b"LHLO":
                send(b"250 s\r\n" if mode == "slow" else
                     b"250-fake\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb in (b"MAIL", b"NOOP"):
                rcpts = [] if verb == b"MAIL" else rcpts
                send(b"250 s\r\n" if mode == "slow" else b"250 2.1.0 Ok\r\n")
            elif verb == b"RSET":
                rcpts = []
                send(b"250 2.0.0 Ok\r\n")
            elif verb == b"RCPT":
                rcpts.append(line[8:].strip().strip(b"<>").decode())
                send(b"250 s\r\n" if mode == "slow" else b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                send(b"354 s\r\n" if mode == "slow" else b"354 go ahead\r\n")
                body = b""
                while not body.endswith(b"\r\n.\r\n"):
                    chunk = f.readline()
                    if not chunk:
                        return
                    body += chunk
                m = re.search(rb"X-Token: (\S+)", body)
                token = m.group(1).decode() if m else "<none>"
                with self.lock:
                    self.delivered += [(r, token) for r in rcpts]
                if mode == "close_mid":
                    conn.sendall(b"250 2.0")
                    return
                for _ in rcpts:
                    send(b"250 s\r\n" if mode == "slow" else b"250 2.0.0 Saved\r\n")
                rcpts = []
            elif verb == b"QUIT":
                send(b"221 bye\r\n")
                return
            else:
                send(b"500 5.5.1 what\r\n")


FAULTS = ("silent", "garbage", "close_mid", "slow")


class LmtpFaults(MxdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.servers = {m: FakeLmtp(m) for m in ("good",) + FAULTS}
        for srv in cls.servers.values():
            cls.addClassCleanup(srv.close)
        cls.DOMAINS = {f"{m.replace('_', '')}.test": {
            "mode": "local", "lmtp": f"127.0.0.1:{srv.port}", "recipients": "any"}
            for m, srv in cls.servers.items()}
        cls.EXTRA = "[queue]\nretry_min = 1s\nretry_max = 2s\n"
        cls.ENV = {"MXD_TEST_REPLY_TIMEOUT_MS": "3000"}
        super().setUpClass()

    def send(self, rcpt, token):
        c = self.client()
        r = c.send_message("a@client.test", [rcpt], mxdtest.dot_stuff(message(token)))
        self.assertReply(r, 250, "2.0.0")
        c.cmd("QUIT")

    def states(self, domain):
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            return dict(con.execute("SELECT state, count(*) FROM message_rcpts WHERE domain = ? "
                                    "GROUP BY state", (domain,)))
        finally:
            con.close()

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                self.fail(f"{what} within {timeout}s\n{self.mxd.stderr()[-5000:]}")
            self.assertTrue(self.mxd.running(), f"mxd died:\n{self.mxd.stderr()}")
            time.sleep(0.1)

    def test_misbehaving_lmtp_servers(self):
        base = self.marker()
        bad = {}
        for m in FAULTS:
            for i in range(2):
                token = f"{base}-{m}-{i}"
                rcpt = f"u{i}@{m.replace('_', '')}.test"
                self.send(rcpt, token)
                bad[(rcpt, token)] = m
        # Mail for the healthy server keeps flowing while the others hang
        # or fail: 20 messages, each delivered within seconds.
        good = self.servers["good"]
        t0 = time.monotonic()
        for i in range(20):
            self.send(f"g{i % 4}@good.test", f"{base}-good-{i}")
        self.wait(lambda: len(good.delivered) >= 20, 15, "mail for the good server not delivered")
        good_s = time.monotonic() - t0
        # Every fault defers (4xx), none bounces, nothing leaves the queue.
        # The reply timeout is per reply: a server dripping one octet a
        # second (7 s for "220 s") does not keep restarting it.
        for m in ("silent", "garbage", "close_mid", "slow"):
            d = f"{m.replace('_', '')}.test"
            self.wait(lambda: self.states(d).get("deferred", 0) == 2, 20,
                      f"{m}: recipients not deferred ({self.states(d)})")
        for m in FAULTS:
            st = self.states(f"{m.replace('_', '')}.test")
            self.assertNotIn("bounced", st, f"{m}: mail bounced")
            self.assertNotIn("delivered", st, f"{m}: marked delivered")
        connections = {m: self.servers[m].connections for m in FAULTS}
        # The servers are repaired: everything arrives.
        for m in FAULTS:
            self.servers[m].mode = "good"
        self.wait(lambda: self.mxd_queue_empty(), 90, "queue not empty after repair")
        got = {}
        for srv in self.servers.values():
            for key in srv.delivered:
                got[key] = got.get(key, 0) + 1
        lost = [k for k in bad if got.get(k, 0) == 0]
        dups = sum(got.get(k, 0) - 1 for k in bad if got.get(k, 0) > 1)
        print(f"\nlmtp faults: {len(FAULTS)} faults survived ({', '.join(FAULTS)}); 20 good "
              f"deliveries in {good_s:.1f}s meanwhile; connections during faults {connections}; "
              f"{len(bad)} affected messages: lost {len(lost)}, duplicates {dups}",
              file=sys.stderr)
        self.assertEqual(lost, [], "affected mail lost")

    def mxd_queue_empty(self):
        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            return con.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        finally:
            con.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
