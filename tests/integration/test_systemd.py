"""systemd integration without systemd as PID 1: the unit files pass
`systemd-analyze verify` and `systemd-analyze security --offline` (exposure
at most 2.0), and mxd runs socket-activated: it takes its SMTP listener from
LISTEN_FDS (a socket this test created), and reports READY=1 (after which the
listener answers), STATUS=, RELOADING=1 and STOPPING=1 on NOTIFY_SOCKET.
Journal output: in a private mount namespace (root only) a datagram socket
stands in for journald at /run/systemd/journal/socket, and mxd, with
JOURNAL_STREAM naming its stderr, sends structured MXD_* fields there."""

import json
import os
import struct
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402

UNITS = os.path.join(mxdtest.source_root(), "systemd")


def analyze():
    path = shutil.which("systemd-analyze")
    if path is None:
        raise AssertionError("systemd-analyze not found (package systemd, tests/deps.sh)")
    return path


class Units(unittest.TestCase):
    def setUp(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, "units")
        # As meson installs it: @sbindir@ becomes the directory of mxd.
        with open(os.path.join(UNITS, "mxd.service"), encoding="utf-8") as f:
            text = f.read().replace("@sbindir@", os.path.dirname(mxdtest.mxd_path()))
        self.assertNotIn("@sbindir@", text)
        with open(os.path.join(self.tmpdir, "mxd.service"), "w", encoding="utf-8") as f:
            f.write(text)
        shutil.copy(os.path.join(UNITS, "mxd.socket"), self.tmpdir)
        self.service = os.path.join(self.tmpdir, "mxd.service")
        self.socket = os.path.join(self.tmpdir, "mxd.socket")

    def test_verify_is_clean(self):
        r = subprocess.run([analyze(), "verify", "--man=no", self.service, self.socket],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Unknown keys and bad values are only warnings: there must be none.
        self.assertEqual(r.stderr.strip(), "", "systemd-analyze verify warnings")

    def test_verify_catches_a_bad_key(self):
        # The check above can fail: a misspelt key is reported.
        with open(self.service, "a", encoding="utf-8") as f:
            f.write("NoNewPrivilege=yes\n")
        r = subprocess.run([analyze(), "verify", "--man=no", self.service, self.socket],
                           capture_output=True, text=True, timeout=60)
        self.assertIn("NoNewPrivilege", r.stderr)

    def test_security_exposure_at_most_2(self):
        r = subprocess.run([analyze(), "security", "--offline=yes", "--no-pager",
                            self.service], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.search(r"Overall exposure level for mxd\.service: ([0-9.]+)", r.stdout)
        self.assertIsNotNone(m, r.stdout[-2000:])
        score = float(m.group(1))
        print(f"\nsystemd-analyze security --offline: exposure {score}", file=sys.stderr)
        self.assertLessEqual(score, 2.0)
        # --threshold makes systemd-analyze itself fail above 2.0.
        r = subprocess.run([analyze(), "security", "--offline=yes", "--threshold=20",
                            self.service], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:])


class Install(unittest.TestCase):
    def test_meson_install_layout(self):
        """`meson install` puts binaries in sbin, man pages in 8 and 5, the
        example config, the units (ExecStart= pointing at the installed
        mxd) and the sysusers entry."""
        build = os.path.dirname(os.path.dirname(mxdtest.mxd_path()))
        dest = mxdtest.make_tmpdir(self.addCleanup, "install")
        r = subprocess.run(["meson", "install", "-C", build, "--destdir", dest, "--quiet",
                            "--no-rebuild"], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        prefix = subprocess.run(["meson", "introspect", "--buildoptions", build],
                                capture_output=True, text=True, timeout=60).stdout
        opts = {o["name"]: o["value"] for o in json.loads(prefix)}
        root = dest + opts["prefix"]
        files = {os.path.relpath(os.path.join(d, f), root)
                 for d, _, fs in os.walk(root) for f in fs}
        for want in (f"{opts['sbindir']}/mxd", f"{opts['sbindir']}/mxctl",
                     f"{opts['mandir']}/man8/mxd.8", f"{opts['mandir']}/man8/mxctl.8",
                     f"{opts['mandir']}/man5/mxd.conf.5",
                     f"{opts['datadir']}/doc/mxd/examples/mxd.conf",
                     "lib/systemd/system/mxd.service", "lib/systemd/system/mxd.socket",
                     "lib/sysusers.d/mxd.conf"):
            self.assertIn(want, files)
        with open(os.path.join(root, "lib/systemd/system/mxd.service"), encoding="utf-8") as f:
            unit = f.read()
        self.assertIn(f"ExecStart={opts['prefix']}/{opts['sbindir']}/mxd -c ", unit)
        with open(os.path.join(root, opts["mandir"], "man8/mxd.8"), encoding="utf-8") as f:
            self.assertIn(".TH", f.read())  # rendered troff, not scdoc source
        with open(os.path.join(root, "lib/sysusers.d/mxd.conf"), encoding="utf-8") as f:
            self.assertRegex(f.read(), r"(?m)^u mxd ")


class Notify:
    """A NOTIFY_SOCKET: an AF_UNIX datagram socket collecting messages."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []

    def wait_for(self, text, timeout=20):
        """Returns the datagram containing the line text (waits for it);
        text may be a compiled regular expression matching a line."""
        def has(msg):
            lines = msg.split("\n")
            if isinstance(text, re.Pattern):
                return any(text.fullmatch(line) for line in lines)
            return text in lines
        deadline = time.monotonic() + timeout
        for msg in self.messages:
            if has(msg):
                return msg
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode("utf-8", "replace")
            except socket.timeout:
                break
            self.messages.append(data)
            if has(data):
                return data
        raise AssertionError(f"no {text!r} on NOTIFY_SOCKET; got {self.messages!r}")

    def close(self):
        self.sock.close()


class SocketActivation(unittest.TestCase):
    def setUp(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, "systemd")
        self.notify = Notify(os.path.join(self.tmpdir, "notify"))
        self.addCleanup(self.notify.close)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addCleanup(self.lsock.close)
        self.port = self.lsock.getsockname()[1]
        # The config's own listen address must not be used.
        self.conf_port = mxdtest.free_port()
        self.mxd = mxdtest.Mxd(self.tmpdir, port=self.conf_port)
        self.proc = None
        self.log = open(os.path.join(self.tmpdir, "mxd.stderr"), "wb")
        self.addCleanup(self.log.close)
        self.addCleanup(self.kill)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stderr(self):
        with open(os.path.join(self.tmpdir, "mxd.stderr"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def start(self, listen_pid_ok=True):
        """Runs mxd as systemd would: the socket as fd 3, LISTEN_FDS=1 and
        LISTEN_PID = mxd's pid (the shell sets it to its own pid, then
        execs mxd, which keeps that pid)."""
        fd = self.lsock.fileno()
        pid = "$$" if listen_pid_ok else "1"
        script = f'export LISTEN_PID={pid}; exec "$@" 3<&{fd} {fd}<&-'
        env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "smtp",
               "NOTIFY_SOCKET": self.notify.path}
        env.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", script, "sh", mxdtest.mxd_path(), "-c", self.mxd.conf_path],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, cwd=self.tmpdir,
            env=env, pass_fds=(fd,))

    def smtp_works(self, port):
        c = mxdtest.SmtpClient(port)
        try:
            self.assertEqual(c.reply().code, 220)
            r = c.send_message("a@sender.test", ["u@example.test"], b"Subject: x\r\n\r\nhi\r\n")
            self.assertEqual(r.code, 250, r)
            return r.qid
        finally:
            c.close()

    def test_ready_then_listener_works(self):
        self.start()
        ready = self.notify.wait_for("READY=1")
        self.assertRegex(ready, r"STATUS=")
        # After READY=1 the passed socket answers, at once.
        qid = self.smtp_works(self.port)
        self.assertIsNotNone(mxdtest.message_by_qid(self.mxd.db_path, qid))
        # STATUS= with the queue size follows (read from the database).
        self.notify.wait_for(re.compile(r"STATUS=accepting mail; queue: [01] messages, "
                                        r"[01] recipients waiting"))
        # LISTEN_FDS wins over listen: the configured port is not bound.
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.conf_port), timeout=2).close()
        # mxd holds the socket now: close ours and it still accepts.
        self.lsock.close()
        self.smtp_works(self.port)
        # A reload keeps the systemd listener and says RELOADING then READY.
        n = len(self.notify.messages)
        self.proc.send_signal(signal.SIGHUP)
        self.notify.wait_for("RELOADING=1")
        self.notify.messages = self.notify.messages[n:]
        self.notify.messages = [m for m in self.notify.messages if "READY=1" not in m]
        self.notify.wait_for("READY=1")
        self.smtp_works(self.port)
        self.proc.send_signal(signal.SIGTERM)
        self.notify.wait_for("STOPPING=1")
        self.assertEqual(self.proc.wait(timeout=20), 0, self.stderr())
        self.assertIn("source=systemd", self.stderr())

    def test_socket_marked_proxy_by_its_address(self):
        # Issue 16: the passed socket is bound to an address listed with
        # `proxy`: a PROXY header comes first, and names the client.
        self.mxd.server["listen"] = f"127.0.0.1:{self.port} proxy"
        self.mxd.server["proxy_networks"] = "127.0.0.1"
        self.mxd.write_config()
        self.start()
        self.notify.wait_for("READY=1")
        c = mxdtest.SmtpClient(self.port, proxy="192.0.2.33")
        try:
            self.assertEqual(c.reply().code, 220)
            r = c.send_message("a@sender.test", ["u@example.test"], b"Subject: x\r\n\r\nhi\r\n")
            self.assertEqual(r.code, 250, r)
        finally:
            c.close()
        self.assertEqual(mxdtest.message_by_qid(self.mxd.db_path, r.qid)["row"]["client_addr"],
                         "192.0.2.33")
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=20), 0, self.stderr())
        self.assertIn("source=systemd proxy=yes", self.stderr())

    def test_listen_pid_of_another_process_is_ignored(self):
        # LISTEN_FDS meant for another pid: mxd binds its own listen address.
        self.start(listen_pid_ok=False)
        self.notify.wait_for("READY=1")
        self.smtp_works(self.conf_port)
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=20), 0, self.stderr())
        self.assertNotIn("source=systemd", self.stderr())

    def test_no_ready_when_start_fails(self):
        # A database that cannot be opened: mxd exits 1 and never says READY.
        with open(os.path.join(self.tmpdir, "file"), "w", encoding="utf-8") as f:
            f.write("not a directory\n")
        self.mxd.server["database"] = os.path.join(self.tmpdir, "file", "q.db")
        self.mxd.write_config()
        self.start()
        self.assertEqual(self.proc.wait(timeout=20), 1, self.stderr())
        with self.assertRaises(AssertionError):
            self.notify.wait_for("READY=1", timeout=0.5)


def parse_native(data):
    """One journald native-protocol datagram: KEY=value lines, or KEY,
    newline, a 64-bit little-endian length and binary data."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            k, v = line, data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode("utf-8", "replace")
    return fields


def journal_child(tmpdir, conf, port, stream_matches):
    """Runs in `unshare -m`: a fake journald, mxd, one message, SIGTERM.
    Prints {"entries": [...], "stderr": "..."} as JSON."""
    import subprocess as sp
    sp.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
    os.mkdir("/run/systemd/journal")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/run/systemd/journal/socket")
    errpath = os.path.join(tmpdir, "journal.stderr")
    err = open(errpath, "wb")
    st = os.fstat(err.fileno())
    ino = st.st_ino if stream_matches == "1" else st.st_ino + 1
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{ino}"}
    proc = sp.Popen([mxdtest.mxd_path(), "-c", conf], stdin=sp.DEVNULL, stdout=err, stderr=err,
                    env=env, cwd=tmpdir)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                c = mxdtest.SmtpClient(int(port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        c.reply()
        r = c.send_message("a@sender.test", ["u@example.test"], b"Subject: j\r\n\r\nhi\r\n")
        assert r.code == 250, r
        c.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    entries = []
    sock.settimeout(0.5)
    while True:
        try:
            entries.append(parse_native(sock.recv(65536)))
        except socket.timeout:
            break
    err.close()
    with open(errpath, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    print(json.dumps({"entries": entries, "stderr": text, "rc": proc.returncode}))


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare"),
                     "a private mount namespace needs root and unshare")
class Journal(unittest.TestCase):
    def run_child(self, stream_matches):
        tmpdir = mxdtest.make_tmpdir(self.addCleanup, "journal")
        mxd = mxdtest.Mxd(tmpdir)
        r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                            os.path.abspath(__file__), "--journal-child", tmpdir, mxd.conf_path,
                            str(mxd.port), stream_matches],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout.splitlines()[-1])
        self.assertEqual(out["rc"], 0, out["stderr"])
        return out

    def test_structured_fields(self):
        out = self.run_child("1")
        entries = out["entries"]
        queued = [e for e in entries if e.get("MXD_EVENT") == "queued"]
        self.assertEqual(len(queued), 1, entries)
        q = queued[0]
        self.assertEqual(q["MXD_COMPONENT"], "smtp")
        self.assertEqual(q["PRIORITY"], "6")
        self.assertEqual(q["SYSLOG_IDENTIFIER"], "mxd")
        self.assertEqual(q["MXD_FROM"], "<a@sender.test>")
        self.assertEqual(q["MXD_NRCPT"], "1")
        self.assertRegex(q["MXD_QID"], r"^[0-9A-Za-z]+$")
        self.assertTrue(q["MESSAGE"].startswith(q["MXD_QID"] + " smtp queued from="), q)
        self.assertTrue(any(e.get("MXD_EVENT") == "stopped" for e in entries))
        # Everything went to the journal, nothing to stderr.
        self.assertEqual(out["stderr"], "")

    def test_journal_stream_of_another_file(self):
        # JOURNAL_STREAM set but not our stderr: plain lines with <N>.
        out = self.run_child("0")
        self.assertEqual(out["entries"], [])
        self.assertRegex(out["stderr"], r"(?m)^<6>info [0-9A-Za-z]+ smtp queued from=")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--journal-child":
        journal_child(*sys.argv[2:6])
        sys.exit(0)
    mxdtest.main()
