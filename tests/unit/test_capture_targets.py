"""Target selection on hand-built process tables: what auto-discovery and each selector pick, and what never."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hangdoc.bundle import Bundle
from hangdoc.capture.display import summarize, uncaptured_gpu_holders
from hangdoc.capture.gpu import gpu_process_map, rows_from_recording
from hangdoc.capture.targets import ProcEntry, scan_processes, select_targets
from hangdoc.schema import table_from_rows


def _table(*entries: ProcEntry) -> dict[int, ProcEntry]:
    return {e.pid: e for e in entries}


NODE = _table(
    ProcEntry(1, 0, "init", ("/sbin/init",)),
    ProcEntry(50, 1, "sshd", ("sshd: root",)),
    ProcEntry(60, 50, "bash", ("-bash",)),
    # vLLM serve -> EngineCore -> workers
    ProcEntry(100, 60, "vllm", ("/usr/bin/python3", "/usr/bin/vllm", "serve", "m", "-tp", "2")),
    ProcEntry(101, 100, "VLLM::EngineCor", ("VLLM::EngineCore_DP0",)),
    ProcEntry(102, 101, "VLLM::Worker_TP", ("VLLM::Worker_TP0",)),
    ProcEntry(103, 101, "VLLM::Worker_TP", ("VLLM::Worker_TP1",)),
    ProcEntry(104, 100, "python3", ("/usr/bin/python3", "-c", "from multiprocessing.resource_tracker import main")),
    # a plain multiprocessing launcher whose workers carry RANK (found by env), launched from bash
    ProcEntry(200, 60, "python3", ("/usr/bin/python3", "launch.py")),
    ProcEntry(201, 200, "python3", ("/usr/bin/python3", "launch.py"), rank_env=True),
    ProcEntry(202, 200, "python3", ("/usr/bin/python3", "launch.py"), rank_env=True),
    # unrelated processes
    ProcEntry(300, 60, "vim", ("vim", "notes.txt")),
    ProcEntry(301, 1, "python3", ("/usr/bin/python3", "-m", "http.server")),
    # hangdoc itself, started from the same shell
    ProcEntry(400, 60, "hangdoc", ("/usr/bin/python3", "/usr/bin/hangdoc", "capture", "-o", "b")),
    ProcEntry(401, 400, "py-spy", ("py-spy", "dump", "--pid", "102")),
)


def test_auto_finds_the_job_tree_and_stops_at_the_shell():
    sel = select_targets(NODE, 400)
    assert sel.pids == [100, 101, 102, 103, 104, 200, 201, 202]
    assert sel.reasons[102] == "title/command line"
    assert sel.reasons[200] == "launcher of 201"
    assert sel.reasons[104] == "child of 100"


def test_auto_adds_gpu_holders_and_their_tree():
    sel = select_targets(NODE, 400, gpu_pids=[301])
    assert 301 in sel.pids and sel.reasons[301] == "holds a GPU"


def test_never_captures_itself_or_its_ancestors():
    table = dict(NODE)
    table[400] = ProcEntry(400, 60, "python3", ("/usr/bin/python3", "-m", "torch.distributed.run", "x.py"))
    sel = select_targets(table, 400)
    assert not {50, 60, 400} & set(sel.pids)
    # a job this process started itself stays capturable
    table[402] = ProcEntry(402, 400, "VLLM::Worker", ("VLLM::Worker_TP9",))
    assert 402 in select_targets(table, 400).pids


def test_pid_is_exact_tree_takes_descendants_match_takes_the_job():
    assert select_targets(NODE, 400, pids=[102]).pids == [102]
    assert select_targets(NODE, 400, trees=[101]).pids == [101, 102, 103]
    sel = select_targets(NODE, 400, match=r"Worker_TP1")
    assert sel.pids == [100, 101, 103]  # the worker, its engine and the API server above it
    sel = select_targets(NODE, 400, pids=[999], trees=[998])
    assert sel.pids == [] and sel.notes == ["--pid 999: no such process", "--tree 998: no such process"]


def test_selectors_turn_auto_discovery_off():
    assert select_targets(NODE, 400, match=r"http\.server").pids == [301]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_scan_sees_this_process_and_its_parent():
    table, _ = scan_processes(want_env=False)
    me = table[os.getpid()]
    assert me.ppid == os.getppid()
    assert me.cmdline and "python" in os.path.basename(me.cmdline[0]).lower() or me.comm.startswith("py")
    assert 2 not in table  # kernel threads are left out


# --- --pid of a launcher: the job under it, decided on NVML values recorded on an H200 node --------------------
NVML = Path(__file__).resolve().parents[1] / "fixtures" / "nvml" / "h200_nccl_spin.json"


def _recorded_gpu_holders() -> dict[int, list[int]]:
    return gpu_process_map(json.loads(NVML.read_text()))


def test_pid_of_a_wrapper_takes_its_gpu_holders_and_ranked_children():
    holders = _recorded_gpu_holders()
    a, b = sorted(holders)
    table = _table(
        ProcEntry(1, 0, "init", ("/sbin/init",)),
        ProcEntry(60, 1, "bash", ("-bash",)),
        ProcEntry(70, 60, "timeout", ("timeout", "3600", "python3", "serve.py")),
        ProcEntry(71, 70, "python3", ("python3", "serve.py")),  # the launcher script itself: no GPU, no rank
        ProcEntry(a, 71, "python3", ("python3", "serve.py")),
        ProcEntry(b, 71, "python3", ("python3", "serve.py")),
        ProcEntry(80, 71, "python3", ("python3", "-c", "worker"), rank_env=True),  # a rank before it took a GPU
        ProcEntry(81, 71, "sglang::schedu", ("sglang::scheduler_DP0_TP3",)),
        ProcEntry(90, 71, "tee", ("tee", "serve.log")),
    )
    sel = select_targets(table, 999, pids=[70], gpu_pids=holders)
    assert sel.pids == [70, 80, 81, a, b]
    assert sel.reasons[a] == "under --pid 70: holds a GPU" and sel.reasons[b] == "under --pid 70: holds a GPU"
    assert sel.reasons[80] == "under --pid 70: rank environment"
    assert sel.reasons[81] == "under --pid 70: title/command line"
    # without NVML the GPU holders are not recognisable as such: only the ranked and titled children come along
    assert select_targets(table, 999, pids=[70]).pids == [70, 80, 81]


def test_summary_names_gpu_holders_left_out_and_how_to_add_them():
    recording = json.loads(NVML.read_text())
    rows = rows_from_recording(recording, "node1")
    holders = _recorded_gpu_holders()
    a, b = sorted(holders)
    assert holders == {a: [1], b: [0]}  # the recording: pid 3408431 on GPU 0, 3408430 on GPU 1
    assert uncaptured_gpu_holders(rows["gpu_processes"], {70, b}) == {a: [1]}
    bundle = Bundle()
    bundle.add("gpu_processes", table_from_rows("gpu_processes", rows["gpu_processes"]))
    bundle.add("processes", table_from_rows("processes", [{"pid": 70, "role": "launcher", "status": "sleeping"}]))
    lines = dict(summarize(bundle))
    assert lines["not captured"].startswith(
        f"GPU process(es) {a} (GPU 1), {b} (GPU 0): add --pid {a} --pid {b}, or --tree with their launcher"
    )
    bundle.tables.pop("processes")
    bundle.add("processes", table_from_rows("processes", [{"pid": p, "role": "worker", "status": "sleeping"} for p in (a, b)]))
    assert "not captured" not in dict(summarize(bundle))
