"""Host signatures: what each rank's process is doing on the CPU, and whether it is still there at all.

From /proc samples a main thread is spinning (state R, no wait channel, CPU time growing: a host thread busy-
polling a GPU kernel that never ends), blocked (futex, epoll: waiting on another thread or a socket), in D state
(stuck in the kernel), stopped, or a zombie. A rank whose main thread is stopped in every sample (SIGSTOP, a
debugger) while its peers run is the cause of their wait (`rank_stopped`). From the process tree, stacks and logs:
a rank that exited while its peers still wait (`rank_exited`), workers that outlived their launcher
(`orphaned_process`) and ranks blocked in communicator teardown (`stuck_in_teardown`: ncclCommDestroy is itself
collective, so survivors of an uncoordinated shutdown wait there forever for the rank that already left).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import pyarrow as pa

from hangdoc.analysis import stacks
from hangdoc.analysis.model import (
    ORPHANED_PROCESS, RANK_EXITED, RANK_STOPPED, STUCK_IN_KERNEL, STUCK_IN_TEARDOWN, Finding,
)
from hangdoc.analysis.procs import Proc, Processes, gib, ranks_text, rows, shared
from hangdoc.analysis.text import clip, verb

THREAD_STATES = "thread_states"

SPINNING, RUNNING, BLOCKED, SLEEPING, D_STATE, STOPPED, ZOMBIE, ACTIVE, GONE = (
    "spinning", "running", "blocked", "sleeping", "d_state", "stopped", "zombie", "active", "gone",
)
_TEXT = {
    SPINNING: "spinning on CPU (state R, no wait channel, CPU time growing)",
    RUNNING: "running (state R, one sample: spinning cannot be told from working)",
    BLOCKED: "blocked",
    SLEEPING: "sleeping",
    D_STATE: "in uninterruptible sleep (state D) in every sample",
    STOPPED: "stopped (state T: a debugger or SIGSTOP)",
    ZOMBIE: "a zombie (exited, not reaped)",
    GONE: "gone (exited during the capture)",
    ACTIVE: "active (state changing between samples)",
}
# Kernel wait channels by what they wait for; first match wins.
_WCHAN_CLASSES = (
    ("futex", ("futex",)),
    ("epoll", ("ep_poll", "epoll")),
    ("poll", ("poll", "select")),
    ("pipe", ("pipe_read", "pipe_wait")),
    ("socket", ("sk_wait", "unix_stream", "inet_csk_accept", "tcp_recv", "wait_woken")),
    ("sleep", ("nanosleep", "hrtimer")),
    ("child", ("do_wait",)),
)
SPIN_CPU_RATE = 0.5  # CPU seconds per wall second over the samples that make a thread "spinning"
EXIT_SIGNATURES_KIND = RANK_EXITED  # catalogue kind of log lines that say a worker died or shut down
PARENT_EXIT_KIND = ORPHANED_PROCESS


def wchan_class(wchan: str | None) -> str | None:
    if not wchan or wchan == "0":
        return None
    w = wchan.lower()
    return next((name for name, keys in _WCHAN_CLASSES if any(k in w for k in keys)), w)


@dataclass(frozen=True)
class ThreadState:
    kind: str
    wchan: str | None
    cpu_rate: float | None  # CPU seconds per wall second between first and last sample
    samples: int

    def text(self) -> str:
        base = _TEXT[self.kind]
        if self.kind in (BLOCKED, SLEEPING, D_STATE) and self.wchan:
            base += f" in {self.wchan}"
        if self.cpu_rate is not None and self.kind in (SPINNING, ACTIVE, RUNNING):
            base += f", {self.cpu_rate:.2f} CPU-s/s over {self.samples} samples"
        return base


def classify(samples: list[dict[str, Any]]) -> ThreadState:
    """One thread's samples (any order) -> what it is doing."""
    samples = sorted(samples, key=lambda r: (r.get("sample") or 0, r.get("t") or 0.0))
    if any(r.get("state") == "gone" for r in samples):
        return ThreadState(GONE, None, None, len(samples))
    states = [str(r.get("state") or "?")[:1] for r in samples]
    wchans = [r.get("wchan") for r in samples]
    last_wchan = next((w for w in reversed(wchans) if w and w != "0"), None)
    rate = None
    first, last = samples[0], samples[-1]
    if len(samples) > 1 and first.get("t") is not None and last.get("t") is not None and last["t"] > first["t"]:
        cpu = [(r.get("utime") or 0.0) + (r.get("stime") or 0.0) for r in (first, last)]
        rate = max(0.0, (cpu[1] - cpu[0]) / (last["t"] - first["t"]))
    n = len(samples)
    if "Z" in states or "X" in states:
        return ThreadState(ZOMBIE, None, rate, n)
    if all(s == "D" for s in states):
        return ThreadState(D_STATE, last_wchan, rate, n)
    if all(s in ("T", "t") for s in states):
        return ThreadState(STOPPED, last_wchan, rate, n)
    if all(s == "R" for s in states) and all(not w or w == "0" for w in wchans):
        if n > 1 and rate is not None and rate >= SPIN_CPU_RATE:
            return ThreadState(SPINNING, None, rate, n)
        return ThreadState(RUNNING if n == 1 or rate is None else ACTIVE, None, rate, n)
    if all(s == "S" for s in states):
        cls = wchan_class(last_wchan)
        kind = BLOCKED if cls in ("futex", "epoll", "poll", "pipe", "socket", "child") else SLEEPING
        return ThreadState(kind, last_wchan, rate, n)
    return ThreadState(ACTIVE, last_wchan, rate, n)


def thread_states(thread_samples: Iterable[dict[str, Any]]) -> dict[tuple[Any, int], tuple[ThreadState, Counter]]:
    """(host, pid) -> (main thread's state, Counter of sibling threads' wait classes in their last sample)."""
    by_thread: dict[tuple[Any, int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in thread_samples:
        if r.get("pid") is not None and r.get("tid") is not None:
            by_thread[(r.get("host"), int(r["pid"]), int(r["tid"]))].append(r)
    out: dict[tuple[Any, int], tuple[ThreadState, Counter]] = {}
    siblings: dict[tuple[Any, int], Counter] = defaultdict(Counter)
    for (host, pid, tid), samples in by_thread.items():
        if tid == pid:
            continue
        last = max(samples, key=lambda r: r.get("sample") or 0)
        state = str(last.get("state") or "?")[:1]
        siblings[(host, pid)][wchan_class(last.get("wchan")) or ("running" if state == "R" else state)] += 1
    for (host, pid, tid), samples in by_thread.items():
        if tid == pid:
            out[(host, pid)] = (classify(samples), siblings[(host, pid)])
    return out


# --- findings -----------------------------------------------------------------------------------------
def _who(procs: Iterable[Proc]) -> str:
    procs = list(procs)
    ranked = [p.rank for p in procs if p.rank is not None]
    if len(ranked) == len(procs):
        return ranks_text(ranked)
    return ", ".join(p.label() for p in procs)


def _state_findings(procs: Processes, states: dict[tuple[Any, int], tuple[ThreadState, Counter]]) -> list[Finding]:
    if not states:
        return []
    groups: dict[tuple[str, str | None], list[Proc]] = defaultdict(list)
    sib_total: Counter = Counter()
    cases: dict[Proc, ThreadState] = {}
    for (host, pid), (state, sib) in states.items():
        p = procs.find(host, pid)
        if p is None or (p.rank is None and procs.ranked()):
            continue  # launchers and API servers next to ranked workers only blur the summary
        wchan = wchan_class(state.wchan) if state.kind == BLOCKED else state.wchan if state.kind in (SLEEPING, D_STATE) else None
        groups[(state.kind, wchan)].append(p)
        sib_total.update(sib)
        cases[p] = state
    if not groups:
        return []
    parts, evidence = [], []
    for (kind, wchan), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        sample_state = cases[members[0]]
        rates = [cases[m].cpu_rate for m in members if cases[m].cpu_rate is not None]
        text = _TEXT[kind] + (f" in {wchan}" if wchan and kind != SPINNING else "")
        if rates and kind in (SPINNING, ACTIVE):
            span = f"{min(rates):.2f}" if max(rates) - min(rates) < 0.01 else f"{min(rates):.2f}-{max(rates):.2f}"
            text += f", {span} CPU-s/s over {sample_state.samples} samples"
        parts.append(f"{_who(members)}: {text}")
        evidence.extend(f"{m.label()} main thread: {cases[m].text()}" for m in members)
    summary = "main threads: " + "; ".join(parts)
    if sib_total:
        top = ", ".join(f"{n} {k}" for k, n in sib_total.most_common(4))
        summary += f". Sibling threads: {sum(sib_total.values())} ({top})"
    findings = [
        Finding(kind=THREAD_STATES, ranks=tuple(sorted(p.rank for p in cases if p.rank is not None)), summary=summary,
                evidence=tuple(evidence), role="symptom",
                details={"states": {p.label(): cases[p].kind for p in cases}, "siblings": dict(sib_total)})
    ]
    stuck = [p for p, s in cases.items() if s.kind == D_STATE and s.samples > 1]
    if stuck:
        wchans = sorted({cases[p].wchan or "?" for p in stuck})
        findings.append(
            Finding(kind=STUCK_IN_KERNEL, ranks=tuple(sorted(p.rank for p in stuck if p.rank is not None)),
                    summary=f"{_who(stuck)} stuck in the kernel: main thread in uninterruptible sleep (D) in every "
                            f"sample, wait channel {', '.join(wchans)}",
                    evidence=tuple(f"{p.label()}: {cases[p].text()}" for p in stuck),
                    waiting_ranks=tuple(sorted(p.rank for p in cases if p.rank is not None and p not in stuck)),
                    details={"wchan": wchans, "confidence": "medium"})
        )
    return findings


_STOP_TEXT = {"T": "is stopped: SIGSTOP or a debugger", "t": "is stopped by a debugger (traced)"}


def _name(p: Proc) -> str:
    """'rank 1, pid 7935, VLLM::Worker_TP1': the rank, pid and framework title people look for in `ps`."""
    title = (p.title or "").split()[0] if p.title else ""
    parts = [f"rank {p.rank}" if p.rank is not None else "process", f"pid {p.pid}"]
    return ", ".join(parts + ([title] if title and "/" not in title else []))


def _stopped(procs: Processes, samples: list[dict[str, Any]],
             states: dict[tuple[Any, int], tuple[ThreadState, Counter]],
             views: list[stacks.RankView]) -> list[Finding]:
    """rank_stopped: a rank's main thread stopped (state T/t) in every sample. A stopped process cannot post its
    next collective, so peers that still run wait for it; whatever they log next (timeouts) is a symptom."""
    stopped = {p: st for (host, pid), (st, _) in states.items()
               if st.kind == STOPPED and (p := procs.find(host, pid)) is not None and p.rank is not None}
    if not stopped:
        return []
    letter = {(r.get("host"), r.get("pid")): str(r.get("state") or "T")[:1] for r in samples
              if r.get("pid") is not None and r.get("tid") == r.get("pid")}
    by_rank = {v.rank: v for v in views if v.rank is not None}
    ranks = sorted({p.rank for p in stopped if p.rank is not None})
    peers = sorted({p.rank for p in procs.all() if p.live and p.rank is not None and p.rank not in ranks})
    heads = [f"{_name(p)}, {_STOP_TEXT.get(letter.get((p.host, p.pid), 'T'), _STOP_TEXT['T'])}"
             for p in sorted(stopped, key=lambda p: (p.rank, p.pid))]
    waiting = [r for r in peers if r in by_rank and by_rank[r].placement.category == stacks.COLLECTIVE]
    spinning = [r for r in peers if any(st.kind == SPINNING for (h, pid), (st, _) in states.items()
                                        if procs.rank_of(h, pid) == r)]
    if not peers:
        summary = f"{'; '.join(heads)}; no other rank is running: the whole job is suspended, not hung"
    elif waiting:
        where = by_rank[waiting[0]].placement.where
        summary = (f"{'; '.join(heads)}; {ranks_text(waiting)} {'waits' if len(waiting) == 1 else 'wait'} for it "
                   f"in {where}" + (" (spinning)" if set(waiting) & set(spinning) else ""))
    else:
        summary = f"{'; '.join(heads)}; {ranks_text(peers)} still {'runs' if len(peers) == 1 else 'run'}"
    evidence = [f"{p.label()} main thread: {st.text()}" + (" (t: traced)" if letter.get((p.host, p.pid)) == "t" else "")
                for p, st in sorted(stopped.items(), key=lambda kv: (kv[0].rank, kv[0].pid))]
    evidence += [f"{by_rank[r].label}: in {by_rank[r].placement.category}: {by_rank[r].placement.where}"
                 for r in peers if r in by_rank]
    return [Finding(kind=RANK_STOPPED, ranks=tuple(ranks), summary=summary, evidence=tuple(evidence),
                    waiting_ranks=tuple(peers),
                    details={"pids": sorted(p.pid for p in stopped),
                             "confidence": "high" if waiting or spinning else "medium" if peers else "low"})]


def _exit_lines(events: list[dict[str, Any]], signatures: set[str]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("signature") in signatures and e.get("rank") is not None:
            out[int(e["rank"])].append(e)
    return out


def _exits(procs: Processes, views: list[stacks.RankView], events: list[dict[str, Any]],
           exit_sigs: set[str]) -> tuple[list[Finding], set[int]]:
    """rank_exited: a member whose process is gone or a zombie, or whose log says it died or shut down, while
    peers are still alive."""
    ranked = procs.ranked()
    live_ranks = {r for r, ps in ranked.items() if any(p.live for p in ps)}
    said = _exit_lines(events, exit_sigs)
    exited: dict[int, list[str]] = {}
    for r, ps in ranked.items():
        if r in live_ranks:
            continue
        dead = [p for p in ps if p.dead]
        if dead:
            exited[r] = [f"{p.label()}: process {p.status or 'gone'}" for p in dead]
        elif r in said and live_ranks:
            exited[r] = [f"rank {r} log, {e['file']}:{e['line_no']}: {clip(e['text'], 200)}" for e in said[r][-2:]]
            exited[r].append(f"rank {r}: no live process, stack or GPU context found for it")
    if not exited or not live_ranks:
        return [], set()
    teardown = {v.rank for v in views if v.rank is not None and v.placement.category == stacks.TEARDOWN}
    waiting_in = {v.rank: v for v in views if v.rank is not None and v.placement.category in (stacks.TEARDOWN, stacks.COLLECTIVE)}
    waiting = sorted(live_ranks & set(waiting_in)) or sorted(live_ranks)
    gone = sorted(exited)
    summary = f"{ranks_text(gone)} exited while {ranks_text(waiting)} still {verb(waiting, 'waits', 'wait')}"
    if teardown and set(waiting) <= teardown | set(waiting_in):
        where = teardown_chain(waiting_in[waiting[0]])
        if teardown >= set(waiting):
            summary = (f"uncoordinated shutdown: {ranks_text(gone)} exited while {ranks_text(waiting)} are stuck in "
                       f"communicator teardown ({where}), which waits for every member")
            held = sum(p.gpu_memory for r in waiting for p in ranked.get(r, []))
            if held:
                summary += f"; they still hold {gib(held)} of GPU memory"
    elif waiting_in:
        summary += f" in {waiting_in[waiting[0]].placement.where}"
    evidence = [line for r in gone for line in exited[r]]
    evidence += [f"{v.label}: in {v.placement.category}: {teardown_chain(v)} [{_progress(v)}]"
                 for r, v in sorted(waiting_in.items()) if r in waiting]
    sure = bool(waiting_in) or any(all(p.dead for p in ranked[r]) for r in gone)
    return [Finding(kind=RANK_EXITED, ranks=tuple(gone), summary=summary, evidence=tuple(evidence),
                    waiting_ranks=tuple(waiting),
                    details={"teardown": sorted(teardown), "confidence": "high" if sure else "medium"})], set(gone)


def teardown_chain(view: stacks.RankView) -> str:
    """'commDestroySync <- ncclCommDestroy <- destroy <- destroy_model_parallel': the teardown frames only,
    innermost first, so the blocking NCCL call is named and not just the API the program called."""
    names: list[str] = []
    for frame in view.thread.last():
        hit = stacks.classify_frame(frame)
        if hit is not None and hit[0] == stacks.TEARDOWN and (not names or names[-1] != frame.short):
            names.append(frame.short)
    return " <- ".join(names) if names else view.placement.where


def _progress(view: stacks.RankView) -> str:
    return "one sample" if view.samples < 2 else f"{view.progress} over {view.samples} samples"


def _teardown(procs: Processes, views: list[stacks.RankView], exited: set[int],
              gpu_samples: list[dict[str, Any]], gpu_procs: list[dict[str, Any]]) -> list[Finding]:
    stuck = [v for v in views if v.placement.category == stacks.TEARDOWN]
    if not stuck:
        return []
    who = ranks_text([v.rank for v in stuck if v.rank is not None]) if all(v.rank is not None for v in stuck) \
        else ", ".join(v.label for v in stuck)
    wheres = Counter(teardown_chain(v) for v in stuck)
    evidence = [f"{v.label}: {teardown_chain(v)} [{_progress(v)}]" for v in stuck]
    held = 0
    for v in stuck:
        p = procs.find(v.host, v.pid) if v.pid is not None else None
        if p is not None and p.gpu_memory:
            held += p.gpu_memory
            evidence.append(f"{v.label}: still holds {gib(p.gpu_memory)} on GPU {', '.join(map(str, sorted(p.gpus)))}")
    empty = _empty_gpus(gpu_samples, gpu_procs)
    if empty and held:
        evidence.append(f"GPU {', '.join(map(str, empty))}: no process and no memory in use while the stuck ranks' "
                        f"GPUs are held: a member may already have exited")
    summary = f"{who} stuck in communicator teardown: {wheres.most_common(1)[0][0]}"
    if exited:
        summary += f"; destroy is collective and waits for {ranks_text(exited)}, which already exited"
    elif empty and held:
        summary += f"; destroy is collective, and GPU {', '.join(map(str, empty))} holds no process any more"
    else:
        summary += "; destroy is collective: a peer that exited or never reached teardown blocks it"
    if held:
        summary += f" ({gib(held)} of GPU memory still held)"
    details: dict[str, Any] = {"where": dict(wheres), "gpu_memory_held": held, "empty_gpus": empty,
                               "confidence": "medium"}
    role = "cause"
    if exited:
        role, details["explained_by"] = "symptom", RANK_EXITED
    return [Finding(kind=STUCK_IN_TEARDOWN, ranks=tuple(sorted(v.rank for v in stuck if v.rank is not None)),
                    summary=summary, evidence=tuple(evidence), waiting_ranks=(), role=role, details=details)]


def _empty_gpus(gpu_samples: list[dict[str, Any]], gpu_procs: list[dict[str, Any]]) -> list[int]:
    """GPUs with no process and (almost) no memory in their last sample, when others do hold processes."""
    if not gpu_samples or not gpu_procs:
        return []
    busy = {r.get("gpu") for r in gpu_procs}
    last: dict[Any, dict[str, Any]] = {}
    for r in gpu_samples:
        if r.get("gpu") is not None and (r.get("gpu") not in last or (r.get("sample") or 0) >= (last[r["gpu"]].get("sample") or 0)):
            last[r["gpu"]] = r
    return sorted(g for g, r in last.items() if g not in busy and (r.get("mem_used") or 0) < 1 << 30)


def _orphans(procs: Processes, events: list[dict[str, Any]], parent_sigs: set[str]) -> list[Finding]:
    """Workers whose parent is gone: from the process tree (parent_alive false, or re-parented to pid 1)."""
    orphans = [
        p for p in procs.all()
        if p.live and p.role not in ("launcher", "api") and (p.rank is not None or p.role in ("worker", "engine"))
        and (p.parent_alive is False or (p.ppid == 1 and p.parent_alive is not True))
    ]
    if not orphans:
        return []
    held = sum(p.gpu_memory for p in orphans)
    summary = f"{_who(orphans)} outlived {'their parents' if len(orphans) > 1 else 'its parent'}"
    if held:
        summary += f" and still hold {gib(held)} of GPU memory"
    evidence = [
        f"{p.label()}: parent pid {p.ppid} {'gone' if p.parent_alive is False else 'is init (re-parented)'}"
        + (f", holds {gib(p.gpu_memory)} on GPU {', '.join(map(str, sorted(p.gpus)))}" if p.gpu_memory else "")
        for p in orphans
    ]
    pids = {p.pid for p in orphans}
    evidence += [f"{e['file']}:{e['line_no']}: {clip(e['text'], 200)}" for e in events
                 if e.get("signature") in parent_sigs and e.get("pid") in pids][:5]
    return [Finding(kind=ORPHANED_PROCESS, ranks=tuple(sorted(p.rank for p in orphans if p.rank is not None)),
                    summary=summary, evidence=tuple(evidence),
                    details={"pids": sorted(pids), "gpu_memory_held": held, "confidence": "high"})]


def _signature_ids(kind: str) -> set[str]:
    from hangdoc.signatures import load_catalogue

    return {s.id for s in load_catalogue() if s.kind == kind}


def rank_views(table: Callable[[str], pa.Table], procs: Processes) -> list[stacks.RankView]:
    """The stacks module's per-rank view, with ranks from titles and logs that its own lookup does not read."""
    return stacks.rank_views(table("py_frames"), procs.table(), table("collectives"))


def host_findings(table: Callable[[str], pa.Table], procs: Processes | None = None,
                  views: list[stacks.RankView] | None = None) -> list[Finding]:
    """Every host signature from the bundle's tables (`table(name)` returns one, empty when absent)."""
    procs = procs if procs is not None else Processes(table)
    views = views if views is not None else rank_views(table, procs)
    events = rows(table("log_events"))
    samples = rows(table("thread_samples"))
    states = thread_states(samples)
    findings = _state_findings(procs, states) + _stopped(procs, samples, states, views)
    exit_findings, exited = _exits(procs, views, events, _signature_ids(EXIT_SIGNATURES_KIND))
    findings += exit_findings
    findings += _teardown(procs, views, exited, rows(table("gpu_samples")), rows(table("gpu_processes")))
    findings += _orphans(procs, events, _signature_ids(PARENT_EXIT_KIND))
    return findings


def has_process_data(ctx: Any) -> bool:
    """Does the input say anything about processes beyond the collectives? Traces alone do not, and then no
    large collectives table needs indexing by process."""
    return any(ctx.table(n).num_rows for n in ("processes", "thread_samples", "py_frames", "log_events"))


def host_signatures(ctx: Any) -> list[Finding]:
    """Analysis pass: thread states, exited ranks, teardown, orphans."""
    if not has_process_data(ctx):
        return []
    return host_findings(ctx.table, *context_views(ctx))


def context_views(ctx: Any) -> tuple[Processes, list[stacks.RankView]]:
    """The coalesced processes and rank views, built once per analysis run for the host, log and GPU passes."""
    procs = shared(ctx, "signatures.processes", lambda: Processes(ctx.table))
    return procs, shared(ctx, "signatures.rank_views", lambda: rank_views(ctx.table, procs))
