"""Who each process is, pulled together from every table that names one.

Several sources describe the same process (a live capture, a py-spy dump header, a log prefix), so rows are
coalesced per (host, pid). Rows whose host is null (nvidia-smi output, pasted dumps) join any host: such
artifacts come from one node. A process counts as alive only on live evidence (a status other than gone/zombie,
a thread sample, a stack, a GPU context), never because a log line once named it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pyarrow as pa

from hangdoc.analysis.text import rank_ranges
from hangdoc.capture import ranks as ranknames
from hangdoc.schema import table_from_rows

DEAD_STATUSES = frozenset({"zombie", "dead", "gone", "Z", "X"})
Key = tuple[Any, int]  # (host or None, pid)


@dataclass(eq=False)
class Proc:
    host: str | None
    pid: int
    ppid: int | None = None
    parent_alive: bool | None = None
    status: str | None = None
    title: str | None = None
    role: str | None = None
    rank: int | None = None
    world_size: int | None = None
    tp_rank: int | None = None
    dp_rank: int | None = None
    pp_rank: int | None = None
    gpu_indices: tuple[int, ...] = ()
    rank_source: str | None = None
    live: bool = False  # seen running now: capture status, thread sample, stack or GPU context
    dead: bool = False  # seen gone or zombie
    gpu_memory: int = 0  # bytes held across GPUs (gpu_processes)
    gpus: set[int] = field(default_factory=set)

    def label(self) -> str:
        who = f"rank {self.rank}" if self.rank is not None else (self.title or "process")
        return f"{who} (pid {self.pid})"


def rows(table: pa.Table | None) -> list[dict[str, Any]]:
    return table.to_pylist() if table is not None and table.num_rows else []


class Processes:
    """Coalesced processes with lookups by pid and by rank."""

    def __init__(self, table: Callable[[str], pa.Table]) -> None:
        self.by_key: dict[Key, Proc] = {}
        self._by_pid: dict[int, list[Proc]] = {}  # host-less rows (nvidia-smi, pasted dumps) join by pid alone
        for r in rows(table("processes")):
            if r.get("pid") is None:
                continue
            p = self._get(r.get("host"), int(r["pid"]))
            for attr, col in (("ppid", "ppid"), ("parent_alive", "parent_alive"), ("title", "title"), ("role", "role"),
                              ("rank", "global_rank"), ("world_size", "world_size"), ("tp_rank", "tp_rank"),
                              ("dp_rank", "dp_rank"), ("pp_rank", "pp_rank"), ("rank_source", "rank_source")):
                if getattr(p, attr) is None and r.get(col) is not None:
                    setattr(p, attr, r[col])
            if r.get("gpu_indices") and not p.gpu_indices:
                p.gpu_indices = tuple(r["gpu_indices"])
            status = r.get("status")
            if status:
                p.status = p.status if p.status in DEAD_STATUSES else status
                if status in DEAD_STATUSES:
                    p.dead = True
                else:
                    p.live = True
        for r in distinct(table("collectives"), ("host", "pid", "rank")):  # a trace's own rank is the most trusted
            if r.get("pid") is None or r.get("rank") is None:
                continue
            p = self._get(r.get("host"), int(r["pid"]))
            if p.rank is None or p.rank_source != "trace":
                p.rank, p.rank_source = int(r["rank"]), "trace"
        for r in rows(table("thread_samples")):
            if r.get("pid") is None:
                continue
            p = self._get(r.get("host"), int(r["pid"]))
            if r.get("tid") == r.get("pid") and r.get("state") in ("Z", "X", "gone"):
                p.dead = True
                p.status = "zombie" if r.get("state") == "Z" else "gone"
            elif r.get("state") not in ("Z", "X", "gone"):
                p.live = True
        for r in distinct(table("py_frames"), ("host", "pid")):
            if r.get("pid") is not None:
                self._get(r.get("host"), int(r["pid"])).live = True
        for r in rows(table("gpu_processes")):
            if r.get("pid") is None:
                continue
            p = self._get(r.get("host"), int(r["pid"]))
            p.live = True
            p.gpu_memory += int(r.get("used_memory") or 0)
            if r.get("gpu") is not None:
                p.gpus.add(int(r["gpu"]))
        for p in self.by_key.values():
            if p.dead:
                p.live = False
        self._apply_log_ranks(rows(table("log_events")))
        self._apply_titles()

    def _get(self, host: str | None, pid: int) -> Proc:
        key: Key = (host, pid)
        p = self.by_key.get(key)
        if p is None and host is not None:
            p = self.by_key.pop((None, pid), None)  # a host-less row of the same pid is this process
            if p is not None:
                p.host = host
                self.by_key[key] = p
        if p is None and host is None:
            p = next(iter(self._by_pid.get(pid, ())), None)
        if p is None:
            p = self.by_key[key] = Proc(host, pid)
            self._by_pid.setdefault(pid, []).append(p)
        return p

    def _apply_log_ranks(self, events: Iterable[dict[str, Any]]) -> None:
        for e in events:
            if e.get("pid") is None or e.get("rank") is None:
                continue
            p = self.find(e.get("host"), int(e["pid"]))
            if p is not None and p.rank is None:
                p.rank = int(e["rank"])
                p.rank_source = p.rank_source or "log"

    def _apply_titles(self) -> None:
        """Ranks from framework names (`VLLM::Worker_DP1_TP2`, a log's `Worker_TP2`) where nothing better said."""
        named: list[tuple[Proc, dict[str, int]]] = []
        for p in self.by_key.values():
            if not p.title:
                continue
            parsed = ranknames.parse_title(p.title.split()[0])
            name = parsed.name if parsed else p.title.split()[0]
            indices = dict(parsed.indices) if parsed else ranknames.parse_indices(name)
            if name.lower().startswith(("enginecore", "apiserver", "dpcoordinator")) or not indices:
                continue
            named.append((p, indices))
            p.role = p.role or "worker"
            p.tp_rank = p.tp_rank if p.tp_rank is not None else indices.get("tp")
            p.dp_rank = p.dp_rank if p.dp_rank is not None else indices.get("dp")
            p.pp_rank = p.pp_rank if p.pp_rank is not None else indices.get("pp")
        sizes = ranknames.parallel_sizes([ix for _, ix in named], [])
        for p, indices in named:
            if p.rank is None:
                p.rank = ranknames.global_from_indices(indices, sizes)
                p.rank_source = p.rank_source or "title"

    def table(self) -> pa.Table:
        """The coalesced processes (host, pid, rank, ...), for passes that take a processes table."""
        return table_from_rows(
            "processes",
            [{"host": p.host, "pid": p.pid, "ppid": p.ppid, "parent_alive": p.parent_alive, "status": p.status,
              "title": p.title, "role": p.role, "global_rank": p.rank, "world_size": p.world_size,
              "tp_rank": p.tp_rank, "dp_rank": p.dp_rank, "pp_rank": p.pp_rank, "rank_source": p.rank_source}
             for p in self.all()],
        )

    def find(self, host: str | None, pid: int) -> Proc | None:
        p = self.by_key.get((host, pid))
        if p is None:
            p = next((q for q in self._by_pid.get(pid, ()) if host is None or q.host is None or q.host == host), None)
        return p

    def all(self) -> list[Proc]:
        return sorted(self.by_key.values(), key=lambda p: (p.rank if p.rank is not None else 1 << 30, p.pid))

    def ranked(self) -> dict[int, list[Proc]]:
        out: dict[int, list[Proc]] = {}
        for p in self.all():
            if p.rank is not None:
                out.setdefault(p.rank, []).append(p)
        return out

    def rank_of(self, host: str | None, pid: int) -> int | None:
        p = self.find(host, pid)
        return p.rank if p is not None else None


def distinct(table: pa.Table | None, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Distinct rows of a few columns in order of first appearance, without turning a large table into
    Python objects first."""
    if table is None or not table.num_rows:
        return []
    # group_by needs one dictionary per column (a concatenated table may hold one per chunk)
    sel = table.select(list(columns)).unify_dictionaries()
    return sel.group_by(list(columns), use_threads=False).aggregate([]).to_pylist()


def shared(ctx: Any, key: str, make: Callable[[], Any]) -> Any:
    """One value per analysis run, kept in the pipeline context's cache (tables never change within a run)."""
    cache = getattr(ctx, "_cache", None)
    if not isinstance(cache, dict):
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def ranks_text(ranks: Iterable[int]) -> str:
    """'ranks 0-3, 6' for people; a single rank reads 'rank 5'."""
    rs = sorted(set(ranks))
    if not rs:
        return "no rank"
    return f"{'rank' if len(rs) == 1 else 'ranks'} {rank_ranges(rs, None)}"


def gib(n: int | float | None) -> str:
    if not n:
        return "0 GiB"
    return f"{n / (1 << 30):.1f} GiB"
