"""Stack equivalence classes, as LLNL STAT builds them, for Python and native frames.

Each rank's main thread (or the thread it has inside a collective) is placed in a prefix tree of
frames; ranks standing at the same place form one class. In a hang the large class is usually the
ranks that did the expected thing and wait; a small class standing somewhere else is the suspect.
Framework frames are recognised so a class can be said to be "in a collective" (and which one),
"in teardown", "idle waiting for work" or "in the model". Across samples, a rank whose stack never
changes is frozen; one whose stack moves is still progressing.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import pyarrow as pa

from hangdoc.analysis.model import STACK_DIVERGENCE, Finding, StackClass, StackMember
from hangdoc.analysis.procs import distinct

COLLECTIVE = "collective"
TEARDOWN = "teardown"
IDLE = "idle"
MODEL = "model"
OTHER = "other"

_CATEGORY_TEXT = {
    COLLECTIVE: "in a collective",
    TEARDOWN: "in teardown",
    IDLE: "idle waiting for work",
    MODEL: "in the model",
    OTHER: "elsewhere",
}

# Normalised op names, matched on the lowercased function name with underscores removed. Longer
# names first: "allgatherv" before "allgather", "allreduce" before "reduce".
_OPS: tuple[tuple[str, str], ...] = (
    ("reducescatterv", "reduce_scatterv"),
    ("reducescatter", "reduce_scatter"),
    ("allgatherv", "all_gatherv"),
    ("allgather", "all_gather"),
    ("allreduce", "all_reduce"),
    ("alltoall", "all_to_all"),
    ("broadcast", "broadcast"),
    ("bcast", "broadcast"),
    ("barrier", "barrier"),
    ("batchisendirecv", "send_recv"),
    ("sendrecv", "send_recv"),
    ("isend", "send"),
    ("irecv", "recv"),
    ("send", "send"),
    ("recv", "recv"),
    ("gather", "gather"),
    ("scatter", "scatter"),
    ("reduce", "reduce"),
)

# Python files whose collective-named functions are communication (torch, vLLM, SGLang).
_COMM_FILES = re.compile(
    r"(torch/distributed/distributed_c10d\.py|torch/distributed/_functional_collectives\.py"
    r"|torch/distributed/c10d_logger\.py|/distributed/parallel_state\.py|/distributed/communication_op\.py"
    r"|/distributed/device_communicators/|/srt/distributed/|tensorrt_llm/_torch/distributed/"
    r"|tensorrt_llm/mapping|/pynccl[^/]*\.py)"
)
_NATIVE_COMM = re.compile(r"^(nccl|gloo::|c10d::ProcessGroup|c10d::.*Work|ncclDevKernel|ncclKernel)")
_TEARDOWN_NAMES = {
    "destroy_process_group", "ncclCommDestroy", "ncclCommAbort", "commDestroySync", "commReclaim",
    "ncclCommFinalize", "destroy_model_parallel", "destroy_distributed_environment",
    "cleanup_dist_env_and_memory", "_abort_process_group", "_shutdown_backend",
}
_TEARDOWN_IN_COMM = {"destroy", "abort", "shutdown", "_shutdown", "_abort", "finalize"}
_IDLE = (
    (re.compile(r"shm_broadcast\.py$"), {"acquire_read", "dequeue"}),
    (re.compile(r""), {"_broadcast_reqs_across_ranks"}),
    (re.compile(r"/srt/managers/scheduler\.py$"), {"recv_requests"}),
    (re.compile(r"(^|/)(queue|queues)\.py$"), {"get"}),
    (re.compile(r"multiprocessing/connection\.py$"), {"recv", "recv_bytes", "_recv", "poll", "wait"}),
    (re.compile(r"(^|/)selectors\.py$"), {"select"}),
    (re.compile(r"zmq/"), {"recv", "recv_multipart", "recv_pyobj", "poll"}),
)
_MODEL_FILES = re.compile(r"(torch/nn/modules/module\.py|/model_executor/models/|/srt/models/|tensorrt_llm/models/)")
_MODEL_NAMES = {"forward", "execute_model", "_model_forward", "model_forward", "_call_impl", "_wrapped_call_impl"}
# Decorator layers that say nothing about where a rank is.
_WRAPPERS = {"wrapper", "inner", "_fn", "decorate_context", "_call_impl", "_wrapped_call_impl", "__call__"}


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int | None
    native: bool

    @property
    def short(self) -> str:
        """The function's own name: py-spy qualifies methods ("GroupCoordinator.all_reduce")."""
        name = self.function.split("(")[0]
        return re.split(r"\.|::", name)[-1] if not self.native else name.split("::")[-1]

    def label(self) -> str:
        base = self.file.replace("\\", "/").rsplit("/", 1)[-1] if self.file else "?"
        return f"{self.function} ({base}:{self.line})" if self.line else f"{self.function} ({base})"


def op_of(name: str) -> str | None:
    """The normalised collective op a function name stands for, if any."""
    flat = name.lower().replace("_", "")
    for key, op in _OPS:
        if key in flat:
            return op
    return None


def classify_frame(frame: Frame) -> tuple[str, str | None] | None:
    """(category, op) for a framework frame this pass recognises, else None."""
    file = (frame.file or "").replace("\\", "/")
    short = frame.short
    if frame.native:
        if frame.function.split("(")[0] in _TEARDOWN_NAMES or short in _TEARDOWN_NAMES:
            return TEARDOWN, None
        if re.match(r"^c10d::ProcessGroup\w*::(abort|shutdown)", frame.function):
            return TEARDOWN, None
        if _NATIVE_COMM.match(frame.function):
            return COLLECTIVE, op_of(frame.function)
        return None
    if short in _TEARDOWN_NAMES:
        return TEARDOWN, None
    for pattern, names in _IDLE:
        if short in names and pattern.search(file):
            return IDLE, None
    if _COMM_FILES.search(file):
        if short in _TEARDOWN_IN_COMM:
            return TEARDOWN, None
        op = op_of(short)
        if op is not None:
            return COLLECTIVE, op
    if _MODEL_FILES.search(file) or short in _MODEL_NAMES:
        return MODEL, None
    return None


@dataclass
class Placement:
    """Where one thread stands: its category, the op, the frame that decided it and the class key."""

    category: str
    op: str | None
    anchor: int  # index into the stack (innermost first) of the deciding frame
    key: tuple[Any, ...]
    where: str
    native: tuple[str, ...] | None = None  # the native frames that place it too; None: a Python-only stack


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def native_name(frame: Frame) -> str | None:
    """A native frame's function, to tell stacks apart by; None for a bare address (it moves with ASLR)."""
    name = frame.function.split("(")[0].strip()
    return None if not name or name == "?" or _ADDRESS.fullmatch(name) else name


def place(stack: Sequence[Frame]) -> Placement:
    """Classify a stack (innermost frame first). Precedence: teardown, idle, collective, model."""
    found: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for i, frame in enumerate(stack):
        hit = classify_frame(frame)
        if hit is not None:
            found[hit[0]].append((i, hit[1]))
    if found.get(TEARDOWN):
        category, (anchor, op) = TEARDOWN, found[TEARDOWN][-1]
    elif found.get(IDLE):
        category, (anchor, op) = IDLE, found[IDLE][-1]
    elif found.get(COLLECTIVE):
        # The outermost communication frame is the API the program called (broadcast_object_list, not
        # the broadcast inside it); its op is the one that names where the rank is.
        category, (anchor, op) = COLLECTIVE, found[COLLECTIVE][-1]
        if op is None:
            op = next((o for _, o in reversed(found[COLLECTIVE]) if o), None)
    elif found.get(MODEL):
        category, anchor, op = MODEL, _first_python(stack), None
    else:
        category, anchor, op = OTHER, _first_python(stack), None
    if category in (MODEL, OTHER):
        # Inside model code the innermost frames are the position; native frames there are noise.
        key_frames = [f for f in stack if not f.native]
    else:
        # Whatever runs inside the collective API differs between ranks for no reason that matters.
        key_frames = [f for f in stack[anchor:] if not f.native or f is stack[anchor]]
    key = (category, op, tuple((f.function, f.file, f.line) for f in key_frames))
    native = None
    if any(f.native for f in stack):
        # Native frames name where a rank waits when its Python stack cannot (the same forward() waiting in
        # cudaStreamSynchronize or spinning in sched_yield). Inside a collective, teardown or an idle wait
        # the library's own frames differ by timing alone: only the frames from the anchor out count there.
        inner = stack if category in (MODEL, OTHER) else stack[anchor:]
        native = tuple(n for f in inner if f.native and (n := native_name(f)))
    return Placement(category, op, anchor, key, describe(stack, anchor), native)


def _first_python(stack: Sequence[Frame]) -> int:
    return next((i for i, f in enumerate(stack) if not f.native), 0)


def describe(stack: Sequence[Frame], anchor: int, limit: int = 4) -> str:
    """'all_gather <- step <- main <- ...': the anchor frame and its callers, wrappers left out."""
    if not stack:
        return "(no frames)"
    names: list[str] = []
    for frame in stack[anchor:]:
        if frame.native and names:
            continue
        if names and frame.short in _WRAPPERS:
            continue
        names.append(frame.function)
    text = " <- ".join(names[:limit])
    return text + (" <- ..." if len(names) > limit else "")


# --- per-rank view ----------------------------------------------------------------------------------
@dataclass
class ThreadView:
    tid: int | None
    name: str | None
    stacks: dict[int, tuple[Frame, ...]]  # sample -> stack

    def last(self) -> tuple[Frame, ...]:
        return self.stacks[max(self.stacks)]


@dataclass
class RankView:
    ident: Any  # global rank, or ("pid", host, pid) when no rank is known
    label: str
    rank: int | None
    host: str | None
    pid: int | None
    thread: ThreadView
    placement: Placement
    progress: str  # frozen / progressing / one sample
    samples: int
    others_in_collective: list[str] = field(default_factory=list)
    threads: list[ThreadView] = field(default_factory=list)  # every thread of the process, the chosen one too


def _is_main(pid: int | None, t: ThreadView) -> bool:
    return t.name == "MainThread" or (pid is not None and t.tid == pid)


def _pick_thread(pid: int | None, threads: list[ThreadView]) -> tuple[ThreadView, Placement, list[str]]:
    main = next((t for t in threads if _is_main(pid, t)), None)
    if main is None:  # faulthandler text names no thread: the main one runs <module> at the bottom
        main = next((t for t in threads if t.last() and t.last()[-1].function == "<module>"), threads[0])
    placed = {id(t): place(t.last()) for t in threads}
    chosen = main
    if placed[id(main)].category not in (COLLECTIVE, TEARDOWN):
        busy = [t for t in threads if placed[id(t)].category in (COLLECTIVE, TEARDOWN)]
        if busy:
            chosen = busy[0]
    others = [
        f"thread {t.name or t.tid} also {_CATEGORY_TEXT[placed[id(t)].category]}: {placed[id(t)].where}"
        for t in threads
        if t is not chosen and placed[id(t)].category in (COLLECTIVE, TEARDOWN)
    ]
    return chosen, placed[id(chosen)], others


def _rows(table: pa.Table | None, columns: Sequence[str]) -> list[dict[str, Any]]:
    if table is None or table.num_rows == 0:
        return []
    have = [c for c in columns if c in table.column_names]
    return table.select(have).to_pylist()


def _pid_ranks(collectives: pa.Table | None) -> list[dict[str, Any]]:
    """Distinct (host, pid, rank) of the collectives, in row order: millions of rows hold a few thousand."""
    if collectives is None or collectives.num_rows == 0 or collectives.column("pid").null_count == len(collectives):
        return []
    return distinct(collectives, ("host", "pid", "rank"))


def _rank_lookup(processes: list[dict[str, Any]], collectives: list[dict[str, Any]]) -> dict[tuple[Any, int], int]:
    """(host, pid) -> global rank: the processes table first, then the pids traces recorded."""
    ranks: dict[tuple[Any, int], int] = {}
    for row in collectives:
        if row.get("pid") is not None and row.get("rank") is not None:
            ranks.setdefault((row.get("host"), row["pid"]), row["rank"])
    for row in processes:
        if row.get("pid") is not None and row.get("global_rank") is not None:
            ranks[(row.get("host"), row["pid"])] = row["global_rank"]
    return ranks


def _find_rank(ranks: dict[tuple[Any, int], int], host: Any, pid: int | None) -> int | None:
    if pid is None:
        return None
    if (host, pid) in ranks:
        return ranks[(host, pid)]
    loose = {r for (h, p), r in ranks.items() if p == pid and (h is None or host is None)}
    return loose.pop() if len(loose) == 1 else None


def rank_views(
    py_frames: pa.Table | None,
    processes: pa.Table | None = None,
    collectives: pa.Table | None = None,
    others: bool = False,
) -> list[RankView]:
    """One view per rank (or per process when no rank is known anywhere); with `others`, processes without a
    rank (an engine core, an API server) too, after the ranks."""
    frames = _rows(py_frames, ["host", "pid", "tid", "thread_name", "sample", "depth", "function", "file", "line", "native"])
    if not frames:
        return []
    ranks = _rank_lookup(
        _rows(processes, ["host", "pid", "global_rank"]), _pid_ranks(collectives)
    )
    by_proc: dict[tuple[Any, Any], dict[Any, dict[int, list[tuple[int, Frame]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    names: dict[tuple[Any, Any, Any], str | None] = {}
    for r in frames:
        proc = (r.get("host"), r.get("pid"))
        tkey = (r.get("tid"), r.get("thread_name"))
        frame = Frame(str(r.get("function") or "?"), str(r.get("file") or ""), r.get("line"), bool(r.get("native")))
        by_proc[proc][tkey][int(r.get("sample") or 0)].append((int(r.get("depth") or 0), frame))
        names[(proc, tkey)] = r.get("thread_name")
    views: list[RankView] = []
    seen: set[Any] = set()
    known = {proc: _find_rank(ranks, *proc) for proc in by_proc}
    any_rank = any(r is not None for r in known.values())
    for proc in sorted(by_proc, key=lambda p: (known[p] is None, known[p] if known[p] is not None else 0, str(p[0]), p[1] or 0)):
        host, pid = proc
        rank = known[proc]
        if any_rank and rank is None and not others:
            continue  # a launcher or API server: not a member, it would only blur the vote
        threads = [
            ThreadView(tkey[0], tkey[1], {s: tuple(f for _, f in sorted(fr, key=lambda x: x[0])) for s, fr in samples.items()})
            for tkey, samples in sorted(by_proc[proc].items(), key=lambda kv: (kv[0][0] or 0))
        ]
        chosen, placement, extra = _pick_thread(pid, threads)
        ident: Any = rank if rank is not None else ("pid", host, pid)
        if ident in seen:
            continue
        seen.add(ident)
        label = f"rank {rank}" if rank is not None else f"pid {pid}"
        views.append(RankView(ident, label, rank, host, pid, chosen, placement, _progress(chosen), len(chosen.stacks),
                              extra, threads))
    return views


def _who(views: Iterable[RankView]) -> str:
    views = list(views)
    if all(v.rank is not None for v in views):
        ranks = sorted(v.rank for v in views)  # type: ignore[type-var]
        return ("rank " if len(ranks) == 1 else "ranks ") + ",".join(map(str, ranks))
    if all(v.rank is None for v in views):
        pids = sorted(v.pid or 0 for v in views)
        return ("pid " if len(pids) == 1 else "pids ") + ",".join(map(str, pids))
    return ", ".join(v.label for v in views)


def branch_frame(stack: Sequence[Frame], other: Sequence[Frame]) -> Frame | None:
    """The first frame of `stack`, from the outermost, that `other` does not share: where it branches off."""
    mine = [f for f in reversed(stack) if not f.native]
    theirs = [f for f in reversed(other) if not f.native]
    for i, frame in enumerate(mine):
        if i >= len(theirs) or frame != theirs[i]:
            return frame
    return None


def prefix_tree(views: Sequence[RankView]) -> dict[str, Any]:
    """The merged call-prefix tree (outermost frame at the root), each node listing who passes through it."""
    root: dict[str, Any] = {"frame": "<all>", "who": [], "children": {}}
    for v in views:
        node = root
        node["who"].append(v.rank if v.rank is not None else v.label)
        for frame in reversed(v.thread.last()):
            node = node["children"].setdefault(frame.label(), {"frame": frame.label(), "who": [], "children": {}})
            node["who"].append(v.rank if v.rank is not None else v.label)

    def freeze(node: dict[str, Any]) -> dict[str, Any]:
        return {"frame": node["frame"], "who": node["who"], "children": [freeze(c) for c in node["children"].values()]}

    return freeze(root)


def _thread_state(samples: list[dict[str, Any]]) -> str | None:
    """'R, cpu +1.93 s over 3 samples' from the /proc samples of the chosen thread."""
    if not samples:
        return None
    samples = sorted(samples, key=lambda r: r.get("sample") or 0)
    first, last = samples[0], samples[-1]
    state = last.get("state") or "?"
    wchan = last.get("wchan")
    text = state + (f" ({wchan})" if wchan and wchan != "0" else "")
    cpu = [(r.get("utime") or 0.0) + (r.get("stime") or 0.0) for r in (first, last)]
    if len(samples) > 1:
        text += f", cpu +{cpu[1] - cpu[0]:.2f} s over {len(samples)} samples"
    return text


def _progress(t: ThreadView) -> str:
    stacks = list(t.stacks.values())
    if len(stacks) < 2:
        return "one sample"
    return "frozen" if all(s == stacks[0] for s in stacks) else "progressing"


def top_frames(stack: Sequence[Frame], anchor: int, limit: int = 4) -> tuple[str, ...]:
    """Where the thread waits (its innermost frame), then the deciding frame and its callers, wrappers left out."""
    if not stack:
        return ()
    out = [stack[0]] if anchor > 0 else []
    for frame in stack[anchor:]:
        if (frame.native and out) or (out and frame.short in _WRAPPERS):
            continue
        out.append(frame)
    return tuple(f.label() for f in out[:limit])


def _titles(processes: pa.Table | None) -> dict[tuple[Any, Any], str]:
    """(host, pid) -> the process title, else its command line, short."""
    out: dict[tuple[Any, Any], str] = {}
    for r in _rows(processes, ["host", "pid", "title", "cmdline"]):
        text = r.get("title") or " ".join(r.get("cmdline") or [])
        if text and r.get("pid") is not None:
            out[(r.get("host"), r.get("pid"))] = text if len(text) <= 60 else text[:57].rsplit(" ", 1)[0] + " ..."
    return out


def stack_classes_of(
    py_frames: pa.Table | None, processes: pa.Table | None = None, collectives: pa.Table | None = None
) -> tuple[StackClass, ...]:
    """Every stack class of the input, for the reports: the ranks' classes (one thread per rank, the odd ones
    first), then processes without a rank, grouped the same way: in a job with ranks, the thread each such
    process stands in (an engine core's main thread in MessageQueue.dequeue); with no rank anywhere (a plain
    script), every thread, since nothing else says where it hangs."""
    views = rank_views(py_frames, processes, collectives, others=True)
    if not views:
        return ()
    titles = _titles(processes)
    voters = [v for v in views if v.rank is not None] or views
    voter_ids = {id(v) for v in voters}
    voting: dict[tuple[Any, ...], list[tuple[RankView, ThreadView, Placement]]] = defaultdict(list)
    rest: dict[tuple[Any, ...], list[tuple[RankView, ThreadView, Placement]]] = defaultdict(list)
    for v in voters:
        voting[v.placement.key].append((v, v.thread, v.placement))
    for v in views:
        if v.rank is not None:
            continue
        for t in v.threads if id(v) in voter_ids else [v.thread]:
            if id(v) in voter_ids and t is v.thread:
                continue
            pl = place(t.last())
            rest[pl.key].append((v, t, pl))
    sizes = sorted((len(m) for m in voting.values()), reverse=True)
    strict = len(sizes) == 1 or sizes[0] > sizes[1]

    def build(members: list[tuple[RankView, ThreadView, Placement]], odd: bool) -> StackClass:
        v0, t0, pl = members[0]
        stack = t0.last()
        progress = sorted({_progress(t) for _, t, _ in members})
        return StackClass(
            members=tuple(StackMember(v.rank, v.host, v.pid, t.name or f"thread {t.tid}", titles.get((v.host, v.pid)))
                          for v, t, _ in members),
            category=pl.category, op=pl.op, where=pl.where,
            what=("not in a collective" if pl.category == OTHER else _CATEGORY_TEXT[pl.category])
            + (f" ({pl.op})" if pl.op else ""),
            frames=tuple(f.label() for f in stack), top=top_frames(stack, pl.anchor),
            odd=odd, progress=", ".join(progress),
        )

    def who(members: list[tuple[RankView, ThreadView, Placement]]) -> tuple:
        return min((v.rank if v.rank is not None else -1, v.pid or 0, t.tid or 0) for v, t, _ in members)

    ranked = sorted(voting.values(), key=lambda m: (strict and len(m) == sizes[0], len(m), who(m)))
    out = [build(m, strict and len(m) < sizes[0]) for m in ranked]
    for i, c in enumerate(out if len(out) > 1 else []):
        # where each class leaves the most common one (the same frames on top may come from other callers)
        other = ranked[-1] if ranked[i] is not ranked[-1] else ranked[0]
        frame = branch_frame(ranked[i][0][1].last(), other[0][1].last())
        out[i] = replace(c, branch=frame.label() if frame is not None else None)
    out += [build(m, False) for m in sorted(rest.values(), key=lambda m: (-len(m), who(m)))]
    return tuple(out)


def stack_divergence(
    py_frames: pa.Table | None,
    processes: pa.Table | None = None,
    collectives: pa.Table | None = None,
    thread_samples: pa.Table | None = None,
) -> list[Finding]:
    """A stack_divergence finding when ranks stand in more than one place, naming the minority."""
    views = rank_views(py_frames, processes, collectives)
    if len(views) < 2:
        return []
    classes: dict[tuple[Any, ...], list[RankView]] = defaultdict(list)
    # Native frames split classes only when every stack has them: a rank py-spy could not pause is not odd.
    native = all(v.placement.native is not None for v in views)
    for v in views:
        classes[v.placement.key + ((v.placement.native,) if native else ())].append(v)
    if len(classes) < 2:
        return []
    ordered = sorted(classes.values(), key=lambda members: (-len(members), min(str(m.ident) for m in members)))
    top = len(ordered[0])
    majority = [c for c in ordered if len(c) == top]
    minority = [c for c in ordered if len(c) < top]
    tie = not minority
    if tie:  # no class is larger than another: every class is a suspect
        minority, majority = ordered, []

    def in_collective(c: list[RankView]) -> bool:
        return c[0].placement.category == COLLECTIVE

    if tie:
        role = "cause" if sum(in_collective(c) for c in ordered) >= 2 else "symptom"
    else:
        role = "cause" if all(in_collective(c) for c in majority) else "symptom"
    minority_ops = {c[0].placement.op for c in minority if in_collective(c)}
    op = minority_ops.pop() if len(minority_ops) == 1 and all(in_collective(c) for c in minority) else None
    majority_ops = {c[0].placement.op for c in majority if in_collective(c)}
    expected_op = majority_ops.pop() if len(majority_ops) == 1 and not tie else None

    shown = minority + majority
    where = {id(c): c[0].placement.where for c in shown}
    if len(set(where.values())) < len(shown):
        # Same functions, different call sites (seed 003: the same allreduce reached from another warm-up
        # path): name where each class leaves the others in the prefix tree.
        reference = (majority or minority)[0]
        for c in shown:
            other = reference if c is not reference else next(x for x in shown if x is not reference)
            branch = branch_frame(c[0].thread.last(), other[0].thread.last())
            if branch is not None:
                where[id(c)] += f" via {branch.label()}"
    if native and len(set(where.values())) < len(shown):
        # Same Python frames, different native ones: name the innermost native function each class is in.
        for c in shown:
            if c[0].placement.native:
                where[id(c)] += f" in {c[0].placement.native[0]}"

    summary = "; ".join(f"{_who(c)}: {where[id(c)]}" for c in shown)
    if tie:
        summary = "no majority among the stacks: " + summary

    ts_rows = _rows(thread_samples, ["host", "pid", "tid", "sample", "state", "wchan", "utime", "stime"])
    ts: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in ts_rows:
        ts[(r.get("host"), r.get("pid"), r.get("tid"))].append(r)

    evidence: list[str] = []
    for c in shown:
        pl = c[0].placement
        what = _CATEGORY_TEXT[pl.category] + (f" ({pl.op})" if pl.op else "")
        progress = sorted({v.progress for v in c})
        evidence.append(f"{_who(c)} ({len(c)}/{len(views)}) {what}: {where[id(c)]} [{', '.join(progress)}]")
    for v in views:
        state = _thread_state(ts.get((v.host, v.pid, v.thread.tid), []))
        parts = [f"stack {v.progress} over {v.samples} samples"] if v.samples > 1 else []
        parts += [f"/proc: {state}"] if state else []
        if parts:
            evidence.append(f"{v.label} {v.thread.name or f'thread {v.thread.tid}'}: " + "; ".join(parts))
        evidence.extend(f"{v.label}: {o}" for o in v.others_in_collective)

    culprits = [v for c in minority for v in c]
    details = {
        "classes": [
            {
                "who": [v.rank if v.rank is not None else v.label for v in c],
                "pids": [v.pid for v in c],
                "category": c[0].placement.category,
                "op": c[0].placement.op,
                "where": where[id(c)],
                "frames": [f.label() for f in c[0].thread.last()],
                "progress": {v.label: v.progress for v in c},
            }
            for c in shown
        ],
        "tie": tie,
        "tree": prefix_tree(views),
    }
    return [
        Finding(
            kind=STACK_DIVERGENCE,
            ranks=tuple(sorted(v.rank for v in culprits if v.rank is not None)),
            summary=summary,
            op=op,
            expected_op=expected_op,
            evidence=tuple(evidence),
            waiting_ranks=tuple(sorted(v.rank for c in majority for v in c if v.rank is not None and in_collective(c))),
            role=role,
            details=details,
        )
    ]


def _table(ctx: Any, name: str) -> pa.Table | None:
    try:
        return ctx.table(name)
    except KeyError:
        return None


def stack_classes(ctx: Any) -> list[Finding]:
    """Analysis pass: stack equivalence classes over the bundle's py_frames (and thread_samples)."""
    return stack_divergence(
        _table(ctx, "py_frames"), _table(ctx, "processes"), _table(ctx, "collectives"), _table(ctx, "thread_samples")
    )
