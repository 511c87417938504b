"""What a store's files must look like before roar maps them: owned by the
user, in directories nobody else may write to (or a team store made by
`roar request init --group`), and an LMDB data file whose header matches its
size. A store that fails is refused with one line, before any workload runs:
mapping a truncated data.mdb ends the process with SIGBUS, and a store in
another user's directory gives that user the runs' argv, env and redaction key.
"""

from __future__ import annotations

import os
import stat
import struct
import time

# LMDB's two meta pages (lmdb/mdb.c, 64-bit builds): a 16-byte page header,
# then MDB_meta: magic, version, address, mapsize, the free and main MDB_db
# records (48 bytes each; the free DB's md_pad holds the page size), last
# page number, transaction id.
MDB_MAGIC = 0xBEEFC0DE
MDB_DATA_VERSION = 1
PAGE_HEADER = 16
META = struct.Struct("<IIQQ48s48sQQ")
DB_PAD = struct.Struct("<I")


class UnsafeStore(Exception):
    """The store may not be used as it is; the message says why and what to do."""


def is_team_dir(st: os.stat_result) -> bool:
    """A team store's directory (`roar request init --group`): setgid and
    sticky; its group's members may write, nobody else may."""
    return bool(st.st_mode & stat.S_ISGID) and bool(st.st_mode & stat.S_ISVTX)


def check_dirs(home: str | os.PathLike, store_dir: str | os.PathLike) -> bool:
    """Refuse a ROAR_HOME or store directory someone else owns or may write
    to; returns whether it is a team store."""
    uid = os.getuid()
    team = False
    for d in (home, store_dir):
        try:
            st = os.stat(d)
        except OSError:  # missing or unreachable: opening it says why, in one line
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeStore(f"{d} is not a directory")
        shared = is_team_dir(st)
        team = team or shared
        if st.st_uid != uid and not shared:
            raise UnsafeStore(f"{d} belongs to another user (uid {st.st_uid}): a store there "
                              f"would not be yours alone; set ROAR_HOME to a directory you own")
        writable = 0o002 if shared else 0o022
        if st.st_mode & writable:
            raise UnsafeStore(f"{d} may be written by other users (mode "
                              f"{stat.S_IMODE(st.st_mode):o}): they could read or replace your "
                              f"runs; `chmod go-w {d}` or set ROAR_HOME elsewhere")
    return team


def check_files(store_dir: str | os.PathLike, team: bool) -> None:
    """Refuse LMDB files another user owns (outside a team store) or may write;
    files readable by others are made private (stores made by older roars)."""
    uid = os.getuid()
    for name in ("data.mdb", "lock.mdb"):
        p = os.path.join(store_dir, name)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeStore(f"{p} is not a regular file")
        if st.st_uid != uid and not team:
            raise UnsafeStore(f"{p} belongs to another user (uid {st.st_uid}); set ROAR_HOME "
                              f"to a store of your own")
        if st.st_mode & (0o002 if team else 0o022):
            raise UnsafeStore(f"{p} may be written by other users (mode "
                              f"{stat.S_IMODE(st.st_mode):o}); `chmod 600 {p}` if it is yours")
        want = 0o660 if team else 0o600
        if st.st_uid == uid and stat.S_IMODE(st.st_mode) & ~want:
            os.chmod(p, stat.S_IMODE(st.st_mode) & want)


def check_data_file(path: str | os.PathLike) -> None:
    """Refuse a data.mdb that LMDB would map wrongly: empty (a new store would
    silently replace the history), too short for its own header, without
    LMDB's magic, or shorter than the pages its newest meta page uses."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return
    if size == 0:
        time.sleep(0.1)  # another roar may be creating it this very moment
        size = os.stat(path).st_size
    what = f"the roar store's data file {path}"
    fix = "restore it from a backup, or move the store aside to start a new one"
    if size == 0:
        raise UnsafeStore(f"{what} is empty (truncated?): {fix}")
    with open(path, "rb") as f:
        head = f.read(PAGE_HEADER + META.size)
        if len(head) < PAGE_HEADER + META.size:
            raise UnsafeStore(f"{what} is truncated ({size} bytes): {fix}")
        metas = [META.unpack_from(head, PAGE_HEADER)]
        psize = DB_PAD.unpack_from(metas[0][4])[0]
        if metas[0][0] != MDB_MAGIC or metas[0][1] != MDB_DATA_VERSION:
            raise UnsafeStore(f"{what} is not an LMDB file (bad magic): {fix}")
        if psize < 512 or psize > (1 << 16) or psize & (psize - 1):
            raise UnsafeStore(f"{what} has a corrupt header (page size {psize}): {fix}")
        if size < 2 * psize:
            raise UnsafeStore(f"{what} is truncated ({size} bytes, less than its two "
                              f"header pages): {fix}")
        f.seek(psize)
        second = f.read(PAGE_HEADER + META.size)
        if len(second) == PAGE_HEADER + META.size:
            m = META.unpack_from(second, PAGE_HEADER)
            if m[0] == MDB_MAGIC:
                metas.append(m)
    newest = max(metas, key=lambda m: m[7])
    last_pg = newest[6]
    if (last_pg + 1) * psize > size:
        raise UnsafeStore(f"{what} is truncated: {size} bytes, but its header says it uses "
                          f"{(last_pg + 1) * psize}: {fix}")
