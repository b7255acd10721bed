#!/usr/bin/env python3
"""mxctl against a fresh database in a temporary directory (always via -d).

Run: MXCTL=build/src/mxctl python3 tests/integration/test_mxctl.py
Messages are inserted with Python's sqlite3 after mxctl created the schema
(make_db: only `recipient add` creates a database), the way mxd's store
would have written them.
"""
import base64
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import unittest

MXCTL = os.environ.get("MXCTL", "")


class MxctlTest(unittest.TestCase):
    def setUp(self):
        if not MXCTL or not os.access(MXCTL, os.X_OK):
            self.fail("set MXCTL to the mxctl binary")
        self.tmp = tempfile.mkdtemp(prefix="test_mxctl.")
        self.db = os.path.join(self.tmp, "sub", "queue.db")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def mxctl(self, *args, db=True):
        argv = [MXCTL] + (["-d", self.db] if db else []) + list(args)
        return subprocess.run(argv, capture_output=True, timeout=30)

    def ok(self, *args):
        p = self.mxctl(*args)
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        return p.stdout

    def make_db(self):
        """The schema, with an empty recipients table."""
        p = self.mxctl("recipient", "add", "@init.invalid")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, f"mxctl: created database {self.db}\n".encode())
        self.ok("recipient", "del", "@init.invalid")

    def insert_message(self, qid, body, sender="sender@example.net", received=None,
                       rcpts=(("rcpt@example.com", "queued", 0, 0, None),)):
        """rcpts: (address, state, attempts, next_attempt offset from now, last_reply)."""
        now = int(time.time())
        received = now - 125 if received is None else received
        con = sqlite3.connect(self.db)
        with con:
            cur = con.execute(
                "INSERT INTO messages (qid, received, client_addr, helo, sender, smtputf8, "
                "body_8bit, size, body) VALUES (?, ?, '192.0.2.7', 'client.example.net', ?, "
                "0, 1, ?, ?)", (qid, received, sender, len(body), body))
            for addr, state, attempts, nxt, reply in rcpts:
                con.execute(
                    "INSERT INTO message_rcpts (message_id, address, domain, state, attempts, "
                    "next_attempt, last_reply) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (cur.lastrowid, addr, addr.rsplit("@", 1)[1].lower(), state, attempts,
                     now + nxt, reply))
        con.close()

    # ---- recipients ------------------------------------------------------

    def test_recipient_add_list_del(self):
        self.make_db()
        self.assertEqual(self.ok("recipient", "list"), b"")
        self.ok("recipient", "add", "zed@example.com", "@Example.org", "alice@example.com")
        # An existing entry (in any case) is not an error.
        self.ok("recipient", "add", "ALICE@example.com")
        self.assertEqual(self.ok("recipient", "list").decode().splitlines(),
                         ["@Example.org", "alice@example.com", "zed@example.com"])
        # One missing: exit 1, but the others are deleted.
        p = self.mxctl("recipient", "del", "zed@example.com", "nobody@example.com")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"nobody@example.com", p.stderr)
        self.assertEqual(self.ok("recipient", "list").decode().splitlines(),
                         ["@Example.org", "alice@example.com"])
        # Deletion is case-insensitive like the lookup.
        self.ok("recipient", "del", "@example.ORG")
        self.assertEqual(self.ok("recipient", "list"), b"alice@example.com\n")

    def test_recipient_usage_errors(self):
        for args in (["recipient"], ["recipient", "add"], ["recipient", "del"],
                     ["recipient", "frob", "a@b"], ["recipient", "list", "extra"],
                     ["recipient", "add", "no-at-sign"], ["recipient", "add", "a b@c"],
                     ["recipient", "add", "a@"], ["recipient", "add", "tab\t@x"],
                     ["recipient", "add", "good@example.com", "bad"]):
            p = self.mxctl(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(b"usage:", p.stderr, args)
        # Validation happens before anything is written (or created).
        self.assertFalse(os.path.exists(os.path.dirname(self.db)))

    def test_recipient_seen_by_sqlite(self):
        self.ok("recipient", "add", "@catchall.example")
        con = sqlite3.connect(self.db)
        row = con.execute("SELECT 1 FROM recipients WHERE address = ? OR address = '@' || ?",
                          ("x@CATCHALL.example", "CATCHALL.example")).fetchone()
        con.close()
        self.assertEqual(row, (1,))

    # ---- usage -----------------------------------------------------------

    def test_usage(self):
        for args in ([], ["frobnicate"], ["-x", "queue"], ["-d"], ["queue", "extra"],
                     ["show"], ["show", "a", "b"]):
            p = self.mxctl(*args, db=False) if args[:1] == ["-d"] else self.mxctl(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(b"usage:", p.stderr, args)
        p = self.mxctl("-h")
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"usage:", p.stdout)

    def test_usage_daemon_commands(self):
        # Checked before the configuration is read or the daemon asked.
        for args in (["hold"], ["hold", "a", "b"], ["release"], ["delete"], ["bounce"],
                     ["hold", "bad id"], ["hold", "nl\nid"], ["flush", "a", "b"],
                     ["stats", "extra"]):
            p = self.mxctl(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(b"usage:", p.stderr, args)

    def test_unreadable_config(self):
        p = self.mxctl("-c", os.path.join(self.tmp, "missing.conf"), "queue", db=False)
        self.assertEqual(p.returncode, 1)
        self.assertNotEqual(p.stderr, b"")

    # ---- queue and show --------------------------------------------------

    def test_missing_database_not_created(self):
        # A typo in -d must not leave an empty database (or directories):
        # only `recipient add` creates one.
        for args in (["queue"], ["queue", "--json"], ["show", "01X"], ["recipient", "list"],
                     ["recipient", "del", "a@example.com"]):
            p = self.mxctl(*args)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn(f"database {self.db} does not exist".encode(), p.stderr, args)
            self.assertEqual(p.stdout, b"", args)
            self.assertFalse(os.path.exists(os.path.dirname(self.db)), args)
        p = self.mxctl("recipient", "add", "a@example.com")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"created database", p.stderr)
        # ... and says so only the first time
        p = self.mxctl("recipient", "add", "b@example.com")
        self.assertEqual((p.returncode, p.stderr), (0, b""))
        self.assertEqual(self.ok("recipient", "list"), b"a@example.com\nb@example.com\n")

    def test_schema_created(self):
        self.make_db()
        con = sqlite3.connect(self.db)
        version = con.execute("PRAGMA user_version").fetchone()[0]
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        con.close()
        self.assertGreaterEqual(version, 1)
        self.assertEqual(mode, "wal")

    def test_queue_empty(self):
        self.make_db()
        self.assertEqual(self.ok("queue"), b"queue is empty\n")

    def test_show_unknown(self):
        self.make_db()
        p = self.mxctl("show", "NOSUCHID")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"NOSUCHID", p.stderr)
        self.assertEqual(p.stdout, b"")

    def test_queue_lists_messages(self):
        self.make_db()
        self.insert_message("01QUEUEA", b"Subject: a\r\n\r\nhello\r\n", rcpts=(
            ("one@example.com", "queued", 0, -5, None),
            ("two@example.com", "deferred", 2, 600, "451 4.2.0 mailbox busy"),
        ))
        self.insert_message("01QUEUEB", b"x" * 1000, sender="",
                            received=int(time.time()) - 3 * 86400,
                            rcpts=(("held@example.org", "held", 1, 0, None),))
        lines = self.ok("queue").decode().splitlines()
        self.assertEqual(lines[0].split(), ["QUEUE-ID", "AGE", "SIZE", "SENDER"])
        # Oldest first; then each recipient, indented.
        self.assertEqual(lines[1].split(), ["01QUEUEB", "3d", "1000", "<>"])
        # Held mail for a backup domain has its retry scheduled like any
        # other (issue 14 item 18); only an operator's hold shows "-".
        self.assertTrue(lines[2].startswith("    <held@example.org> held attempts=1 next=now"))
        self.assertEqual(lines[3].split(), ["01QUEUEA", "2m", "21", "<sender@example.net>"])
        self.assertEqual(lines[4], "    <one@example.com> queued attempts=0 next=now last=-")
        self.assertTrue(lines[5].startswith("    <two@example.com> deferred attempts=2 next=in "),
                        lines[5])
        self.assertTrue(lines[5].endswith(' last="451 4.2.0 mailbox busy"'), lines[5])
        self.assertEqual(len(lines), 6)

    def test_show_message(self):
        self.make_db()
        rnd = random.Random(7)
        # Larger than mxctl's 64 KiB chunk, with NULs, bare CR/LF and 8-bit bytes.
        body = (b"Received: from client.example.net\r\n\r\n" +
                bytes(rnd.getrandbits(8) for _ in range(300 * 1024)) + b"\x00end\r\n")
        self.insert_message("01SHOWME", body, rcpts=(
            ("a@example.com", "queued", 0, 0, None),
            ("b@example.com", "delivered", 1, 0, "250 2.0.0 ok"),
        ))
        out = self.ok("show", "01SHOWME")
        head, sep, rest = out.partition(b"\n\n")
        self.assertEqual(sep, b"\n\n")
        self.assertEqual(rest, body)
        env = head.decode().splitlines()
        self.assertIn("qid: 01SHOWME", env)
        self.assertIn("client: 192.0.2.7", env)
        self.assertIn("helo: client.example.net", env)
        self.assertIn("sender: <sender@example.net>", env)
        self.assertIn("size: %d" % len(body), env)
        self.assertIn("options: BODY=8BITMIME", env)
        self.assertTrue(any(line.startswith("received: ") and line.endswith("Z") for line in env))
        self.assertTrue(any(line.startswith("recipient: <a@example.com> queued") for line in env))
        self.assertTrue(any(line.startswith("recipient: <b@example.com> delivered")
                            and line.endswith('last="250 2.0.0 ok"') for line in env))

    def test_show_escapes_envelope(self):
        self.make_db()
        con = sqlite3.connect(self.db)
        with con:
            cur = con.execute(
                "INSERT INTO messages (qid, received, client_addr, helo, sender, size, body) "
                "VALUES ('01ESC', 0, '192.0.2.1', ?, 'a@b', 1, x'41')", ("evil\x1b[2J",))
            con.execute("INSERT INTO message_rcpts (message_id, address, domain, next_attempt) "
                        "VALUES (?, 'c@d', 'd', 0)", (cur.lastrowid,))
        con.close()
        out = self.ok("show", "01ESC")
        self.assertNotIn(b"\x1b", out)
        self.assertIn(b"helo: evil\\x1b[2J\n", out)
        self.assertTrue(out.endswith(b"\n\nA"))


    # ---- --json ----------------------------------------------------------

    def json_ok(self, *args):
        out = self.ok(*args)
        self.assertTrue(out.endswith(b"\n"), out[-100:])
        return json.loads(out)

    def test_json_recipient_list(self):
        self.make_db()
        self.assertEqual(self.json_ok("recipient", "list", "--json"), {"recipients": []})
        self.ok("recipient", "add", "b@example.com", "@example.org")
        # --json may come anywhere on the command line.
        for args in (["--json", "recipient", "list"], ["recipient", "--json", "list"],
                     ["recipient", "list", "--json"]):
            self.assertEqual(self.json_ok(*args),
                             {"recipients": ["@example.org", "b@example.com"]}, args)
        # Commands without output accept it too.
        self.ok("recipient", "add", "c@example.com", "--json")

    def test_json_queue(self):
        self.make_db()
        self.assertEqual(self.json_ok("queue", "--json"), {"messages": []})
        now = int(time.time())
        self.insert_message("01QUEUEA", b"Subject: a\r\n\r\nhello\r\n", rcpts=(
            ("one@Example.com", "queued", 0, -5, None),
            ("two@example.com", "deferred", 2, 600, "451 4.2.0 mailbox busy"),
        ))
        self.insert_message("01QUEUEB", b"x" * 1000, sender="", received=now - 3 * 86400,
                            rcpts=(("held@example.org", "held", 1, 0, "451 4.4.1 \"q\" \\ x"),))
        got = self.json_ok("--json", "queue")
        msgs = got["messages"]
        self.assertEqual([m["qid"] for m in msgs], ["01QUEUEB", "01QUEUEA"])
        b, a = msgs
        self.assertEqual(b["sender"], "")
        self.assertEqual(b["size"], 1000)
        self.assertEqual(b["received"], now - 3 * 86400)
        self.assertAlmostEqual(b["age"], 3 * 86400, delta=30)
        held_next = b["rcpts"][0].pop("next_attempt")
        self.assertAlmostEqual(held_next, now, delta=30)  # scheduled (issue 14 item 18)
        self.assertEqual(b["rcpts"], [{
            "address": "held@example.org", "domain": "example.org", "state": "held",
            "attempts": 1, "last_reply": "451 4.4.1 \"q\" \\ x"}])
        self.assertEqual(a["sender"], "sender@example.net")
        self.assertEqual(a["size"], 21)
        self.assertAlmostEqual(a["age"], 125, delta=30)
        one, two = a["rcpts"]
        self.assertEqual((one["address"], one["domain"], one["state"], one["attempts"],
                          one["last_reply"]), ("one@Example.com", "example.com", "queued", 0, None))
        self.assertAlmostEqual(one["next_attempt"], now - 5, delta=30)
        self.assertEqual((two["state"], two["attempts"], two["last_reply"]),
                         ("deferred", 2, "451 4.2.0 mailbox busy"))
        self.assertAlmostEqual(two["next_attempt"], now + 600, delta=30)

    def test_json_show_utf8(self):
        self.make_db()
        body = "Received: x\r\nSubject: caf\u00e9 \u2603\r\n\r\nnul\x00 \"quote\" \\\r\n".encode()
        self.insert_message("01JSON", body, rcpts=(
            ("a@example.com", "queued", 0, 0, None),
            ("b@example.com", "delivered", 1, 0, "250 2.0.0 ok"),
        ))
        got = self.json_ok("show", "01JSON", "--json")
        self.assertEqual(got["qid"], "01JSON")
        self.assertEqual(got["client"], "192.0.2.7")
        self.assertEqual(got["helo"], "client.example.net")
        self.assertEqual(got["sender"], "sender@example.net")
        self.assertEqual(got["size"], len(body))
        self.assertIsInstance(got["received"], int)
        self.assertEqual(got["body"].encode(), body)
        self.assertNotIn("body_base64", got)
        self.assertEqual([(r["address"], r["state"], r["last_reply"]) for r in got["rcpts"]],
                         [("a@example.com", "queued", None),
                          ("b@example.com", "delivered", "250 2.0.0 ok")])

    def test_json_show_binary(self):
        self.make_db()
        rnd = random.Random(11)
        body = b"Received: x\r\n\r\n" + bytes(rnd.getrandbits(8) for _ in range(70000)) + b"\xff"
        self.insert_message("01BIN", body)
        con = sqlite3.connect(self.db)
        with con:  # peer-supplied envelope text that is not UTF-8
            con.execute("UPDATE messages SET helo = CAST(? AS TEXT) WHERE qid = '01BIN'",
                        (b"h\xffl\xc3o\xe2\x82",))
        con.close()
        got = self.json_ok("--json", "show", "01BIN")
        self.assertNotIn("body", got)
        self.assertEqual(base64.b64decode(got["body_base64"], validate=True), body)
        self.assertEqual(got["helo"], "h\ufffdl\ufffdo\ufffd\ufffd")

    def test_json_show_unknown(self):
        self.make_db()
        p = self.mxctl("show", "NOSUCHID", "--json")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"NOSUCHID", p.stderr)
        self.assertEqual(p.stdout, b"")

    # ---- the control socket ------------------------------------------------

    def write_conf(self, control_socket=None, store=None):
        path = os.path.join(self.tmp, "mxd.conf")
        with open(path, "w") as f:
            f.write("[server]\nhostname = mx.test.invalid\nlisten = 127.0.0.1:2525\n"
                    f"database = {self.db}\n")
            if store:
                f.write(f"store = {store}\n")
            if control_socket:
                f.write(f"control_socket = {control_socket}\n")
            f.write("\n[domain example.test]\nmode = local\n")
        return path

    def test_control_socket_not_set(self):
        conf = self.write_conf()
        for args in (["stats"], ["hold", "01ABC"], ["flush"], ["release", "01ABC"],
                     ["delete", "01ABC"], ["bounce", "01ABC"], ["flush", "example.test"]):
            p = self.mxctl("-c", conf, *args, db=False)
            self.assertEqual(p.returncode, 1, args)
            self.assertEqual(p.stderr.decode(),
                             f"mxctl: control_socket is not set in {conf}\n", args)
            self.assertEqual(p.stdout, b"")

    def test_daemon_not_running(self):
        self.make_db()  # stats reads the queue too
        sock = os.path.join(self.tmp, "control.sock")
        conf = self.write_conf(sock)
        for args in (["stats"], ["stats", "--json"], ["hold", "01ABC"], ["flush"]):
            p = self.mxctl("-c", conf, *args, db=False)
            self.assertEqual(p.returncode, 1, args)
            self.assertEqual(p.stderr.decode(), f"mxctl: cannot reach mxd at {sock} "
                             "(is it running?): No such file or directory\n", args)
            self.assertEqual(p.stdout, b"")
        # A stale socket file left by a daemon that died.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sock)
        s.close()
        p = self.mxctl("-c", conf, "release", "01ABC", db=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr.decode(), f"mxctl: cannot reach mxd at {sock} "
                         "(is it running?): Connection refused\n")

    # ---- cluster ---------------------------------------------------------

    def test_cluster_not_on_sqlite(self):
        # SQLite has no cluster: refused (exit 1), whether the database is
        # -d's or the configuration's, and nothing is created or opened.
        want = "mxctl: not a cluster (store = sqlite)\n"
        conf = self.write_conf()
        for args, db in ((["cluster"], True), (["cluster", "--json"], True),
                         (["-c", conf, "cluster"], False),
                         (["-c", conf, "--json", "cluster"], False)):
            p = self.mxctl(*args, db=db)
            self.assertEqual((p.returncode, p.stderr.decode(), p.stdout), (1, want, b""), args)
            self.assertFalse(os.path.exists(os.path.dirname(self.db)), args)
        self.make_db()
        p = self.mxctl("cluster")
        self.assertEqual((p.returncode, p.stderr.decode(), p.stdout), (1, want, b""))

    def test_cluster_usage(self):
        p = self.mxctl("cluster", "mx1")
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"unexpected argument 'mx1'", p.stderr)
        self.assertIn(b"cluster", self.mxctl("--help").stdout)

    def test_cluster_postgresql_unreachable(self):
        # store = postgresql goes to PostgreSQL (never "not a cluster"); an
        # unreachable server is a failure (exit 1) with the reason.
        conf = self.write_conf(store="postgresql\npostgresql = host=127.0.0.1 port=1 "
                               "dbname=mxd connect_timeout=5")
        p = self.mxctl("-c", conf, "cluster", db=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b"")
        self.assertNotIn(b"not a cluster", p.stderr)
        self.assertTrue(p.stderr.startswith(b"mxctl: "), p.stderr)
        self.assertFalse(os.path.exists(os.path.dirname(self.db)))


if __name__ == "__main__":
    unittest.main()
