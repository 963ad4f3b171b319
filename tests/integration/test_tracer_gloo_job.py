"""A 4-rank gloo job under `hangdoc run`, one rank posting a different collective: every rank blocks, the
test SIGKILLs them all, and `hangdoc analyze` on the trace directory names the rank and the op."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from hangdoc.tracer import reader
from tracer_jobs import TIMEOUT_S, free_port, hangdoc_exe, kill_group, rows, start, wait_for

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

JOB = textwrap.dedent("""
    import time
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    pair = [dist.new_group([0, 1], group_desc="tp"), dist.new_group([2, 3], group_desc="tp")][rank // 2]
    x = torch.ones(15, 2)
    for _ in range(5):
        dist.all_reduce(x)
        dist.all_reduce(x, group=pair)
    if rank == 2:  # the seed-001 bug: one rank takes another path and posts a different collective
        out = torch.empty(4 * 14, 256, dtype=torch.int32)
        dist.all_gather_into_tensor(out, torch.ones(14, 256, dtype=torch.int32))
    else:
        dist.all_reduce(x)
    print("finished", rank, flush=True)
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_diverging_rank_is_named_after_sigkill(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(JOB)
    trace_dir = tmp_path / "trace"
    cmd = [hangdoc_exe(), "run", "--trace-dir", str(trace_dir), "--", sys.executable, "-m", "torch.distributed.run",
           "--nproc-per-node", "4", "--master-port", str(free_port()), "job.py"]
    proc = start(cmd, tmp_path)
    try:
        def all_blocked() -> bool:
            last = {r["rank"]: r for r in rows(trace_dir) if r["group"] == "0"}
            return len(last) == 4 and all(r["seq"] == 6 and r["state"] == "issued" for r in last.values())

        wait_for(all_blocked, proc, "all four ranks to block in their 6th world collective")
    finally:
        out = kill_group(proc)
    assert "finished" not in out
    pids = [reader.read(f).pid for f in trace_dir.glob("*.hdtrace")]
    assert len(pids) == 4
    wait_for(lambda: not any(alive(p) for p in pids), None, "every rank to be gone after SIGKILL", timeout=30)

    files = sorted(trace_dir.glob("*.hdtrace"))
    assert len(files) == 4  # one per rank; the torchrun launcher made no collective and left no file
    recorded = rows(trace_dir)
    assert sorted({r["rank"] for r in recorded}) == [0, 1, 2, 3]
    tp = [r for r in recorded if r["group_desc"] == "tp"]
    assert {tuple(r["group_ranks"]) for r in tp if r["group_ranks"] is not None} == {(0, 1), (2, 3)} and max(r["seq"] for r in tp) == 5

    proc = subprocess.run([hangdoc_exe(), "analyze", str(trace_dir), "--format", "json"], capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"]["kind"] == "collective_mismatch"
    assert report["verdict"]["culprit_ranks"] == [2]
    mismatch = [f for f in report["findings"] if f["kind"] == "collective_mismatch"]
    assert mismatch and mismatch[0]["ranks"] == [2] and mismatch[0]["seq"] == 6
    assert mismatch[0]["op"].startswith("all_gather") and "[14, 256]" in mismatch[0]["op"]
    assert mismatch[0]["expected_op"].startswith("all_reduce SUM [15, 2]")
