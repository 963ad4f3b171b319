"""Seeds 000, 002, 003 and 004: the verdict names what each incident's authors concluded by hand.

Each fixture holds the kind of evidence its bug report had (py-spy dumps, nvidia-smi, engine logs), no
collective traces. See docs/signatures.md.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hangdoc.analysis.model import (
    COLLECTIVE_MISMATCH, KV_TRANSFER_STRANDED, LAGGING_RANK, LOG_SIGNATURE, OOM, ORPHANED_PROCESS, RANK_EXITED,
    STUCK_IN_TEARDOWN,
)
from hangdoc.analysis.pipeline import diagnose
from hangdoc.cli import app
from hangdoc.importers import load_inputs

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SEED000 = FIXTURES / "seed000-teardown"


def verdict_of(*paths: Path):
    return diagnose(load_inputs(list(paths)))


def test_seed000_uncoordinated_shutdown_names_who_left_and_who_is_stuck_in_teardown() -> None:
    d = verdict_of(SEED000)
    v = d.verdict
    assert v.kind == RANK_EXITED and v.culprit_ranks == (3,) and v.confidence == "high"
    assert v.summary.endswith("they still hold 209.8 GiB of GPU memory")
    assert v.summary.startswith("uncoordinated shutdown: rank 3 exited while ranks 0-2 are stuck in communicator "
                                "teardown (commDestroySync <- ncclCommDestroy")
    teardown = next(f for f in d.findings if f.kind == STUCK_IN_TEARDOWN)
    assert teardown.ranks == (0, 1, 2) and teardown.role == "symptom"
    assert "GPU memory still held" in teardown.summary


def test_seed000_from_py_spy_dumps_and_nvidia_smi_alone() -> None:
    """No traces and no log: the stacks and the GPU table still give a useful verdict."""
    files = sorted(SEED000.glob("py-spy-*.txt")) + [SEED000 / "nvidia-smi.txt"]
    v = verdict_of(*files).verdict
    assert v.kind == STUCK_IN_TEARDOWN and v.culprit_ranks == (0, 1, 2)
    assert "commDestroySync <- ncclCommDestroy" in v.summary
    assert "GPU 3 holds no process any more" in v.summary and "209.8 GiB of GPU memory still held" in v.summary


def test_seed002_is_a_kv_transfer_leak_not_a_collective_hang() -> None:
    d = verdict_of(FIXTURES / "seed002-nixl-kv-leak")
    v = d.verdict
    assert v.kind == KV_TRANSFER_STRANDED and v.confidence == "high"
    assert v.summary.startswith("KV transfer leak, not a collective hang: 42 prefill requests")
    kv = d.findings[0]
    assert kv.details["stranded_requests"] == 44 and kv.details["lease_seconds"] == 480
    assert kv.details["sibling_parents"] == 6 and kv.details["kv_cache_usage_max"] == 99.8
    assert not {f.kind for f in d.findings} & {COLLECTIVE_MISMATCH, LAGGING_RANK}


def test_seed003_rank0_ooms_in_warmup_and_peers_wait_for_a_collective_it_never_issued() -> None:
    d = verdict_of(FIXTURES / "seed003-trtllm-oom")
    v = d.verdict
    assert v.kind == OOM and v.culprit_ranks == (0,) and v.confidence == "high"
    oom = d.findings[0]
    assert oom.kind == OOM and oom.waiting_ranks == (1, 2, 3)
    assert "rank 0 ran out of GPU memory in warm-up" in v.summary and "ranks 1-3 wait in all_reduce" in v.summary
    assert "never issued" in v.summary
    waits = [f for f in d.findings if f.kind == LOG_SIGNATURE and f.role == "symptom" and f.waiting_ranks]
    assert waits and {1, 2, 3} <= set(waits[0].waiting_ranks) and waits[0].ranks == ()  # waiters, never culprits


def test_seed003_from_the_trtllm_log_alone() -> None:
    d = verdict_of(FIXTURES / "seed003-trtllm-oom" / "trtllm-serve-ctx.log")
    v = d.verdict
    assert v.kind == OOM and v.culprit_ranks == (0,)
    assert "rank 0 ran out of GPU memory in warm-up" in v.summary and "ranks 1-3" in v.summary
    # rank 0's later CUDA error has no time: it cannot be placed before the OOM, so it is not a second cause
    assert all(f.role == "symptom" for f in d.findings if f.kind == RANK_EXITED)


def test_seed003_with_torch_watchdog_lines_from_the_waiting_ranks(tmp_path: Path) -> None:
    """One TRT-LLM file with rank 0's OOM and three torch logs that time out: the mix that used to crash the
    log pass into no_fault_found."""
    (tmp_path / "rank0.log").write_text(
        "[04/18/2026-14:02:14] [TRT-LLM] [RANK 0] [W] Skipping warmup for 32784 tokens: torch.OutOfMemoryError: "
        "CUDA out of memory. Tried to allocate 7.50 GiB.\n")
    for r in (1, 2, 3):
        (tmp_path / f"rank{r}.log").write_text(
            f"[rank{r}]:[E418 14:07:12.123456789 ProcessGroupNCCL.cpp:632] [Rank {r}] Watchdog caught collective "
            f"operation timeout: WorkNCCL(SeqNum=57, OpType=ALLREDUCE, NumelIn=4096, NumelOut=4096, "
            f"Timeout(ms)=300000) ran for 300012 milliseconds before timing out.\n"
            f"[rank{r}]:[E418 14:07:12.223456789 ProcessGroupNCCL.cpp:2168] [PG ID 0 PG GUID 0(default_pg) Rank {r}] "
            f"failure detected by watchdog at work sequence id: 57 PG status: last enqueued work: 57, last "
            f"completed work: 56\n")
    d = verdict_of(tmp_path)
    assert not any("failed" in n for n in d.notes)
    assert d.verdict.kind == OOM and d.verdict.culprit_ranks == (0,)
    assert "ranks 1-3 timed out in all_reduce SeqNum 57, a call it never issued" in d.verdict.summary


def test_seed004_parent_exits_before_workers_finish_starting() -> None:
    d = verdict_of(FIXTURES / "seed004-startup-race")
    v = d.verdict
    assert v.kind == ORPHANED_PROCESS and v.culprit_ranks == (0,)
    assert v.summary.startswith("start-up race: the parent process exited before its workers finished starting")
    assert "BrokenPipeError" in v.summary and "Servers failed to start" in v.summary
    assert all(f.role == "symptom" for f in d.findings[1:])


def test_analyze_cli_on_py_spy_dumps_and_nvidia_smi_prints_the_verdict_as_json() -> None:
    files = [str(p) for p in sorted(SEED000.glob("py-spy-*.txt"))] + [str(SEED000 / "nvidia-smi.txt")]
    result = CliRunner().invoke(app, ["analyze", *files, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verdict"]["kind"] == STUCK_IN_TEARDOWN and report["verdict"]["culprit_ranks"] == [0, 1, 2]
    assert "gpu_idle" in {f["kind"] for f in report["findings"]}


def test_fixture_generator_reproduces_the_committed_fixtures(tmp_path: Path) -> None:
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_signature_seeds
    finally:
        sys.path.remove(str(FIXTURES))
    for path in make_signature_seeds.write(tmp_path):
        rel = path.relative_to(tmp_path)
        assert path.read_text() == (FIXTURES / rel).read_text(), rel


@pytest.mark.parametrize("name", ["seed000-teardown", "seed002-nixl-kv-leak", "seed003-trtllm-oom",
                                  "seed004-startup-race"])
def test_seed_fixtures_hold_no_collective_traces(name: str) -> None:
    assert load_inputs([FIXTURES / name]).rows("collectives") == 0


def test_import_writes_a_bundle_that_analyzes_to_the_same_verdict(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["import", str(FIXTURES / "seed003-trtllm-oom"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "log_events" in result.output and "py_frames" in result.output
    v = diagnose(load_inputs([out])).verdict
    assert v.kind == OOM and v.culprit_ranks == (0,)
    again = CliRunner().invoke(app, ["import", str(FIXTURES / "seed003-trtllm-oom"), "--output", str(out)])
    assert again.exit_code != 0  # never overwrites an existing bundle


def test_seed001_collective_mismatch_explains_the_gpu_spin_and_the_shm_broadcast_warnings(tmp_path: Path) -> None:
    """Traces, nvidia-smi and the engine log together: one verdict, the rest become its symptoms."""
    pids = {0: 2529073, 1: 2529071, 2: 2529070, 3: 2529072, 4: 3408432, 5: 3408433, 6: 3408431, 7: 3408430}
    (tmp_path / "smi.csv").write_text(
        "index, uuid, utilization.gpu [%], utilization.memory [%], memory.used [MiB], memory.total [MiB]\n"
        + "".join(f"{s % 4}, GPU-{r}, 100 %, 0 %, 90112 MiB, 97871 MiB\n" for s in range(2) for r in range(8)))
    (tmp_path / "apps.csv").write_text("pid, used_gpu_memory [MiB], gpu_uuid\n"
                                       + "".join(f"{pid}, 90000 MiB, GPU-{r}\n" for r, pid in pids.items()))
    (tmp_path / "engine.log").write_text(
        "(EngineCore_DP1 pid=3408402) INFO 05-12 10:41:07 [shm_broadcast.py:466] No available shared memory broadcast "
        "block found in 600 seconds. This typically happens when some processes are hanging or doing some "
        "time-consuming work (e.g. compilation, weight/kv cache quantization).\n")
    d = verdict_of(FIXTURES / "seed001-tp4-dp2", tmp_path)
    assert d.verdict.kind == COLLECTIVE_MISMATCH and d.verdict.culprit_ranks == (6,)
    spin = next(f for f in d.findings if f.kind == "gpu_spin_wait")
    assert spin.role == "symptom" and spin.ranks == tuple(range(8)) and spin.details["explained_by"]
    shm = next(f for f in d.findings if f.details.get("signature") == "vllm_shm_broadcast_timeout")
    assert shm.role == "symptom"
    assert "follows from it: wait_chain x7, gpu_spin_wait, log_signature" in d.verdict.reason


def test_real_py_spy_dumps_and_a_spinning_nvidia_smi_table_without_traces(tmp_path: Path) -> None:
    """py-spy output of a real gloo hang (one rank in all_gather, three in all_reduce) plus the GPU table a bug
    report would paste: the odd process is named and the GPU spin is its symptom."""
    dump = Path(__file__).resolve().parents[1] / "fixtures" / "pyspy" / "gloo_mismatch_all.txt"
    pids = [15075, 15076, 15077, 15078]
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_signature_seeds as seeds
    finally:
        sys.path.remove(str(FIXTURES))
    smi = seeds.nvidia_smi("Wed Apr 15 03:41:07 2026",
                           [{"i": i, "temp": 61, "pw": 690, "used": 71624, "util": 100} for i in range(4)],
                           [{"i": i, "pid": pid, "name": "python worker.py", "mem": 71614} for i, pid in enumerate(pids)])
    (tmp_path / "nvidia-smi.txt").write_text(smi)
    d = verdict_of(dump, tmp_path / "nvidia-smi.txt")
    assert d.verdict.kind == "stack_divergence" and "all_gather" in d.verdict.summary
    spin = next(f for f in d.findings if f.kind == "gpu_spin_wait")
    assert spin.role == "symptom" and "memory bandwidth not recorded" in spin.summary
