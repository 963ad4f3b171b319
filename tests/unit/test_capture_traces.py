"""collect_traces: dumps the job left on disk, found where the job's environment says, through the importers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hangdoc.capture import traces

WORLD = 2


def fr_dump(rank: int, ops: list[str]) -> str:
    """A Flight Recorder JSON dump shaped like torch 2.13's gloo recorder writes it (entries trimmed to what matters)."""
    entries = [
        {
            "collective_seq_id": seq, "p2p_seq_id": 0, "is_p2p": False, "op_id": seq, "record_id": seq - 1,
            "pg_id": 0, "process_group": ["0", "default_pg"], "profiling_name": f"gloo:{op}",
            "input_sizes": [[4]], "input_dtypes": ["Float"], "output_sizes": [[4]], "output_dtypes": ["Float"],
            "state": "scheduled", "retired": seq < len(ops), "time_created_ns": 1_795_238_225_887_374_574 + seq,
            "time_discovered_started_ns": 0, "time_discovered_completed_ns": 0, "timeout_ms": 1_800_000,
            "thread_id": "1", "thread_name": "python",
        }
        for seq, op in enumerate(ops, start=1)
    ]
    return json.dumps({
        "version": "2.10", "comm_lib_version": "", "entries": entries, "nccl_comm_state": {},
        "pg_config": {"": {"desc": "", "name": "", "ranks": f"{list(range(WORLD))}"}},
        "pg_status": {"0": {"last_completed_collective": str(len(ops) - 1), "last_enqueued_collective": str(len(ops)),
                            "last_started_collective": "-1"}},
    })


@pytest.fixture
def job(tmp_path):
    """A live process whose environment points at an FR prefix, a trace dir and no worker socket."""
    env = dict(os.environ, TORCH_FR_DUMP_TEMP_FILE=str(tmp_path / "fr" / "trace_"), RANK="0",
               HANGDOC_TRACE_DIR=str(tmp_path / "missing-trace-dir"))
    (tmp_path / "fr").mkdir()
    old = tmp_path / "fr" / "trace_7"  # a dump from an earlier job: written before this one started
    old.write_text(fr_dump(7, ["all_reduce"]))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    try:
        time.sleep(0.2)
        yield proc.pid, tmp_path
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_fr_dumps_at_the_targets_prefix(job):
    pid, root = job
    for rank, ops in ((0, ["all_reduce", "all_reduce"]), (1, ["all_reduce", "all_gather"])):
        (root / "fr" / f"trace_{rank}").write_text(fr_dump(rank, ops))
    os.mkfifo(root / "fr" / "trace_9")  # opening a FIFO would block the capture: never read
    out = traces.collect_traces([pid], [], "node1")
    rows = out.tables["collectives"].to_pylist()
    assert sorted({r["rank"] for r in rows}) == [0, 1]  # rank 7's stale file and the FIFO are left out
    assert {(r["rank"], r["seq"], r["op"]) for r in rows if r["seq"] == 2} == {(0, 2, "all_reduce"), (1, 2, "all_gather")}
    assert {r["host"] for r in rows} == {"node1"}
    assert any("older than the job skipped" in n for n in out.notes)
    assert any("HANGDOC_TRACE_DIR" in n and "no such directory" in n for n in out.notes)


VLLM_DUMP = """
>>> Call stack dump #1 at Sat Nov 21 05:16:34 2026 due to feed timeout

Thread 0x00007ff52043cb80 (most recent call first):
  File "/opt/vllm/vllm/distributed/device_communicators/shm_broadcast.py", line 500 in acquire_read
  File "/opt/vllm/vllm/v1/executor/multiproc_executor.py", line 650 in <module>
"""


def test_given_directory_with_fr_dumps_and_vllm_stack_dumps(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    for rank in range(WORLD):
        (d / f"nccl_trace_rank_{rank}").write_text(fr_dump(rank, ["broadcast"]))
    (d / "VLLM_STACK_DUMP_for_worker_TP0_4242.log").write_text(VLLM_DUMP)
    out = traces.collect_traces([], [d], "node1")
    assert sorted({r["rank"] for r in out.tables["collectives"].to_pylist()}) == [0, 1]
    frames = out.tables["py_frames"].to_pylist()
    assert [(r["pid"], r["function"], r["source"], r["host"]) for r in frames] == [
        (4242, "acquire_read", "vllm-stack-dump", "node1"), (4242, "<module>", "vllm-stack-dump", "node1")]


def test_directory_with_only_vllm_dumps_is_not_an_error(tmp_path):
    (tmp_path / "VLLM_STACK_DUMP_for_worker_TP0_11.log").write_text(VLLM_DUMP)
    out = traces.collect_traces([], [tmp_path], "node1")
    assert out.tables["py_frames"].num_rows == 2
    assert [n.split(": ", 1)[1] for n in out.notes] == ["1 file read as vllm-watchdog: VLLM_STACK_DUMP_for_worker_TP0_11.log"]


def test_missing_and_unreadable_inputs_are_notes(tmp_path):
    (tmp_path / "readme.txt").write_text("no dumps here\n")
    out = traces.collect_traces([999_999_999], [tmp_path / "nope", tmp_path], "node1")
    assert out.tables == {}
    assert any("nope: no such file or directory" in n for n in out.notes)
    assert any("not imported" in n for n in out.notes)
    assert any("999999999" in n and "unreadable" in n for n in out.notes)


def test_worker_server_that_does_not_answer(tmp_path, monkeypatch):
    """A socket path that nobody serves: a note, quickly, and the capture goes on."""
    import socket

    monkeypatch.setattr(traces, "_SOCKET_TIMEOUT_S", 1.0)
    path = tmp_path / "w.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)  # accepts the connection, never answers
    env = dict(os.environ, TORCH_WORKER_SERVER_SOCKET=str(path), RANK="3")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        out = traces.collect_traces([proc.pid], [], "node1")
        assert time.monotonic() - t0 < traces._SOCKET_TIMEOUT_S + 5
    finally:
        proc.kill()
        proc.wait(timeout=30)
        srv.close()
    assert any(f"pid {proc.pid}: worker server" in n and "no answer" in n for n in out.notes)
