"""Per-call cost of hangdoc's collective tracer: traced vs untraced, medians of interleaved batches.

    python benchmarks/tracer.py [--ranks 1 2] [--batches B] [--noop-calls N] [--gloo-calls N]

1. no-op: a do-nothing function with all_reduce's parameters, called bare and through the same generated
   wrapper that traces torch.distributed.all_reduce (group lookup, call site, one record written and
   completed in the memory-mapped ring). The difference is what tracing adds to every call.
2. gloo: torch.distributed.all_reduce of a 16-float tensor on a gloo group of 1 or 2 processes.

Batches of untraced and traced calls alternate (A B B A A B ...), so that drift of a shared machine hits
both alike, and the cost added is the median over batches of (traced - untraced) of neighbouring batches.
Each figure is given three times: wall time (perf_counter), the process's CPU time (process_time, all
its threads, gloo's included) and the calling thread's CPU time (thread_time, where the tracer runs), which
other load on the machine disturbs less.

Goal: <= 1 microsecond median added per call on the no-op path, <= 2 % on the gloo loop.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.process_time_ns, "thread": time.thread_time_ns}


def _batch(fn: Callable[..., Any], args: tuple, calls: int) -> dict[str, float]:
    """ns per call, by each clock."""
    start = {k: c() for k, c in CLOCKS.items()}
    for _ in range(calls):
        fn(*args)
    return {k: (c() - start[k]) / calls for k, c in CLOCKS.items()}


def _interleaved(bare: Callable[..., Any], traced: Callable[..., Any], args: tuple, calls: int,
                 batches: int) -> list[tuple[dict[str, float], dict[str, float]]]:
    """(bare, traced) per pair of neighbouring batches, in A B B A order."""
    pairs = []
    for i in range(batches):
        if i % 2:
            t = _batch(traced, args, calls)
            b = _batch(bare, args, calls)
        else:
            b = _batch(bare, args, calls)
            t = _batch(traced, args, calls)
        pairs.append((b, t))
    return pairs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, trace_dir: str, a: argparse.Namespace, queue: Any) -> None:
    from hangdoc.tracer import activate, torch_dist

    activate.start(trace_dir)  # installs the torch.distributed wrappers (already imported)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x = torch.ones(16)
    traced_ar = dist.all_reduce
    bare_ar = traced_ar.__wrapped__
    out = {}
    if rank == 0 and world == 1:
        def noop(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
            return None

        traced_noop = torch_dist.make_wrapper(noop, "all_reduce")
        _interleaved(noop, traced_noop, (x,), a.noop_calls, 4)  # warm up
        out["noop"] = _interleaved(noop, traced_noop, (x,), a.noop_calls, a.batches)
    dist.barrier()
    _interleaved(bare_ar, traced_ar, (x,), max(10, a.gloo_calls // 10), 4)  # warm up
    out["gloo"] = _interleaved(bare_ar, traced_ar, (x,), a.gloo_calls, a.batches)
    dist.barrier()
    if rank == 0:
        queue.put(out)
    dist.destroy_process_group()


def _run(world: int, a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as trace_dir:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        port = _free_port()
        procs = [ctx.Process(target=_worker, args=(r, world, port, trace_dir, a, queue)) for r in range(world)]
        for p in procs:
            p.start()
        try:
            return queue.get(timeout=900)
        finally:
            for p in procs:
                p.join(timeout=60)
                if p.is_alive():
                    p.kill()


def _report(title: str, pairs: list[tuple[dict[str, float], dict[str, float]]], unit: float, unit_name: str,
            goal: str) -> None:
    print(title)
    for clock in CLOCKS:
        bare = statistics.median(b[clock] for b, _ in pairs)
        traced = statistics.median(t[clock] for _, t in pairs)
        added = statistics.median(t[clock] - b[clock] for b, t in pairs)
        u = f"{unit_name}/call"
        print(f"  {clock:6s}  untraced {bare / unit:9.3f} {u}   traced {traced / unit:9.3f} {u}   "
              f"added {added / unit:8.3f} {u} = {100 * added / bare:+7.2f} %   ({goal})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2], choices=(1, 2))
    ap.add_argument("--batches", type=int, default=21, help="batches of each kind, interleaved")
    ap.add_argument("--noop-calls", type=int, default=20000, help="calls per no-op batch")
    ap.add_argument("--gloo-calls", type=int, default=0, help="calls per gloo batch (default 2000 with one rank, "
                                                               "300 with two)")
    a = ap.parse_args()
    for world in a.ranks:
        calls = a.gloo_calls or (2000 if world == 1 else 300)
        out = _run(world, argparse.Namespace(**{**vars(a), "gloo_calls": calls}))
        if "noop" in out:
            _report(f"no-op with all_reduce's parameters, {a.batches} x 2 batches of {a.noop_calls} calls:",
                    out["noop"], 1, "ns", "goal: <= 1000 ns added")
        _report(f"gloo all_reduce of 16 floats, {world} rank(s), {a.batches} x 2 batches of {calls} calls:",
                out["gloo"], 1000, "us", "goal: <= 2 %")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
