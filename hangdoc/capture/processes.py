"""One processes row per target: tree, liveness, identity, role, ranks (with their source), allow-listed env.

Reads go through psutil and /proc in a DaemonPool with a deadline (cmdline and environ take the target's
mmap lock). The ranks come from ranks.py in order of trust; the trace source is applied afterwards from
the collectives a trace reader found (apply_trace_ranks), log prefixes from the log scan (apply_log_titles).
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import psutil
import pyarrow as pa

from hangdoc.capture import ranks as rk
from hangdoc.redact import redact_argv, redact_env
from hangdoc.capture.timeouts import DaemonPool, read_bytes

LAUNCHER = re.compile(
    r"\btorchrun\b|torch\.distributed\.(?:run|launch)\b|torch/distributed/(?:run|launch)\.py|\bmpirun\b|\bmpiexec\b"
    r"|\bsrun\b|\bdeepspeed\b|\baccelerate\s+launch\b|\btrtllm-llmapi-launch\b|\bprterun\b|\bhydra_pmi_proxy\b"
)
API = re.compile(
    r"\bvllm(?:\s+serve\b|\.entrypoints\b|/entrypoints/)|\bsglang\.launch_server\b|\bsglang\.srt\.entrypoints\b"
    r"|\btrtllm-serve\b"
)
# Parents a worker is re-attached to when its launcher dies (init and common subreapers).
INIT_LIKE = frozenset({"systemd", "init", "tini", "dumb-init", "docker-init", "containerd-shim", "process_api", "s6-svscan"})
_TITLE_ROLES = {"worker": "worker", "enginecore": "engine", "dpenginecoreactor": "engine", "apiserver": "api",
                "scheduler": "worker", "rayworkerwrapper": "worker"}


@dataclass
class ProcInfo:
    """What was read of one process; env is None when unreadable."""

    pid: int
    ppid: int | None = None
    comm: str | None = None
    cmdline: list[str] = field(default_factory=list)
    exe: str | None = None
    create_time: float | None = None
    status: str = "gone"
    env: dict[str, str] | None = None
    env_error: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    parent_comm: str | None = None
    parent_create_time: float | None = None

    @property
    def title(self) -> str | None:
        """The setproctitle name when there is one (argv rewritten to one string), else comm."""
        if self.cmdline and ("::" in self.cmdline[0] or (len(self.cmdline) == 1 and " " in self.cmdline[0])):
            return self.cmdline[0].strip()
        return self.comm


def parse_environ(raw: bytes) -> dict[str, str]:
    env = {}
    for item in raw.split(b"\0"):
        name, eq, value = item.partition(b"=")
        if eq and name:
            env[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def _output_path(pid: int, fd: int) -> str | None:
    """stdout/stderr when it is a regular file (a log we can scan), else None (pipe, socket, tty)."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    if not target.startswith("/") or target.startswith("/dev/") or target.endswith(" (deleted)"):
        return None
    return target


def read_process(pid: int) -> ProcInfo:
    info = ProcInfo(pid)
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            info.ppid = proc.ppid()
            info.comm = proc.name()
            info.create_time = proc.create_time()
            info.status = proc.status()
            try:
                info.cmdline = proc.cmdline()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                pass
            try:
                info.exe = proc.exe() or None
            except (psutil.AccessDenied, psutil.ZombieProcess):
                pass
    except psutil.NoSuchProcess:
        info.status = "gone"
        return info
    try:
        info.env = parse_environ(read_bytes(f"/proc/{pid}/environ", 1 << 21))
    except PermissionError:
        info.env_error = "permission denied"
    except OSError as exc:
        info.env_error = exc.strerror or str(exc)
    info.stdout_path, info.stderr_path = _output_path(pid, 1), _output_path(pid, 2)
    if info.ppid:
        try:
            parent = psutil.Process(info.ppid)
            info.parent_comm, info.parent_create_time = parent.name(), parent.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return info


def read_processes(pids: Sequence[int], timeout: float = 5.0) -> tuple[list[ProcInfo], list[str]]:
    """ProcInfo per pid (status 'gone' for those that exited); pids whose reads hang are noted and kept minimal."""
    pool = DaemonPool(workers=min(8, max(2, len(pids))), name="hangdoc-proc")
    try:
        futures = {pid: pool.submit(read_process, pid) for pid in pids}
        late = pool.wait(futures.values(), time.monotonic() + timeout)
    finally:
        pool.close()
    infos, notes = [], []
    for pid, fut in futures.items():
        if fut in late:
            notes.append(f"pid {pid}: reading its /proc entries did not finish within {timeout:g} s (target blocked?)")
            infos.append(ProcInfo(pid, status="unknown"))
        elif fut.exception() is not None:
            notes.append(f"pid {pid}: could not read process: {fut.exception()}")
            infos.append(ProcInfo(pid, status="unknown"))
        else:
            infos.append(fut.result())
    return infos, notes


def parent_alive(info: ProcInfo, role: str) -> bool | None:
    """False for an orphan: parent gone, reparented to init (ppid 1), or a worker now under an init-like subreaper."""
    if info.ppid is None:
        return None
    if info.ppid <= 1 or info.parent_create_time is None:
        return False
    if info.create_time is not None and info.parent_create_time > info.create_time + 1:
        return False  # the ppid was reused by a younger process: the real parent is gone
    if role in ("worker", "engine") and info.parent_comm in INIT_LIKE:
        return False
    return True


def role_of(info: ProcInfo, title: rk.Title | None, has_rank: bool, holds_gpu: bool) -> str:
    if title is not None:
        role = _TITLE_ROLES.get(title.name.lower())
        if role:
            return role
    text = " ".join(info.cmdline)
    if LAUNCHER.search(text):
        return "launcher"
    if API.search(text):
        return "api"
    if has_rank or holds_gpu:
        return "worker"
    return "other"


def _gpu_indices(info: ProcInfo, gpu_map: Mapping[int, Sequence[int]]) -> list[int] | None:
    if info.pid in gpu_map:
        return sorted(gpu_map[info.pid])
    visible = (info.env or {}).get("CUDA_VISIBLE_DEVICES", "")
    parts = [p.strip() for p in visible.split(",") if p.strip()]
    if len(parts) == 1 and parts[0].isdigit():
        return [int(parts[0])]
    return None


def process_rows(
    infos: Sequence[ProcInfo], host: str, gpu_map: Mapping[int, Sequence[int]] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the processes table. Pure over ProcInfo, so rank inference is tested on hand-built processes."""
    gpu_map = gpu_map or {}
    notes: list[str] = []
    titles = {i.pid: rk.parse_title(i.title) for i in infos}
    sizes = rk.parallel_sizes([t.indices for t in titles.values() if t], [i.cmdline for i in infos])
    pids_with_worker_child = {
        i.ppid for i in infos if titles[i.pid] is not None and titles[i.pid].name.lower() in ("worker", "scheduler")
    }

    rows = []
    for info in infos:
        title = titles[info.pid]
        env = info.env or {}
        provisional = role_of(info, title, rk.from_env(env, launcher_vars=False) is not None, info.pid in gpu_map)
        ranks = rk.Ranks()
        # Order of trust: env, title, argv (trace and log are applied later). A launcher's MPI/Slurm task id
        # is not a worker rank, so launchers and API servers only take torchrun's per-worker RANK.
        ranks = ranks.merged(rk.from_env(env, launcher_vars=provisional not in ("launcher", "api")))
        if title is not None and title.indices:
            from_title = rk.from_indices(title.indices, sizes, "title")
            if role_of(info, title, False, False) == "engine" and info.pid in pids_with_worker_child:
                from_title.global_rank = None  # its workers hold the ranks; this engine only schedules them
            ranks = ranks.merged(from_title)
        ranks = ranks.merged(rk.from_argv(info.cmdline))
        role = role_of(info, title, ranks.global_rank is not None, info.pid in gpu_map)
        if info.env is None and info.status not in ("gone", "zombie"):
            notes.append(f"pid {info.pid}: environment unreadable ({info.env_error}); ranks from title/argv only")
        rows.append(
            {
                "host": host,
                "pid": info.pid,
                "ppid": info.ppid,
                "parent_alive": parent_alive(info, role),
                "create_time": info.create_time,
                "status": info.status,
                "exe": info.exe,
                "cmdline": redact_argv(info.cmdline),
                "title": info.title,
                "role": role,
                "global_rank": ranks.global_rank,
                "local_rank": ranks.local_rank,
                "world_size": ranks.world_size,
                "tp_rank": ranks.tp_rank,
                "dp_rank": ranks.dp_rank,
                "pp_rank": ranks.pp_rank,
                "ep_rank": ranks.ep_rank,
                "gpu_indices": _gpu_indices(info, gpu_map),
                "rank_source": ranks.source if ranks.global_rank is not None else None,
                "env": list(redact_env(env).items()) if info.env is not None else None,
                "stdout_path": info.stdout_path,
                "stderr_path": info.stderr_path,
            }
        )
    return rows, notes


def apply_log_titles(rows: list[dict[str, Any]], titles: Mapping[int, str]) -> int:
    """Fill ranks of rank-less processes from log prefixes ('(Worker_DP1_TP2 pid=123)'); returns how many."""
    sizes = rk.parallel_sizes([rk.parse_indices(t) for t in titles.values()], [r["cmdline"] or [] for r in rows])
    filled = 0
    for row in rows:
        name = titles.get(row["pid"])
        if name is None or row["global_rank"] is not None or not rk.holds_rank(name):
            continue
        ranks = rk.from_indices(rk.parse_indices(name), sizes, "log")
        for key in ("tp_rank", "dp_rank", "pp_rank", "ep_rank"):
            if row[key] is None:
                row[key] = getattr(ranks, key)
        if ranks.global_rank is not None:
            row["global_rank"], row["rank_source"] = ranks.global_rank, "log"
            filled += 1
    return filled


def apply_trace_ranks(rows: list[dict[str, Any]], collectives: pa.Table) -> list[str]:
    """A trace's own rank (collectives rows with a pid) is the most trusted source; notes disagreements."""
    notes: list[str] = []
    if collectives.num_rows == 0 or "pid" not in collectives.column_names:
        return notes
    seen: dict[int, set[int]] = {}
    for pid, rank in zip(collectives.column("pid").to_pylist(), collectives.column("rank").to_pylist()):
        if pid is not None and rank is not None:
            seen.setdefault(pid, set()).add(rank)
    for row in rows:
        found = seen.get(row["pid"])
        if not found or len(found) != 1:
            continue
        rank = next(iter(found))
        if row["global_rank"] is not None and row["global_rank"] != rank:
            notes.append(
                f"pid {row['pid']}: trace says rank {rank}, {row['rank_source']} said {row['global_rank']}; using the trace"
            )
        row["global_rank"], row["rank_source"] = rank, "trace"
    return notes


def mark_gone(rows: list[dict[str, Any]]) -> list[int]:
    """Re-check liveness at the end of capture: a process that exited (or whose pid was reused) becomes 'gone'."""
    gone = []
    for row in rows:
        if row["status"] == "gone":
            continue
        try:
            proc = psutil.Process(row["pid"])
            if row["create_time"] is not None and abs(proc.create_time() - row["create_time"]) > 0.5:
                raise psutil.NoSuchProcess(row["pid"])
            row["status"] = proc.status()
        except psutil.NoSuchProcess:
            row["status"] = "gone"
            gone.append(row["pid"])
        except psutil.Error:
            pass
    return gone
