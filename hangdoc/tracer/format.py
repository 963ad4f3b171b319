"""The on-disk layout of a trace file (`<host>-<pid>.hdtrace`), shared by the recorder and the reader.

A trace file is a fixed-size memory-mapped file: a header, a group table, a call-site table, then a ring
of fixed-size records. Every field is little-endian. The recorder writes straight into the shared mapping,
so whatever it wrote is in the kernel's page cache the moment the store retires and survives SIGKILL of
the process with nothing to flush.

Torn writes: a record starts and ends with the same stamp (the record's global index + 1). The recorder
writes a record with one `pack_into`, which stores the fields in order, so a record cut short by SIGKILL
has a new head stamp and an old (or zero) tail stamp; the reader skips it. Group and call-site entries
are written body first and their `used` byte last.

Nothing here imports torch: the reader must work on a laptop that has only hangdoc.
"""
from __future__ import annotations

import struct

MAGIC = b"HDTRACE\x00"
VERSION = 1
SUFFIX = ".hdtrace"

# Header: magic, version, header size, record size, capacity, max groups, group entry size, max sites,
# site entry size, records offset, pid, rank, world size, local rank, start time (ns), cursor, host, command.
HEADER = struct.Struct("<8sIIIIIIIIQqiiiqQ64s256s")
HEADER_BYTES = 4096
RANK_OFFSET = struct.calcsize("<8sIIIIIIIIQq")  # rank, world size, local rank: "<iii" here
# The write cursor: a record index every record before which has been written; refreshed every 1024 records
# (the stamps are exact, the reader orders by them).
CURSOR_OFFSET = struct.calcsize("<8sIIIIIIIIQqiiiq")
CURSOR_EVERY = 1024  # a power of two: `not idx & (CURSOR_EVERY - 1)` on the hot path

# Group entry: used, kind (torch / vllm / sglang / pynccl / custom-ar), number of ranks, name, description,
# member global ranks in group order as compact text ("0-3", "0,4", "0-30:2").
GROUP = struct.Struct("<B15sI64s64s364s")
GROUP_BYTES = 512
MAX_GROUPS = 1024

# Call-site entry: used, "file:line function" as UTF-8.
SITE = struct.Struct("<B255s")
SITE_BYTES = 256
MAX_SITES = 4096

# Record: head stamp, issue time (ns), input numel, output numel, first four dims of the first input,
# per-group seq, group id, op, reduce op, dtype, ndim, state, flags, peer/root (global rank, -1 none),
# call-site id (0 unknown), padding, tail stamp. 96 bytes.
_RECORD_HEAD, _RECORD_TAIL = "<Qqqq", "IHBBBBBBiI4xQ"
RECORD = struct.Struct(f"{_RECORD_HEAD}4q{_RECORD_TAIL}")
# The recorder packs records with one of these: the same layout taking only the dims a tensor has (0-4),
# the rest written as zero bytes, so that no tuple of padded dims is built per call.
RECORDS_BY_NDIM = tuple(struct.Struct(f"{_RECORD_HEAD}{k}q{(4 - k) * 8}x{_RECORD_TAIL}") for k in range(5))
RECORD_BYTES = RECORD.size
SEQ_MASK = 0xFFFFFFFF  # seq is 32 bits on disk: it wraps (alike on every member of a group)
STATE_OFFSET = struct.calcsize("<Qqqq4qIHBBBB")
FLAGS_OFFSET = STATE_OFFSET + 1
STAMP = struct.Struct("<Q")
TAIL_OFFSET = RECORD_BYTES - 8
STATE_BYTE = struct.Struct("<B")

DEFAULT_RECORDS = 100_000
NO_GROUP = 0xFFFF

# Codes. Index 0 is "unknown" / none everywhere; names follow the collectives table's vocabulary.
OPS = (
    "unknown", "all_reduce", "all_gather", "all_gatherv", "reduce_scatter", "reduce_scatterv", "broadcast",
    "reduce", "gather", "scatter", "all_to_all", "barrier", "send", "recv", "all_reduce_coalesced",
    "all_gather_coalesced", "dispatch", "combine", "dispatch_router_logits",
)
OP_CODE = {name: i for i, name in enumerate(OPS)}
P2P_OPS = frozenset({OP_CODE["send"], OP_CODE["recv"]})

REDUCE_OPS = (None, "SUM", "AVG", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR", "PREMUL_SUM", "OTHER")
REDUCE_CODE = {name: i for i, name in enumerate(REDUCE_OPS)}

DTYPES = (
    None, "float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "complex64", "complex128",
    "uint16", "uint32", "uint64", "float8_e8m0fnu", "float4_e2m1fn_x2", "other",
)
DTYPE_CODE = {name: i for i, name in enumerate(DTYPES)}

STATES = ("unknown", "issued", "started", "completed")
ISSUED, STARTED, COMPLETED = 1, 2, 3

# Flags.
F_ASYNC = 1  # the caller asked for a work handle
F_RAISED = 2  # the call raised; it never completed
F_CUDA = 4  # the first tensor lives on a GPU: completion comes from a CUDA event
F_CAPTURING = 8  # issued while a CUDA graph was being captured: replays are not recorded


def compact_ranks(ranks: list[int] | tuple[int, ...]) -> str:
    """Ranks as short text: arithmetic runs become "a-b" or "a-b:step"."""
    out: list[str] = []
    i, n = 0, len(ranks)
    while i < n:
        j = i
        step = ranks[i + 1] - ranks[i] if i + 1 < n else 1
        while j + 1 < n and ranks[j + 1] - ranks[j] == step and step > 0:
            j += 1
        if j - i >= 2 or (j - i == 1 and step == 1):
            out.append(f"{ranks[i]}-{ranks[j]}" + (f":{step}" if step != 1 else ""))
            i = j + 1
        else:
            out.append(str(ranks[i]))
            i += 1
    return ",".join(out)


def expand_ranks(text: str) -> list[int]:
    """Inverse of compact_ranks; raises ValueError on anything else."""
    ranks: list[int] = []
    for part in filter(None, text.split(",")):
        if "-" in part:
            span, _, step = part.partition(":")
            lo, hi = span.split("-")
            ranks.extend(range(int(lo), int(hi) + 1, int(step or 1)))
        else:
            ranks.append(int(part))
    return ranks
