"""dnssec: a private DNSSEC-signed test zone for the DANE tests.

SignedDns(tmpdir) writes zone files, signs the ones marked signed with
ldns-keygen and ldns-signzone (ldnsutils: one ECDSA P-256 key per zone,
used as KSK and ZSK, NSEC denial; about 50 ms), and serves every zone from
a private unbound (`auth-zone:`, its own config under tmpdir, loopback
only, no recursion, no validation of its own) started in the foreground
and stopped by PID. The validator is mxd's resolver, given the DS record
of each signed zone as its trust anchor (`trust_anchor`, a file).

Special-use names: unbound answers test. itself (NXDOMAIN, before its
auth zones); `local-zone: "test." nodefault` lets .test zones be served.

bogus(zone, old, new) changes a record's text in the signed file after
signing (a signature that no longer verifies: the validator says bogus);
call it before start().
"""

import os
import signal
import socket
import subprocess
import time

import mxdtest
from primary import free_port_udp_tcp

SOA = "@ IN SOA ns.{zone}. host.{zone}. 1 3600 600 86400 300\n@ IN NS ns.{zone}.\n" \
      "ns IN A 127.0.0.1\n"


def _run(*args, cwd=None):
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n"
                             f"{p.stderr.decode('utf-8', 'replace')}")
    return p.stdout.decode("utf-8", "replace")


def spki_sha256(cert_pem):
    """The SHA-256 of a PEM certificate's SubjectPublicKeyInfo (TLSA x 1 1
    data), lower-case hex, with openssl."""
    openssl = mxdtest.require_tool("openssl")
    pub = subprocess.run([openssl, "x509", "-in", cert_pem, "-noout", "-pubkey"],
                         capture_output=True, check=True, timeout=30).stdout
    der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pub,
                         capture_output=True, check=True, timeout=30).stdout
    import hashlib
    return hashlib.sha256(der).hexdigest()


class SignedDns:
    def __init__(self, tmpdir, port=None):
        self.dir = os.path.join(tmpdir, "dnssec")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port_udp_tcp()
        self.zones = {}  # name -> (records, signed)
        self.files = {}  # name -> served file
        self.trust_anchor = os.path.join(self.dir, "trust-anchor.ds")
        self.proc = None

    @property
    def server(self):
        """The mxd `dns_servers =` value."""
        return f"127.0.0.1:{self.port}"

    def add_zone(self, zone, records, signed=True):
        """records: zone-file lines relative to the zone's origin."""
        self.zones[zone] = (records, signed)

    def build(self):
        """Writes and signs the zones; the trust anchor file holds every
        signed zone's DS record."""
        ldns_keygen = mxdtest.require_tool("ldns-keygen")
        ldns_signzone = mxdtest.require_tool("ldns-signzone")
        anchors = []
        for zone, (records, signed) in self.zones.items():
            path = os.path.join(self.dir, f"{zone}.zone")
            with open(path, "w", encoding="ascii") as f:
                f.write(f"$ORIGIN {zone}.\n$TTL 300\n")
                f.write(SOA.format(zone=zone))
                for r in records:
                    f.write(r + "\n")
            self.files[zone] = path
            if not signed:
                continue
            key = _run(ldns_keygen, "-a", "ECDSAP256SHA256", "-k", zone, cwd=self.dir).strip()
            _run(ldns_signzone, "-o", f"{zone}.", path, key, cwd=self.dir)
            self.files[zone] = path + ".signed"
            with open(os.path.join(self.dir, key + ".ds"), encoding="ascii") as f:
                anchors.append(f.read().strip())
        with open(self.trust_anchor, "w", encoding="ascii") as f:
            f.write("\n".join(anchors) + "\n")

    def bogus(self, zone, old, new):
        path = self.files[zone]
        with open(path, encoding="ascii") as f:
            text = f.read()
        if old not in text:
            raise AssertionError(f"{old!r} not in {path}")
        with open(path, "w", encoding="ascii") as f:
            f.write(text.replace(old, new))

    def start(self, timeout=10):
        unbound = mxdtest.require_tool("unbound", ["/usr/sbin/unbound"])
        conf = os.path.join(self.dir, "unbound.conf")
        lines = ["server:", "  interface: 127.0.0.1", f"  port: {self.port}",
                 "  do-daemonize: no", '  username: ""', '  chroot: ""',
                 f'  directory: "{self.dir}"', '  pidfile: ""', "  use-syslog: no",
                 f'  logfile: "{os.path.join(self.dir, "unbound.log")}"', "  verbosity: 1",
                 "  access-control: 127.0.0.0/8 allow", '  module-config: "iterator"',
                 "  do-ip6: no", '  local-zone: "test." nodefault']
        for zone in self.zones:
            lines += ["auth-zone:", f'  name: "{zone}."', f'  zonefile: "{self.files[zone]}"',
                      "  for-downstream: yes", "  for-upstream: no", "  fallback-enabled: no"]
        lines += ["remote-control:", "  control-enable: no"]
        with open(conf, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([unbound, "-d", "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        probe = next(iter(self.zones))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"unbound exited {self.proc.returncode}:\n{self.logs()}")
            if self._answers(probe):
                return
            time.sleep(0.05)
        raise AssertionError(f"unbound did not answer on {self.server}:\n{self.logs()}")

    def _answers(self, zone):
        """A SOA query over UDP gets a reply."""
        qname = b"".join(bytes([len(p)]) + p.encode() for p in zone.split(".")) + b"\0"
        msg = b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + qname + b"\x00\x06\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(msg, ("127.0.0.1", self.port))
                return s.recv(4096)[:2] == b"\x12\x34"
            except OSError:
                return False

    def logs(self, limit=4000):
        try:
            with open(os.path.join(self.dir, "unbound.log"), encoding="utf-8",
                      errors="replace") as f:
                return f.read()[-limit:]
        except OSError:
            return ""

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
