"""The orchestrator: output checks, collector isolation and budgets, the summary."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hangdoc.bundle import Bundle
from hangdoc.capture import procfs, run
from hangdoc.capture.base import CollectorOutput
from hangdoc.capture.display import summarize
from hangdoc.capture.timeouts import spawn
from hangdoc.errors import CaptureError, OutputError, UsageError
from hangdoc.schema import table_from_rows


def test_output_must_be_new(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match="already exists"):
        run.check_output(tmp_path / "full")
    (tmp_path / "empty").mkdir()
    run.check_output(tmp_path / "empty")
    run.check_output(tmp_path / "new" / "deeper")


def test_bad_options_fail_before_touching_anything(tmp_path):
    with pytest.raises(UsageError, match="bad regular expression"):
        run.capture(run.CaptureOptions(output=tmp_path / "b", match="(unclosed"))
    with pytest.raises(CaptureError, match="no target processes found matching --match"):
        run.capture(run.CaptureOptions(output=tmp_path / "b", match="^no-such-title-anywhere-42$"))
    assert not (tmp_path / "b").exists()


@pytest.fixture
def sleeper():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield p
    finally:
        p.kill()
        p.wait(10)


def test_a_failing_collector_is_a_note_not_a_crash(sleeper, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated /proc failure")

    monkeypatch.setattr(procfs, "collect_threads", broken)
    result = run.capture(run.CaptureOptions(output=tmp_path / "b", pids=[sleeper.pid], samples=1, interval=0, pyspy=False))
    b = Bundle.open(result.path)
    threads = b.manifest["collectors"]["threads"]
    assert threads["ran"] is False and threads["error"] == "RuntimeError: simulated /proc failure"
    assert any(n.startswith("threads: failed: RuntimeError") for n in b.notes)
    assert b.rows("processes") == 1 and b.manifest["collectors"]["logs"]["ran"] is True
    assert ("not collected", "threads: RuntimeError: simulated /proc failure") in summarize(b)


def test_overrunning_collector_is_abandoned_with_its_partial_rows():
    bundle = Bundle()
    partial = CollectorOutput(tables={"kernel_stacks": table_from_rows("kernel_stacks", [{"pid": 1, "tid": 1}])})
    jobs = [
        run._Job("slow", spawn(time.sleep, 30), time.monotonic(), 0.2, partial),
        run._Job("quick", spawn(CollectorOutput), time.monotonic(), 5.0, CollectorOutput()),
    ]
    t0 = time.monotonic()
    run._drain(jobs, run._Recorder(bundle, run.QuietProgress()), grace=None, reason=None)
    assert time.monotonic() - t0 < 3
    slow = bundle.manifest["collectors"]["slow"]
    assert slow["ran"] is False and "did not finish within" in slow["error"]
    assert "kept the rows collected before it stopped" in slow["notes"]
    assert bundle.rows("kernel_stacks") == 1 and bundle.manifest["collectors"]["quick"]["ran"] is True


def test_summary_reads_the_bundle():
    b = Bundle()
    procs = [
        {"pid": 10 + r, "role": "worker", "status": "sleeping", "parent_alive": r != 3, "global_rank": r,
         "rank_source": "title" if r else "env"} for r in (0, 1, 2, 3, 5)
    ]
    b.add("processes", table_from_rows("processes", procs))
    b.add("thread_samples", table_from_rows("thread_samples", [
        {"pid": 10, "tid": 10, "sample": s, "state": st} for s, st in ((0, "R"), (1, "R"))
    ] + [{"pid": 10, "tid": 11, "sample": 1, "state": "S"}]))
    b.add("gpu_samples", table_from_rows("gpu_samples", [
        {"gpu": g, "sample": 0, "sm_util": 100.0, "mem_bw_util": 0.0} for g in range(4)
    ]))
    b.record_collector("pystacks", ran=False, seconds=0, notes=["skipped: --no-pyspy"])
    lines = dict(summarize(b))
    assert lines["processes"] == "5 (5 worker); orphaned (launcher gone): [13]"
    assert lines["ranks"] == "0-3, 5 (from title 4, env 1)"
    assert lines["threads"] == "2 threads x 2 samples; last sample: R 1, S 1"
    assert lines["GPUs"] == "4; SM 100%, memory bandwidth 0% (mean, last sample)"
    assert lines["not collected"] == "pystacks: skipped: --no-pyspy"


def test_py_spy_targets_are_python_processes():
    assert run.is_python({"exe": "/usr/bin/python3.11", "cmdline": ["VLLM::Worker_TP0"]})
    assert run.is_python({"exe": None, "cmdline": [], "status": "sleeping"})  # unreadable exe: try anyway
    assert not run.is_python({"exe": "/usr/bin/bash", "cmdline": ["bash"]})
    assert not run.is_python({"exe": None, "status": "gone"})
    assert not run.is_python({"exe": None, "cmdline": [], "status": "zombie"})
