"""Engine logs -> log_events: which process and rank wrote each catalogued line, from the projects' own prefixes."""
from __future__ import annotations

from pathlib import Path

from hangdoc.importers import logfile


def _read(tmp_path: Path, name: str, text: str) -> tuple[list[dict], list[dict], list[dict]]:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    assert logfile.matches(path)
    b = logfile.read([path])
    events = [e for e in b.table("log_events").to_pylist() if e["event"] != "seen"]  # "rank N wrote this file"
    return events, b.table("processes").to_pylist(), b.table("py_frames").to_pylist()


def test_vllm_prefixes_become_global_ranks_with_the_tp_size_seen_in_the_log(tmp_path: Path) -> None:
    lines = [f"(Worker_DP{dp}_TP{tp} pid={100 + 4 * dp + tp}) INFO 05-12 10:00:00 [gpu_worker.py:1] ready"
             for dp in range(2) for tp in range(4)]
    lines.append("(Worker_DP1_TP2 pid=106) WARNING 05-12 10:41:07 [pynccl.py:1] node-15:106:200 [2] NCCL WARN "
                 "Net : Connection closed by remote peer")
    lines.append("(EngineCore_DP1 pid=90) INFO 05-12 10:41:07 [shm_broadcast.py:466] No available shared memory "
                 "broadcast block found in 600 seconds. This typically happens when some processes are hanging.")
    events, procs, _ = _read(tmp_path, "serve.log", "\n".join(lines) + "\n")
    warn, shm = events
    assert (warn["signature"], warn["pid"], warn["rank"], warn["line_no"]) == ("nccl_warn", 106, 6, 9)
    assert warn["severity"] == "warning" and warn["t"] is not None
    assert (shm["pid"], shm["rank"]) == (90, None)  # an engine core is not a rank
    ranks = {p["pid"]: p["global_rank"] for p in procs}
    assert ranks[106] == 6 and ranks[103] == 3 and ranks[90] is None
    assert {p["role"] for p in procs} == {"worker", "engine"}


def test_died_worker_line_is_about_the_worker_not_the_engine(tmp_path: Path) -> None:
    text = "\n".join([
        "(Worker_DP1_TP0 pid=11) INFO 02-27 10:00:00 [x.py:1] up",
        "(Worker_DP1_TP3 pid=14) INFO 02-27 10:00:00 [x.py:1] up",
        "(EngineCore_DP1 pid=9) ERROR 02-27 10:31:24 [multiproc_executor.py:231] Worker proc VllmWorker-2 died "
        "unexpectedly, shutting down executor.",
        "ERROR 06-11 08:02:10 [ray_executor_v2.py:464] RayWorkerProc rank=[3] died unexpectedly, shutting down executor.",
    ])
    events, _, _ = _read(tmp_path, "engine.log", text)
    assert [(e["signature"], e["pid"], e["rank"]) for e in events] == [
        ("vllm_worker_died", 9, 6),  # DP1 x TP4 + local worker 2
        ("vllm_worker_died", None, 3),
    ]


def test_trtllm_torch_sglang_and_launcher_prefixes(tmp_path: Path) -> None:
    text = "\n".join([
        "[04/18/2026-14:07:12] [TRT-LLM] [RANK 2] [E] Hang detected after 300 seconds.",
        "[rank5]:[E1218 20:27:21.426415540 ProcessGroupNCCL.cpp:629] [Rank 5] Watchdog caught collective operation "
        "timeout: WorkNCCL(SeqNum=9, OpType=ALLREDUCE, NumelIn=8, NumelOut=8, Timeout(ms)=600000) ran for 600081 "
        "milliseconds before timing out.",
        "[2025-04-03 20:06:34 DP0 TP3] Watchdog timeout (self.watchdog_timeout=300)",
        "[1,7]<stderr>:torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        "Aug 25 17:51:32 sys0 vllm[45252]: (Worker_TP1 pid=45252) INFO 08-25 17:51:32 [multiproc_executor.py:793] "
        "Parent process exited, terminating worker queues",
    ])
    events, _, _ = _read(tmp_path, "mixed.log", text)
    got = [(e["signature"], e["rank"], e["pid"], e["host"]) for e in events]
    assert got == [
        ("trtllm_hang_detected", 2, None, None),
        ("c10d_watchdog_timeout", 5, None, None),
        ("sglang_watchdog_timeout", 3, None, None),
        ("cuda_oom", 7, None, None),
        ("vllm_parent_exited", 1, 45252, "sys0"),
    ]
    assert all(e["t"] is not None for e in events if e["signature"] != "cuda_oom")


def test_srun_labels_and_file_names_give_ranks_to_bare_lines(tmp_path: Path) -> None:
    srun = "\n".join(f"{r}: step 10 loss 2.31" for r in range(4)) + "\n2: RuntimeError: CUDA error: out of memory\n"
    events, _, _ = _read(tmp_path, "job.out", srun)
    assert [(e["signature"], e["rank"]) for e in events] == [("cuda_oom", 2)]
    events, _, _ = _read(tmp_path, "attempt_0/3/stderr.log", "[W] Hang detected after 60 seconds.\n")
    assert events[0]["rank"] == 3
    events, _, _ = _read(tmp_path, "rank1.log", "BrokenPipeError: [Errno 32] Broken pipe\n")
    assert events[0]["rank"] == 1


def test_context_keeps_the_lines_before_from_the_same_process(tmp_path: Path) -> None:
    text = "\n".join([
        "[04/18/2026-14:02:12] [TRT-LLM] [RANK 0] [I] Run warmup with 32784 tokens, include 0 generation tokens",
        "[04/18/2026-14:02:12] [TRT-LLM] [RANK 1] [I] Run warmup with 32784 tokens, include 0 generation tokens",
        "[04/18/2026-14:02:14] [TRT-LLM] [RANK 0] [E] torch.OutOfMemoryError: CUDA out of memory.",
    ])
    (oom,) = _read(tmp_path, "trt.log", text)[0]
    assert oom["rank"] == 0 and oom["context"] == [text.splitlines()[0]]


def test_py_spy_dump_inside_an_sglang_log_becomes_frames(tmp_path: Path) -> None:
    text = "\n".join([
        "[2026-01-09 11:20:40 TP3] Scheduler watchdog timeout (self.watchdog_timeout=300, self.soft=False)",
        "[2026-01-09 11:20:40 TP3] Pyspy dump for PID 8812:",
        "Process 8812: sglang::scheduler_TP3",
        "Python v3.12.3 (/usr/bin/python3.12)",
        "",
        'Thread 8812 (active): "MainThread"',
        "    broadcast (torch/distributed/distributed_c10d.py:2727)",
        "    _broadcast_reqs_across_ranks (sglang/srt/managers/scheduler.py:1201)",
        "    event_loop_normal (sglang/srt/managers/scheduler.py:880)",
        "",
    ])
    events, procs, frames = _read(tmp_path, "sglang.log", text)
    assert events[0]["signature"] == "sglang_watchdog_timeout" and events[0]["rank"] == 3
    assert {p["pid"]: p["global_rank"] for p in procs}[8812] == 3  # the py-spy header's title labels the stacks
    assert [(f["pid"], f["depth"], f["function"]) for f in frames][:2] == [(8812, 0, "broadcast"),
                                                                             (8812, 1, "_broadcast_reqs_across_ranks")]


def test_only_logs_are_claimed(tmp_path: Path) -> None:
    smi = tmp_path / "nvidia-smi.txt"
    smi.write_text("| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |\n")
    blob = tmp_path / "dump.bin"
    blob.write_bytes(b"\x80\x04\x95\x00\x00NCCL WARN")
    plain = tmp_path / "notes.txt"
    plain.write_text("we restarted the job twice\n")
    assert not logfile.matches(smi) and not logfile.matches(blob) and not logfile.matches(plain)


def test_a_huge_log_is_read_from_its_tail(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(logfile, "MAX_BYTES", 200)
    path = tmp_path / "big.log"
    path.write_text("RuntimeError: CUDA error: out of memory\n" + "x" * 300 + "\n" + "BrokenPipeError: [Errno 32]\n")
    b = logfile.read([path])
    assert [(e["signature"], e["line_no"]) for e in b.table("log_events").to_pylist()] == [("broken_pipe", None)]
    assert any("read only its last" in n for n in b.notes)
