"""200 concurrent sessions, each sending one message with smtplib: every one
gets 250 and every one is stored with its exact body."""

import os
import smtplib
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from mxdtest import MxdTestCase  # noqa: E402

SESSIONS = 200


def content_for(i, marker):
    lines = [f"Subject: concurrent {i} {marker}", f"X-Session: {i}", ""]
    lines += [f"line {j} of session {i} " + "x" * (i % 50) for j in range(20 + i * 7)]
    if i % 10 == 0:
        lines.append(".starts with a dot")
    return ("\r\n".join(lines) + "\r\n").encode()


class Concurrency(MxdTestCase):
    SERVER = {"max_connections_per_ip": "1000"}

    def test_200_sessions(self):
        marker = self.marker()
        barrier = threading.Barrier(SESSIONS, timeout=60)
        results = {}
        errors = {}
        lock = threading.Lock()

        def worker(i):
            s = None
            try:
                s = smtplib.SMTP("127.0.0.1", self.mxd.port, local_hostname=f"c{i}.test",
                                 timeout=120)
                code, _ = s.ehlo()
                if code != 250:
                    raise RuntimeError(f"EHLO {code}")
                barrier.wait()  # all sessions open at the same time
                code, resp = s.mail(f"s{i}@client.test")
                if code != 250:
                    raise RuntimeError(f"MAIL {code} {resp!r}")
                code, resp = s.rcpt(f"r{i}@example.test")
                if code != 250:
                    raise RuntimeError(f"RCPT {code} {resp!r}")
                code, resp = s.data(content_for(i, marker))
                with lock:
                    results[i] = (code, resp.decode("utf-8", "replace"))
                s.quit()
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors[i] = repr(e)
                barrier.abort()
            finally:
                if s is not None:
                    s.close()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True)
                   for i in range(SESSIONS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1, 240 - (time.monotonic() - started)))
        took = time.monotonic() - started
        alive = [t for t in threads if t.is_alive()]
        self.assertEqual(alive, [], f"{len(alive)} sessions still running after {took:.0f}s")
        real_errors = {i: e for i, e in errors.items() if "BrokenBarrierError" not in e}
        self.assertEqual(real_errors or errors, {}, "sessions failed")

        bad = {i: r for i, r in results.items() if r[0] != 250}
        self.assertEqual(bad, {}, "non-250 replies to DATA")
        self.assertEqual(len(results), SESSIONS)
        qids = {}
        for i, (_, resp) in results.items():
            self.assertRegex(resp, r"^2\.0\.0 Ok: queued as \S+$")
            qids[i] = resp.rsplit(" ", 1)[1]
        self.assertEqual(len(set(qids.values())), SESSIONS, "queue ids are not unique")

        stored = mxdtest.messages_containing(self.mxd.db_path, marker)
        self.assertEqual(len(stored), SESSIONS, "not every message is in the database")
        for i, qid in qids.items():
            msg = self.assertStored(qid, content_for(i, marker))
            self.assertEqual(msg["row"]["sender"], f"s{i}@client.test")
            self.assertEqual([r["address"] for r in msg["rcpts"]], [f"r{i}@example.test"])
        print(f"\n{SESSIONS} concurrent sessions stored in {took:.2f}s", file=sys.stderr)


if __name__ == "__main__":
    mxdtest.main()
