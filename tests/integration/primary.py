"""primary: a scripted primary MX (and a test DNS server) for the mxd
backup-MX tests.

    with Primary(tmpdir) as p:                 # started on entry
        p.port                                 # SMTP on 127.0.0.1:p.port
        p.reject("bad@example.org", 550)       # refuse at RCPT (or 450, or
        p.clear_rejects()                      #   a whole reply string)
        p.wait_rcpts(n, timeout=30)            # accepted recipients so far
        p.messages()                           # [Received(n, envelope, body)]
        p.stop(); p.start()                    # same port, same directory

The server is tests/integration/primary_server.py, run as
`python3 -m primary_server --port N --dir DIR ...` in a child process (so a
test can stop, restart and kill it by PID), built on python3-aiosmtpd: it
writes each message to DIR/<n>.eml exactly as received (aiosmtpd adds no
header, offers no PIPELINING or CHUNKING, advertises SIZE 33554432 and
8BITMIME) with the envelope in DIR/<n>.json. start() waits until the port
answers 220; stop() is SIGTERM, wait, SIGKILL, then waits for the port to
close. The Python that runs it is the first of sys.executable and
/usr/bin/python3 that can import aiosmtpd (meson's python3 may be a pyenv
without Debian's packages).

    with Dnsmasq(tmpdir, mx=[("example.org", "primary.example.org", 10)],
                 hosts=[("primary.example.org", "127.0.0.1")]) as dns:
        dns.port                               # UDP and TCP on 127.0.0.1

runs dnsmasq (dnsmasq-base) in the foreground with --no-resolv --no-hosts
--local=/#/ and no config file, serving only the given records (NODATA for
a missing record type, NXDOMAIN for unknown names); start() waits until it
answers an MX query. dns_query() is a tiny stub resolver for checks.
"""

import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import ports

HERE = os.path.dirname(os.path.abspath(__file__))
PRIMARY_HOSTNAME = "primary.test.invalid"


def free_port(host="127.0.0.1"):
    return ports.free_port(host)


def free_port_udp_tcp(host="127.0.0.1", tries=50):
    """A port free for both TCP and UDP on host (dnsmasq binds both)."""
    for _ in range(tries):
        port = free_port(host)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
            return port
        except OSError:
            continue
    raise AssertionError("no port free for both TCP and UDP")


_PY = None


def aiosmtpd_python():
    """A Python interpreter that can import aiosmtpd."""
    global _PY
    if _PY:
        return _PY
    for cand in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if not cand or not os.access(cand, os.X_OK):
            continue
        r = subprocess.run([cand, "-c", "import aiosmtpd"], capture_output=True, timeout=30)
        if r.returncode == 0:
            _PY = cand
            return cand
    raise AssertionError("no python3 with aiosmtpd found: install python3-aiosmtpd "
                         "(run tests/deps.sh)")


class Received:
    """One message the primary accepted."""

    def __init__(self, n, envelope, body, path):
        self.n = n
        self.envelope = envelope
        self.body = body
        self.path = path

    @property
    def mail_from(self):
        return self.envelope.get("mail_from")

    @property
    def rcpt_tos(self):
        return self.envelope.get("rcpt_tos") or []

    def __repr__(self):
        return (f"Received(n={self.n}, from={self.mail_from!r}, to={self.rcpt_tos!r}, "
                f"size={len(self.body)})")


class Primary:
    """One scripted primary MX. stop() and start() may be called again: the
    port and the message directory stay the same."""

    def __init__(self, tmpdir=None, name="primary", port=None, reject=None,
                 hostname=PRIMARY_HOSTNAME, size=None, smtputf8=False, host="127.0.0.1",
                 tls=None, tls_min=None, requiretls=False):
        self._own_tmp = tmpdir is None
        if tmpdir is None:
            tmpdir = tempfile.mkdtemp(prefix="mxdtest-primary-")
            if os.environ.get("MXD_KEEP_TMP"):
                print(f"[primary] keeping {tmpdir}", file=sys.stderr)
        self.tmpdir = tmpdir
        self.name = name
        self.host = host
        self.root = os.path.join(tmpdir, name)
        self.dir = os.path.join(self.root, "messages")
        self.control_path = os.path.join(self.root, "control.json")
        self.events_path = os.path.join(self.root, "events.jsonl")
        self.stderr_path = os.path.join(self.root, "stderr.log")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port(host)
        self.hostname = hostname
        self.size = size
        self.smtputf8 = smtputf8
        self.tls = tls  # (certificate, key): offer STARTTLS
        self.tls_min = tls_min
        self.requiretls = requiretls  # offer REQUIRETLS (RFC 8689) over TLS
        self.proc = None
        self._stderr = None
        self._rejects = {}
        self._write_control()
        for addr, val in (reject or {}).items():
            self.reject(addr, val)

    # -- target strings for mxd.conf

    @property
    def target(self):
        """The mxd `primary =` value for this server."""
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    # -- recipients to refuse

    def _write_control(self):
        tmp = self.control_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"rcpt": self._rejects}, f)
        os.rename(tmp, self.control_path)
        # The server re-reads the file when its mtime changes; make sure a
        # quick second write within the same timestamp tick is still seen.
        now = time.time_ns()
        os.utime(self.control_path, ns=(now, now))

    def reject(self, addr, reply=550):
        """Refuse addr at RCPT with reply (550, 450 or a whole reply line)."""
        self._rejects[addr.lower()] = reply
        self._write_control()

    def unreject(self, addr):
        self._rejects.pop(addr.lower(), None)
        self._write_control()

    def clear_rejects(self):
        self._rejects = {}
        self._write_control()

    # -- life cycle

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20):
        assert self.proc is None, "primary already running"
        self._stderr = open(self.stderr_path, "ab")
        cmd = [aiosmtpd_python(), "-m", "primary_server", "--port", str(self.port),
               "--host", self.host, "--dir", self.dir, "--control", self.control_path,
               "--events", self.events_path, "--hostname", self.hostname]
        if self.size is not None:
            cmd += ["--size", str(self.size)]
        if self.smtputf8:
            cmd.append("--smtputf8")
        if self.tls:
            cmd += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        if self.tls_min:
            cmd += ["--tls-min", self.tls_min]
        if self.requiretls:
            cmd += ["--requiretls"]
        env = dict(os.environ)
        env["PYTHONPATH"] = HERE + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=self._stderr, cwd=self.root, env=env)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._reap()
                raise AssertionError(f"primary_server exited with status {rc} during start-up:\n"
                                     f"{self.logs()}")
            try:
                self._probe()
                return self
            except (OSError, AssertionError) as e:
                last = e
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"primary did not answer on {self.target} within {timeout}s "
                             f"({last!r}):\n{self.logs()}")

    def _probe(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect((self.host, self.port))
            data = b""
            while b"\n" not in data:
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
            if not data.startswith(b"220"):
                raise AssertionError(f"unexpected greeting {data!r}")
            s.sendall(b"QUIT\r\n")
            try:
                s.recv(1024)
            except OSError:
                pass

    def stop(self, timeout=15):
        """SIGTERM, wait, SIGKILL on timeout; then waits until the port is
        closed. Returns the exit status (None when it was not running)."""
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
        self._wait_port_closed()
        return rc

    def kill(self):
        """SIGKILL and reap (no clean-up chance)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(timeout=30)
        self._reap()
        self._wait_port_closed()
        return rc

    def _wait_port_closed(self, timeout=5):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.socket(fam, socket.SOCK_STREAM) as s:
                    s.settimeout(0.5)
                    s.connect((self.host, self.port))
            except OSError:
                return
            time.sleep(0.05)

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

    # -- what arrived

    def numbers(self):
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".eml") and name[:-4].isdigit():
                out.append(int(name[:-4]))
        return sorted(out)

    def count(self):
        """Messages (transactions) received so far."""
        return len(self.numbers())

    def messages(self):
        out = []
        for n in self.numbers():
            p = os.path.join(self.dir, f"{n}.eml")
            with open(os.path.join(self.dir, f"{n}.json"), encoding="utf-8") as f:
                env = json.load(f)
            with open(p, "rb") as f:
                out.append(Received(n, env, f.read(), p))
        return out

    def envelopes(self):
        out = []
        for n in self.numbers():
            with open(os.path.join(self.dir, f"{n}.json"), encoding="utf-8") as f:
                out.append(json.load(f))
        return out

    def rcpt_count(self):
        """Recipients accepted in completed transactions so far."""
        return sum(len(e.get("rcpt_tos") or []) for e in self.envelopes())

    def wait_count(self, n, timeout=30, poll=0.05):
        deadline = time.monotonic() + timeout
        while True:
            c = self.count()
            if c >= n or time.monotonic() >= deadline:
                return c
            time.sleep(poll)

    def wait_rcpts(self, n, timeout=30, poll=0.05):
        """Waits until at least n recipients arrived; returns the number."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.rcpt_count()
            if c >= n or time.monotonic() >= deadline:
                return c
            time.sleep(poll)

    def events(self, kind=None):
        out = []
        try:
            with open(self.events_path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue  # a line being written
                    if kind is None or e.get("event") == kind:
                        out.append(e)
        except FileNotFoundError:
            pass
        return out

    def rcpt_attempts(self, addr):
        """RCPT events for addr: [{"t":…, "reply":…}, …]."""
        a = addr.lower()
        return [e for e in self.events("rcpt") if (e.get("address") or "").lower() == a]

    def logs(self, limit=8000):
        if not os.path.exists(self.stderr_path):
            return ""
        with open(self.stderr_path, "rb") as f:
            t = f.read().decode("utf-8", "replace")
        return t[-limit:]


# --------------------------------------------------------------------------
# dnsmasq


def _dns_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def _read_name(msg, pos):
    labels = []
    jumped = False
    end = None
    for _ in range(128):
        ln = msg[pos]
        if ln & 0xC0 == 0xC0:
            ptr = ((ln & 0x3F) << 8) | msg[pos + 1]
            if not jumped:
                end = pos + 2
            jumped = True
            pos = ptr
            continue
        if ln == 0:
            if not jumped:
                end = pos + 1
            return ".".join(labels), end
        labels.append(msg[pos + 1:pos + 1 + ln].decode("ascii", "replace"))
        pos += 1 + ln
    raise ValueError("DNS name too long or looping")


QTYPES = {"A": 1, "MX": 15, "AAAA": 28, "TXT": 16}


def dns_query(port, name, qtype="MX", host="127.0.0.1", timeout=2):
    """One UDP query; returns (rcode, [answers]) where an MX answer is
    (pref, host), an A/AAAA answer the address text. Raises socket.timeout."""
    qid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _dns_name(name) + \
        struct.pack(">HH", QTYPES[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, (host, port))
        while True:
            msg, _ = s.recvfrom(4096)
            if len(msg) >= 12 and struct.unpack(">H", msg[:2])[0] == qid:
                break
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    rcode = flags & 0xF
    pos = 12
    for _ in range(qd):
        _, pos = _read_name(msg, pos)
        pos += 4
    out = []
    for _ in range(an):
        _, pos = _read_name(msg, pos)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
        pos += 10
        rdata = msg[pos:pos + rdlen]
        if rtype == 15:
            pref = struct.unpack(">H", rdata[:2])[0]
            target, _ = _read_name(msg, pos + 2)
            out.append((pref, target))
        elif rtype == 1:
            out.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28:
            out.append(socket.inet_ntop(socket.AF_INET6, rdata))
        pos += rdlen
    return rcode, out


class Dnsmasq:
    """A private dnsmasq serving MX and host records on 127.0.0.1:port.
    mx: [(domain, host, pref)], hosts: [(name, address)] (an address may be
    IPv4 or IPv6; several entries for one name are merged)."""

    def __init__(self, tmpdir, mx=(), hosts=(), port=None, name="dnsmasq", txt=(), forward=()):
        self.tmpdir = tmpdir
        # txt: [(name, text or [strings])]; forward: [(domain, "127.0.0.1#port")]
        # sends that domain's queries to another server (one that never
        # answers makes a timeout).
        self.txt = list(txt)
        self.forward = list(forward)
        self.name = name
        self.root = os.path.join(tmpdir, name)
        os.makedirs(self.root, exist_ok=True)
        self.port = port or free_port_udp_tcp()
        self.mx = list(mx)
        self.hosts = list(hosts)
        self.log_path = os.path.join(self.root, "dnsmasq.log")
        self.stderr_path = os.path.join(self.root, "stderr.log")
        self.proc = None
        self._stderr = None

    @property
    def server(self):
        """The mxd `dns_servers =` value."""
        return f"127.0.0.1:{self.port}"

    def args(self):
        exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not os.access(exe, os.X_OK):
            raise AssertionError("dnsmasq is not installed (dnsmasq-base; run tests/deps.sh)")
        a = [exe, "-k", "-C", "/dev/null", f"--port={self.port}", "--listen-address=127.0.0.1",
             "--bind-interfaces", "--no-resolv", "--no-hosts", "--no-negcache",
             # Answer every name from the local records only: NODATA for an
             # AAAA query on an IPv4-only host, NXDOMAIN for unknown names
             # (without it dnsmasq says REFUSED, which looks like a failure).
             "--local=/#/",
             "--pid-file=", "--user=root", "--group=root", "--log-queries",
             f"--log-facility={self.log_path}", "--local-ttl=0"]
        for domain, host, pref in self.mx:
            a.append(f"--mx-host={domain},{host},{pref}")
        merged = {}
        for name, addr in self.hosts:
            merged.setdefault(name, []).append(addr)
        for name, addrs in merged.items():
            a.append(f"--host-record={name},{','.join(addrs)}")
        for name, text in self.txt:
            parts = [text] if isinstance(text, str) else list(text)
            # one character-string per part; on the command line dnsmasq
            # takes the text as is (no quoting, so no commas in it)
            a.append(f"--txt-record={name}," + ",".join(parts))
        for domain, server in self.forward:
            a.append(f"--server=/{domain}/{server}")
        return a

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=20):
        assert self.proc is None, "dnsmasq already running"
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=self._stderr, cwd=self.root)
        probe = self.mx[0][0] if self.mx else (self.hosts[0][0] if self.hosts else "localhost")
        qtype = "MX" if self.mx else "A"
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._reap()
                raise AssertionError(f"dnsmasq exited with status {rc} during start-up:\n"
                                     f"{self.logs()}")
            try:
                rcode, ans = dns_query(self.port, probe, qtype, timeout=0.5)
                if rcode == 0 and ans:
                    return self
                last = (rcode, ans)
            except OSError as e:
                last = e
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"dnsmasq did not answer on {self.server} within {timeout}s "
                             f"({last!r}):\n{self.logs()}")

    def stop(self, timeout=10):
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
        return rc

    def _reap(self):
        self.proc = None
        if self._stderr:
            self._stderr.close()
            self._stderr = None

    def close(self):
        self.stop()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    def logs(self, limit=8000):
        out = []
        for p in (self.stderr_path, self.log_path):
            if os.path.exists(p):
                with open(p, "rb") as f:
                    t = f.read().decode("utf-8", "replace")
                out.append(f"--- {p}\n{t[-limit:]}")
        return "\n".join(out)


# --------------------------------------------------------------------------
# Self-test: a primary that refuses one recipient, and a dnsmasq.


def _selftest():
    import smtplib

    tmp = tempfile.mkdtemp(prefix="mxdtest-primary-self-")
    try:
        with Primary(tmp) as p:
            p.reject("bad@example.org", 550)
            p.reject("tmp@example.org", 450)
            body = b"Subject: x\r\n\r\n.leading dot\r\nline\r\n"
            with smtplib.SMTP("127.0.0.1", p.port, timeout=10) as c:
                c.ehlo("self.test")
                print("EHLO:", c.esmtp_features)
                c.mail("a@b.test")
                print("ok:", c.rcpt("ok@example.org"))
                print("bad:", c.rcpt("bad@example.org"))
                print("tmp:", c.rcpt("tmp@example.org"))
                print("data:", c.data(body))
            p.wait_count(1, timeout=5)
            m = p.messages()[0]
            print(m, m.envelope)
            assert m.body == body, (m.body, body)
            assert m.rcpt_tos == ["ok@example.org"], m.rcpt_tos
            print("rcpt events for tmp:", p.rcpt_attempts("tmp@example.org"))
            p.stop()
            p.start()
            print("restarted; count", p.count())
        with Dnsmasq(tmp, mx=[("example.org", "primary.example.org", 10),
                              ("example.org", "mx.test.invalid", 20)],
                     hosts=[("primary.example.org", "127.0.0.1"),
                            ("dual.example.org", "::1"), ("dual.example.org", "127.0.0.1")]) as d:
            print("MX:", dns_query(d.port, "example.org", "MX"))
            print("A:", dns_query(d.port, "primary.example.org", "A"))
            print("AAAA:", dns_query(d.port, "primary.example.org", "AAAA"))
            print("dual A/AAAA:", dns_query(d.port, "dual.example.org", "A"),
                  dns_query(d.port, "dual.example.org", "AAAA"))
            print("unknown:", dns_query(d.port, "nosuch.example.org", "MX"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    _selftest()
