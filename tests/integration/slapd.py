"""slapd: a private OpenLDAP server (Debian slapd) for the recipient sync
tests: its own slapd.conf and mdb database under a temporary directory,
on 127.0.0.1 and a free port, stopped by PID.

    with Slapd(tmpdir, "dc=example,dc=org", people=["alice@example.org"]) as s:
        s.url                         # ldap://127.0.0.1:PORT
        s.add_person("bob", "bob@example.org")
        s.stop(); s.start()           # same port, same database
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import ports

SCHEMA = "/etc/ldap/schema"


def _free_port():
    return ports.free_port("127.0.0.1")


def _slapd_path():
    for p in ("/usr/sbin/slapd", shutil.which("slapd") or ""):
        if p and os.access(p, os.X_OK):
            return p
    return None


def available():
    return _slapd_path() is not None and shutil.which("ldapadd") is not None


class Slapd:
    def __init__(self, tmpdir, suffix="dc=example,dc=org", people=()):
        self.dir = os.path.join(tmpdir, "slapd")
        self.dbdir = os.path.join(self.dir, "db")
        os.makedirs(self.dbdir, exist_ok=True)
        self.suffix = suffix
        self.rootdn = f"cn=admin,{suffix}"
        self.rootpw = "secret-" + os.urandom(4).hex()
        self.port = _free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.conf = os.path.join(self.dir, "slapd.conf")
        self.log_path = os.path.join(self.dir, "slapd.log")
        self.proc = None
        with open(self.conf, "w", encoding="ascii") as f:
            f.write(f"""include {SCHEMA}/core.schema
include {SCHEMA}/cosine.schema
include {SCHEMA}/inetorgperson.schema
pidfile {self.dir}/slapd.pid
argsfile {self.dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
sizelimit size.soft=3 size.hard=3 size.pr=100 size.prtotal=unlimited
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{self.rootdn}"
rootpw {self.rootpw}
directory {self.dbdir}
""")
        dc = suffix.split(",")[0].split("=")[1]
        ldif = [f"dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\n"
                f"dc: {dc}\no: {dc}\n",
                f"dn: ou=people,{suffix}\nobjectClass: organizationalUnit\nou: people\n"]
        for i, mail in enumerate(people):
            ldif.append(self._person_ldif(f"u{i}", mail))
        # slapadd: the database is loaded before the server starts
        subprocess.run(["/usr/sbin/slapadd", "-f", self.conf, "-q"], input="\n".join(ldif),
                       text=True, check=True, capture_output=True, timeout=30)

    def _person_ldif(self, uid, mail):
        return (f"dn: uid={uid},ou=people,{self.suffix}\nobjectClass: inetOrgPerson\n"
                f"uid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {mail}\n")

    def start(self, timeout=15):
        log = open(self.log_path, "ab")
        # -d 0: stay in the foreground, log nothing but errors
        self.proc = subprocess.Popen([_slapd_path(), "-d", "0", "-f", self.conf,
                                      "-h", f"ldap://127.0.0.1:{self.port}/"],
                                     stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"slapd exited: {open(self.log_path).read()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("slapd did not listen")

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def add_person(self, uid, mail):
        subprocess.run(["ldapadd", "-x", "-H", self.url, "-D", self.rootdn, "-w", self.rootpw],
                       input=self._person_ldif(uid, mail), text=True, check=True,
                       capture_output=True, timeout=15)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
