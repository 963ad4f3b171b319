"""A live 4-rank gloo job hangs on a collective mismatch; the FR importer reads the dumps it leaves.

Runs fixtures/make_fr_dumps.py (the job that made the committed fixtures) into a temporary directory,
with stack traces on, bounded by a timeout; its own launcher kills every rank it started on failure,
and this test kills the launcher's process group if the launcher itself overruns.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hangdoc.importers import flight_recorder as fr
from hangdoc.importers import load_inputs
from hangdoc.schema import group_members

pytest.importorskip("torch")
pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "fixtures" / "make_fr_dumps.py"
TIMEOUT_S = 240


def run_job(out: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--scenario", "mismatch", "--out", str(out), "--stack-traces"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the gloo job did not finish within {TIMEOUT_S}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.decode(errors="replace")[-3000:]


def test_live_gloo_mismatch_dumps_are_read(tmp_path: Path) -> None:
    run_job(tmp_path)
    for name in ("fr-gloo-mismatch", "fr-gloo-mismatch-json", "fr-gloo-mismatch-after-timeout"):
        files = sorted((tmp_path / name).iterdir())
        assert [fr.rank_of(f) for f in files] == [0, 1, 2, 3] and all(fr.matches(f) for f in files)

    bundle = load_inputs([tmp_path / "fr-gloo-mismatch"])
    rows = bundle.table("collectives").to_pylist()
    per_rank = {r: [x for x in rows if x["rank"] == r] for r in range(4)}
    for rank, mine in per_rank.items():
        n = len(fr.load_dump(tmp_path / "fr-gloo-mismatch" / f"nccl_trace_rank_{rank}")["entries"])
        assert len(mine) == n > 0

    listed = sorted((r["group_desc"], tuple(r["group_ranks"])) for r in rows if r["group_ranks"] is not None)
    members = dict(listed)  # each group's members are listed once
    assert len(listed) == len(members) and members == {
        "default_pg": (0, 1, 2, 3), "tp:0": (0, 1), "tp:1": (2, 3), "dp:0": (0, 2), "dp:1": (1, 3)}
    by_rank = group_members(bundle.table("collectives"))
    assert all(by_rank[(r["rank"], r["group"])] == members[r["group_desc"]] for r in rows)
    for rank, mine in per_rank.items():
        for desc in members:
            seqs = [r["seq"] for r in mine if r["group_desc"] == desc]
            assert seqs == list(range(1, len(seqs) + 1)), (rank, desc)

    last = {rank: max((r for r in mine if r["group_desc"] == "default_pg"), key=lambda r: r["seq"]) for rank, mine in per_rank.items()}
    assert len({r["seq"] for r in last.values()}) == 1
    assert last[0]["op"] == "all_gather"
    assert {last[r]["op"] for r in (1, 2, 3)} == {"all_reduce"}
    assert {r["state"] for r in last.values()} == {"issued"}
    # stack traces were on: each call is attributed to the job script, not to torch internals
    assert all(r["call_site"] and "make_fr_dumps.py" in r["call_site"] for r in rows)
    assert "worker" in last[0]["call_site"]

    json_rows = load_inputs([tmp_path / "fr-gloo-mismatch-json"]).table("collectives").to_pylist()
    keys = ("rank", "group", "seq", "op", "dtype", "in_shapes", "out_shapes")
    assert [{k: r[k] for k in keys} for r in json_rows] == [{k: r[k] for k in keys} for r in rows]
    # The JSON dump is taken just after the pickle one: on a loaded machine a call can move on in between
    # (gloo completes a mismatched all_gather on its own), so a state may only have moved forward.
    order = {"issued": 0, "started": 1, "completed": 2}
    assert all(order[j["state"]] >= order[p["state"]] for j, p in zip(json_rows, rows))
