"""postfix: a private Postfix instance for the benchmarks, configured as an
inbound MX for one domain that delivers over LMTP (to a private Dovecot).

Its own config_directory, queue_directory and data_directory under a temp
dir; smtpd on 127.0.0.1:PORT, no chroot, logging to a file through
postlogd. Started with `postfix -c DIR start`, stopped with `postfix -c DIR
stop` (which signals this instance's master by its own pid file).
Postfix fsyncs a queue file before its 250 (the default), as mxd commits.
"""

import os
import shutil
import subprocess
import time

POSTFIX = "/usr/sbin/postfix"
MASTER_CF = "/etc/postfix/master.cf"


def _master_cf(port):
    """Debian's master.cf with smtpd on 127.0.0.1:port and no chroot."""
    out = []
    with open(MASTER_CF, encoding="utf-8") as f:
        for line in f.read().splitlines():
            fields = line.split()
            if not line or line[0] in "# \t" or len(fields) < 8:
                out.append(line)
                continue
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{port}"
            fields[4] = "n"  # chroot
            out.append(" ".join(fields))
    return "\n".join(out) + "\n"


class Postfix:
    """domain: the domain it is MX for (any recipient exists); lmtp: a unix
    socket path to deliver to; hold: defer every delivery (queue only, as
    mxd with its primary down); extra: more main.cf lines (smtpd_milters)."""

    def __init__(self, tmpdir, port, domain, lmtp, hold=False, extra=""):
        self.root = os.path.join(tmpdir, "postfix")
        self.etc = os.path.join(self.root, "etc")
        self.queue = os.path.join(self.root, "queue")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "log")
        for d in (self.etc, self.queue, self.data, self.log):
            os.makedirs(d, exist_ok=True)
        shutil.chown(self.data, "postfix")
        self.port = port
        # argv before `postfix`: tests/bench/stack.py starts it inside
        # `unshare -m` with its own /etc/resolv.conf
        self.prefix = []
        main = f"""compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.invalid
mydomain = bench.invalid
mydestination =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = {domain}
virtual_mailbox_maps = static:ok
virtual_transport = lmtp:unix:{lmtp}
{"defer_transports = lmtp" if hold else ""}
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = {self.log}/postfix.log
maillog_file_prefixes = {self.root}
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 300
lmtp_destination_concurrency_limit = 20
biff = no
smtputf8_enable = yes
{extra}"""
        with open(os.path.join(self.etc, "main.cf"), "w", encoding="utf-8") as f:
            f.write(main)
        with open(os.path.join(self.etc, "master.cf"), "w", encoding="utf-8") as f:
            f.write(_master_cf(port))

    def _postfix(self, *args, check=True):
        p = subprocess.run([*self.prefix, POSTFIX, "-c", self.etc, *args],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed: "
                               f"{p.stderr.decode('utf-8', 'replace')}")
        return p

    def start(self, timeout=30):
        self._postfix("start")
        import socket
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(64).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"postfix did not answer on port {self.port}")

    def stop(self):
        self._postfix("stop", check=False)
        pid = self.pid
        deadline = time.monotonic() + 20
        while pid and time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.1)

    @property
    def pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid"), encoding="ascii") as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def queue_files(self):
        """Messages still in the queue (incoming, active, deferred)."""
        n = 0
        for sub in ("incoming", "active", "deferred", "maildrop"):
            for _dirpath, _dirs, files in os.walk(os.path.join(self.queue, sub)):
                n += len(files)
        return n

    def settle(self, timeout=120):
        """Waits until the queue manager has moved every new message on
        (to deferred, when delivery is held): nothing left in incoming or
        active."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = 0
            for sub in ("incoming", "active", "maildrop"):
                for _dirpath, _dirs, files in os.walk(os.path.join(self.queue, sub)):
                    busy += len(files)
            if busy == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"Postfix still has {busy} messages in incoming/active")

    def queue_bytes(self):
        total = 0
        for sub in ("incoming", "active", "deferred"):
            for dirpath, _dirs, files in os.walk(os.path.join(self.queue, sub)):
                for name in files:
                    try:
                        total += os.path.getsize(os.path.join(dirpath, name))
                    except OSError:
                        pass
        return total
