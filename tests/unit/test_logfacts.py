"""Log formats -> facts about ranks: each format from a line in the layout its project prints.

A collective position becomes a collectives row (rank, group, seq, op, state, source); a rank's own fate a
log_events row with its event. Nothing here judges who is at fault: see test_signatures_logs.py.
"""
from __future__ import annotations

from pathlib import Path

from hangdoc.importers import logfile


def read(tmp_path: Path, text: str, name: str = "job.log") -> tuple[list[dict], list[dict], list[str]]:
    path = tmp_path / name
    path.write_text(text)
    assert logfile.matches(path)
    b = logfile.read([path])
    calls = sorted(b.table("collectives").to_pylist(), key=lambda c: (c["group"], c["seq"], c["rank"]))
    events = [e for e in b.table("log_events").to_pylist() if e["event"] != "seen"]
    return calls, events, list(b.notes)


def pos(calls: list[dict]) -> list[tuple]:
    return [(c["rank"], c["group"], c["seq"], c["op"], c["state"]) for c in calls]


def test_watchdog_and_pg_status_lines_of_each_pytorch_era(tmp_path: Path) -> None:
    text = "\n".join([
        # 2.4+: the prefix names the process group; the status line gives completed and enqueued work
        "[rank1]:[E606 09:09:08.1 ProcessGroupNCCL.cpp:632] [PG ID 0 PG GUID 0(default_pg) Rank 1] Watchdog caught "
        "collective operation timeout: WorkNCCL(SeqNum=57, OpType=ALLREDUCE, NumelIn=8, NumelOut=8, "
        "Timeout(ms)=600000) ran for 600010 milliseconds before timing out.",
        "[rank1]:[E606 09:09:08.2 ProcessGroupNCCL.cpp:2395] [PG ID 0 PG GUID 0(default_pg) Rank 1]  failure detected "
        "by watchdog at work sequence id: 57 PG status: last enqueued work: 58, last completed work: 56",
        # 2.2-2.3: the watchdog line names no group; the status line after it does
        "[rank2]:[E321 02:07:08.4 ProcessGroupNCCL.cpp:607] [Rank 2] Watchdog caught collective operation timeout: "
        "WorkNCCL(SeqNum=1580, OpType=BROADCAST, NumelIn=4, NumelOut=4, Timeout(ms)=600000) ran for 600060 "
        "milliseconds before timing out.",
        "[rank2]:[E321 02:07:08.5 ProcessGroupNCCL.cpp:1664] [PG 1 Rank 2] Exception (either an error or timeout) "
        "detected by watchdog at work: 1580, last enqueued NCCL work: 1580, last completed NCCL work: 1579.",
        # 2.0-2.1: no group anywhere: aligned with nothing else
        "[E ProcessGroupNCCL.cpp:458] [Rank 3] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=96120, "
        "OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 25624887 milliseconds before timing out.",
    ])
    calls, events, _ = read(tmp_path, text)
    by = {(c["rank"], c["seq"]): c for c in calls}
    assert by[(1, 57)]["state"] == "timed_out" and by[(1, 57)]["op"] == "all_reduce" and by[(1, 57)]["group"] == "0"
    assert by[(1, 57)]["in_numel"] == 8 and by[(1, 57)]["source"] == "c10d-watchdog"
    assert by[(1, 56)]["state"] == "completed" and by[(1, 58)]["state"] == "issued"
    assert by[(2, 1580)]["group"] == "1" and by[(2, 1580)]["op"] == "broadcast"  # named by the status line
    assert by[(2, 1579)]["state"] == "completed"
    assert by[(3, 96120)]["group"] == "unnamed"
    assert by[(1, 57)]["group_size"] == 4  # the default group: every rank the input shows (0-3)
    assert {e["event"] for e in events} == {"timeout"}


def test_a_coalesced_works_numel_of_two_to_the_64_is_no_count(tmp_path: Path) -> None:
    calls, _, _ = read(tmp_path, "[rank1]:[E ProcessGroupNCCL.cpp:545] [Rank 1] Watchdog caught collective operation "
                       "timeout: WorkNCCL(SeqNum=2, OpType=COALESCED, NumelIn=18446744073709551615, NumelOut="
                       "18446744073709551615, Timeout(ms)=10000) ran for 10000 milliseconds before timing out.\n")
    assert [(c["rank"], c["seq"], c["op"], c["in_numel"]) for c in calls] == [(1, 2, "coalesced", None)]


def test_dump_signal_points_at_the_rank_whose_watchdog_fired(tmp_path: Path) -> None:
    text = "\n".join([
        "[rank1]:[E418 01:32:50.9 ProcessGroupNCCL.cpp:1890] [PG ID 0 PG GUID 0(default_pg) Rank 1] Received a dump "
        "signal due to a collective timeout from this local rank and we will try our best to dump the debug info. "
        "Last enqueued NCCL work: 233660, last completed NCCL work: 233659.",
        "[rank0]:[E418 01:32:50.9 ProcessGroupNCCL.cpp:1890] [PG ID 0 PG GUID 0(default_pg) Rank 0] Received a dump "
        "signal due to a collective timeout from  rank 1 and we will try our best to dump the debug info. Last "
        "enqueued NCCL work: 233659, last completed NCCL work: 233659.",
    ])
    calls, events, _ = read(tmp_path, text)
    assert [(e["rank"], e["event"]) for e in events] == [(1, "timeout"), (1, "timeout")]  # both about rank 1
    assert pos(calls) == [(0, "0", 233659, None, "completed"), (1, "0", 233659, None, "completed"),
                          (1, "0", 233660, None, "started")]


def test_desync_report_gives_every_listed_ranks_position(tmp_path: Path) -> None:
    text = "\n".join([
        "[rank0]:[E515 18:36:47.3 ProcessGroupNCCL.cpp:1937] Rank 0",
        "         - [0] Timeout at collective: ALLREDUCE, #315",
        "         - To our best knowledge, the lagging/dead/mismatched ranks that caused the desync are:",
        "             [7] finished collective #182, but didn't join collective #183 (count from 1)",
        "         - Snapshot of ranks' latest states:",
        "           #315 started ranks:",
        "             [0, 1, 2] started ALLREDUCE",
    ])
    calls, _, _ = read(tmp_path, text)
    assert pos(calls) == [(7, "unnamed", 182, None, "completed"), (0, "unnamed", 315, "all_reduce", "timed_out"),
                          (1, "unnamed", 315, "all_reduce", "started"), (2, "unnamed", 315, "all_reduce", "started")]
    assert {c["source"] for c in calls} == {"desync-debug"}


def test_detail_fingerprints_of_both_sides(tmp_path: Path) -> None:
    text = ("RuntimeError: Detected mismatch between collectives on ranks. Rank 0 is running collective: "
            "CollectiveFingerPrint(SequenceNumber=3104, OpType=ALLREDUCE, TensorShape=[51123456], TensorDtypes=Float, "
            "TensorDeviceTypes=TensorOptions(dtype=float (default), device=cuda)), but Rank 1 is running collective: "
            "CollectiveFingerPrint(SequenceNumber=3104, OpType=ALLREDUCE, TensorShape=[195812480], TensorDtypes=Float, "
            "TensorDeviceTypes=TensorOptions(dtype=float (default), device=cuda)).")
    calls, _, _ = read(tmp_path, text)
    assert [(c["rank"], c["seq"], c["op"], c["in_shapes"], c["in_numel"]) for c in calls] == [
        (0, 3104, "all_reduce", [[51123456]], 51123456), (1, 3104, "all_reduce", [[195812480]], 195812480)]


def test_flight_recorder_analyzer_text_names_who_never_joined(tmp_path: Path) -> None:
    text = "\n".join(["Not all ranks joining collective 5 at entry 4", "group info: 0:default_pg",
                      "collective: nccl:all_reduce", "missing ranks: {1}", "input sizes: [[3, 4]]",
                      "output sizes: [[3, 4]]", "expected ranks: 2", "collective state: scheduled", ""])
    calls, _, _ = read(tmp_path, text, "frtrace.txt")
    assert pos(calls) == [(0, "0", 5, "all_reduce", "started")]
    assert calls[0]["group_ranks"] == [0, 1] and calls[0]["source"] == "fr-trace-text"


def test_nccl_ras_counts_split_the_communicator(tmp_path: Path) -> None:
    text = "\n".join([
        "Group     Comms     Nodes     Ranks     Ranks     Ranks    Status  Errors",
        "    #  in group  per comm  per node  per comm  in group",
        "    0         1         1         4         4         4   RUNNING  MISMATCH",
        "Warnings", "========", "",
        "#0-0 (fa93daea854b060b) MISMATCH",
        "  Communicator ranks have different AllGather operation counts",
        "  3 ranks have launched up to operation 641",
        "  1 rank has launched up to operation 640",
        "  Rank 2 -- GPU 2 managed by process 323032 on node 10.1.1.1",
    ])
    calls, _, _ = read(tmp_path, text, "ras.txt")
    calls.sort(key=lambda c: c["rank"])
    assert [(c["rank"], c["seq"], c["op"]) for c in calls] == [(0, 641, "all_gather"), (1, 641, "all_gather"),
                                                               (2, 640, "all_gather"), (3, 641, "all_gather")]


def test_nccl_info_collectives_use_the_init_line_for_the_communicator(tmp_path: Path) -> None:
    text = "\n".join([
        "[rank2]:srv01:2016601:2016601 [0] NCCL INFO comm 0x5558715599c0 rank 2 nranks 4 cudaDev 0 nvmlDev 0 busId "
        "1000 commId 0x7ab5 - Init COMPLETE",
        "[rank2]:srv01:2016601:2016601 [0] NCCL INFO AllReduce: opCount e sendbuff 0x7fc0626a1c00 recvbuff "
        "0x7fc0626a1c00 count 1 datatype 7 op 0 root 0 comm 0x5558715599c0 [nranks=4] stream 0x555870f12040",
    ])
    calls, _, _ = read(tmp_path, text)
    (c,) = calls
    assert (c["rank"], c["group"], c["seq"], c["op"], c["dtype"], c["reduce_op"], c["in_numel"]) == (
        2, "nccl:0x7ab5", 15, "all_reduce", "float32", "SUM", 1)


def test_per_rank_tracebacks_and_torchrun_failure_records(tmp_path: Path) -> None:
    text = "\n".join([
        "[rank11]: Traceback (most recent call last):",
        '[rank11]:   File "train.py", line 216, in forward',
        "[rank11]:     attn_output = attention(",
        "[rank11]: ValueError: shapes do not match",
        "[rank4]: Traceback (most recent call last):",
        '[rank4]:   File "train.py", line 9, in step',
        "[rank4]: torch.distributed.DistBackendError: [4] is setting up NCCL communicator and retrieving ncclUniqueId "
        "from [0] via c10d key-value store by key '0', but store->get('0') got error: Socket Timeout",
        "Root Cause (first observed failure):",
        "[0]:",
        "  time      : 2024-03-05_12:00:00",
        "  host      : node1",
        "  rank      : 3 (local_rank: 3)",
        "  exitcode  : -6 (pid: 12345)",
        "  error_file: <N/A>",
        "  traceback : Signal 6 (SIGABRT) received by PID 12345",
    ])
    _, events, _ = read(tmp_path, text)
    got = [(e["rank"], e["event"], e["signature"]) for e in events]
    assert (11, "raised", "traceback") in got and (4, "timeout", "traceback") in got
    assert (3, "signal", "torchrun-failure") in got
    rec = next(e for e in events if e["signature"] == "torchrun-failure")
    assert rec["t"] == 1709640000.0 and "exit code -6 (SIGABRT)" in rec["text"]


def test_prose_is_skipped_and_every_file_is_accounted_for(tmp_path: Path) -> None:
    (tmp_path / "NOTES.txt").write_text("We hit torch.OutOfMemoryError: CUDA out of memory on rank 0, see below.\n")
    (tmp_path / "rank1.log").write_text("[rank1]: torch.OutOfMemoryError: CUDA out of memory.\n")
    b = logfile.read([tmp_path / "NOTES.txt", tmp_path / "rank1.log"])
    events = [e for e in b.table("log_events").to_pylist() if e["event"] == "oom"]
    assert [e["rank"] for e in events] == [1]
    notes = "\n".join(b.notes)
    assert "NOTES.txt: skipped, a README or notes file" in notes
    assert "rank1.log: read as a log (cuda_oom; lines from rank 1)" in notes


def test_watchdog_lines_wrapped_by_a_terminal_are_joined_back(tmp_path: Path) -> None:
    text = "\n".join([
        "[rank0]:[E327 17:04:16.986381360 ProcessGroupNCCL.cpp:565] [Rank 0]",
        "Watchdog caught collective operation timeout: WorkNCCL(SeqNum=2,",
        "OpType=ALLREDUCE, NumelIn=12, NumelOut=12, Timeout(ms)=1000) ran for",
        "1099 milliseconds before timing out.",
        "[rank2]:[E424 01:11:21.16 ProcessGroupNCCL.cpp:629] [Rank 2] Watchdog caught collective operation timeout: "
        "WorkNCCL(SeqNum=4, OpTy",
        "pe=BROADCAST, NumelIn=112, NumelOut=112, Timeout(ms)=1800000) ran for 1800010 milliseconds before timing out.",
        "an unrelated line (",
        "[rank1]: hello",
    ])
    calls, events, _ = read(tmp_path, text)
    assert [(c["rank"], c["seq"], c["op"]) for c in sorted(calls, key=lambda c: c["rank"])] == [
        (0, 2, "all_reduce"), (2, 4, "broadcast")]
    assert sorted(e["rank"] for e in events) == [0, 2]


def test_nccl_info_lines_take_the_files_rank_when_their_pid_names_none(tmp_path: Path) -> None:
    line = ("h03r3n06:45012:45012 [2] NCCL INFO AllGather: opCount 28c sendbuff 0x7f1fd894af00 recvbuff 0x7f1ed1c00100 "
            "count 59205120 datatype 0 op 0 root 0 comm 0x559c24b55610 [nranks=4] stream 0x559c248a3630\n")
    calls, _, _ = read(tmp_path, line, "rank2-nccl-info.log")
    assert [(c["rank"], c["seq"], c["op"], c["dtype"], c["group"]) for c in calls] == [
        (2, 653, "all_gather", "int8", "nccl:nranks=4")]


def test_a_directory_input_says_what_each_file_was_read_as(tmp_path: Path) -> None:
    from hangdoc.importers import load_path

    (tmp_path / "rank1.log").write_text("[rank1]: torch.OutOfMemoryError: CUDA out of memory.\n")
    (tmp_path / "README.md").write_text("# Repro\nIt printed `torch.OutOfMemoryError: CUDA out of memory` on rank 0.\n")
    (tmp_path / "env.csv").write_text("name,value\nNCCL_DEBUG,INFO\n")
    b = load_path(tmp_path)
    notes = "\n".join(b.notes)
    assert "README.md: skipped, a md document" in notes
    assert "1 file not read (no format hangdoc knows): env.csv" in notes
    assert [e["rank"] for e in b.table("log_events").to_pylist() if e["event"] == "oom"] == [1]
