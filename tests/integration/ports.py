"""Ports for the servers a test starts (mxd, Dovecot, PostgreSQL, slapd,
the scripted peers), safe when several tests run at the same time.

free_port() binding port 0 and closing it leaves a window in which the port
is free again: another test running alongside (meson's is_parallel) could
be handed the same port before the first one's server binds it, or take it
while a test restarts its server on the same port. Here a port is taken
from below the kernel's ephemeral range (so no bind to port 0 and no
outgoing connection gets it) and reserved for the life of the calling
process with an flock on /tmp/mxdtest-ports/PORT: no other process that
asks here is given it until this one exits (the kernel drops the lock
then, also on a crash). A port is returned only if it could be bound a
moment ago (TCP, and UDP too with udp=True).
"""

import fcntl
import os
import random
import socket

LOCK_DIR = "/tmp/mxdtest-ports"
LOW = 20000  # the reserved ports: LOW up to the ephemeral range's start

_held = {}  # port -> open lock file (kept open: the reservation)


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host, port, udp):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    try:
        for kind in kinds:
            with socket.socket(fam, kind) as s:
                s.bind((host, port))
        return True
    except OSError:
        return False


def _kernel_port(host):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port(host="127.0.0.1", udp=False):
    """A port free on host a moment ago, reserved for this process."""
    high = _ephemeral_low()
    if high - LOW < 2000:  # no room below the ephemeral range: the old way
        return _kernel_port(host)
    try:
        os.makedirs(LOCK_DIR, mode=0o1777, exist_ok=True)
    except OSError:
        return _kernel_port(host)
    for _ in range(200):
        port = random.randrange(LOW, high)
        if port in _held:
            continue
        fd = os.open(os.path.join(LOCK_DIR, str(port)), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if not _bindable(host, port, udp):
            os.close(fd)
            continue
        os.set_inheritable(fd, False)
        _held[port] = fd
        return port
    raise AssertionError(f"no free port in {LOW}..{high - 1} on {host}")
