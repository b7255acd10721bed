#!/usr/bin/env python3
"""The shipped monitoring files (issue 23): conf/prometheus/mxd-alerts.yml
and conf/grafana/mxd-dashboard.json.

- `promtool check rules` accepts the rules, and `promtool test rules` runs
  tests/prometheus/mxd-alerts.test.yml: each alert fires on synthetic
  series that should make it fire, and not on the look-alikes.
- Every PromQL expression of the dashboard parses (promtool checks them as
  recording rules, Grafana's variables replaced).
- Every mxd metric the rules and the dashboard name exists in a real
  scrape of a running mxd; the ones the rules need have samples: the mxd
  here has a certificate, a backup domain whose primary is down (held
  mail, its lifetime), a local domain, and got one message over STARTTLS.
"""

import json
import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402

ROOT = mxdtest.source_root()
RULES = os.path.join(ROOT, "conf", "prometheus", "mxd-alerts.yml")
RULE_TESTS = os.path.join(ROOT, "tests", "prometheus", "mxd-alerts.test.yml")
DASHBOARD = os.path.join(ROOT, "conf", "grafana", "mxd-dashboard.json")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def promtool(*args):
    exe = mxdtest.require_tool("promtool")
    return subprocess.run([exe, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)


def rule_exprs():
    """The expr of every rule, read without a YAML library: each `expr:`
    is a one-liner or a `|` block indented under it."""
    exprs, lines = [], read(RULES).splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2) not in ("|", ">", "|-", ">-"):
            exprs.append(m.group(2))
            continue
        ind, body = len(m.group(1)), []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= ind:
                break
            body.append(nxt)
        exprs.append("\n".join(body))
    return exprs


def dashboard_exprs():
    with open(DASHBOARD, encoding="utf-8") as f:
        dash = json.load(f)
    exprs = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def metric_names(exprs):
    names = set()
    for e in exprs:
        names.update(re.findall(r"\bmxd_[a-z0-9_]+", e))
    return names


class Files(unittest.TestCase):
    def test_rules_check(self):
        p = promtool("check", "rules", RULES)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("SUCCESS: 9 rules found", p.stdout)

    def test_rules_unit_tests(self):
        p = promtool("test", "rules", RULE_TESTS)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("SUCCESS", p.stdout)

    def test_rules_cover_the_issue(self):
        text, tests = read(RULES), read(RULE_TESTS)
        for alert in ("MxdDown", "MxdQueueGrowing", "MxdQueueOldMessage",
                      "MxdHeldNearLifetime", "MxdDeliveriesFailing", "MxdStoreCommitErrors",
                      "MxdTlsCertificateExpiring", "MxdTlsCertificateExpired"):
            self.assertIn(f"alert: {alert}\n", text)
            # each one is exercised by the promtool tests
            self.assertIn(f"alertname: {alert}\n", tests)

    def test_dashboard_queries_parse(self):
        exprs = dashboard_exprs()
        self.assertGreater(len(exprs), 20)
        subst = {"$__rate_interval": "5m", "$__range": "1h", "$job": ".*",
                 "$instance": ".*"}
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for i, e in enumerate(exprs):
                for k, v in subst.items():
                    e = e.replace(k, v)
                self.assertNotIn("$", e, e)
                f.write(f"      - record: dashboard:expr{i}\n        expr: {json.dumps(e)}\n")
        self.addCleanup(os.unlink, f.name)
        p = promtool("check", "rules", f.name)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_dashboard_panels(self):
        with open(DASHBOARD, encoding="utf-8") as f:
            dash = json.load(f)
        titles = " | ".join(p["title"] for p in dash["panels"]).lower()
        for want in ("rejections", "by state", "per destination", "commit time", "dns",
                     "spf", "tls share", "age of the oldest"):
            self.assertIn(want, titles)
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))


def make_cert(directory, days=30, stem="c"):
    """An ECDSA key and a self-signed certificate valid days; returns
    (cert, key, notAfter in unix seconds)."""
    certtool = mxdtest.require_tool("certtool")
    key, cert = os.path.join(directory, f"{stem}.key"), os.path.join(directory, f"{stem}.pem")
    tmpl = os.path.join(directory, f"{stem}.tmpl")
    with open(tmpl, "w", encoding="ascii") as f:
        f.write(f'cn = "{mxdtest.HOSTNAME}"\nexpiration_days = {days}\ntls_www_server\n'
                "signing_key\n")
    for args in (["--generate-privkey", "--key-type=ecdsa", "--outfile", key],
                 ["--generate-self-signed", "--load-privkey", key, "--template", tmpl,
                  "--outfile", cert]):
        subprocess.run([certtool, *args], check=True, capture_output=True, timeout=60)
    info = ssl._ssl._test_decode_cert(cert)  # pylint: disable=protected-access
    return cert, key, int(ssl.cert_time_to_seconds(info["notAfter"]))


class RealScrape(mxdtest.ClassMxd, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = mxdtest.make_tmpdir(cls.addClassCleanup, "mxd-monitoring-")
        cls.cert, key, cls.not_after = make_cert(cls.tmpdir)
        cls.mport = mxdtest.free_port()
        closed = mxdtest.free_port()  # nothing listens: the primary is down
        domains = {
            "example.test": {"mode": "local", "recipients": "any",
                             "lmtp": f"127.0.0.1:{closed}"},
            "bk.test": {"mode": "backup", "recipients": "any",
                        "primary": f"127.0.0.1:{closed}", "lifetime": "2d"},
        }
        extra = f"[tls]\ncertificate = {cls.cert}\nkey = {key}\n"
        cls.start_mxd(mxdtest.Mxd(cls.tmpdir, server={"metrics_listen": f"127.0.0.1:{cls.mport}"},
                                  domains=domains, extra=extra))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", cls.mxd.port, timeout=10) as s:
            s.starttls(context=ctx)
            s.sendmail("a@x.test", ["u@example.test"], b"Subject: tls\r\n\r\nhi\r\n")
        with smtplib.SMTP("127.0.0.1", cls.mxd.port, timeout=10) as s:
            s.sendmail("a@x.test", ["u@bk.test"], b"Subject: held\r\n\r\nhi\r\n")
        cls.text = cls.scrape_until("mxd_queue_held_oldest_age_seconds{")

    @classmethod
    def scrape_until(cls, want, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{cls.mport}/metrics",
                                        timeout=10) as r:
                text = r.read().decode()
            if want in text or time.monotonic() > deadline:
                return text
            time.sleep(0.2)

    def families(self):
        """{name: [sample lines]} of the scrape, histograms under their base name."""
        out = {}
        for line in self.text.splitlines():
            m = re.match(r"^# TYPE (\S+) ", line)
            if m:
                out.setdefault(m.group(1), [])
                continue
            m = re.match(r"^([a-z_][a-z0-9_]*)[{ ]", line)
            if m:
                name = m.group(1)
                for suf in HIST_SUFFIXES:
                    if name.endswith(suf) and name[: -len(suf)] in out:
                        name = name[: -len(suf)]
                out.setdefault(name, []).append(line)
        return out

    def test_every_name_in_rules_and_dashboard_is_scraped(self):
        fam = self.families()
        names = metric_names(rule_exprs()) | metric_names(dashboard_exprs())
        self.assertGreater(len(names), 20)
        missing = []
        for n in sorted(names):
            base = n
            for suf in HIST_SUFFIXES:
                if n.endswith(suf) and n[: -len(suf)] in fam:
                    base = n[: -len(suf)]
            if base not in fam:
                missing.append(n)
        self.assertEqual(missing, [], "metrics named in conf/ but not exported by mxd")

    def test_rule_metrics_have_samples(self):
        fam = self.families()
        for n in sorted(metric_names(rule_exprs())):
            self.assertTrue(fam.get(n), f"{n}: no sample in the scrape")

    def test_values(self):
        fam = self.families()

        def value(line):
            return float(line.rsplit(" ", 1)[1])

        self.assertEqual([value(x) for x in fam["mxd_tls_certificate_expiry_timestamp_seconds"]],
                         [float(self.not_after)])
        self.assertIn('mxd_domain_lifetime_seconds{domain="bk.test"} 172800', self.text)
        self.assertNotIn('mxd_domain_lifetime_seconds{domain="example.test"}', self.text)
        held = [x for x in fam["mxd_queue_held_oldest_age_seconds"] if 'domain="bk.test"' in x]
        self.assertEqual(len(held), 1, self.text)
        self.assertLess(value(held[0]), 60)
        self.assertIn("mxd_messages_accepted_tls_total 1", self.text)
        self.assertIn("mxd_messages_accepted_total 2", self.text)
        self.assertIn("mxd_store_commit_failures_total 0", self.text)

    def test_zz_reload_renewed_certificate(self):
        # Renewing is a reload; the gauge follows (last: it changes the config).
        cert, key, not_after = make_cert(self.tmpdir, days=90, stem="renewed")
        self.assertGreater(not_after, self.not_after)
        self.mxd.extra = f"[tls]\ncertificate = {cert}\nkey = {key}\n"
        self.mxd.write_config()
        self.mxd.signal(signal.SIGHUP)
        want = f"mxd_tls_certificate_expiry_timestamp_seconds {not_after}\n"
        self.assertIn(want, self.scrape_until(want))


if __name__ == "__main__":
    mxdtest.main()
