"""End to end on a real hang: a 4-rank gloo job where rank 2 posts all_gather while ranks 0, 1 and 3
post all_reduce, so everyone blocks. `hangdoc capture` snapshots it, `hangdoc analyze` must name rank 2.

The job runs as four plain python processes with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) in one process group of their own, killed as a group when the test ends.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.integration

WORLD = 4
DIVERGE = 2
START_TIMEOUT_S = 90
CMD_TIMEOUT_S = 120

WORKER = textwrap.dedent(
    """
    import contextlib, datetime, os
    from pathlib import Path

    import torch
    import torch.distributed as dist


    def step(t, world, diverge):
        if diverge:
            out = [torch.zeros_like(t) for _ in range(world)]
            dist.all_gather(out, t)
        else:
            dist.all_reduce(t)


    def main():
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        # gloo's own timeout far beyond the test: the ranks must really hang while hangdoc looks at them
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=600))
        t = torch.ones(4)
        for _ in range(3):
            dist.all_reduce(t)
        ready = Path(os.environ["READY_DIR"])
        (ready / f"rank{rank}").write_text(str(os.getpid()))
        step(t, world, rank == int(os.environ["DIVERGE_RANK"]))
        (ready / f"returned{rank}").write_text("the mismatched collective returned")


    if __name__ == "__main__":
        if os.environ.get("TORCH_WORKER_SERVER_SOCKET"):
            from torch.distributed.elastic.control_plane import worker_main
            with worker_main():
                main()
        else:
            main()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hangdoc() -> list[str]:
    beside = Path(sys.executable).parent / "hangdoc"
    exe = str(beside) if beside.exists() else shutil.which("hangdoc")
    assert exe, "the hangdoc console script is not installed (pip install -e .)"
    return [exe]


def _start_job(root: Path, worker_server: bool) -> tuple[list[subprocess.Popen], int]:
    script = root / "worker.py"
    script.write_text(WORKER)
    ready = root / "ready"
    ready.mkdir()
    port = _free_port()
    procs: list[subprocess.Popen] = []
    pgid = 0
    for rank in range(WORLD):
        env = dict(
            os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port), READY_DIR=str(ready), DIVERGE_RANK=str(DIVERGE), OMP_NUM_THREADS="1",
        )
        if worker_server:
            env["TORCH_WORKER_SERVER_SOCKET"] = str(root / f"worker{rank}.sock")
        log = open(root / f"rank{rank}.log", "w")
        # the first rank leads a new process group; the others join it, so one killpg ends the job
        leader = pgid
        proc = subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
            preexec_fn=(lambda: os.setpgid(0, 0)) if rank == 0 else (lambda: os.setpgid(0, leader)),
        )
        log.close()
        if rank == 0:
            pgid = proc.pid
        procs.append(proc)
    return procs, pgid


def _wait_hung(root: Path, procs: list[subprocess.Popen]) -> list[int]:
    """Pids by rank, once every rank has written that it is entering the last call."""
    ready = root / "ready"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for rank, p in enumerate(procs):
            if p.poll() is not None:
                pytest.fail(f"rank {rank} exited early ({p.returncode}):\n{(root / f'rank{rank}.log').read_text()[-3000:]}")
        if all((ready / f"rank{r}").exists() for r in range(WORLD)):
            time.sleep(1.0)  # from the marker file into the blocking call
            return [int((ready / f"rank{r}").read_text()) for r in range(WORLD)]
        time.sleep(0.2)
    pytest.fail("the job did not reach its last collective in time:\n" + "\n".join(
        (root / f"rank{r}.log").read_text()[-1000:] for r in range(WORLD)))


def _stop_job(procs: list[subprocess.Popen], pgid: int) -> None:
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.kill()
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


def _run(args: list[str], root: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(args, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, cwd=root)
    assert res.returncode == 0, f"{args[1:3]} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _capture_and_analyze(root: Path, pids: list[int]) -> tuple[Path, dict, float]:
    bundle = root / "bundle"
    t0 = time.monotonic()
    _run(_hangdoc() + ["capture", *[a for p in pids for a in ("--pid", str(p))], "--output", str(bundle)], root)
    took = time.monotonic() - t0
    res = _run(_hangdoc() + ["analyze", str(bundle), "--format", "json"], root)
    return bundle, json.loads(res.stdout), took


def test_capture_names_the_rank_that_posted_another_collective(tmp_path):
    procs, pgid = _start_job(tmp_path, worker_server=False)
    try:
        pids = _wait_hung(tmp_path, procs)
        bundle, report, took = _capture_and_analyze(tmp_path, pids)
        # the job was only looked at: everyone is still alive and still blocked
        assert all(p.poll() is None for p in procs)
        assert not list((tmp_path / "ready").glob("returned*"))
    finally:
        _stop_job(procs, pgid)

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["tables"].get("py_frames", 0) > 0, manifest.get("collectors")
    assert report["verdict"]["culprit_ranks"] == [DIVERGE], json.dumps(report["verdict"], indent=2)
    divergence = [f for f in report["findings"] if f["kind"] == "stack_divergence"]
    assert len(divergence) == 1, [f["kind"] for f in report["findings"]]
    f = divergence[0]
    assert f["ranks"] == [DIVERGE]
    assert (f["op"], f["expected_op"]) == ("all_gather", "all_reduce")
    assert f["summary"].startswith("rank 2: all_gather <- step <- main")
    assert "ranks 0,1,3: all_reduce <- step <- main" in f["summary"]
    print(f"capture took {took:.1f} s; verdict: {report['verdict']['summary']}")


def test_live_flight_recorder_pull_from_worker_servers(tmp_path):
    """Ranks started under worker_main() expose TORCH_WORKER_SERVER_SOCKET: capture pulls each rank's FR."""
    procs, pgid = _start_job(tmp_path, worker_server=True)
    try:
        pids = _wait_hung(tmp_path, procs)
        bundle, report, _ = _capture_and_analyze(tmp_path, pids)
        assert all(p.poll() is None for p in procs)
    finally:
        _stop_job(procs, pgid)

    import pyarrow.parquet as pq

    calls = pq.read_table(bundle / "collectives.parquet").to_pylist()
    assert {c["source"] for c in calls} == {"flight-recorder"}
    assert {c["rank"]: c["pid"] for c in calls} == dict(enumerate(pids))
    last = {c["rank"]: c["op"] for c in calls if c["seq"] == 4}
    assert last == {0: "all_reduce", 1: "all_reduce", 2: "all_gather", 3: "all_reduce"}
    assert report["verdict"]["culprit_ranks"] == [DIVERGE], json.dumps(report["verdict"], indent=2)
