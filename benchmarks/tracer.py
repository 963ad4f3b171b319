"""Cost of hangdoc's collective tracer on real calls: traced vs untraced, interleaved, medians.

    python benchmarks/tracer.py                                   # no-op paths, gloo 1 and 2 ranks (~1 min)
    python benchmarks/tracer.py --vllm-python VENV/bin/python     # ... and the vLLM TP=2 loop (~5 min more)
    python benchmarks/tracer.py --ranks 2 --batches 41            # one configuration, more batches

1. no-op: do-nothing functions called bare and through the tracer's wrappers: the generated
   torch.distributed wrapper (all_reduce's parameters) and the library wrapper vLLM's GroupCoordinator
   methods get. The tracer's own work with warm caches: group lookup, call site, one record written and
   completed in the memory-mapped ring.
2. gloo: torch.distributed.all_reduce of a 16-float tensor on a gloo group of 1 or 2 processes, the real
   call the goal is about. Goal: <= 1 us added per call, in the calling thread's CPU time. The same loop
   is measured again with a pass-through Python wrapper in place of the tracer's (a control: what one call
   level adds, and how far the figure scatters), and the calling thread's kernel time, context switches
   and page faults per call are counted too (getrusage of the thread), with the threads rank 0 ended with.
   Then the split: the thread CPU time each wrapper spends outside the collective (the collective is
   called through a probe that adds up the time spent inside it), for the tracer, a minimal recorder
   written in Python (reads the shape and dtype, takes the clock, packs one record into a shared mapping
   and sets its state byte: the floor for any Python recorder), a wrapper that only reads the tensor's
   shape and dtype, and a pass-through. On two ranks gloo's own time per call scatters by several us from
   batch to batch, more than the goal; the split leaves it out, and keeps what the wrapper's code costs
   when it runs cold, after the calling thread slept inside the previous call.
3. vLLM (with --vllm-python, a Python where vLLM imports and hangdoc's start-up hook is seen, e.g. a venv
   made with --system-site-packages): offline LLM.generate of 2 prompts x 16 tokens, TP=2, enforce_eager,
   on a randomly initialised 2-layer Llama built on the spot (the model of tests/integration/
   test_tracer_vllm.py), untraced and with HANGDOC_TRACE_DIR set, whole runs in A B B A order.
   Goal: traced within 3 % of untraced generations/s (median of the paired differences).

Batches of untraced and traced calls alternate (A B B A ...), so that drift of a shared machine hits both
alike, and the cost added is the median over pairs of neighbouring batches of (traced - untraced). Each
per-call figure is given by three clocks: wall time (perf_counter), the process's CPU time (process_time,
all its threads, gloo's included) and the calling thread's CPU time (thread_time, where the tracer runs),
which other load on the machine disturbs least: the goal is read on that one.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.process_time_ns, "thread": time.thread_time_ns}
# The calling thread's own counters (getrusage(RUSAGE_THREAD)): how often it gave up its core (waiting
# inside gloo), was taken off it, and page-faulted. A tracer that woke another thread or process, or
# touched new pages, would show here.
EVENTS = {"ctxsw": ("ru_nvcsw", "ru_nivcsw"), "faults": ("ru_minflt", "ru_majflt")}
COUNTERS = ("sys_us", *EVENTS)  # sys_us: the thread's time in the kernel, us per call


def _events() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return {"sys_us": usage.ru_stime * 1e6,
            **{k: sum(getattr(usage, f) for f in fields) for k, fields in EVENTS.items()}}


def _batch(fn: Callable[..., Any], args: tuple, calls: int) -> dict[str, float]:
    """ns per call, by each clock; events per call, by each counter."""
    events = _events()
    start = {k: c() for k, c in CLOCKS.items()}
    for _ in range(calls):
        fn(*args)
    out = {k: (c() - start[k]) / calls for k, c in CLOCKS.items()}
    return {**out, **{k: (v - events[k]) / calls for k, v in _events().items()}}


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
        coordinator, bare_method = _stand_in_coordinator()
        traced_method = coordinator._all_reduce_out_place
        h = torch.ones(4, 256)
        bare_call = lambda t: bare_method(coordinator, t)  # noqa: E731 - one call level on either side
        traced_call = lambda t: traced_method(t)  # noqa: E731
        _interleaved(bare_call, traced_call, (h,), a.noop_calls, 2)  # warm up
        out["library"] = _interleaved(bare_call, traced_call, (h,), a.noop_calls, a.batches)
    dist.barrier()
    _interleaved(bare_ar, traced_ar, (x,), max(10, a.gloo_calls // 10), 4)  # warm up
    out["gloo"] = _interleaved(bare_ar, traced_ar, (x,), a.gloo_calls, a.batches)
    dist.barrier()

    def passthrough(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        return bare_ar(tensor, op, group, async_op)

    # Control: a wrapper that only calls through, same loop: how much a Python call level adds (and how
    # much the figure scatters) when nothing of the tracer runs.
    out["control"] = _interleaved(bare_ar, passthrough, (x,), a.gloo_calls, a.batches)
    dist.barrier()
    out["own"] = _own_time(bare_ar, x, a.gloo_calls, a.batches, trace_dir, rank)
    out["threads"] = sorted(t.name for t in threading.enumerate())
    dist.barrier()
    if rank == 0:
        queue.put(out)
    dist.destroy_process_group()


def _own_time(bare_ar: Callable[..., Any], x: Any, calls: int, batches: int, trace_dir: str,
              rank: int) -> dict[str, list[float]]:
    """Thread CPU time per real call spent outside the collective itself, in ns: by the tracer's wrapper,
    by a minimal recorder (the floor), by a wrapper that only reads the tensor's shape and dtype, and by a
    pass-through wrapper (the control), interleaved.

    Each wrapper calls the collective through a probe that adds up the thread time spent inside it; the
    batch's thread time minus that is the wrappers' own. gloo's waits, which scatter by tens of us from
    batch to batch on two ranks, drop out; what the tracer's code costs when it runs cold (after the
    thread slept inside the previous call) stays in.
    """
    import itertools
    import mmap

    from hangdoc.tracer import format as F
    from hangdoc.tracer import torch_dist

    clock = time.thread_time_ns
    inside = [0]

    def probe(tensor, op, group, async_op):
        start = clock()
        try:
            return bare_ar(tensor, op, group, async_op)
        finally:
            inside[0] += clock() - start

    traced = torch_dist.make_wrapper(bare_ar, "all_reduce")
    traced.__globals__["original"] = probe  # the wrapper's own copy: the installed one is left alone

    def control(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        return probe(tensor, op, group, async_op)

    # The floor: the least a recorder written in Python does per call, with none of the tracer's
    # bookkeeping (group, call site, torch.compile check, slot check): read the shape and dtype, take
    # the clock, pack one record into a shared mapping, set its state byte after the call.
    path, slots = os.path.join(trace_dir, f"floor-{rank}"), 100_000
    with open(path, "wb") as f:
        f.truncate(F.RECORD_BYTES * slots)
    with open(path, "r+b") as f:
        ring = mmap.mmap(f.fileno(), 0)
    index, seq, pack, dtypes, now = itertools.count(), itertools.count(1), F.RECORDS_BY_NDIM[1].pack_into, \
        torch_dist.DTYPE, time.time_ns

    def floor(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        i = next(index)
        off = i % slots * F.RECORD_BYTES
        n = tensor.shape[0]
        pack(ring, off, i + 1, now(), n, n, n, next(seq), 0, 1, 1, dtypes[tensor.dtype], 1, 1, 0, -1, 1, i + 1)
        result = probe(tensor, op, group, async_op)
        ring[off + F.STATE_OFFSET] = F.COMPLETED
        return result

    def tensor_only(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        tensor.shape, tensor.dtype  # what any recorder must read of the call, and nothing else
        return probe(tensor, op, group, async_op)

    fns = {"control": control, "traced": traced, "floor": floor, "tensor": tensor_only}
    for fn in fns.values():
        for _ in range(max(10, calls // 10)):
            fn(x)
    own: dict[str, list[float]] = {k: [] for k in fns}
    for b in range(batches):
        for name in (list(fns) if b % 2 == 0 else list(fns)[::-1]):
            fn, inside[0] = fns[name], 0
            start = clock()
            for _ in range(calls):
                fn(x)
            own[name].append((clock() - start - inside[0]) / calls)
    ring.close()
    return own


def _stand_in_coordinator() -> tuple[Any, Callable[..., Any]]:
    """A class with vLLM's GroupCoordinator attributes and a do-nothing _all_reduce_out_place, wrapped as
    vLLM's is; returns an instance and the unwrapped method."""
    from hangdoc.tracer import coordinators

    class GroupCoordinator:
        unique_name, ranks, rank, rank_in_group, world_size, local_rank = "tp:0", [0, 1], 0, 0, 2, 0
        cpu_group = device_group = None

        def _all_reduce_out_place(self, input_: Any) -> Any:
            return input_

    bare = GroupCoordinator._all_reduce_out_place
    coordinators.wrap_class(GroupCoordinator, {"_all_reduce_out_place": coordinators.VLLM_COORDINATOR[
        "_all_reduce_out_place"]}, coordinators._coordinator_entry("vllm"))
    return GroupCoordinator(), bare


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
    if all(k in pairs[0][0] for k in COUNTERS):
        print("  per call in the calling thread: " + ", ".join(
            f"{k} untraced {statistics.median(b[k] for b, _ in pairs):.3f} traced "
            f"{statistics.median(t[k] for _, t in pairs):.3f}" for k in COUNTERS))


# --- vLLM ------------------------------------------------------------------------------------------------
TINY_LLAMA = Path(__file__).resolve().parents[1] / "tests" / "integration" / "tiny_llama.py"  # the tests' model

GENERATE = textwrap.dedent("""
    import sys, time
    from vllm import LLM, SamplingParams

    if __name__ == "__main__":
        llm = LLM(model=sys.argv[1], tensor_parallel_size=2, enforce_eager=True, dtype="float32",
                  max_model_len=128, max_num_seqs=4, max_num_batched_tokens=128)
        params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
        prompts = ["w1 w2 w3", "w4 w5"]
        llm.generate(prompts, params, use_tqdm=False)  # warm up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < float(sys.argv[2]):
            llm.generate(prompts, params, use_tqdm=False)
            n += 1
        print("GENERATIONS", n, time.perf_counter() - t0, flush=True)
""")


def _vllm_env(trace_dir: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HANGDOC_TRACE_DIR"}
    repo = str(Path(__file__).resolve().parents[1])  # measure this checkout's tracer
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", VLLM_LOGGING_LEVEL="WARNING")
    if trace_dir:
        env["HANGDOC_TRACE_DIR"] = trace_dir
    return env


def _vllm_once(python: str, work: Path, trace_dir: str | None, seconds: float, timeout: float) -> float:
    """Generations per second of one whole run (its own engine and workers, killed as a group after)."""
    proc = subprocess.Popen([python, "gen.py", str(work / "tiny"), str(seconds)], cwd=work, env=_vllm_env(trace_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = ""
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # vLLM's engine and workers, if any outlived the run
        except ProcessLookupError:
            pass
        proc.wait()
    found = re.search(r"^GENERATIONS (\d+) ([\d.]+)", out, re.M)
    if not found:
        raise RuntimeError(f"the vLLM run {'traced' if trace_dir else 'untraced'} failed or timed out "
                           f"(exit {proc.returncode}):\n{out[-2000:]}")
    if trace_dir and not list(Path(trace_dir).glob("*.hdtrace")):
        raise RuntimeError(f"the traced vLLM run wrote no trace: is hangdoc's start-up hook seen by {python}?")
    return int(found.group(1)) / float(found.group(2))


def _vllm(a: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "gen.py").write_text(GENERATE)
        subprocess.run([a.vllm_python, str(TINY_LLAMA), str(work / "tiny")], cwd=work, env=_vllm_env(None), check=True,
                       capture_output=True, timeout=600)
        runs: list[tuple[bool, float]] = []
        for i in range(a.vllm_runs):
            traced = i % 4 in (1, 2)  # A B B A A B B A ...
            trace_dir = str(work / f"trace{i}") if traced else None
            runs.append((traced, _vllm_once(a.vllm_python, work, trace_dir, a.vllm_seconds, a.vllm_timeout)))
            print(f"  vLLM run {i + 1}/{a.vllm_runs}: {'traced  ' if traced else 'untraced'} "
                  f"{runs[-1][1]:7.2f} generations/s", flush=True)
    pairs = [(runs[i][1], runs[i + 1][1]) if not runs[i][0] else (runs[i + 1][1], runs[i][1])
             for i in range(0, len(runs) - 1, 2)]
    untraced = statistics.median(u for u, _ in pairs)
    traced = statistics.median(t for _, t in pairs)
    change = statistics.median(100 * (t - u) / u for u, t in pairs)
    print(f"vLLM TP=2 offline generation (2 prompts x 16 tokens), {len(pairs)} pairs of {a.vllm_seconds:g} s runs:")
    print(f"  generations/s  untraced {untraced:7.2f}   traced {traced:7.2f}   change {change:+6.2f} %   "
          f"(goal: no worse than -3 %)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="*", default=[1, 2], choices=(1, 2),
                    help="gloo worlds to measure (default: 1 2; none: skip gloo)")
    ap.add_argument("--batches", type=int, default=21, help="batches of each kind, interleaved (default 21)")
    ap.add_argument("--noop-calls", type=int, default=20000, help="calls per no-op batch (default 20000)")
    ap.add_argument("--gloo-calls", type=int, default=0, help="calls per gloo batch (default 2000 with one rank, "
                                                               "300 with two)")
    ap.add_argument("--vllm-python", metavar="PATH", help="a Python where vLLM imports: also run the vLLM loop")
    ap.add_argument("--vllm-runs", type=int, default=4, help="whole vLLM runs, A B B A order (default 4)")
    ap.add_argument("--vllm-seconds", type=float, default=20, help="generation time per vLLM run (default 20)")
    ap.add_argument("--vllm-timeout", type=float, default=300, help="limit per vLLM run, start-up included")
    a = ap.parse_args()
    for world in a.ranks:
        calls = a.gloo_calls or (2000 if world == 1 else 300)
        out = _run(world, argparse.Namespace(**{**vars(a), "gloo_calls": calls}))
        if "noop" in out:
            _report(f"no-op with all_reduce's parameters, {a.batches} x 2 batches of {a.noop_calls} calls:",
                    out["noop"], 1, "ns", "tracer's own work, warm")
            _report(f"no-op GroupCoordinator._all_reduce_out_place (library wrapper), {a.batches} x 2 batches of "
                    f"{a.noop_calls} calls:", out["library"], 1, "ns", "tracer's own work, warm")
        _report(f"gloo all_reduce of 16 floats, {world} rank(s), {a.batches} x 2 batches of {calls} calls:",
                out["gloo"], 1000, "us", "goal: thread <= 1 us added")
        _report("  control, same loop: a pass-through Python wrapper instead of the tracer's:",
                out["control"], 1000, "us", "scatter and call-level cost")
        own, ctl = out["own"], out["own"]["control"]
        added = {k: statistics.median(v - c for v, c in zip(own[k], ctl)) / 1000 for k in own if k != "control"}
        print(f"  outside the collective, calling thread's CPU per call (pass-through "
              f"{statistics.median(ctl) / 1000:.3f} us), added by:")
        print(f"    the tracer {added['traced']:.3f} us (goal <= 1 us); a minimal Python recorder "
              f"{added['floor']:.3f} us;\n    reading the tensor's shape and dtype {added['tensor']:.3f} us")
        print(f"  threads in rank 0 after the loops: {', '.join(out['threads'])}")
        sys.stdout.flush()
    if a.vllm_python:
        try:
            _vllm(a)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            sys.exit(f"vLLM loop: {exc}")


if __name__ == "__main__":
    main()
