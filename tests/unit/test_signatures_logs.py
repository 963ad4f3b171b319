"""Log findings on hand-built log_events: KV leak, OOM that strands peers, start-up race, generic signatures."""
from __future__ import annotations

from typing import Any

from hangdoc.analysis import logs
from hangdoc.analysis.model import KV_TRANSFER_STRANDED, LOG_SIGNATURE, OOM, ORPHANED_PROCESS, RANK_EXITED, Finding
from hangdoc.bundle import Bundle
from hangdoc.schema import table_from_rows


def bundle(events: list[dict[str, Any]], **tables: list[dict[str, Any]]) -> Bundle:
    b = Bundle()
    rows = [{"file": "x.log", "line_no": i + 1, "severity": "error", **e} for i, e in enumerate(events)]
    b.add("log_events", table_from_rows("log_events", rows))
    for name, t in tables.items():
        b.add(name, table_from_rows(name, t))
    return b


def ev(signature: str, text: str, rank: int | None = None, t: float | None = None, pid: int | None = None) -> dict:
    return {"signature": signature, "text": text, "rank": rank, "t": t, "pid": pid}


def expired(rid: str, seconds: int = 480, consumers: int = 0) -> dict:
    return ev("nixl_expired_kv_blocks", f"WARNING 05-24 16:12:00 [nixl_connector.py:1048] Releasing expired KV blocks "
              f"for request {rid} which were retrieved by {consumers} decode worker(s) within {seconds} seconds.")


def test_kv_leak_counts_distinct_stranded_requests_lease_and_siblings() -> None:
    events = [expired(f"{i}_cmpl-{p}-0") for p in ("aa", "bb") for i in range(7)]
    events.append(expired("0_cmpl-aa-0"))  # the same request logged twice counts once
    events.append(ev("nixl_unrecognized_request", "Potentially invalid KV blocks for unrecognized request cmpl-cc-0 "
                     "were retrieved by a decode worker. They may have expired."))
    events += [ev("vllm_kv_cache_usage", f"Engine 000: Running: 0 reqs, GPU KV cache usage: {u}%, Prefix cache hit "
                  f"rate: 0.0%") for u in (12.5, 99.7, 99.1)]
    events.append(ev("vllm_shm_broadcast_timeout", "No available shared memory broadcast block found in 60 seconds."))
    found = logs.log_findings(bundle(events).table)
    kv = found[0]
    assert kv.kind == KV_TRANSFER_STRANDED and kv.role == "cause" and kv.count == 15
    assert kv.details["expired_requests"] == 14 and kv.details["unrecognized_requests"] == 1
    assert kv.details["lease_seconds"] == 480 and kv.details["sibling_parents"] == 2
    assert kv.summary.startswith("KV transfer leak, not a collective hang: 14 prefill requests")
    assert "after 480 s" in kv.summary and "peaked at 99.7 %" in kv.summary
    shm = [f for f in found if f.kind == LOG_SIGNATURE]
    assert [f.role for f in shm] == ["symptom"]


def test_oom_rank_is_named_and_peers_that_time_out_after_it_wait_for_it() -> None:
    oom = ev("cuda_oom", "[TRT-LLM] [RANK 0] [E] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 7.50 "
             "GiB. GPU 0 has a total capacity of 139.81 GiB", rank=0, t=100.0)
    waits = [ev("c10d_watchdog_timeout", f"[rank{r}]:[E418 14:07:12.4 ProcessGroupNCCL.cpp:632] [Rank {r}] Watchdog "
                f"caught collective operation timeout: WorkNCCL(SeqNum=212, OpType=ALLREDUCE, NumelIn=8, NumelOut=8, "
                f"Timeout(ms)=300000) ran for 300010 milliseconds before timing out.", rank=r, t=400.0)
             for r in (1, 2, 3)]
    found = {f.kind: f for f in logs.log_findings(bundle([oom] + waits).table)}
    f = found[OOM]
    assert f.ranks == (0,) and f.waiting_ranks == (1, 2, 3) and f.seq == 212 and f.expected_op == "all_reduce"
    assert f.summary == ("rank 0 ran out of GPU memory (OutOfMemoryError: CUDA out of memory. Tried to allocate 7.50 "
                         "GiB) and went on without it; ranks 1-3 wait in all_reduce (c10d SeqNum 212) that it never "
                         "issued")
    c10d = found[LOG_SIGNATURE]
    assert c10d.role == "symptom" and c10d.seq == 212 and c10d.op == "all_reduce" and c10d.ranks == (1, 2, 3)


def test_timeouts_before_the_oom_do_not_make_peers_wait_for_it() -> None:
    oom = ev("cuda_oom", "torch.OutOfMemoryError: CUDA out of memory.", rank=0, t=500.0)
    early = ev("trtllm_hang_detected", "[TRT-LLM] [RANK 1] [E] Hang detected after 300 seconds.", rank=1, t=100.0)
    f = next(f for f in logs.log_findings(bundle([oom, early]).table) if f.kind == OOM)
    assert f.waiting_ranks == () and "rank 1 logged no out-of-memory error" in f.summary


def test_parent_exit_with_startup_failures_is_a_startup_race() -> None:
    events = [
        ev("vllm_worker_init_failed", "(EngineCore_DP1 pid=9) ERROR [core.py:708] Exception: WorkerProc initialization "
           "failed due to an exception in a background process. See stack trace for root cause.", pid=9),
        ev("vllm_parent_exited", "(Worker_DP0_TP0 pid=11) INFO 03-06 12:01:22 [multiproc_executor.py:793] Parent "
           "process exited, terminating worker queues", rank=0, pid=11),
        ev("broken_pipe", "(Worker_DP0_TP0 pid=11) ERROR [multiproc_executor.py:860] BrokenPipeError: [Errno 32] Broken "
           "pipe", rank=0, pid=11),
        ev("servers_failed_to_start", "Exception: Servers failed to start"),
    ]
    procs = [{"pid": 11, "title": "Worker_DP0_TP0", "global_rank": 0}, {"pid": 9, "title": "EngineCore_DP1"}]
    found = logs.log_findings(bundle(events, processes=procs).table)
    race = found[0]
    assert race.kind == ORPHANED_PROCESS and race.ranks == (0,) and race.details["phase"] == "startup"
    assert race.summary.startswith("start-up race: the parent process exited before its workers finished starting; "
                                   "Worker_DP0_TP0 (rank 0) logged \"Parent process exited, terminating worker queues\" "
                                   "and then hit BrokenPipeError; start-up failures: EngineCore_DP1: WorkerProc "
                                   "initialization failed")
    assert all(f.role == "symptom" for f in found[1:])
    plain = logs.log_findings(bundle(events[1:2], processes=procs).table)
    assert plain[0].details["phase"] is None and "lost its parent process" in plain[0].summary


def test_worker_death_lines_become_rank_exited_unless_already_found() -> None:
    died = ev("vllm_worker_died", "(EngineCore_DP0 pid=9) ERROR [multiproc_executor.py:231] Worker proc VllmWorker-2 "
              "died unexpectedly, shutting down executor.", rank=2, pid=9)
    (f,) = logs.log_findings(bundle([died]).table)
    assert f.kind == RANK_EXITED and f.ranks == (2,) and "Worker proc VllmWorker-2 died unexpectedly" in f.summary
    earlier = [Finding(kind=RANK_EXITED, ranks=(2,), summary="rank 2 exited while ranks 0-1 still wait")]
    assert logs.log_findings(bundle([died]).table, earlier) == []


def test_lone_signature_without_cause_stays_a_cause_candidate() -> None:
    (f,) = logs.log_findings(bundle([ev("sglang_watchdog_timeout", "[2025-04-03 20:06:34 DP1 TP0] Watchdog timeout "
                                        "(self.watchdog_timeout=300)", rank=4)]).table)
    assert f.kind == LOG_SIGNATURE and f.role == "cause" and f.ranks == (4,)
    assert f.summary.startswith("rank 4: sglang watchdog timeout x1, after 300 s: An SGLang process")


def c10d(rank: int, seq: int, op: str, pg: str = "") -> dict:
    return ev("c10d_watchdog_timeout", f"[rank{rank}]:[E418 14:07:12.4 ProcessGroupNCCL.cpp:632] {pg}[Rank {rank}] "
              f"Watchdog caught collective operation timeout: WorkNCCL(SeqNum={seq}, OpType={op}, NumelIn=8, "
              f"NumelOut=8, Timeout(ms)=600000) ran for 600010 milliseconds before timing out.", rank=rank)


def test_watchdog_timeouts_of_different_ops_at_one_seqnum_name_the_minority() -> None:
    events = [c10d(0, 412, "ALLGATHER")] + [c10d(r, 412, "ALLREDUCE") for r in (1, 2, 3)]
    found = logs.log_findings(bundle(events).table)
    mismatch = next(f for f in found if f.kind == "collective_mismatch")
    assert mismatch.ranks == (0,) and mismatch.waiting_ranks == (1, 2, 3) and mismatch.seq == 412
    assert (mismatch.op, mismatch.expected_op) == ("all_gather", "all_reduce") and mismatch.role == "cause"
    assert "assuming one communicator" in mismatch.summary and mismatch.details["confidence"] == "low"
    # different process groups at the same SeqNum are not compared
    pgs = [c10d(0, 5, "ALLGATHER", "[PG ID 1 PG GUID 1(TP) Rank 0] "), c10d(1, 5, "ALLREDUCE", "[PG ID 2 PG GUID 2 Rank 1] ")]
    assert not [f for f in logs.log_findings(bundle(pgs).table) if f.kind == "collective_mismatch"]


def test_a_mismatch_caused_by_an_oom_skip_is_its_symptom_and_silent_ranks_are_named() -> None:
    oom = ev("cuda_oom", "torch.OutOfMemoryError: CUDA out of memory.", rank=0, t=1.0)
    events = [oom, c10d(0, 9, "ALLGATHER")] + [c10d(r, 9, "ALLREDUCE") for r in (1, 2)]
    found = {f.kind: f for f in logs.log_findings(bundle(events).table)}
    assert found["collective_mismatch"].role == "symptom" and found[OOM].waiting_ranks == (1, 2)
    quiet = logs.log_findings(bundle([c10d(r, 9, "ALLREDUCE") for r in (1, 2, 3)],
                                     processes=[{"pid": 10 + r, "global_rank": r} for r in range(4)]).table)
    assert "No such line from rank 0." in quiet[0].summary and quiet[0].details["silent_ranks"] == [0]
