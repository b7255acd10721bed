"""End-to-end throughput: `smtp-source -s 50 -m 5000 -l 4096` into mxd,
delivering over LMTP into a private Dovecot. Measures the time from the
start of smtp-source to its exit (accept rate) and to the last maildir file
(end-to-end rate), and prints both. A measurement, not a timed assertion;
it asserts only that all 5000 messages were delivered.

smtp-source's -t takes one address, so every message goes to one mailbox
(Dovecot serialises deliveries to a mailbox on its uidlist lock). Set
MXD_BENCH_SPREAD=1 to add -N (a distinct recipient per message, i.e. 5000
mailboxes) as a second data point. MXD_BENCH_MESSAGES overrides 5000."""

import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from dovecot import MxdDovecotCase, proc_cpu  # noqa: E402

MESSAGES = int(os.environ.get("MXD_BENCH_MESSAGES", "5000"))
SESSIONS = 50
LENGTH = 4096


class LmtpBench(MxdDovecotCase):
    SERVER = {"max_connections_per_ip": "200"}

    def run_bench(self, rcpt, extra_args=(), label="", poll=0.1):
        """Counting the maildir costs CPU that mxd and Dovecot compete for, so
        poll no more often than needed (the end time is within poll)."""
        exe = mxdtest.require_tool("smtp-source", ["/usr/sbin/smtp-source"])
        before = self.dov.count()
        cpu_mxd0 = proc_cpu(self.mxd.pid)
        cpu_dov0 = self.dov.cpu_seconds()
        argv = [exe, "-s", str(SESSIONS), "-m", str(MESSAGES), "-l", str(LENGTH),
                "-f", "bench@source.test", "-t", rcpt, *extra_args,
                f"127.0.0.1:{self.mxd.port}"]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        last = before
        t_accept = None
        out = b""
        deadline = t0 + 450
        try:
            while True:
                now = time.monotonic()
                if t_accept is None and proc.poll() is not None:
                    t_accept = now - t0
                    out = proc.stdout.read()
                last = self.dov.count()
                if last - before >= MESSAGES and t_accept is not None:
                    break
                if now > deadline:
                    break
                time.sleep(poll)
        finally:
            if proc.poll() is None:
                proc.kill()
                out = proc.communicate(timeout=30)[0]
            proc.stdout.close()
        t_e2e = time.monotonic() - t0
        cpu_mxd = proc_cpu(self.mxd.pid) - cpu_mxd0
        cpu_dov = self.dov.cpu_seconds() - cpu_dov0
        delivered = last - before
        self.assertIsNotNone(t_accept, f"smtp-source still running after 450s: {out!r}")
        self.assertEqual(proc.returncode, 0, f"smtp-source failed: {out.decode(errors='replace')}")
        self.assertGreaterEqual(delivered, MESSAGES,
                                f"{delivered} of {MESSAGES} delivered after {t_e2e:.1f}s; "
                                f"queue {self.counts()}{self.diag()}")
        self.wait_queue_empty(timeout=60)
        print(f"\n[bench{label}] smtp-source -s {SESSIONS} -m {MESSAGES} -l {LENGTH} "
              f"-t {rcpt} {' '.join(extra_args)}\n"
              f"[bench{label}] accepted {MESSAGES} in {t_accept:.2f}s = "
              f"{MESSAGES / t_accept:.0f} msg/s; end-to-end (first connect to last maildir "
              f"file) {t_e2e:.2f}s = {MESSAGES / t_e2e:.0f} msg/s; {delivered} files "
              f"({delivered - MESSAGES} duplicates)\n"
              f"[bench{label}] CPU per message: mxd {cpu_mxd / MESSAGES * 1000:.2f} ms, "
              f"Dovecot {cpu_dov / MESSAGES * 1000:.2f} ms ({os.cpu_count()} CPUs; load "
              f"average now {os.getloadavg()[0]:.1f})", file=sys.stderr)
        return t_accept, t_e2e

    def test_smtp_source_to_dovecot(self):
        self.run_bench("user@example.test")

    @unittest.skipUnless(os.environ.get("MXD_BENCH_SPREAD"), "set MXD_BENCH_SPREAD=1")
    def test_smtp_source_spread(self):
        self.run_bench("spread@example.test", ["-N"], " spread", poll=0.5)


if __name__ == "__main__":
    unittest.main(verbosity=2)
