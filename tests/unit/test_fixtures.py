"""The shipped fixtures: reproducible from fixtures/generate.py, and holding the scenarios they claim to hold."""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from hangdoc.bundle import Bundle
from hangdoc.importers import load_inputs
from hangdoc.schema import MANIFEST_NAME, group_members

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fixtures_generate", FIXTURES / "generate.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fixtures")
    _generator().main(["generate.py", str(out)])
    return out


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_reproduces_committed_files(regenerated: Path) -> None:
    names = list(_generator().FIXTURES)
    assert {p.name for p in regenerated.iterdir()} == set(names)
    for name in names:
        committed, fresh = _files(FIXTURES / name), _files(regenerated / name)
        assert sorted(committed) == sorted(fresh), name
        if Bundle.is_bundle(FIXTURES / name):
            # Parquet bytes carry the writer's pyarrow version; compare what the bundle holds instead.
            old, new = Bundle.open(FIXTURES / name), Bundle.open(regenerated / name)
            assert {k: v for k, v in old.manifest.items() if k != "hangdoc_version"} == {
                k: v for k, v in new.manifest.items() if k != "hangdoc_version"
            }
            assert old.tables.keys() == new.tables.keys()
            for table in old.tables:
                assert old.tables[table].equals(new.tables[table]), (name, table)
        else:
            for rel in committed:
                assert committed[rel].read_bytes() == fresh[rel].read_bytes(), f"{name}/{rel} differs"


def _calls(name: str) -> list[dict]:
    """Rows, each with its communicator's members (the table lists them once per communicator)."""
    table = load_inputs([FIXTURES / name]).table("collectives")
    members = group_members(table)
    return [{**r, "members": members.get((r["rank"], r["group"]))} for r in table.to_pylist()]


def _last(calls: list[dict]) -> dict[tuple[int, str], dict]:
    """Each (rank, group)'s last call by seq."""
    last: dict[tuple[int, str], dict] = {}
    for c in calls:
        key = (c["rank"], c["group"])
        if key not in last or c["seq"] > last[key]["seq"]:
            last[key] = c
    return last


def test_seed001_is_the_seed_scenario() -> None:
    calls = _calls("seed001-tp4-dp2")
    assert {c["rank"] for c in calls} == set(range(8))
    assert {c["group"] for c in calls} == {"tp:0", "dp:0"}  # every rank names its groups alike, as vLLM does
    members = {(c["rank"], c["group"]): c["members"] for c in calls}
    for rank in range(8):
        dp, tp = divmod(rank, 4)
        assert members[(rank, "tp:0")] == tuple(range(dp * 4, dp * 4 + 4))
        assert members[(rank, "dp:0")] == (tp, tp + 4)
    last = _last(calls)
    # rank 6: 17 fewer dp calls and 17 more tp calls than its tp peers 4, 5, 7
    for peer in (4, 5, 7):
        assert last[(6, "dp:0")]["seq"] == last[(peer, "dp:0")]["seq"] - 17
        assert last[(6, "tp:0")]["seq"] == last[(peer, "tp:0")]["seq"] + 17
        assert (last[(peer, "tp:0")]["op"], last[(peer, "tp:0")]["reduce_op"]) == ("all_reduce", "SUM")
        assert last[(peer, "tp:0")]["in_shapes"] == [[15, 2]] and last[(peer, "tp:0")]["state"] == "started"
    six = last[(6, "tp:0")]
    assert (six["op"], six["in_shapes"], six["state"]) == ("all_gatherv", [[14, 256]], "started")
    # rank 2 waits in dp {2, 6} at a seq rank 6 never issued
    two = last[(2, "dp:0")]
    assert two["state"] == "started" and two["seq"] > last[(6, "dp:0")]["seq"]
    # ranks 0, 1, 3 wait in tp {0-3} at a seq rank 2 never issued
    for rank in (0, 1, 3):
        mine = last[(rank, "tp:0")]
        assert mine["state"] == "started" and mine["seq"] == last[(2, "tp:0")]["seq"] + 1
    # nothing else is pending
    pending = sorted((c["rank"], c["group"]) for c in calls if c["state"] != "completed")
    assert pending == [(0, "tp:0"), (1, "tp:0"), (2, "dp:0"), (3, "tp:0"), (4, "tp:0"), (5, "tp:0"), (6, "tp:0"), (7, "tp:0")]
    # ring buffers: absolute seq numbers, a bounded window per rank, small files
    per_rank = Counter(c["rank"] for c in calls)
    assert set(per_rank.values()) == {200}
    assert min(c["seq"] for c in calls if c["group"] == "tp:0") > 1000
    assert sum(p.stat().st_size for p in (FIXTURES / "seed001-tp4-dp2").iterdir()) < 400_000
    # rank 6's degenerate path is visible in its window: all_gatherv in place of a dp call
    assert sum(1 for c in calls if c["rank"] == 6 and c["op"] == "all_gatherv") >= 2


def test_healthy_is_consistent_and_complete() -> None:
    calls = _calls("healthy-tp2-dp2")
    assert calls and all(c["state"] == "completed" for c in calls)
    by_position: dict[tuple[str, tuple[int, ...], int], set] = {}
    for c in calls:
        key = (c["group"], c["members"], c["seq"])
        by_position.setdefault(key, set()).add((c["op"], c["reduce_op"], c["dtype"], c["in_numel"]))
        assert c["rank"] in c["members"]
    assert all(len(ops) == 1 for ops in by_position.values())
    counts = Counter((c["group"], c["members"], c["seq"]) for c in calls)
    assert set(counts.values()) == {2}  # both members of every 2-rank group recorded every position


def test_rank0_odd_one_out() -> None:
    last = _last(_calls("rank0-odd"))
    assert {r for r, _ in last} == {0, 1, 2, 3}
    assert len({c["seq"] for c in last.values()}) == 1
    assert last[(0, "world")]["op"] == "all_gather"
    assert {last[(r, "world")]["op"] for r in (1, 2, 3)} == {"all_reduce"}
    assert all(c["state"] == "started" for c in last.values())


def test_bundle_fixture_opens_as_a_bundle() -> None:
    root = FIXTURES / "bundle-tp4-rank0-behind"
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    b = Bundle.open(root)
    assert manifest["tables"] == {"processes": 4, "collectives": b.rows("collectives")}
    last = _last(b.table("collectives").to_pylist())
    assert last[(0, "0")]["seq"] == 57 and last[(0, "0")]["state"] == "completed"
    assert all(last[(r, "0")]["seq"] == 58 and last[(r, "0")]["state"] == "started" for r in (1, 2, 3))
    assert sorted(b.table("processes").column("global_rank").to_pylist()) == [0, 1, 2, 3]


def test_order_inversion_fixture() -> None:
    last = _last(_calls("order-inversion"))
    assert (last[(0, "cpu")]["state"], last[(1, "world")]["state"]) == ("started", "started")
    # each waits at a position the other never reached
    assert last[(0, "cpu")]["seq"] == last[(1, "cpu")]["seq"] + 1 and last[(1, "cpu")]["state"] == "completed"
    assert last[(1, "world")]["seq"] == last[(0, "world")]["seq"] + 1 and last[(0, "world")]["state"] == "completed"


def test_missing_rank_fixture() -> None:
    calls = _calls("missing-rank")
    assert {c["rank"] for c in calls} == {0, 1, 2}
    assert all(c["members"] == (0, 1, 2, 3) for c in calls)
    assert {(c["rank"], c["seq"]) for c in calls if c["state"] == "started"} == {(0, 42), (1, 42), (2, 42)}
