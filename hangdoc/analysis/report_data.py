"""What the reports show besides findings: GPU series for sparklines, the environment the job ran in, who each
rank is (host, pid, title), where every thread stands (stack classes) and the input notes, each said once.

All are read from the tables and manifest the analysis already has; nothing here judges the hang.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hangdoc.analysis.gpu import _gpu_ranks, _lookup, _series
from hangdoc.analysis.host import context_views
from hangdoc.analysis.model import GpuSeries, RankProcess, StackClass
from hangdoc.analysis.procs import Processes, rows
from hangdoc.analysis.stacks import stack_classes_of
from hangdoc.analysis.view import CollectiveView

MAX_SAMPLES = 120  # points per sparkline
MAX_ENV_VARS = 40
_ENV_PREFIXES = ("NCCL_", "TORCH_NCCL_", "TORCH_DISTRIBUTED", "VLLM_", "SGLANG_", "CUDA_DEVICE_MAX_CONNECTIONS")
_LIB_NOTE = re.compile(r"communication library version (\S+)")


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def gpu_series(ctx: Any) -> tuple[GpuSeries, ...]:
    """Each GPU's SM and memory-bandwidth use over the capture's samples, with the rank that holds it."""
    table = ctx.table("gpu_samples")
    if not table.num_rows:
        return ()
    procs, _ = context_views(ctx)
    owners = _gpu_ranks(procs, rows(ctx.table("gpu_processes")))
    out = []
    for (host, gpu), samples in _series(rows(table)).items():
        samples = samples[-MAX_SAMPLES:]
        ranks = _lookup(owners, host, gpu) or []
        out.append(GpuSeries(
            host=str(host or "?"), gpu=int(gpu), rank=int(ranks[0]) if len(ranks) == 1 else None,
            sm_util=tuple(_nan(r.get("sm_util")) for r in samples),
            mem_bw_util=tuple(_nan(r.get("mem_bw_util")) for r in samples),
        ))
    return tuple(sorted(out, key=lambda s: (s.host, s.gpu)))


def _distinct(table: pa.Table, column: str) -> list[Any]:
    if not table.num_rows:
        return []
    col = table.column(column)
    if pa.types.is_dictionary(col.type):  # the dictionaries, not millions of rows cast to strings
        values = {v for chunk in col.chunks for v in chunk.dictionary.to_pylist()}
    else:
        values = set(pc.unique(col).to_pylist())
    return sorted(v for v in values if v not in (None, ""))


def _joined(values: Iterable[Any], limit: int = 8) -> str:
    vs = sorted({str(v) for v in values})
    return ", ".join(vs[:limit]) + (f" ... ({len(vs)} in all)" if len(vs) > limit else "")


def environment(ctx: Any, manifest: Mapping[str, Any]) -> dict[str, str]:
    """Hosts, GPUs, driver and communication library versions, and the NCCL/vLLM settings the processes ran
    with (one value, or each distinct value when processes differ), as far as the inputs say."""
    env: dict[str, str] = {}
    hosts: set[str] = set()
    for name in ("processes", "collectives", "thread_samples", "gpu_samples", "py_frames", "log_events"):
        hosts.update(str(h) for h in _distinct(ctx.table(name), "host"))
    if hosts:
        env["hosts"] = f"{len(hosts)}: {_joined(hosts)}"
    parts = list(manifest.get("parts") or [manifest])
    captured = [p for p in parts if isinstance(p, dict) and "capture" in p]
    versions = {str(p.get("hangdoc_version")) for p in captured if p.get("hangdoc_version")}
    if versions:
        env["hangdoc (capture)"] = _joined(versions)
    drivers = {str(p["capture"].get("nvidia_driver")) for p in captured
               if isinstance(p.get("capture"), dict) and p["capture"].get("nvidia_driver")}
    if drivers:
        env["NVIDIA driver"] = _joined(drivers)
    found: dict[str, set[str]] = defaultdict(set)  # torch, NCCL, vLLM... as each node's capture read them
    for p in captured:
        cap = p["capture"] if isinstance(p["capture"], dict) else {}
        for name, version in (cap.get("versions") or {}).items():
            found[str(name)].update(v.strip() for v in str(version).split(","))
    for name in sorted(found, key=lambda n: (n != "Python", n.lower())):
        env[name] = _joined(found[name])
    gpus = ctx.table("gpu_samples")
    names = _distinct(gpus, "name")
    if names:
        count = len({(h, g) for h, g in zip(gpus.column("host").to_pylist(), gpus.column("gpu").to_pylist())})
        env["GPUs"] = f"{count} x {_joined(names)}"
    libs = {m.group(1) for note in manifest.get("notes") or [] for m in [_LIB_NOTE.search(str(note))] if m}
    if libs:
        env["NCCL (Flight Recorder)"] = _joined(libs)
    procs = ctx.table("processes")
    if procs.num_rows:
        seen: dict[str, set[str]] = defaultdict(set)
        for pairs in procs.column("env").to_pylist():
            for k, v in pairs or []:
                if k.startswith(_ENV_PREFIXES):
                    seen[k].add(str(v))
        for k in sorted(seen)[:MAX_ENV_VARS]:
            vs = seen[k]
            env[k] = next(iter(vs)) if len(vs) == 1 else f"{_joined(vs, 4)} (differs between processes)"
        if len(seen) > MAX_ENV_VARS:
            env["..."] = f"{len(seen) - MAX_ENV_VARS} more variables in the processes table"
    return env


def rank_processes(procs: Processes | None, view: CollectiveView | None = None) -> dict[int, RankProcess]:
    """Each rank's host, pid and title, where the inputs name its process (one process per rank, a live one
    first); from one traced call per rank when nothing else names them (a trace header's host and pid)."""
    out: dict[int, RankProcess] = {}
    if view is not None and view.n_rows:
        ranks, first = np.unique(view.pair_rank, return_index=True)  # one row per rank, never the whole table
        got = view.values(["host", "pid"], view.pair_last_row[first].tolist())
        for rank, host, pid in zip(ranks.tolist(), got["host"], got["pid"]):
            if pid is not None:
                out[rank] = RankProcess(rank=rank, host=host, pid=int(pid), title=None)
    if procs is None:
        return dict(sorted(out.items()))
    for rank, found in sorted(procs.ranked().items()):
        p = sorted(found, key=lambda p: (not p.live, p.pid))[0]
        out[int(rank)] = RankProcess(rank=int(rank), host=p.host, pid=int(p.pid), title=p.title or None)
    return dict(sorted(out.items()))


def process_labels(procs: Processes) -> dict[int, str]:
    """'DP 1, TP rank 2' from the parallel ranks a process's title, environment or log prefix gave."""
    out: dict[int, str] = {}
    for rank, found in procs.ranked().items():
        p = found[0]
        parts = [f"DP {p.dp_rank}" if p.dp_rank is not None else "", f"PP {p.pp_rank}" if p.pp_rank is not None else "",
                 f"TP rank {p.tp_rank}" if p.tp_rank is not None else ""]
        label = ", ".join(x for x in parts if x)
        if label:
            out[int(rank)] = label
    return out


def stack_classes(ctx: Any) -> tuple[StackClass, ...]:
    """Where every rank and every other process with a Python stack stands (see analysis.stacks)."""
    if not ctx.table("py_frames").num_rows:
        return ()
    procs, _ = context_views(ctx)
    return stack_classes_of(ctx.table("py_frames"), procs.table(), ctx.table("collectives"))


# Notes that say a collector could not run here for an ordinary reason: folded into one "not collected" line.
_EXPECTED = (
    (re.compile(r"native stacks unavailable"), "native stacks (py-spy ran without pausing the job)"),
    (re.compile(r"no GPU data: (NVML did not start|nvidia-ml-py is not installed)"),
     "GPU data (NVML not available on this host)"),
)


def fold_notes(notes: Iterable[str]) -> tuple[str, ...]:
    """The input notes, each said once, with the expected ones folded into one short 'not collected' line."""
    kept: list[str] = []
    missing: dict[str, int] = {}
    for note in notes:
        text = str(note)
        what = next((w for pattern, w in _EXPECTED if pattern.search(text)), None)
        if what is not None:
            missing[what] = missing.get(what, 0) + 1
        elif text not in kept:
            kept.append(text)
    if missing:
        kept.append("not collected: " + "; ".join(missing))
    return tuple(kept)
