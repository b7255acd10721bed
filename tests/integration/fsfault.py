"""fsfault: drive the LD_PRELOAD shim tests/shim/fsfault.c (built by meson,
path in $FSFAULT_SHIM) from the integration tests.

    env = fsfault.env(prefix, undo=path)      # for mxdtest.Mxd(env=...)
    stats = fsfault.power_cut(undo_path)      # after SIGKILL: drop unsynced writes
    env = fsfault.env(prefix, enospc=flag)    # writes fail with ENOSPC while flag exists

prefix: files whose path starts with it are watched (e.g. TMP/queue.db
covers the database, its -wal and -shm). power_cut() replays the undo log
backwards to each file's last fsync mark, so every watched file holds
exactly what was synced, as after a power cut, then removes the log and
SQLite's -shm files (shared memory does not survive a power cut).
"""

import os
import struct

REC = struct.Struct("<IIIIQQQ")
REC_MAGIC = 0x46534655
REC_PRE = 1
REC_SYNC = 2


def shim_path():
    path = os.environ.get("FSFAULT_SHIM")
    if not path or not os.path.exists(path):
        raise AssertionError("$FSFAULT_SHIM is not set or missing (run through meson test)")
    return os.path.abspath(path)


def env(prefix, undo=None, enospc=None):
    e = {"LD_PRELOAD": shim_path(), "FSFAULT_DIR": prefix}
    if undo:
        e["FSFAULT_UNDO"] = undo
    if enospc:
        e["FSFAULT_ENOSPC"] = enospc
    # In the sanitizer build the shim comes before the ASan runtime.
    asan = os.environ.get("ASAN_OPTIONS", "")
    e["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return e


def read_log(path):
    recs = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + REC.size <= len(data):
        magic, typ, plen, _, off, ln, old_size = REC.unpack_from(data, pos)
        if magic != REC_MAGIC:
            raise AssertionError(f"undo log {path} corrupt at {pos}")
        pos += REC.size
        name = data[pos:pos + plen].decode()
        pos += plen
        old = data[pos:pos + ln] if typ == REC_PRE else b""
        pos += ln if typ == REC_PRE else 0
        if len(old) != (ln if typ == REC_PRE else 0):
            break  # a record cut short by the kill: its write never happened
        recs.append((typ, name, off, old, old_size))
    return recs


def power_cut(undo_path):
    """Reverts every watched file to its last fsync. Returns
    (records, files touched, octets of unsynced writes dropped)."""
    if not os.path.exists(undo_path):
        return 0, 0, 0
    recs = read_log(undo_path)
    last_sync = {}
    for i, (typ, name, *_rest) in enumerate(recs):
        if typ == REC_SYNC:
            last_sync[name] = i
    touched, dropped = set(), 0
    for i in range(len(recs) - 1, -1, -1):
        typ, name, off, old, old_size = recs[i]
        if typ != REC_PRE or i < last_sync.get(name, -1) or not os.path.exists(name):
            continue
        with open(name, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            if old:
                f.seek(off)
                f.write(old)
            f.truncate(old_size)
            dropped += max(0, size - old_size) + len(old)
        touched.add(name)
    os.unlink(undo_path)
    for name in {r[1] for r in recs}:
        if name.endswith("-shm") and os.path.exists(name):
            os.unlink(name)
    return len(recs), len(touched), dropped
