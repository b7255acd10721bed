"""Configuration: mxd --check accepts valid files and reports every error as
FILE:LINE:, mxd refuses to start on a bad file, the shipped conf/mxd.conf
is valid, --version, IPv4 + IPv6 listeners from one comma list."""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
import tlsutil  # noqa: E402


class Config(unittest.TestCase):
    def setUp(self):
        self.tmpdir = mxdtest.make_tmpdir(self.addCleanup, "config")
        self.port = mxdtest.free_port()

    def write(self, text, name="mxd.conf"):
        path = os.path.join(self.tmpdir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def valid_text(self):
        return mxdtest.config_text(mxdtest.default_server(self.tmpdir, self.port),
                                   mxdtest.DEFAULT_DOMAINS)

    def with_line(self, after, line):
        """Valid config with line inserted after the line starting with
        `after`; returns (text, 1-based line number of the new line)."""
        lines = self.valid_text().splitlines()
        idx = next(i for i, ln in enumerate(lines) if ln.startswith(after))
        lines.insert(idx + 1, line)
        return "\n".join(lines) + "\n", idx + 2

    def replaced(self, key, value):
        lines = self.valid_text().splitlines()
        idx = next(i for i, ln in enumerate(lines) if ln.split("=")[0].strip() == key)
        lines[idx] = f"{key} = {value}"
        return "\n".join(lines) + "\n", idx + 1

    def check(self, path, cwd=None):
        return subprocess.run([mxdtest.mxd_path(), "--check", "-c", path],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                              cwd=cwd or self.tmpdir)

    def assert_error_at(self, text, lineno, what):
        path = self.write(text)
        p = self.check(path)
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 1, f"{what}: --check exit {p.returncode}, stderr:\n{err}")
        self.assertRegex(err, rf"(?m)^{re.escape(path)}:{lineno}: \S",
                         f"{what}: no '{path}:{lineno}: message' line in:\n{err}")
        return err

    def test_check_valid(self):
        path = self.write(self.valid_text())
        p = self.check(path)
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))

    def test_check_valid_table_domain_and_ipv6(self):
        server = mxdtest.default_server(self.tmpdir, self.port)
        server["listen"] = f"127.0.0.1:{self.port}, [::1]:{self.port}"
        text = mxdtest.config_text(server, {
            "example.test": {"mode": "local", "recipients": "any"},
            "table.test": {"mode": "local", "recipients": "table"},
        })
        p = self.check(self.write(text))
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))

    def test_milter_sections(self):
        """Issue 17: [milter NAME] sections and milters lists, checked with
        FILE:LINE (an unknown name, a bad socket, a duplicate section, a
        section no list names), and a valid set."""
        base = self.valid_text()
        ok = base + ("\n[milter rspamd]\nsocket = inet:127.0.0.1:11332\ndefault_action = accept\n")
        text, _ = self.with_line("hostname", "milters = rspamd, unix:/run/clamav/milter.sock")
        path = self.write(text + ok[len(base):])
        p = self.check(path)
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        text, n = self.with_line("hostname", "milters = rspamd, spamass")
        err = self.assert_error_at(text + ok[len(base):], n, "unknown filter")
        self.assertIn("no [milter NAME] section of that name (got 'spamass')", err)
        text, n = self.with_line("hostname", "milters = inet:example.net:11332")
        self.assert_error_at(text, n, "socket with a host name")
        text, _ = self.with_line("hostname", "milters = a")
        text += "\n[milter a]\nsocket = unix:/a\n[milter a]\nsocket = unix:/b\n"
        n = text.splitlines().index("[milter a]", text.splitlines().index("[milter a]") + 1) + 1
        err = self.assert_error_at(text, n, "duplicate section")
        self.assertIn("duplicate [milter a]", err)
        text = base + "\n[milter unused]\nsocket = unix:/a\n"
        n = text.splitlines().index("[milter unused]") + 1
        err = self.assert_error_at(text, n, "unused section")
        self.assertIn("no milters list names it", err)

    def test_unknown_key(self):
        text, n = self.with_line("hostname", "no_such_key = 1")
        err = self.assert_error_at(text, n, "unknown key")
        self.assertIn("no_such_key", err)

    def test_unknown_key_in_domain(self):
        text, n = self.with_line("mode", "colour = blue")
        self.assert_error_at(text, n, "unknown domain key")

    def test_unknown_section(self):
        text = self.valid_text() + "\n[bogus]\nkey = value\n"
        n = text.splitlines().index("[bogus]") + 1
        p = self.check(self.write(text))
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 1, err)
        self.assertRegex(err, rf":({n}|{n + 1}): \S", f"line {n} not named:\n{err}")

    def test_bad_size(self):
        text, n = self.replaced("max_message_size", "12x")
        self.assert_error_at(text, n, "bad size")

    def test_bad_numbers(self):
        for key, val in (("max_message_size", "-5m"), ("max_recipients", "many"),
                         ("max_connections_per_ip", "12abc"), ("max_recipients", "")):
            with self.subTest(key=key, val=val):
                text, n = self.replaced(key, val)
                self.assert_error_at(text, n, f"{key} = {val}")

    def test_bad_duration(self):
        text, n = self.replaced("command_timeout", "soon")
        self.assert_error_at(text, n, "bad duration")
        text, n = self.replaced("data_timeout", "10x")
        self.assert_error_at(text, n, "bad duration")

    def test_bad_listen(self):
        text, n = self.replaced("listen", "not-an-address")
        self.assert_error_at(text, n, "bad listen")

    def test_bad_domain_mode(self):
        text, n = self.replaced("recipients", "everybody")
        self.assert_error_at(text, n, "bad recipients")

    def pg_text(self, conninfo):
        """Valid config with store = postgresql and postgresql = conninfo
        (any store/postgresql line the harness wrote replaced); returns
        (text, 1-based line of the postgresql key)."""
        lines = [ln for ln in self.valid_text().splitlines()
                 if ln.split("=")[0].strip() not in ("store", "postgresql")]
        idx = next(i for i, ln in enumerate(lines) if ln.startswith("hostname"))
        lines[idx + 1:idx + 1] = ["store = postgresql", f"postgresql = {conninfo}"]
        return "\n".join(lines) + "\n", idx + 3

    def test_postgresql_conninfo(self):
        """Issue 21: --check parses the conninfo with libpq (no connection:
        port 1 answers nobody) and names FILE:LINE with libpq's reason; mxd
        refuses to start with the same line."""
        for ok in ("host=127.0.0.1 port=1 dbname=mxd connect_timeout=1",
                   "host=127.0.0.1,127.0.0.2 port=1,1 target_session_attrs=read-write",
                   "postgresql://127.0.0.1:1,127.0.0.2:1/mxd?target_session_attrs=read-write",
                   "dbname='my queue' host=/run/postgresql"):
            with self.subTest(ok=ok):
                p = self.check(self.write(self.pg_text(ok)[0]))
                self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        for bad, want in (("host=127.0.0.1 bogus_key=1", 'invalid connection option "bogus_key"'),
                          ("host='127.0.0.1 dbname=mxd", "unterminated quoted string"),
                          ("host=127.0.0.1 dbname", 'missing "=" after "dbname"'),
                          ("postgresql://127.0.0.1:1/mxd?nosuch=1", "nosuch")):
            with self.subTest(bad=bad):
                text, n = self.pg_text(bad)
                err = self.assert_error_at(text, n, f"postgresql = {bad}")
                self.assertIn(f":{n}: postgresql: ", err)
                self.assertIn(want, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
        text, n = self.pg_text("host=127.0.0.1 bogus_key=1")
        path = self.write(text, "start.conf")
        p = subprocess.run([mxdtest.mxd_path(), "-c", path], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30, cwd=self.tmpdir)
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 1, err)
        self.assertRegex(err, rf"(?m)^{re.escape(path)}:{n}: postgresql: invalid connection", err)

    def test_every_error_reported(self):
        lines = self.valid_text().splitlines()
        i1 = next(i for i, ln in enumerate(lines) if ln.startswith("max_recipients"))
        lines[i1] = "max_recipients = lots"
        i2 = next(i for i, ln in enumerate(lines) if ln.startswith("data_timeout"))
        lines[i2] = "data_timeout = whenever"
        path = self.write("\n".join(lines) + "\n")
        p = self.check(path)
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 1, err)
        for n in (i1 + 1, i2 + 1):
            self.assertRegex(err, rf"(?m)^{re.escape(path)}:{n}: \S", err)

    def test_missing_file(self):
        path = os.path.join(self.tmpdir, "does-not-exist.conf")
        p = self.check(path)
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 1, err)
        self.assertIn(path, err)

    def test_refuses_to_start_with_bad_config(self):
        text, n = self.with_line("hostname", "no_such_key = 1")
        path = self.write(text)
        proc = subprocess.Popen([mxdtest.mxd_path(), "-c", path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.tmpdir)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=30)
            self.fail("mxd kept running with an invalid config")
        err = err.decode("utf-8", "replace")
        self.assertNotEqual(proc.returncode, 0, err)
        self.assertIn(f"{path}:{n}:", err)
        with self.assertRaises(OSError, msg="mxd listens despite a bad config"):
            mxdtest.SmtpClient(self.port, timeout=2).close()

    def test_shipped_config(self):
        root = mxdtest.source_root()
        path = os.path.join(root, "conf", "mxd.conf")
        self.assertTrue(os.path.exists(path), f"{path} missing")
        p = self.check(path, cwd=root)
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))

    def test_port25_config_in_operations_md(self):
        """docs/operations.md section 11's complete configuration loads (its
        certificate paths replaced by a real pair: --check reads them)."""
        root = mxdtest.source_root()
        with open(os.path.join(root, "docs", "operations.md"), encoding="utf-8") as f:
            doc = f.read()
        m = re.search(r"<!-- port25:begin -->\n```ini\n(.*?)```\n<!-- port25:end -->", doc, re.S)
        self.assertIsNotNone(m, "no port25 block in docs/operations.md")
        pki = tlsutil.make_pki(os.path.join(self.tmpdir, "pki"))
        text = m.group(1).replace("/etc/mxd/cert.pem", pki.cert).replace(
            "/etc/mxd/key.pem", pki.key)
        for line in text.splitlines():
            self.assertLessEqual(len(line.encode()), 196, f"line too long for inih: {line}")
        p = self.check(self.write(text))
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))

    def test_version(self):
        with open(os.path.join(mxdtest.source_root(), "meson.build"), encoding="utf-8") as f:
            want = re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)
        p = subprocess.run([mxdtest.mxd_path(), "--version"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(want, (p.stdout + p.stderr).decode())

    def test_listen_ipv4_and_ipv6(self):
        port6 = mxdtest.free_port("::1")
        mxd = mxdtest.Mxd(self.tmpdir, server={
            "listen": f"127.0.0.1:{self.port}, [::1]:{port6}"}, port=self.port)
        mxd.start()
        try:
            with mxdtest.SmtpClient(port6, host="::1") as c:
                r = c.reply()
                self.assertEqual(r.code, 220, str(r))
                c.ehlo()
                content = b"Subject: over IPv6\r\n\r\nv6\r\n"
                r = c.send_message("six@client.test", ["user@example.test"], content,
                                   ehlo=False)
                self.assertEqual(r.code, 250, str(r))
                msg = mxdtest.message_by_qid(mxd.db_path, r.qid)
                self.assertIsNotNone(msg)
                self.assertEqual(msg["row"]["client_addr"], "::1")
                _, rest = mxdtest.split_received(msg["row"]["body"])
                self.assertEqual(rest, content)
            with mxdtest.SmtpClient(self.port) as c:
                self.assertEqual(c.reply().code, 220)
        finally:
            mxd.stop(check=True)


if __name__ == "__main__":
    mxdtest.main()
