"""dovecot: a private Dovecot LMTP server for the mxd integration tests.

    with Dovecot(users=None) as dov:          # static userdb: every user exists
        dov.port                              # LMTP on 127.0.0.1:dov.port
        dov.unix_path                         # and on this unix socket
        dov.files("alice@example.test")       # delivered maildir files

Each instance lives in its own temporary directory: its own dovecot.conf
(unique instance_name, base_dir and state_dir under the directory,
protocols = lmtp, ssl = no), its own log file and its own maildir root
(DIR/mail/%d/%n/Maildir, owned by Debian's `mail` user, uid 8, which
Dovecot switches to for every delivery). Dovecot runs in the foreground
(`dovecot -F -c FILE`), is waited for until its LMTP port accepts, and is
stopped by its PID (SIGTERM, wait, SIGKILL). stop() and start() may be
called again on the same instance: the port, the socket path and the
maildirs stay the same, which is what an outage test needs.

users=None gives a static userdb with allow_all_users=yes (every address is
a mailbox); users=["alice@example.test", ...] gives a passwd-file userdb
with exactly those users, so Dovecot refuses anyone else at RCPT with
"550 5.1.1 <x@y> User doesn't exist: x@y".

What Dovecot 2.3.19 adds to a delivered message, at the top, in this order
(checked by delivering to it directly: python3 dovecot.py runs that check):
    Return-Path: <sender>                 always (<> for the null sender)
    Delivered-To: rcpt@domain             only when the LMTP transaction had
                                          a single recipient
    Received: from HELO ([IP])            always (lmtp_add_received_header
        by HOSTNAME with LMTP             defaults to yes); "for <rcpt>" only
        id ID                             with a single recipient. ID is the
        (envelope-from <sender>)          transaction's: the same in every
        for <rcpt>; DATE                  copy of one transaction, SESSION:T2
                                          for a session's second one.
Files are stored with LF line ends (crlf() restores CRLF). Unknown users
(passwd-file) are refused at RCPT: "550 5.1.1 <x@d> User doesn't exist:
x@d"; a user over quota (quota=True) gets "552 5.2.2 <x@d> Quota exceeded
(mailbox for user is full)" after DATA. smtplib.LMTP is not usable for
transactions with several recipients (it reads one reply after DATA):
lmtp_send() here does it properly.
"""

import email.utils
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import mxdtest

MAIL_UID = 8  # Debian's `mail` user and group
MAIL_GID = 8
HOSTNAME = "mailbox.test.invalid"
POSTMASTER = "postmaster@example.test"


def _tool(name, candidates=()):
    for cand in list(candidates) + [name]:
        if os.path.isabs(cand) and os.access(cand, os.X_OK):
            return cand
        found = shutil.which(cand)
        if found:
            return found
    raise AssertionError(f"required tool {name!r} is not installed (run tests/deps.sh: "
                         "dovecot-core, dovecot-lmtpd)")


def dovecot_path():
    return _tool("dovecot", ["/usr/sbin/dovecot"])


def free_port(host="127.0.0.1"):
    return mxdtest.free_port(host)


def proc_cpu(pid, children=False):
    """CPU seconds (utime + stime, plus the reaped children's with children)
    of a process from /proc/PID/stat; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    fields = data[data.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are 14-17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid):
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def _split_addr(addr):
    local, _, domain = addr.rpartition("@")
    if not local or not domain:
        raise ValueError(f"not an address: {addr!r}")
    return local, domain.lower()


class Dovecot:
    """One private Dovecot LMTP server. Use as a context manager (started on
    entry, stopped and its directory removed on exit) or call start()/stop()
    and close() yourself."""

    def __init__(self, users=None, port=None, unix=True, tmpdir=None, name="dovecot",
                 extra_conf="", hostname=HOSTNAME, mail_fsync=None, quota=False,
                 mailbox_spread=None):
        # users: None (everyone exists), a list of addresses, or a dict
        # {address: extra userdb fields} such as "userdb_quota_rule=*:storage=1"
        # (quota rules need quota=True).
        if users is None:
            self.users = None
        elif isinstance(users, dict):
            self.users = {u.lower(): (x or "") for u, x in users.items()}
        else:
            self.users = {u.lower(): "" for u in users}
        self.quota = quota
        # mailbox_spread=N: every recipient's mail goes to one of N maildirs
        # chosen by a hash of its local part (benchmarks: many recipients,
        # a realistic number of mailboxes)
        self.mailbox_spread = mailbox_spread
        self.name = name
        self.hostname = hostname
        self.extra_conf = extra_conf
        self.mail_fsync = mail_fsync
        self._own_tmp = tmpdir is None
        if tmpdir is None:
            tmpdir = tempfile.mkdtemp(prefix="mxdtest-dovecot-")
            if os.environ.get("MXD_KEEP_TMP"):
                print(f"[dovecot] keeping {tmpdir}", file=sys.stderr)
        self.root = os.path.join(tmpdir, name)
        os.makedirs(self.root, exist_ok=True)
        # Dovecot's unprivileged processes (auth as `dovecot`, lmtp as `mail`
        # after the user switch) must be able to traverse to their files.
        for d in {tmpdir, self.root}:
            os.chmod(d, 0o755)
        self.tmpdir = tmpdir
        self.base_dir = os.path.join(self.root, "run")
        self.state_dir = os.path.join(self.root, "state")
        self.mail_root = os.path.join(self.root, "mail")
        self.conf_path = os.path.join(self.root, "dovecot.conf")
        self.log_path = os.path.join(self.root, "dovecot.log")
        self.stderr_path = os.path.join(self.root, "dovecot.stderr")
        self.passwd_path = os.path.join(self.root, "users.passwd")
        self.unix_path = os.path.join(self.base_dir, "lmtp-test") if unix else None
        self.port = port or free_port()
        self.instance = f"mxdtest-{os.getpid()}-{os.urandom(4).hex()}"
        self.proc = None
        self._stderr = None
        for d in (self.state_dir, self.mail_root):
            os.makedirs(d, exist_ok=True)
        os.makedirs(self.base_dir, mode=0o755, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        os.chown(self.mail_root, MAIL_UID, MAIL_GID)
        os.chmod(self.mail_root, 0o755)
        self.write_config()

    # -- configuration

    @property
    def lmtp_tcp(self):
        """The mxd `lmtp =` value for the TCP listener."""
        return f"127.0.0.1:{self.port}"

    @property
    def lmtp_unix(self):
        """The mxd `lmtp =` value for the unix socket listener."""
        return f"unix:{self.unix_path}"

    def write_config(self):
        home = os.path.join(self.mail_root, "%d", "%n")
        if self.users is None:
            userdb = (
                "userdb {\n"
                "  driver = static\n"
                f"  args = uid={MAIL_UID} gid={MAIL_GID} home={home} allow_all_users=yes\n"
                "}\n"
            )
        else:
            lines = []
            for u, x in self.users.items():
                local, domain = _split_addr(u)
                h = os.path.join(self.mail_root, domain, local)
                lines.append(f"{u}::{MAIL_UID}:{MAIL_GID}::{h}::{x}")
            with open(self.passwd_path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            os.chmod(self.passwd_path, 0o644)
            userdb = (
                "userdb {\n"
                "  driver = passwd-file\n"
                f"  args = username_format=%Lu {self.passwd_path}\n"
                "}\n"
            )
        unix = ""
        if self.unix_path:
            unix = (
                f"  unix_listener {os.path.relpath(self.unix_path, self.base_dir)} {{\n"
                "    mode = 0666\n"
                "  }\n"
            )
        quota = ""
        if self.quota:
            # A user with userdb_quota_rule=*:storage=1 (1 KiB) gets
            # "552 5.2.2 ... Quota exceeded" after DATA (quota_full_tempfail
            # is no and lmtp_rcpt_check_quota is no: RCPT still says 250).
            quota = (
                "mail_plugins = $mail_plugins quota\n"
                "plugin {\n"
                "  quota = maildir:User quota\n"
                "}\n"
            )
        text = f"""# written by tests/integration/dovecot.py
instance_name = {self.instance}
base_dir = {self.base_dir}
state_dir = {self.state_dir}
protocols = lmtp
listen = 127.0.0.1
ssl = no
log_path = {self.log_path}
info_log_path = {self.log_path}
hostname = {self.hostname}
postmaster_address = {POSTMASTER}
mail_location = maildir:{self.mail_root}/%d/{f"%{self.mailbox_spread}Nn" if self.mailbox_spread else "%n"}/Maildir
mail_uid = {MAIL_UID}
mail_gid = {MAIL_GID}
first_valid_uid = {MAIL_UID}
last_valid_uid = {MAIL_UID}
first_valid_gid = {MAIL_GID}
last_valid_gid = {MAIL_GID}
{"mail_fsync = " + self.mail_fsync if self.mail_fsync else ""}
auth_mechanisms = plain
disable_plaintext_auth = no
lmtp_user_concurrency_limit = 0
passdb {{
  driver = static
  args = nopassword=y
}}
{userdb}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
{unix}}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{quota}{self.extra_conf}
"""
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(text)

    # -- life cycle

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20):
        """Starts Dovecot and waits until LMTP answers 220 on the TCP port
        (and the unix socket accepts, when configured)."""
        assert self.proc is None, "dovecot already running"
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [dovecot_path(), "-F", "-c", self.conf_path],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            cwd=self.root,
        )
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._reap()
                raise AssertionError(f"dovecot exited with status {rc} during start-up:\n"
                                     f"{self.logs()}")
            try:
                self._probe(socket.AF_INET, ("127.0.0.1", self.port))
                if self.unix_path:
                    self._probe(socket.AF_UNIX, self.unix_path)
                return self
            except (OSError, AssertionError) as e:
                last = e
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"dovecot LMTP did not answer within {timeout}s ({last!r}):\n"
                             f"{self.logs()}")

    @staticmethod
    def _probe(family, addr):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(addr)
            data = b""
            while b"\n" not in data:
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
            if not data.startswith(b"220"):
                raise AssertionError(f"unexpected LMTP greeting {data!r}")
            s.sendall(b"QUIT\r\n")
            try:
                s.recv(1024)
            except OSError:
                pass

    def stop(self, timeout=15):
        """SIGTERM the master (it stops its children), wait, SIGKILL on timeout.
        Returns the exit status (None when it was not running)."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(timeout=30)
        self._reap()
        # The master waits for its children, but a child that outlived it
        # (it should not) would keep the listener: wait for the port to close.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                break
            time.sleep(0.05)
        return rc

    def _reap(self):
        self.proc = None
        if self._stderr:
            self._stderr.close()
            self._stderr = None

    def close(self):
        self.stop()
        if self._own_tmp and not os.environ.get("MXD_KEEP_TMP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    # -- CPU accounting

    def cpu_seconds(self):
        """CPU time (user + system) of the master, its live children and its
        reaped children so far: all Dovecot processes of this instance."""
        if not self.running():
            return 0.0
        total = proc_cpu(self.proc.pid, children=True)
        for pid in _children(self.proc.pid):
            total += proc_cpu(pid, children=True)
        return total

    # -- logs

    def logs(self, limit=20000):
        out = []
        for p in (self.stderr_path, self.log_path):
            if os.path.exists(p):
                with open(p, "rb") as f:
                    t = f.read().decode("utf-8", "replace")
                if len(t) > limit:
                    t = "[...]\n" + t[-limit:]
                out.append(f"--- {p}\n{t}")
        return "\n".join(out)

    def log_text(self):
        if not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    # -- maildirs

    def maildir(self, user):
        local, domain = _split_addr(user)
        return os.path.join(self.mail_root, domain, local, "Maildir")

    def files(self, user):
        """Paths of the messages in user's INBOX (new/ and cur/), sorted."""
        md = self.maildir(user)
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(md, sub)
            try:
                out.extend(os.path.join(d, n) for n in os.listdir(d))
            except FileNotFoundError:
                pass
        return sorted(out)

    def all_files(self):
        """{user: [paths]} for every maildir under the mail root."""
        out = {}
        try:
            domains = os.listdir(self.mail_root)
        except FileNotFoundError:
            return out
        for domain in domains:
            ddir = os.path.join(self.mail_root, domain)
            if not os.path.isdir(ddir):
                continue
            for local in os.listdir(ddir):
                user = f"{local}@{domain}"
                files = self.files(user)
                if files:
                    out[user] = files
        return out

    def count(self, user=None):
        """Number of delivered messages for user, or for everyone."""
        if user is not None:
            return len(self.files(user))
        n = 0
        for sub in self._new_cur_dirs():
            try:
                n += len(os.listdir(sub))
            except FileNotFoundError:
                pass
        return n

    def _new_cur_dirs(self):
        try:
            domains = os.listdir(self.mail_root)
        except FileNotFoundError:
            return []
        dirs = []
        for domain in domains:
            ddir = os.path.join(self.mail_root, domain)
            try:
                locals_ = os.listdir(ddir)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for local in locals_:
                for sub in ("new", "cur"):
                    dirs.append(os.path.join(ddir, local, "Maildir", sub))
        return dirs

    def messages(self, user):
        """The raw bytes of every message in user's INBOX."""
        out = []
        for p in self.files(user):
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def wait_count(self, n, user=None, timeout=30, poll=0.05):
        """Waits until at least n messages are there; returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.count(user)
            if c >= n or time.monotonic() >= deadline:
                return c
            time.sleep(poll)


# --------------------------------------------------------------------------
# Message helpers


def crlf(data):
    """Dovecot stores maildir files with LF line ends; SMTP content is CRLF."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def lf(data):
    return data.replace(b"\r\n", b"\n")


def header_blocks(data):
    """Splits the header section into a list of (name, raw bytes incl. folded
    lines) in order, and returns (blocks, rest from the blank line on).
    Line ends are kept as found (LF or CRLF)."""
    blocks = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            end = len(data) - 1
        line = data[pos:end + 1]
        if line in (b"\n", b"\r\n"):
            break
        if line[:1] in (b" ", b"\t") and blocks:
            name, raw = blocks[-1]
            blocks[-1] = (name, raw + line)
        else:
            name = line.split(b":", 1)[0].decode("latin-1").strip().lower()
            blocks.append((name, line))
        pos = end + 1
    return blocks, data[pos:]


def strip_added(data, expect_dovecot=True):
    """Removes what Dovecot adds at the top of a delivered message:
    Return-Path:, Delivered-To: (only when the LMTP transaction had a single
    recipient) and its own Received: (... with LMTP ...) header. Returns
    (added {name: unfolded text}, remaining bytes). With expect_dovecot, the
    Return-Path and Received headers must be there."""
    blocks, _ = header_blocks(data)
    added = {}
    cut = 0
    for name, raw in blocks:
        text = re.sub(rb"\r?\n[ \t]+", b" ", raw).rstrip(b"\r\n").decode("utf-8", "replace")
        if name in ("return-path", "delivered-to") and name not in added:
            added[name] = text
        elif name == "received" and "dovecot-received" not in added and \
                re.search(r"\bwith LMTP\b", text):
            added["dovecot-received"] = text
        else:
            break
        cut += len(raw)
    if expect_dovecot:
        for need in ("return-path", "dovecot-received"):
            if need not in added:
                raise AssertionError(f"delivered message has no {need} header at the top: "
                                     f"{data[:400]!r}")
    return added, data[cut:]


def strip_mxd_received(data):
    """Removes the first header if it is a Received: header (mxd's);
    returns (received text unfolded, rest)."""
    blocks, _ = header_blocks(data)
    if not blocks or blocks[0][0] != "received":
        raise AssertionError(f"no Received: header where mxd's should be: {data[:400]!r}")
    raw = blocks[0][1]
    text = re.sub(rb"\r?\n[ \t]+", b" ", raw).rstrip(b"\r\n").decode("utf-8", "replace")
    return text, data[len(raw):]


def delivered_content(data):
    """A delivered maildir file -> (dovecot headers, mxd Received text,
    the content as the SMTP client sent it, with CRLF line ends)."""
    added, rest = strip_added(data)
    rec, rest = strip_mxd_received(rest)
    return added, rec, crlf(rest)


def make_message(sender, rcpts, subject, body_lines, extra_headers=()):
    """A CRLF message (not dot-stuffed) with Date and Message-ID."""
    hdr = [
        f"From: <{sender}>",
        f"To: {', '.join('<' + r + '>' for r in rcpts)}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-ID: <{os.urandom(8).hex()}@client.test>",
        *extra_headers,
    ]
    return ("\r\n".join(hdr) + "\r\n\r\n" + "".join(l + "\r\n" for l in body_lines)).encode()


# --------------------------------------------------------------------------
# Glue for tests that run mxd (tests/integration/mxdtest.py) in front of a
# Dovecot from this module.

QUEUE_FAST = "[queue]\nretry_min = 1s\nretry_max = 2s\n"


def mxd_domain(lmtp, recipients="any", **extra):
    """A [domain] dict for mxdtest.Mxd: mode = local, lmtp = LMTP."""
    d = {"mode": "local", "lmtp": lmtp, "recipients": recipients}
    d.update({k: str(v) for k, v in extra.items()})
    return d


def smtp_send(port, sender, rcpts, content, mail_options=(), timeout=30, conn=None):
    """One transaction with smtplib (a fresh connection unless conn is given).
    content: CRLF bytes, not dot-stuffed. Returns the queue id from the 250
    reply to DATA; raises AssertionError on any refusal."""
    import smtplib

    own = conn is None
    c = conn or smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=timeout)
    try:
        if own or not c.does_esmtp:
            c.ehlo("client.test")
        code, resp = c.mail(sender, list(mail_options))
        if code != 250:
            raise AssertionError(f"MAIL FROM:<{sender}> refused: {code} {resp!r}")
        for r in rcpts:
            code, resp = c.rcpt(r)
            if code != 250:
                raise AssertionError(f"RCPT TO:<{r}> refused: {code} {resp!r}")
        code, resp = c.data(content)
        if code != 250:
            raise AssertionError(f"DATA refused: {code} {resp!r}")
        m = re.search(rb"queued as (\S+)", resp)
        return m.group(1).decode() if m else None
    finally:
        if own:
            try:
                c.quit()
            except Exception:  # noqa: BLE001 - best effort
                c.close()


def mxctl_json(mxd, *args, timeout=30):
    """Runs `mxctl -c CONF ARGS --json` and parses its output."""
    import json

    p = mxd.mxctl(*args, "--json", timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        raise AssertionError(f"mxctl {' '.join(args)} --json: exit {p.returncode}; stdout {out!r};"
                             f" stderr {p.stderr.decode('utf-8', 'replace')!r}")
    try:
        return json.loads(out)
    except ValueError:
        # Also accept one JSON document per line.
        try:
            return [json.loads(line) for line in out.splitlines() if line.strip()]
        except ValueError as e:
            raise AssertionError(f"mxctl {' '.join(args)} --json printed no JSON ({e}): {out!r}")


def json_recipients(doc):
    """Every recipient entry in `mxctl queue --json` output, whatever its
    nesting: the dicts that carry a "state" key, each with the message's
    keys (qid, sender, ...) merged under "message"."""
    out = []

    def walk(node, parent):
        if isinstance(node, dict):
            if "state" in node and isinstance(node.get("state"), str):
                out.append({**node, "message": parent or {}})
                return
            scalars = {k: v for k, v in node.items() if not isinstance(v, (dict, list))}
            for v in node.values():
                walk(v, scalars if scalars else parent)
        elif isinstance(node, list):
            for v in node:
                walk(v, parent)

    walk(doc, None)
    return out


def rcpt_address(entry):
    for key in ("address", "recipient", "rcpt", "to"):
        if isinstance(entry.get(key), str):
            return entry[key]
    return None


def wait_for(pred, timeout, poll=0.1):
    """Polls pred() until it returns a true value or timeout; returns the
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(poll)


def queue_counts(db_path):
    """(messages, recipient rows by state) read straight from mxd's store
    (SQLite, or PostgreSQL with MXD_TEST_STORE=postgresql)."""
    con = mxdtest.db_connect(db_path)
    try:
        n = con.execute("SELECT count(*) FROM messages").fetchone()[0]
        states = dict(con.execute("SELECT state, count(*) FROM message_rcpts GROUP BY state"))
        return n, states
    finally:
        con.close()


def tokens_by_user(dov, pattern=rb"X-Token: (\S+)"):
    """{user: {token: number of files}} over every maildir of dov."""
    rx = re.compile(pattern)
    out = {}
    for user, files in dov.all_files().items():
        d = out.setdefault(user, {})
        for p in files:
            with open(p, "rb") as f:
                m = rx.search(f.read(65536))
            tok = m.group(1).decode() if m else "<none>"
            d[tok] = d.get(tok, 0) + 1
    return out


class MxdDovecotCase(mxdtest.ClassMxd, unittest.TestCase):
    """A private Dovecot and an mxd delivering to it over LMTP, one pair per
    test class, both stopped (by PID) in the class clean-up. Subclasses set:
      DOVECOT_USERS  None (static userdb) or users for a passwd-file
      DOVECOT_KW     more Dovecot() keyword arguments
      START_DOVECOT  False: the class starts with Dovecot down
      LMTP           "tcp" or "unix": which Dovecot listener mxd uses
      RECIPIENTS     the domain's recipients = value
      DOMAIN_EXTRA   more [domain example.test] keys
      SERVER         more [server] keys (control_socket is always set)
      EXTRA          text appended to mxd.conf (default: fast retries)
    """

    DOMAIN = "example.test"
    DOVECOT_USERS = None
    DOVECOT_KW = {}
    START_DOVECOT = True
    LMTP = "tcp"
    RECIPIENTS = "any"
    DOMAIN_EXTRA = {}
    SERVER = {}
    EXTRA = QUEUE_FAST

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        cls.dov = Dovecot(users=cls.DOVECOT_USERS, tmpdir=cls.tmpdir, **cls.DOVECOT_KW)
        cls.addClassCleanup(cls.dov.close)
        if cls.START_DOVECOT:
            cls.dov.start()
        lmtp = cls.dov.lmtp_unix if cls.LMTP == "unix" else cls.dov.lmtp_tcp
        server = {"control_socket": os.path.join(cls.tmpdir, "control.sock"),
                  "max_connections_per_ip": "200"}
        server.update(cls.SERVER)
        cls.start_mxd(mxdtest.Mxd(
            cls.tmpdir, server=server,
            domains={cls.DOMAIN: mxd_domain(lmtp, cls.RECIPIENTS, **cls.DOMAIN_EXTRA)},
            extra=cls.EXTRA))

    # -- helpers

    def send(self, sender, rcpts, content, mail_options=()):
        return smtp_send(self.mxd.port, sender, rcpts, content, mail_options)

    def diag(self, limit=6000):
        """mxd's stderr and Dovecot's log, for failure messages."""
        return (f"\n--- mxd stderr (tail)\n{self.mxd.all_stderr()[-limit:]}"
                f"\n--- dovecot log (tail)\n{self.dov.log_text()[-limit:]}")

    def counts(self):
        return queue_counts(self.mxd.db_path)

    def wait_queue_empty(self, timeout=30):
        """Waits until mxd's messages table is empty; fails with the queue."""
        ok = wait_for(lambda: self.counts()[0] == 0, timeout)
        if not ok:
            q = self.mxd.mxctl("queue")
            self.fail(f"queue not empty after {timeout}s: {self.counts()}\n"
                      f"{q.stdout.decode('utf-8', 'replace')[-4000:]}{self.diag()}")

    def wait_files(self, n, user=None, timeout=30):
        got = self.dov.wait_count(n, user, timeout=timeout)
        if got < n:
            self.fail(f"{got} of {n} messages delivered{' to ' + user if user else ''} "
                      f"after {timeout}s; queue {self.counts()}{self.diag()}")
        return got


# --------------------------------------------------------------------------
# A minimal LMTP client (smtplib.LMTP reads only one reply after DATA, so it
# gets out of step as soon as a transaction has two recipients).


def lmtp_send(addr, sender, rcpts, content, timeout=20):
    """One LMTP transaction to addr ((host, port) or a unix socket path).
    content: CRLF message, not dot-stuffed. Returns (rcpt replies,
    data replies): lists of (code, text); data replies one per accepted
    recipient, in order."""
    fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(addr)
        f = s.makefile("rb")

        def reply():
            lines = []
            while True:
                line = f.readline()
                if not line:
                    raise AssertionError(f"LMTP server closed the connection after {lines!r}")
                lines.append(line[4:].rstrip(b"\r\n").decode("utf-8", "replace"))
                if line[3:4] != b"-":
                    return int(line[:3]), "\n".join(lines)

        def cmd(line):
            s.sendall(line.encode() + b"\r\n")
            return reply()

        assert reply()[0] == 220
        assert cmd("LHLO client.test")[0] == 250
        code, text = cmd(f"MAIL FROM:<{sender}>")
        assert code == 250, (code, text)
        rr = [cmd(f"RCPT TO:<{r}>") for r in rcpts]
        dr = []
        if any(c == 250 for c, _ in rr):
            code, text = cmd("DATA")
            assert code == 354, (code, text)
            stuffed = content
            if stuffed.startswith(b"."):
                stuffed = b"." + stuffed
            stuffed = stuffed.replace(b"\r\n.", b"\r\n..")
            s.sendall(stuffed + b".\r\n")
            dr = [reply() for c, _ in rr if c == 250]
        cmd("QUIT")
        return rr, dr


# --------------------------------------------------------------------------
# Self-test: deliver straight to Dovecot (no mxd); prints what Dovecot adds.


def _selftest():
    with Dovecot(users=["alice@example.test", "bob@example.test"]) as dov:
        msg = make_message("sender@remote.test", ["alice@example.test"], "hello",
                           ["line one", ".dot line", "", "end"])
        rr, dr = lmtp_send(("127.0.0.1", dov.port), "sender@remote.test",
                           ["alice@example.test", "nosuch@example.test", "bob@example.test"], msg)
        print("tcp rcpt replies:", rr)
        print("tcp data replies:", dr)
        rr, dr = lmtp_send(dov.unix_path, "", ["bob@example.test"], msg)
        print("unix:", rr, dr)
        print(dov.all_files())
        for user in ("alice@example.test", "bob@example.test"):
            for data in dov.messages(user):
                print(data.decode())
                added, rest = strip_added(data)
                print(added)
                assert crlf(rest) == msg, (crlf(rest), msg)
        print(dov.log_text())


if __name__ == "__main__":
    _selftest()
