"""Trace files converted to the JSONL format read back by the JSONL importer as the same calls."""
from __future__ import annotations

import json
from pathlib import Path

from hangdoc.importers import load_path
from hangdoc.schema import group_members
from hangdoc.tracer import export
from hangdoc.tracer import format as F
from hangdoc.tracer.ring import Recorder


def test_export_round_trips_through_the_jsonl_importer(tmp_path: Path, capsys) -> None:
    src = tmp_path / "trace"
    src.mkdir()
    for rank in (4, 5):
        rec = Recorder(str(src / f"node-1-{100 + rank}.hdtrace"), 32, rank=rank, world_size=8)
        tp = rec.group("vllm", "tp:1", "tp:0", (4, 5, 6, 7), rank - 4)
        for i in range(3):
            rec.complete(rec.write(tp, F.OP_CODE["all_reduce"], F.REDUCE_CODE["SUM"], F.DTYPE_CODE["bfloat16"],
                                   30, 30, (15, 2), -1, 0, 0))
        rec.write(tp, F.OP_CODE["all_gatherv"] if rank == 5 else F.OP_CODE["all_reduce"], 0, F.DTYPE_CODE["int32"],
                  14 * 256, 14 * 256, (14, 256), -1, 0, 0)
        rec.close()
    out = tmp_path / "jsonl"
    assert export.main([str(src), str(out)]) == 0
    files = sorted(out.glob("*.jsonl"))
    assert [f.name for f in files] == ["node-1-104.jsonl", "node-1-105.jsonl"]
    header = json.loads(files[0].read_text().splitlines()[0])
    assert header == {"hangdoc_trace": 1, "rank": 4, "host": header["host"], "pid": header["pid"],
                      "groups": {"tp:1": [4, 5, 6, 7]}}

    direct_table, via_table = load_path(src).table("collectives"), load_path(out).table("collectives")
    assert group_members(via_table) == group_members(direct_table)  # members may be listed on fewer rows
    direct, via_jsonl = direct_table.to_pylist(), via_table.to_pylist()
    key = ("rank", "group", "seq", "op", "reduce_op", "dtype", "in_shapes", "state")
    assert sorted(tuple(str(r[k]) for k in key) for r in via_jsonl) == sorted(
        tuple(str(r[k]) for k in key) for r in direct)
    assert {r["op"] for r in via_jsonl if r["seq"] == 4} == {"all_reduce", "all_gatherv"}


def test_export_of_nothing_is_an_error(tmp_path: Path) -> None:
    assert export.main([str(tmp_path), str(tmp_path / "out")]) == 2
