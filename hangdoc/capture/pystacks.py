"""Python stacks of the targets with py-spy; native frames too when asked for, at the cost of a pause.

By default every dump runs with `--nonblocking`: py-spy reads the target's memory while it runs
instead of stopping it, which is what a production job can afford. Native frames (NCCL, CUDA, libc:
where a hang in `ncclCommDestroy` or a kernel-launch spin shows) need a stopped target to unwind, so
py-spy refuses `--native` with `--nonblocking`; `native=True` therefore dumps without it, which pauses
each target for as long as the unwind takes (milliseconds to tens of milliseconds). A target whose
native dump fails is dumped again Python-only, non-blocking, and the reason becomes a note. Targets are
dumped in parallel, each under its own timeout; a py-spy that overruns is killed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hangdoc.capture.base import CollectorOutput
from hangdoc.importers.pyspy import parse_json_text
from hangdoc.schema import table_from_rows

def find_pyspy() -> str | None:
    """The py-spy installed with hangdoc (beside this interpreter, or beside the base interpreter a venv with
    system site-packages links to), else the one on PATH (which may be a version manager's shim)."""
    for python in (Path(sys.executable), Path(os.path.realpath(sys.executable))):
        beside = python.parent / "py-spy"
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("py-spy")


@dataclass
class _Attempt:
    ok: bool
    rows: list[dict[str, Any]]
    message: str  # py-spy's own first error line, or why it did not finish
    timed_out: bool = False


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Stack backtrace", "Caused by")):
            return line.removeprefix("Error: ")
    return "no output"


def _run(binary: str, pid: int, host: str, native: bool, timeout_s: float, sample: int) -> _Attempt:
    cmd = [binary, "dump", "--pid", str(pid), "--json", "--native" if native else "--nonblocking"]
    env = dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    except OSError as exc:
        return _Attempt(False, [], f"cannot run py-spy: {exc.strerror or exc}")
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:  # a py-spy stuck in the kernel (a target in D state) may not die at once: do not wait on it
            proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        return _Attempt(False, [], f"py-spy did not finish in {timeout_s:g} s (killed)", timed_out=True)
    if proc.returncode == 0:
        rows = parse_json_text(stdout, host=host, sample=sample)
        for row in rows:
            row["pid"] = row["pid"] if row["pid"] is not None else pid
        return _Attempt(True, rows, "")
    return _Attempt(False, [], _first_error_line(stderr or stdout))


def _explain(pid: int, message: str) -> str:
    """A note that says what happened in the user's terms, keeping py-spy's own words."""
    low = message.lower()
    if not _pid_alive(pid):
        why = "the process exited before its stacks were read"
    elif "permission denied" in low or "operation not permitted" in low:
        why = "permission denied: run as root, or grant CAP_SYS_PTRACE (containers: --cap-add SYS_PTRACE)"
    elif "executable name" in low:
        why = "its executable cannot be read (/proc/PID/exe): another user's process, or not permitted"
    elif "failed to find python version" in low or "doesn't look like a python" in low:
        why = "not a Python process py-spy can read"
    elif "unsupported" in low and "version" in low:
        why = "this Python version is not supported by the installed py-spy"
    else:
        why = "py-spy failed"
    return f"pid {pid}: no Python stacks ({why}; py-spy said: {message})"


def _pid_alive(pid: int) -> bool:
    """Running (a zombie has exited: its stacks are gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] != "Z"


def _transient(message: str) -> bool:
    """Failures of a read racing the running target (nonblocking mode), worth one more try."""
    low = message.lower()
    return any(k in low for k in ("failed to get stack", "failed to copy", "failed to read", "error reading"))


def _dump_one(binary: str, pid: int, host: str, native: bool, deadline: float, sample: int) -> tuple[_Attempt, str | None]:
    """Dump one target, all attempts within `deadline`; returns the attempt and, when native was asked
    for but dropped, py-spy's reason."""
    left = lambda: max(0.001, deadline - time.monotonic())  # noqa: E731
    native_failed: str | None = None
    attempt = _run(binary, pid, host, native, left(), sample)
    if not attempt.ok and native and not attempt.timed_out and _pid_alive(pid):
        # e.g. ptrace refused (stopping a process needs more than reading it) or an unwinder error
        plain = _run(binary, pid, host, False, left(), sample)
        if plain.ok:
            native_failed = attempt.message
        attempt = plain
    if not attempt.ok and not attempt.timed_out and _transient(attempt.message) and _pid_alive(pid):
        retry = _run(binary, pid, host, False, left(), sample)
        if retry.ok:
            attempt = retry
    return attempt, native_failed


def collect_py_stacks(
    pids: Sequence[int], host: str, *, native: bool = False, timeout_s: float = 10.0, sample: int = 0
) -> CollectorOutput:
    """py_frames rows for every target py-spy can read; a note for every one it cannot, and why.

    `native`: take native frames too, pausing each target while py-spy unwinds it. `timeout_s` bounds the
    whole collector: every target's dump (with its fallbacks) ends by then.
    """
    out = CollectorOutput()
    pids = list(dict.fromkeys(int(p) for p in pids))
    if not pids:
        return out
    binary = find_pyspy()
    if binary is None:
        out.notes.append("py-spy not found (it is installed with hangdoc; check the environment): no Python stacks")
        return out
    results: dict[int, tuple[_Attempt, str | None]] = {}
    deadline = time.monotonic() + timeout_s
    # Daemon threads rather than a pool: a py-spy stuck in the kernel must not hold up hangdoc's exit.
    threads = []
    for pid in pids:
        t = threading.Thread(
            target=lambda p=pid: results.__setitem__(p, _dump_one(binary, p, host, native, deadline, sample)),
            name=f"hangdoc-pyspy-{pid}", daemon=True,
        )
        t.start()
        threads.append(t)
    for t in threads:  # every py-spy is killed at the deadline; 3 s more for the kills to land
        t.join(max(0.0, deadline + 3 - time.monotonic()))
    rows: list[dict[str, Any]] = []
    refused: dict[str, list[int]] = {}
    for pid in pids:
        if pid not in results:
            out.notes.append(f"pid {pid}: no Python stacks (py-spy still running at the deadline; abandoned)")
            continue
        attempt, native_failed = results[pid]
        if attempt.ok and native_failed:
            refused.setdefault(native_failed, []).append(pid)
        if attempt.ok:
            rows.extend(attempt.rows)
            if not attempt.rows:
                out.notes.append(f"pid {pid}: py-spy found no Python threads")
        elif attempt.timed_out:
            out.notes.append(f"pid {pid}: no Python stacks ({attempt.message})")
        else:
            out.notes.append(_explain(pid, attempt.message))
    for message, refused_pids in refused.items():
        out.notes.append(
            f"native stacks unavailable for pid(s) {', '.join(map(str, refused_pids))} "
            f"(py-spy said: {message}); Python-only stacks taken without pausing"
        )
    out.tables["py_frames"] = table_from_rows("py_frames", rows)
    return out
