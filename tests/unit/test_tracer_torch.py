"""torch.distributed wrappers in one process (gloo, world of 1): what gets recorded, and stop() undoing it."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from hangdoc.importers import hangdoc_trace  # noqa: E402
from hangdoc.tracer import activate  # noqa: E402
from hangdoc.tracer import torch_dist  # noqa: E402
from tracer_world import traced  # noqa: E402,F401


def _rows(trace_dir: Path) -> list[dict]:
    files = sorted(trace_dir.glob("*.hdtrace"))
    assert len(files) == 1
    return hangdoc_trace.read(files).table("collectives").to_pylist()


def test_both_names_are_one_wrapper(traced: Path) -> None:
    for name in ("all_reduce", "broadcast", "all_gather_single", "isend", "barrier"):
        fn = getattr(dist, name)
        assert getattr(fn, "__hangdoc_wrapped__", False), name
        assert getattr(dist.distributed_c10d, name) is fn
    # Where send() calls isend() by its global name (torch 2.13), only isend is wrapped: one record per send.
    assert getattr(dist.send, "__hangdoc_wrapped__", False) is not torch_dist._delegates(dist.send)


def test_calls_are_recorded_in_order_with_state(traced: Path) -> None:
    t = torch.ones(3, 5)
    dist.all_reduce(t)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    work = dist.all_reduce(torch.ones(7, dtype=torch.float64), async_op=True)
    work.wait()
    dist.broadcast(torch.zeros(4, dtype=torch.int64), src=0)
    out = torch.empty(3, 5)
    dist.all_gather_into_tensor(out, t)
    dist.barrier()
    with pytest.raises(Exception):
        dist.broadcast(t, src=3)  # not a member: the call raises, the record says so
    deadline = time.time() + 10
    while time.time() < deadline:
        rows = _rows(traced)
        if rows[2]["state"] == "completed":
            break
        time.sleep(0.05)
    ops = [(r["op"], r["reduce_op"], r["dtype"], r["in_shapes"], r["seq"]) for r in rows]
    assert ops[:6] == [
        ("all_reduce", "SUM", "float32", [[3, 5]], 1),
        ("all_reduce", "MAX", "float32", [[3, 5]], 2),
        ("all_reduce", "SUM", "float64", [[7]], 3),
        ("broadcast", None, "int64", [[4]], 4),
        ("all_gather", None, "float32", [[3, 5]], 5),
        ("barrier", None, None, None, 6),
    ]
    assert [r["state"] for r in rows[:6]] == ["completed"] * 6
    assert rows[4]["out_numel"] == 15 and rows[3]["peer"] == 0
    assert {r["group"] for r in rows} == {"0"} and rows[0]["group_desc"] == "default_pg"
    assert rows[0]["rank"] == 0 and rows[0]["group_ranks"] == [0]
    assert rows[0]["call_site"].split(" ")[1] == "test_calls_are_recorded_in_order_with_state"
    if len(rows) == 7:  # torch may reject src=3 before or after the wrapper recorded it
        assert rows[6]["state"] == "issued"


def test_stop_restores_every_original(tmp_path: Path) -> None:
    before = dist.all_reduce
    activate.start(tmp_path)
    try:
        assert dist.all_reduce is not before
    finally:
        activate.stop()
    assert dist.all_reduce is before and dist.distributed_c10d.all_reduce is before
