"""Target selection on hand-built process tables: what auto-discovery and each selector pick, and what never."""
from __future__ import annotations

import os

import pytest

from hangdoc.capture.targets import ProcEntry, scan_processes, select_targets


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
