"""Log evidence on hand-built rows: who waits, who failed first, who stayed silent, and when nobody can be named.

The rules: a rank that logged a timeout (or is in a collective) is a waiter and never the culprit; the cause is
a member that failed (OOM, exception, exit, signal) before it waited, logged a lower SeqNum, or logged nothing
where its peers wait; a failure after the rank began waiting, or after every waiter timed out, is a symptom;
when the evidence cannot decide, no rank is named and the finding says what would decide.
"""
from __future__ import annotations

from typing import Any

from hangdoc.analysis import logs
from hangdoc.analysis.model import (
    COLLECTIVE_MISMATCH, KV_TRANSFER_STRANDED, LAGGING_RANK, LOG_SIGNATURE, MISSING_RANK, OOM, ORPHANED_PROCESS,
    RANK_EXITED, Finding,
)
from hangdoc.analysis.pipeline import diagnose
from hangdoc.bundle import Bundle
from hangdoc.schema import table_from_rows


def bundle(events: list[dict[str, Any]], **tables: list[dict[str, Any]]) -> Bundle:
    b = Bundle()
    rows = [{"file": "x.log", "line_no": i + 1, "severity": "error", **e} for i, e in enumerate(events)]
    b.add("log_events", table_from_rows("log_events", rows))
    for name, t in tables.items():
        b.add(name, table_from_rows(name, t))
    return b


def ev(signature: str, text: str, rank: int | None = None, t: float | None = None, pid: int | None = None,
       event: str | None = None) -> dict:
    return {"signature": signature, "text": text, "rank": rank, "t": t, "pid": pid, "event": event}


def timeout(rank: int, t: float | None = None, seq: int = 212) -> dict:
    return ev("c10d_watchdog_timeout", f"[rank{rank}]:[E418 14:07:12.4 ProcessGroupNCCL.cpp:632] [Rank {rank}] Watchdog "
              f"caught collective operation timeout: WorkNCCL(SeqNum={seq}, OpType=ALLREDUCE, NumelIn=8, NumelOut=8, "
              f"Timeout(ms)=300000) ran for 300010 milliseconds before timing out.", rank=rank, t=t)


def seen(rank: int) -> dict:
    return ev("rank_seen", f"[rank{rank}]: hello", rank=rank, event="seen")


def call(rank: int, seq: int, op: str = "all_reduce", state: str = "timed_out", group: str = "0",
         size: int | None = 4, numel: int = 8) -> dict:
    """A collectives row as the log importer writes one for a c10d watchdog line."""
    return {"rank": rank, "group": group, "group_size": size, "seq": seq, "op": op, "in_numel": numel,
            "out_numel": numel, "state": state, "source": "c10d-watchdog"}


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


def test_the_rank_that_failed_first_is_the_cause_and_the_ranks_that_timed_out_wait_for_it() -> None:
    oom = ev("cuda_oom", "[TRT-LLM] [RANK 0] [E] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 7.50 "
             "GiB. GPU 0 has a total capacity of 139.81 GiB", rank=0, t=50.0)
    events = [oom] + [timeout(r, t=400.0) for r in (1, 2, 3)]
    found = {f.kind: f for f in logs.log_findings(bundle(events, collectives=[call(r, 212) for r in (1, 2, 3)]).table)}
    f = found[OOM]
    assert f.ranks == (0,) and f.waiting_ranks == (1, 2, 3) and f.role == "cause"
    assert f.summary.startswith("rank 0 ran out of GPU memory at 00:00:50 (OutOfMemoryError: CUDA out of memory. "
                                "Tried to allocate 7.50 GiB) and went on; ranks 1-3 then timed out in all_reduce "
                                "SeqNum 212, a call it never issued")
    waits = found[LOG_SIGNATURE]
    assert waits.role == "symptom" and waits.ranks == () and waits.waiting_ranks == (1, 2, 3)


def test_a_waiters_own_failure_after_it_began_waiting_is_a_symptom() -> None:
    # rank 1 waited from t=100 (400 - 300 s); its SIGABRT at 401 is the watchdog tearing it down
    events = [timeout(0, t=400.0), timeout(1, t=400.0),
              ev("fatal_signal", "traceback : Signal 6 (SIGABRT) received by PID 7", rank=1, t=401.0)]
    found = logs.log_findings(bundle(events).table)
    exits = [f for f in found if f.kind == RANK_EXITED]
    assert exits and exits[0].role == "symptom" and "after it had started waiting" in exits[0].summary
    assert not [f for f in found if f.role == "cause" and f.ranks]


def test_a_death_after_every_waiter_timed_out_is_teardown_not_the_cause() -> None:
    events = [timeout(1, t=400.0), timeout(2, t=400.0), seen(0),
              ev("torchrun-failure", "torchrun: rank 0 (local_rank 0, pid 5) on n1 failed at 1970-01-01_00:07:00: "
                 "exit code 1", rank=0, t=420.0, event="exited")]
    found = logs.log_findings(bundle(events).table)
    (f,) = [f for f in found if f.kind == RANK_EXITED]
    assert f.role == "symptom" and "torn down" in f.summary


def test_of_two_failures_the_earlier_is_the_cause() -> None:
    events = [ev("cuda_error", "RuntimeError: CUDA error: an illegal memory access was encountered", rank=3, t=10.0),
              ev("cuda_oom", "torch.OutOfMemoryError: CUDA out of memory.", rank=1, t=20.0),
              timeout(0, t=400.0), timeout(2, t=400.0)]
    found = logs.log_findings(bundle(events).table)
    causes = [f for f in found if f.role == "cause"]
    assert [(f.kind, f.ranks) for f in causes] == [(RANK_EXITED, (3,))]
    assert next(f for f in found if f.kind == OOM).role == "symptom"


def test_silent_member_of_a_known_group_is_named_as_never_entering_the_call() -> None:
    rows = [call(r, 1132079) for r in (1, 2, 3)]
    d = diagnose(bundle([timeout(r, seq=1132079) for r in (1, 2, 3)] + [seen(r) for r in range(4)],
                        collectives=rows))
    assert d.verdict.kind == MISSING_RANK and d.verdict.culprit_ranks == (0,)
    assert ("ranks 1-3 timed out in all_reduce numel=8 SeqNum 1132079; rank 0 of the 4 logged nothing about it: it "
            "never entered that call") in d.verdict.summary


def test_silent_ranks_as_many_as_the_waiters_and_absent_from_the_input_are_not_named() -> None:
    rows = [call(r, 77, size=4) for r in (0, 1)]
    d = diagnose(bundle([timeout(r, seq=77) for r in (0, 1)] + [seen(0), seen(1)], collectives=rows))
    assert d.verdict.culprit_ranks == () and d.verdict.kind == LOG_SIGNATURE
    assert "ranks 2, 3: no log line at all in the input" in d.verdict.summary


def test_a_member_at_a_lower_seqnum_is_behind_its_peers() -> None:
    rows = [call(r, 12) for r in (0, 1, 3)] + [call(2, 10)]
    d = diagnose(bundle([timeout(r, seq=12) for r in (0, 1, 3)] + [timeout(2, seq=10)], collectives=rows))
    assert d.verdict.kind == LAGGING_RANK and d.verdict.culprit_ranks == (2,)


def test_different_ops_at_one_seqnum_are_aligned_like_any_trace() -> None:
    rows = [call(0, 412, op="all_gather")] + [call(r, 412) for r in (1, 2, 3)]
    d = diagnose(bundle([timeout(r, seq=412) for r in range(4)], collectives=rows))
    assert d.verdict.kind == COLLECTIVE_MISMATCH and d.verdict.culprit_ranks == (0,)


def test_waiters_with_nobody_to_blame_name_no_rank_and_say_what_would_decide() -> None:
    (f,) = logs.log_findings(bundle([ev("sglang_watchdog_timeout", "[2025-04-03 20:06:34 DP1 TP0] Watchdog timeout "
                                        "(self.watchdog_timeout=300)", rank=4)]).table)
    assert f.kind == LOG_SIGNATURE and f.role == "cause" and f.ranks == () and f.waiting_ranks == (4,)
    assert "TORCH_NCCL_TRACE_BUFFER_SIZE" in f.summary and "TORCH_NCCL_DESYNC_DEBUG=1" in f.summary
    d = diagnose(bundle([timeout(r) for r in (0, 1)]))
    assert d.verdict.culprit_ranks == ()


def test_ranks_whose_logs_show_no_wait_are_named_when_others_report_one() -> None:
    events = [ev("trtllm_hang_detected", f"[TRT-LLM] [RANK {r}] [E] Hang detected after 300 seconds.", rank=r, t=400.0)
              for r in (1, 2, 3)] + [seen(0)]
    (f, *_) = logs.log_findings(bundle(events).table)
    assert f.kind == LAGGING_RANK and f.ranks == (0,) and f.waiting_ranks == (1, 2, 3)
    assert "rank 0 of the 4 did not" in f.summary


def test_parent_exit_after_a_worker_died_is_a_symptom_of_that_death() -> None:
    events = [ev("cuda_error", "RuntimeError: CUDA error: an illegal memory access was encountered", rank=1, t=5.0),
              ev("vllm_parent_exited", "(Worker_TP0 pid=11) INFO 03-06 12:01:22 [multiproc_executor.py:793] Parent "
                 "process exited, terminating worker queues", rank=0, pid=11, t=9.0)]
    found = logs.log_findings(bundle(events).table)
    assert next(f for f in found if f.kind == RANK_EXITED).role == "cause"
    assert next(f for f in found if f.kind == ORPHANED_PROCESS).role == "symptom"


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


def test_a_catalogued_line_names_no_rank_by_itself() -> None:
    found = logs.log_findings(bundle([ev("nccl_warn", "node-15:3408431:3408790 [2] NCCL WARN Call to ibv_reg_mr failed",
                                         rank=2)]).table)
    (f,) = found
    assert f.kind == LOG_SIGNATURE and f.ranks == () and f.details["printed_by"] == [2]


def test_missing_fields_in_log_rows_do_not_break_the_pass() -> None:
    events = [timeout(1, t=400.0), ev("cuda_oom", "torch.OutOfMemoryError: CUDA out of memory.", rank=0, t=5.0), seen(0)]
    calls = [call(1, 57), call(2, 57)]
    for key in ("signature", "text", "rank", "t", "pid", "event", "file", "line_no", "severity", "context"):
        d = diagnose(bundle([{**e, key: None} for e in events], collectives=calls))
        assert not [n for n in d.notes if "failed" in n], key
    for key in calls[0]:
        d = diagnose(bundle(events, collectives=[{**c, key: None} for c in calls]))
        assert not [n for n in d.notes if "failed" in n], key
