"""Host signatures on hand-built rows: thread states, exited ranks, teardown, orphans."""
from __future__ import annotations

from typing import Any

from collrows import history
from hangdoc.analysis import host
from hangdoc.analysis.model import ORPHANED_PROCESS, RANK_EXITED, RANK_STOPPED, STUCK_IN_TEARDOWN
from hangdoc.analysis.pipeline import diagnose
from hangdoc.bundle import Bundle
from hangdoc.schema import table_from_rows

GIB = 1 << 30


def bundle(**tables: list[dict[str, Any]]) -> Bundle:
    b = Bundle()
    for name, rows in tables.items():
        b.add(name, table_from_rows(name, rows))
    return b


def samples(pid: int, tid: int, states: str, wchan: str = "0", cpu_per_sample: float = 0.0, dt: float = 0.5) -> list[dict]:
    return [{"host": "n1", "pid": pid, "tid": tid, "sample": i, "t": 100.0 + i * dt, "state": s, "wchan": wchan,
             "utime": 10.0 + i * cpu_per_sample, "stime": 0.0} for i, s in enumerate(states)]


def stack(pid: int, frames: list[tuple[str, str, bool]], name: str = "MainThread") -> list[dict]:
    return [{"host": "n1", "pid": pid, "tid": pid, "thread_name": name, "sample": 0, "depth": d, "function": fn,
             "file": file, "line": 10 + d, "native": native, "idle": False, "source": "py-spy"}
            for d, (fn, file, native) in enumerate(frames)]


ALL_REDUCE = [("all_reduce", "torch/distributed/distributed_c10d.py", False), ("step", "train.py", False),
              ("<module>", "train.py", False)]
DESTROY = [("commDestroySync", "libnccl.so.2", True), ("ncclCommDestroy", "libnccl.so.2", True),
           ("destroy", "vllm/distributed/device_communicators/pynccl.py", False),
           ("destroy_model_parallel", "vllm/distributed/parallel_state.py", False),
           ("worker_main", "vllm/v1/executor/multiproc_executor.py", False)]


def procs(n: int, **extra: Any) -> list[dict]:
    return [{"host": "n1", "pid": 100 + r, "global_rank": r, "status": "sleeping", "role": "worker", **extra}
            for r in range(n)]


def test_classify_tells_spinning_from_blocked_d_state_and_zombie() -> None:
    assert host.classify(samples(1, 1, "RRR", cpu_per_sample=0.49)).kind == host.SPINNING
    assert host.classify(samples(1, 1, "RRR", cpu_per_sample=0.01)).kind == host.ACTIVE  # R but not burning CPU
    assert host.classify(samples(1, 1, "R")).kind == host.RUNNING  # one sample cannot tell
    blocked = host.classify(samples(1, 1, "SSS", wchan="futex_wait_queue"))
    assert blocked.kind == host.BLOCKED and "futex_wait_queue" in blocked.text()
    assert host.classify(samples(1, 1, "SS", wchan="ep_poll")).kind == host.BLOCKED
    assert host.classify(samples(1, 1, "SS", wchan="hrtimer_nanosleep")).kind == host.SLEEPING
    assert host.classify(samples(1, 1, "DDD", wchan="nfs_wait_on_request")).kind == host.D_STATE
    assert host.classify(samples(1, 1, "SZ")).kind == host.ZOMBIE


def test_thread_states_summarise_main_threads_and_siblings() -> None:
    rows = []
    for r in range(4):
        rows += samples(100 + r, 100 + r, "RRR", cpu_per_sample=0.49)
        rows += samples(100 + r, 1000 + r, "SSS", wchan="futex_wait_queue")
        rows += samples(100 + r, 2000 + r, "SSS", wchan="ep_poll")
    (f,) = host.host_findings(bundle(processes=procs(4), thread_samples=rows).table)
    assert f.kind == host.THREAD_STATES and f.role == "symptom" and f.ranks == (0, 1, 2, 3)
    assert "ranks 0-3: spinning on CPU" in f.summary and "0.98 CPU-s/s" in f.summary
    assert "Sibling threads: 8 (4 futex, 4 epoll)" in f.summary


def test_a_rank_stuck_in_d_state_is_named_with_its_wait_channel() -> None:
    rows = samples(100, 100, "SSS", wchan="futex_wait_queue") + samples(101, 101, "DDD", wchan="nvidia_wait_for_gpu")
    found = {f.kind: f for f in host.host_findings(bundle(processes=procs(2), thread_samples=rows).table)}
    stuck = found[host.STUCK_IN_KERNEL]
    assert stuck.ranks == (1,) and stuck.waiting_ranks == (0,) and "nvidia_wait_for_gpu" in stuck.summary


def test_zombie_rank_exited_while_peers_wait_in_a_collective() -> None:
    p = procs(4)
    p[3]["status"] = "zombie"
    frames = [row for r in range(3) for row in stack(100 + r, ALL_REDUCE)]
    found = {f.kind: f for f in host.host_findings(bundle(processes=p, py_frames=frames).table)}
    exited = found[RANK_EXITED]
    assert exited.ranks == (3,) and exited.waiting_ranks == (0, 1, 2)
    assert exited.summary.startswith("rank 3 exited while ranks 0-2 still wait in all_reduce")
    assert STUCK_IN_TEARDOWN not in found


def test_uncoordinated_shutdown_names_who_left_and_who_is_stuck_in_destroy() -> None:
    frames = [row for r in range(3) for row in stack(100 + r, DESTROY)]
    p = procs(3) + [{"host": "n1", "pid": 103, "global_rank": 3, "title": "Worker_TP3", "rank_source": "log"}]
    logs = [{"host": "n1", "file": "serve.log", "line_no": 21, "pid": 103, "rank": 3,
             "signature": "vllm_worker_shutting_down", "severity": "info",
             "text": "(Worker_TP3 pid=103) INFO 04-15 03:16:20 [multiproc_executor.py:702] WorkerProc shutting down."}]
    gpu = [{"host": "n1", "gpu": r, "pid": 100 + r, "used_memory": 70 * GIB} for r in range(3)]
    found = {f.kind: f for f in host.host_findings(
        bundle(processes=p, py_frames=frames, log_events=logs, gpu_processes=gpu).table)}
    exited, teardown = found[RANK_EXITED], found[STUCK_IN_TEARDOWN]
    assert exited.ranks == (3,) and exited.waiting_ranks == (0, 1, 2)
    assert exited.summary.startswith("uncoordinated shutdown: rank 3 exited while ranks 0-2 are stuck in communicator "
                                     "teardown (commDestroySync <- ncclCommDestroy <- destroy")
    assert teardown.role == "symptom" and teardown.ranks == (0, 1, 2)
    assert "210.0 GiB of GPU memory still held" in teardown.summary


def test_teardown_without_a_known_exit_is_the_cause_and_points_at_the_empty_gpu() -> None:
    frames = [row for r in range(3) for row in stack(100 + r, DESTROY)]
    gpu = [{"host": "n1", "gpu": r, "pid": 100 + r, "used_memory": 70 * GIB} for r in range(3)]
    smi = [{"gpu": g, "sample": 0, "sm_util": 0.0, "mem_used": (70 * GIB if g < 3 else 0), "mem_total": 80 * GIB}
           for g in range(4)]
    found = {f.kind: f for f in host.host_findings(
        bundle(processes=procs(3), py_frames=frames, gpu_processes=gpu, gpu_samples=smi).table)}
    teardown = found[STUCK_IN_TEARDOWN]
    assert teardown.role == "cause" and teardown.ranks == (0, 1, 2)
    assert "GPU 3 holds no process any more" in teardown.summary and RANK_EXITED not in found


def test_orphans_are_workers_whose_parent_is_gone_with_the_gpu_memory_they_hold() -> None:
    p = procs(2, ppid=1, parent_alive=False) + [{"host": "n1", "pid": 50, "status": "sleeping", "role": "launcher",
                                                 "ppid": 1, "parent_alive": False}]
    gpu = [{"host": "n1", "gpu": r, "pid": 100 + r, "used_memory": 40 * GIB} for r in range(2)]
    found = {f.kind: f for f in host.host_findings(bundle(processes=p, gpu_processes=gpu).table)}
    orphan = found[ORPHANED_PROCESS]
    assert orphan.ranks == (0, 1) and "outlived their parents and still hold 80.0 GiB" in orphan.summary
    assert orphan.details["pids"] == [100, 101]  # the launcher itself is not an orphaned worker


def test_healthy_processes_give_no_cause() -> None:
    rows = [row for r in range(2) for row in samples(100 + r, 100 + r, "SSS", wchan="ep_poll")]
    findings = host.host_findings(bundle(processes=procs(2, ppid=40, parent_alive=True), thread_samples=rows).table)
    assert [f.kind for f in findings] == [host.THREAD_STATES]
    assert findings[0].role == "symptom" and "blocked in epoll" in findings[0].summary


def test_a_main_thread_gone_mid_capture_is_an_exited_rank() -> None:
    rows = samples(100, 100, "SS", wchan="futex_wait_queue") + samples(101, 101, "S", wchan="futex_wait_queue")
    rows.append({"host": "n1", "pid": 101, "tid": 101, "sample": 1, "t": 101.0, "state": "gone"})
    assert host.classify([r for r in rows if r["pid"] == 101]).kind == host.GONE
    found = {f.kind: f for f in host.host_findings(bundle(processes=procs(2), thread_samples=rows).table)}
    assert found[RANK_EXITED].ranks == (1,) and found[RANK_EXITED].waiting_ranks == (0,)
    assert "rank 1 (pid 101): process gone" in found[RANK_EXITED].evidence


# --- a stopped, exited or D-state rank outranks every symptom ---------------------------------------------------
CPU_SHM_ALL_REDUCE = [("_CPUSHMDistributed.all_reduce", "vllm/distributed/device_communicators/cpu_communicator.py",
                       False),
                      ("GroupCoordinator.all_reduce", "vllm/distributed/parallel_state.py", False),
                      ("forward", "vllm/model_executor/models/llama.py", False),
                      ("worker_busy_loop", "vllm/v1/executor/multiproc_executor.py", False)]
SIGNAL_STOP = [("wait", "threading.py", False), ("worker_busy_loop", "vllm/v1/executor/multiproc_executor.py", False)]
SHM_TIMEOUT = {"host": "n1", "file": "serve.log", "line_no": 80, "pid": 90, "rank": None,
               "signature": "vllm_shm_broadcast_timeout", "severity": "warning",
               "text": "(EngineCore pid=90) INFO 12-04 16:40:01 [shm_broadcast.py:749] No available shared memory "
                       "broadcast block found in 60 seconds. This typically happens when some processes are hanging "
                       "or doing some time-consuming work (e.g. compilation, weight/kv cache quantization)."}


def vllm_tp2(rank1_states: str, wchan: str = "do_signal_stop", rank1_status: str = "stopped") -> Bundle:
    """A vLLM TP=2 engine on CPU: rank 0 spins in the shared-memory all-reduce, rank 1 in `rank1_states`."""
    p = [{"host": "n1", "pid": 100 + r, "ppid": 90, "title": f"VLLM::Worker_TP{r}", "status": s, "role": "worker"}
         for r, s in ((0, "running"), (1, rank1_status))]
    p.append({"host": "n1", "pid": 90, "ppid": 80, "title": "VLLM::EngineCore", "status": "sleeping", "role": "engine"})
    rows = samples(100, 100, "RRR", cpu_per_sample=0.5) + samples(101, 101, rank1_states, wchan=wchan)
    frames = stack(100, CPU_SHM_ALL_REDUCE) + stack(101, SIGNAL_STOP)
    return bundle(processes=p, thread_samples=rows, py_frames=frames, log_events=[SHM_TIMEOUT])


def test_a_stopped_rank_is_named_with_pid_and_title_and_its_peer_waits_for_it() -> None:
    found = {f.kind: f for f in host.host_findings(vllm_tp2("TTT").table)}
    stopped = found[RANK_STOPPED]
    assert stopped.ranks == (1,) and stopped.waiting_ranks == (0,)
    assert stopped.summary.startswith("rank 1, pid 101, VLLM::Worker_TP1, is stopped: SIGSTOP or a debugger; rank 0 "
                                      "waits for it in ")
    assert "GroupCoordinator.all_reduce" in stopped.summary and stopped.summary.endswith("(spinning)")
    assert stopped.details["confidence"] == "high"


def test_a_traced_rank_is_stopped_by_a_debugger() -> None:
    (stopped,) = [f for f in host.host_findings(vllm_tp2("ttt", wchan="ptrace_stop").table) if f.kind == RANK_STOPPED]
    assert "rank 1, pid 101, VLLM::Worker_TP1, is stopped by a debugger (traced)" in stopped.summary


def test_a_rank_stopped_in_one_sample_only_is_not_stopped() -> None:
    assert RANK_STOPPED not in {f.kind for f in host.host_findings(vllm_tp2("TTS", wchan="futex_wait_queue").table)}


def test_every_rank_stopped_is_a_suspended_job_not_a_culprit_with_confidence() -> None:
    rows = samples(100, 100, "TTT", wchan="do_signal_stop") + samples(101, 101, "TTT", wchan="do_signal_stop")
    (stopped,) = [f for f in host.host_findings(bundle(processes=procs(2), thread_samples=rows).table)
                  if f.kind == RANK_STOPPED]
    assert stopped.ranks == (0, 1) and stopped.waiting_ranks == ()
    assert "the whole job is suspended, not hung" in stopped.summary and stopped.details["confidence"] == "low"


def test_the_verdict_names_the_stopped_rank_over_stack_divergence_and_the_shm_broadcast_timeout() -> None:
    d = diagnose(vllm_tp2("TTT"))
    assert d.verdict.kind == RANK_STOPPED and d.verdict.culprit_ranks == (1,)
    assert d.verdict.summary.startswith("rank 1, pid 101, VLLM::Worker_TP1, is stopped: SIGSTOP or a debugger")
    assert {"stack_divergence", "log_signature"} <= {f.kind for f in d.findings}


def test_the_verdict_names_a_rank_in_d_state_over_stack_divergence_and_the_shm_broadcast_timeout() -> None:
    d = diagnose(vllm_tp2("DDD", wchan="nvidia_wait_for_gpu", rank1_status="disk-sleep"))
    assert d.verdict.kind == host.STUCK_IN_KERNEL and d.verdict.culprit_ranks == (1,)
    assert "nvidia_wait_for_gpu" in d.verdict.summary


def test_the_verdict_names_a_killed_rank_over_stack_divergence_and_the_shm_broadcast_timeout() -> None:
    d = diagnose(vllm_tp2("ZZZ", wchan="0", rank1_status="zombie"))
    assert d.verdict.kind == RANK_EXITED and d.verdict.culprit_ranks == (1,)


def test_with_traces_the_stopped_rank_stays_the_verdict_inside_or_before_the_collective() -> None:
    """Traced by `hangdoc run`: rank 1 stopped before its all_reduce (a lagging rank, the wait-for root) or inside
    it (both ranks in the same call, no wait edge). Either way the stopped process is the cause."""
    for inside in (False, True):
        b = vllm_tp2("TTT")
        rank1 = (history(1, "tp:0", 5, ranks=[0, 1], last_state="started", pid=101) if inside
                 else history(1, "tp:0", 4, ranks=[0, 1], pid=101))
        b.add("collectives", table_from_rows(
            "collectives", history(0, "tp:0", 5, ranks=[0, 1], last_state="started", pid=100) + rank1))
        d = diagnose(b)
        assert (d.verdict.kind, d.verdict.culprit_ranks, d.verdict.confidence) == (RANK_STOPPED, (1,), "high")
