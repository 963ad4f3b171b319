"""Who a rank is and where the processes around it stand: a captured vLLM job whose ranks came from process titles
(no collectives, so no communicator to label them by) and whose engine core waits in MessageQueue.dequeue."""
from __future__ import annotations

from hangdoc.analysis.pipeline import diagnose
from hangdoc.bundle import Bundle
from hangdoc.report import render_text, to_dict
from hangdoc.schema import table_from_rows

SHM = "/usr/lib/python3/site-packages/vllm/distributed/device_communicators/shm_broadcast.py"
PYNCCL = "/usr/lib/python3/site-packages/vllm/distributed/device_communicators/pynccl.py"
WORKER = "/usr/lib/python3/site-packages/vllm/v1/executor/multiproc_executor.py"


def _frames(pid, stack, thread="MainThread"):
    return [{"host": "gpu-7", "pid": pid, "tid": pid, "thread_name": thread, "sample": 0, "depth": d,
             "function": fn, "file": file, "line": line, "native": False, "idle": False, "source": "py-spy"}
            for d, (fn, file, line) in enumerate(stack)]


def _captured_vllm_job() -> Bundle:
    b = Bundle()
    b.add("processes", table_from_rows("processes", [
        {"host": "gpu-7", "pid": 4100, "title": "VLLM::EngineCore_DP0", "role": "engine", "status": "sleeping"},
        {"host": "gpu-7", "pid": 4101, "ppid": 4100, "title": "VLLM::Worker_TP0", "role": "worker", "global_rank": 0,
         "tp_rank": 0, "rank_source": "title", "status": "running"},
        {"host": "gpu-7", "pid": 4102, "ppid": 4100, "title": "VLLM::Worker_TP1", "role": "worker", "global_rank": 1,
         "tp_rank": 1, "rank_source": "title", "status": "running"},
    ]))
    worker = [("all_reduce", PYNCCL, 131), ("execute_model", WORKER, 560), ("worker_busy_loop", WORKER, 601)]
    b.add("py_frames", table_from_rows("py_frames", _frames(4101, worker) + _frames(4102, worker) + _frames(
        4100, [("dequeue", SHM, 519), ("step_with_batch_queue", "/usr/lib/python3/site-packages/vllm/v1/engine/core.py",
                                      288)])))
    return b


def test_ranks_from_titles_get_labels_pids_and_titles():
    d = diagnose(_captured_vllm_job())
    assert d.rank_labels == {0: "TP rank 0", 1: "TP rank 1"}
    report = to_dict(d)
    assert report["rank_labels"] == {"0": "TP rank 0", "1": "TP rank 1"}
    assert report["ranks"] == [
        {"rank": 0, "host": "gpu-7", "pid": 4101, "title": "VLLM::Worker_TP0"},
        {"rank": 1, "host": "gpu-7", "pid": 4102, "title": "VLLM::Worker_TP1"},
    ]


def test_the_engine_core_stack_is_in_the_report():
    d = diagnose(_captured_vllm_job())
    ranks, engine = d.stacks
    assert ranks.ranks == (0, 1) and ranks.what == "in a collective (all_reduce)"
    assert ranks.top[0] == "all_reduce (pynccl.py:131)"
    assert engine.ranks == () and [m.title for m in engine.members] == ["VLLM::EngineCore_DP0"]
    assert engine.what == "idle waiting for work" and engine.top[0] == "dequeue (shm_broadcast.py:519)"
    text = render_text(d, "text", width=80)
    assert "ranks 0, 1 (pids 4101, 4102)" in text and "all_reduce (pynccl.py:131)" in text
    assert "pid 4100 (VLLM::EngineCore_DP0), thread MainThread" in text
    assert "dequeue (shm_broadcast.py:519)" in text
    markdown = render_text(d, "markdown")
    assert "| pid 4100 (VLLM::EngineCore_DP0), thread MainThread | `dequeue (shm_broadcast.py:519)`" in markdown
    html = render_text(d, "html")
    assert 'id="stacks"' in html and "dequeue (shm_broadcast.py:519)" in html and "VLLM::EngineCore_DP0" in html


def test_titles_alone_give_ranks_and_labels():
    """No rank in the capture's rows at all: the titles (vLLM's setproctitle) are all there is."""
    b = Bundle()
    b.add("processes", table_from_rows("processes", [
        {"host": "gpu-7", "pid": 4200 + tp, "title": f"VLLM::Worker_DP1_TP{tp}", "status": "running"}
        for tp in range(2)]))
    d = diagnose(b)
    assert d.rank_labels and set(d.rank_labels.values()) == {"DP 1, TP rank 0", "DP 1, TP rank 1"}
    assert {p.title: p.pid for p in d.rank_processes.values()} == {"VLLM::Worker_DP1_TP0": 4200,
                                                                   "VLLM::Worker_DP1_TP1": 4201}
