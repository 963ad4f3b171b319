"""Rows that several merged bundles hold, counted once.

A hang on many nodes is captured many times over: a capture run twice on one node, the same bundle passed
twice, or every node's capture reading the same Flight Recorder dumps from a shared file system. Merging
must not double a rank's calls, a process, a log line or a thread's stack. Without that, a stack made of two
captures' frames at the same sample number, or a log signature counted twice, would mislead the analysis.

- A bundle that is the same capture as an earlier one (same host, creation time and table sizes) adds nothing.
- A process, kernel stack, GPU holder or log line seen by several captures is kept from the newest one.
- A collective call (rank, communicator, seq, op) recorded by several bundles is kept from the one that
  saw it furthest along (completed beats started beats issued), then the newest.
- Samples (threads, Python stacks, GPUs) of later captures of a host continue its sample numbers.

"Newest" compares creation times of captures of one host only, so clock offsets between hosts never matter.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hangdoc.schema import STATES

if TYPE_CHECKING:
    from hangdoc.bundle import Bundle

# One thing per key: the copy from the newest bundle holding it stays.
SNAPSHOT_KEYS: dict[str, tuple[str, ...]] = {
    "processes": ("host", "pid", "create_time"),
    "kernel_stacks": ("host", "pid", "tid"),
    "gpu_processes": ("host", "uuid", "pid"),
    "log_events": ("host", "file", "line_no"),
}
CALL_KEY = ("rank", "group", "seq", "op")
SAMPLED = ("thread_samples", "py_frames", "gpu_samples")
_STATE_ORDER = {s: i for i, s in enumerate(("unknown", "issued", "started", "timed_out", "completed"))}
assert set(_STATE_ORDER) == set(STATES)


def _created(b: "Bundle") -> float:
    try:
        return float(b.manifest.get("created") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _values(table: pa.Table, column: str) -> set[Any]:
    col = table.column(column)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return set(pc.unique(col).to_pylist())


def _shared(tables: Sequence[pa.Table | None], column: str) -> bool:
    """Whether any value of `column` (nulls included) occurs in more than one of the tables."""
    seen: set[Any] = set()
    for t in tables:
        if t is None or not t.num_rows:
            continue
        values = _values(t, column)
        if seen & values:
            return True
        seen |= values
    return False


def _keep_winners(tables: list[pa.Table | None], keys: tuple[str, ...], score: list[np.ndarray]) -> list[np.ndarray | None]:
    """Per table a mask: rows of the bundle with the highest score for their key (all of its rows at that key)."""
    import pandas as pd

    frames = []
    for i, t in enumerate(tables):
        if t is None or not t.num_rows:
            continue
        cols = {}
        for k in keys:
            col = t.column(k)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            cols[k] = col.to_numpy(zero_copy_only=False)
        frame = pd.DataFrame(cols)
        frame["_i"] = i
        frame["_score"] = score[i]
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    best = df.groupby(list(keys), dropna=False, sort=False)["_score"].transform("max").to_numpy()
    n = len(tables)
    keep = (best % n) == df["_i"].to_numpy()
    out: list[np.ndarray | None] = [None] * n
    start = 0
    for i, t in enumerate(tables):
        if t is None or not t.num_rows:
            continue
        out[i] = keep[start : start + t.num_rows]
        start += t.num_rows
    return out


def drop_duplicates(bundles: Sequence["Bundle"]) -> tuple[list[dict[str, pa.Table] | None], list[str]]:
    """Each bundle's tables with rows another bundle also holds left out (None for a bundle that is the same
    capture as an earlier one), and notes saying what was merged."""
    n = len(bundles)
    tables: list[dict[str, pa.Table]] = [dict(b.tables) for b in bundles]
    copies: set[int] = set()
    notes: list[str] = []
    if n < 2:
        return list(tables), notes
    age = sorted(range(n), key=lambda i: (_created(bundles[i]), i))
    pos = {i: p for p, i in enumerate(age)}  # 0 = oldest
    seen: dict[tuple[Any, ...], int] = {}
    for i in age:
        m = bundles[i].manifest
        ident = (m.get("host"), _created(bundles[i]), tuple(sorted((k, t.num_rows) for k, t in bundles[i].tables.items())))
        if ident in seen:
            tables[i] = {}
            copies.add(i)
            first = bundles[seen[ident]].manifest.get("inputs") or ["an earlier input"]
            mine = m.get("inputs") or [f"input {i + 1}"]
            notes.append(f"{mine[-1]}: the same capture as {first[-1]} (host {m.get('host')}); counted once")
        else:
            seen[ident] = i
    dropped: dict[str, int] = {}

    def apply(name: str, masks: list[np.ndarray | None]) -> None:
        for i, mask in enumerate(masks):
            if mask is not None and not mask.all():
                dropped[name] = dropped.get(name, 0) + int((~mask).sum())
                tables[i][name] = tables[i][name].filter(pa.array(mask))

    for name, keys in SNAPSHOT_KEYS.items():
        these = [t.get(name) for t in tables]
        if _shared(these, "host"):
            score = [None if t is None else np.full(t.num_rows, pos[i] * n + i, np.int64) for i, t in enumerate(these)]
            apply(name, _keep_winners(these, keys, score))
    calls = [t.get("collectives") for t in tables]
    if _shared(calls, "rank"):
        score = []
        for i, t in enumerate(calls):
            if t is None:
                score.append(None)
                continue
            state = t.column("state")
            state = state.cast(state.type.value_type) if pa.types.is_dictionary(state.type) else state
            order = pc.index_in(state, value_set=pa.array(list(_STATE_ORDER)))
            rank = pc.fill_null(order, 0).to_numpy(zero_copy_only=False).astype(np.int64)
            score.append((rank * n + pos[i]) * n + i)
        apply("collectives", _keep_winners(calls, CALL_KEY, score))
    for name in SAMPLED:
        _continue_samples([t.get(name) for t in tables], age, tables, name)
    if dropped:
        what = ", ".join(f"{name} {rows:,}" for name, rows in sorted(dropped.items()))
        notes.append(f"rows held by more than one input bundle counted once (left out: {what})")
    return [None if i in copies else t for i, t in enumerate(tables)], notes


def _continue_samples(these: list[pa.Table | None], age: list[int], tables: list[dict[str, pa.Table]], name: str) -> None:
    """Later captures of a host number their samples after the earlier ones' (sample 0 of two captures is
    not one sample)."""
    if not _shared(these, "host"):
        return
    next_sample: dict[Any, int] = {}
    for i in age:
        t = these[i]
        if t is None or not t.num_rows:
            continue
        hosts = t.column("host").to_numpy(zero_copy_only=False)
        sample = pc.fill_null(t.column("sample"), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        shifted = sample.copy()
        for host in set(hosts.tolist()):
            rows = hosts == host if host is not None else np.equal(hosts, None)
            offset = next_sample.get(host, 0)
            shifted[rows] += offset
            next_sample[host] = int(shifted[rows].max()) + 1
        if not np.array_equal(shifted, sample):
            valid = t.column("sample").is_valid()
            column = pa.array(shifted, pa.int64(), mask=~valid.to_numpy(zero_copy_only=False))
            tables[i][name] = t.set_column(t.column_names.index("sample"), "sample", column)
