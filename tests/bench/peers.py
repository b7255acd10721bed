"""peers: private Exim 4.96 and OpenSMTPD 6.8 instances for the benchmarks,
beside the private Postfix (postfix.py), without installing either.

Debian's postfix, exim4-daemon-* and opensmtpd packages conflict (installing
one removes the others), so `unpack()` fetches the two with `apt-get
download` into a cache directory and unpacks them with `dpkg-deb -x` into a
private root. Each runs from there inside `unshare -m`, with overlays on
/etc, /var and /run that exist only in that mount namespace: /etc/passwd
and /etc/group with their users added (Debian-exim; opensmtpd,
opensmtpq), and for OpenSMTPD its compiled-in /var/spool/smtpd,
/var/lib/opensmtpd/empty, /etc/mail and control socket. Nothing on the machine changes.

Each gets mxd's job in the benchmarks: accept any recipient of one domain
on 127.0.0.1:PORT and hold it (queue only, nothing delivered), or deliver
it over LMTP to a unix socket (the private Dovecot). Durability as
configured: Exim fsyncs a message's spool files before its 250 (its
default); OpenSMTPD does not fsync at all (its queue writes files and
renames them), so its numbers are not durable ones.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

# the downloads and the unpacked root: beside the benchmark build (git ignores it)
CACHE = os.environ.get("MXD_PEERS_CACHE") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build-bench", "peers")
PACKAGES = ["exim4-daemon-light", "exim4-base", "libidn12", "opensmtpd"]
LIBDIR = "usr/lib/x86_64-linux-gnu"


def unpack(packages=None, name="root"):
    """The private root with both peers unpacked (cached), or raises;
    another list of packages goes to another root (name: its directory,
    e.g. exim_stack.py's exim4-daemon-heavy)."""
    root = os.path.join(CACHE, name)
    suffix = "" if name == "root" else "-" + name
    done = os.path.join(CACHE, "unpacked" + suffix)
    if os.path.exists(done):
        return root
    dl = os.path.join(CACHE, "dl" + suffix)
    os.makedirs(dl, exist_ok=True)
    os.chmod(CACHE, 0o755)
    p = subprocess.run(["apt-get", "download", *(packages or PACKAGES)], cwd=dl,
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"apt-get download failed: {p.stderr[-500:]}")
    shutil.rmtree(root, ignore_errors=True)
    for f in sorted(os.listdir(dl)):
        if f.endswith(".deb"):
            subprocess.run(["dpkg-deb", "-x", os.path.join(dl, f), root], check=True)
    with open(done, "w") as f:
        f.write("\n".join(sorted(os.listdir(dl))) + "\n")
    return root


def _users(dirpath):
    """passwd and group with the peers' users added (OpenSMTPD chroots its
    processes into the home directory: an empty one of the instance)."""
    empty = os.path.join(dirpath, "empty")
    os.makedirs(empty, exist_ok=True)
    os.chmod(empty, 0o755)
    add_pw = ["Debian-exim:x:64990:64990::/nonexistent:/usr/sbin/nologin",
              f"opensmtpd:x:64991:64991::{empty}:/usr/sbin/nologin",
              f"opensmtpq:x:64992:64992::{empty}:/usr/sbin/nologin",
              f"opensmtpv:x:64993:64993::{empty}:/usr/sbin/nologin"]
    add_gr = ["Debian-exim:x:64990:", "opensmtpd:x:64991:", "opensmtpq:x:64992:",
              "opensmtpv:x:64993:"]
    for name, add in (("passwd", add_pw), ("group", add_gr)):
        with open(f"/etc/{name}", encoding="utf-8") as f:
            lines = [ln for ln in f.read().splitlines()
                     if ln.split(":")[0] not in {a.split(":")[0] for a in add}]
        with open(os.path.join(dirpath, name), "w", encoding="utf-8") as f:
            f.write("\n".join(lines + add) + "\n")


def _wait_port(port, proc, log, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}: {_tail(log)}")


def _tail(path, n=2000):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class _Peer:
    """One process tree started under `unshare -m` (its pid: the peer's
    main process, which unshare execs into). /etc, /var and /run are
    overlays in that namespace only (their upper layers in the instance's
    directory): the users are added to /etc/passwd and /etc/group there,
    and the peer's compiled-in paths made there."""

    proc = None

    def _spawn(self, argv, log, setup=(), preload=None, nameserver="127.0.0.77", nofile=None):
        d = self.dir
        script = ["set -e"]
        if nofile:  # raise its open-files limit (needs CAP_SYS_RESOURCE past the
            # hard limit: else up to the hard limit)
            script.append(f"ulimit -n {nofile} 2>/dev/null || ulimit -n $(ulimit -H -n)")
        for i, target in enumerate(("/etc", "/var", "/run")):
            up, work = os.path.join(d, f"ov{i}-upper"), os.path.join(d, f"ov{i}-work")
            os.makedirs(up, exist_ok=True)
            os.makedirs(work, exist_ok=True)
            script.append(f"mount -t overlay overlay -o lowerdir={target},upperdir={up},"
                          f"workdir={work} {target}")
        script.append(f"cat '{d}/passwd' > /etc/passwd; cat '{d}/group' > /etc/group")
        # by default a loopback address where no name server listens: a lookup
        # fails at once (the machine's resolver may be unreachable: seconds per
        # session); exim_stack.py gives its scripted DNS's (port 53)
        script.append(f"rm -f /etc/resolv.conf; echo 'nameserver {nameserver}' > /etc/resolv.conf")
        script.extend(setup)
        script.append(f"export LD_LIBRARY_PATH='{self.root}/{LIBDIR}'")
        if preload:
            script.append(f"export LD_PRELOAD='{preload}'")
        script.append("exec " + " ".join(f"'{a}'" for a in argv))
        out = open(log, "ab")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                      "\n".join(script)],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()

    pid = property(lambda self: self.proc.pid if self.proc else None)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Exim(_Peer):
    """Exim 4.96 (exim4-daemon-light) with its own config (-C) and spool.
    hold: queue only (queue_only, no queue runner); else each message is
    delivered at once over LMTP to lmtp (a unix socket path), its lmtp
    transport running as Debian-exim (root is a fixed never_user)."""

    name = "exim"
    durability = "fsync per message (its default)"

    def __init__(self, tmpdir, port, domain, lmtp=None, hold=True, tls=None, stack=None):
        # stack: workload 3 (exim_stack.EximStack): exim4-daemon-heavy's root,
        # its name server and its config text (SPF, DKIM, DMARC, DNSBLs, rspamd)
        self.stack = stack
        self.hold = hold
        self.root = stack.root if stack else unpack()
        self.port = port
        self.dir = os.path.join(tmpdir, "exim-stack" if stack else "exim")
        self.spool = os.path.join(self.dir, "spool")
        self.logdir = os.path.join(self.dir, "log")
        for d in (self.spool, self.logdir):
            os.makedirs(d, exist_ok=True)
        _users(self.dir)
        exim = os.path.join(self.root, "usr/sbin/exim4")
        wrapper = os.path.join(self.dir, "exim")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nLD_LIBRARY_PATH='{self.root}/{LIBDIR}' exec '{exim}' "
                    f"-C '{os.path.join(self.dir, 'exim.conf')}' \"$@\"\n")
        os.chmod(wrapper, 0o755)
        self.exim = exim
        tls_lines = ""
        if tls is not None:
            tls_lines = (f"tls_advertise_hosts = *\ntls_certificate = {tls[0]}\n"
                         f"tls_privatekey = {tls[1]}\n")
        else:
            tls_lines = "tls_advertise_hosts =\n"
        conf = f"""primary_hostname = exim.bench.invalid
domainlist local_domains = {domain}
exim_path = {wrapper}
keep_environment = LD_LIBRARY_PATH
exim_user = root
exim_group = root
never_users =
spool_directory = {self.spool}
log_file_path = {self.logdir}/%slog
pid_file_path = {self.dir}/exim.pid
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
smtp_accept_max = 1000
smtp_accept_max_per_host = 0
smtp_accept_queue_per_connection = 0
smtp_accept_reserve = 0
smtp_connect_backlog = 1024
host_lookup =
rfc1413_hosts =
message_size_limit = 64M
queue_only = {"true" if hold else "false"}
received_header_text = Received: from ${{sender_rcvhost}} by ${{primary_hostname}} \\
  with ${{received_protocol}} id ${{message_exim_id}}
{tls_lines}{stack.main if stack else ""}acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data

begin acl
acl_rcpt:
{stack.rcpt if stack else ""}  accept domains = +local_domains
  deny message = relay not permitted

acl_data:
{stack.data if stack else ""}  accept
{stack.acls if stack else ""}
begin routers
lmtp:
  driver = accept
  domains = +local_domains
  transport = lmtp

begin transports
lmtp:
  driver = lmtp
  socket = {lmtp or '/nonexistent'}
  batch_max = 1
  user = Debian-exim

begin retry
*  *  F,1h,10m
"""
        with open(os.path.join(self.dir, "exim.conf"), "w") as f:
            f.write(conf)

    def start(self):
        log = os.path.join(self.dir, "stderr.log")
        # -odf (deliver at once) overrides queue_only: held, each message would
        # still get a delivery attempt (a process, a failed LMTP connect)
        self._spawn([self.exim, "-C", os.path.join(self.dir, "exim.conf"), "-bdf",
                     *([] if self.hold else ["-odf"])],
                    log, nameserver=self.stack.nameserver if self.stack else "127.0.0.77",
                    preload=self.stack.preload if self.stack else None)
        _wait_port(self.port, self.proc, log)

    def queued(self):
        n = 0
        for _, _, files in os.walk(os.path.join(self.spool, "input")):
            n += sum(1 for f in files if f.endswith("-H"))
        return n


class OpenSMTPD(_Peer):
    """OpenSMTPD 6.8 with its own smtpd.conf (-f), its compiled-in queue
    (/var/spool/smtpd) and /etc/mail made in the overlays. hold: a relay
    action to a port where nothing listens (mail stays queued: `smtpctl
    pause mta` once started, so it makes no attempt); else lmtp delivery to
    the socket, by its mail.lmtp (exec'd from its compiled-in
    /usr/libexec/opensmtpd: an overlay there) as the virtual user opensmtpv
    (every recipient of the domain maps to it; rcpt-to keeps the address)."""

    name = "opensmtpd"
    durability = "no fsync (queue files written and renamed)"

    def __init__(self, tmpdir, port, domain, lmtp=None, hold=True, tls=None, preload=None):
        self.root = unpack()
        self.port = port
        self.hold = hold
        self.preload = preload  # listen_backlog shim: its backlog of 5 is too small
        self.dir = os.path.join(tmpdir, "opensmtpd")
        self.spool = os.path.join(self.dir, "ov1-upper", "spool", "smtpd")  # /var/spool/smtpd
        self.etcmail = os.path.join(self.dir, "etc-mail")
        os.makedirs(self.etcmail, exist_ok=True)
        # smtpctl must be setgid opensmtpq (dpkg-deb -x cannot make it so)
        self.smtpctl = os.path.join(self.dir, "smtpctl")
        shutil.copy(os.path.join(self.root, "usr/sbin/smtpctl"), self.smtpctl)
        os.chown(self.smtpctl, 0, 64992)
        os.chmod(self.smtpctl, 0o2555)
        _users(self.dir)
        with open(os.path.join(self.etcmail, "aliases"), "w") as f:
            f.write("")
        with open(os.path.join(self.etcmail, "mailname"), "w") as f:
            f.write("opensmtpd.bench.invalid\n")
        listen = f"listen on 127.0.0.1 port {port}"
        pki = ""
        if tls is not None:
            pki = (f"pki bench cert \"{tls[0]}\"\npki bench key \"{tls[1]}\"\n")
            listen += " tls pki bench"
        action = ('action "out" relay host smtp://127.0.0.1:1' if hold
                  else f'action "out" lmtp "{lmtp}" rcpt-to virtual {{ "@" = "opensmtpv" }}')
        conf = f"""{pki}smtp max-message-size 64M
queue ttl 1d
{listen}
{action}
match from any for domain "{domain}" action "out"
"""
        with open(os.path.join(self.dir, "smtpd.conf"), "w") as f:
            f.write(conf)

    def start(self):
        log = os.path.join(self.dir, "stderr.log")
        self._spawn([os.path.join(self.root, "usr/sbin/smtpd"), "-d", "-f",
                     os.path.join(self.dir, "smtpd.conf")], log,
                    setup=[  # its compiled-in /usr/libexec/opensmtpd/mail.lmtp (lmtp action)
                           f"mount -t overlay overlay -o lowerdir='{self.root}/usr/libexec':"
                           "/usr/libexec /usr/libexec",
                           "mkdir -p /etc/mail /var/spool/smtpd /var/lib/opensmtpd/empty",
                           f"cp '{self.etcmail}/aliases' '{self.etcmail}/mailname' /etc/mail/",
                           "chmod 711 /var/spool/smtpd"], preload=self.preload,
                    nofile=65536)
        _wait_port(self.port, self.proc, log)
        if self.hold:  # no delivery attempts while it holds: as the others
            for _ in range(50):  # its control socket comes a moment after the port
                p = subprocess.run(["nsenter", "-t", str(self.pid), "-m", self.smtpctl,
                                    "pause", "mta"],
                                   capture_output=True, text=True, timeout=30,
                                   env={**os.environ, "LD_LIBRARY_PATH": f"{self.root}/{LIBDIR}"})
                if p.returncode == 0:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"smtpctl pause mta: {p.stdout}{p.stderr}")

    def max_sessions(self):
        """Its session limit, from the open-files limit it runs with: smtp.c
        takes (limit - fds open) / 2 - 5 at start and stops accepting one
        short of it ("Disabling incoming SMTP connections: Client limit
        reached"; 9,994 seen with 20,000, where this machine's processes
        lack CAP_SYS_RESOURCE to raise it); less a margin."""
        with open(f"/proc/{self.pid}/limits", encoding="ascii") as f:
            soft = next(int(ln.split()[3]) for ln in f if ln.startswith("Max open files"))
        return soft // 2 - 50

    def queued(self):
        n = 0
        for _, _, files in os.walk(os.path.join(self.spool, "queue")):
            n += sum(1 for f in files if f == "message")
        return n
