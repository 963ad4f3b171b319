"""collect_py_stacks on real processes: stacks read without pausing, failures become notes."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from hangdoc.capture import pystacks

TARGET = textwrap.dedent(
    """
    import threading, time

    def spin_forever():
        x = 0
        while True:
            x += 1

    def parked_in_wait(ev):
        print("ready", flush=True)
        ev.wait(120)

    threading.Thread(target=spin_forever, name="spinner", daemon=True).start()
    parked_in_wait(threading.Event())
    """
)


@pytest.fixture
def target():
    proc = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # "ready" is printed just before the wait: let the main thread get into it
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


needs_pyspy = pytest.mark.skipif(pystacks.find_pyspy() is None, reason="py-spy not installed")


@needs_pyspy
def test_stacks_of_a_running_process(target):
    out = pystacks.collect_py_stacks([target], "node1", sample=2, timeout_s=30)
    rows = out.tables["py_frames"].to_pylist()
    main = sorted((r for r in rows if r["thread_name"] == "MainThread"), key=lambda r: r["depth"])
    names = [r["function"] for r in main]
    assert "parked_in_wait" in names and names[-1] == "<module>"
    assert names.index("parked_in_wait") < names.index("<module>")  # depth 0 is the innermost frame
    assert all(r["tid"] == target and r["pid"] == target and r["idle"] is True for r in main)
    spinner = [r for r in rows if r["thread_name"] == "spinner"]
    assert spinner and spinner[0]["function"] == "spin_forever"
    assert {(r["host"], r["sample"], r["source"]) for r in rows} == {("node1", 2, "py-spy")}
    # the target kept running: py-spy ran --nonblocking, never stopping it, so Python frames only
    assert Path(f"/proc/{target}/stat").read_text().split(") ")[1][0] in "RS"
    assert not any(r["native"] for r in rows) and out.notes == []


BLOCKED_IN_C = textwrap.dedent(
    """
    import functools, os, sys, threading, time
    threading.Timer(120, os._exit, (0,)).start()  # never outlives the test by long
    lock = threading.Lock()
    lock.acquire()
    wait = lock.acquire if sys.argv[1] == "lock" else functools.partial(time.sleep, 120)  # no Python frame

    def wait_here():
        print("ready", flush=True)
        wait()

    wait_here()
    """
)


@needs_pyspy
def test_native_frames_show_which_c_call_each_process_waits_in():
    """Three processes on the same Python line, two in time.sleep and one in Lock.acquire: only their native
    frames tell them apart, and the stack classes then name the odd one."""
    from hangdoc.analysis.stacks import stack_divergence

    procs = [subprocess.Popen([sys.executable, "-c", BLOCKED_IN_C, how], stdout=subprocess.PIPE, text=True,
                              start_new_session=True) for how in ("sleep", "sleep", "lock")]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        pids = [p.pid for p in procs]
        out = pystacks.collect_py_stacks(pids, "node1", native=True, timeout_s=30)
        plain = pystacks.collect_py_stacks(pids, "node1", timeout_s=30)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
    rows = out.tables["py_frames"].to_pylist()
    if not any(r["native"] for r in rows):
        # py-spy could not stop the processes (no ptrace here): the collector fell back and said why
        note = next(n for n in out.notes if "native stacks unavailable" in n)
        pytest.skip(f"py-spy cannot pause processes here: {note}")
    assert not any("native" in n for n in out.notes), out.notes
    native = {pid: [r["function"] for r in sorted(rows, key=lambda r: r["depth"]) if r["pid"] == pid and r["native"]]
              for pid in pids}
    assert "clock_nanosleep" in native[pids[0]] and "PyThread_acquire_lock_timed" in native[pids[2]], native
    [finding] = stack_divergence(out.tables["py_frames"])
    assert [c["pids"] for c in finding.details["classes"]] == [[pids[2]], sorted(pids[:2])]
    assert "in PyThread_acquire_lock_timed" in finding.summary
    assert stack_divergence(plain.tables["py_frames"]) == []  # Python frames alone: one class


@needs_pyspy
def test_gone_and_non_python_processes_are_notes(target):
    sleeper = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    try:
        out = pystacks.collect_py_stacks([dead.pid, sleeper.pid, target], "node1", timeout_s=30)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)
    rows = out.tables["py_frames"].to_pylist()
    assert {r["pid"] for r in rows} == {target}
    gone = next(n for n in out.notes if n.startswith(f"pid {dead.pid}:"))
    assert "exited" in gone and "py-spy said:" in gone
    not_python = next(n for n in out.notes if n.startswith(f"pid {sleeper.pid}:"))
    assert "not a Python process" in not_python


@needs_pyspy
def test_timeout_kills_pyspy_and_notes_it(target):
    out = pystacks.collect_py_stacks([target], "node1", native=False, timeout_s=0.001)
    assert out.tables["py_frames"].num_rows == 0
    assert any("did not finish" in n and "killed" in n for n in out.notes)
    assert Path(f"/proc/{target}").exists()  # the target itself is never touched


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None or pystacks.find_pyspy() is None,
                    reason="needs root and setpriv to run py-spy as an unprivileged user")
def test_permission_denied_is_a_note(target, monkeypatch):
    """py-spy run as an unprivileged user against root's process: the real refusal, reported."""
    wrapdir = Path(tempfile.mkdtemp())
    try:
        binary = wrapdir / "py-spy"
        shutil.copy(pystacks.find_pyspy(), binary)
        wrapper = wrapdir / "py-spy-as-nobody"
        wrapper.write_text(f'#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {binary} "$@"\n')
        wrapdir.chmod(0o755)
        binary.chmod(0o755)
        wrapper.chmod(0o755)
        monkeypatch.setattr(pystacks, "find_pyspy", lambda: str(wrapper))
        out = pystacks.collect_py_stacks([target], "node1", timeout_s=30)
    finally:
        shutil.rmtree(wrapdir, ignore_errors=True)
    assert out.tables["py_frames"].num_rows == 0
    note = next(n for n in out.notes if n.startswith(f"pid {target}:"))
    assert "permission denied" in note and "CAP_SYS_PTRACE" in note and "Permission Denied" in note


def test_no_targets_is_empty():
    out = pystacks.collect_py_stacks([], "node1")
    assert out.tables == {} and out.notes == []
