"""Which processes to capture: the ones asked for, or the job found by itself.

Without a selector, the job is: processes holding a GPU (NVML), processes whose title or command line
looks like vLLM / SGLang / TensorRT-LLM / a torchrun launcher, processes with torchrun/MPI rank variables
in their environment, plus their launchers (parents, up to a shell or init) and all their children.
`--pid` of a launcher (`timeout`, torchrun, a shell) also takes the descendants that look like the job in
the same way, since those are the processes that hold the GPUs.
Scanning reads /proc/PID/stat, cmdline and (without a selector, or with --pid) environ of every process;
cmdline and environ take the target's mmap lock, so the scan runs in a DaemonPool with a deadline.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Container, Iterable, Mapping, Sequence

from hangdoc.capture.timeouts import DaemonPool, read_bytes

# Titles and command lines of serving/training job processes.
JOB_PATTERN = re.compile(
    r"^VLLM::|^sglang::|^ray::(?:RayWorkerWrapper|DPEngineCore|EngineCore)"
    r"|\bvllm(?:\s+serve\b|\.entrypoints\b|/entrypoints/)"
    r"|\bsglang\.(?:launch_server|srt\.)"
    r"|tensorrt_llm|\btrtllm-(?:serve|llmapi-launch|bench)\b"
    r"|\btorchrun\b|torch\.distributed\.(?:run|launch)\b|torch/distributed/(?:run|launch)\.py"
)
# Where walking up from a job process stops: shells, session managers and init-like processes.
STOP_NAMES = frozenset(
    {
        "bash", "sh", "dash", "zsh", "fish", "ksh", "tcsh", "csh", "sshd", "sshd-session", "tmux", "tmux: server",
        "screen", "SCREEN", "login", "sudo", "su", "runuser", "setpriv", "systemd", "init", "tini", "dumb-init",
        "docker-init", "containerd-shim", "containerd-shim-runc-v2", "conmon", "slurmstepd", "process_api",
        "sshd: root", "xargs", "make",
    }
)
MAX_PARENT_DEPTH = 4
RANK_ENV_VARS = (b"RANK=", b"OMPI_COMM_WORLD_RANK=", b"PMI_RANK=")


@dataclass(frozen=True)
class ProcEntry:
    """What the scan learned of one process."""

    pid: int
    ppid: int
    comm: str
    cmdline: tuple[str, ...] = ()
    rank_env: bool = False  # torchrun/MPI rank variables in its environment

    @property
    def text(self) -> str:
        return " ".join(self.cmdline) if self.cmdline else self.comm


@dataclass
class Selection:
    pids: list[int]
    reasons: dict[int, str]
    notes: list[str] = field(default_factory=list)


def _read_entry(pid: int, want_env: bool) -> ProcEntry | None:
    try:
        stat = read_bytes(f"/proc/{pid}/stat", 4096)
    except OSError:
        return None
    close = stat.rfind(b")")
    comm = stat[stat.find(b"(") + 1 : close].decode("utf-8", "replace")
    ppid = int(stat[close + 2 :].split()[1])
    try:
        raw = read_bytes(f"/proc/{pid}/cmdline", 1 << 16)
        cmdline = tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0") if a)
    except OSError:
        cmdline = ()
    rank_env = False
    if want_env and cmdline:
        try:
            env = read_bytes(f"/proc/{pid}/environ", 1 << 20)
            rank_env = any(env.startswith(v) or b"\0" + v in env for v in RANK_ENV_VARS)
        except OSError:
            pass
    return ProcEntry(pid, ppid, comm, cmdline, rank_env)


def scan_processes(*, want_env: bool, timeout: float = 5.0) -> tuple[dict[int, ProcEntry], list[str]]:
    """Every process of this pid namespace (kernel threads left out)."""
    notes: list[str] = []
    pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    pool = DaemonPool(workers=4, name="hangdoc-scan")
    try:
        futures = {pid: pool.submit(_read_entry, pid, want_env) for pid in pids}
        late = pool.wait(futures.values(), time.monotonic() + timeout)
    finally:
        pool.close()
    table: dict[int, ProcEntry] = {}
    slow = []
    for pid, fut in futures.items():
        if fut in late:
            slow.append(pid)
            continue
        entry = fut.result() if fut.exception() is None else None
        if entry is not None and entry.pid != 2 and entry.ppid != 2:
            table[pid] = entry
    if slow:
        notes.append(f"process scan: /proc of pid(s) {sorted(slow)[:10]} did not answer within {timeout:g} s; skipped")
    if want_env and os.geteuid() != 0:
        notes.append("not root: other users' environments are unreadable, so workers were found by title, command line and GPU only")
    return table, notes


def children_map(table: Mapping[int, ProcEntry]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in table.values():
        out.setdefault(entry.ppid, []).append(entry.pid)
    return out


def descendants(pid: int, children: Mapping[int, list[int]]) -> list[int]:
    out, stack = [], list(children.get(pid, ()))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children.get(child, ()))
    return out


def own_lineage(table: Mapping[int, ProcEntry], self_pid: int) -> set[int]:
    """This process and its ancestors (the shell or test runner that started it): never targets.

    Its children stay eligible: a program that starts a job and captures it in-process may want them.
    """
    mine = {self_pid}
    pid = self_pid
    while pid in table and pid > 1:
        pid = table[pid].ppid
        mine.add(pid)
    return mine


def job_reason(entry: ProcEntry, gpu_pids: Container[int]) -> str | None:
    """Why a process looks like part of a job (holds a GPU, a rank environment, a job title), else None."""
    if entry.pid in gpu_pids:
        return "holds a GPU"
    if JOB_PATTERN.search(entry.text):
        return "title/command line"
    if entry.rank_env:
        return "rank environment"
    return None


def _launchers(pid: int, table: Mapping[int, ProcEntry], excluded: set[int]) -> list[int]:
    """Parents of a job process up to a shell, init or our own lineage."""
    out = []
    entry = table.get(pid)
    for _ in range(MAX_PARENT_DEPTH):
        if entry is None or entry.ppid <= 1 or entry.ppid in excluded:
            break
        parent = table.get(entry.ppid)
        if parent is None or parent.comm in STOP_NAMES:
            break
        out.append(parent.pid)
        entry = parent
    return out


def select_targets(
    table: Mapping[int, ProcEntry],
    self_pid: int,
    *,
    pids: Sequence[int] = (),
    match: str | None = None,
    trees: Sequence[int] = (),
    gpu_pids: Iterable[int] = (),
) -> Selection:
    """Targets in pid order with the reason each was picked. Pure: works on a scanned (or hand-built) table."""
    gpu_pids = set(gpu_pids)
    excluded = own_lineage(table, self_pid)
    children = children_map(table)
    reasons: dict[int, str] = {}
    notes: list[str] = []

    direct: set[int] = set()

    def add(pid: int, why: str, *, own: bool = False) -> None:
        """Record a target; its own reason beats being someone's child or launcher."""
        if pid in table and pid not in excluded and pid not in direct:
            if own or pid not in reasons:
                reasons[pid] = why
            if own:
                direct.add(pid)

    def add_job(pid: int, why: str) -> None:
        if pid not in table or pid in excluded:
            return
        add(pid, why, own=True)
        for parent in _launchers(pid, table, excluded):
            add(parent, f"launcher of {pid}")
        for child in descendants(pid, children):
            add(child, f"child of {pid}")

    for pid in pids:
        if pid not in table:
            notes.append(f"--pid {pid}: no such process")
            continue
        add(pid, "--pid", own=True)
        for child in descendants(pid, children):  # a wrapper's job: what holds the GPUs or has a rank
            why = job_reason(table[child], gpu_pids)
            if why is not None:
                add(child, f"under --pid {pid}: {why}")
    for root in trees:
        if root not in table:
            notes.append(f"--tree {root}: no such process")
            continue
        add(root, "--tree", own=True)
        for child in descendants(root, children):
            add(child, f"child of {root}")
    if match is not None:
        regex = re.compile(match)
        for entry in table.values():
            if regex.search(entry.text) or regex.search(entry.comm):
                add_job(entry.pid, "--match")
    if not pids and not trees and match is None:
        for pid in sorted(gpu_pids):
            add_job(pid, "holds a GPU")
        for entry in table.values():
            why = job_reason(entry, ())
            if why is not None:
                add_job(entry.pid, why)
    return Selection(sorted(reasons), reasons, notes)
