"""Reading trace files back: header, groups, call sites and the valid records in write order.

Pure reading (numpy over the file's bytes), no torch. A file may belong to a process that was SIGKILLed in
the middle of a write, or may have been copied while it was still being written: records whose head and
tail stamps differ are torn and skipped, a file shorter than its header says is read as far as it goes,
and each such thing becomes a note rather than an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hangdoc.tracer import format as F

RECORD_DTYPE = np.dtype([
    ("head", "<u8"), ("t", "<i8"), ("numel", "<i8"), ("out_numel", "<i8"), ("dims", "<i8", (4,)),
    ("seq", "<u4"), ("gid", "<u2"), ("op", "u1"), ("redop", "u1"), ("dtype", "u1"), ("ndim", "u1"),
    ("state", "u1"), ("flags", "u1"), ("peer", "<i4"), ("site", "<u4"), ("pad", "V4"), ("tail", "<u8"),
])
assert RECORD_DTYPE.itemsize == F.RECORD_BYTES


class TraceFormatError(ValueError):
    """Not a trace file, or one of a version this hangdoc cannot read."""


@dataclass
class Group:
    kind: str
    name: str
    desc: str
    size: int
    ranks: tuple[int, ...] | None  # in group order; None when the table could not hold them


@dataclass
class TraceFile:
    path: Path
    host: str
    pid: int
    rank: int | None
    world_size: int | None
    local_rank: int | None
    t_start: float
    command: str
    capacity: int
    groups: dict[int, Group]
    sites: dict[int, str]
    records: np.ndarray  # RECORD_DTYPE, valid records only, ordered by stamp (write order)
    cursor: int = 0  # the header's write cursor (refreshed every 1024 records)
    notes: list[str] = field(default_factory=list)


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


def is_trace(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(F.MAGIC)) == F.MAGIC
    except OSError:
        return False


def read(path: str | os.PathLike[str]) -> TraceFile:
    p = Path(path)
    data = p.read_bytes()
    if len(data) < F.HEADER.size or data[: len(F.MAGIC)] != F.MAGIC:
        raise TraceFormatError(f"{p}: not a hangdoc trace file")
    (_, version, header_bytes, record_bytes, capacity, max_groups, group_bytes, max_sites, site_bytes,
     records_offset, pid, rank, world_size, local_rank, t_start, cursor, host, command) = F.HEADER.unpack_from(data)
    if version > F.VERSION:
        raise TraceFormatError(f"{p}: trace format version {version} is newer than this hangdoc reads ({F.VERSION})")
    if record_bytes != F.RECORD_BYTES or group_bytes != F.GROUP_BYTES or site_bytes != F.SITE_BYTES:
        raise TraceFormatError(f"{p}: unexpected record layout ({record_bytes}/{group_bytes}/{site_bytes} bytes)")
    notes: list[str] = []

    groups: dict[int, Group] = {}
    for gid in range(max_groups):
        off = header_bytes + gid * group_bytes
        if off + group_bytes > len(data) or data[off] != 1:
            break  # entries are allocated in order: the first unused one ends the table
        _, kind, size, name, desc, ranks_text = F.GROUP.unpack_from(data, off)
        try:
            ranks: tuple[int, ...] | None = tuple(F.expand_ranks(_text(ranks_text))) or None
        except ValueError:
            ranks = None
        if ranks is not None and len(ranks) != size:
            ranks = None
        groups[gid] = Group(_text(kind), _text(name), _text(desc), size, ranks)

    sites: dict[int, str] = {}
    sites_offset = header_bytes + max_groups * group_bytes
    for i in range(max_sites):
        off = sites_offset + i * site_bytes
        if off + site_bytes > len(data) or data[off] != 1:
            break
        sites[i + 1] = _text(F.SITE.unpack_from(data, off)[1])

    have = max(0, (len(data) - records_offset) // record_bytes)
    if have < capacity:
        notes.append(f"{p.name}: file is truncated ({have} of {capacity} record slots present); read what is there")
    n = min(have, capacity)
    recs = np.frombuffer(data, dtype=RECORD_DTYPE, count=n, offset=records_offset) if n else np.empty(0, RECORD_DTYPE)
    used = recs["head"] != 0
    slot_ok = (recs["head"] - 1) % np.uint64(capacity) == np.arange(n, dtype=np.uint64)
    valid = used & (recs["head"] == recs["tail"]) & slot_ok
    torn = int((used & ~valid).sum())
    if torn:
        notes.append(f"{p.name}: skipped {torn} torn record(s) (a write cut short, e.g. by SIGKILL)")
    recs = recs[valid]
    recs = recs[np.argsort(recs["head"], kind="stable")]
    if len(recs) and int(recs["head"][-1]) > capacity:
        lost = int(recs["head"][-1]) - capacity
        notes.append(f"{p.name}: ring wrapped; the oldest {lost} call(s) were overwritten (raise HANGDOC_TRACE_RECORDS)")
    unknown = set(np.unique(recs["gid"]).tolist()) - set(groups)
    if unknown:
        notes.append(f"{p.name}: {int(np.isin(recs['gid'], list(unknown)).sum())} record(s) on a group the table "
                     f"could not hold")
    return TraceFile(
        path=p, host=_text(host), pid=pid, rank=rank if rank >= 0 else None,
        world_size=world_size if world_size > 0 else None, local_rank=local_rank if local_rank >= 0 else None,
        t_start=t_start / 1e9, command=_text(command), capacity=capacity, groups=groups, sites=sites,
        records=recs, notes=notes, cursor=cursor,
    )
