"""Log signatures: the catalogue matches the real hang lines, scans keep context, ranks and tails."""
from __future__ import annotations

import json

import pytest

from hangdoc.capture.logs import read_tail, scan_logs
from hangdoc.errors import InputError
from hangdoc.signatures import load_catalogue, match_line, parse_catalogue

REAL_LINES = {
    "vllm_shm_broadcast_timeout": "(EngineCore_DP1 pid=3408402) INFO 05-12 10:41:07 [shm_broadcast.py:466] No available "
    "shared memory broadcast block found in 600 seconds. This typically happens when some processes are hanging.",
    "c10d_watchdog_timeout": "[rank3]:[E512 10:41:07.123456 ProcessGroupNCCL.cpp:632] [Rank 3] Watchdog caught "
    "collective operation timeout: WorkNCCL(SeqNum=1123, OpType=ALLREDUCE, NumelIn=32972, Timeout(ms)=600000) ran "
    "for 600021 milliseconds before timing out.",
    "cuda_oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
    "of 79.10 GiB of which 1.06 GiB is free.",
    "nccl_warn": "node-15:3408431:3408790 [2] NCCL WARN Call to ibv_reg_mr failed with error Cannot allocate memory",
    "vllm_engine_dead": "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace "
    "(above) for the root cause.",
    "vllm_parent_exited": "(Worker_DP0_TP0 pid=912) INFO 06-02 09:12:44 [multiproc_executor.py:520] Parent process "
    "exited, terminating worker queues",
    "nixl_expired_kv_blocks": "WARNING 07-01 12:00:00 [nixl_connector.py:1101] Releasing expired KV blocks for "
    "request cmpl-123-0 which were retrieved by 0 decode worker(s) within 480 seconds.",
    "nixl_unrecognized_request": "ERROR 07-01 12:00:05 [nixl_connector.py:1180] Potentially invalid KV blocks for "
    "unrecognized request cmpl-456-1 were retrieved by a decode worker. They may have expired.",
}


def test_catalogue_matches_each_real_line_and_nothing_else():
    catalogue = load_catalogue()
    assert set(REAL_LINES) <= {s.id for s in catalogue}  # the catalogue grows; these lines stay matched
    for sig_id, line in REAL_LINES.items():
        assert [s.id for s in match_line(line, catalogue)] == [sig_id], sig_id
    assert match_line("INFO 05-12 10:00:00 Avg prompt throughput: 120.0 tokens/s", catalogue) == []
    events = {s.id: s.event for s in catalogue}
    assert events["cuda_oom"] == "oom" and events["c10d_watchdog_timeout"] == "timeout"


def test_bad_catalogue_entries_are_input_errors(tmp_path):
    good = {"id": "x", "regex": "a", "severity": "error", "event": "other", "kind": "log_signature", "meaning": "m"}
    with pytest.raises(InputError, match="bad regex"):
        parse_catalogue({"signatures": [{**good, "regex": "("}]})
    with pytest.raises(InputError, match="severity"):
        parse_catalogue({"signatures": [{**good, "severity": "loud"}]})
    with pytest.raises(InputError, match="event"):
        parse_catalogue({"signatures": [{**good, "event": "blame"}]})
    with pytest.raises(InputError, match="duplicate"):
        parse_catalogue({"signatures": [good, good]})
    path = tmp_path / "cat.json"
    path.write_text(json.dumps({"signatures": [good]}))
    assert [s.id for s in load_catalogue(path)] == ["x"]


def _scan(tmp_path, name: str, text: str, procs=(), **kw):
    path = tmp_path / name
    path.write_text(text)
    scan = scan_logs([str(path)], list(procs), "h", **kw)
    rows = [e for e in scan.output.tables["log_events"].to_pylist() if e["event"] != "seen"]
    return scan, rows


def test_capture_attributes_lines_as_the_importer_does(tmp_path):
    lines = [f"INFO step {i}" for i in range(10)]
    lines[5] = REAL_LINES["c10d_watchdog_timeout"]
    lines[8] = "(Worker_DP1_TP2 pid=4242) " + REAL_LINES["nccl_warn"]
    lines[9] = "[2025-05-12 10:41:09 DP0 TP3] " + REAL_LINES["cuda_oom"]
    procs = [{"pid": 9, "title": "VLLM::Worker_DP0_TP3", "cmdline": []}]  # the live titles give TP size 4
    scan, rows = _scan(tmp_path, "w.log", "\n".join(lines), procs)
    assert [(r["signature"], r["line_no"], r["rank"], r["pid"], r["event"]) for r in rows] == [
        ("c10d_watchdog_timeout", 6, 3, None, "timeout"),
        ("nccl_warn", 9, 6, 4242, "other"),  # DP1 x TP4 + TP2
        ("cuda_oom", 10, 3, None, "oom"),
    ]
    assert rows[0]["context"] == []  # the lines before are not rank 3's
    assert rows[2]["context"] == ["INFO step 4", "INFO step 6", "INFO step 7"]
    assert rows[2]["t"] is not None and rows[0]["t"] is not None  # torch's glog prefix has a time
    # the watchdog line is also a collective position: rank 3 timed out in all_reduce call 1123
    calls = scan.output.tables["collectives"].to_pylist()
    assert [(c["rank"], c["seq"], c["op"], c["state"], c["source"]) for c in calls] == [
        (3, 1123, "all_reduce", "timed_out", "c10d-watchdog")]


def test_a_live_process_table_gives_ranks_to_its_stdout_lines(tmp_path):
    procs = [{"pid": 77, "global_rank": 5, "cmdline": [], "stdout_path": str(tmp_path / "out")}]
    (tmp_path / "out").write_text(REAL_LINES["cuda_oom"] + "\n")
    rows = [e for e in scan_logs([], procs, "h").output.tables["log_events"].to_pylist() if e["event"] != "seen"]
    assert [(r["pid"], r["rank"]) for r in rows] == [(77, 5)]


def test_many_matches_are_capped_with_a_note(tmp_path):
    scan, rows = _scan(tmp_path, "f", "\n".join([REAL_LINES["nccl_warn"]] * 450))
    assert len(rows) == 200 and rows[-1]["line_no"] == 450 and rows[99]["line_no"] == 100
    assert any("450 lines match nccl_warn" in n for n in scan.output.notes)


def test_prose_next_to_the_logs_is_skipped(tmp_path):
    scan, rows = _scan(tmp_path, "README.md", "We saw this:\n\n```\n" + REAL_LINES["cuda_oom"] + "\n```\n")
    assert rows == [] and any("README.md: skipped" in n for n in scan.output.notes)


def test_read_tail_starts_at_a_line_boundary(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i:05d}\n" for i in range(1000)))  # 11 bytes a line
    text, truncated = read_tail(str(path), max_bytes=100)
    assert truncated and text.splitlines()[0] == "line 00991" and text.splitlines()[-1] == "line 00999"
    text, truncated = read_tail(str(path), max_bytes=1 << 20)
    assert not truncated and text.count("\n") == 1000


def test_scan_logs_globs_tails_and_stdout_files(tmp_path):
    (tmp_path / "a.log").write_text("x\n" * 200 + REAL_LINES["vllm_shm_broadcast_timeout"] + "\n")
    (tmp_path / "b.log").write_text(REAL_LINES["c10d_watchdog_timeout"] + "\n")
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2" * 10)
    out_file = tmp_path / "worker7.out"
    out_file.write_text("(Worker_TP1 pid=31) hello\n" + REAL_LINES["cuda_oom"] + "\n")
    procs = [{"pid": 31, "global_rank": 7, "title": "VLLM::Worker_TP1", "cmdline": [], "stdout_path": str(out_file),
              "stderr_path": str(out_file)}]
    patterns = [str(tmp_path / "*.log"), str(tmp_path / "blob.bin"), str(tmp_path / "nope*.log"), str(out_file)]
    scan = scan_logs(patterns, procs, "h", max_bytes=300)
    events = [e for e in scan.output.tables["log_events"].to_pylist() if e["event"] != "seen"]
    got = sorted((e["file"].rsplit("/", 1)[-1], e["signature"], e["rank"], e["pid"], e["line_no"]) for e in events)
    assert got == [
        # tail only: no line numbers; an engine's prefix names its pid but no rank
        ("a.log", "vllm_shm_broadcast_timeout", None, 3408402, None),
        ("b.log", "c10d_watchdog_timeout", 3, None, 1),
        ("worker7.out", "cuda_oom", 7, 31, 2),  # the file is pid 31's stdout (scanned once though named twice)
    ]
    notes = "\n".join(scan.output.notes)
    assert "nope*.log: matches no file" in notes and "blob.bin: skipped, not a text file" in notes
    assert "a.log: larger than" in notes and "b.log: larger" not in notes
    assert scan.titles == {31: "Worker_TP1", 3408402: "EngineCore_DP1"}
