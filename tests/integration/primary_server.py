"""primary_server: a scripted primary MX for the mxd backup-MX tests.

    python3 -m primary_server --port N --dir DIR [--host 127.0.0.1]
        [--control FILE] [--events FILE] [--reject ADDR=REPLY ...]
        [--hostname NAME] [--size N] [--smtputf8]

Runs an aiosmtpd SMTP server (python3-aiosmtpd) in the foreground until
SIGTERM or SIGINT. Every accepted message is written to DIR/<n>.eml exactly
as it arrived (dot-stuffing undone, CRLF line ends kept: aiosmtpd adds no
header and changes no byte) with its envelope in DIR/<n>.json:

    {"n": 1, "mail_from": "a@b", "mail_options": [...], "rcpt_tos": [...],
     "rcpt_options": [[...], ...], "helo": "...", "peer": ["127.0.0.1", 4711],
     "size": 4321, "sha256": "...", "time": 1700000000.5}

n counts up across restarts (it starts after the highest number in DIR).
The .json file is written first and the .eml renamed into place last, so a
reader that sees N.eml always finds N.json.

Recipients to refuse at RCPT: --reject ADDR=550 (or =450, or a whole reply
such as "=550 5.1.1 no such user"), and/or a control file (JSON, re-read
whenever its mtime changes) of the form
    {"rcpt": {"addr@domain": "550 5.1.1 ...", "other@domain": 450}}
Addresses are compared case-insensitively. The control file wins over
--reject for an address it names.

--tls-cert FILE --tls-key FILE offer STARTTLS with that certificate
(Python's ssl: TLS 1.3 session tickets on, so a client can resume);
--tls-min 1.3 refuses older versions. The envelope then also has
    "tls": {"version": "TLSv1.3", "cipher": "...", "resumed": false}
(null for a message that came in plain text).

--requiretls offers REQUIRETLS (RFC 8689) after STARTTLS and takes MAIL
... REQUIRETLS over TLS (it shows in mail_options).

--events FILE appends one JSON line per event (connect, ehlo, mail, rcpt
with the reply given, data, quit, disconnect), flushed at once, so a test
can count how often a recipient was tried, or how many connections were
open at once (connect and disconnect carry the peer's address and port).
"""

import argparse
import hashlib
import json
import os
import signal
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

DEFAULT_TEXT = {
    550: "550 5.1.1 <{addr}>: Recipient address rejected: no such user (test)",
    450: "450 4.2.1 <{addr}>: Recipient address temporarily unavailable (test)",
}


def reply_for(value, addr):
    """A control value (int code or reply string) -> full SMTP reply."""
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        code = int(value)
        text = DEFAULT_TEXT.get(code, f"{code} {'4.0.0' if code < 500 else '5.0.0'} "
                                      "<{addr}> refused (test)")
        return text.format(addr=addr)
    return str(value).format(addr=addr)


class Handler:
    def __init__(self, args):
        self.dir = args.dir
        self.control = args.control
        self.events_path = args.events
        self.requiretls = args.requiretls
        self.static = {}
        for item in args.reject or []:
            addr, _, val = item.partition("=")
            self.static[addr.strip().lower()] = val.strip() or "550"
        self._ctl_mtime = None
        self._ctl = {}
        self.n = 0
        for name in os.listdir(self.dir):
            stem = name.split(".", 1)[0]
            if stem.isdigit():
                self.n = max(self.n, int(stem))
        self._events = open(self.events_path, "a", encoding="utf-8") if self.events_path else None

    def event(self, kind, session=None, **kw):
        if self._events is None:
            return
        rec = {"t": time.time(), "event": kind}
        if session is not None and session.peer:
            rec["peer"] = list(session.peer)[:2]
        rec.update(kw)
        self._events.write(json.dumps(rec) + "\n")
        self._events.flush()

    def rejects(self):
        table = dict(self.static)
        if self.control:
            try:
                mtime = os.stat(self.control).st_mtime_ns
            except FileNotFoundError:
                mtime = None
                self._ctl = {}
            if mtime is not None and mtime != self._ctl_mtime:
                try:
                    with open(self.control, encoding="utf-8") as f:
                        doc = json.load(f)
                    self._ctl = {k.lower(): v for k, v in (doc.get("rcpt") or {}).items()}
                except (OSError, ValueError) as e:
                    print(f"primary_server: bad control file {self.control}: {e}",
                          file=sys.stderr, flush=True)
                    self._ctl = {}
            self._ctl_mtime = mtime
            table.update(self._ctl)
        return table

    # -- aiosmtpd hooks

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.event("ehlo", session, name=hostname)
        if self.requiretls and getattr(session, "ssl", None):
            responses.insert(len(responses) - 1, "250-REQUIRETLS")
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        self.event("helo", session, name=hostname)
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.event("mail", session, address=address, options=mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        val = self.rejects().get(address.lower())
        if val is not None:
            reply = reply_for(val, address)
            self.event("rcpt", session, address=address, reply=reply)
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        self.event("rcpt", session, address=address, reply="250")
        return "250 2.1.5 OK"

    async def handle_RSET(self, server, session, envelope):
        self.event("rset", session)
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server, session, envelope):
        self.event("quit", session)
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server, session, envelope):
        body = envelope.original_content
        self.n += 1
        n = self.n
        meta = {
            "n": n,
            "mail_from": envelope.mail_from,
            "mail_options": list(envelope.mail_options),
            "rcpt_tos": list(envelope.rcpt_tos),
            "rcpt_options": [list(o) for o in envelope.rcpt_options],
            "helo": session.host_name,
            "peer": list(session.peer)[:2] if session.peer else None,
            "size": len(body),
            "tls": tls_info(session),
            "sha256": hashlib.sha256(body).hexdigest(),
            "time": time.time(),
        }
        jpath = os.path.join(self.dir, f"{n}.json")
        epath = os.path.join(self.dir, f"{n}.eml")
        with open(jpath + ".tmp", "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.rename(jpath + ".tmp", jpath)
        with open(epath + ".tmp", "wb") as f:
            f.write(body)
        os.rename(epath + ".tmp", epath)
        self.event("data", session, n=n, rcpts=meta["rcpt_tos"], size=len(body))
        return f"250 2.0.0 OK queued as P{n}"


def tls_info(session):
    """What the session's TLS was, or None in plain text."""
    extra = getattr(session, "ssl", None)
    if not extra:
        return None
    obj = extra.get("ssl_object")
    cipher = extra.get("cipher")
    return {"version": obj.version() if obj else None,
            "cipher": cipher[0] if cipher else None,
            "resumed": bool(obj.session_reused) if obj else None}


def tls_context(args):
    if not args.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    ctx.verify_mode = ssl.CERT_NONE
    if args.tls_min == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class LoggingSMTP(SMTP):
    def _getparams(self, params):
        # REQUIRETLS (RFC 8689) takes no value; only over TLS when offered
        out = super()._getparams(params)
        if (out is not None and out.get("REQUIRETLS") is True and self.event_handler.requiretls
                and self._tls_protocol is not None):
            del out["REQUIRETLS"]
        return out

    def connection_made(self, transport):
        super().connection_made(transport)
        try:
            self._peer = list(transport.get_extra_info("peername"))[:2]
            self.event_handler.event("connect", None, peer=self._peer)
        except Exception:  # noqa: BLE001 - logging only
            pass

    def connection_lost(self, exc):
        try:
            self.event_handler.event("disconnect", None, peer=getattr(self, "_peer", None))
        except Exception:  # noqa: BLE001 - logging only
            pass
        super().connection_lost(exc)


class TestController(Controller):
    def factory(self):
        return LoggingSMTP(self.handler, **self.SMTP_kwargs)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="primary_server")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--control")
    ap.add_argument("--events")
    ap.add_argument("--reject", action="append", metavar="ADDR=REPLY")
    ap.add_argument("--hostname", default="primary.test.invalid")
    ap.add_argument("--size", type=int, default=None, help="SIZE limit (default aiosmtpd's 32 MiB)")
    ap.add_argument("--smtputf8", action="store_true")
    ap.add_argument("--requiretls", action="store_true")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-min", choices=["1.2", "1.3"], default="1.2")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)

    handler = Handler(args)
    kw = {"decode_data": False, "enable_SMTPUTF8": args.smtputf8}
    if args.size is not None:
        kw["data_size_limit"] = args.size
    if args.tls_cert:
        kw["tls_context"] = tls_context(args)
    ctl = TestController(handler, hostname=args.host, port=args.port, server_hostname=args.hostname,
                         ready_timeout=20, **kw)
    # Block the signals before the server thread starts so only sigwait sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    ctl.start()
    print(f"primary_server: listening on {args.host}:{args.port} dir={args.dir}", file=sys.stderr,
          flush=True)
    sig = signal.sigwait({signal.SIGTERM, signal.SIGINT})
    print(f"primary_server: signal {sig}, stopping", file=sys.stderr, flush=True)
    ctl.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
