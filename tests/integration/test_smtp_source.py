"""Load from Postfix's smtp-source: every message it sends is stored; prints
the rate. MXD_SMTP_SOURCE_SESSIONS / _MESSAGES / _LENGTH override the
defaults (20 sessions, 1000 messages, 4096 octets) for measurements."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import MxdTestCase  # noqa: E402

SESSIONS = int(os.environ.get("MXD_SMTP_SOURCE_SESSIONS", "20"))
MESSAGES = int(os.environ.get("MXD_SMTP_SOURCE_MESSAGES", "1000"))
LENGTH = int(os.environ.get("MXD_SMTP_SOURCE_LENGTH", "4096"))
SENDER = "sender@source.test"
RCPT = "rcpt@example.test"


class SmtpSource(MxdTestCase):
    SERVER = {"max_connections_per_ip": str(max(200, SESSIONS * 4))}

    def test_smtp_source(self):
        exe = mxdtest.require_tool("smtp-source", ["/usr/sbin/smtp-source"])
        cmd = [exe, "-s", str(SESSIONS), "-m", str(MESSAGES), "-l", str(LENGTH),
               "-f", SENDER, "-t", RCPT, f"127.0.0.1:{self.mxd.port}"]
        started = time.monotonic()
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=400)
        except subprocess.TimeoutExpired:
            self.fail(f"smtp-source did not finish in 400s: {' '.join(cmd)}")
        took = time.monotonic() - started
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, f"{' '.join(cmd)} failed:\n{out}")
        self.assertNotIn("fatal", out, out)
        self.assertNotIn("error", out.lower(), out)

        con = mxdtest.db_connect(self.mxd.db_path)
        try:
            n = con.execute("SELECT count(*) FROM messages WHERE sender = ?",
                            (SENDER,)).fetchone()[0]
            nr = con.execute(
                "SELECT count(*) FROM message_rcpts r JOIN messages m ON m.id = r.message_id"
                " WHERE m.sender = ? AND r.address = ? AND r.domain = 'example.test'"
                " AND r.state IN ('queued', 'deferred')", (SENDER, RCPT)).fetchone()[0]
            small = con.execute("SELECT count(*) FROM messages WHERE sender = ? AND"
                                " length(body) < ?", (SENDER, LENGTH)).fetchone()[0]
            sample = con.execute("SELECT qid, body FROM messages WHERE sender = ? LIMIT 5",
                                 (SENDER,)).fetchall()
        finally:
            con.close()
        self.assertEqual(n, MESSAGES, "messages stored")
        self.assertEqual(nr, MESSAGES, "recipient rows stored")
        self.assertEqual(small, 0, f"messages shorter than the {LENGTH}-octet payload")
        for row in sample:
            hdr, rest = mxdtest.split_received(row["body"])
            mxdtest.check_received(hdr, row["qid"], with_proto=("ESMTP", "SMTP"))
            self.assertNotIn(b"\r\n.\r\n", rest)
        rate = MESSAGES / took
        print(f"\nsmtp-source -s {SESSIONS} -m {MESSAGES} -l {LENGTH}: {MESSAGES} messages in "
              f"{took:.2f}s = {rate:.0f} messages/second", file=sys.stderr)


if __name__ == "__main__":
    mxdtest.main()
