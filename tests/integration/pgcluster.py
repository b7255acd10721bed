"""pgcluster: a private PostgreSQL 15 for the mxd integration tests (issue 21).

    with PgCluster(standby=True) as pg:        # primary + synchronous standby
        pg.create_database("mxd_1")            # owned by the role `mxd`
        pg.conninfo("mxd_1")                   # both hosts, read-write target
        pg.query("SELECT 1", db="mxd_1")       # rows (psycopg2, autocommit)
        pg.kill("primary")                     # SIGKILL the postmaster and children
        pg.promote("standby")                  # pg_ctl promote -w

Each node is a real postmaster from Debian's postgresql-15
(/usr/lib/postgresql/15/bin) in its own directory under a temporary
directory, listening on 127.0.0.1 only, on a free port, with its unix socket
inside that directory. PostgreSQL refuses to run as root, so it runs as the
`postgres` system user (Popen user=/group=, so the PID we hold is the
postmaster's own) and the directory is chowned to it. fsync stays on:
durability is what the cluster tests are about.

The primary is made with initdb; the standby with pg_basebackup -R (streaming
replication), and the primary then names it in synchronous_standby_names, so
a commit returns only once the standby has flushed it (synchronous_commit =
on). kill() SIGKILLs the postmaster and every process under it (by PID,
from /proc: PostgreSQL puts each child in a process group of its own), as a
machine that dies takes its backends with it; stop() asks for a fast
shutdown and falls back to SIGKILL. Everything is bounded in time;
close() stops every node we started, by PID.

The role `mxd` (LOGIN CREATEDB, no password: pg_hba trusts loopback) owns the
databases made with create_database(); `postgres` is the superuser.
A quick check by hand: /usr/bin/python3 pgcluster.py (the real self-test
is test_pgcluster_harness.py).
"""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import ports

PG_BIN = os.environ.get("MXD_PG_BIN", "/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
APP_USER = "mxd"


def _tool(name):
    path = os.path.join(PG_BIN, name)
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing (run tests/deps.sh: postgresql-15)")
    return path


def psycopg2_module():
    try:
        import psycopg2  # noqa: PLC0415
        import psycopg2.extras  # noqa: F401, PLC0415
    except ImportError as e:
        raise AssertionError(f"python3-psycopg2 is not installed (run tests/deps.sh): {e}")
    return psycopg2


def free_port(host="127.0.0.1"):
    return ports.free_port(host)


def _tree(pid):
    """pid and its descendants (from /proc/PID/task/*/children), parents
    before children."""
    out = [pid]
    i = 0
    while i < len(out):
        try:
            tasks = os.listdir(f"/proc/{out[i]}/task")
        except OSError:
            tasks = []
        for tid in tasks:
            try:
                with open(f"/proc/{out[i]}/task/{tid}/children", encoding="ascii") as f:
                    out.extend(int(x) for x in f.read().split() if int(x) not in out)
            except OSError:
                pass
        i += 1
    return out


class PgNode:
    """One postmaster: its data directory, port, process and log."""

    def __init__(self, cluster, name, port):
        self.cluster = cluster
        self.name = name
        self.port = port
        self.datadir = os.path.join(cluster.tmpdir, name)
        self.sockdir = os.path.join(cluster.tmpdir, f"{name}.sock")
        self.log_path = os.path.join(cluster.tmpdir, f"{name}.log")
        self.proc = None
        self._log = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=60):
        assert not self.running(), f"{self.name} already running"
        os.makedirs(self.sockdir, exist_ok=True)
        self.cluster.chown(self.sockdir)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [_tool("postgres"), "-D", self.datadir, "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockdir}"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            cwd=self.cluster.tmpdir, start_new_session=True,
            env={**self.cluster.pg_env(), **(self.cluster.server_env or {})},
            **self.cluster.as_postgres())
        deadline = time.monotonic() + timeout
        last = None
        psycopg2_module()  # a missing client library fails at once
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._reap()
                raise AssertionError(f"postgres {self.name} exited with {rc} at start:\n"
                                     f"{self.log()}")
            try:
                con = self.connect(user=PG_USER, db="postgres", timeout=2)
                con.close()
                return self
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = e
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"postgres {self.name} not ready on port {self.port} within "
                             f"{timeout}s ({last}):\n{self.log()}")

    def connect(self, db="postgres", user=PG_USER, timeout=5):
        pg = psycopg2_module()
        con = pg.connect(host="127.0.0.1", port=self.port, dbname=db, user=user,
                         connect_timeout=max(1, int(timeout)))
        con.autocommit = True
        return con

    def query(self, sql, args=None, db="postgres", user=PG_USER, timeout=10):
        """Runs one statement (autocommit); returns its rows (a list of
        tuples), or [] for a statement without a result."""
        con = self.connect(db=db, user=user, timeout=timeout)
        try:
            with con.cursor() as cur:
                cur.execute(f"SET statement_timeout = {int(timeout * 1000)}")
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        finally:
            con.close()

    def is_primary(self):
        return not self.query("SELECT pg_is_in_recovery()")[0][0]

    def stop(self, timeout=30):
        """Fast shutdown (SIGINT to the postmaster), SIGKILL on timeout."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()
        self._reap()
        return rc

    def kill(self):
        """SIGKILL the postmaster and every one of its processes (backends,
        walsender, walwriter...; each sits in a process group of its own),
        as when the machine dies. Returns the postmaster's status."""
        if self.proc is None:
            return None
        self._killtree()
        rc = self.proc.wait(timeout=30)
        self._reap()
        return rc

    def children(self):
        """PIDs of the postmaster's processes (from /proc), itself excluded."""
        return _tree(self.proc.pid)[1:] if self.proc else []

    def _killtree(self):
        pids = _tree(self.proc.pid)
        for pid in pids:  # the postmaster first: it must not restart anyone
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for pid in pids[1:]:
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.02)

    def _reap(self):
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    def promote(self, timeout=60):
        p = subprocess.run([_tool("pg_ctl"), "promote", "-w", "-t", str(timeout),
                            "-D", self.datadir],
                           capture_output=True, timeout=timeout + 10, cwd=self.cluster.tmpdir,
                           env=self.cluster.pg_env(), **self.cluster.as_postgres())
        if p.returncode != 0:
            raise AssertionError(f"pg_ctl promote {self.name}: {p.returncode} "
                                 f"{p.stdout.decode()} {p.stderr.decode()}\n{self.log()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.is_primary():
                    return
            except Exception:  # noqa: BLE001 - retried
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} still in recovery {timeout}s after promote")

    def log(self, limit=8000):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return text if len(text) <= limit else "[...]\n" + text[-limit:]


class PgCluster:
    """A primary and optionally a synchronous streaming standby."""

    def __init__(self, standby=False, sync=True, tmpdir=None, server_env=None, conf=None):
        """server_env: more environment for the postmasters (e.g. an
        LD_PRELOAD fault shim); conf: more postgresql.conf lines."""
        self.want_standby = standby
        self.sync = sync
        self.server_env = server_env
        self.extra_conf = conf or []
        self._own_tmp = tmpdir is None
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="mxdtest-pg-")
        if self._own_tmp and os.environ.get("MXD_KEEP_TMP"):
            print(f"[pgcluster] keeping {self.tmpdir}", file=sys.stderr)
        # the postgres user must reach its directories under ours
        os.chmod(self.tmpdir, 0o755)
        self.chown(self.tmpdir)
        self.primary = PgNode(self, "primary", free_port())
        self.standby = PgNode(self, "standby", free_port()) if standby else None
        self._dbs = 0

    # -- privileges

    @staticmethod
    def _pw():
        try:
            return pwd.getpwnam(PG_USER)
        except KeyError:
            raise AssertionError(f"no system user {PG_USER!r} (install postgresql-15)")

    def as_postgres(self):
        """Popen keyword arguments that run a child as postgres when we are
        root (PostgreSQL refuses to run as root)."""
        if os.geteuid() != 0:
            return {}
        pw = self._pw()
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def chown(self, path):
        if os.geteuid() == 0:
            pw = self._pw()
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def pg_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC",
                    "HOME": self.tmpdir})
        return env

    def run(self, args, timeout=120):
        p = subprocess.run(args, capture_output=True, timeout=timeout, cwd=self.tmpdir,
                           env=self.pg_env(), stdin=subprocess.DEVNULL, **self.as_postgres())
        if p.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: exit {p.returncode}\n"
                                 f"{p.stdout.decode('utf-8', 'replace')}"
                                 f"{p.stderr.decode('utf-8', 'replace')}")
        return p

    # -- life cycle

    def start(self):
        """initdb (first time), start the primary, create the mxd role, then
        (with standby) pg_basebackup the standby, start it and make it the
        synchronous standby. Returns self."""
        node = self.primary
        if not os.path.exists(os.path.join(node.datadir, "PG_VERSION")):
            self.run([_tool("initdb"), "-D", node.datadir, "-U", PG_USER, "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"])
            conf = [
                "shared_buffers = 16MB",
                "max_connections = 50",
                "fsync = on",
                "synchronous_commit = on",
                "full_page_writes = on",
                "wal_level = replica",
                "max_wal_senders = 5",
                "max_replication_slots = 5",
                "wal_keep_size = 128MB",
                "hot_standby = on",
                "autovacuum = off",
                "logging_collector = off",
                "log_min_messages = warning",
                "log_line_prefix = '%m [%p] '",
                "dynamic_shared_memory_type = posix",
                "max_worker_processes = 4",
                "max_parallel_workers = 0",
            ] + list(self.extra_conf)
            with open(os.path.join(node.datadir, "postgresql.conf"), "a") as f:
                f.write("\n# mxd tests (tests/integration/pgcluster.py)\n")
                f.write("\n".join(conf) + "\n")
            with open(os.path.join(node.datadir, "pg_hba.conf"), "w") as f:
                f.write("local all all trust\n"
                        "host all all 127.0.0.1/32 trust\n"
                        "host replication all 127.0.0.1/32 trust\n")
        node.start()
        if not node.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_USER,)):
            node.query(f"CREATE ROLE {APP_USER} LOGIN CREATEDB")
        if self.standby is not None:
            self._make_standby()
        return self

    def _make_standby(self):
        sb = self.standby
        if not os.path.exists(os.path.join(sb.datadir, "PG_VERSION")):
            self.run([_tool("pg_basebackup"), "-D", sb.datadir, "-R", "-X", "stream",
                      "-c", "fast", "-d",
                      f"host=127.0.0.1 port={self.primary.port} user={PG_USER} "
                      "application_name=standby"])
            with open(os.path.join(sb.datadir, "postgresql.auto.conf"), "a") as f:
                f.write(f"primary_conninfo = 'host=127.0.0.1 port={self.primary.port} "
                        f"user={PG_USER} application_name=standby'\n")
        sb.start()
        if self.sync:
            self.primary.query("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
            self.primary.query("SELECT pg_reload_conf()")
        want = "sync" if self.sync else "async"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = self.primary.query("SELECT sync_state FROM pg_stat_replication "
                                      "WHERE application_name = 'standby' AND state = 'streaming'")
            if rows and rows[0][0] == want:
                return
            time.sleep(0.1)
        raise AssertionError(f"standby not streaming ({want}) within 60s:\n"
                             f"{self.primary.log()}\n{sb.log()}")

    def nodes(self):
        return [n for n in (self.primary, self.standby) if n is not None]

    def node(self, which):
        return which if isinstance(which, PgNode) else getattr(self, which)

    def kill(self, which="primary"):
        return self.node(which).kill()

    def stop(self, which="primary"):
        return self.node(which).stop()

    def promote(self, which="standby"):
        self.node(which).promote()

    def writable(self):
        """The node that is a running primary now, or None."""
        for n in self.nodes():
            if n.running():
                try:
                    if n.is_primary():
                        return n
                except Exception:  # noqa: BLE001 - a node that does not answer
                    pass
        return None

    def query(self, sql, args=None, db="postgres", node=None, user=PG_USER, timeout=10):
        n = self.node(node) if node is not None else (self.writable() or self.primary)
        return n.query(sql, args, db=db, user=user, timeout=timeout)

    def psql(self, sql, db="postgres", node="primary"):
        """psql -c SQL (unaligned, tuples only); returns stdout."""
        n = self.node(node)
        p = self.run([_tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                      "-h", "127.0.0.1", "-p", str(n.port), "-U", PG_USER, "-d", db, "-c", sql],
                     timeout=60)
        return p.stdout.decode("utf-8", "replace")

    def create_database(self, name=None, tablespace_dir=None):
        """A fresh database owned by the mxd role (mxd creates its schema in
        it itself). tablespace_dir: put it in a tablespace there (a
        directory postgres can write, e.g. a small loop-mounted file
        system). Returns the name."""
        self._dbs += 1
        name = name or f"mxd_{os.getpid()}_{self._dbs}"
        ts = ""
        if tablespace_dir:
            self.chown(tablespace_dir)
            tsname = f"ts_{name}"
            self.query(f"CREATE TABLESPACE {tsname} OWNER {APP_USER} "
                       f"LOCATION '{tablespace_dir}'")
            ts = f" TABLESPACE {tsname}"
        # what docs/configuration.md tells operators: mxd stores text as
        # the octets received, and refuses a database of another encoding
        self.query(f"CREATE DATABASE {name} OWNER {APP_USER} TEMPLATE template0 "
                   f"ENCODING 'SQL_ASCII' LOCALE 'C'{ts}")
        return name

    def conninfo(self, dbname, user=APP_USER, connect_timeout=2):
        """libpq conninfo naming every node, so a client finds whichever is
        the read-write primary (target_session_attrs)."""
        hosts = ",".join("127.0.0.1" for _ in self.nodes())
        ports = ",".join(str(n.port) for n in self.nodes())
        return (f"host={hosts} port={ports} dbname={dbname} user={user} "
                f"target_session_attrs=read-write connect_timeout={connect_timeout}")

    def connect(self, dbname, user=APP_USER, timeout=5):
        """A psycopg2 connection to the current primary (autocommit)."""
        pg = psycopg2_module()
        con = pg.connect(self.conninfo(dbname, user, connect_timeout=max(1, int(timeout))))
        con.autocommit = True
        return con

    def logs(self):
        return "\n".join(f"--- postgres {n.name} ({n.log_path})\n{n.log()}" for n in self.nodes())

    def close(self):
        """Stops every node we started (by PID) and removes the directory
        (unless MXD_KEEP_TMP)."""
        errors = []
        for n in reversed(self.nodes()):
            try:
                n.stop(timeout=20)
            except Exception as e:  # noqa: BLE001 - stop the others anyway
                errors.append(e)
                if n.proc is not None:
                    n.kill()
        if self._own_tmp and not os.environ.get("MXD_KEEP_TMP"):
            shutil.rmtree(self.tmpdir, True)
        if errors:
            raise errors[0]

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    with PgCluster(standby=True) as c:
        c.query("CREATE TABLE t (x int)")
        c.query("INSERT INTO t VALUES (1)")
        print(c.query("SELECT count(*) FROM t", node="standby"), c.conninfo("postgres"))
