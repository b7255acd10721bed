"""tlsutil: throw-away test certificates for the TLS integration tests.

Everything is generated at test time with certtool (gnutls-bin) from
template files into a directory the caller owns (the test's temporary
directory): nothing secret is ever committed.

make_pki(directory) writes:
  ca.pem / ca.key           a test CA ("mxd test CA")
  server.pem / server.key   a certificate for mxdtest.HOSTNAME signed by it
  chain.pem                 server.pem followed by ca.pem
  expired.pem / expired.key for mxdtest.HOSTNAME, valid only in the past
  other.key                 a key that matches none of the certificates
  server2.pem / server2.key a second certificate for mxdtest.HOSTNAME
                            (different serial and key, same CA)
and returns a Pki object with those paths.
"""

import hashlib
import os
import ssl
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402

CA_TEMPLATE = """\
cn = "mxd test CA"
organization = "mxd tests"
serial = {serial}
expiration_days = 3
ca
cert_signing_key
crl_signing_key
"""

SERVER_TEMPLATE = """\
cn = "{cn}"
organization = "mxd tests"
serial = {serial}
dns_name = "{cn}"
ip_address = "127.0.0.1"
tls_www_server
signing_key
encryption_key
{validity}
"""

VALID_FOR_DAYS = "expiration_days = 3"
# Valid for one day, years ago: expired in any clock the tests can meet.
EXPIRED_DATES = 'activation_date = "2020-01-01 00:00:00"\nexpiration_date = "2020-01-02 00:00:00"'


class Pki:
    def __init__(self, directory):
        self.dir = directory

    def path(self, name):
        return os.path.join(self.dir, name)

    ca_cert = property(lambda self: self.path("ca.pem"))
    ca_key = property(lambda self: self.path("ca.key"))
    cert = property(lambda self: self.path("server.pem"))
    key = property(lambda self: self.path("server.key"))
    chain = property(lambda self: self.path("chain.pem"))
    expired_cert = property(lambda self: self.path("expired.pem"))
    expired_key = property(lambda self: self.path("expired.key"))
    other_key = property(lambda self: self.path("other.key"))
    cert2 = property(lambda self: self.path("server2.pem"))
    key2 = property(lambda self: self.path("server2.key"))

    def client_context(self, minimum=None, maximum=None):
        """An ssl client context trusting only the test CA, checking the
        name mxdtest.HOSTNAME (pass server_hostname=mxdtest.HOSTNAME)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_cert)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
        return ctx

    def fingerprint(self, cert_path):
        """SHA-256 fingerprint (DER) of a PEM certificate, lower-case hex."""
        with open(cert_path, encoding="ascii") as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        return hashlib.sha256(der).hexdigest()


def _certtool(*args, timeout=60):
    exe = mxdtest.require_tool("certtool")
    p = subprocess.run([exe, *args], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(
            f"certtool {' '.join(args)} failed ({p.returncode}):\n"
            f"{p.stderr.decode('utf-8', 'replace')}"
        )
    return p


_KEY_ARGS = {"rsa": ("--key-type=rsa", "--bits=2048"),
             "ecdsa": ("--key-type=ecdsa", "--curve=secp256r1")}
_key_type = "rsa"


def _privkey(path):
    # RSA 2048: every client in the tests (python ssl, swaks/OpenSSL,
    # gnutls-cli) and every TLS version negotiates it. make_pki(key="ecdsa"):
    # P-256 (tests/bench/peers_bench.py --ecdsa)
    _certtool("--generate-privkey", *_KEY_ARGS[_key_type], "--outfile", path)
    os.chmod(path, 0o600)


def _template(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="ascii") as f:
        f.write(text)
    return path


def _server_cert(pki, stem, serial, validity, cn):
    key = pki.path(f"{stem}.key")
    _privkey(key)
    tmpl = _template(pki.dir, f"{stem}.tmpl",
                     SERVER_TEMPLATE.format(cn=cn, serial=serial, validity=validity))
    _certtool("--generate-certificate", "--load-privkey", key,
              "--load-ca-certificate", pki.ca_cert, "--load-ca-privkey", pki.ca_key,
              "--template", tmpl, "--outfile", pki.path(f"{stem}.pem"))


def make_pki(directory, hostname=mxdtest.HOSTNAME, key="rsa"):
    """Generates the test CA and certificates into directory (created if
    needed), their keys RSA 2048 or (key="ecdsa") P-256; returns a Pki."""
    global _key_type
    _key_type = key
    os.makedirs(directory, exist_ok=True)
    pki = Pki(directory)
    _privkey(pki.ca_key)
    tmpl = _template(directory, "ca.tmpl", CA_TEMPLATE.format(serial=1))
    _certtool("--generate-self-signed", "--load-privkey", pki.ca_key, "--template", tmpl,
              "--outfile", pki.ca_cert)
    _server_cert(pki, "server", 2, VALID_FOR_DAYS, hostname)
    _server_cert(pki, "expired", 3, EXPIRED_DATES, hostname)
    _server_cert(pki, "server2", 4, VALID_FOR_DAYS, hostname)
    _privkey(pki.other_key)
    with open(pki.chain, "w", encoding="ascii") as out:
        for part in (pki.cert, pki.ca_cert):
            with open(part, encoding="ascii") as f:
                out.write(f.read())
    return pki


_MODULE_PKI = None


def setup_module_pki(prefix):
    """For a test module's setUpModule: one PKI for the whole module (made
    in about a second), removed at the module's clean-up; module_pki()
    returns it."""
    global _MODULE_PKI
    _MODULE_PKI = make_pki(mxdtest.make_tmpdir(unittest.addModuleCleanup, prefix))
    return _MODULE_PKI


def module_pki():
    assert _MODULE_PKI is not None, "setUpModule did not call tlsutil.setup_module_pki"
    return _MODULE_PKI


def make_self_signed(pki, stem="selfsigned", cn=mxdtest.HOSTNAME):
    """A self-signed certificate (no CA vouches for it) for cn and
    127.0.0.1: pki.path(stem + ".pem") and .key. Returns (cert, key)."""
    key = pki.path(f"{stem}.key")
    _privkey(key)
    tmpl = _template(pki.dir, f"{stem}.tmpl",
                     SERVER_TEMPLATE.format(cn=cn, serial=9, validity=VALID_FOR_DAYS))
    _certtool("--generate-self-signed", "--load-privkey", key, "--template", tmpl,
              "--outfile", pki.path(f"{stem}.pem"))
    return pki.path(f"{stem}.pem"), key


def tls_section(cert, key, priority=None):
    """INI text of a [tls] section (for mxdtest.Mxd(extra=...))."""
    out = ["[tls]", f"certificate = {cert}", f"key = {key}"]
    if priority is not None:
        out.append(f"priority = {priority}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    # Manual check: python3 tlsutil.py DIR
    d = sys.argv[1] if len(sys.argv) > 1 else "."
    p = make_pki(d)
    for n in ("ca.pem", "server.pem", "expired.pem", "server2.pem", "other.key"):
        print(p.path(n))
