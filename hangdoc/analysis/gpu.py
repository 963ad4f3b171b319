"""GPU signatures from gpu_samples / gpu_processes, tied to ranks through the processes that hold each GPU.

- gpu_spin_wait: SM busy (>= 90 %) with memory bandwidth near zero (<= 5 %) in every sample. An NCCL kernel
  polling for a peer that never arrives looks exactly like this (seed 001's "classic NCCL spin-wait").
- gpu_idle: a GPU holding a rank's memory does nothing in every sample. Next to spinning GPUs it marks the
  rank that is not in the collective its peers spin in; alone it says the hang is on the host side.
- gpu_memory_full: memory >= 98 % used, the ground an out-of-memory error grows on.
- gpu_fault: an Xid from the kernel log or uncorrected ECC errors on a GPU: hardware or driver trouble that can
  stop a rank in the middle of a collective.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa

from hangdoc.analysis import stacks
from hangdoc.analysis.model import (
    CALL_COUNT_SWAP, COLLECTIVE_MISMATCH, GPU_SPIN_WAIT, LAGGING_RANK, MISSING_RANK, OOM, ORDER_INVERSION,
    RANK_EXITED, STACK_DIVERGENCE, STUCK_IN_TEARDOWN, Finding,
)
from hangdoc.analysis.host import context_views, rank_views, teardown_chain
from hangdoc.analysis.procs import Processes, gib, ranks_text, rows
from hangdoc.analysis.text import plural

GPU_IDLE = "gpu_idle"
GPU_MEMORY_FULL = "gpu_memory_full"
GPU_FAULT = "gpu_fault"

# NVIDIA Xid codes a hang investigation meets most, and what they say (NVIDIA's Xid catalogue).
XID_MEANING = {
    13: "graphics engine exception (often an illegal memory access in a kernel)",
    31: "GPU memory page fault (an illegal address in a kernel)",
    43: "the GPU stopped processing (a kernel was killed or hung)",
    45: "preemptive cleanup after an earlier error",
    48: "double-bit ECC error",
    61: "internal micro-controller breakpoint",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping",
    64: "ECC page retirement or row remapping failure",
    74: "NVLink error",
    79: "the GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained uncorrectable ECC error",
    95: "uncontained uncorrectable ECC error",
    109: "context switch timeout",
    119: "GSP RPC timeout",
    120: "GSP error",
}

SPIN_SM = 90.0
SPIN_MEM_BW = 5.0
IDLE_SM = 5.0
FULL_FRACTION = 0.98
HELD_BYTES = 1 << 30  # a GPU with this much memory in use is held by someone
# Findings that explain spinning GPUs: the ranks spin in a collective because of them.
EXPLAINS_SPIN = (COLLECTIVE_MISMATCH, LAGGING_RANK, MISSING_RANK, CALL_COUNT_SWAP, ORDER_INVERSION, OOM, RANK_EXITED,
                 STACK_DIVERGENCE, STUCK_IN_TEARDOWN)


def _series(samples: Iterable[dict[str, Any]]) -> dict[tuple[Any, int], list[dict[str, Any]]]:
    out: dict[tuple[Any, int], list[dict[str, Any]]] = defaultdict(list)
    for r in samples:
        if r.get("gpu") is not None:
            out[(r.get("host"), int(r["gpu"]))].append(r)
    for s in out.values():
        s.sort(key=lambda r: (r.get("sample") or 0, r.get("t") or 0.0))
    return out


def _values(series: list[dict[str, Any]], col: str) -> list[float]:
    return [float(r[col]) for r in series if r.get(col) is not None]


def _gpu_ranks(procs: Processes, gpu_procs: list[dict[str, Any]]) -> dict[tuple[Any, int], list[int]]:
    """(host, gpu) -> ranks whose processes hold it (gpu_processes first, then the processes' gpu indices)."""
    out: dict[tuple[Any, int], set[int]] = defaultdict(set)
    for r in gpu_procs:
        if r.get("gpu") is None or r.get("pid") is None:
            continue
        rank = procs.rank_of(r.get("host"), int(r["pid"]))
        if rank is not None:
            out[(r.get("host"), int(r["gpu"]))].add(rank)
    if not out:
        for p in procs.all():
            if p.rank is not None and len(p.gpu_indices) == 1:
                out[(p.host, p.gpu_indices[0])].add(p.rank)
    return {k: sorted(v) for k, v in out.items()}


def _lookup(mapping: dict[tuple[Any, int], Any], host: Any, gpu: int) -> Any:
    if (host, gpu) in mapping:
        return mapping[(host, gpu)]
    loose = [v for (h, g), v in mapping.items() if g == gpu and (h is None or host is None)]
    return loose[0] if len(loose) == 1 else None


def _gpus_text(keys: Sequence[tuple[Any, int]]) -> str:
    """'GPUs 0-7', or 'GPUs 0-7 on 128 hosts' when the same indices repeat on several hosts."""
    gpus = sorted({g for _, g in keys})
    text = ("GPU " if len(gpus) == 1 else "GPUs ") + ranks_text(gpus).split(" ", 1)[1]
    hosts = {h for h, _ in keys}
    return text + (f" on {len(hosts)} hosts" if len(hosts) > 1 else "")


def gpu_findings(table: Callable[[str], pa.Table], earlier: Sequence[Finding] = (), procs: Processes | None = None,
                 views: list[stacks.RankView] | None = None) -> list[Finding]:
    samples = rows(table("gpu_samples"))
    if not samples:
        return []
    procs = procs if procs is not None else Processes(table)
    gpu_procs = rows(table("gpu_processes"))
    owners = _gpu_ranks(procs, gpu_procs)
    held_by_proc = {(r.get("host"), int(r["gpu"])) for r in gpu_procs if r.get("gpu") is not None}
    views = {v.rank: v for v in (views if views is not None else rank_views(table, procs)) if v.rank is not None}
    series = _series(samples)

    spinning: list[tuple[Any, int]] = []
    idle: list[tuple[Any, int]] = []
    full: list[tuple[Any, int, float]] = []
    bw_known = True
    for key, s in sorted(series.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        sm, bw = _values(s, "sm_util"), _values(s, "mem_bw_util")
        used = [r.get("mem_used") for r in s if r.get("mem_used") is not None]
        total = next((r.get("mem_total") for r in reversed(s) if r.get("mem_total")), None)
        holds = key in held_by_proc or _lookup(owners, *key) is not None or (used and used[-1] >= HELD_BYTES)
        if sm and min(sm) >= SPIN_SM and (not bw or max(bw) <= SPIN_MEM_BW):
            if not bw:
                bw_known = False
            spinning.append(key)
        elif sm and max(sm) <= IDLE_SM and holds:
            idle.append(key)
        if used and total and used[-1] / total >= FULL_FRACTION:
            full.append((key[0], key[1], used[-1] / total))

    faults: list[tuple[tuple[Any, int], str]] = []
    for key, s in sorted(series.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        xids = sorted({int(r["xid"]) for r in s if r.get("xid")})
        ecc = max((int(r["ecc_uncorrected"]) for r in s if r.get("ecc_uncorrected")), default=0)
        for x in xids:
            faults.append((key, f"Xid {x} ({XID_MEANING.get(x, 'see NVIDIA Xid catalogue')})"))
        if ecc:
            faults.append((key, f"{plural(ecc, 'uncorrected ECC error')}"))

    def ranks_on(keys: Iterable[tuple[Any, int]]) -> list[int]:
        return sorted({r for k in keys for r in (_lookup(owners, *k) or [])})

    def desc(key: tuple[Any, int]) -> str:
        s = series[key]
        sm, bw = _values(s, "sm_util"), _values(s, "mem_bw_util")
        rk = _lookup(owners, *key)
        who = f" ({ranks_text(rk)})" if rk else ""
        text = f"GPU {key[1]}{who}: SM {min(sm):.0f}-{max(sm):.0f} %" if sm else f"GPU {key[1]}{who}"
        if bw:
            text += f", memory bandwidth {min(bw):.0f}-{max(bw):.0f} %"
        text += f" over {plural(len(s), 'sample')}"
        for r in rk or []:
            v = views.get(r)
            if v is not None:
                text += f"; rank {r} {v.placement.category}: {v.placement.where}"
        return text

    findings: list[Finding] = []
    explained = next((f.kind for f in earlier if f.kind in EXPLAINS_SPIN and f.role == "cause"), None)
    if spinning:
        rk = ranks_on(spinning)
        in_coll = [r for r in rk if r in views and views[r].placement.category == stacks.COLLECTIVE]
        gpus = [k[1] for k in spinning]
        n = len(series[spinning[0]])
        summary = f"{_gpus_text(spinning)}" + (f" ({ranks_text(rk)})" if rk else "")
        samples = plural(n, "sample")
        summary += (f": SM >= {SPIN_SM:.0f} % with memory bandwidth <= {SPIN_MEM_BW:.0f} % in all {samples}, the "
                    f"NCCL spin-wait of a collective whose peer never arrives" if bw_known else
                    f": SM >= {SPIN_SM:.0f} % in all {samples} (memory bandwidth not recorded), as NCCL kernels "
                    f"spinning in a collective look")
        if in_coll:
            ops = sorted({views[r].placement.op or "a collective" for r in in_coll})
            summary += f"; {ranks_text(in_coll)} are in {', '.join(ops)}"
        details: dict[str, Any] = {"gpus": gpus, "in_collective": in_coll, "memory_bandwidth_known": bw_known,
                                   "confidence": "low"}
        role = "cause"
        if explained:
            role, details["explained_by"] = "symptom", explained
        findings.append(Finding(kind=GPU_SPIN_WAIT, ranks=tuple(rk), summary=summary,
                                evidence=tuple(desc(k) for k in spinning), role=role, details=details))
    if idle:
        rk = ranks_on(idle)
        gpus = [k[1] for k in idle]
        spin_ranks = ranks_on(spinning)
        summary = f"{_gpus_text(idle)}" + (f" ({ranks_text(rk)})" if rk else "")
        summary += " hold memory but run nothing in any sample"
        role = "symptom"
        waiting: tuple[int, ...] = ()
        if spinning and len(idle) < len(spinning):
            summary += (f", while {_gpus_text(spinning)} spin in a collective: "
                        f"{'their ranks are' if len(rk) != 1 else 'its rank is'} not in the collective the others wait in")
            role, waiting = "cause", tuple(spin_ranks)
        else:
            stuck = [r for r in rk if r in views and views[r].placement.category in (stacks.TEARDOWN, stacks.COLLECTIVE, stacks.IDLE)]
            if stuck:
                v = views[stuck[0]]
                where = teardown_chain(v) if v.placement.category == stacks.TEARDOWN else v.placement.where
                summary += f"; {ranks_text(stuck)} wait on the host side ({where})"
            else:
                summary += ": the hang is on the host side, not in a GPU kernel"
        findings.append(Finding(kind=GPU_IDLE, ranks=tuple(rk), summary=summary, evidence=tuple(desc(k) for k in idle),
                                waiting_ranks=waiting, role=role, details={"gpus": gpus, "confidence": "medium"}))
    if faults:
        keys = sorted({k for k, _ in faults}, key=lambda k: (str(k[0]), k[1]))
        rk = ranks_on(keys)
        what = "; ".join(f"GPU {k[1]}: {text}" for k, text in faults[:4])
        findings.append(Finding(kind=GPU_FAULT, ranks=tuple(rk),
                                summary=f"{_gpus_text(keys)}" + (f" ({ranks_text(rk)})" if rk else "")
                                + f" reported hardware or driver errors: {what}",
                                evidence=tuple(f"GPU {k[1]}: {text}" for k, text in faults),
                                # a GPU that faulted explains its rank's stall better than where its stack stands
                                details={"gpus": [k[1] for k in keys], "confidence": "medium", "priority": 88}))
    if full:
        keys = [(h, g) for h, g, _ in full]
        rk = ranks_on(keys)
        worst = max(f for _, _, f in full)
        evidence = []
        for h, g, frac in full:
            s = series[(h, g)][-1]
            evidence.append(f"GPU {g}: {gib(s.get('mem_used'))} of {gib(s.get('mem_total'))} used ({100 * frac:.1f} %)")
        findings.append(Finding(kind=GPU_MEMORY_FULL, ranks=tuple(rk),
                                summary=f"{_gpus_text(keys)} memory nearly full (up to {100 * worst:.1f} %)",
                                evidence=tuple(evidence), role="symptom", details={"gpus": [k[1] for k in keys]}))
    return findings


def gpu_signatures(ctx: Any) -> list[Finding]:
    """Analysis pass: GPU spin-wait, idle GPUs under stuck ranks, full GPU memory."""
    if not ctx.table("gpu_samples").num_rows:
        return []
    return gpu_findings(ctx.table, list(getattr(ctx, "findings", ())), *context_views(ctx))

