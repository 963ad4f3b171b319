"""GPU signatures on hand-built samples: NCCL spin-wait, idle GPUs under stuck ranks, full memory."""
from __future__ import annotations

from typing import Any

from hangdoc.analysis import gpu
from hangdoc.analysis.model import COLLECTIVE_MISMATCH, GPU_SPIN_WAIT, Finding
from hangdoc.bundle import Bundle
from hangdoc.schema import table_from_rows

GIB = 1 << 30


def bundle(**tables: list[dict[str, Any]]) -> Bundle:
    b = Bundle()
    for name, rows in tables.items():
        b.add(name, table_from_rows(name, rows))
    return b


def series(gpus: dict[int, tuple[float, float | None]], n: int = 3, used: float = 90 * GIB,
           total: float = 96 * GIB) -> list[dict]:
    return [{"gpu": g, "sample": s, "sm_util": sm, "mem_bw_util": bw, "mem_used": int(used), "mem_total": int(total)}
            for s in range(n) for g, (sm, bw) in gpus.items()]


def owners(n: int) -> tuple[list[dict], list[dict]]:
    procs = [{"pid": 100 + r, "global_rank": r, "status": "running"} for r in range(n)]
    held = [{"gpu": r, "pid": 100 + r, "used_memory": 90 * GIB} for r in range(n)]
    return procs, held


def in_collective(pid: int, op: str = "all_reduce") -> list[dict]:
    frames = [(op, "torch/distributed/distributed_c10d.py"), ("step", "train.py"), ("<module>", "train.py")]
    return [{"pid": pid, "tid": pid, "thread_name": "MainThread", "sample": 0, "depth": d, "function": fn, "file": f,
             "line": 3, "native": False} for d, (fn, f) in enumerate(frames)]


def test_seed001_spin_wait_all_gpus_busy_sm_and_no_memory_bandwidth() -> None:
    procs, held = owners(8)
    frames = [row for r in range(8) for row in in_collective(100 + r)]
    b = bundle(gpu_samples=series({g: (100.0, 0.0) for g in range(8)}), processes=procs, gpu_processes=held,
               py_frames=frames)
    (spin,) = gpu.gpu_findings(b.table)
    assert spin.kind == GPU_SPIN_WAIT and spin.ranks == tuple(range(8)) and spin.role == "cause"
    assert "GPUs 0-7 (ranks 0-7): SM >= 90 % with memory bandwidth <= 5 % in all 3 samples" in spin.summary
    assert "ranks 0-7 are in all_reduce" in spin.summary and spin.details["memory_bandwidth_known"]


def test_spin_wait_is_a_symptom_of_an_earlier_collective_cause() -> None:
    procs, held = owners(2)
    b = bundle(gpu_samples=series({0: (100.0, 0.0), 1: (99.0, 1.0)}), processes=procs, gpu_processes=held)
    cause = Finding(kind=COLLECTIVE_MISMATCH, ranks=(1,), summary="rank 1 posted all_gather")
    (spin,) = gpu.gpu_findings(b.table, [cause])
    assert spin.role == "symptom" and spin.details["explained_by"] == COLLECTIVE_MISMATCH


def test_the_one_idle_gpu_next_to_spinning_ones_marks_its_rank() -> None:
    procs, held = owners(4)
    b = bundle(gpu_samples=series({0: (100.0, 0.0), 1: (100.0, 0.0), 2: (0.0, 0.0), 3: (100.0, 0.0)}),
               processes=procs, gpu_processes=held)
    found = {f.kind: f for f in gpu.gpu_findings(b.table)}
    idle = found[gpu.GPU_IDLE]
    assert idle.role == "cause" and idle.ranks == (2,) and idle.waiting_ranks == (0, 1, 3)
    assert "its rank is not in the collective the others wait in" in idle.summary
    assert found[GPU_SPIN_WAIT].ranks == (0, 1, 3)


def test_default_table_without_bandwidth_still_reports_spin_but_says_so() -> None:
    procs, held = owners(2)
    b = bundle(gpu_samples=series({0: (100.0, None), 1: (100.0, None)}, n=1), processes=procs, gpu_processes=held)
    (spin,) = gpu.gpu_findings(b.table)
    assert "memory bandwidth not recorded" in spin.summary and not spin.details["memory_bandwidth_known"]


def test_full_memory_and_busy_healthy_gpus() -> None:
    procs, held = owners(2)
    b = bundle(gpu_samples=series({0: (80.0, 40.0), 1: (75.0, 35.0)}, used=79.5 * GIB, total=80 * GIB),
               processes=procs, gpu_processes=held)
    (full,) = gpu.gpu_findings(b.table)  # working GPUs: no spin, no idle
    assert full.kind == gpu.GPU_MEMORY_FULL and full.role == "symptom" and full.ranks == (0, 1)
    assert "99.4 %" in full.summary
    healthy = bundle(gpu_samples=series({0: (80.0, 40.0)}), processes=procs, gpu_processes=held)
    assert gpu.gpu_findings(healthy.table) == []


def test_unowned_empty_gpu_is_not_idle_under_a_rank() -> None:
    b = bundle(gpu_samples=series({0: (0.0, 0.0)}, used=0, total=80 * GIB))
    assert gpu.gpu_findings(b.table) == []


def test_xid_and_ecc_errors_name_the_gpu_and_its_rank() -> None:
    procs, held = owners(2)
    rows = series({0: (100.0, 0.0), 1: (0.0, 0.0)})
    for r in rows:
        if r["gpu"] == 1:
            r["xid"], r["ecc_uncorrected"] = 79, 2
    found = {f.kind: f for f in gpu.gpu_findings(bundle(gpu_samples=rows, processes=procs, gpu_processes=held).table)}
    fault = found[gpu.GPU_FAULT]
    assert fault.ranks == (1,) and fault.role == "cause"
    assert "GPU 1 (rank 1) reported hardware or driver errors: GPU 1: Xid 79 (the GPU has fallen off the bus)" in fault.summary
    assert "GPU 1: 2 uncorrected ECC errors" in fault.evidence
