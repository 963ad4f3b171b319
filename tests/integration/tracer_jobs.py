"""Helpers for the tracer's real-process tests: run commands in their own session, poll trace files, kill."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from hangdoc.importers import hangdoc_trace

TIMEOUT_S = 180  # torch imports and rendezvous on a busy 2-core machine


def hangdoc_exe() -> str:
    beside = Path(sys.executable).with_name("hangdoc")
    found = str(beside) if beside.exists() else shutil.which("hangdoc")
    if not found:
        pytest.fail("the hangdoc console script is not installed (pip install -e .)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "HANGDOC_TRACE_DIR"}
    e.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return e


def start(cmd: list[str], cwd: Path, **extra: str) -> subprocess.Popen[str]:
    """A new session, so that the whole job (launcher and workers) can be killed as one process group."""
    return subprocess.Popen(cmd, cwd=cwd, env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def kill_group(proc: subprocess.Popen[str]) -> str:
    """SIGKILL the job: its session, and every descendant (torchrun starts each worker in a session of its
    own, so the process group alone would leave blocked ranks behind). Returns what it printed."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in descendants:
        try:
            child.kill()
        except psutil.Error:
            pass
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        out = ""
    return out or ""


def run_job(cmd: list[str], cwd: Path, timeout: float = TIMEOUT_S, **extra: str) -> tuple[int, str]:
    """Run to completion in a session of its own; on timeout or failure nothing it started is left."""
    proc = start(cmd, cwd, **extra)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        pytest.fail(f"{cmd[0]} ... did not finish in {timeout} s:\n{kill_group(proc)[-3000:]}")
    finally:
        kill_group(proc)  # workers that outlived their parent, if any


def rows(trace_dir: Path) -> list[dict[str, Any]]:
    files = sorted(trace_dir.glob("*.hdtrace"))
    if not files:
        return []
    return hangdoc_trace.read(files).table("collectives").to_pylist()


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen[str] | None, what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None and not cond():
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"job exited ({proc.returncode}) before {what}:\n{out[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")
