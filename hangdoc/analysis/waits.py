"""Who waits for whom, across communicators, and what that makes of each stuck rank.

Edges: a rank in flight at seq s of a communicator waits for each member that never issued s (lagging or
missing), and the majority of a mismatch waits for its minority (both sides of a tie wait for each other).
The roots are the terminal strongly connected components: a single rank every chain of waits ends at,
or a cycle (two ranks each waiting in a different communicator for the other: an order inversion).
Ranks that wait on something else are symptoms and are summarised in one wait_chain finding.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import numpy as np

from hangdoc.analysis.model import (
    LAGGING_RANK,
    MISSING_RANK,
    ORDER_INVERSION,
    WAIT_CHAIN,
    OpCall,
    Finding,
)
from hangdoc.analysis.text import number, plural, rank_ranges, ranks_text, verb
from hangdoc.analysis.view import CollectiveView
from hangdoc.importers.logfacts import SOURCES as LOG_SOURCES

if TYPE_CHECKING:
    from hangdoc.analysis.pipeline import Context

NEVER_ISSUED = "never_issued"
MISMATCH = "mismatch"
TIE = "tie"


@dataclass(frozen=True)
class Wait:
    waiter: int
    target: int
    comm: int
    seq: int
    why: str  # NEVER_ISSUED / MISMATCH / TIE


@dataclass(frozen=True)
class Lag:
    """`rank` never issued the call at `seq` of `comm` that `waiters` are in; it stopped at `last_seq`."""

    comm: int
    rank: int
    last_seq: int
    seq: int
    waiters: tuple[int, ...]
    wait_row: int  # a waiter's in-flight row at `seq`


@dataclass
class WaitGraph:
    waits: list[Wait]
    lags: list[Lag]
    out: dict[int, list[Wait]] = field(default_factory=dict)
    terminal: list[frozenset[int]] = field(default_factory=list)  # roots: sinks and closed cycles
    reach: dict[int, frozenset[int]] = field(default_factory=dict)  # waiting rank -> indices into terminal
    depth: dict[int, int] = field(default_factory=dict)  # waiting rank -> waits between it and a root

    @property
    def waiting(self) -> set[int]:
        return set(self.out)

    def roots(self) -> list[frozenset[int]]:
        """Terminal components something waits on, most waited-on first."""
        counts = [0] * len(self.terminal)
        for idx in self.reach.values():
            for i in idx:
                counts[i] += 1
        order = sorted(range(len(self.terminal)), key=lambda i: (-counts[i], min(self.terminal[i])))
        return [self.terminal[i] for i in order if counts[i] or len(self.terminal[i]) > 1]

    def waiting_on(self, ranks: Iterable[int]) -> set[int]:
        """Waiting ranks (outside `ranks`) whose chains of waits end in a root that contains any of `ranks`."""
        rs = set(ranks)
        hit = {i for i, t in enumerate(self.terminal) if t & rs}
        return {w for w, idx in self.reach.items() if idx & hit and w not in rs}

    def is_root(self, ranks: Iterable[int]) -> bool:
        rs = set(ranks)
        return bool(rs) and any(rs <= t or t <= rs for t in self.roots())


def find_lags(view: CollectiveView) -> list[Lag]:
    """Members that never issued the call their peers are in (communicators with a frontier mismatch excluded:
    there the members did issue a call, just a different one)."""
    n_comms = len(view.comms)
    has = view.pair_front_row >= 0
    maxfront = np.zeros(n_comms, np.int64)
    np.maximum.at(maxfront, view.pair_comm[has], view.pair_front[has])
    eligible = (maxfront > 0) & view.aligned
    for c in view.conflicts:
        if c.at_frontier:
            eligible[c.comm] = False
    cand = np.nonzero(~has & eligible[view.pair_comm] & (view.pair_maxseq < maxfront[view.pair_comm]))[0]
    laggers: dict[int, list[tuple[int, int, int]]] = {}  # comm -> (rank, last seq issued, 1 if still in a call)
    for p in cand.tolist():
        laggers.setdefault(int(view.pair_comm[p]), []).append((int(view.pair_rank[p]), int(view.pair_maxseq[p]), 0))
    # A member still in a call its peers have completed (they are in flight further on) is behind as well: it
    # never issued the call they wait in. Only where the members are known to share one communicator.
    known = np.array([c.members_known for c in view.comms], dtype=bool)
    if has.any():
        done_max = np.zeros(n_comms, np.int64)
        np.maximum.at(done_max, view.pair_comm[has], view.pair_done[has])
        behind = np.nonzero(has & eligible[view.pair_comm] & known[view.pair_comm]
                            & (view.pair_front <= done_max[view.pair_comm]))[0]
        for p in behind.tolist():
            laggers.setdefault(int(view.pair_comm[p]), []).append((int(view.pair_rank[p]), int(view.pair_front[p]) - 1, 1))
    counts = np.bincount(view.pair_comm, minlength=n_comms)
    for c in np.nonzero(eligible)[0].tolist():
        comm = view.comms[c]
        if comm.members_known and counts[c] < len(comm.members):
            present = set(view.pair_rank[view.comm_pairs(c)].tolist())
            for r in comm.members:
                if r not in present:
                    laggers.setdefault(c, []).append((r, 0, 0))
    lags: list[Lag] = []
    for c, items in sorted(laggers.items()):
        ps = view.comm_pairs(c)
        ps = ps[view.pair_front_row[ps] >= 0]
        fronts = view.pair_front[ps]
        for rank, last, in_flight in sorted(items):
            w = ps[fronts > last + in_flight]  # a member stuck at seq s waits on nobody stuck at s too
            if not w.size:
                continue
            i = int(np.argmin(view.pair_front[w]))
            lags.append(Lag(
                comm=c,
                rank=rank,
                last_seq=last,
                seq=int(view.pair_front[w[i]]),
                waiters=tuple(sorted(int(x) for x in view.pair_rank[w].tolist())),
                wait_row=int(view.pair_front_row[w[i]]),
            ))
    return lags


def build_wait_graph(view: CollectiveView) -> WaitGraph:
    lags = find_lags(view)
    waits: list[Wait] = [Wait(w, lag.rank, lag.comm, lag.seq, NEVER_ISSUED) for lag in lags for w in lag.waiters]
    for c in view.conflicts:
        if not c.at_frontier:
            continue
        stuck = set(c.in_flight)
        if c.tie:
            key = {int(view.rank[r]): int(view.sig[r]) for r in c.rows}
            for a in key:
                for b in key:
                    if key[a] != key[b] and a in stuck:
                        waits.append(Wait(a, b, c.comm, c.seq or 0, TIE))
        else:
            waits.extend(Wait(m, x, c.comm, c.seq or 0, MISMATCH) for m in c.majority if m in stuck
                         for x in c.culprits)
    g = WaitGraph(waits=waits, lags=lags)
    for w in waits:
        if w.waiter != w.target:
            g.out.setdefault(w.waiter, []).append(w)
    _analyse(g)
    return g


def _analyse(g: WaitGraph) -> None:
    """Tarjan's SCC (iterative); components come out sinks first, so reachability is one sweep."""
    succ = {v: sorted({w.target for w in ws}) for v, ws in g.out.items()}
    nodes = sorted(set(succ) | {t for ts in succ.values() for t in ts})
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on: set[int] = set()
    stack: list[int] = []
    comp_of: dict[int, int] = {}
    comps: list[list[int]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on.add(v)
            ts = succ.get(v, [])
            if i < len(ts):
                work.append((v, i + 1))
                t = ts[i]
                if t not in index:
                    work.append((t, 0))
                elif t in on:
                    low[v] = min(low[v], index[t])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp_of[x] = len(comps)
                    comp.append(x)
                    if x == v:
                        break
                comps.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    reach: list[frozenset[int]] = []
    terminal_of: dict[int, int] = {}
    for ci, comp in enumerate(comps):
        nexts = {comp_of[t] for v in comp for t in succ.get(v, []) if comp_of[t] != ci}
        if not nexts:
            terminal_of[ci] = len(g.terminal)
            g.terminal.append(frozenset(comp))
            reach.append(frozenset({terminal_of[ci]}))
        else:
            reach.append(frozenset().union(*(reach[n] for n in nexts)))
    g.reach = {v: reach[comp_of[v]] for v in g.out}
    # Depth: breadth-first from the roots along reversed edges.
    rev: dict[int, list[int]] = {}
    for v, ts in succ.items():
        for t in ts:
            rev.setdefault(t, []).append(v)
    depth = {v: 0 for t in g.terminal for v in t}
    queue = deque(depth)
    while queue:
        v = queue.popleft()
        for u in rev.get(v, []):
            if u not in depth:
                depth[u] = depth[v] + 1
                queue.append(u)
    g.depth = {v: depth.get(v, 0) for v in g.out}


# --- passes ----------------------------------------------------------------------------------------

def _culprits_of_conflicts(view: CollectiveView) -> set[int]:
    return {r for c in view.conflicts if c.at_frontier for r in c.culprits}


def _whereabouts(view: CollectiveView, rank: int) -> str:
    """Where a rank itself stands: its calls in flight, or its last recorded call."""
    fronts = view.frontiers_of(rank)
    if fronts:
        parts = []
        for p in fronts[:3]:
            call = view.call(int(view.pair_front_row[p]))
            parts.append(f"{call.label()} on {view.comms[int(view.pair_comm[p])].id} seq {call.seq} ({call.state})")
        more = f" and {len(fronts) - 3} more" if len(fronts) > 3 else ""
        return f"rank {rank} is itself in " + "; ".join(parts) + more
    pairs = view.rank_pairs(rank)
    if not pairs:
        return f"rank {rank} left no collective trace"
    rows = [int(view.pair_last_row[p]) for p in pairs]
    when = np.nan_to_num(view.times(rows), nan=-1.0).tolist()
    last = max(zip(when, (int(view.seq[r]) for r in rows), rows))[2]
    call = view.call(last)
    comm = view.comms[int(view.pair_comm[view.pair[last]])]
    return (f"rank {rank} has no collective in flight; its last recorded call is {call.label()} on {comm.id} "
            f"seq {call.seq} ({call.state})")


def _member_rows(view: CollectiveView, comm: int, limit: int = 64) -> list[int]:
    """Each member's call in flight on `comm`, else its last call there (the lagging rank's included), so a
    report can show every member side by side."""
    out = []
    for p in view.comm_pairs(comm).tolist()[:limit]:
        row = int(view.pair_front_row[p]) if view.pair_front_row[p] >= 0 else int(view.pair_last_row[p])
        if row >= 0:
            out.append(row)
    return sorted(out, key=lambda r: int(view.rank[r]))


def lagging_pass(ctx: "Context") -> list[Finding]:
    """lagging_rank: a rank (a root of the wait-for graph) never issued the call its peers wait in."""
    view = ctx.collectives
    if view is None:
        return []
    g = view.waits
    skip = _culprits_of_conflicts(view) | set(view.missing_ranks)
    by_rank: dict[int, list] = {}
    for lag in g.lags:
        if lag.rank in skip or lag.rank in g.out:
            continue  # explained by a mismatch, missing altogether, or itself waiting (a symptom)
        by_rank.setdefault(lag.rank, []).append(lag)
    findings = []
    if by_rank and view.sources and view.sources <= LOG_SOURCES:
        by_rank, findings = _most_behind(view, by_rank)
    for rank, lags in sorted(by_rank.items()):
        lags.sort(key=lambda x: (-len(x.waiters), view.comms[x.comm].id))
        main = lags[0]
        comm = view.comms[main.comm]
        waiting_call = view.call(main.wait_row)
        waiters = sorted({w for x in lags for w in x.waiters})
        last = f"its last call there is seq {main.last_seq}" if main.last_seq else "it made no call there"
        summary = (
            f"{view.label(rank)} never issued {waiting_call.label()} (seq {main.seq} of {comm.id}) that "
            f"{ranks_text(main.waiters)} {'is' if len(main.waiters) == 1 else 'are'} waiting in; {last}"
        )
        evidence = [
            f"{view.comms[x.comm].id} seq {x.seq}: {ranks_text(x.waiters)} in {view.call(x.wait_row).label()}; "
            f"rank {rank} stopped at seq {x.last_seq}" for x in lags[:10]
        ]
        if len(lags) > 10:
            evidence.append(f"... and {len(lags) - 10} more communicators")
        evidence.append(_whereabouts(view, rank))
        findings.append(Finding(
            kind=LAGGING_RANK,
            ranks=(rank,),
            summary=summary,
            group=comm.id,
            seq=main.seq,
            op=waiting_call.label(),
            evidence=tuple(evidence),
            calls=tuple(view.calls(_member_rows(view, main.comm))),
            waiting_ranks=tuple(waiters),
            count=len(lags),
            details={
                "groups": [view.comms[x.comm].id for x in lags],
                "last_seq": main.last_seq,
                "clause": f"it never issued seq {main.seq} of {comm.id}, which {ranks_text(main.waiters)} "
                          f"{verb(main.waiters, 'waits', 'wait')} in",
            },
        ))
    return findings


def missing_pass(ctx: "Context") -> list[Finding]:
    """missing_rank: members of a communicator (or ranks below the world size) that left no rows at all.

    From log lines alone (collectives rows of log sources) only members of a communicator whose members are
    known count, and they are named only when they are fewer than the ranks waiting for them or their logs are
    in the input: a rank whose log nobody pasted may be as stuck as the rest."""
    view = ctx.collectives
    if view is None or not view.missing_ranks:
        return []
    missing = view.missing_ranks
    g = view.waits
    if view.sources and view.sources <= LOG_SOURCES:
        return _silent_in_logs(ctx, view, g)
    ms = set(missing)
    member_of = sorted({c.id for c in view.comms if c.members_known and ms & set(c.members)})
    waiters = sorted({w.waiter for w in g.waits if w.target in ms})
    evidence = [f"no collective rows for {ranks_text(missing)} (world size {view.world_size})"]
    if member_of:
        evidence.append("member of " + ", ".join(member_of[:12]) + (" ..." if len(member_of) > 12 else ""))
    for lag in [x for x in g.lags if x.rank in ms][:8]:
        evidence.append(f"{ranks_text(lag.waiters)} {verb(lag.waiters, 'waits', 'wait')} at seq {lag.seq} of "
                        f"{view.comms[lag.comm].id} for rank {lag.rank}")
    evidence.append("if their trace files were not collected, add them; otherwise these ranks never reached "
                    "the collective layer (crashed, exited or never started)")
    who = view.label(missing[0]) if len(missing) == 1 else "global " + ranks_text(missing)
    summary = f"{who} left no collective trace"
    if waiters:
        them = "it" if len(missing) == 1 else "them"
        summary += f" while {ranks_text(waiters)} {verb(waiters, 'waits', 'wait')} for {them}"
    return [Finding(
        kind=MISSING_RANK,
        ranks=missing,
        summary=summary,
        group=member_of[0] if member_of else None,
        evidence=tuple(evidence),
        waiting_ranks=tuple(waiters),
        count=len(missing),
        details={"groups": member_of, "clause": "it left no collective trace"},
    )]


def order_inversion_pass(ctx: "Context") -> list[Finding]:
    """order_inversion: ranks each waiting in a different communicator for the other (a cycle of waits)."""
    view = ctx.collectives
    if view is None:
        return []
    g = view.waits
    findings = []
    for comp in g.terminal:
        if len(comp) < 2:
            continue
        inner = [w for v in sorted(comp) for w in g.out.get(v, []) if w.target in comp and w.why == NEVER_ISSUED]
        if not inner:
            continue  # a tie: both sides of one communicator; the mismatch finding says so
        lines = []
        for w in inner[:10]:
            comm = view.comms[w.comm]
            lines.append(f"rank {w.waiter} waits in {comm.id} at seq {w.seq} for rank {w.target}, which never issued it")
        comms = sorted({view.comms[w.comm].id for w in inner})
        ranks = tuple(sorted(comp))
        if len(ranks) == 2 and len(comms) >= 2:
            a, b = ranks
            wa = next(w for w in inner if w.waiter == a)
            wb = next(w for w in inner if w.waiter == b)
            summary = (
                f"{view.label(a)} waits in {view.comms[wa.comm].id} for rank {b}, which waits in "
                f"{view.comms[wb.comm].id} for rank {a}: the two communicators were entered in opposite orders"
            )
        else:
            summary = (f"{ranks_text(ranks)} wait on each other in a cycle across {', '.join(comms)}: "
                       f"communicators entered in different orders")
        findings.append(Finding(
            kind=ORDER_INVERSION,
            ranks=ranks,
            summary=summary,
            group=comms[0] if comms else None,
            seq=inner[0].seq,
            evidence=tuple(lines),
            waiting_ranks=ranks,
            count=len(inner),
            details={"groups": comms},
        ))
    return findings


def wait_chain_pass(ctx: "Context") -> list[Finding]:
    """wait_chain (symptom): every rank that waits on another rank, summarised once with counts."""
    view = ctx.collectives
    if view is None:
        return []
    g = view.waits
    roots = g.roots()
    in_roots = set().union(*roots) if roots else set()
    waiting = sorted(v for v in g.out if v not in in_roots)
    if not waiting:
        return []
    direct = [v for v in waiting if g.depth.get(v) == 1]
    indirect = [v for v in waiting if g.depth.get(v, 0) > 1]
    # One line per (communicator, target, reason), nearest the roots first.
    grouped: dict[tuple[int, int, str, int], list[int]] = {}
    for v in waiting:
        for w in g.out[v]:
            grouped.setdefault((w.comm, w.target, w.why, w.seq), []).append(v)
    why_text = {NEVER_ISSUED: "which never issued that call", MISMATCH: "which posted a different collective",
                TIE: "which posted a different collective (tie)"}
    items = sorted(grouped.items(), key=lambda kv: (g.depth.get(kv[1][0], 0), view.comms[kv[0][0]].id, kv[0][1]))
    lines = [
        f"{ranks_text(vs)} wait{'s' if len(vs) == 1 else ''} in {view.comms[c].id} at seq {s} for rank {t}, {why_text[why]}"
        for (c, t, why, s), vs in items[:12]
    ]
    if len(items) > 12:
        lines.append(f"... and {len(items) - 12} more waits")
    root_text = " or ".join(ranks_text(r) for r in roots[:3]) if roots else "a cycle"
    summary = (
        f"{plural(len(waiting), 'stuck rank')} wait{'s' if len(waiting) == 1 else ''}, directly or through another "
        f"rank, on {root_text} ({number(len(direct)) if direct else 'none'} directly, "
        f"{number(len(indirect)) if indirect else 'none'} through other ranks)"
    )
    return [Finding(
        kind=WAIT_CHAIN,
        ranks=tuple(waiting),
        summary=summary,
        evidence=tuple(lines),
        waiting_ranks=tuple(waiting),
        role="symptom",
        count=len(waiting),
        details={"roots": [sorted(r) for r in roots], "direct": direct, "indirect": indirect,
                 "depth": max(g.depth.values()) if g.depth else 0},
    )]


def _silent_in_logs(ctx: "Context", view: CollectiveView, g: WaitGraph) -> list[Finding]:
    """missing_rank from logs: 'ranks 1-3 timed out in all_reduce SeqNum 57; rank 0 of the 4 logged nothing
    about it: it never entered that call'. Nothing when the silent ranks cannot be told from ranks whose logs are
    simply absent (the log pass then says who waits and what would decide)."""
    members = {r for c in view.comms if c.members_known for r in c.members}
    missing = tuple(r for r in view.missing_ranks if r in members)
    if not missing:
        return []
    ms = set(missing)
    lags = [x for x in g.lags if x.rank in ms]
    if not lags:
        return []
    waiters = sorted({w for x in lags for w in x.waiters})
    events = ctx.table("log_events")
    seen: set[int] = set()
    if events.num_rows and "event" in events.column_names:
        for e, r in zip(events.column("event").to_pylist(), events.column("rank").to_pylist()):
            if e == "seen" and r is not None:
                seen.add(int(r))
    main = max(lags, key=lambda x: len(x.waiters))
    comm = view.comms[main.comm]
    call = view.call(main.wait_row)
    pg = "" if comm.name in ("0", "detail") else f" of process group {comm.name}"
    who_waits = ranks_text(main.waiters) if len(main.waiters) < 3 else "ranks " + rank_ranges(main.waiters)
    if call.state == "timed_out":
        waited = f"{who_waits} timed out in {_op_text(call)} SeqNum {main.seq}{pg}"
    else:
        waited = (f"{who_waits} {'is' if len(main.waiters) == 1 else 'are'} in {_op_text(call)} SeqNum "
                  f"{main.seq}{pg} ({call.state.replace('_', ' ')})")
    absent = sorted(ms - seen)
    who = ranks_text(missing)
    evidence = [f"{view.comms[x.comm].id} SeqNum {x.seq}: {ranks_text(x.waiters)} in {_op_text(view.call(x.wait_row))}; "
                f"rank {x.rank} logged nothing about it" for x in lags[:8]]
    evidence.append(f"{len(comm.members)} members: {ranks_text(comm.members)}")
    if absent:
        evidence.append(f"no log line at all from {ranks_text(absent)} in the input")
    if len(missing) < len(waiters) or not absent:
        summary = (f"{waited}; {who} of the {len(comm.members)} logged nothing about it: "
                   f"{'it' if len(missing) == 1 else 'they'} never entered that call")
        if absent:
            summary += f" (or {'its' if len(absent) == 1 else 'their'} log is not in the input)"
        return [Finding(kind=MISSING_RANK, ranks=missing, summary=summary, group=comm.id, seq=main.seq,
                        op=call.label(), evidence=tuple(evidence), waiting_ranks=tuple(waiters), count=len(missing),
                        details={"source": "log", "silent_ranks": list(missing),
                                 "confidence": "low" if absent else "medium",
                                 "clause": f"it logged nothing about SeqNum {main.seq}{pg}"})]
    return []  # as many silent as waiting, their logs absent: the log pass says who waits and what would decide


def _most_behind(view: CollectiveView, by_rank: dict[int, list[Lag]]) -> tuple[dict[int, list[Lag]], list[Finding]]:
    """From log lines (NCCL RAS counts, desync reports), a communicator where as many members are behind as are
    ahead names nobody: the few ahead may as well be the odd ones (an extra call), and the lines do not say."""
    per_comm: dict[int, set[int]] = {}
    for rank, lags in by_rank.items():
        for x in lags:
            per_comm.setdefault(x.comm, set()).add(rank)
    out: list[Finding] = []
    drop: set[int] = set()
    for c, behind in sorted(per_comm.items()):
        lags = [x for r in behind for x in by_rank[r] if x.comm == c]
        ahead = sorted({w for x in lags for w in x.waiters})
        if len(behind) < len(ahead) or len(behind) < 2:
            continue
        drop |= behind
        main = lags[0]
        comm = view.comms[c]
        summary = (f"{ranks_text(ahead)} {'is' if len(ahead) == 1 else 'are'} in {view.call(main.wait_row).label()} "
                   f"(call {main.seq} of {comm.id}) while {plural(len(behind), 'other member')} stopped before it: "
                   f"with most of the communicator behind, the evidence cannot say whether they lag or the "
                   f"{number(len(ahead))} ahead made an extra call. What would decide it: each rank's stack "
                   f"(py-spy dump --native) or Flight Recorder dumps (TORCH_NCCL_TRACE_BUFFER_SIZE, "
                   f"TORCH_NCCL_DUMP_ON_TIMEOUT=1)")
        out.append(Finding(kind=LAGGING_RANK, ranks=(), summary=summary, group=comm.id, seq=main.seq,
                           op=view.call(main.wait_row).label(), waiting_ranks=tuple(ahead), count=len(behind),
                           evidence=(f"behind: {ranks_text(behind)}", f"ahead: {ranks_text(ahead)}"),
                           details={"source": "log", "undecided": True, "behind": sorted(behind), "confidence": "low"}))
    return {r: ls for r, ls in by_rank.items() if r not in drop}, out


def _op_text(call: OpCall) -> str:
    """'all_reduce numel=8', or 'a collective' when the lines did not say which."""
    return call.label() if call.op != "unknown" else "a collective"
