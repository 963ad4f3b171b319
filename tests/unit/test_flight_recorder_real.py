"""The FR importer on the committed real gloo dumps (fixtures/make_fr_dumps.py made them)."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from hangdoc.errors import InputError
from hangdoc.importers import flight_recorder as fr
from hangdoc.importers import load_inputs
from hangdoc.schema import group_members

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MISMATCH = FIXTURES / "fr-gloo-mismatch"
MISMATCH_JSON = FIXTURES / "fr-gloo-mismatch-json"
AFTER_TIMEOUT = FIXTURES / "fr-gloo-mismatch-after-timeout"
WRAPPED = FIXTURES / "fr-gloo-wrapped"
GROUPS = {"default_pg": [0, 1, 2, 3], "tp:0": [0, 1], "tp:1": [2, 3], "dp:0": [0, 2], "dp:1": [1, 3]}


def rows(path: Path) -> list[dict]:
    return load_inputs([path]).table("collectives").to_pylist()


def raw_entries(path: Path, rank: int) -> list[dict]:
    with open(path / f"nccl_trace_rank_{rank}", "rb") as f:
        return pickle.load(f)["entries"]  # our own committed fixture, trusted


@pytest.mark.parametrize("path", [MISMATCH, MISMATCH_JSON, AFTER_TIMEOUT, WRAPPED], ids=lambda p: p.name)
def test_every_fixture_file_is_claimed_and_every_entry_becomes_a_row(path: Path) -> None:
    files = sorted(path.iterdir())
    assert [fr.rank_of(f) for f in files] == [0, 1, 2, 3]
    assert all(fr.matches(f) for f in files)
    got = rows(path)
    for rank in range(4):
        assert sum(r["rank"] == rank for r in got) == len(fr.load_dump(path / f"nccl_trace_rank_{rank}")["entries"])


@pytest.mark.parametrize("path", [MISMATCH, MISMATCH_JSON, WRAPPED], ids=lambda p: p.name)
def test_groups_are_inferred_from_entries_since_gloo_pg_config_has_no_ranks(path: Path) -> None:
    assert fr.load_dump(path / "nccl_trace_rank_0")["pg_config"] == {"": {"name": "", "desc": "", "ranks": "[]"}}
    got = rows(path)
    listed = [(r["group_desc"], r["group_ranks"]) for r in got if r["group_ranks"] is not None]
    assert sorted(listed) == sorted(GROUPS.items())  # each group's members listed once
    members = group_members(load_inputs([path]).table("collectives"))
    assert {(rank, r["group"]) for r in got for rank in [r["rank"]]} == set(members)
    assert all(members[(r["rank"], r["group"])] == tuple(GROUPS[r["group_desc"]]) for r in got)
    for r in got:
        assert r["group_size"] == len(GROUPS[r["group_desc"]])
        assert r["rank_in_group"] == GROUPS[r["group_desc"]].index(r["rank"])
        assert r["source"] == "flight-recorder"
    # one stable id per group, the same on every rank
    ids = {(r["group_desc"], r["group"]) for r in got}
    assert len(ids) == len(GROUPS)
    assert dict(ids)["default_pg"] == "0"


def test_mismatch_dump_rank0_posts_a_different_collective_while_hanging() -> None:
    got = rows(MISMATCH)
    world = [r for r in got if r["group_desc"] == "default_pg"]
    last = {rank: max((r for r in world if r["rank"] == rank), key=lambda r: r["seq"]) for rank in range(4)}
    assert len({r["seq"] for r in last.values()}) == 1  # same position on every rank
    assert last[0]["op"] == "all_gather" and last[0]["out_numel"] == 4 * last[0]["in_numel"]
    assert {last[r]["op"] for r in (1, 2, 3)} == {"all_reduce"}
    assert all(r["state"] == "issued" for r in last.values())  # dumped while it hung: not retired
    # everything before it completed (gloo: from `retired`, as state stays "scheduled")
    assert all(r["state"] == "completed" for r in got if r not in last.values())
    assert {r["dtype"] for r in got if r["group_desc"].startswith("dp")} == {"bfloat16"}
    # per-group seqs are 1..n on every rank: nothing wrapped here
    for rank in range(4):
        for desc in GROUPS:
            seqs = sorted(r["seq"] for r in got if r["rank"] == rank and r["group_desc"] == desc)
            assert seqs == list(range(1, len(seqs) + 1))


def test_json_dump_gives_the_same_rows_as_the_pickle_taken_at_the_same_moment() -> None:
    keys = ("rank", "group", "group_desc", "group_ranks", "seq", "op", "dtype", "in_shapes", "out_shapes", "state", "record_id", "t_issue")
    pick = [{k: r[k] for k in keys} for r in rows(MISMATCH)]
    js = [{k: r[k] for k in keys} for r in rows(MISMATCH_JSON)]
    assert pick == js
    assert (MISMATCH_JSON / "nccl_trace_rank_0").read_bytes().lstrip().startswith(b"{")


@pytest.mark.parametrize("path", [MISMATCH, AFTER_TIMEOUT, WRAPPED], ids=lambda p: p.name)
def test_gloo_state_follows_retired(path: Path) -> None:
    got = rows(path)
    for rank in range(4):
        entries = raw_entries(path, rank)
        assert {e["state"] for e in entries} == {"scheduled"}  # what real gloo dumps look like
        mine = [r for r in got if r["rank"] == rank]
        assert [r["state"] for r in mine] == ["completed" if e["retired"] else "issued" for e in entries]


def test_wrapped_rings_keep_per_group_sequence_numbers() -> None:
    got = rows(WRAPPED)
    first_record = {rank: raw_entries(WRAPPED, rank)[0]["record_id"] for rank in range(4)}
    assert all(first_record.values())  # every ring wrapped ...
    assert len(set(first_record.values())) > 1  # ... at a different point
    world = [r for r in got if r["group_desc"] == "default_pg"]
    first_seq = {rank: min(r["seq"] for r in world if r["rank"] == rank) for rank in range(4)}
    last_seq = {rank: max(r["seq"] for r in world if r["rank"] == rank) for rank in range(4)}
    assert len(set(first_seq.values())) > 1 and len(set(last_seq.values())) == 1
    # the same call sits at different record ids on different ranks: record_id is no alignment key
    common = max(first_seq.values())
    ids = {r["record_id"] for r in world if r["seq"] == common}
    assert len(ids) > 1
    last = {r["rank"]: r["op"] for r in world if r["seq"] == last_seq[0]}
    assert last == {0: "all_gather", 1: "all_reduce", 2: "all_reduce", 3: "all_reduce"}
    bundle = load_inputs([WRAPPED])
    assert any("wrapped" in n for n in bundle.notes)


def test_missing_rank_file_is_a_note_and_the_world_still_counts_it(tmp_path: Path) -> None:
    d = tmp_path / "dumps"
    shutil.copytree(MISMATCH, d)
    (d / "nccl_trace_rank_2").unlink()
    bundle = load_inputs([d])
    got = bundle.table("collectives").to_pylist()
    members = group_members(bundle.table("collectives"))
    assert {r["rank"] for r in got} == {0, 1, 3}
    assert any("no Flight Recorder file for rank(s) 2 (world size 4)" in n for n in bundle.notes)
    # the world group's size comes from its all_gather shapes, so rank 2 is still a member
    assert {members[(r["rank"], r["group"])] for r in got if r["group_desc"] == "default_pg"} == {(0, 1, 2, 3)}
    # dp:0 = {0, 2}: only rank 0 is left to report it, its all_gather says 2 members
    dp0 = [r for r in got if r["group_desc"] == "dp:0"]
    assert {r["group_size"] for r in dp0} == {2} and {members[(r["rank"], r["group"])] for r in dp0} == {(0,)}
    assert any("dp:0" in n and "membership incomplete" in n for n in bundle.notes)


def test_zero_byte_rank_file_is_reported_empty_not_missing(tmp_path: Path) -> None:
    d = tmp_path / "dumps"
    shutil.copytree(MISMATCH, d)
    (d / "nccl_trace_rank_3").write_bytes(b"")
    (d / "nccl_trace_rank_1").unlink()
    bundle = load_inputs([d])
    assert {r["rank"] for r in bundle.table("collectives").to_pylist()} == {0, 2}
    assert any("rank(s) 3: Flight Recorder file is empty (nccl_trace_rank_3: 0 bytes" in n for n in bundle.notes)
    missing = [n for n in bundle.notes if "no Flight Recorder file" in n]
    assert missing == ["no Flight Recorder file for rank(s) 1 (world size 4)"]  # the absent one only


def test_truncated_file_is_a_note_and_other_ranks_are_kept(tmp_path: Path) -> None:
    d = tmp_path / "dumps"
    shutil.copytree(MISMATCH, d)
    data = (d / "nccl_trace_rank_1").read_bytes()
    (d / "nccl_trace_rank_1").write_bytes(data[: len(data) // 2])
    bundle = load_inputs([d])
    assert {r["rank"] for r in bundle.table("collectives").to_pylist()} == {0, 2, 3}
    assert any("nccl_trace_rank_1" in n and "truncated or corrupt" in n for n in bundle.notes)


def test_all_files_unreadable_is_one_input_error(tmp_path: Path) -> None:
    d = tmp_path / "dumps"
    shutil.copytree(MISMATCH_JSON, d)
    for f in d.iterdir():
        f.write_bytes(f.read_bytes()[:300])  # JSON cut short: still sniffed as FR, unparseable
    with pytest.raises(InputError) as err:
        load_inputs([d])
    assert "none readable" in str(err.value) and "\n" not in str(err.value)


def test_a_single_rank_file_given_alone(tmp_path: Path) -> None:
    bundle = load_inputs([MISMATCH / "nccl_trace_rank_3"])
    got = bundle.table("collectives").to_pylist()
    assert {r["rank"] for r in got} == {3}
    assert any("no Flight Recorder file for rank(s) 0, 1, 2 (world size 4)" in n for n in bundle.notes)
