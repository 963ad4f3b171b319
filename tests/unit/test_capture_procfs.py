"""/proc parsing and thread sampling on this very process; bounded reads on a read that really blocks."""
from __future__ import annotations

import os
import threading
import time

import pytest

from hangdoc.capture import procfs
from hangdoc.capture.timeouts import DaemonPool, Timeout, read_bytes, run_bounded

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


def test_parse_stat_with_awkward_comm():
    line = b"4242 (VLLM::W (x) y) R 1 4242 4242 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 117 0 5000 0 0\n"
    comm, state, utime, stime = procfs.parse_stat(line)
    assert (comm, state) == ("VLLM::W (x) y", "R")
    assert (utime, stime) == (250 / procfs.CLK_TCK, 30 / procfs.CLK_TCK)


def test_parse_status_syscall_and_stack():
    status = read_bytes(f"/proc/{os.getpid()}/status")
    vol, nonvol = procfs.parse_ctxt_switches(status)
    assert vol is not None and vol >= 0 and nonvol is not None
    assert procfs.parse_syscall(b"running\n") == "running"
    assert procfs.parse_syscall(b"-1 0x7ffd 0x7f00\n") == "-1"
    nr = next(n for n, name in procfs.SYSCALL_NAMES.items() if name == "futex") if procfs.SYSCALL_NAMES else 202
    assert procfs.parse_syscall(f"{nr} 0x1 0x2\n".encode()) == procfs.SYSCALL_NAMES.get(nr, str(nr))
    assert procfs.parse_syscall(b"99999 0x1\n") == "99999"
    frames = procfs.parse_kernel_stack(b"[<0>] futex_wait_queue+0x60/0x90\n[<0>] do_syscall_64+0x5b/0x80\n")
    assert frames == ["futex_wait_queue+0x60/0x90", "do_syscall_64+0x5b/0x80"]


def test_samples_every_thread_and_sees_a_blocked_one():
    ev = threading.Event()
    waiter = threading.Thread(target=ev.wait, name="hangdoc-test-waiter", daemon=True)
    waiter.start()
    try:
        time.sleep(0.05)
        seen_samples = []
        out = procfs.collect_threads([os.getpid()], "h", samples=2, interval=0.05, on_sample=seen_samples.append)
        rows = out.tables["thread_samples"].to_pylist()
        assert seen_samples == [0, 1]
        tids = set(os.listdir(f"/proc/{os.getpid()}/task"))
        assert {str(r["tid"]) for r in rows if r["sample"] == 0} >= {str(waiter.native_id)}
        mine = [r for r in rows if r["tid"] == waiter.native_id]
        assert [r["sample"] for r in mine] == [0, 1]
        assert all(r["state"] == "S" and r["syscall"] in ("futex", str(202)) for r in mine), mine
        assert all(r["utime"] is not None and r["voluntary_ctxt_switches"] is not None for r in mine)
        assert str(os.getpid()) in tids
        if os.geteuid() == 0:
            stacks = {r["tid"]: r["frames"] for r in out.tables["kernel_stacks"].to_pylist()}
            assert any("futex" in f for f in stacks[waiter.native_id])
    finally:
        ev.set()
        waiter.join(5)


def test_a_missing_process_is_gone_not_an_error():
    out = procfs.collect_threads([2**22 + 12345], "h", samples=1, interval=0.0)
    assert out.tables["thread_samples"].num_rows == 0
    assert any("exited" in n for n in out.notes)


def test_blocking_read_is_bounded(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)  # opening a FIFO for reading blocks until a writer appears: a read that really hangs
    t0 = time.monotonic()
    with pytest.raises(Timeout):
        run_bounded(read_bytes, fifo, timeout=0.3)
    pool = DaemonPool(workers=1)
    stuck = pool.submit(read_bytes, fifo)
    late = pool.wait([stuck], time.monotonic() + 0.3)
    assert late == [stuck]
    # the stuck worker was replaced: the pool still answers
    assert pool.submit(lambda: 42).result(timeout=2) == 42
    assert time.monotonic() - t0 < 5
    # release the blocked readers (one writer wakes them all) so their threads end
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    pool.close()
