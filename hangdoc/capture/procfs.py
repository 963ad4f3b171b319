"""Threads over time from /proc: state, wchan, CPU time, context switches, syscall, kernel stack.

CPU-time deltas between samples tell a spinning thread (state R, wchan 0, utime growing: an NCCL
spin-wait's host thread) from a blocked one (futex, epoll). Files are read with raw os calls, not psutil,
so a node of 8 processes x 100 threads is sampled in well under a second.

Which reads can block: /proc/PID/task/TID/stack and .../syscall take the target's exec_update_lock
(they wait while the target is stuck in exec); stat, status and wchan do not take locks a hung target
can hold. All of a process's reads run as one job in a DaemonPool with a deadline per sample, so a read
that blocks strands one worker thread, never the capture. Nothing here writes to /proc or signals a target.
"""
from __future__ import annotations

import os
import platform
import threading
import time
from collections import Counter
from concurrent.futures import Future
from typing import Any, Callable, Sequence

from hangdoc.capture.base import CollectorOutput
from hangdoc.capture.timeouts import DaemonPool, read_bytes
from hangdoc.schema import table_from_rows

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Syscalls a hung thread is typically parked in, by architecture (numbers from the kernel's tables).
_SYSCALLS = {
    "x86_64": {
        0: "read", 1: "write", 7: "poll", 16: "ioctl", 23: "select", 24: "sched_yield", 35: "nanosleep",
        42: "connect", 43: "accept", 44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 61: "wait4",
        202: "futex", 228: "clock_gettime", 230: "clock_nanosleep", 232: "epoll_wait", 247: "waitid",
        270: "pselect6", 271: "ppoll", 281: "epoll_pwait", 288: "accept4", 426: "io_uring_enter",
        441: "epoll_pwait2", 449: "futex_waitv",
    },
    "aarch64": {
        22: "epoll_pwait", 29: "ioctl", 63: "read", 64: "write", 72: "pselect6", 73: "ppoll", 95: "waitid",
        98: "futex", 101: "nanosleep", 113: "clock_gettime", 115: "clock_nanosleep", 124: "sched_yield",
        202: "accept", 203: "connect", 206: "sendto", 207: "recvfrom", 211: "sendmsg", 212: "recvmsg",
        242: "accept4", 260: "wait4", 426: "io_uring_enter", 441: "epoll_pwait2", 449: "futex_waitv",
    },
}
SYSCALL_NAMES: dict[int, str] = _SYSCALLS.get(platform.machine(), {})


def parse_stat(data: bytes) -> tuple[str, str, float, float]:
    """(comm, state, utime s, stime s) from a /proc/.../stat line; comm may hold spaces and parentheses."""
    open_, close = data.find(b"("), data.rfind(b")")
    comm = data[open_ + 1 : close].decode("utf-8", "replace")
    rest = data[close + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return comm, rest[0].decode(), int(rest[11]) / CLK_TCK, int(rest[12]) / CLK_TCK


def parse_ctxt_switches(status: bytes) -> tuple[int | None, int | None]:
    """(voluntary, nonvoluntary) context switches from /proc/.../status."""
    vol = nonvol = None
    i = status.find(b"\nvoluntary_ctxt_switches:")
    if i >= 0:
        vol = int(status[i + 25 : status.find(b"\n", i + 1)])
    i = status.find(b"\nnonvoluntary_ctxt_switches:")
    if i >= 0:
        end = status.find(b"\n", i + 1)
        nonvol = int(status[i + 28 : end if end >= 0 else None])
    return vol, nonvol


def parse_syscall(data: bytes) -> str | None:
    """'running', a syscall name (number when unknown), or '-1' when blocked outside any syscall."""
    text = data.decode("ascii", "replace").strip()
    if not text:
        return None
    first = text.split()[0]
    if first == "running":
        return first
    try:
        nr = int(first)
    except ValueError:
        return first
    return SYSCALL_NAMES.get(nr, str(nr))


def parse_kernel_stack(data: bytes) -> list[str]:
    """Frames of /proc/.../stack, innermost first, without the '[<0>] ' address column."""
    frames = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("[<"):
            line = line[line.find("]") + 1 :].strip()
        if line:
            frames.append(line)
    return frames


class _ProcessJob:
    """Reads every thread of one process once. Runs in a pool worker."""

    def __init__(self, host: str, pid: int, sample: int, want_stack: bool) -> None:
        self.host, self.pid, self.sample, self.want_stack = host, pid, sample, want_stack
        self.rows: list[dict[str, Any]] = []
        self.stacks: list[dict[str, Any]] = []
        self.denied: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.gone = False

    def _read(self, path: str, what: str) -> bytes | None:
        try:
            return read_bytes(path, 1 << 16)
        except PermissionError:
            self.denied[what] += 1
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread exited between listing and reading
        except OSError:
            self.failed[what] += 1
        return None

    def __call__(self) -> "_ProcessJob":
        base = f"/proc/{self.pid}/task"
        try:
            tids = sorted(int(t) for t in os.listdir(base))
        except (FileNotFoundError, ProcessLookupError):
            self.gone = True
            return self
        except PermissionError:
            self.denied["task"] += 1
            return self
        for tid in tids:
            d = f"{base}/{tid}/"
            stat = self._read(d + "stat", "stat")
            if stat is None:
                continue
            t = time.time()
            try:
                comm, state, utime, stime = parse_stat(stat)
            except (ValueError, IndexError):
                self.failed["stat"] += 1
                continue
            status = self._read(d + "status", "status")
            vol, nonvol = parse_ctxt_switches(status) if status else (None, None)
            wchan = self._read(d + "wchan", "wchan")
            syscall = self._read(d + "syscall", "syscall")
            self.rows.append(
                {
                    "host": self.host,
                    "pid": self.pid,
                    "tid": tid,
                    "comm": comm,
                    "sample": self.sample,
                    "t": t,
                    "state": state,
                    "wchan": wchan.decode("utf-8", "replace").strip() if wchan is not None else None,
                    "utime": utime,
                    "stime": stime,
                    "voluntary_ctxt_switches": vol,
                    "nonvoluntary_ctxt_switches": nonvol,
                    "syscall": parse_syscall(syscall) if syscall is not None else None,
                }
            )
            if self.want_stack:
                stack = self._read(d + "stack", "stack")
                if stack is not None:
                    self.stacks.append(
                        {"host": self.host, "pid": self.pid, "tid": tid, "frames": parse_kernel_stack(stack)}
                    )
        return self


_WHY_DENIED = {
    "stack": "kernel stacks need root (CAP_SYS_ADMIN)",
    "syscall": "current syscalls need ptrace access to the target (root, CAP_SYS_PTRACE, or same user with ptrace_scope 0)",
    "task": "thread lists need read access to /proc/PID/task",
}


def collect_threads(
    pids: Sequence[int],
    host: str,
    *,
    samples: int = 3,
    interval: float = 0.5,
    stacks: bool = True,
    read_timeout: float = 2.0,
    on_sample: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    partial: CollectorOutput | None = None,
) -> CollectorOutput:
    """`samples` snapshots of every thread of `pids`, `interval` seconds apart; kernel stacks with the first.

    A thread or process that exits mid-capture gets one row with state 'gone' in the first sample it is
    missing from. `partial`, when given, is filled as samples complete, so an interrupted capture keeps them.
    """
    out = partial if partial is not None else CollectorOutput()
    rows: list[dict[str, Any]] = []
    stack_rows: list[dict[str, Any]] = []
    denied: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    seen: dict[int, set[int]] = {}
    comms: dict[tuple[int, int], str] = {}
    gone_pids: dict[int, int] = {}
    stuck: set[int] = set()
    taken = 0
    pool = DaemonPool(workers=min(8, max(2, len(pids))), name="hangdoc-procfs")
    start = time.monotonic()
    try:
        for k in range(samples):
            due = start + k * interval
            wait = due - time.monotonic()
            if wait > 0 and stop is not None and stop.wait(wait):
                break
            if wait > 0 and stop is None:
                time.sleep(wait)
            if stop is not None and stop.is_set():
                break
            taken = k + 1
            live = [p for p in pids if p not in gone_pids and p not in stuck]
            jobs: dict[int, Future] = {p: pool.submit(_ProcessJob(host, p, k, stacks and k == 0)) for p in live}
            late = pool.wait(jobs.values(), time.monotonic() + read_timeout)
            for pid, fut in jobs.items():
                if fut in late and fut.cancelled():  # queued behind a stuck read, never started
                    out.notes.append(f"pid {pid}: sample {k} skipped, every reader was busy")
                    continue
                if fut in late:
                    stuck.add(pid)
                    out.notes.append(
                        f"pid {pid}: /proc reads did not return within {read_timeout:g} s in sample {k}"
                        " (target blocked in the kernel?); its later samples were skipped"
                    )
                    continue
                job: _ProcessJob = fut.result()
                denied.update(job.denied)
                failed.update(job.failed)
                now = {r["tid"] for r in job.rows}
                for tid in sorted(seen.get(pid, set()) - now):
                    rows.append(
                        {"host": host, "pid": pid, "tid": tid, "comm": comms.get((pid, tid)), "sample": k,
                         "t": time.time(), "state": "gone"}
                    )
                if job.gone:
                    gone_pids[pid] = k
                for r in job.rows:
                    comms[(pid, r["tid"])] = r["comm"]
                seen[pid] = now
                rows.extend(job.rows)
                stack_rows.extend(job.stacks)
            out.tables["thread_samples"] = table_from_rows("thread_samples", rows)
            out.tables["kernel_stacks"] = table_from_rows("kernel_stacks", stack_rows)
            if on_sample is not None:
                on_sample(k)
    finally:
        pool.close()
        if taken < samples:
            out.notes.append(f"stopped early: {taken} of {samples} samples taken")
        for pid, k in sorted(gone_pids.items()):
            out.notes.append(f"pid {pid}: exited before sample {k}; recorded as gone")
        for what, n in sorted(denied.items()):
            why = _WHY_DENIED.get(what, "permission denied")
            out.notes.append(f"{n} read(s) of /proc/.../{what} denied: {why}")
        for what, n in sorted(failed.items()):
            out.notes.append(f"{n} read(s) of /proc/.../{what} failed")
        out.tables["thread_samples"] = table_from_rows("thread_samples", rows)
        out.tables["kernel_stacks"] = table_from_rows("kernel_stacks", stack_rows)
    return out
