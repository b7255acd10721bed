"""DKIM's published vectors and DMARC's edge cases (issue 20), through
mxd's modules (src/check/dkim.c, dmarc.c, psl.c, dmarc_record.c) driven
by the dkim_probe tool, keys and records served by the scripted DNS
server (authdns.py); the RFC 8463 vector also through a running mxd.

- DKIM: the test data Debian's python3-dkim ships (dkim/tests/data: the
  RFC 8463 appendix A message with its Ed25519 and RSA signatures and
  keys, the Exim Ed25519 vector, the RSA and Ed25519 test keys), and
  copies of them tampered with, signed with rsa-sha1, with a key under
  1024 bits, with l=, with over-signed headers. Prints
  "dkim vectors: N/N".
- The public suffix list's own test file (Debian publicsuffix:
  test_psl.txt) through mxd's organizational-domain function. Prints
  "psl test_psl: N/N".
- RFC 7489 6.6: a table of records and authentication results. Prints
  "dmarc table: N/N".
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest

import dkim  # python3-dkim

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxdtest  # noqa: E402
from authdns import AuthDns  # noqa: E402

PROBE = os.environ.get("MXD_DKIM_PROBE", "")
DATA = "/usr/lib/python3/dist-packages/dkim/tests/data"
PSL_TEST = "/usr/share/doc/publicsuffix/examples/test_psl.txt"


def data(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def sign(msg, selector, domain, key, **kw):
    return crlf(dkim.sign(msg, selector, domain, key, **kw)) + msg


RFC8463_ED = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="  # RFC 8463 A.2
RSA1024 = data("test.txt").decode().strip()  # RFC 8463 A.2's RSA key, 1024 bits


def small_key(tmp):
    """A 512-bit RSA key: (PEM private key, DKIM TXT)."""
    path = os.path.join(tmp, "k512.pem")
    subprocess.run(["openssl", "genrsa", "-out", path, "512"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", path, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64
    with open(path, "rb") as f:
        return f.read(), "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


ZONE = {
    "brisbane._domainkey.football.example.com": [("TXT", RFC8463_ED)],
    "test._domainkey.football.example.com": [("TXT", RSA1024)],
    "sed._domainkey.test.ex": [("TXT", data("eximtest.dns").decode().strip())],
    "test._domainkey.example.net": [("TXT", "v=DKIM1; k=ed25519; "
                                            "p=yi50DjK5O9pqbFpNHklsv9lqaS0ArSYu02qp1S0DW1Y=")],
    "test._domainkey.example.com": [("TXT", RSA1024)],
    "big._domainkey.example.com": [("TXT", data("2048_testkey_wo_markers.pub.txt").decode())],
    "badk._domainkey.example.com": [("TXT", data("badk.txt").decode().strip())],
    "badv._domainkey.example.com": [("TXT", data("badversion.txt").decode().strip())],
    "_dmarc.football.example.com": [("TXT", "v=DMARC1; p=reject")],
}


def dkim_cases(tmp):
    """(name, message, [(result, d, s, reason regex)]) for every vector."""
    rfc8463 = crlf(data("rfc6376.signed.msg"))
    plain = crlf(data("rfc6376.msg"))
    test_msg = crlf(data("test.message"))
    rsa_key, ed_key = data("test.private"), data("ed25519test.key")
    k512, k512_txt = small_key(tmp)
    ZONE["small._domainkey.example.com"] = [("TXT", k512_txt)]
    both = [("pass", "football.example.com", "brisbane", ""),
            ("pass", "football.example.com", "test", "")]
    fail_both = [("fail", "football.example.com", "brisbane", "."),
                 ("fail", "football.example.com", "test", ".")]
    bh_both = [("fail", "football.example.com", s, "body hash did not verify")
               for s in ("brisbane", "test")]
    length = sign(test_msg, b"test", b"example.com", rsa_key, length=True)
    length_r = sign(test_msg, b"test", b"example.com", rsa_key, length=True,
                    canonicalize=(b"relaxed", b"relaxed"))
    over = sign(test_msg, b"test", b"example.com", rsa_key,
                include_headers=[b"from", b"to", b"subject", b"from", b"subject"])
    return [
        # RFC 8463 appendix A.3: Ed25519 and RSA signatures of one message
        ("rfc8463", rfc8463, both),
        ("rfc8463-rsa-only", crlf(data("rfc6376.signed.rsa.msg")), both[1:]),
        # the Exim vector (relaxed/relaxed, folded tags)
        ("exim-ed25519", crlf(data("ed25519test2.msg")), [("pass", "test.ex", "sed", "")]),
        # new signatures with the published keys, every canonicalization
        *[(f"rfc8032-key-{h}/{b}",
           sign(plain, b"brisbane", b"football.example.com", data("rfc8032_7_1.key"),
                signature_algorithm=b"ed25519-sha256", canonicalize=(h.encode(), b.encode())),
           both[:1]) for h in ("simple", "relaxed") for b in ("simple", "relaxed")],
        ("ed25519-key", sign(test_msg, b"test", b"example.net", ed_key,
                             signature_algorithm=b"ed25519-sha256"),
         [("pass", "example.net", "test", "")]),
        ("rsa2048", sign(test_msg, b"big", b"example.com", data("2048_testkey.key")),
         [("pass", "example.com", "big", "")]),
        # tampered copies
        ("tampered-body", rfc8463.replace(b"We lost the game", b"We won the game"), bh_both),
        ("tampered-subject", rfc8463.replace(b"Is dinner ready?", b"Is lunch ready?"),
         fail_both),
        ("tampered-ed25519-b", rfc8463.replace(b"b=9/dsDChY", b"b=9/dsDChZ"),
         [("fail", "football.example.com", "brisbane", "."), both[1]]),
        # h= names From: twice: an added From: breaks the signature; a field
        # h= does not name may be added
        ("oversigned-from-added", b"From: Mallory <m@football.example.com>\r\n" + rfc8463,
         fail_both),
        ("unsigned-field-added", b"Cc: someone@example.org\r\n" + rfc8463, both),
        ("oversigned-own", over, [("pass", "example.com", "test", "")]),
        ("oversigned-own-subject-added", b"Subject: other\r\n" + over,
         [("fail", "example.com", "test", ".")]),
        # RFC 8301 3.1: rsa-sha1 is no pass
        ("rsa-sha1", sign(test_msg, b"test", b"example.com", rsa_key,
                          signature_algorithm=b"rsa-sha1"),
         [("policy", "example.com", "test", r"rsa-sha1 .*RFC 8301 3\.1")]),
        # RFC 8301 3.2: a 512-bit key is refused
        ("key-512", sign(test_msg, b"small", b"example.com", k512),
         [("policy", "example.com", "small", r"512 bits.*RFC 8301 3\.2")]),
        # l=: the whole body signed passes, also after relaxed whitespace;
        # content past l= is no pass; l= past the body fails
        ("l-whole", length, [("pass", "example.com", "test", "")]),
        ("l-relaxed-ws", length_r[:-2] + b"  \r\n\r\n\r\n", [("pass", "example.com", "test", "")]),
        ("l-appended", length + b"Click here\r\n",
         [("policy", "example.com", "test", r"past l=25 \(RFC 6376 8\.2\)")]),
        ("l-truncated", length[:-12] + b"\r\n", [("(fail|permerror)", "example.com", "test", ".")]),
        # keys that are not usable: no key, an unknown k=, a bad v=
        ("no-key", sign(test_msg, b"missing", b"example.com", rsa_key),
         [("permerror", "example.com", "missing", ".")]),
        ("bad-k", sign(test_msg, b"badk", b"example.com", rsa_key),
         [("permerror", "example.com", "badk", ".")]),
        ("bad-version", sign(test_msg, b"badv", b"example.com", rsa_key),
         [("permerror", "example.com", "badv", ".")]),
        ("unsigned", test_msg, [("none", "", "", "")]),
    ]


def probe(*args, stdin=None):
    p = subprocess.run([PROBE, *args], input=stdin, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"dkim_probe {args[0]} failed: {p.stderr}")
    return p.stdout.splitlines()


# RFC 7489 6.6 table: the zone, then rows of
# (name, From domains, spf result, spf domain, dkim "res:d,...",
#  want verdict, want policy.dmarc, want reject, want why regex).
DMARC_ZONE = {
    "_dmarc.sp.test": [("TXT", "v=DMARC1; p=reject; sp=quarantine")],
    "_dmarc.own.sp.test": [("TXT", "v=DMARC1; p=none")],
    "_dmarc.pct0.test": [("TXT", "v=DMARC1; p=reject; pct=0")],
    "_dmarc.pct0q.test": [("TXT", "v=DMARC1; p=quarantine; pct=0")],
    "_dmarc.pct100.test": [("TXT", "v=DMARC1; p=reject; pct=100")],
    "_dmarc.strict.test": [("TXT", "v=DMARC1; p=reject; adkim=s; aspf=s")],
    "_dmarc.relaxed.test": [("TXT", "v=DMARC1; p=reject")],
    "_dmarc.orgonly.test": [("TXT", "v=DMARC1; p=reject")],
    "_dmarc.two.test": [("TXT", "v=DMARC1; p=reject"), ("TXT", "v=DMARC1; p=none")],
    "_dmarc.sub.two2.test": [("TXT", "v=DMARC1; p=none"), ("TXT", "v=DMARC1; p=none")],
    "_dmarc.two2.test": [("TXT", "v=DMARC1; p=reject")],
    "_dmarc.vlate.test": [("TXT", "p=reject; v=DMARC1")],
    "_dmarc.vcase.test": [("TXT", "v=dmarc1; p=reject")],
    "_dmarc.vspace.test": [("TXT", "v = DMARC1 ;p=reject")],
    "_dmarc.spf1.test": [("TXT", "v=spf1 -all"), ("TXT", "v=DMARC1; p=quarantine")],
    "_dmarc.prefix.test": [("TXT", "v=DMARC1; p=rej")],
    "_dmarc.rua.test": [("TXT", "v=DMARC1; p=bogus; rua=mailto:d@rua.test")],
    "_dmarc.nop.test": [("TXT", "v=DMARC1; rua=mailto:d@nop.test")],
    "_dmarc.nop2.test": [("TXT", "v=DMARC1; sp=reject")],
    "_dmarc.none.test": [("TXT", "v=DMARC1; p=none")],
    "_dmarc.quar.test": [("TXT", "v=DMARC1; p=quarantine")],
    "_dmarc.a.c.kobe.jp": [("TXT", "v=DMARC1; p=reject")],
    "_dmarc.timeout.test": [("TIMEOUT", None)],
}
DMARC_ROWS = [
    # sp= applies to subdomains with no record of their own (6.3)
    ("sp-subdomain", "mail.sp.test", "fail", "x.test", "-", "fail", "quarantine", 0, ""),
    ("sp-org-itself", "sp.test", "fail", "x.test", "-", "fail", "reject", 1, ""),
    ("sp-own-record", "own.sp.test", "fail", "x.test", "-", "fail", "none", 0, ""),
    ("sp-nonexistent", "nx.sp.test", "fail", "x.test", "-", "fail", "quarantine", 0, ""),
    # pct= (6.6.4): outside the sample, the next policy down
    ("pct0-reject", "pct0.test", "fail", "x.test", "-", "fail", "quarantine", 0, ""),
    ("pct0-quarantine", "pct0q.test", "fail", "x.test", "-", "fail", "none", 0, ""),
    ("pct100", "pct100.test", "fail", "x.test", "-", "fail", "reject", 1, ""),
    ("pct0-pass", "pct0.test", "pass", "pct0.test", "-", "pass", "reject", 0, ""),
    # adkim=s, aspf=s (3.1.1, 3.1.2)
    ("strict-dkim-sub", "strict.test", "none", "-", "pass:mail.strict.test", "fail", "reject",
     1, ""),
    ("strict-dkim-exact", "strict.test", "none", "-", "pass:strict.test", "pass", "reject", 0, ""),
    ("strict-spf-sub", "strict.test", "pass", "bounce.strict.test", "-", "fail", "reject", 1, ""),
    ("strict-spf-exact", "strict.test", "pass", "strict.test", "-", "pass", "reject", 0, ""),
    ("relaxed-dkim-sub", "relaxed.test", "none", "-", "pass:mail.relaxed.test", "pass", "reject",
     0, ""),
    ("relaxed-spf-sub", "relaxed.test", "pass", "b.relaxed.test", "-", "pass", "reject", 0, ""),
    ("relaxed-dkim-fail", "relaxed.test", "none", "-", "fail:relaxed.test", "fail", "reject",
     1, ""),
    ("relaxed-other-org", "relaxed.test", "pass", "other.test", "pass:other.test", "fail",
     "reject", 1, ""),
    ("relaxed-dkim-temperror", "relaxed.test", "fail", "x.test", "temperror:relaxed.test",
     "temperror", "reject", 0, ""),
    # relaxed alignment by the public suffix list: under *.kobe.jp,
    # a.c.kobe.jp and b.c.kobe.jp are two organizations
    ("psl-wildcard-org", "a.c.kobe.jp", "none", "-", "pass:b.c.kobe.jp", "fail", "reject", 1, ""),
    # a record at the organizational domain only (6.6.3 step 3)
    ("org-only", "a.b.orgonly.test", "fail", "x.test", "-", "fail", "reject", 1, ""),
    # several records: none, and no fallback to the organizational domain
    ("several", "two.test", "fail", "x.test", "-", "none", "-", 0, "several"),
    ("several-sub", "sub.two2.test", "fail", "x.test", "-", "none", "-", 0, "several"),
    # the version tag first and exact (6.3, 6.4), else the record is discarded
    ("v-not-first", "vlate.test", "fail", "x.test", "-", "none", "-", 0, ""),
    ("v-lower-case", "vcase.test", "fail", "x.test", "-", "none", "-", 0, ""),
    ("v-with-wsp", "vspace.test", "fail", "x.test", "-", "fail", "reject", 1, ""),
    ("other-txt-beside", "spf1.test", "fail", "x.test", "-", "fail", "quarantine", 0, ""),
    # p= exact (libopendmarc took "rej" for reject); step 6 with and without rua=
    ("p-prefix", "prefix.test", "fail", "x.test", "-", "permerror", "-", 0, "p="),
    ("p-bad-rua", "rua.test", "fail", "x.test", "-", "fail", "none", 0, ""),
    ("p-missing-rua", "nop.test", "fail", "x.test", "-", "fail", "none", 0, ""),
    ("p-missing", "nop2.test", "fail", "x.test", "-", "permerror", "-", 0, "p="),
    # From: domains that do not exist
    ("nonexistent", "nowhere.nxd.test", "fail", "x.test", "-", "none", "-", 0, ""),
    # DNS trouble
    ("dns-timeout", "timeout.test", "fail", "x.test", "-", "temperror", "-", 0, "DNS"),
    # several authors (6.6.1): the strictest policy decides
    ("authors-reject-wins", "relaxed.test,none.test", "none", "-", "pass:none.test",
     "fail", "reject", 1, ""),
    ("authors-quarantine", "none.test,quar.test", "fail", "x.test", "-", "fail", "quarantine", 0,
     ""),
    ("authors-all-pass", "none.test,relaxed.test", "none", "-", "pass:none.test,pass:relaxed.test",
     "pass", "none", 0, ""),
]


@unittest.skipUnless(PROBE, "MXD_DKIM_PROBE not set (run through meson)")
class DkimVectorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="mxd-dkim-vectors-")
        cls.cases = dkim_cases(cls.tmp.name)
        cls.dns = AuthDns(dict(ZONE, **DMARC_ZONE)).start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()
        cls.tmp.cleanup()

    def test_dkim_vectors(self):
        paths = []
        for name, msg, _ in self.cases:
            paths.append(os.path.join(self.tmp.name, name.replace("/", "_")))
            with open(paths[-1], "wb") as f:
                f.write(msg)
        got = {}
        for line in probe("verify", self.dns.server, *paths):
            path, res, d, s, why = line.split("\t")
            got.setdefault(path, []).append((res, d, s, why))
        ok, bad = 0, []
        for (name, _, want), path in zip(self.cases, paths):
            rows = got.get(path, [])
            good = len(rows) == len(want) and all(
                re.fullmatch(w[0], g[0]) and g[1:3] == w[1:3] and re.search(w[3], g[3])
                and (w[3] or g[3] == "") for g, w in zip(rows, want))
            ok += bool(good)
            if not good:
                bad.append(f"{name}: got {rows}, want {want}")
        print(f"dkim vectors: {ok}/{len(self.cases)}")
        self.assertEqual(bad, [])

    def test_psl_test_file(self):
        cases = []
        with open(PSL_TEST, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"checkPublicSuffix\((null|'[^']*'), (null|'[^']*')\);", line.strip())
                if m:
                    cases.append([None if x == "null" else x[1:-1] for x in m.groups()])
        self.assertGreater(len(cases), 70)
        out = probe("orgdomain", stdin="".join((a or "") + "\n" for a, _ in cases))
        bad = [(a, b, o) for (a, b), o in zip(cases, out) if (b or "null") != o]
        print(f"psl test_psl: {len(cases) - len(bad)}/{len(cases)}")
        self.assertEqual(len(out), len(cases))
        self.assertEqual(bad, [])

    def test_dmarc_table(self):
        lines = "".join(f"{r[1]}\t{r[2]}\t{r[3]}\t{r[4]}\n" for r in DMARC_ROWS)
        out = probe("dmarc", self.dns.server, stdin=lines)
        verdicts = [line.split("\t") for line in out if not line.startswith("  ")]
        self.assertEqual(len(verdicts), len(DMARC_ROWS), out)
        bad = []
        for row, got in zip(DMARC_ROWS, verdicts):
            name, want = row[0], row[5:]
            res, _dom, _p, applied, reject, why = got
            if (res, applied, int(reject)) != tuple(want[:3]) or not re.search(want[3], why):
                bad.append(f"{name}: got {got}, want {want}")
        print(f"dmarc table: {len(DMARC_ROWS) - len(bad)}/{len(DMARC_ROWS)}")
        self.assertEqual(bad, [])


@unittest.skipUnless(os.environ.get("MXD"), "MXD not set")
class MxdVectorTest(unittest.TestCase):
    """The RFC 8463 vector and the Exim one through a running mxd: the
    stored Authentication-Results field."""

    def test_rfc8463_through_mxd(self):
        with tempfile.TemporaryDirectory(prefix="mxd-dkim-vec-") as tmp, \
                AuthDns(ZONE) as dns:
            dns.start()
            m = mxdtest.Mxd(tmp, server={"dns_servers": dns.server},
                            extra="[auth]\nspf = tag\ndkim = tag\ndmarc = tag\n")
            m.start()
            try:
                for msg, want in (
                        (crlf(data("rfc6376.signed.msg")),
                         ["\tdkim=pass header.d=football.example.com header.s=brisbane "
                          "header.b=\"9/dsDChY\";",
                          "\tdkim=pass header.d=football.example.com header.s=test "
                          "header.b=icKcLSEZ;",
                          "\tdmarc=pass (p=reject dis=none) header.from=football.example.com "
                          "policy.dmarc=reject"]),
                        (crlf(data("ed25519test2.msg")),
                         ["\tdkim=pass header.d=test.ex header.s=sed header.b=5fhyD3EI;"])):
                    with mxdtest.SmtpClient(m.port) as c:
                        c.reply()
                        c.ehlo("client.test")
                        r = c.send_message("a@x.test", ["user@example.test"],
                                           mxdtest.dot_stuff(msg), ehlo=False)
                    self.assertEqual(r.code, 250, str(r))
                    body = bytes(mxdtest.message_by_qid(m.db_path, r.qid)["row"]["body"])
                    ar = body.split(b"Received-SPF:", 1)[0].decode()
                    for w in want:
                        self.assertIn(w + "\r\n", ar)
                    self.assertTrue(body.endswith(msg))
            finally:
                m.stop()
                m.check_sanitizers()


if __name__ == "__main__":
    unittest.main(verbosity=2)
