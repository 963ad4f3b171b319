"""Every bundle table's Arrow schema and the bundle format version.

This is the only module that defines columns. Collectors and importers build rows (dicts) or pyarrow
tables of these schemas and hand them to a Bundle; analysis reads them back by these names.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"

_i64 = pa.int64()
_f64 = pa.float64()
_str = pa.string()
_bool = pa.bool_()
_ints = pa.list_(pa.int64())
_shapes = pa.list_(pa.list_(pa.int64()))
_strs = pa.list_(pa.string())
# Columns that repeat a few distinct strings over millions of rows (op names, group names, states) are
# dictionary-encoded: an int32 per row in memory, and Parquet stores them that way too.
_dict = pa.dictionary(pa.int32(), pa.string())

# Collective call states, in the order a call goes through them. "timed_out": the rank's own watchdog said the
# call ran past its timeout (a c10d watchdog line, a desync report): still in flight, and the rank a waiter.
STATES = ("issued", "started", "timed_out", "completed", "unknown")

# What a log line says about the rank it is about (log_events.event). Collective positions from logs go to the
# collectives table instead (source = the log kind); these are the per-rank happenings around them.
EVENTS = (
    "oom",  # ran out of (GPU) memory
    "raised",  # a Python exception or a fatal error, other than a timeout
    "exited",  # the process exited or died (exit code, "died unexpectedly")
    "signal",  # the process got a fatal signal (SIGABRT, SIGKILL, SIGSEGV ...)
    "timeout",  # the rank waited past a timeout (a waiter), no collective position given
    "peer_gone",  # the rank lost a connection to a peer (that peer exited)
    "parent_exited",  # the process saw its parent exit
    "seen",  # the rank wrote this file (one row per rank and file): the rank's log is in the input
    "other",  # any other catalogued line (start-up failures, KV transfer lines, metrics)
)

PROCESSES = pa.schema(
    [
        ("host", _str),
        ("pid", _i64),
        ("ppid", _i64),
        ("parent_alive", _bool),
        ("create_time", _f64),
        ("status", _str),  # psutil status, or "gone" when it exited mid-capture
        ("exe", _str),
        ("cmdline", _strs),
        ("title", _str),
        ("role", _str),  # worker / engine / api / launcher / other
        ("global_rank", _i64),
        ("local_rank", _i64),
        ("world_size", _i64),
        ("tp_rank", _i64),
        ("dp_rank", _i64),
        ("pp_rank", _i64),
        ("ep_rank", _i64),
        ("gpu_indices", _ints),
        ("rank_source", _str),  # trace / env / title / log / argv
        ("env", pa.map_(_str, _str)),  # allow-listed, secrets redacted
        ("stdout_path", _str),
        ("stderr_path", _str),
    ]
)

THREAD_SAMPLES = pa.schema(
    [
        ("host", _str),
        ("pid", _i64),
        ("tid", _i64),
        ("comm", _str),
        ("sample", _i64),
        ("t", _f64),
        ("state", _str),  # R S D Z T ... from /proc stat, or "gone" (the thread exited since the last sample)
        ("wchan", _str),
        ("utime", _f64),  # seconds
        ("stime", _f64),
        ("voluntary_ctxt_switches", _i64),
        ("nonvoluntary_ctxt_switches", _i64),
        ("syscall", _str),  # syscall name (futex, read, epoll_wait...; the number when unnamed), "running", "-1" (none), null
    ]
)

KERNEL_STACKS = pa.schema(
    [
        ("host", _str),
        ("pid", _i64),
        ("tid", _i64),
        ("frames", _strs),
    ]
)

PY_FRAMES = pa.schema(
    [
        ("host", _str),
        ("pid", _i64),
        ("tid", _i64),
        ("thread_name", _str),
        ("sample", _i64),
        ("depth", _i64),  # 0 = innermost frame
        ("function", _str),
        ("file", _str),
        ("line", _i64),
        ("native", _bool),
        ("idle", _bool),
        ("source", _str),  # py-spy / faulthandler / text / vllm-stack-dump
    ]
)

GPU_SAMPLES = pa.schema(
    [
        ("host", _str),
        ("gpu", _i64),
        ("uuid", _str),
        ("bus_id", _str),
        ("name", _str),
        ("sample", _i64),
        ("t", _f64),
        ("sm_util", _f64),  # percent
        ("mem_bw_util", _f64),  # percent
        ("mem_used", _i64),  # bytes
        ("mem_total", _i64),
        ("power_w", _f64),
        ("sm_clock_mhz", _f64),
        ("temperature_c", _f64),
        ("xid", _i64),
        ("ecc_uncorrected", _i64),
        ("source", _str),  # nvml / nvidia-smi
    ]
)

GPU_PROCESSES = pa.schema(
    [
        ("host", _str),
        ("gpu", _i64),
        ("uuid", _str),
        ("pid", _i64),
        ("used_memory", _i64),
    ]
)

COLLECTIVES = pa.schema(
    [
        ("host", _dict),
        ("rank", _i64),  # global rank
        ("pid", _i64),
        ("group", _dict),  # the name the recorder gave the communicator ("0", "tp:0", ...)
        ("group_desc", _dict),  # readable description ("tp:1", FR pg_desc); may be null
        # Member global ranks, sorted. Listed on at least one row of each communicator (group name + member
        # set); other rows may be null: a 16k-rank world group repeated on every row would not fit in memory.
        # A row without it belongs to the communicator of its group name that lists its rank.
        ("group_ranks", _ints),
        ("group_size", _i64),
        ("rank_in_group", _i64),
        ("seq", _i64),  # per-communicator sequence number, 1-based
        ("op", _dict),  # normalised: all_reduce, all_gather, all_gatherv, reduce_scatter, broadcast, send, recv...
        ("reduce_op", _dict),  # SUM, AVG, MAX ... or null
        ("dtype", _dict),
        ("in_shapes", _shapes),
        ("out_shapes", _shapes),
        ("in_numel", _i64),
        ("out_numel", _i64),
        ("peer", _i64),  # p2p peer or root, global rank
        ("t_issue", _f64),  # unix seconds
        ("state", _dict),  # one of STATES
        ("source", _dict),  # hangdoc-trace / flight-recorder / jsonl
        ("record_id", _i64),  # the recorder's own id (FR record_id); never used for alignment
        ("call_site", _dict),
    ]
)

LOG_EVENTS = pa.schema(
    [
        ("host", _str),
        ("file", _str),
        ("line_no", _i64),
        ("t", _f64),
        ("pid", _i64),
        ("rank", _i64),
        ("signature", _str),  # the catalogue id or log format that matched
        ("event", _str),  # one of EVENTS: what the line says about `rank`
        ("severity", _str),
        ("text", _str),
        ("context", _strs),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "processes": PROCESSES,
    "thread_samples": THREAD_SAMPLES,
    "kernel_stacks": KERNEL_STACKS,
    "py_frames": PY_FRAMES,
    "gpu_samples": GPU_SAMPLES,
    "gpu_processes": GPU_PROCESSES,
    "collectives": COLLECTIVES,
    "log_events": LOG_EVENTS,
}


def empty(name: str) -> pa.Table:
    """An empty table of the named schema."""
    return TABLES[name].empty_table()


def table_from_rows(name: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a table of the named schema from dicts; missing keys become null, unknown keys are an error."""
    schema = TABLES[name]
    rows = list(rows)
    known = set(schema.names)
    for row in rows:
        extra = set(row) - known
        if extra:
            raise KeyError(f"{name}: unknown column(s) {sorted(extra)}")
    columns = {f.name: [row.get(f.name) for row in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def conform(name: str, table: pa.Table) -> pa.Table:
    """Cast a table to the named schema: add missing columns as nulls, order and type them as the schema says.

    Dictionary columns may hold a different dictionary in each chunk (as Arrow allows); readers that need
    one dictionary call `unify_dictionaries()` first."""
    schema = TABLES[name]
    unknown = set(table.column_names) - set(schema.names)
    if unknown:
        raise KeyError(f"{name}: unknown column(s) {sorted(unknown)}")
    arrays = []
    for field in schema:
        if field.name not in table.column_names:
            arrays.append(null_column(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if col.type != field.type:
            col = col.cast(field.type)
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema)


def null_column(n: int, typ: pa.DataType) -> pa.Array:
    """n nulls of a schema type whose buffers are zero pages the process never writes (pa.nulls fills them
    in: at 30M rows an absent column would cost hundreds of MB of memory for nothing)."""
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ)
            or pa.types.is_dictionary(typ) or pa.types.is_list(typ)):
        return pa.nulls(n, typ)
    zeros = pa.py_buffer(np.zeros(n * 8 + 64, np.uint8))  # calloc'd: untouched until written, never written
    if pa.types.is_dictionary(typ):
        return pa.DictionaryArray.from_buffers(typ, n, [zeros, zeros], pa.array([], typ.value_type), null_count=n)
    if pa.types.is_list(typ):
        return pa.Array.from_buffers(typ, n, [zeros, zeros], null_count=n, children=[pa.array([], typ.value_type)])
    return pa.Array.from_buffers(typ, n, [zeros, zeros], null_count=n)


def dictionary_columns(name: str) -> list[str]:
    """The named table's dictionary-encoded columns (to read them from Parquet as such)."""
    return [f.name for f in TABLES[name] if pa.types.is_dictionary(f.type)]


def group_members(collectives: pa.Table) -> dict[tuple[int, str], tuple[int, ...]]:
    """(rank, group) -> that rank's communicator members, read as the collectives contract says: members
    are listed on some row of each communicator, and a rank's rows belong to the member set of their group
    name that holds the rank. Pairs no listing accounts for (or two would) are left out."""
    listed = collectives.filter(pc.is_valid(collectives.column("group_ranks")))
    sets: dict[str, set[tuple[int, ...]]] = {}
    for name, ranks in zip(listed.column("group").to_pylist(), listed.column("group_ranks").to_pylist()):
        sets.setdefault(name, set()).add(tuple(sorted(ranks)))
    pairs = collectives.select(["rank", "group"]).unify_dictionaries()
    out: dict[tuple[int, str], tuple[int, ...]] = {}
    for row in pairs.group_by(["rank", "group"], use_threads=False).aggregate([]).to_pylist():
        holding = [m for m in sets.get(row["group"], ()) if row["rank"] in m]
        if len(holding) == 1:
            out[(row["rank"], row["group"])] = holding[0]
    return out
