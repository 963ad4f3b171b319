"""Tracing follows forked and spawned workers, survives SIGKILL at any point of a write, and is absent when
off. All on real processes started through the installed start-up hook."""
from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hangdoc.tracer import reader
from tracer_jobs import TIMEOUT_S, env, hangdoc_exe, kill_group, run_job, start, wait_for

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

WORKERS = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    import torch, torch.distributed as dist

    def job(rank, store, n):
        dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
        t = torch.full((n,), float(rank))
        for _ in range(3):
            dist.all_reduce(t)
        dist.destroy_process_group()

    if __name__ == "__main__":
        here = sys.argv[1]
        # the parent's own collective, before it forks: its records stay in its own file
        dist.init_process_group("gloo", init_method="file://" + here + "/parent", rank=0, world_size=1)
        dist.broadcast(torch.zeros(1), src=0)
        dist.destroy_process_group()
        for method, n in (("fork", 5), ("spawn", 7)):
            ctx = mp.get_context(method)
            ps = [ctx.Process(target=job, args=(r, here + "/" + method, n)) for r in range(2)]
            for p in ps: p.start()
            for p in ps: p.join(120)
            assert all(p.exitcode == 0 for p in ps), [p.exitcode for p in ps]
        print("parent", os.getpid(), flush=True)
""")


def test_forked_and_spawned_workers_write_their_own_files(tmp_path: Path) -> None:
    (tmp_path / "workers.py").write_text(WORKERS)
    trace_dir = tmp_path / "trace"
    rc, out = run_job([hangdoc_exe(), "run", "--trace-dir", str(trace_dir), "--", sys.executable, "workers.py",
                       str(tmp_path)], tmp_path)
    assert rc == 0, out[-3000:]
    parent_pid = int(out.split("parent")[1].split()[0])
    files = {reader.read(f).pid: reader.read(f) for f in trace_dir.glob("*.hdtrace")}
    assert len(files) == 5 and parent_pid in files
    assert [r["op"] for r in rows_of(files[parent_pid])] == ["broadcast"]
    children = [tf for pid, tf in files.items() if pid != parent_pid]
    by_size = {}
    for tf in children:
        recs = rows_of(tf)
        assert [(r["op"], r["seq"], r["state"]) for r in recs] == [("all_reduce", i, "completed") for i in (1, 2, 3)]
        by_size.setdefault(recs[0]["in_numel"], []).append(tf.rank)
    assert {k: sorted(v) for k, v in by_size.items()} == {5: [0, 1], 7: [0, 1]}  # fork's pair and spawn's pair


def rows_of(tf: reader.TraceFile) -> list[dict]:
    from hangdoc.importers.hangdoc_trace import table

    return table(tf).to_pylist()


WRITER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
    t = torch.ones(3, 4)
    print("go", flush=True)
    while True:
        dist.all_reduce(t)
""")


def test_rank_killed_mid_write_leaves_a_readable_trace(tmp_path: Path) -> None:
    """SIGKILL at random points of a tight loop of traced calls, with a ring small enough to wrap."""
    (tmp_path / "writer.py").write_text(WRITER)
    trace_dir = tmp_path / "trace"
    rng = random.Random(4)
    for i in range(4):
        proc = start([hangdoc_exe(), "run", "--trace-dir", str(trace_dir), "--", sys.executable, "writer.py",
                      str(tmp_path / f"store{i}")], tmp_path, HANGDOC_TRACE_RECORDS="512")
        try:
            wait_for(lambda: proc.stdout is not None and proc.stdout.readline().strip() == "go", proc, "the loop")
            time.sleep(rng.uniform(0.2, 1.2))
        finally:
            kill_group(proc)
    files = sorted(trace_dir.glob("*.hdtrace"))
    assert len(files) == 4
    for f in files:
        tf = reader.read(f)  # never raises on a killed writer's file
        seqs = tf.records["seq"].tolist()
        assert len(seqs) > 0
        # whatever survived is one unbroken run of the newest calls, in order
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert len(seqs) >= 510 or seqs[0] == 1
        states = tf.records["state"].tolist()
        assert set(states[:-1]) == {3}  # every call but the one that was running is completed
        assert all("torn" in n or "ring wrapped" in n for n in tf.notes)


PROBE = ("import sys, torch.distributed as d; "
         "print(getattr(d.all_reduce, '__hangdoc_wrapped__', False), d.all_reduce.__module__, "
         "'hangdoc' in sys.modules, any(type(f).__name__ == 'PostImportFinder' for f in sys.meta_path))")


def test_tracing_off_installs_nothing(tmp_path: Path) -> None:
    off = subprocess.run([sys.executable, "-c", PROBE], env=env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["False", "torch.distributed.distributed_c10d", "False", "False"]
    on = subprocess.run([sys.executable, "-c", PROBE], env=env(HANGDOC_TRACE_DIR=str(tmp_path)), capture_output=True,
                        text=True, timeout=TIMEOUT_S)
    assert on.stdout.split()[0] == "True", "hangdoc-trace.pth is not installed: pip install -e ."
    # installed once torch had finished importing: with torch.compile's check, not a stand-in for it
    bound = subprocess.run([sys.executable, "-c", (
        "import torch.distributed as d, torch; g = d.all_reduce.__globals__; "
        "print(g.get('is_dynamo_compiling') is getattr(torch.compiler, 'is_dynamo_compiling', 0) "
        "or g.get('is_compiling') is torch.compiler.is_compiling)")],
        env=env(HANGDOC_TRACE_DIR=str(tmp_path)), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert bound.stdout.strip() == "True", bound.stderr
    assert list(tmp_path.iterdir()) == []  # no collective, no file
