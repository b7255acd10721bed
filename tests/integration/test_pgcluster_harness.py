"""The PostgreSQL harness of the cluster tests (tests/integration/pgcluster.py)
does what those tests rely on: a primary and a synchronous standby start on
loopback, a row committed on the primary is on the standby, SIGKILL of the
primary takes every one of its processes down, and the promoted standby is
writable and found through the multi-host conninfo. And mxdtest.py's
PostgreSQL side (MXD_TEST_STORE=postgresql) reads a queue with the calls the
suites make against SQLite."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dovecot  # noqa: E402
import mxdtest  # noqa: E402
import pgcluster  # noqa: E402


class PgClusterHarness(unittest.TestCase):
    def setUp(self):
        self.pg = pgcluster.PgCluster(standby=True)
        self.addCleanup(self.pg.close)
        self.pg.start()

    def test_sync_standby_failover(self):
        pg = self.pg
        self.assertTrue(pg.primary.is_primary())
        self.assertFalse(pg.standby.is_primary())
        rows = pg.primary.query("SELECT application_name, sync_state FROM pg_stat_replication")
        self.assertEqual(rows, [("standby", "sync")])
        self.assertEqual(pg.primary.query("SHOW fsync"), [("on",)])
        self.assertEqual(pg.primary.query("SHOW synchronous_commit"), [("on",)])
        self.assertEqual(pg.primary.query("SHOW listen_addresses"), [("127.0.0.1",)])

        db = pg.create_database()
        con = pg.connect(db)  # as mxd, through the multi-host conninfo
        with con.cursor() as cur:
            cur.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)")
            cur.execute("INSERT INTO t (v) VALUES ('before')")
            cur.execute("SELECT inet_server_port()")
            self.assertEqual(cur.fetchone()[0], pg.primary.port)
        con.close()
        # a synchronous commit is on the standby once it returned (remote
        # flush; replay follows within moments)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if pg.standby.query("SELECT v FROM t", db=db) == [("before",)]:
                    break
            except Exception:  # noqa: BLE001 - not replayed yet
                pass
            time.sleep(0.05)
        self.assertEqual(pg.standby.query("SELECT v FROM t", db=db), [("before",)])
        with self.assertRaises(Exception):
            pg.standby.query("INSERT INTO t (v) VALUES ('standby')", db=db)

        children = pg.primary.children()
        self.assertGreaterEqual(len(children), 3, "checkpointer, walwriter, walsender...")
        pg.kill("primary")
        self.assertFalse(pg.primary.running())
        alive = [p for p in children if os.path.exists(f"/proc/{p}")]
        self.assertEqual(alive, [], "processes of the killed primary left")
        pg.promote("standby")
        con = pg.connect(db)  # finds the promoted standby by itself
        with con.cursor() as cur:
            cur.execute("INSERT INTO t (v) VALUES ('after')")
            cur.execute("SELECT inet_server_port(), array_agg(v ORDER BY id) FROM t")
            port, vals = cur.fetchone()
        con.close()
        self.assertEqual(port, pg.standby.port)
        self.assertEqual(vals, ["before", "after"])
        self.assertEqual(pg.psql("SELECT count(*) FROM t", db=db, node="standby").strip(), "2")

    def test_stop_and_start_again(self):
        pg = self.pg
        db = pg.create_database()
        pg.query("CREATE TABLE t (x int)", db=db)
        pg.query("INSERT INTO t VALUES (1)", db=db)
        pg.stop("standby")
        pg.stop("primary")
        with self.assertRaises(Exception):
            pg.connect(db, timeout=1)
        pg.primary.start()
        pg.standby.start()
        self.assertEqual(pg.query("SELECT x FROM t", db=db), [(1,)])


class MxdtestOnPostgresql(unittest.TestCase):
    """db_connect() and the helpers on a database that stands for a path,
    with a stand-in for mxd's schema (what the suites query)."""

    def test_sqlite_shaped_reads(self):
        path = os.path.join(mxdtest.make_tmpdir(self.addCleanup, "pgdb"), "queue.db")
        conninfo = mxdtest.pg_database(path)
        self.assertIn("target_session_attrs=read-write", conninfo)
        self.assertEqual(mxdtest.pg_database(path), conninfo, "same path, same database")
        db = mxdtest._PG_DBS[path]
        pg = mxdtest.shared_pg()
        for sql in ("CREATE TABLE messages (id bigserial PRIMARY KEY, qid text UNIQUE, "
                    "body bytea)",
                    "CREATE TABLE message_rcpts (id bigserial PRIMARY KEY, message_id bigint "
                    "REFERENCES messages(id) ON DELETE CASCADE, address text, domain text, "
                    "state text)"):
            pg.query(sql, db=db, user=pgcluster.APP_USER)
        body = b"Received: from x\r\n\tby mx; now\r\n\r\n100% marker-1\r\n"
        pg.query("INSERT INTO messages (qid, body) VALUES ('Q1', %s)", (body,), db=db)
        pg.query("INSERT INTO message_rcpts (message_id, address, domain, state) "
                 "VALUES (1, 'a@example.test', 'example.test', 'queued')", db=db)
        self.assertEqual(mxdtest.messages_containing(path, "marker-1"), ["Q1"])
        self.assertEqual(mxdtest.messages_containing(path, b"marker-2"), [])
        self.assertEqual(mxdtest.message_count(path), 1)
        self.assertEqual(mxdtest.message_count(path, "qid = ?", ("Q2",)), 0)
        self.assertEqual(mxdtest.integrity_check(path), ["ok"])
        self.assertEqual(dovecot.queue_counts(path), (1, {"queued": 1}))
        msg = mxdtest.message_by_qid(path, "Q1")
        self.assertEqual(msg["rcpts"][0]["address"], "a@example.test")
        con = mxdtest.db_connect(path)
        try:
            rows = con.execute("SELECT r.address, r.domain FROM message_rcpts r JOIN messages m "
                               "ON m.id = r.message_id WHERE m.qid = ? AND r.state LIKE 'q%'",
                               ("Q1",)).fetchall()
            self.assertEqual([tuple(r) for r in rows], [("a@example.test", "example.test")])
            row = con.execute("SELECT id, body FROM messages WHERE qid = ?", ("Q1",)).fetchone()
            self.assertEqual(mxdtest.split_received(row["body"])[1], b"\r\n100% marker-1\r\n")
            self.assertEqual(dict(con.execute("SELECT state, count(*) FROM message_rcpts "
                                              "GROUP BY state")), {"queued": 1})
            with self.assertRaises(Exception):  # read-only, as the SQLite side
                con.execute("DELETE FROM messages")
        finally:
            con.close()
        pg.query("DELETE FROM messages", db=db)
        pg.query("ALTER TABLE message_rcpts DROP CONSTRAINT message_rcpts_message_id_fkey",
                 db=db)
        pg.query("INSERT INTO message_rcpts (message_id, address, domain, state) "
                 "VALUES (7, 'b@example.test', 'example.test', 'queued')", db=db)
        self.assertEqual(mxdtest.integrity_check(path),
                         ["1 recipient rows without their message"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
