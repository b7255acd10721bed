"""Privilege drop without systemd: started as root with [server] user set,
mxd binds its listener (a port below 1024, which only root may bind), then
becomes that user (uid, gid and groups) before it opens the database or
reads from the network. Needs root: CI runs as root; elsewhere the tests
are reported as skipped, never as passed."""

import os
import pwd
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402

USER = "mxdtest"


def ensure_user():
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    import subprocess
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", USER], check=True, timeout=60)
    return pwd.getpwnam(USER)


def low_port():
    """A free port below 1024 (only root may bind it here)."""
    for port in range(1023, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


def proc_ids(pid):
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(x) for x in val.split()]
    return out


@unittest.skipUnless(os.geteuid() == 0, "privilege drop needs root")
class PrivDrop(unittest.TestCase):
    def setUp(self):
        self.pw = ensure_user()
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, "privdrop")
        os.chmod(self.tmpdir, 0o755)
        self.dbdir = os.path.join(self.tmpdir, "db")
        os.mkdir(self.dbdir, 0o750)
        os.chown(self.dbdir, self.pw.pw_uid, self.pw.pw_gid)
        self.port = low_port()
        self.mxd = mxdtest.Mxd(self.tmpdir, port=self.port, server={
            "user": USER, "database": os.path.join(self.dbdir, "queue.db")})
        self.addCleanup(self.mxd.kill)

    def test_drops_to_user_after_binding(self):
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", encoding="ascii") as f:
            self.assertGreater(int(f.read()), self.port, "unprivileged users may bind it")
        self.mxd.start()
        ids = proc_ids(self.mxd.pid)
        uid, gid = self.pw.pw_uid, self.pw.pw_gid
        self.assertEqual(ids["Uid"], [uid] * 4, ids)  # real, effective, saved, fs
        self.assertEqual(ids["Gid"], [gid] * 4, ids)
        self.assertNotIn(0, ids["Groups"], ids)
        with self.mxd.client() as c:
            r = c.send_message("s@sender.test", ["u@example.test"], b"Subject: x\r\n\r\nhi\r\n")
            self.assertEqual(r.code, 250, r)
        self.assertIsNotNone(mxdtest.message_by_qid(self.mxd.db_path, r.qid))
        # The queue was created by the user, not by root.
        self.assertEqual(os.stat(self.mxd.db_path).st_uid, uid)
        self.assertIn(f"running as user={USER}", self.mxd.stderr())
        self.mxd.stop()

    def test_unwritable_database_dir_fails_start(self):
        os.chown(self.dbdir, 0, 0)
        os.chmod(self.dbdir, 0o755)
        self.mxd.write_config()
        with self.assertRaises(AssertionError) as cm:
            self.mxd.start(timeout=10)
        self.assertIn("start failed", str(cm.exception))
        self.assertFalse(os.path.exists(self.mxd.db_path), "root created the database")

    def test_unknown_user_fails_start(self):
        self.mxd.server["user"] = "no-such-user-mxd"
        self.mxd.write_config()
        with self.assertRaises(AssertionError) as cm:
            self.mxd.start(timeout=10)
        self.assertIn("no-such-user-mxd", str(cm.exception))


if __name__ == "__main__":
    mxdtest.main()
