"""Per-call cost of hangdoc's collective tracer: traced vs untraced, medians.

    python benchmarks/tracer.py [--calls N] [--batches B] [--ranks 1|2]

1. no-op: a do-nothing function with all_reduce's signature, called bare and through the same wrapper
   that traces torch.distributed.all_reduce (argument probe, group lookup, call site, one record written
   and completed in the memory-mapped ring). The difference is what tracing adds to every call.
2. gloo: torch.distributed.all_reduce of a 16-float tensor on a gloo group of --ranks processes, batches
   of traced and untraced calls interleaved so that drift of a shared machine hits both alike.

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

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _per_call_ns(fn, args, calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter_ns() - t0) / calls


def _interleaved(bare, traced, args, calls: int, batches: int) -> tuple[list[float], list[float]]:
    b, t = [], []
    for _ in range(batches):
        b.append(_per_call_ns(bare, args, calls))
        t.append(_per_call_ns(traced, args, calls))
    return b, t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, trace_dir: str, calls: int, batches: int, queue) -> None:
    from hangdoc.tracer import activate, torch_dist

    activate.start(trace_dir)  # installs the torch.distributed wrappers (already imported)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x = torch.ones(16)
    traced_ar = dist.all_reduce
    bare_ar = traced_ar.__wrapped__
    out = {}
    if rank == 0:
        def noop(tensor, op=None, group=None, async_op=False):
            return None

        traced_noop = torch_dist.make_wrapper(noop, "all_reduce", torch_dist.OPS["all_reduce"][1])
        _interleaved(noop, traced_noop, (x,), calls, 3)  # warm up
        out["noop"] = _interleaved(noop, traced_noop, (x,), calls * 10, batches)
    dist.barrier()
    _interleaved(bare_ar, traced_ar, (x,), max(10, calls // 10), 2)  # warm up
    out["gloo"] = _interleaved(bare_ar, traced_ar, (x,), calls, batches)
    dist.barrier()
    if rank == 0:
        queue.put(out)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls per batch (gloo); x10 for the no-op")
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--ranks", type=int, default=2, choices=(1, 2))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as trace_dir:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        port = _free_port()
        procs = [ctx.Process(target=_worker, args=(r, a.ranks, port, trace_dir, a.calls, a.batches, queue))
                 for r in range(a.ranks)]
        for p in procs:
            p.start()
        out = queue.get(timeout=600)
        for p in procs:
            p.join(timeout=60)
    bare, traced = out["noop"]
    mb, mt = statistics.median(bare), statistics.median(traced)
    print(f"no-op all_reduce signature, {a.batches} batches of {a.calls * 10} calls:")
    print(f"  untraced {mb:8.1f} ns/call   traced {mt:8.1f} ns/call   added {mt - mb:8.1f} ns/call "
          f"(goal <= 1000)")
    bare, traced = out["gloo"]
    mb, mt = statistics.median(bare), statistics.median(traced)
    print(f"gloo all_reduce of 16 floats, {a.ranks} rank(s), {a.batches} batches of {a.calls} calls:")
    print(f"  untraced {mb / 1000:8.2f} us/call   traced {mt / 1000:8.2f} us/call   added {(mt - mb) / 1000:6.2f} "
          f"us/call = {100 * (mt - mb) / mb:+.2f} % (goal <= 2 %)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
