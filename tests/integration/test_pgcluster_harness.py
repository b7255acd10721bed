"""The PostgreSQL harness of the cluster tests (tests/integration/pgcluster.py)
does what those tests rely on: a primary and a synchronous standby start on
loopback, a row committed on the primary is on the standby, SIGKILL of the
primary takes every one of its processes down, and the promoted standby is
writable and found through the multi-host conninfo."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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


if __name__ == "__main__":
    unittest.main(verbosity=2)
