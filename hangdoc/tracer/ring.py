"""The recorder: one process's ring of collective records in a MAP_SHARED file.

Why a memory-mapped file: a store into the mapping lands in the page cache at once, so the records survive
SIGKILL, a segfault or a hang in teardown with nothing to flush and no thread to wake. Why fixed-size
records in a ring: the cost per call is one struct.pack_into into the mapping, and the file never grows.

Thread safety without a lock on the hot path: the record index and every per-group sequence number come
from iterators whose next() runs in C without releasing the GIL (itertools.count, seq_counter), so two
threads never get the same slot or seq. Registering a group or a call site (rare) takes a lock.
"""
from __future__ import annotations

import errno
import itertools
import mmap
import os
import resource
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from hangdoc.tracer import format as F


@dataclass(slots=True)
class GroupEntry:
    """What a wrapper needs to record a call on one communicator."""

    gid: int
    seq: Iterator[int]  # per-group sequence numbers, 1-based (see seq_counter)
    ranks: tuple[int, ...]
    rank_in_group: int
    name: str = ""


SKIP = GroupEntry(F.NO_GROUP, iter(()), (), -1)  # a group with nothing to record: the wrappers only call through


class _SkipEverything(dict):
    """The group cache of a process that traces nothing: every group is SKIP, and nothing is stored."""

    def __missing__(self, key: Any) -> GroupEntry:
        return SKIP


def seq_counter(end: int = F.SEQ_MASK + 1) -> Iterator[int]:
    """1, 2, ... end - 1, then 1 again: seq is 32 bits on disk, and wraps alike on every member.

    A chain of range iterators rather than a masked itertools.count: as cheap per next() (and as atomic
    under the GIL), with no masking on the hot path.
    """
    return itertools.chain.from_iterable(itertools.repeat(range(1, end)))


def trace_path(trace_dir: str, pid: int | None = None) -> str:
    host = socket.gethostname().split(".")[0] or "host"
    return os.path.join(trace_dir, f"{host}-{os.getpid() if pid is None else pid}{F.SUFFIX}")


def capacity_from_env() -> int:
    """HANGDOC_TRACE_RECORDS, or the default; never below 16 records."""
    try:
        return max(16, int(os.environ.get("HANGDOC_TRACE_RECORDS", "") or F.DEFAULT_RECORDS))
    except ValueError:
        return F.DEFAULT_RECORDS


def _map_reserved(path: str, size: int) -> mmap.mmap:
    """A new file of `size` bytes with every block reserved, mapped shared; OSError when it cannot be had.

    Why reserve: a store into a page of a sparse file that the file system cannot back (disk full, quota)
    is not an error the program can catch but SIGBUS, which kills the job. posix_fallocate fails here
    instead, with ENOSPC or EDQUOT. A file size limit (RLIMIT_FSIZE) below `size` would make it raise
    SIGXFSZ, which kills too, so that is checked first. The file is made read-only once created: a
    mistaken truncation by another (non-root) process, which would also end in SIGBUS, is refused.
    """
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < size:
        raise OSError(errno.EFBIG, f"the file size limit (ulimit -f) is below the trace file's {size} bytes")
    try:
        os.unlink(path)  # a file left by an earlier process with this pid: start a new one, never reuse it
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
            os.fchmod(fd, 0o444)
            return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.unlink(path)
            raise
    finally:
        os.close(fd)


class Recorder:
    """Writes records into `<dir>/<host>-<pid>.hdtrace`. Create one per process (see activate.recorder())."""

    def __init__(self, path: str, capacity: int = F.DEFAULT_RECORDS, *, rank: int = -1, world_size: int = -1,
                 local_rank: int = -1) -> None:
        self.path = path
        self.capacity = capacity
        self.groups_offset = F.HEADER_BYTES
        self.sites_offset = self.groups_offset + F.MAX_GROUPS * F.GROUP_BYTES
        self.records_offset = self.sites_offset + F.MAX_SITES * F.SITE_BYTES
        size = self.records_offset + capacity * F.RECORD_BYTES
        self.mm = _map_reserved(path, size)
        self.rank = rank
        command = " ".join(sys.argv)[:255] if getattr(sys, "argv", None) else ""
        F.HEADER.pack_into(
            self.mm, 0, F.MAGIC, F.VERSION, F.HEADER_BYTES, F.RECORD_BYTES, capacity, F.MAX_GROUPS,
            F.GROUP_BYTES, F.MAX_SITES, F.SITE_BYTES, self.records_offset, os.getpid(), rank, world_size,
            local_rank, time.time_ns(), 0, socket.gethostname().encode()[:64], command.encode(errors="replace")[:256],
        )
        self._index = itertools.count()  # record i has stamp i + 1 and lives in slot i % capacity
        self._lock = threading.Lock()
        self._gids: dict[tuple[Any, ...], GroupEntry] = {}
        # Call-site ids by id(code object), then by instruction offset: two lookups of small ints are
        # cheaper than building one combined key per call.
        self.sites: dict[int, dict[int, int]] = {}
        self._n_sites = 0
        self.cache: dict[Any, GroupEntry] = {}  # library object (process group, coordinator) -> entry
        self.pending: Any = None  # completion.Poller, started on the first async or GPU call
        # Views for the completion of a call: a record's head stamp is heads[offset >> 3] and its state byte
        # states[offset] (cheaper than unpack_from and an addition).
        self.heads = memoryview(self.mm).cast("Q")
        self.states = memoryview(self.mm)[F.STATE_OFFSET:]
        # Everything the hot path needs, in one attribute load.
        self.hot = (self, self.mm, self.records_offset, capacity, self._index, self.sites, self.cache, self.heads,
                    self.states)
        self.dropped_groups = 0

    # --- rare paths: header, groups, call sites ------------------------------------------------
    def set_rank(self, rank: int, world_size: int, local_rank: int = -1) -> None:
        """Fill in the rank once it is known (the file is created before the first call)."""
        if rank == self.rank:
            return
        self.rank = rank
        F.struct.pack_into("<iii", self.mm, F.RANK_OFFSET, rank, world_size, local_rank)

    def group(self, kind: str, name: str, desc: str, ranks: tuple[int, ...], rank_in_group: int) -> GroupEntry:
        """The entry for a communicator, registering it in the file's group table on first use.

        The same (kind, name, ranks) always maps to the same entry, so a communicator that is destroyed and
        created again keeps counting its sequence numbers where it stopped on every member alike.
        """
        key = (kind, name, ranks)
        entry = self._gids.get(key)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._gids.get(key)
            if entry is None:
                gid = len(self._gids)
                if gid < F.MAX_GROUPS:
                    text = F.compact_ranks(list(ranks)).encode()
                    if len(text) > 364:
                        text = b""  # too irregular to store: the reader reports the ranks as unknown
                    off = self.groups_offset + gid * F.GROUP_BYTES
                    F.GROUP.pack_into(self.mm, off, 0, kind.encode()[:15], len(ranks), name.encode()[:64],
                                      desc.encode()[:64], text)
                    self.mm[off] = 1  # commit: the entry is complete
                else:
                    self.dropped_groups += 1
                    gid = F.NO_GROUP
                entry = GroupEntry(gid, seq_counter(), ranks, rank_in_group, name)
                self._gids[key] = entry
        return entry

    def site(self, frame: Any) -> int:
        """Call-site id for a frame (1-based; 0 when the table is full)."""
        code, lasti = frame.f_code, frame.f_lasti
        sid = self.sites.get(id(code), {}).get(lasti)
        if sid is not None:
            return sid
        with self._lock:
            by_offset = self.sites.setdefault(id(code), {})
            sid = by_offset.get(lasti)
            if sid is None:
                n = self._n_sites
                if n < F.MAX_SITES:
                    self._n_sites = n + 1
                    code = frame.f_code
                    text = f"{code.co_filename}:{frame.f_lineno} {getattr(code, 'co_qualname', code.co_name)}"
                    off = self.sites_offset + n * F.SITE_BYTES
                    F.SITE.pack_into(self.mm, off, 0, text.encode(errors="replace")[-255:])
                    self.mm[off] = 1
                    sid = n + 1
                else:
                    sid = 0
                by_offset[lasti] = sid
        return sid

    # --- hot path --------------------------------------------------------------------------------
    def write(self, entry: GroupEntry, op: int, redop: int, dtype: int, numel: int, out_numel: int,
              shape: Any, peer: int, site: int, flags: int, seq: int | None = None) -> int:
        """Append one record in state 'issued'; returns its stamp (for complete())."""
        seq = next(entry.seq) if seq is None else seq & F.SEQ_MASK
        idx = next(self._index)
        stamp = idx + 1
        if not idx % F.CURSOR_EVERY:  # the header's write cursor (records before it are written)
            F.STAMP.pack_into(self.mm, F.CURSOR_OFFSET, idx)
        nd = len(shape)
        if nd > 4:
            shape = shape[:4]
        F.RECORDS_BY_NDIM[len(shape)].pack_into(
            self.mm, self.records_offset + idx % self.capacity * F.RECORD_BYTES, stamp, time.time_ns(), numel,
            out_numel, *shape, seq, entry.gid, op, redop, dtype, nd, F.ISSUED, flags, peer, site, stamp,
        )
        return stamp

    def complete(self, stamp: int, state: int = F.COMPLETED, flags: int = 0) -> None:
        """Mark a record completed (or raised), unless the ring has reused its slot since."""
        off = self.records_offset + ((stamp - 1) % self.capacity) * F.RECORD_BYTES
        if self.heads[off >> 3] == stamp:
            self.states[off] = state
            if flags:
                self.states[off + 1] |= flags

    def close(self) -> None:
        try:
            self.heads.release()
            self.states.release()
            self.mm.close()
        except (BufferError, ValueError):
            pass


# Recorder.hot of a process that traces nothing (its file could not be made): see activate.recorder().
OFF_HOT = (None, None, 0, 1, None, None, _SkipEverything(), None, None)
