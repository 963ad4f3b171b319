"""The JSONL trace importer (hangdoc.importers.jsonl) and the shared name normalisation (importers.ops)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from hangdoc.errors import InputError
from hangdoc.importers import jsonl
from hangdoc.importers.ops import normalize_dtype, normalize_op, normalize_reduce_op, normalize_state
from hangdoc.schema import COLLECTIVES, group_members


def write(path: Path, *objs: Any, raw: list[str] | None = None) -> Path:
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objs] + list(raw or [])
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def rows(bundle) -> list[dict[str, Any]]:
    return bundle.table("collectives").to_pylist()


CALL = {"rank": 0, "group": "tp:0", "op": "all_reduce"}


# --- matches -------------------------------------------------------------------------------------------------
def test_matches_by_extension_and_first_object(tmp_path: Path) -> None:
    assert jsonl.matches(write(tmp_path / "a.jsonl", CALL))
    assert jsonl.matches(write(tmp_path / "b.jsonl.gz", CALL))
    assert jsonl.matches(write(tmp_path / "c.jsonl", {"hangdoc_trace": 1, "rank": 3}, {"group": "g", "op": "x"}))
    assert jsonl.matches(write(tmp_path / "d.jsonl", "", "   ", CALL))  # blank lines first
    assert not jsonl.matches(write(tmp_path / "e.json", CALL))  # wrong extension
    assert not jsonl.matches(write(tmp_path / "f.txt", CALL))
    assert not jsonl.matches(write(tmp_path / "g.jsonl", {"level": "info", "msg": "hi"}))  # some other JSONL
    assert not jsonl.matches(write(tmp_path / "h.jsonl", "not json"))
    assert not jsonl.matches(write(tmp_path / "i.jsonl", "[1, 2]"))
    (tmp_path / "j.jsonl").write_bytes(b"")
    assert not jsonl.matches(tmp_path / "j.jsonl")
    (tmp_path / "k.jsonl.gz").write_bytes(b"\x1f\x8bnot really gzip")
    assert not jsonl.matches(tmp_path / "k.jsonl.gz")


# --- reading -------------------------------------------------------------------------------------------------
def test_reads_every_field_with_header_defaults(tmp_path: Path) -> None:
    f = write(
        tmp_path / "r5.jsonl",
        {"hangdoc_trace": 1, "rank": 5, "host": "node-15", "pid": 99, "groups": {"tp:0": [7, 4, 5, 6]}},
        {"group": "tp:0", "seq": 41, "op": "nccl:all_reduce", "reduce_op": "RedOpType.SUM",
         "dtype": "torch.bfloat16", "shape": [15, 3072], "state": "completed", "time": 1767225600.5,
         "some_field_we_do_not_know": {"x": 1}},
        {"group": "tp:0", "seq": 42, "op": "allgather", "dtype": "BFloat16", "in_shapes": [[2, 3], [4]],
         "out_shapes": [[8, 3], [16]], "state": "scheduled", "t": "2026-01-01T00:00:01.25Z", "call_site": "moe.py:10"},
        {"group": "pp", "group_size": 2, "rank_in_group": 1, "op": "send", "peer": 1, "numel": 10,
         "pid": 100, "host": "other", "record_id": 7},
    )  # fmt: skip
    b = jsonl.read([f])
    assert b.notes == []
    r = rows(b)
    assert len(r) == 3
    first, second, third = r
    assert first["rank"] == 5 and first["host"] == "node-15" and first["pid"] == 99
    assert first["group"] == "tp:0" and first["group_desc"] == "tp:0"
    assert first["group_ranks"] == [4, 5, 6, 7] and first["group_size"] == 4 and first["rank_in_group"] == 1
    assert (first["seq"], first["op"], first["reduce_op"], first["dtype"]) == (41, "all_reduce", "SUM", "bfloat16")
    assert first["in_shapes"] == [[15, 3072]] and first["in_numel"] == 15 * 3072 and first["out_shapes"] is None
    assert first["state"] == "completed" and first["t_issue"] == 1767225600.5 and first["source"] == "jsonl"
    assert (second["op"], second["dtype"], second["state"]) == ("all_gather", "bfloat16", "issued")
    assert second["in_numel"] == 10 and second["out_numel"] == 40
    assert second["t_issue"] == pytest.approx(1767225601.25)
    assert second["call_site"] == "moe.py:10"
    # the header's defaults yield to the line's own fields; no seq: numbered from 1 per (rank, group)
    assert (third["host"], third["pid"], third["rank"]) == ("other", 100, 5)
    assert (third["group_ranks"], third["group_size"], third["rank_in_group"]) == (None, 2, 1)
    assert (third["seq"], third["op"], third["peer"], third["in_numel"]) == (1, "send", 1, 10)
    assert third["state"] == "unknown" and third["record_id"] == 7
    assert b.table("collectives").schema.equals(COLLECTIVES)


def test_seq_numbered_by_line_order_per_rank_and_group(tmp_path: Path) -> None:
    lines = []
    for i in range(3):
        for rank in (0, 1):
            lines.append({"rank": rank, "group": "tp", "op": "all_reduce", "i": i})
            lines.append({"rank": rank, "group": "dp", "op": "all_reduce", "i": i})
    lines.append({"rank": 1, "group": "tp", "op": "all_reduce", "seq": 10})
    lines.append({"rank": 1, "group": "tp", "op": "all_reduce"})  # continues after an explicit seq
    b = jsonl.read([write(tmp_path / "all.jsonl", *lines)])
    seqs: dict[tuple[int, str], list[int]] = {}
    for r in rows(b):
        seqs.setdefault((r["rank"], r["group"]), []).append(r["seq"])
    assert seqs == {(0, "tp"): [1, 2, 3], (0, "dp"): [1, 2, 3], (1, "tp"): [1, 2, 3, 10, 11], (1, "dp"): [1, 2, 3]}


def test_seq_counters_continue_across_files_of_one_rank(tmp_path: Path) -> None:
    a = write(tmp_path / "r0.part1.jsonl", CALL, CALL)
    b = write(tmp_path / "r0.part2.jsonl", CALL)
    assert [r["seq"] for r in rows(jsonl.read([b, a]))] == [1, 2, 3]


def test_later_line_for_same_call_replaces_earlier(tmp_path: Path) -> None:
    f = write(
        tmp_path / "events.jsonl",
        {**CALL, "seq": 1, "state": "issued"},
        {**CALL, "seq": 2, "state": "issued"},
        {**CALL, "seq": 1, "state": "completed"},
    )
    b = jsonl.read([f])
    assert [(r["seq"], r["state"]) for r in rows(b)] == [(2, "issued"), (1, "completed")]
    assert any("1 line repeated" in n for n in b.notes)


def test_bad_lines_skipped_with_line_numbers(tmp_path: Path) -> None:
    f = write(
        tmp_path / "t.jsonl",
        CALL,
        "{not json",
        {"group": "g", "op": "all_reduce"},  # no rank
        {"rank": 0, "op": "all_reduce"},  # no group
        {"rank": 0, "group": "g"},  # no op
        {**CALL, "shape": [3, "x"]},
        {**CALL, "group_ranks": [1, 2]},  # rank 0 not a member
        "[1, 2, 3]",
        {**CALL, "rank": "zero"},
        CALL,
    )
    b = jsonl.read([f])
    assert len(rows(b)) == 2
    (note,) = b.notes
    assert note.startswith(f"{f}: skipped 8 bad lines: line 2 (not valid JSON), 3 (no rank), 4 (no group)")
    assert "5 (no op), 6 (" in note and note.endswith(", ...")
    assert "7 (" not in note  # only the first few are listed


def test_bad_line_inside_a_large_file_keeps_the_rest(tmp_path: Path) -> None:
    lines: list[Any] = [{**CALL, "seq": i} for i in range(1, 10001)]
    lines[6000] = '{"rank": 0, "group": "tp:0", "op": "all_reduce", "seq": 6001'  # truncated line
    b = jsonl.read([write(tmp_path / "big.jsonl", *lines)])
    seqs = [r["seq"] for r in rows(b)]
    assert len(seqs) == 9999 and 6001 not in seqs and seqs[-1] == 10000
    assert b.notes == [f"{tmp_path / 'big.jsonl'}: skipped 1 bad line: line 6001 (not valid JSON)"]


def test_file_without_valid_lines_is_a_note_and_nothing_valid_is_an_error(tmp_path: Path) -> None:
    good = write(tmp_path / "good.jsonl", CALL)
    bad = write(tmp_path / "bad.jsonl", {"hangdoc_trace": 1}, "oops")
    b = jsonl.read([good, bad])
    assert len(rows(b)) == 1
    assert b.notes == [f"{bad}: no valid collective call in this file (1 bad line: line 2 (not valid JSON))"]
    with pytest.raises(InputError) as exc:
        jsonl.read([bad])
    assert str(exc.value).startswith(f"{bad}: no valid collective call") and "\n" not in str(exc.value)
    with pytest.raises(InputError, match="none of 2 JSONL traces"):
        jsonl.read([bad, write(tmp_path / "empty.jsonl")])


def test_truncated_gzip_keeps_what_came_before(tmp_path: Path) -> None:
    f = tmp_path / "r0.jsonl.gz"
    data = gzip.compress("".join(json.dumps({**CALL, "seq": i, "pad": "x" * 50}) + "\n" for i in range(1, 5001)).encode())
    f.write_bytes(data[: len(data) // 2])
    b = jsonl.read([f])
    seqs = [r["seq"] for r in rows(b)]
    assert 0 < len(seqs) < 5000 and seqs == list(range(1, len(seqs) + 1))
    assert len(b.notes) == 1 and "unreadable after line" in b.notes[0] and f"kept the {len(seqs)} call(s)" in b.notes[0]


def test_values_arrow_cannot_hold_drop_only_their_rows(tmp_path: Path) -> None:
    f = write(tmp_path / "t.jsonl", {**CALL, "shape": [True, 2]}, {**CALL, "shape": [3, 2]})
    b = jsonl.read([f])
    assert [r["in_shapes"] for r in rows(b)] == [[[3, 2]]]
    assert any("dropped 1 call(s)" in n for n in b.notes)


def test_many_ranks_in_one_file_and_a_header_per_rank(tmp_path: Path) -> None:
    f = write(
        tmp_path / "all.jsonl",
        {"hangdoc_trace": 1, "rank": 0, "groups": {"tp:0": [0, 1]}},
        {"group": "tp:0", "op": "all_reduce"},
        {"hangdoc_trace": 1, "rank": 1, "groups": {"tp:0": [0, 1]}},
        {"group": "tp:0", "op": "all_reduce"},
        {"hangdoc_trace": 2, "rank": 2, "groups": {"tp:0": [2, 3]}},
        {"group": "tp:0", "op": "all_reduce"},
    )
    b = jsonl.read([f])
    # members are listed once per communicator; rank 1's row belongs to the tp:0 listing that holds it
    assert [(r["rank"], r["seq"], r["group_ranks"], r["rank_in_group"]) for r in rows(b)] == [
        (0, 1, [0, 1], 0),
        (1, 1, None, 1),
        (2, 1, [2, 3], 0),
    ]
    assert group_members(b.table("collectives")) == {(0, "tp:0"): (0, 1), (1, "tp:0"): (0, 1), (2, "tp:0"): (2, 3)}
    assert b.notes == [f"{f}: trace header version 2, read as version 1"]


# --- name normalisation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, op",
    [
        ("all_reduce", "all_reduce"),
        ("nccl:all_reduce", "all_reduce"),
        ("ncclAllReduce", "all_reduce"),
        ("allreduce", "all_reduce"),
        ("_allgather_base", "all_gather"),
        ("all_gather_into_tensor", "all_gather"),
        ("allgather_into_tensor_coalesced", "all_gather_coalesced"),
        ("all_gatherv", "all_gatherv"),
        ("AllGatherV", "all_gatherv"),
        ("nccl:_reduce_scatter_base", "reduce_scatter"),
        ("alltoall_base", "all_to_all"),
        ("gloo:broadcast", "broadcast"),
        ("_broadcast_oop", "broadcast"),
        ("isend", "send"),
        ("irecv", "recv"),
        ("torch.distributed.barrier", "barrier"),
        ("MyCustomOp", "my_custom_op"),
    ],
)
def test_normalize_op(raw: str, op: str) -> None:
    assert normalize_op(raw) == op


def test_normalize_reduce_op_dtype_state() -> None:
    for raw in ("SUM", "sum", "RedOpType.SUM", "ReduceOp.SUM", "<RedOpType.SUM: 0>", "ncclSum"):
        assert normalize_reduce_op(raw) == "SUM"
    assert normalize_reduce_op("premul_sum") == "PREMUL_SUM"
    assert normalize_reduce_op("avg") == "AVG"
    for raw in ("bfloat16", "torch.bfloat16", "BFloat16", "bf16", "ncclBfloat16"):
        assert normalize_dtype(raw) == "bfloat16"
    assert [normalize_dtype(x) for x in ("Float", "Half", "Long", "Int", "Byte", "ComplexHalf")] == [
        "float32", "float16", "int64", "int32", "uint8", "complex32"
    ]  # fmt: skip
    assert normalize_dtype("Float8_e4m3fn") == "float8_e4m3fn"
    assert [normalize_state(x) for x in ("scheduled", "started", "running", "retired", "done", "?")] == [
        "issued", "started", "started", "completed", "completed", "unknown"
    ]  # fmt: skip


# --- the documentation's examples work ---------------------------------------------------------------------------
DOC = Path(__file__).resolve().parents[2] / "docs" / "trace-formats.md"


def _doc_blocks(lang: str) -> list[str]:
    text = DOC.read_text()
    section = text.split("## JSONL collective traces", 1)[1].split("\n## ", 1)[0]
    parts = section.split(f"```{lang}\n")[1:]
    return [p.split("```", 1)[0] for p in parts]


def test_documented_examples_import(tmp_path: Path) -> None:
    with_header, without_header = _doc_blocks("jsonl")
    a = jsonl.read([write(tmp_path / "a.jsonl", *with_header.splitlines())])
    assert a.notes == []
    assert [(r["rank"], r["group"], r["seq"], r["op"], r["state"]) for r in rows(a)] == [
        (6, "dp:0", 1183, "all_reduce", "completed"),
        (6, "tp:0", 4813, "all_reduce", "completed"),
        (6, "tp:0", 4814, "all_gatherv", "started"),
    ]
    assert rows(a)[2]["t_issue"] == pytest.approx(1767230340.002178)
    assert rows(a)[0]["group_ranks"] == [2, 6] and rows(a)[1]["group_ranks"] == [4, 5, 6, 7]
    b = jsonl.read([write(tmp_path / "b.jsonl", *without_header.splitlines())])
    assert b.notes == []
    assert [(r["op"], r["reduce_op"], r["dtype"], r["seq"], r["rank_in_group"]) for r in rows(b)] == [
        ("all_reduce", "SUM", "bfloat16", 1, 2),
        ("all_gatherv", None, "int32", 2, 2),
    ]


def test_documented_converter_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    (converter,) = _doc_blocks("python")
    (tmp_path / "convert.py").write_text(converter)
    records = [
        {"op": "all_reduce", "world_size": 2, "in_shape": [4, 2], "dtype": "torch.int32", "red_op": "RedOpType.SUM", "ts": 1.0},
        {"op": "all_gatherv", "world_size": 4, "in_shape": [14, 256], "dtype": "torch.int32", "ts": 2.0},
    ]  # fmt: skip
    (tmp_path / "flush.json").write_text(json.dumps({"host": "node-15", "pid": 3408431, "records": records}))
    subprocess.run([sys.executable, "convert.py", "flush.json", "6"], cwd=tmp_path, check=True, timeout=60)
    f = tmp_path / "rank6.jsonl"
    assert jsonl.matches(f)
    got = rows(jsonl.read([f]))
    assert [(r["rank"], r["host"], r["group"], r["group_ranks"], r["seq"], r["op"], r["reduce_op"]) for r in got] == [
        (6, "node-15", "dp:0", [2, 6], 1, "all_reduce", "SUM"),
        (6, "node-15", "tp:0", [4, 5, 6, 7], 1, "all_gatherv", None),
    ]
