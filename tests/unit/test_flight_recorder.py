"""The FR importer on synthetic dumps of every writer layout: versions, p2p, coalescing, pg_config forms."""
from __future__ import annotations

import pickle
import threading
import zipfile
from pathlib import Path

import pytest

import pyarrow as pa

from hangdoc.importers import flight_recorder as fr
from hangdoc.importers import load_inputs
from hangdoc.schema import group_members
from fr_synthetic import VERSIONS, Call, dump, write_rank

WORLD = {"0": ("default_pg", [0, 1, 2, 3])}
TP = {"1": ("tp:0", [0, 1]), "2": ("tp:1", [2, 3])}


def read_dir(d: Path) -> tuple[list[dict], list[str]]:
    bundle = fr.read(sorted(d.iterdir()))
    return bundle.table("collectives").to_pylist(), bundle.notes


def members(rows: list[dict]) -> dict[tuple[int, str], tuple[int, ...]]:
    return group_members(pa.Table.from_pylist(rows))


def steady(rank: int, backend: str = "nccl") -> list[Call]:
    """World: all_reduce, _all_gather_base, _reduce_scatter_base; tp: all_reduce; then a hung all_reduce."""
    tp = ("1", "tp:0") if rank < 2 else ("2", "tp:1")
    w = ("0", "default_pg")
    return [
        Call(w, "all_reduce", 1, [[8, 2]], backend=backend),
        Call(tp, "all_reduce", 1, [[16]], dtype="BFloat16", backend=backend),
        Call(w, "_all_gather_base", 2, [[4]], [[16]], backend=backend),
        Call(w, "_reduce_scatter_base", 3, [[16]], [[4]], dtype="Half", backend=backend),
        Call(tp, "all_reduce", 2, [[16]], dtype="BFloat16", state="scheduled", retired=False, backend=backend),
    ]


@pytest.mark.parametrize("form", ["pickle", "json"])
@pytest.mark.parametrize("version", VERSIONS)
def test_each_layout_gives_the_same_rows(tmp_path: Path, version: str, form: str) -> None:
    for rank in range(4):
        write_rank(tmp_path, rank, dump(steady(rank), version, {**WORLD, **TP}), form=form)
    got, notes = read_dir(tmp_path)
    assert len(got) == 20 and not [n for n in notes if "version" in n]
    r0 = [r for r in got if r["rank"] == 0]
    assert [(r["group"], r["seq"], r["op"]) for r in r0] == [
        ("0", 1, "all_reduce"),
        ("1", 1, "all_reduce"),
        ("0", 2, "all_gather"),
        ("0", 3, "reduce_scatter"),
        ("1", 2, "all_reduce"),
    ]
    assert [r["state"] for r in r0] == ["completed"] * 4 + ["issued"]
    assert [(r["in_numel"], r["out_numel"]) for r in r0] == [(16, 16), (16, 16), (4, 16), (16, 4), (16, 16)]
    assert r0[0]["in_shapes"] == [[8, 2]]
    # dtypes were added in "2.x"; "1.5" has none
    want = [None] * 5 if version == "1.5" else ["float32", "bfloat16", "float32", "float16", "bfloat16"]
    assert [r["dtype"] for r in r0] == want
    assert {m for (_, g), m in members(got).items() if g == "2"} == {(2, 3)}
    assert {r["group_desc"] for r in got} == {"default_pg", "tp:0", "tp:1"}
    assert r0[0]["t_issue"] == pytest.approx(1.7e9)
    collector = fr.read(sorted(tmp_path.iterdir())).manifest["collectors"]["flight-recorder"]
    lib = {"2.7": ["communication library version 2.21.5"], "2.10": ["communication library version 2.27.3"]}
    assert collector["notes"][1:] == lib.get(version, [])


def test_unknown_newer_version_is_read_by_key_names_with_a_note(tmp_path: Path) -> None:
    d = dump(steady(0), "2.10", {**WORLD, **TP})
    d["version"] = "2.11"
    write_rank(tmp_path, 0, d)
    got, notes = read_dir(tmp_path)
    assert len(got) == 5
    assert any("2.11" in n and "not one hangdoc knows" in n for n in notes)


def test_p2p_rows_use_p2p_seq_and_global_peers(tmp_path: Path) -> None:
    tp1 = ("2", "tp:1")
    calls = {
        2: [Call(tp1, "all_reduce", 1), Call(tp1, "send 0->1", 1), Call(tp1, "send 0->1", 2, state="scheduled", retired=False)],
        3: [Call(tp1, "all_reduce", 1), Call(tp1, "recv 1<-0", 1), Call(tp1, "all_reduce", 2, state="started")],
    }
    for rank, cs in calls.items():
        write_rank(tmp_path, rank, dump(cs, "2.10", TP))
    got, _ = read_dir(tmp_path)
    by = {(r["rank"], r["op"], r["seq"]): r for r in got}
    assert by[(2, "send", 1)]["peer"] == 3 and by[(3, "recv", 1)]["peer"] == 2  # group rank 1 of [2, 3] is 3
    assert by[(2, "send", 2)]["state"] == "issued"
    # the collective seq is untouched by p2p calls: rank 3's next collective is seq 2
    assert by[(3, "all_reduce", 2)]["state"] == "started"
    assert by[(2, "all_reduce", 1)]["peer"] is None


def test_v1_layout_has_one_seq_id_for_p2p_and_collectives(tmp_path: Path) -> None:
    w = ("0", "default_pg")
    write_rank(tmp_path, 0, dump([Call(w, "all_reduce", 1), Call(w, "send 0->1", 2), Call(w, "all_reduce", 3)], "1.5", WORLD))
    got, _ = read_dir(tmp_path)
    assert [(r["op"], r["seq"], r["peer"]) for r in got] == [("all_reduce", 1, None), ("send", 2, 1), ("all_reduce", 3, None)]
    entry = fr.load_dump(tmp_path / "nccl_trace_rank_0")["entries"][1]
    assert "seq_id" in entry and "collective_seq_id" not in entry and "is_p2p" not in entry


def test_coalesced_collectives_fold_into_one_row_with_the_closing_state(tmp_path: Path) -> None:
    w = ("0", "default_pg")
    member = dict(state="scheduled", retired=False)  # members carry no device events of their own
    calls = [
        Call(w, "all_reduce", 1),
        Call(w, "all_reduce", 2, [[4]], **member),
        Call(w, "all_reduce", 2, [[6, 2]], **member),
        Call(w, "all_reduce", 2, [[3]], **member),
        Call(w, "coalesced", 2, [], [], state="started", retired=False),
        Call(w, "all_gather_into_tensor_coalesced", 3, [[2], [2]], [[8], [8]]),  # fast path: one entry
        Call(w, "broadcast", 4, [[1]], **member),
        Call(w, "all_reduce", 4, [[1]], **member),
        Call(w, "coalesced", 4, [], []),
    ]
    write_rank(tmp_path, 0, dump(calls, "2.10", WORLD))
    got, _ = read_dir(tmp_path)
    assert [(r["seq"], r["op"], r["state"]) for r in got] == [
        (1, "all_reduce", "completed"),
        (2, "all_reduce_coalesced", "started"),
        (3, "all_gather_coalesced", "completed"),
        (4, "coalesced", "completed"),
    ]
    assert got[1]["in_shapes"] == [[4], [6, 2], [3]] and got[1]["in_numel"] == 19
    assert got[2]["out_numel"] == 16


def test_a_lone_coalesced_entry_from_before_2_7_stays_a_row(tmp_path: Path) -> None:
    w = ("0", "default_pg")
    write_rank(tmp_path, 0, dump([Call(w, "all_reduce", 1), Call(w, "coalesced", 2, [], [])], "2.4", WORLD))
    got, _ = read_dir(tmp_path)
    assert [(r["seq"], r["op"]) for r in got] == [(1, "all_reduce"), (2, "coalesced")]


def test_coalesced_p2p_keeps_one_row_per_op_and_takes_the_closing_state(tmp_path: Path) -> None:
    w = ("0", "default_pg")
    member = dict(state="scheduled", retired=False)
    calls = [
        Call(w, "send 1->2", 1, **member),
        Call(w, "recv 1<-0", 1, **member),
        Call(w, "coalesced", 1, [], [], p2p=True, state="started", retired=False),
        Call(w, "all_reduce", 1),
    ]
    write_rank(tmp_path, 1, dump(calls, "2.10", WORLD))
    got, _ = read_dir(tmp_path)
    assert [(r["op"], r["seq"], r["peer"], r["state"]) for r in got] == [
        ("send", 1, 2, "started"),
        ("recv", 1, 0, "started"),
        ("all_reduce", 1, None, "completed"),
    ]


def test_coalesced_p2p_without_is_p2p_flags(tmp_path: Path) -> None:
    # before "2.2" entries carry no is_p2p: the closing entry is p2p because it closes p2p members
    w = ("0", "default_pg")
    member = dict(state="scheduled", retired=False)
    calls = [
        Call(w, "all_reduce", 1),
        Call(w, "send 0->1", 1, **member),
        Call(w, "coalesced", 1, [], [], p2p=True, state="completed"),
        Call(w, "all_reduce", 2, state="started"),
    ]
    d = dump(calls, "2.10", WORLD)
    d["version"] = "2.1"
    for e in d["entries"]:
        del e["is_p2p"]
    write_rank(tmp_path, 0, d)
    got, _ = read_dir(tmp_path)
    assert [(r["op"], r["seq"], r["state"]) for r in got] == [
        ("all_reduce", 1, "completed"),
        ("send", 1, "completed"),
        ("all_reduce", 2, "started"),
    ]


def test_nccl_retired_but_scheduled_is_issued_while_gloo_retired_is_completed(tmp_path: Path) -> None:
    w = ("0", "default_pg")
    write_rank(tmp_path, 0, dump([Call(w, "all_reduce", 1, state="scheduled", retired=True)], "2.10", WORLD))
    write_rank(tmp_path, 1, dump([Call(w, "all_reduce", 1, state="scheduled", retired=True, backend="gloo")], "2.10", WORLD))
    got, notes = read_dir(tmp_path)
    assert {r["rank"]: r["state"] for r in got} == {0: "issued", 1: "completed"}
    assert any("gloo" in n and "retired" in n for n in notes)


def test_broken_pg_config_members_and_sizes_come_from_all_ranks_entries(tmp_path: Path) -> None:
    # gloo-style '' pg_config on every rank; rank 3 has no file at all
    for rank in range(3):
        write_rank(tmp_path, rank, dump(steady(rank, "gloo"), "2.10", None))
    got, notes = read_dir(tmp_path)
    m = members(got)
    world = {m[(r["rank"], r["group"])] for r in got if r["group"] == "0"}
    assert world == {(0, 1, 2, 3)}  # all_gather [4] -> [16] says 4 members
    assert {(r["group"], m[(r["rank"], r["group"])], r["group_size"]) for r in got if r["group"] != "0"} == {
        ("1", (0, 1), 2),
        ("2", (2,), 1),  # tp:1 has no gather to size it: only its reporting rank is known
    }
    assert any("no Flight Recorder file for rank(s) 3" in n for n in notes)
    assert any("cannot list members whose files are missing" in n for n in notes)
    assert any("pg_config holds no ranks" in n for n in notes)


def test_one_pg_name_with_two_member_sets_becomes_two_groups(tmp_path: Path) -> None:
    # split_group gives every color the same name; pg_config tells the member sets apart
    for rank in range(4):
        mine = [0, 1] if rank < 2 else [2, 3]
        write_rank(tmp_path, rank, dump([Call(("5", "split"), "all_reduce", 1)], "2.10", {"5": ("split", mine)}))
    got, _ = read_dir(tmp_path)
    m = members(got)
    assert {r["rank"]: (r["group"], m[(r["rank"], r["group"])], r["rank_in_group"]) for r in got} == {
        0: ("5#0", (0, 1), 0),
        1: ("5#0", (0, 1), 1),
        2: ("5#2", (2, 3), 0),
        3: ("5#2", (2, 3), 1),
    }


def test_call_site_is_the_innermost_frame_outside_torch(tmp_path: Path) -> None:
    frames = [
        {"name": "all_reduce", "filename": "/venv/lib/site-packages/torch/distributed/distributed_c10d.py", "line": 2700},
        {"name": "wrapper", "filename": "/venv/lib/site-packages/typing_extensions.py", "line": 3004},
        {"name": "__exit__", "filename": "/usr/lib/python3.11/contextlib.py", "line": 144},
        {"name": "forward", "filename": "model/layers.py", "line": 42},
        {"name": "main", "filename": "train.py", "line": 7},
    ]
    w = ("0", "default_pg")
    write_rank(tmp_path, 0, dump([Call(w, "all_reduce", 1, frames=frames), Call(w, "all_reduce", 2, frames=frames[:1])], "2.10", WORLD))
    got, _ = read_dir(tmp_path)
    assert got[0]["call_site"] == "forward (model/layers.py:42)"
    assert got[1]["call_site"] == "all_reduce (/venv/lib/site-packages/torch/distributed/distributed_c10d.py:2700)"


def test_call_sites_of_many_stacks_per_op_shared_frames_and_odd_frames(tmp_path: Path) -> None:
    """One op on one group called from six places (more than the rounds that compare whole stacks), stacks
    whose frame dicts are shared or copied, a frame that is not a dict and one holding a list: each entry
    still gets its own innermost user frame."""
    torch = {"name": "all_reduce", "filename": "/venv/lib/site-packages/torch/distributed/distributed_c10d.py", "line": 2700}
    users = [{"name": f"layer{i}", "filename": "model/layers.py", "line": 10 + i} for i in range(6)]
    stacks = [[torch, u] for u in users]
    stacks += [[dict(torch), dict(users[0])], [torch, "not a frame", users[1]], [{"name": ["x"], "filename": "a.py", "line": 1}]]
    w = ("0", "default_pg")
    order = [5, 0, 6, 1, 7, 2, 8, 3, 0, 4, 5, 1, 2]  # interleaved, each stack's entries apart
    calls = [Call(w, "all_reduce", k + 1, frames=stacks[i]) for k, i in enumerate(order)]
    write_rank(tmp_path, 0, dump(calls, "2.10", WORLD))
    got, _ = read_dir(tmp_path)
    want = [f"layer{i} (model/layers.py:{10 + i})" for i in range(6)] + ["layer0 (model/layers.py:10)",
                                                                        "layer1 (model/layers.py:11)", "? (a.py:1)"]
    assert [r["call_site"] for r in got] == [want[i] for i in order]


def test_empty_buffer_is_a_note(tmp_path: Path) -> None:
    write_rank(tmp_path, 0, dump(steady(0), "2.10", {**WORLD, **TP}))
    write_rank(tmp_path, 1, dump([], "2.10", {**WORLD, **TP}), form="json")  # JSON drops "entries"
    got, notes = read_dir(tmp_path)
    assert {r["rank"] for r in got} == {0}
    assert any("rank(s) 1: Flight Recorder buffer is empty" in n for n in notes)


def test_ranks_come_from_the_file_name_suffix(tmp_path: Path) -> None:
    assert fr.rank_of(Path("nccl_trace_rank_12")) == 12
    assert fr.rank_of(Path("fr_dump-7.json")) == 7
    assert fr.rank_of(Path("trace_3.pkl")) == 3
    assert fr.rank_of(Path("nccl_trace")) is None
    write_rank(tmp_path, 0, dump(steady(0), "2.10", {**WORLD, **TP}))
    write_rank(tmp_path, 0, dump(steady(0), "2.10", {**WORLD, **TP}), prefix="copy_of_rank_")
    (tmp_path / "nccl_trace").write_bytes((tmp_path / "nccl_trace_rank_0").read_bytes())
    got, notes = read_dir(tmp_path)
    assert len(got) == 5
    assert any("a second file for rank 0" in n for n in notes)
    assert any("cannot tell the rank" in n for n in notes)


def test_unrelated_files_are_not_claimed(tmp_path: Path) -> None:
    unrelated = {
        "notes.txt": b"entries pg_config profiling_name\n",
        "config.json": b'{"version": "1.0", "name": "not a dump"}',
        "trace.jsonl": b'{"rank": 0, "group": "tp", "seq": 1, "op": "all_reduce"}\n',
        "data.pkl": pickle.dumps({"version": 3, "weights": [1, 2, 3]}),
        "empty": b"",
        "binary.bin": bytes(range(256)) * 4,
    }
    for name, data in unrelated.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"entries": []}))
    assert not [p.name for p in tmp_path.iterdir() if fr.matches(p)]
    write_rank(tmp_path / "fr", 0, dump(steady(0), "2.10", {**WORLD, **TP}), form="json")
    write_rank(tmp_path / "fr", 1, dump(steady(1), "2.10", {**WORLD, **TP}))
    assert all(fr.matches(p) for p in (tmp_path / "fr").iterdir())
    assert {r["rank"] for r in load_inputs([tmp_path / "fr"]).table("collectives").to_pylist()} == {0, 1}


def test_parallel_parsing_gives_the_same_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rank in range(6):
        write_rank(tmp_path, rank, dump(steady(rank % 4), "2.10", {**WORLD, **TP}), form="json" if rank % 2 else "pickle")
    (tmp_path / "nccl_trace_rank_5").write_bytes(b"\x80\x02}q\x00(X\x07\x00\x00\x00entries")  # truncated
    serial = fr.read(sorted(tmp_path.iterdir()))
    monkeypatch.setattr(fr, "_PARALLEL_MIN_FILES", 2)
    parallel = fr.read(sorted(tmp_path.iterdir()))
    assert parallel.table("collectives").equals(serial.table("collectives"))
    assert parallel.notes == serial.notes and any("rank 5 skipped" in n for n in serial.notes)
    # with another thread alive, workers are not forked from this process (forkserver instead)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        threaded = fr.read(sorted(tmp_path.iterdir()))
    finally:
        stop.set()
        thread.join()
    assert threaded.table("collectives").equals(serial.table("collectives"))


def test_group_ranks_listed_once_per_group_on_its_first_row(tmp_path: Path) -> None:
    for rank in range(4):
        write_rank(tmp_path, rank, dump(steady(rank), "2.10", {**WORLD, **TP}))
    got, _ = read_dir(tmp_path)
    listed = [(i, r["rank"], r["group"], r["group_ranks"]) for i, r in enumerate(got) if r["group_ranks"] is not None]
    first_row = {}
    for i, r in enumerate(got):
        first_row.setdefault(r["group"], i)  # rows come in rank order: the lowest member's first call
    assert listed == [
        (first_row["0"], 0, "0", [0, 1, 2, 3]),
        (first_row["1"], 0, "1", [0, 1]),
        (first_row["2"], 2, "2", [2, 3]),
    ]
    assert all(r["group_size"] in (2, 4) and r["rank_in_group"] is not None for r in got)
    assert members(got) == {
        (r, g): ((0, 1, 2, 3) if g == "0" else (0, 1) if r < 2 else (2, 3)) for r in range(4) for g in ("0", "1" if r < 2 else "2")
    }


def test_every_c10_dtype_name_maps_to_a_torch_dtype() -> None:
    torch = pytest.importorskip("torch")
    c10_names = [
        "Byte", "Char", "Short", "Int", "Long", "Half", "Float", "Double", "ComplexHalf", "ComplexFloat",
        "ComplexDouble", "Bool", "QInt8", "QUInt8", "QInt32", "BFloat16", "QUInt4x2", "QUInt2x4", "Bits1x8",
        "Bits2x4", "Bits4x2", "Bits8", "Bits16", "Float8_e5m2", "Float8_e4m3fn", "Float8_e5m2fnuz",
        "Float8_e4m3fnuz", "UInt16", "UInt32", "UInt64",
    ]  # fmt: skip
    names = fr._DtypeNames()
    for c10 in c10_names:
        assert isinstance(getattr(torch, names[c10], None), torch.dtype), c10
    assert names["Float"] == "float32" and names["BFloat16"] == "bfloat16" and names["Long"] == "int64"
