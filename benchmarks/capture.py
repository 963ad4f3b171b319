"""Capture wall time on a node-sized target: 8 processes x 100 blocked threads, 3 samples 0.5 s apart.

Goal: <= 3 s without py-spy, <= 6 s with it, for the whole `hangdoc capture` command (interpreter start
included). Run: python benchmarks/capture.py [--processes 8] [--threads 100] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = """
import os, threading, time
threading.Timer(600, os._exit, (0,)).start()
stop = threading.Event()
for _ in range({threads} - 2):
    threading.Thread(target=stop.wait, daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"""


def start_workers(processes: int, threads: int) -> list[subprocess.Popen]:
    procs = []
    for rank in range(processes):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(processes), LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER.format(threads=threads)], stdout=subprocess.PIPE,
                                      env=env, start_new_session=True))
    for p in procs:
        assert p.stdout.readline().strip() == b"ready"
    return procs


def time_cli(pids: list[int], out: Path, *, pyspy: bool, samples: int, interval: float) -> tuple[float, str]:
    args = [sys.executable, "-m", "hangdoc.cli", "capture", "-o", str(out), "--samples", str(samples),
            "--interval", str(interval)]
    for pid in pids:
        args += ["--pid", str(pid)]
    if not pyspy:
        args.append("--no-pyspy")
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, CI="true"), timeout=300)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"capture failed ({done.returncode}):\n{done.stderr}")
    return wall, done.stderr


def time_library(pids: list[int], out: Path, *, pyspy: bool, samples: int, interval: float) -> float:
    from hangdoc.capture.run import CaptureOptions, capture

    t0 = time.perf_counter()
    capture(CaptureOptions(output=out, pids=pids, samples=samples, interval=interval, pyspy=pyspy))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--threads", type=int, default=100)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    procs = start_workers(args.processes, args.threads)
    pids = [p.pid for p in procs]
    try:
        from hangdoc.bundle import Bundle

        with tempfile.TemporaryDirectory() as tmp:
            n = 0
            print(f"{args.processes} processes x {args.threads} threads, {args.samples} samples "
                  f"{args.interval} s apart, {os.cpu_count()} CPUs")
            for pyspy, goal in ((False, 3.0), (True, 6.0)):
                cli, lib = [], []
                for _ in range(args.repeat):
                    n += 1
                    wall, _ = time_cli(pids, Path(tmp) / f"cli{n}", pyspy=pyspy, samples=args.samples,
                                       interval=args.interval)
                    cli.append(wall)
                    lib.append(time_library(pids, Path(tmp) / f"lib{n}", pyspy=pyspy, samples=args.samples,
                                            interval=args.interval))
                b = Bundle.open(Path(tmp) / f"cli{n}")
                threads = len({(r["pid"], r["tid"]) for r in b.table("thread_samples").to_pylist()})
                label = "with py-spy   " if pyspy else "without py-spy"
                print(f"{label}: command {statistics.median(cli):.2f} s median (min {min(cli):.2f}, max {max(cli):.2f}),"
                      f" in-process {statistics.median(lib):.2f} s; goal <= {goal:g} s; "
                      f"{threads} threads, {b.rows('thread_samples')} thread samples, {b.rows('py_frames')} py frames")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)


if __name__ == "__main__":
    main()
