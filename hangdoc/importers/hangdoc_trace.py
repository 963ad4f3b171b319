"""Importer for hangdoc's own trace files (`<host>-<pid>.hdtrace`, written by hangdoc.tracer).

One row of the collectives table per valid record, in write order. The rank comes from the file's header
(the most trusted source of a rank); group ids, descriptions and member ranks from its group table. Torn,
truncated or unreadable files become notes, never a crash: the other ranks' files are still worth reading.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hangdoc.bundle import Bundle
from hangdoc.schema import COLLECTIVES
from hangdoc.tracer import format as F
from hangdoc.tracer import reader

NAME = "hangdoc-trace"
SOURCE = "hangdoc-trace"

_OPS = np.array(F.OPS, dtype=object)
_REDUCE = np.array(F.REDUCE_OPS, dtype=object)
_DTYPES = np.array(F.DTYPES, dtype=object)
_STATE_NAMES = {0: "unknown", F.ISSUED: "issued", F.STARTED: "started", F.COMPLETED: "completed"}
_STATES = np.array([_STATE_NAMES.get(i, "unknown") for i in range(256)], dtype=object)


def matches(path: Path) -> bool:
    return path.suffix == F.SUFFIX or reader.is_trace(path)


def _shapes(recs: np.ndarray) -> pa.Array:
    """in_shapes as list<list<int64>>: one shape (the first input's), null when it had more than 4 dims."""
    ndim = recs["ndim"].astype(np.int64)
    known = (ndim <= 4) & (recs["dtype"] != 0)  # no shape for >4 dims or for calls without a tensor
    lengths = np.where(known, ndim, 0)
    mask = np.arange(4)[None, :] < lengths[:, None]
    values = pa.array(recs["dims"][mask], type=pa.int64())
    inner = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]), type=pa.int32()), values)
    outer_offsets = pa.array(np.arange(len(recs) + 1, dtype=np.int32))
    outer = pa.ListArray.from_arrays(outer_offsets, inner, mask=pa.array(~known))
    return outer.cast(COLLECTIVES.field("in_shapes").type)


def _first_rows_only(members: pa.Array, slot: np.ndarray) -> pa.Array:
    """Members on each group's first row only, as the collectives contract allows: repeating a world
    group's list on every row costs gigabytes at thousands of ranks."""
    first = np.zeros(len(slot), dtype=bool)
    first[np.unique(slot, return_index=True)[1]] = True
    return pc.if_else(pa.array(first), members, pa.nulls(len(slot), members.type))


def table(tf: reader.TraceFile) -> pa.Table:
    """The collectives rows of one trace file."""
    recs = tf.records
    n = len(recs)
    gids = recs["gid"].astype(np.int64)
    order = sorted(tf.groups)
    index = {gid: i for i, gid in enumerate(order)}
    slot = np.array([index.get(g, len(order)) for g in gids.tolist()], dtype=np.int64)  # last = unknown group

    def per_group(values: list, typ: pa.DataType) -> pa.Array:
        return pa.array(values + [None], type=typ).take(pa.array(slot))

    groups = [tf.groups[g] for g in order]
    rank = tf.rank
    in_group = [g.ranks.index(rank) if g.ranks and rank is not None and rank in g.ranks else None for g in groups]
    peer = recs["peer"].astype(np.int64)
    site_text = [tf.sites.get(int(s)) for s in recs["site"].tolist()] if n else []
    columns = {
        "host": pa.array([tf.host] * n, pa.string()),
        "rank": pa.array([rank] * n, pa.int64()),
        "pid": pa.array([tf.pid] * n, pa.int64()),
        "group": per_group([g.name for g in groups], pa.string()),
        "group_desc": per_group([g.desc or None for g in groups], pa.string()),
        "group_ranks": _first_rows_only(
            per_group([sorted(g.ranks) if g.ranks else None for g in groups], pa.list_(pa.int64())), slot
        ),
        "group_size": per_group([g.size for g in groups], pa.int64()),
        "rank_in_group": per_group(in_group, pa.int64()),
        "seq": pa.array(recs["seq"].astype(np.int64)),
        "op": pa.array(_OPS[np.minimum(recs["op"], len(_OPS) - 1)].tolist(), pa.string()),
        "reduce_op": pa.array(_REDUCE[np.minimum(recs["redop"], len(_REDUCE) - 1)].tolist(), pa.string()),
        "dtype": pa.array(_DTYPES[np.minimum(recs["dtype"], len(_DTYPES) - 1)].tolist(), pa.string()),
        "in_shapes": _shapes(recs),
        "in_numel": pa.array(recs["numel"].astype(np.int64)),
        "out_numel": pa.array(recs["out_numel"].astype(np.int64)),
        "peer": pa.array(peer, mask=peer < 0),
        "t_issue": pa.array(recs["t"].astype(np.float64) / 1e9),
        "state": pa.array(_STATES[recs["state"]].tolist(), pa.string()),
        "source": pa.array([SOURCE] * n, pa.string()),
        "record_id": pa.array((recs["head"] - 1).astype(np.int64)),
        "call_site": pa.array(site_text, pa.string()),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in COLLECTIVES]
    return pa.Table.from_arrays([a.cast(f.type) for a, f in zip(arrays, COLLECTIVES)], schema=COLLECTIVES)


def read(files: list[Path]) -> Bundle:
    bundle = Bundle()
    ranks_seen: dict[int, Path] = {}
    for path in files:
        try:
            tf = reader.read(path)
        except (OSError, reader.TraceFormatError) as exc:
            bundle.note(f"{path.name}: skipped: {exc}")
            continue
        for note in tf.notes:
            bundle.note(note)
        if tf.rank is None:
            bundle.note(f"{path.name}: pid {tf.pid} never learned its rank; its calls have no rank")
        elif tf.rank in ranks_seen and len(tf.records):
            bundle.note(f"{path.name}: rank {tf.rank} also wrote {ranks_seen[tf.rank].name} (a restart or a "
                        f"second process with the same rank)")
        if tf.rank is not None and len(tf.records):
            ranks_seen.setdefault(tf.rank, path)
        if len(tf.records):
            bundle.add("collectives", table(tf))
    if "collectives" not in bundle.tables:
        bundle.add("collectives", COLLECTIVES.empty_table())
    return bundle
