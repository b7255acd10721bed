"""Issue 18, part 3: provenance for the primary (Postfix's XFORWARD).

A private Postfix is the primary of example.org, trusting loopback with
`smtpd_authorized_xforward_hosts = 127.0.0.0/8`, its own delivery
deferred so the message stays in its queue. A client connects to mxd from
127.0.0.9 and says EHLO orig-client.test; mxd forwards the message and
sends XFORWARD first, so Postfix's log and the queue file's log_*
attributes (postcat) name 127.0.0.9 and orig-client.test, not mxd's
127.0.0.1, and carry mxd's queue id as the log ident. (Postfix uses
XFORWARD for logging; its own Received: header still names the host that
connected: mxd.)
"""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import mxdtest  # noqa: E402
from dovecot import make_message, wait_for  # noqa: E402

CLIENT = "127.0.0.9"
HELO = "orig-client.test"


class XforwardPostfixPrimary(mxdtest.MxdTestCase):

    @classmethod
    def setUpClass(cls):
        from postfix import Postfix
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, cls.__name__)
        os.chmod(cls.tmpdir, 0o755)  # Postfix's own users walk into it
        port = mxdtest.free_port()
        cls.pf = Postfix(cls.tmpdir, port, "example.org",
                         os.path.join(cls.tmpdir, "nowhere.sock"), hold=True,
                         extra=os.environ.get("XF_POSTFIX_EXTRA",
                                              "smtpd_authorized_xforward_hosts = 127.0.0.0/8"))
        cls.pf.start()
        cls.addClassCleanup(cls.pf.stop)
        domains = {"example.org": {"mode": "backup", "primary": f"127.0.0.1:{port}",
                                   "recipients": "any"}}
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, domains=domains,
                                  extra="[queue]\nretry_min = 1s\nretry_max = 2s\n"))

    def postcat(self):
        out = []
        for sub in ("incoming", "active", "deferred"):
            for dirpath, _dirs, files in os.walk(os.path.join(self.pf.queue, sub)):
                for name in files:
                    p = subprocess.run(["postcat", "-c", self.pf.etc,
                                        os.path.join(dirpath, name)],
                                       capture_output=True, timeout=30)
                    out.append(p.stdout.decode("utf-8", "replace"))
        return "\n".join(out)

    def test_postfix_sees_the_original_client(self):
        tok = self.token()
        content = make_message("s@remote.test", ["a@example.org"], f"xf {tok}", ["x"],
                               [f"X-Token: {tok}"])
        with self.client(source=CLIENT) as c:
            c.ehlo(HELO)
            r = c.send_message("s@remote.test", ["a@example.org"], content, ehlo=False)
        qid = re.search(r"queued as (\S+)", r.text)
        qid = qid.group(1) if qid else ""
        text = wait_for(lambda: (lambda t: t if tok in t else "")(self.postcat()), 20)
        self.assertTrue(text, f"nothing reached Postfix\n{self.mxd.all_stderr()[-3000:]}")
        # Postfix records the forwarded client for logging (log_* attributes),
        # mxd's queue id as the log ident
        self.assertIn(f"log_client_address={CLIENT}\n", text)
        self.assertIn("log_client_name=unknown\n", text)
        self.assertIn(f"log_helo_name={HELO}\n", text)
        self.assertRegex(text, r"log_client_port=\d+\n")
        self.assertIn("log_protocol_name=ESMTP\n", text)
        self.assertNotIn("log_client_address=127.0.0.1\n", text)
        if qid:
            self.assertIn(f"log_ident={qid}\n", text)
        # and its log names the original client
        with open(os.path.join(self.pf.log, "postfix.log"), encoding="utf-8",
                  errors="replace") as f:
            log = [line for line in f if "client=" in line]
        print("".join(log), file=sys.stderr)
        self.assertTrue(any(f"orig_client=unknown[{CLIENT}]" in line for line in log), log)
        if qid:
            self.assertTrue(any(f"orig_queue_id={qid}," in line for line in log), log)

if __name__ == "__main__":
    unittest.main()
