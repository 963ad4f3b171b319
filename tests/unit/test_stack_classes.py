"""Stack equivalence classes: who stands where, the minority named, frozen told from progressing."""
from __future__ import annotations

from pathlib import Path

from hangdoc.analysis import stacks
from hangdoc.analysis.model import STACK_DIVERGENCE
from hangdoc.importers import pyspy
from hangdoc.schema import table_from_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pyspy"
C10D = "torch/distributed/distributed_c10d.py"
LOGGER = "torch/distributed/c10d_logger.py"


def frames(pid, stack, *, tid=None, thread="MainThread", sample=0, host="n1"):
    """Rows for one thread; `stack` innermost first as (function, file, line[, native])."""
    rows = []
    for depth, fr in enumerate(stack):
        function, file, line = fr[:3]
        rows.append({
            "host": host, "pid": pid, "tid": pid if tid is None else tid, "thread_name": thread, "sample": sample,
            "depth": depth, "function": function, "file": file, "line": line,
            "native": fr[3] if len(fr) > 3 else False, "idle": True, "source": "py-spy",
        })
    return rows


def procs(ranks: dict[int, int], host="n1"):
    return table_from_rows("processes", [{"host": host, "pid": pid, "global_rank": r} for pid, r in ranks.items()])


def job_stack(op_fn, call_line):
    return [(op_fn, C10D, 3252), ("_exception_logger.<locals>.wrapper", LOGGER, 83), ("step", "job.py", call_line),
            ("main", "job.py", 20), ("<module>", "job.py", 24)]


def table(rows):
    return table_from_rows("py_frames", rows)


def test_minority_collective_is_the_culprit():
    rows = []
    for pid in (100, 101, 103):
        rows += frames(pid, job_stack("all_reduce", 11))
    rows += frames(102, job_stack("all_gather", 9))
    [f] = stacks.stack_divergence(table(rows), procs({100: 0, 101: 1, 102: 2, 103: 3}))
    assert f.kind == STACK_DIVERGENCE and f.ranks == (2,) and f.waiting_ranks == (0, 1, 3)
    assert (f.op, f.expected_op, f.role) == ("all_gather", "all_reduce", "cause")
    assert f.summary == "rank 2: all_gather <- step <- main <- <module>; ranks 0,1,3: all_reduce <- step <- main <- <module>"
    assert [c["who"] for c in f.details["classes"]] == [[2], [0, 1, 3]]
    assert f.details["tie"] is False


def test_same_collective_everywhere_is_no_divergence():
    rows = []
    for pid in (100, 101, 102):
        rows += frames(pid, job_stack("all_reduce", 11))
    assert stacks.stack_divergence(table(rows), procs({100: 0, 101: 1, 102: 2})) == []


def test_internals_below_the_collective_do_not_split_a_class():
    """Native frames inside the collective differ from rank to rank; the position is the API call."""
    rows = frames(100, [("gloo::transport::tcp::UnboundBuffer::waitRecv", "libtorch_cpu.so", None, True)] + job_stack("all_reduce", 11))
    rows += frames(101, [("gloo::AllreduceRing::run", "libtorch_cpu.so", None, True)] + job_stack("all_reduce", 11))
    rows += frames(102, job_stack("all_reduce", 11))
    assert stacks.stack_divergence(table(rows), procs({100: 0, 101: 1, 102: 2})) == []


def test_same_op_from_another_call_site_is_a_different_position():
    """Seed 003's shape: one rank skipped a call and waits in the next all_reduce, at another line."""
    rows = frames(100, job_stack("all_reduce", 30))
    for pid in (101, 102, 103):
        rows += frames(pid, job_stack("all_reduce", 11))
    [f] = stacks.stack_divergence(table(rows), procs({100: 0, 101: 1, 102: 2, 103: 3}))
    assert f.ranks == (0,) and f.op == f.expected_op == "all_reduce" and f.role == "cause"
    # the same functions on both sides: the summary says where the stacks part
    assert f.summary == ("rank 0: all_reduce <- step <- main <- <module> via step (job.py:30); "
                         "ranks 1,2,3: all_reduce <- step <- main <- <module> via step (job.py:11)")


def test_even_split_is_a_tie_naming_everyone():
    rows = frames(100, job_stack("all_reduce", 11)) + frames(101, job_stack("all_gather", 9))
    [f] = stacks.stack_divergence(table(rows), procs({100: 0, 101: 1}))
    assert f.details["tie"] is True and f.ranks == (0, 1) and f.expected_op is None
    assert f.summary.startswith("no majority among the stacks: ")


def test_rank_outside_any_collective_while_peers_wait():
    """A rank still in the model while the others sit in a vLLM all_reduce: it is the one they wait for."""
    gc = ("GroupCoordinator.all_reduce", "vllm/distributed/parallel_state.py", 480)
    waiting = [("PyNcclCommunicator.all_reduce", "vllm/distributed/device_communicators/pynccl.py", 120), gc,
               ("forward", "vllm/model_executor/models/llama.py", 300), ("execute_model", "vllm/v1/worker/gpu_worker.py", 50)]
    computing = [("rotary", "vllm/model_executor/layers/rotary.py", 90), ("forward", "vllm/model_executor/models/llama.py", 290),
                 ("execute_model", "vllm/v1/worker/gpu_worker.py", 50)]
    rows = frames(10, waiting) + frames(11, waiting) + frames(12, computing)
    [f] = stacks.stack_divergence(table(rows), procs({10: 0, 11: 1, 12: 2}))
    assert f.ranks == (2,) and f.role == "cause" and f.op is None and f.expected_op == "all_reduce"
    assert f.details["classes"][0]["category"] == "model"
    assert f.summary.startswith("rank 2: rotary <- forward <- execute_model; ranks 0,1: GroupCoordinator.all_reduce <- forward")


def test_frame_categories():
    place = lambda *st: stacks.place([stacks.Frame(*f) for f in st])  # noqa: E731
    idle = place(("MessageQueue.acquire_read", "vllm/distributed/device_communicators/shm_broadcast.py", 500, False),
                 ("MessageQueue.dequeue", "vllm/distributed/device_communicators/shm_broadcast.py", 540, False),
                 ("WorkerProc.worker_busy_loop", "vllm/v1/executor/multiproc_executor.py", 700, False))
    assert idle.category == stacks.IDLE
    sglang_idle = place(("broadcast", C10D, 2800, False), ("broadcast_pyobj", "sglang/srt/utils.py", 900, False),
                        ("_broadcast_reqs_across_ranks", "sglang/srt/managers/scheduler.py", 1100, False))
    assert sglang_idle.category == stacks.IDLE
    queue_idle = place(("Queue.get", "/usr/lib/python3.12/queue.py", 171, False), ("run_busy_loop", "vllm/v1/engine/core.py", 600, False))
    assert queue_idle.category == stacks.IDLE
    teardown = place(("ncclCommDestroy", "libnccl.so.2", None, True),
                     ("PyNcclCommunicator.destroy", "vllm/distributed/device_communicators/pynccl.py", 200, False))
    assert teardown.category == stacks.TEARDOWN
    assert place(("destroy_process_group", C10D, 2100, False), ("main", "x.py", 3, False)).category == stacks.TEARDOWN
    native = place(("ncclDevKernel_AllGather_RING_LL", "libnccl.so.2", None, True), ("cudaStreamSynchronize", "libcudart.so", None, True))
    assert (native.category, native.op) == (stacks.COLLECTIVE, "all_gather")
    # the outermost framework call names the op: broadcast_object_list, not the broadcast inside it
    outer = place(("broadcast", C10D, 2800, False), ("broadcast_object_list", C10D, 3300, False), ("load", "ckpt.py", 5, False))
    assert outer.op == "broadcast" and outer.where.startswith("broadcast_object_list <- load")
    gatherv = place(("GroupCoordinator.all_gatherv", "vllm/distributed/parallel_state.py", 400, False), ("moe", "m.py", 1, False))
    assert gatherv.op == "all_gatherv"
    assert place(("user_all_reduce_helper", "mine.py", 3, False)).category == stacks.OTHER


def test_progressing_and_frozen_across_samples_with_proc_state():
    rows = []
    for s in range(3):
        for pid in (100, 101, 103):
            rows += frames(pid, job_stack("all_reduce", 11), sample=s)
        rows += frames(102, [("compute", "job.py", 40 + s), ("step", "job.py", 8), ("main", "job.py", 20)], sample=s)
    ts = table_from_rows("thread_samples", [
        {"host": "n1", "pid": pid, "tid": pid, "sample": s, "state": "R" if pid == 102 else "S",
         "wchan": "0" if pid == 102 else "futex_wait_queue", "utime": s * (0.9 if pid == 102 else 0.0), "stime": 0.0}
        for s in range(3) for pid in (100, 101, 102, 103)
    ])
    [f] = stacks.stack_divergence(table(rows), procs({100: 0, 101: 1, 102: 2, 103: 3}), None, ts)
    assert f.ranks == (2,)
    assert f.details["classes"][0]["progress"] == {"rank 2": "progressing"}
    assert set(f.details["classes"][1]["progress"].values()) == {"frozen"}
    assert any(e.startswith("rank 2 MainThread: stack progressing over 3 samples; /proc: R, cpu +1.80 s") for e in f.evidence)
    assert any(e.startswith("rank 0 MainThread: stack frozen") and "S (futex_wait_queue)" in e for e in f.evidence)


def test_ranks_from_collectives_and_launcher_left_out():
    rows = frames(100, job_stack("all_reduce", 11)) + frames(101, job_stack("all_reduce", 11)) + frames(102, job_stack("all_gather", 9))
    rows += frames(1, [("wait", "subprocess.py", 1200), ("run", "torchrun.py", 5)])  # the launcher: no rank
    coll = table_from_rows("collectives", [{"host": "n1", "rank": r, "pid": p, "seq": 1, "op": "all_reduce"} for p, r in ((100, 0), (101, 1), (102, 2))])
    [f] = stacks.stack_divergence(table(rows), None, coll)
    assert f.ranks == (2,) and f.waiting_ranks == (0, 1)
    assert all(1 not in c["pids"] for c in f.details["classes"])


def test_without_ranks_processes_are_named_by_pid():
    rows = frames(100, job_stack("all_reduce", 11)) + frames(101, job_stack("all_reduce", 11)) + frames(102, job_stack("all_gather", 9))
    [f] = stacks.stack_divergence(table(rows))
    assert f.ranks == () and f.summary.startswith("pid 102: all_gather")
    assert f.details["classes"][0]["pids"] == [102]


def test_collective_thread_stands_for_a_busy_main_thread():
    """The main thread waits on a future while a helper thread sits in the collective: that is where the rank is."""
    rows = []
    for pid, op in ((100, "all_reduce"), (101, "all_reduce"), (102, "all_gather")):
        rows += frames(pid, [("wait", "threading.py", 320), ("result", "concurrent/futures/_base.py", 450), ("main", "job.py", 3)])
        rows += frames(pid, job_stack(op, 11), tid=pid + 5000, thread="comm")
    [f] = stacks.stack_divergence(table(rows), procs({100: 0, 101: 1, 102: 2}))
    assert f.ranks == (2,) and f.op == "all_gather"


def test_real_pyspy_dumps_of_the_gloo_hang():
    """Stacks py-spy took from a real 4-rank gloo job where rank 2 posted all_gather, the others all_reduce."""
    bundle = pyspy.read(sorted(FIXTURES.glob("gloo_mismatch_rank*.json")))
    [f] = stacks.stack_divergence(bundle.table("py_frames"), bundle.table("processes"))
    assert f.ranks == (2,) and (f.op, f.expected_op, f.role) == ("all_gather", "all_reduce", "cause")
    tree = f.details["tree"]
    assert tree["who"] == [0, 1, 2, 3]
    main = tree["children"][0]["children"][0]
    assert main["frame"].startswith("main (worker.py") and sorted(c["who"] for c in main["children"]) == [[0, 1, 3], [2]]


def test_pass_reads_tables_from_context():
    class Ctx:
        def __init__(self, tables):
            self.tables, self.findings = tables, []

        def table(self, name):
            if name not in self.tables:
                raise KeyError(name)
            return self.tables[name]

    bundle = pyspy.read(sorted(FIXTURES.glob("gloo_mismatch_rank*.json")))
    ctx = Ctx({"py_frames": bundle.table("py_frames"), "processes": bundle.table("processes")})
    assert [f.ranks for f in stacks.stack_classes(ctx)] == [(2,)]
    assert stacks.stack_classes(Ctx({})) == []


# --- native frames (capture --native) ---------------------------------------------------------------------------
LIBC, LIBPY = "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/libpython3.11.so.1.0"
SLEEP = [("clock_nanosleep", LIBC, 0, True), ("time_sleep", LIBPY, 0, True)]
LOCK = [("0x7f9c7a0a3f16", LIBC, 0, True), ("PyThread_acquire_lock_timed", LIBPY, 0, True),
        ("lock_PyThread_acquire_lock", LIBPY, 0, True)]
PY = [("wait_here", "job.py", 5), ("<module>", "job.py", 9), ("0x7f9c7a04524a", LIBC, 0, True)]


def test_native_frames_split_stacks_that_python_frames_cannot():
    rows = frames(100, SLEEP + PY) + frames(101, SLEEP + PY) + frames(102, LOCK + PY)
    [f] = stacks.stack_divergence(table(rows), procs({100: 0, 101: 1, 102: 2}))
    assert f.ranks == (2,) and [c["who"] for c in f.details["classes"]] == [[2], [0, 1]]
    assert f.summary == ("rank 2: wait_here <- <module> in PyThread_acquire_lock_timed; "
                         "ranks 0,1: wait_here <- <module> in clock_nanosleep")
    # the same Python stacks without their native frames are one class
    python_only = [r for r in rows if not r["native"]]
    assert stacks.stack_divergence(table(python_only), procs({100: 0, 101: 1, 102: 2})) == []


def test_native_addresses_do_not_split_and_a_python_only_stack_is_not_odd():
    moved = [("0x7fffdeadbeef", LIBC, 0, True)] + SLEEP + PY[:2] + [("0x55aa00112233", LIBC, 0, True)]
    rows = frames(100, SLEEP + PY) + frames(101, moved)
    assert stacks.stack_divergence(table(rows), procs({100: 0, 101: 1})) == []  # ASLR moves bare addresses
    # rank 2 could not be paused (Python frames only): natives are then left out for everyone
    rows += frames(102, [fr for fr in LOCK + PY if len(fr) == 3])
    assert stacks.stack_divergence(table(rows), procs({100: 0, 101: 1, 102: 2})) == []


def test_native_frames_inside_a_collective_do_not_split_it():
    gloo_a = [("gloo::transport::tcp::UnboundBuffer::waitRecv", "libtorch_cpu.so", 0, True)]
    gloo_b = [("pthread_cond_wait", LIBC, 0, True), ("gloo::transport::tcp::UnboundBuffer::waitSend", "libtorch_cpu.so", 0, True)]
    rows = frames(100, gloo_a + job_stack("all_reduce", 11)) + frames(101, gloo_b + job_stack("all_reduce", 11))
    assert stacks.stack_divergence(table(rows), procs({100: 0, 101: 1})) == []
