"""py-spy dump parsing: JSON and text, one or many processes, as py-spy 0.4 prints them."""
from __future__ import annotations

import json
from pathlib import Path

from hangdoc.importers import pyspy, vllm_watchdog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pyspy"

# Real `py-spy dump --nonblocking` text (py-spy 0.4.3) of two processes, one with a thread per status.
TEXT = """\
Process 6490: /opt/venv/bin/python t.py
Python v3.11.7 (/opt/venv/bin/python3.11)

Thread 6490 (idle): "MainThread"
    main_loop (t.py:12)
    <module> (t.py:13)
Thread 6532 (idle): "sleeper"
    worker (t.py:4)
    Thread.run (threading.py:982)
    Thread._bootstrap_inner (threading.py:1045)
    Thread._bootstrap (threading.py:1002)
Thread 6533 (active+gil): "spinner"
    busy (t.py:8)
    Thread.run (threading.py:982)
Process 7000: VLLM::Worker_TP1
Python v3.12.3 (/usr/bin/python3.12)

Thread 0x7F3A2B4C5740 (active): "MainThread"
    all_reduce (vllm/distributed/parallel_state.py:480)
        Arguments:
            self: <GroupCoordinator at 0x7f0>
        Locals:
            input_: <Tensor at 0x7f1>
    ncclAllReduce (libnccl.so.2)
    forward (vllm/model_executor/models/llama.py:300)
"""


def test_text_two_processes_threads_status_and_order():
    rows, cmdlines = pyspy.parse_text(TEXT, host="n1")
    assert cmdlines == {6490: "/opt/venv/bin/python t.py", 7000: "VLLM::Worker_TP1"}
    main = [r for r in rows if r["pid"] == 6490 and r["tid"] == 6490]
    assert [r["function"] for r in main] == ["main_loop", "<module>"]
    assert [r["depth"] for r in main] == [0, 1]
    assert main[0]["line"] == 12 and main[0]["file"] == "t.py" and main[0]["idle"] is True
    spinner = [r for r in rows if r["thread_name"] == "spinner"]
    assert spinner[0]["idle"] is False and len(spinner) == 2
    vllm = [r for r in rows if r["pid"] == 7000]
    # locals lines are not frames; a hex thread id is kept as a number; .so frames are native
    assert [r["function"] for r in vllm] == ["all_reduce", "ncclAllReduce", "forward"]
    assert vllm[0]["tid"] == 0x7F3A2B4C5740
    assert [r["native"] for r in vllm] == [False, True, False]
    assert vllm[1]["line"] is None
    assert all(r["host"] == "n1" and r["source"] == "py-spy" for r in rows)


def test_text_with_terminal_colours():
    coloured = "\x1b[1;33mThread 12\x1b[0m (idle): \"MainThread\"\n    \x1b[32mfoo\x1b[0m (\x1b[36ma.py\x1b[0m:\x1b[2m3\x1b[0m)\n"
    rows = pyspy.parse(coloured, pid=5)
    assert [(r["pid"], r["tid"], r["function"], r["file"], r["line"]) for r in rows] == [(5, 12, "foo", "a.py", 3)]


def test_real_json_fixture_matches_text_of_same_job():
    """The JSON and text dumps py-spy printed for the same four hung ranks agree frame for frame."""
    json_rows = []
    for f in sorted(FIXTURES.glob("gloo_mismatch_rank*.json")):
        json_rows += pyspy.parse(f.read_text())
    text_rows = pyspy.parse((FIXTURES / "gloo_mismatch_all.txt").read_text())
    key = lambda r: (r["pid"], r["tid"], r["depth"])  # noqa: E731
    assert len(json_rows) == len(text_rows) == 20
    for j, t in zip(sorted(json_rows, key=key), sorted(text_rows, key=key)):
        assert (j["function"], j["line"], j["idle"], j["thread_name"]) == (t["function"], t["line"], t["idle"], t["thread_name"])
        assert j["file"].endswith(t["file"])  # JSON has full paths, text the short ones
        assert j["native"] is False
    assert {r["function"] for r in json_rows if r["depth"] == 0} == {"all_reduce", "all_gather"}


def test_json_native_frames_and_concatenated_dumps():
    """py-spy marks natively unwound frames with their module; several dumps may share one file."""
    one = [{"pid": 1, "thread_id": 99, "thread_name": "MainThread", "os_thread_id": 1, "active": True, "owns_gil": False,
            "frames": [{"name": "ncclAllReduce", "filename": "/usr/lib/libnccl.so.2", "module": "/usr/lib/libnccl.so.2",
                        "short_filename": None, "line": 0, "locals": None, "is_entry": True, "is_shim_entry": True},
                       {"name": "fwd", "filename": "/m.py", "module": None, "short_filename": "m.py", "line": 7,
                        "locals": None, "is_entry": True, "is_shim_entry": False}]}]
    two = [dict(one[0], pid=2, os_thread_id=None, thread_id=77)]
    rows = pyspy.parse(json.dumps(one, indent=2) + "\n" + json.dumps(two))
    assert [(r["pid"], r["tid"], r["function"], r["native"], r["line"], r["idle"]) for r in rows] == [
        (1, 1, "ncclAllReduce", True, None, False),
        (1, 1, "fwd", False, 7, False),
        (2, 77, "ncclAllReduce", True, None, False),
        (2, 77, "fwd", False, 7, False),
    ]


def test_importer_reads_rank_from_file_name(tmp_path):
    for f in FIXTURES.glob("gloo_mismatch_rank*.json"):
        (tmp_path / f.name).write_text(f.read_text())
    (tmp_path / "notes.txt").write_text("nothing to see\n")
    # a Flight Recorder JSON dump also has "thread_id" and "frames" keys: not a py-spy dump
    (tmp_path / "nccl_trace_rank_0").write_text(json.dumps(
        {"version": "2.10", "entries": [{"thread_id": "1", "frames": [{"name": "f", "filename": "a.py", "line": 1}]}]}))
    files = sorted(p for p in tmp_path.iterdir() if pyspy.matches(p))
    assert [p.name for p in files] == [f"gloo_mismatch_rank{r}.json" for r in range(4)]
    bundle = pyspy.read(files)
    procs = {r["pid"]: r["global_rank"] for r in bundle.table("processes").to_pylist()}
    assert sorted(procs.values()) == [0, 1, 2, 3]
    frames = bundle.table("py_frames").to_pylist()
    rank2_pid = next(p for p, r in procs.items() if r == 2)
    assert next(r["function"] for r in frames if r["pid"] == rank2_pid and r["depth"] == 0) == "all_gather"


def test_text_importer_keeps_cmdline_as_title(tmp_path):
    f = tmp_path / "dump.txt"
    f.write_text(TEXT)
    assert pyspy.matches(f)
    procs = {r["pid"]: r for r in pyspy.read([f]).table("processes").to_pylist()}
    assert procs[7000]["title"] == "VLLM::Worker_TP1" and procs[7000]["global_rank"] is None


# vLLM's watchdog writes this header before faulthandler.dump_traceback(all_threads=True).
VLLM_DUMP = """
>>> Call stack dump #1 at Sat Nov 21 05:16:34 2026 due to feed timeout

Thread 0x00007ff51f5fa6c0 (most recent call first):
  File "/usr/lib/python3.12/threading.py", line 327 in wait
  File "/opt/vllm/vllm/utils/watch_dog.py", line 90 in _check_loop

Current thread 0x00007ff52043cb80 (most recent call first):
  File "/opt/vllm/vllm/distributed/device_communicators/shm_broadcast.py", line 500 in acquire_read
  File "/opt/vllm/vllm/v1/executor/multiproc_executor.py", line 700 in worker_busy_loop
  File "/opt/vllm/vllm/v1/executor/multiproc_executor.py", line 650 in <module>

>>> Call stack dump #2 at Sat Nov 21 05:21:34 2026 due to feed timeout

Current thread 0x00007ff52043cb80 (most recent call first):
  File "/opt/vllm/vllm/distributed/device_communicators/shm_broadcast.py", line 500 in acquire_read
  File "/opt/vllm/vllm/v1/executor/multiproc_executor.py", line ??? in <module>
"""


def test_vllm_watchdog_dump(tmp_path):
    f = tmp_path / "VLLM_STACK_DUMP_for_worker_TP1_4242.log"
    f.write_text(VLLM_DUMP)
    assert vllm_watchdog.matches(f) and vllm_watchdog.pid_of(f) == 4242
    rows = vllm_watchdog.read_file(f, host="n1")
    assert {r["source"] for r in rows} == {"vllm-stack-dump"} and {r["pid"] for r in rows} == {4242}
    first = [r for r in rows if r["sample"] == 0 and r["tid"] == 0x00007FF52043CB80]
    assert [(r["depth"], r["function"]) for r in first] == [(0, "acquire_read"), (1, "worker_busy_loop"), (2, "<module>")]
    second = [r for r in rows if r["sample"] == 1]
    assert [r["line"] for r in second] == [500, None]
    assert len([r for r in rows if r["sample"] == 0]) == 5
