"""Hostile plain-data dumps: bombs of shared references are refused in one line; malformed entries cost linear time.

Each case runs `hangdoc analyze` in a child process under a memory limit and a timeout, so a regression fails
the test instead of taking the machine or the suite with it.
"""
from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the synthetic dump writer lives there
from fr_synthetic import Call, dump, write_rank  # noqa: E402
from hangdoc.importers import safe_pickle  # noqa: E402

LIMIT_BYTES = 2 << 30
TIMEOUT_S = 120  # a bound against hanging, far above the few seconds these take on a loaded machine


def bomb(levels: int = 40, width: int = 10) -> list:
    """`levels` lists, each holding `width` references to the one below: width ** levels elements when walked."""
    x: list = [1]
    for _ in range(levels):
        x = [x] * width
    return x


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def analyze(path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from hangdoc.cli import main; sys.exit(main())", "analyze", str(path),
         "--format", "json"],
        capture_output=True, text=True, timeout=TIMEOUT_S, preexec_fn=_limit, stdin=subprocess.DEVNULL, env=env,
    )


def _one_rank(tmp_path: Path, **fields: object) -> Path:
    d = dump([Call(("0", "default_pg"), "all_reduce", 1)], "2.10", {"0": ("default_pg", [0])})
    d["entries"][0].update(fields)
    write_rank(tmp_path, 0, d)
    return tmp_path / "nccl_trace_rank_0"


@pytest.mark.parametrize("field", ["input_sizes", "output_sizes", "input_dtypes", "process_group"])
def test_a_bomb_in_an_entry_field_is_refused_in_one_line(tmp_path: Path, field: str) -> None:
    path = _one_rank(tmp_path, **{field: bomb()})
    assert path.stat().st_size < 4000
    run = analyze(tmp_path)
    assert run.returncode != 0
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "refused" in run.stderr and field in run.stderr


def test_a_bomb_in_frames_is_never_walked(tmp_path: Path) -> None:
    """Frames are read one reference at a time and only frame dicts are looked into: no call site, no blow-up."""
    _one_rank(tmp_path, frames=bomb())
    run = analyze(tmp_path)
    assert run.returncode == 0, run.stderr
    from hangdoc.importers import flight_recorder as fr

    (row,) = fr.read([tmp_path / "nccl_trace_rank_0"]).table("collectives").to_pylist()
    assert row["call_site"] is None and row["op"] == "all_reduce"


def test_a_bomb_in_the_header_is_refused(tmp_path: Path) -> None:
    path = _one_rank(tmp_path)
    d = pickle.loads(path.read_bytes())
    d["pg_config"]["0"]["ranks"] = bomb()
    path.write_bytes(pickle.dumps(d, protocol=2))
    run = analyze(tmp_path)
    assert run.returncode != 0 and "refused" in run.stderr and run.stderr.count("\n") == 1


def test_a_bomb_rank_is_a_note_and_the_other_ranks_are_read(tmp_path: Path) -> None:
    groups = {"0": ("default_pg", [0, 1])}
    for rank in (0, 1):
        d = dump([Call(("0", "default_pg"), "all_reduce", 1)], "2.10", groups)
        if rank == 1:
            d["entries"][0]["input_sizes"] = bomb()
        write_rank(tmp_path, rank, d)
    run = analyze(tmp_path)
    assert run.returncode == 0, run.stderr
    notes = json.dumps(json.loads(run.stdout))
    assert "rank 1 skipped: refused: input_sizes" in notes


def test_too_many_tensors_in_one_call_is_refused(tmp_path: Path) -> None:
    shape = [4]
    _one_rank(tmp_path, input_sizes=[shape] * 70_000)  # shared references: a small pickle
    run = analyze(tmp_path)
    assert run.returncode != 0 and "at most 65,536" in run.stderr


def test_check_bounds_counts_shared_references_each_time() -> None:
    x = bomb(levels=3, width=10)  # 10 + 100 + 1000 + 1000 elements when walked, 4 distinct lists
    assert safe_pickle.check_bounds(x, max_depth=4, max_items=2110) == {int}
    with pytest.raises(safe_pickle.BoundsError, match="elements"):
        safe_pickle.check_bounds(x, max_depth=4, max_items=2109)
    with pytest.raises(safe_pickle.BoundsError, match="deep"):
        safe_pickle.check_bounds(x, max_depth=3, max_items=10**6)
    with pytest.raises(safe_pickle.BoundsError, match="at most 5"):
        safe_pickle.check_bounds(x, max_depth=4, max_items=10**6, max_lens=(10, 5))


def test_200k_entries_without_required_fields_are_counted_and_left_out(tmp_path: Path) -> None:
    good = dump([Call(("0", "default_pg"), "all_reduce", 1)], "2.10", {"0": ("default_pg", [0])})
    bad = [{"profiling_name": "nccl:all_reduce"} for _ in range(200_000)]
    good["entries"] = good["entries"] + bad
    write_rank(tmp_path, 0, good)
    run = analyze(tmp_path)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert "200,000 entries without a profiling name, sequence number or process group; left out" in json.dumps(out)


def test_a_60k_member_coalesced_run_folds_in_linear_time(tmp_path: Path) -> None:
    """Every entry shares one group and seq: one coalesced run. Folding used to rebuild a set per member."""
    calls = [Call(("0", "default_pg"), "all_reduce", 1, [[4]]) for _ in range(60_000)]
    write_rank(tmp_path, 0, dump(calls, "2.10", {"0": ("default_pg", [0])}))
    from hangdoc.importers import flight_recorder as fr

    rows = fr.read([tmp_path / "nccl_trace_rank_0"]).table("collectives")
    assert rows.num_rows == 1
    row = rows.to_pylist()[0]
    assert row["op"] == "all_reduce_coalesced" and row["in_numel"] == 4 * 60_000
