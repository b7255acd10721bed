"""A scripted authoritative DNS server for the sender-authentication tests.

dnsmasq cannot serve every record type the SPF tests need or stay silent
for one name (PEERS.md), so this serves a zone held in a dict, on
127.0.0.1 UDP and TCP, from a thread of the test process (python3-dnslib):

    zone = {"example.com": [("TXT", "v=spf1 -all"), ("A", "192.0.2.1"),
                            ("MX", (10, "mx.example.com")), ("TIMEOUT", None)]}

A name with ("TIMEOUT", None) gets no answer (the resolver times out) for
the types it has no records of; an unknown name gets NXDOMAIN, a known name without the type NODATA.
Records carry `ttl` (0 unless given: mxd's resolver caches nothing); a
negative answer carries an SOA of TTL 0 in its authority section, as RFC
2308 3 asks, so that it is not cached either (a resolver keeps a negative
answer without an SOA for a few seconds, which zone swaps would see).
A TXT value may be a list of character-strings; a str longer than 255
octets is split. CNAMEs are followed. The zone may be replaced while it runs
(`server.zone = {...}`); `server.queries` counts what was asked.
"""

import socket
import socketserver
import struct
import threading

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord


def _txt(value):
    if isinstance(value, (list, tuple)):
        parts = [p.encode("utf-8") if isinstance(p, str) else p for p in value]
    else:
        data = value.encode("utf-8") if isinstance(value, str) else value
        parts = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return TXT(parts)


def _rdata(rtype, value):
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        pref, host = value
        return MX(host or ".", int(pref))
    if rtype == "PTR":
        return PTR(value)
    if rtype == "CNAME":
        return CNAME(value)
    if rtype in ("TXT", "SPF"):
        return _txt(value)
    raise ValueError(f"unsupported record type {rtype}")


class AuthDns:
    def __init__(self, zone=None, ttl=0, neg_ttl=0):
        self.zone = zone or {}
        self.ttl = ttl
        # the SOA's TTL on negative answers: 0 (no negative caching) unless
        # asked (tests/bench/screening.py)
        self.neg_ttl = neg_ttl
        self.queries = []
        self._udp = self._tcp = None
        self._threads = []
        self.port = None
        self.host = "127.0.0.1"

    @property
    def server(self):
        """The mxd `dns_servers =` value."""
        return f"{self.host}:{self.port}"

    def _records(self, name):
        z = self.zone
        key = name.rstrip(".").lower()
        for k, v in z.items():
            if k.rstrip(".").lower() == key:
                return v
        return None

    def answer(self, data):
        """The reply octets for a query, or None to stay silent."""
        try:
            req = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - junk in, nothing out
            return None
        reply = req.reply()
        reply.header.aa = 1
        # the labels as sent: str() would escape spaces and the like ("\\032")
        qname = b".".join(req.q.qname.label).decode("utf-8", "replace")
        qtype = QTYPE[req.q.qtype]
        self.queries.append((qname.rstrip(".").lower(), qtype))
        name = qname
        for _ in range(8):  # CNAME chain
            recs = self._records(name)
            if recs is None:
                if name == qname:
                    reply.header.rcode = RCODE.NXDOMAIN
                return self._negative(reply, name, qtype)
            cname = [v for t, v in recs if t == "CNAME"]
            # As in the RFC 7208 suite's driver: TIMEOUT answers the types
            # the name has no records of.
            if any(t == "TIMEOUT" for t, _ in recs) and not cname and \
                    not any(t == qtype for t, _ in recs):
                return None
            if cname and qtype != "CNAME":
                reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(cname[0]), ttl=self.ttl))
                name = cname[0]
                continue
            for t, v in recs:
                if t == qtype:
                    reply.add_answer(RR(name, getattr(QTYPE, t), rdata=_rdata(t, v),
                                        ttl=self.ttl))
            return self._negative(reply, name, qtype)
        return reply.pack()

    def _negative(self, reply, name, qtype):
        """The reply; NXDOMAIN or NODATA with an SOA of TTL neg_ttl (RFC 2308
        3: the negative answer is cached that long; 0 by default)."""
        if qtype != "ANY" and not any(QTYPE[rr.rtype] == qtype for rr in reply.rr):
            zone = ".".join(name.rstrip(".").split(".")[-2:]) or "."
            soa = SOA("ns." + zone, "hostmaster." + zone, (1, 0, 0, 0, self.neg_ttl))
            reply.add_auth(RR(zone, QTYPE.SOA, ttl=self.neg_ttl, rdata=soa))
        return reply.pack()

    def start(self, host="127.0.0.1", port=0):
        """Serves on host, a free port unless port is given (53 on an
        address of 127.0.0.0/8 for resolvers that cannot be told a port:
        tests/bench/stack.py)."""
        outer = self
        self.host = host

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                out = outer.answer(data)
                if out is not None:
                    sock.sendto(out, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                hdr = self.request.recv(2)
                if len(hdr) < 2:
                    return
                (n,) = struct.unpack("!H", hdr)
                data = b""
                while len(data) < n:
                    chunk = self.request.recv(n - len(data))
                    if not chunk:
                        return
                    data += chunk
                out = outer.answer(data)
                if out is not None:
                    self.request.sendall(struct.pack("!H", len(out)) + out)

        socketserver.ThreadingUDPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        # The kernel picks a free UDP port; the same TCP port may be taken
        # (a client's ephemeral port): then try another pair.
        for attempt in range(50):
            self._udp = socketserver.ThreadingUDPServer((host, port), Udp)
            self.port = self._udp.server_address[1]
            try:
                self._tcp = socketserver.ThreadingTCPServer((host, self.port), Tcp)
                break
            except OSError:
                self._udp.server_close()
                self._udp = None
                if attempt == 49 or port:
                    raise
        for srv in (self._udp, self._tcp):
            t = threading.Thread(target=srv.serve_forever, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        self._udp = self._tcp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def silent_port():
    """A bound UDP socket that never answers (a black-hole name server)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s
