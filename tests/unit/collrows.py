"""Collective rows built by hand for the analysis tests, and seed 001's hang rebuilt from them."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from hangdoc.bundle import Bundle
from hangdoc.schema import table_from_rows

AR = dict(op="all_reduce", reduce_op="SUM", dtype="bfloat16", shape=(15, 2))  # seed 001's TP all_reduce
AGV = dict(op="all_gatherv", dtype="bfloat16", shape=(14, 256))  # ... and the odd rank's all_gatherv
DP_SYNC = dict(op="all_reduce", reduce_op="SUM", dtype="int32", shape=(4,))


def call(rank: int, group: str, seq: int, op: str = "all_reduce", *, ranks: Sequence[int] | None = None,
         desc: str | None = None, size: int | None = None, reduce_op: str | None = None, dtype: str | None = "float32",
         shape: Sequence[int] = (4,), state: str = "completed", t: float | None = None, **extra) -> dict:
    """One row of the collectives table. Element counts follow the op's size rule from `shape` (the input)."""
    members = sorted(ranks) if ranks is not None else None
    size = size if size is not None else (len(members) if members else None)
    n = math.prod(shape)
    out_n = n * size if op in ("all_gather", "all_gatherv") and size else (
        n // size if op in ("reduce_scatter", "reduce_scatterv") and size else n)
    row = dict(rank=rank, group=group, group_desc=desc, group_ranks=members, group_size=size, seq=seq, op=op,
               reduce_op=reduce_op, dtype=dtype, in_shapes=[list(shape)], in_numel=n, out_numel=out_n,
               state=state, t_issue=t, source="test")
    row.update(extra)
    return row


def history(rank: int, group: str, n: int, *, start: int = 1, last_state: str | None = None, t0: float = 0.0,
            **kw) -> list[dict]:
    """Calls start..start+n-1 of one rank on one communicator, all completed unless `last_state` says."""
    rows = [call(rank, group, s, t=t0 + s, **kw) for s in range(start, start + n)]
    if rows and last_state:
        rows[-1]["state"] = last_state
    return rows


def table(rows: Iterable[dict]):
    return table_from_rows("collectives", list(rows))


def bundle(rows: Iterable[dict], inputs: Sequence[str] = ("hand-built",)) -> Bundle:
    b = Bundle()
    b.add("collectives", table(rows))
    b.manifest["inputs"] = list(inputs)
    return b


def seed001_rows(odd: int = 6, swap: int = 17, states: bool = True) -> list[dict]:
    """Seed 001's hang, TP=4 x DP=2 (global rank = dp * 4 + tp), every process naming its groups "tp:0"/"dp:0".

    `odd` posts all_gatherv [14, 256] as tp call 390 + swap while its tp peers post all_reduce SUM [15, 2] as
    call 390; it completed `swap` fewer dp calls. Its dp partner waits in dp at a seq it never issued, and that
    partner's tp peers wait in tp at a seq the partner never issued. With states=False every state is
    'unknown' (a home-made trace), and issue times order each rank's calls.
    """
    tp_n, dp_n = 389, 96
    dp_t, tp_t = 10_000.0, 20_000.0  # dp calls of the step, then tp calls
    rows: list[dict] = []
    partner = (odd + 4) % 8
    for r in range(8):
        tp_members = [r // 4 * 4 + i for i in range(4)]
        dp_members = [r % 4, r % 4 + 4]
        tp = dict(ranks=tp_members, **AR)
        dp = dict(ranks=dp_members, **DP_SYNC)
        if r == odd:
            rows += history(r, "tp:0", tp_n + swap, t0=tp_t, **tp)
            rows.append(call(r, "tp:0", tp_n + swap + 1, state="started", t=tp_t + 1e4, **{**tp, **AGV}))
            rows += history(r, "dp:0", dp_n - swap, t0=dp_t, **dp)
        elif r == partner:
            rows += history(r, "tp:0", tp_n, t0=tp_t, **tp)
            rows += history(r, "dp:0", dp_n + 1, t0=dp_t + 1e5, last_state="started", **dp)
        else:
            rows += history(r, "tp:0", tp_n + 1, t0=tp_t, last_state="started", **tp)
            rows += history(r, "dp:0", dp_n, t0=dp_t, **dp)
    if not states:
        for row in rows:
            row["state"] = "unknown"
    return rows
