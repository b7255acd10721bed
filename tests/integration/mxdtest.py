"""mxdtest: shared harness for the mxd integration tests.

Starts the real mxd (path in $MXD) on a free loopback port with a private
config and database under a temporary directory, talks SMTP to it over raw
sockets, smtplib or swaks, and reads what it stored straight from SQLite
(read-only, while mxd runs: the database is in WAL mode).

MXD_TEST_STORE=postgresql runs the same tests on the PostgreSQL store (issue
21): the first Mxd starts one private PostgreSQL for the test process
(pgcluster.py, stopped at exit), every new database path gets a fresh
database in it (the same path again: the same database, as with a SQLite
file), the config says store = postgresql, and db_connect() and the helpers
below read that database with the same calls (sqlite3's execute(...)
.fetchone()/.fetchall(), rows by name and index, ? placeholders).

Everything is bounded in time (socket and subprocess timeouts) and every
process a test starts is stopped by its PID, even when the test fails.
Set MXD_KEEP_TMP=1 to keep the temporary directories for inspection.
"""

import atexit
import email.utils
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

import ports

HOSTNAME = "mx.test.invalid"
CRLF = b"\r\n"
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
    "ThreadSanitizer",
)


# --------------------------------------------------------------------------
# Environment


def _env_path(name):
    val = os.environ.get(name)
    if not val:
        raise AssertionError(f"${name} is not set (run through meson test, or set it)")
    return os.path.abspath(val)


def mxd_path():
    path = _env_path("MXD")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"MXD={path} is not an executable file")
    return path


def mxctl_path():
    path = _env_path("MXCTL")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"MXCTL={path} is not an executable file")
    return path


def source_root():
    root = os.environ.get("MXD_SOURCE_ROOT")
    if root:
        return os.path.abspath(root)
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def require_tool(name, candidates=()):
    """Full path of a required external tool; a missing tool fails the test."""
    for cand in list(candidates) + [name]:
        if os.path.isabs(cand) and os.access(cand, os.X_OK):
            return cand
        found = shutil.which(cand)
        if found:
            return found
    raise AssertionError(f"required tool {name!r} is not installed (run tests/deps.sh)")


def store_backend():
    """The store the tests run mxd on: $MXD_TEST_STORE, sqlite by default."""
    val = os.environ.get("MXD_TEST_STORE", "sqlite").strip().lower() or "sqlite"
    if val not in ("sqlite", "postgresql"):
        raise AssertionError(f"MXD_TEST_STORE={val!r}: sqlite or postgresql")
    return val


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago on host, reserved for this process
    (ports.py: tests may run side by side)."""
    return ports.free_port(host)


# --------------------------------------------------------------------------
# PROXY protocol (HAProxy's spec): how tests present many client addresses
# while all traffic stays on loopback (a listener marked `proxy`)

PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header(client, version=2, dst="127.0.0.1", sport=40000, dport=25, tlvs=b""):
    """A PROXY header claiming the connection comes from client (an IPv4 or
    IPv6 literal), version 1 (text) or 2 (binary, with optional raw TLVs).
    client=None: v1 UNKNOWN / v2 LOCAL (keep the connection's address)."""
    if client is None:
        if version == 1:
            return b"PROXY UNKNOWN\r\n"
        return PROXY_V2_SIG + b"\x20\x00" + len(tlvs).to_bytes(2, "big") + tlvs
    src = ipaddress.ip_address(client)
    dst_ip = ipaddress.ip_address(dst)
    if src.version != dst_ip.version:
        dst_ip = ipaddress.ip_address("::1" if src.version == 6 else "127.0.0.1")
    if version == 1:
        return f"PROXY TCP{src.version} {src} {dst_ip} {sport} {dport}\r\n".encode()
    block = (src.packed + dst_ip.packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
             + tlvs)
    fam = b"\x11" if src.version == 4 else b"\x21"
    return PROXY_V2_SIG + b"\x21" + fam + len(block).to_bytes(2, "big") + block


# --------------------------------------------------------------------------
# Configuration


def default_server(tmpdir, port):
    return {
        "hostname": HOSTNAME,
        "listen": f"127.0.0.1:{port}",
        "database": os.path.join(tmpdir, "queue.db"),
        "max_message_size": "50m",
        "max_recipients": "100",
        "max_connections": "10000",
        "max_connections_per_ip": "20",
        "command_timeout": "5m",
        "data_timeout": "10m",
    }


DEFAULT_DOMAINS = {"example.test": {"mode": "local", "recipients": "any"}}


def config_text(server, domains, extra=""):
    """INI text for a [server] dict and {domain: {key: value}} sections."""
    out = ["; written by tests/integration/mxdtest.py", "[server]"]
    for key, val in server.items():
        if val is not None:
            out.append(f"{key} = {val}")
    for name, keys in domains.items():
        out.append("")
        out.append(f"[domain {name}]")
        for key, val in keys.items():
            out.append(f"{key} = {val}")
    text = "\n".join(out) + "\n"
    if extra:
        text += "\n" + extra
    if "bounce_policy" not in extra:
        # Issue 18: by default only an authenticated return path gets DSNs,
        # and SPF and DKIM are off below: tests get every DSN unless they
        # set a policy themselves (test_dsn_params.py).
        if "[queue]\n" in text:
            text = text.replace("[queue]\n", "[queue]\nbounce_policy = always\n", 1)
        else:
            text += "\n[queue]\nbounce_policy = always\n"
    if "[auth]" not in extra:
        # Sender authentication looks up DNS for every message: off unless
        # a test asks for it (tests/integration/test_auth_*.py).
        text += "\n[auth]\nspf = off\ndkim = off\ndmarc = off\n"
    return text


def small_asan_quarantine():
    """Environment for an mxd whose RSS a test measures: AddressSanitizer's
    quarantine keeps freed memory resident; keeping it small makes a
    sanitizer build measure the same thing as a plain one."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (asan + ":quarantine_size_mb=4"
                             ":thread_local_quarantine_size_kb=64").lstrip(":")}


def size_octets(text):
    """'50m' -> 52428800 (binary multiples, as mxd documents)."""
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    if text and text[-1] in mult:
        return int(text[:-1]) * mult[text[-1]]
    return int(text)


# --------------------------------------------------------------------------
# The daemon


class Mxd:
    """One mxd process with its own config file, database and stderr log."""

    def __init__(self, tmpdir, server=None, domains=None, port=None, name="mxd", extra="",
                 env=None, control=False):
        self.tmpdir = tmpdir
        self.env = env  # extra environment variables for mxd
        self.name = name
        self.port = port or free_port()
        self.server = default_server(tmpdir, self.port)
        # control: give mxd a control socket (tmpdir/control.sock for "mxd").
        self.control_path = None
        if control:
            sock = "control.sock" if name == "mxd" else f"{name}.control.sock"
            self.control_path = os.path.join(tmpdir, sock)
            self.server["control_socket"] = self.control_path
        self.server.update(server or {})
        self.domains = dict(DEFAULT_DOMAINS if domains is None else domains)
        self.extra = extra
        self.conf_path = os.path.join(tmpdir, f"{name}.conf")
        self.db_path = self.server["database"]
        if store_backend() == "postgresql" and "store" not in self.server:
            # The same tests on PostgreSQL: `database` still names where the
            # spool lives (its directory) and is the key db_connect() knows
            # this database by.
            self.server["store"] = "postgresql"
            self.server["postgresql"] = pg_database(self.db_path)
        self.proc = None
        self.log_path = None
        self._log = None
        self._starts = 0
        self.write_config()

    # -- config

    def write_config(self):
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(config_text(self.server, self.domains, self.extra))

    def set_port(self, port=None):
        """Moves the listener to a new port (rewrites the config)."""
        self.port = port or free_port()
        self.server["listen"] = f"127.0.0.1:{self.port}"
        self.write_config()

    # -- life cycle

    def start(self, timeout=20):
        """Starts mxd and waits until it answers with a 220 banner."""
        assert self.proc is None, "mxd already running"
        self._starts += 1
        self.log_path = os.path.join(self.tmpdir, f"{self.name}.{self._starts}.stderr")
        self._log = open(self.log_path, "wb")
        # MXD_WRAPPER: a command to run mxd under, e.g. "valgrind
        # --error-exitcode=99 --leak-check=full" (tests/run.sh's memcheck stage).
        wrapper = shlex.split(os.environ.get("MXD_WRAPPER", ""))
        if wrapper:
            timeout *= 5
        self.proc = subprocess.Popen(
            wrapper + [mxd_path(), "-c", self.conf_path],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            cwd=self.tmpdir,
            env={**os.environ, **(self.env or {})},
        )
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._reap()
                raise AssertionError(
                    f"mxd exited with status {rc} during start-up; stderr:\n{self.stderr()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    if self.listen_is_proxy():
                        s.sendall(proxy_header(None))
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    if data.startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        try:
                            s.recv(4096)
                        except OSError:
                            pass
                        if self.db_path in _PG_DBS:
                            self._check_pg_schema(deadline)
                        return self
                    last_err = f"unexpected greeting {data!r}"
            except OSError as e:
                last_err = repr(e)
            time.sleep(0.05)
        self.kill()
        raise AssertionError(
            f"mxd did not accept on 127.0.0.1:{self.port} within {timeout}s ({last_err}); "
            f"stderr:\n{self.stderr()}"
        )

    def _check_pg_schema(self, deadline):
        """On PostgreSQL: mxd made its schema there at start (the queue is
        not somewhere else)."""
        dbname = _PG_DBS[self.db_path]
        while True:
            rows = shared_pg().query("SELECT to_regclass('messages') IS NOT NULL AND "
                                     "to_regclass('message_rcpts') IS NOT NULL", db=dbname)
            if rows[0][0]:
                return
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"mxd answers with store = postgresql but made no schema "
                                     f"(messages, message_rcpts) in PostgreSQL database "
                                     f"{dbname}; stderr:\n{self.stderr()}")
            time.sleep(0.1)

    def listen_is_proxy(self, port=None):
        """Whether the listen entry for 127.0.0.1:port (default self.port) is
        marked proxy."""
        want = f"127.0.0.1:{port or self.port}"
        for item in (self.server.get("listen") or "").split(","):
            words = item.split()
            if words and words[0] == want:
                return words[1:] == ["proxy"]
        return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def signal(self, sig):
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Waits for exit; returns the status or None on timeout (still running)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reap()
        return rc

    def stop(self, timeout=20, check=True):
        """SIGTERM, wait; on timeout SIGKILL. With check, a non-zero exit status,
        a timeout or a sanitizer report in stderr raises AssertionError."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(timeout=30)
            timed_out = True
        self._reap()
        if check:
            if timed_out:
                raise AssertionError(
                    f"mxd did not exit within {timeout}s of SIGTERM; stderr:\n{self.stderr()}"
                )
            if rc != 0:
                raise AssertionError(
                    f"mxd exited with status {rc} after SIGTERM; stderr:\n{self.stderr()}"
                )
            self.check_sanitizers()
        return rc

    def rss_kib(self):
        """Resident set size of the running mxd, in KiB."""
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/PID/status")

    def kill(self):
        """SIGKILL (no clean-up chance for mxd) and reap."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(timeout=30)
        self._reap()
        return rc

    def _reap(self):
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    # -- logs

    def stderr(self, limit=20000):
        """The current (latest) run's stderr, possibly truncated at the front."""
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8", "replace")
        if len(text) > limit:
            text = "[...]\n" + text[-limit:]
        return text

    def all_stderr(self):
        out = []
        for i in range(1, self._starts + 1):
            p = os.path.join(self.tmpdir, f"{self.name}.{i}.stderr")
            if os.path.exists(p):
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
        return "\n".join(out)

    def check_sanitizers(self):
        text = self.all_stderr()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                idx = text.index(marker)
                raise AssertionError(
                    f"sanitizer report in mxd stderr:\n{text[max(0, idx - 2000) : idx + 6000]}"
                )

    # -- clients and database

    def client(self, timeout=10, banner=True, host="127.0.0.1", port=None, proxy=None,
               proxy_version=2, source=None):
        """An SmtpClient, past the 220 banner when banner is true. proxy: a
        client address to claim in a PROXY header (see SmtpClient)."""
        c = SmtpClient(port or self.port, host=host, timeout=timeout, proxy=proxy,
                       proxy_version=proxy_version, source=source)
        if banner:
            r = c.reply()
            if r.code != 220:
                c.close()
                raise AssertionError(f"expected 220 banner, got {r}")
            c.banner = r
        return c

    def db(self):
        return db_connect(self.db_path)

    @property
    def spool_dir(self):
        """Where mxd spools large bodies: spool/ next to the database."""
        return os.path.join(os.path.dirname(self.db_path), "spool")

    def spool_files(self):
        try:
            return sorted(os.listdir(self.spool_dir))
        except FileNotFoundError:
            return []

    def mxctl(self, *args, timeout=30):
        return subprocess.run(
            [mxctl_path(), "-c", self.conf_path, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            cwd=self.tmpdir,
        )


# --------------------------------------------------------------------------
# Raw SMTP client


class Reply:
    """One (possibly multi-line) SMTP reply."""

    ENH = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")

    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines  # text after "NNN-" / "NNN " on each line
        self.raw = raw

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enh(self):
        m = self.ENH.match(self.lines[0]) if self.lines else None
        return m.group(0) if m else None

    @property
    def qid(self):
        m = re.search(r"queued as (\S+)", self.lines[-1])
        return m.group(1) if m else None

    def __repr__(self):
        return f"Reply({self.raw!r})"

    def __str__(self):
        return self.raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", " | ")


class ConnectionClosed(Exception):
    pass


class SmtpClient:
    """A byte-exact SMTP client: send whatever bytes, parse replies strictly
    (CRLF line ends, consistent codes on continuation lines)."""

    def __init__(self, port, host="127.0.0.1", timeout=10, proxy=None, proxy_version=2,
                 source=None):
        """proxy: first send a PROXY header (version proxy_version) claiming
        this client address, to a listener marked proxy ("local": a v1
        UNKNOWN or v2 LOCAL header). source: the local address to connect
        from (any 127.0.0.0/8 address works)."""
        self.timeout = timeout
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.banner = None
        if proxy is not None:
            self.sock.sendall(proxy_header(None if proxy == "local" else proxy, proxy_version))

    def fileno(self):
        return self.sock.fileno()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _line(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no complete reply line; buffered {self.buf!r}")
            if self.eof or not self._fill(left):
                raise ConnectionClosed(f"connection closed; buffered {self.buf!r}")
        idx = self.buf.index(b"\n")
        line, self.buf = self.buf[: idx + 1], self.buf[idx + 1 :]
        if not line.endswith(b"\r\n"):
            raise AssertionError(f"reply line not terminated by CRLF: {line!r}")
        return line

    def reply(self, timeout=None):
        """Reads one complete reply. Raises ConnectionClosed on EOF and
        socket.timeout when none arrives in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        raw = b""
        lines = []
        code = None
        while True:
            line = self._line(deadline)
            raw += line
            m = re.match(rb"^([2-5][0-9][0-9])([ -]?)(.*)\r\n$", line, re.S)
            if not m:
                raise AssertionError(f"malformed reply line {line!r} (reply so far {raw!r})")
            c = int(m.group(1))
            if code is None:
                code = c
            elif c != code:
                raise AssertionError(f"reply code changes inside a multi-line reply: {raw!r}")
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return Reply(code, lines, raw)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + CRLF)
        return self.reply(timeout)

    def ehlo(self, name="client.test"):
        r = self.cmd(f"EHLO {name}")
        if r.code != 250:
            raise AssertionError(f"EHLO refused: {r}")
        return r

    def wait_closed(self, timeout=5):
        """True when the server closes the connection within timeout; any
        bytes that arrive meanwhile are kept in self.buf."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._fill(left)
            except socket.timeout:
                return False
            except OSError:
                self.eof = True
        return True

    def no_more_data(self, wait=0.5):
        """True when nothing (not even EOF) arrives within wait seconds."""
        if self.buf:
            return False
        try:
            self.sock.settimeout(wait)
            chunk = self.sock.recv(65536, socket.MSG_PEEK)
        except socket.timeout:
            return True
        except OSError:
            return False
        return False  # data or EOF arrived

    def send_message(self, mail_from, rcpts, content, mail_params="", ehlo=True):
        """Runs one non-pipelined DATA transaction; content is the raw data
        (already dot-stuffed, CRLF), without the final ".\r\n". Returns
        the final Reply; raises AssertionError at the first refusal."""
        if ehlo:
            self.ehlo()
        r = self.cmd(f"MAIL FROM:<{mail_from}>{(' ' + mail_params) if mail_params else ''}")
        if r.code != 250:
            raise AssertionError(f"MAIL refused: {r}")
        for rcpt in rcpts:
            r = self.cmd(f"RCPT TO:<{rcpt}>")
            if r.code != 250:
                raise AssertionError(f"RCPT <{rcpt}> refused: {r}")
        r = self.cmd("DATA")
        if r.code != 354:
            raise AssertionError(f"DATA refused: {r}")
        self.send(content + b".\r\n")
        return self.reply()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dot_stuff(content):
    """RFC 5321 4.5.2 transparency for CRLF content ending in CRLF (or empty)."""
    assert content == b"" or content.endswith(CRLF)
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\r\n.", b"\r\n..")


# --------------------------------------------------------------------------
# Database


_PG = None  # the test process's shared PostgreSQL (pgcluster.PgCluster)
_PG_DBS = {}  # database path -> PostgreSQL database name


def shared_pg():
    """The private PostgreSQL of this test process, started on first use and
    stopped (by PID) at exit. Its data directory sits under the fsfault
    shim (when $FSFAULT_SHIM is set): writes fail with ENOSPC while
    store_fault_flag() exists."""
    global _PG
    if _PG is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import pgcluster  # noqa: PLC0415

        pg = pgcluster.PgCluster(standby=False)
        if os.environ.get("FSFAULT_SHIM"):
            # A plain build of the shim: the one meson built carries the
            # sanitizers of an ASan build, which a plain postgres cannot load.
            shim = os.path.join(pg.tmpdir, "fsfault.so")
            src = os.path.join(source_root(), "tests", "shim", "fsfault.c")
            p = subprocess.run([require_tool("gcc", ["cc"]), "-shared", "-fPIC", "-O2", "-o",
                                shim, src, "-ldl"], capture_output=True, timeout=120)
            if p.returncode != 0:
                raise AssertionError(f"cannot build {src} for PostgreSQL: {p.stderr.decode()}")
            os.chmod(shim, 0o755)
            pg.server_env = {"LD_PRELOAD": shim,
                             "FSFAULT_DIR": pg.primary.datadir + "/pg_wal/",
                             "FSFAULT_ENOSPC": os.path.join(pg.tmpdir, "disk-full")}
        atexit.register(pg.close)
        pg.start()
        _PG = pg
    return _PG


def pg_database(path):
    """The conninfo of the PostgreSQL database that stands for the database
    file path (created, empty, owned by the role mxd, on first use)."""
    pg = shared_pg()
    if path not in _PG_DBS:
        _PG_DBS[path] = pg.create_database()
    return pg.conninfo(_PG_DBS[path])


def store_fault_flag(sqlite_flag):
    """The flag file that makes the store's disk full (fsfault enospc=):
    sqlite_flag on SQLite; on PostgreSQL the shared server's, which covers
    its WAL (a failed WAL write is a PANIC: the server goes down)."""
    if store_backend() != "postgresql":
        return sqlite_flag
    pg = shared_pg()
    if not (pg.server_env or {}).get("FSFAULT_ENOSPC"):
        raise AssertionError("$FSFAULT_SHIM is not set: no disk-full shim under PostgreSQL")
    return pg.server_env["FSFAULT_ENOSPC"]


def store_space_back(mxd=None, timeout=60):
    """After the store's disk had been full: on PostgreSQL, a server that
    went down on it (a failed WAL write is a PANIC) is started again, as an
    operator or Patroni would, and then, with mxd, probe messages are sent
    until one is stored (mxd reconnects by itself, within a second or so;
    the probes' Subject is "store probe"). Returns how many probes were
    refused (0 on SQLite, where there is nothing to do)."""
    if store_backend() != "postgresql" or _PG is None:
        return 0
    node = _PG.primary
    deadline = time.monotonic() + timeout
    while True:
        if not node.running():
            node.start(timeout=max(5, deadline - time.monotonic()))
            break
        try:
            node.query("SELECT 1", timeout=2)
            break
        except Exception:  # noqa: BLE001 - restarting after its crash
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL not back within {timeout}s:\n{node.log()}")
            time.sleep(0.2)
    if mxd is None:
        return 0
    rcpt = f"probe@{next(iter(mxd.domains))}"
    last = None
    refused = 0
    while time.monotonic() < deadline:
        try:
            with mxd.client(timeout=15) as c:
                last = c.send_message("probe@client.test", [rcpt],
                                      b"Subject: store probe\r\n\r\nprobe\r\n")
                c.cmd("QUIT")
            if last.code == 250:
                return refused
            refused += 1
        except (OSError, ConnectionClosed, AssertionError) as e:
            last = e
            refused += 1
        time.sleep(0.2)
    raise AssertionError(f"mxd did not store again within {timeout}s of PostgreSQL's return "
                         f"(last: {last}); stderr:\n{mxd.stderr()}")


def _pg_sql(sql, args):
    """sqlite3's ? placeholders -> psycopg2's %s (outside quotes)."""
    if not args:
        return sql
    out = []
    quote = None
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class PgCursor:
    def __init__(self, cur):
        self.cur = cur

    def fetchone(self):
        return self.cur.fetchone() if self.cur.description else None

    def fetchall(self):
        return self.cur.fetchall() if self.cur.description else []

    def __iter__(self):
        return iter(self.fetchall())


class PgDb:
    """A read-only PostgreSQL connection with sqlite3's calling shape:
    execute(sql, args) -> cursor (fetchone, fetchall, iteration), rows by
    column name and by index (dict(row) and tuple(row) work), ? or %s
    placeholders. bytea columns come back as memoryview."""

    backend = "postgresql"

    def __init__(self, dbname):
        import psycopg2.extras  # noqa: PLC0415

        self.dbname = dbname
        self._extras = psycopg2.extras
        self.con = shared_pg().connect(dbname, timeout=15)
        self.con.autocommit = True
        with self.con.cursor() as cur:
            # On PostgreSQL mxd keeps a body in chunks, message_body(
            # message_id, seq, data): a temporary view (searched before the
            # table) gives the suites SQLite's messages.body.
            cur.execute("SELECT to_regclass('public.message_body') IS NOT NULL AND NOT EXISTS "
                        "(SELECT 1 FROM information_schema.columns WHERE table_schema = "
                        "'public' AND table_name = 'messages' AND column_name = 'body')")
            if cur.fetchone()[0]:
                cur.execute("CREATE TEMP VIEW messages AS SELECT m.*, (SELECT "
                            "coalesce(string_agg(b.data, ''::bytea ORDER BY b.seq), ''::bytea) "
                            "FROM public.message_body b WHERE b.message_id = m.id) AS body "
                            "FROM public.messages m")
        self.con.set_session(readonly=True, autocommit=True)

    def execute(self, sql, args=()):
        cur = self.con.cursor(cursor_factory=self._extras.DictCursor)
        cur.execute(_pg_sql(sql, args), tuple(args) if args else None)
        return PgCursor(cur)

    def close(self):
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def db_connect(path):
    """A read-only connection (mxd may be running and writing)."""
    if path in _PG_DBS:
        return PgDb(_PG_DBS[path])
    if not os.path.exists(path):
        raise AssertionError(f"database {path} does not exist")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=15)
    con.row_factory = sqlite3.Row
    return con


def _with_db(path, fn):
    con = db_connect(path)
    try:
        return fn(con)
    finally:
        con.close()


def bodies_dir(path):
    """Where a large body's file lives (schema 013): bodies/ beside the database."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), "bodies")


def full_body(path, row):
    """The stored body of a messages row (with body and body_file): the
    octets of messages.body, then those of its body file if it has one."""
    body = bytes(row["body"])
    name = row["body_file"] if "body_file" in row.keys() else None
    if name is not None:
        with open(os.path.join(bodies_dir(path), name), "rb") as f:
            body += f.read()
    return body


def message_by_qid(path, qid):
    """{'row': messages row as dict, 'rcpts': [rows as dicts]} or None. The
    row's body is the whole stored body (a body file included)."""

    def q(con):
        row = con.execute("SELECT * FROM messages WHERE qid = ?", (qid,)).fetchone()
        if row is None:
            return None
        rcpts = con.execute(
            "SELECT * FROM message_rcpts WHERE message_id = ? ORDER BY id", (row["id"],)
        ).fetchall()
        d = dict(row)
        d["body"] = full_body(path, row)
        return {"row": d, "rcpts": [dict(r) for r in rcpts]}

    return _with_db(path, q)


def messages_containing(path, marker):
    """qids of stored messages whose body contains marker (bytes)."""
    if isinstance(marker, str):
        marker = marker.encode("utf-8")
    if path in _PG_DBS:
        return _with_db(path, lambda con: [
            r[0] for r in con.execute("SELECT qid FROM messages WHERE position(?::bytea in body)"
                                      " > 0 ORDER BY id", (marker,))])
    return _with_db(
        path,
        lambda con: [
            r[0]
            for r in con.execute(
                "SELECT qid FROM messages WHERE instr(body, ?) > 0", (sqlite3.Binary(marker),)
            )
        ] + [
            r["qid"]
            for r in con.execute("SELECT qid, body, body_file FROM messages "
                                 "WHERE body_file IS NOT NULL AND instr(body, ?) = 0",
                                 (sqlite3.Binary(marker),))
            if marker in full_body(path, r)
        ],
    )


def message_count(path, where="1", args=()):
    if where == "1" and path in _PG_DBS:
        where = "true"
    return _with_db(
        path, lambda con: con.execute(f"SELECT count(*) FROM messages WHERE {where}", args).fetchone()[0]
    )


def integrity_check(path):
    """["ok"] when the store is sound. PostgreSQL: every btree index passes
    amcheck's bt_index_check and no recipient row lacks its message."""
    if path in _PG_DBS:
        return _pg_integrity(_PG_DBS[path])
    return _with_db(path, lambda con: [r[0] for r in con.execute("PRAGMA integrity_check")])


def _pg_integrity(dbname):
    pg = shared_pg()
    problems = []
    pg.query("CREATE EXTENSION IF NOT EXISTS amcheck", db=dbname)
    rows = pg.query("SELECT c.oid::regclass::text, bt_index_check(c.oid, true) IS NULL "
                    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON "
                    "n.oid = c.relnamespace WHERE a.amname = 'btree' AND "
                    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')",
                    db=dbname, timeout=60)
    if not rows:
        problems.append("no indexes: no mxd schema in this database?")
    orphans = pg.query("SELECT count(*) FROM message_rcpts r LEFT JOIN messages m ON "
                       "m.id = r.message_id WHERE m.id IS NULL", db=dbname)[0][0]
    if orphans:
        problems.append(f"{orphans} recipient rows without their message")
    return problems or ["ok"]


def split_received(body):
    """Splits a stored body into (Received header incl. its folded
    continuation lines, rest). Raises AssertionError when the body does not
    start with a well-formed Received header."""
    if isinstance(body, memoryview):
        body = bytes(body)
    if not body.startswith(b"Received:"):
        raise AssertionError(f"stored body does not start with 'Received:': {body[:200]!r}")
    pos = 0
    while True:
        end = body.find(b"\n", pos)
        if end < 0:
            raise AssertionError(f"unterminated Received header: {body[:500]!r}")
        if body[end - 1 : end] != b"\r":
            raise AssertionError(f"Received header line without CRLF: {body[pos:end + 1]!r}")
        pos = end + 1
        if body[pos : pos + 1] not in (b" ", b"\t"):
            break
    return body[:pos], body[pos:]


def unfold(header):
    return re.sub(rb"\r\n(?=[ \t])", b"", header).rstrip(b"\r\n").decode("utf-8", "replace")


def check_received(header, qid, with_proto="ESMTP", hostname=HOSTNAME):
    """Asserts the Received header names us, the protocol and the queue id.
    Returns the unfolded header text."""
    text = unfold(header)
    problems = []
    if not re.search(rf"\bby {re.escape(hostname)}\b", text):
        problems.append(f"no 'by {hostname}'")
    protos = with_proto if isinstance(with_proto, (tuple, list)) else (with_proto,)
    alt = "|".join(re.escape(p) for p in protos)
    if not re.search(rf"\bwith (?:{alt})(?=[\s;]|$)", text):
        problems.append(f"no 'with {' or '.join(protos)}'")
    if not re.search(rf"\bid <?{re.escape(qid)}>?(?=[\s;]|$)", text):
        problems.append(f"no 'id {qid}'")
    if problems:
        raise AssertionError(f"Received header {text!r}: " + ", ".join(problems))
    return text


def received_date(text):
    """The date-time after the last ';' of an unfolded Received header
    (RFC 5321 4.4), parsed; raises AssertionError if missing or invalid."""
    if ";" not in text:
        raise AssertionError(f"Received header has no '; date-time': {text!r}")
    stamp = text.rsplit(";", 1)[1].strip()
    try:
        return email.utils.parsedate_to_datetime(stamp)
    except (TypeError, ValueError) as e:
        raise AssertionError(f"Received date {stamp!r} does not parse: {e}")


def stored_content(path, qid, with_proto="ESMTP"):
    """(message dict, content after the Received header) for qid."""
    msg = message_by_qid(path, qid)
    if msg is None:
        raise AssertionError(f"qid {qid} not in the database")
    hdr, rest = split_received(msg["row"]["body"])
    check_received(hdr, qid, with_proto)
    return msg, rest


# --------------------------------------------------------------------------
# External clients


def swaks(port, *args, timeout=60):
    """Runs swaks against mxd; returns the CompletedProcess (text output)."""
    exe = require_tool("swaks")
    return subprocess.run(
        [exe, "--server", f"127.0.0.1:{port}", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )


def swaks_qids(output):
    if isinstance(output, bytes):
        output = output.decode("utf-8", "replace")
    return re.findall(r"<-\s+250[ -].*?queued as (\S+)", output)


# --------------------------------------------------------------------------
# Test case base


def make_tmpdir(add_cleanup, prefix):
    """A fresh temporary directory removed by add_cleanup (a unittest
    addCleanup/addClassCleanup), or kept and named when MXD_KEEP_TMP=1."""
    tmpdir = tempfile.mkdtemp(prefix=f"mxdtest-{prefix}-")
    if os.environ.get("MXD_KEEP_TMP"):
        print(f"[mxdtest] keeping {tmpdir}", file=sys.stderr)
    else:
        add_cleanup(shutil.rmtree, tmpdir, True)
    return tmpdir


class ClassMxd:
    """For a test class that shares one mxd (cls.mxd): start_mxd starts it
    with a class clean-up that stops it and checks for a clean exit (or the
    sanitizers' reports when it died), and every test fails at once when it
    died earlier. Mixed in before unittest.TestCase."""

    @classmethod
    def start_mxd(cls, mxd):
        cls.mxd = mxd
        cls.addClassCleanup(cls._stop_mxd)
        mxd.start()

    @classmethod
    def _stop_mxd(cls):
        if cls.mxd.running():
            cls.mxd.stop(check=True)
        else:
            cls.mxd.check_sanitizers()

    def setUp(self):
        if not self.mxd.running():
            self.fail(f"mxd is not running (died earlier?); stderr:\n{self.mxd.stderr()}")

    def token(self):
        """A unique token: the test's name and 12 random hex digits."""
        return f"{self.id().rsplit('.', 1)[-1]}-{os.urandom(6).hex()}"


class MxdTestCase(ClassMxd, unittest.TestCase):
    """One mxd per test class, started in setUpClass, stopped (and checked
    for a clean exit) in the class clean-up. Subclasses set SERVER / DOMAINS."""

    SERVER = {}
    DOMAINS = None
    EXTRA = ""
    ENV = None
    CONTROL = False  # True: [server] control_socket = TMPDIR/control.sock

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.start_mxd(Mxd(cls.tmpdir, server=dict(cls.SERVER), domains=cls.DOMAINS,
                          extra=cls.EXTRA, env=cls.ENV, control=cls.CONTROL))

    def client(self, timeout=10, banner=True, **kw):
        """mxd.client (port, proxy, proxy_version, source...), closed at the
        end of the test."""
        c = self.mxd.client(timeout=timeout, banner=banner, **kw)
        self.addCleanup(c.close)
        return c

    def marker(self):
        """A unique token to find this test's messages in the database."""
        return f"mxdtest-{self.token()}"

    def assertReply(self, reply, code, enh=None, msg=None):
        where = f" ({msg})" if msg else ""
        self.assertEqual(reply.code, code, f"expected {code} {enh or ''}, got: {reply}{where}")
        if enh is not None:
            self.assertEqual(reply.enh, enh, f"expected {code} {enh}, got: {reply}{where}")

    def assertStored(self, qid, content, with_proto="ESMTP"):
        """The message qid is stored and its body is Received + content."""
        self.assertIsNotNone(qid, "no queue id in the 250 reply")
        msg, rest = stored_content(self.mxd.db_path, qid, with_proto)
        if rest != content:
            self.fail(
                f"stored content of {qid} differs: stored {len(rest)} octets, sent {len(content)};"
                f" first difference at {first_diff(rest, content)}:"
                f" stored {rest[:300]!r}... sent {content[:300]!r}..."
            )
        return msg

    def assertSpoolEmpty(self, timeout=3):
        """No spool file outlives its transaction (committed or refused)."""
        deadline = time.monotonic() + timeout
        while self.mxd.spool_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.mxd.spool_files(), [], f"files left in {self.mxd.spool_dir}")

    def assertNothingStored(self, marker):
        qids = messages_containing(self.mxd.db_path, marker)
        self.assertEqual(qids, [], f"messages containing {marker!r} were stored")


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main():
    unittest.main(verbosity=2)
