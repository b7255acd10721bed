"""The unit tests' PostgreSQL cases (issue 21) on a private PostgreSQL.

test_sdb's `pg` group and test_store_pg exercise the sdb engine and the
store on PostgreSQL when MXD_TEST_PG names a database they may empty; on
their own they exit 77 (not run). This runs each against a fresh database
of a private PostgreSQL 15 (tests/integration/pgcluster.py) and fails
when a case fails or a binary did not run its PostgreSQL cases.

usage: test_pg_units.py BINARY [ARG] [BINARY [ARG]] ... (meson passes
build/tests/test_sdb pg build/tests/test_store_pg)
"""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgcluster  # noqa: E402

RUNS = []


class PgUnitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pgcluster.PgCluster()
        try:
            cls.pg.start()
        except BaseException:
            cls.pg.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.pg.close()

    def run_binary(self, argv):
        db = self.pg.create_database()
        env = dict(os.environ, MXD_TEST_PG=self.pg.conninfo(db, connect_timeout=5))
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=300, check=False)
        out = proc.stdout.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 0, f"{' '.join(argv)} exited {proc.returncode}:\n{out}")
        self.assertIn("PASSED", out, f"{argv[0]} ran no PostgreSQL case:\n{out}")
        self.assertNotIn("FAILED", out, out)

    def test_units(self):
        self.assertTrue(RUNS, "no binary given")
        for argv in RUNS:
            with self.subTest(binary=os.path.basename(argv[0])):
                self.run_binary(argv)


def main():
    args = sys.argv[1:]
    while args:
        argv = [os.path.abspath(args.pop(0))]
        if args and not os.path.isabs(args[0]) and "/" not in args[0]:
            argv.append(args.pop(0))
        RUNS.append(argv)
    unittest.main(argv=sys.argv[:1], verbosity=2)


if __name__ == "__main__":
    main()
