"""Condensing a Diagnosis for people: rank ranges, op classes, collapsed positions, group order.

Shared by every reporter so that 1024 ranks read the same way in a terminal and in an issue comment, and so
that "which ranks agree" is decided once, not three times.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from hangdoc.analysis import model
from hangdoc.analysis.model import (
    CALL_COUNT_SWAP,
    NO_FAULT_FOUND,
    Diagnosis,
    Finding,
    GroupView,
    OpCall,
    RankPosition,
    StackClass,
    WAIT_CHAIN,
)
from hangdoc.analysis.text import counted_kinds, rank_ranges

KINDS = frozenset(v for k, v in vars(model).items() if k.isupper() and isinstance(v, str))


def rank_name(rank: int, labels: Mapping[int, str]) -> str:
    """'rank 6 (DP 1, TP rank 2)', or 'rank 6' when no label is known."""
    label = labels.get(int(rank))
    return f"rank {int(rank)} ({label})" if label else f"rank {int(rank)}"


def ranks_phrase(ranks: Iterable[int], labels: Mapping[int, str], max_parts: int | None = 16) -> str:
    """One rank with its label, or 'ranks 0-3, 6' for several."""
    rs = sorted({int(r) for r in ranks})
    if len(rs) == 1:
        return rank_name(rs[0], labels)
    if not rs:
        return "no rank"
    return f"ranks {rank_ranges(rs, max_parts)}"


def identity(rank: int, d: Diagnosis) -> str:
    """'pid 90100 on trt-node-0, VLLM::Worker_TP1': what `py-spy dump` or `kill` needs, or '' when unknown."""
    p = d.rank_processes.get(int(rank))
    if p is None or p.pid is None:
        return ""
    return f"pid {p.pid}" + (f" on {p.host}" if p.host else "") + (f", {p.title}" if p.title else "")


def stack_count(d: Diagnosis) -> str:
    """'1 class', '3 classes'."""
    return f"{len(d.stacks)} {'class' if len(d.stacks) == 1 else 'classes'}"


def stack_members(cls: StackClass, labels: Mapping[int, str], max_parts: int | None = 6) -> str:
    """'ranks 1-3 (pids 51208-51210)', 'rank 0 (TP rank 0, pid 51207)', 'pid 11443 (python), thread worker'."""
    pids = sorted({m.pid for m in cls.members if m.pid is not None})
    pid_text = ("pid " if len(pids) == 1 else "pids ") + rank_ranges(pids, 4) if pids else ""
    threads = sorted({m.thread for m in cls.members if m.thread})
    named = threads and (threads != ["MainThread"] or not cls.ranks)  # a rank's main thread goes without saying
    thread_text = f", thread {', '.join(threads)}" if named else ""
    if cls.ranks:
        who = ranks_phrase(cls.ranks, labels, max_parts)
        if pid_text:
            who = who[:-1] + f", {pid_text})" if who.endswith(")") else f"{who} ({pid_text})"
        return who + thread_text
    titles = sorted({m.title for m in cls.members if m.title})
    return (pid_text or "a process") + (f" ({', '.join(titles[:2])})" if titles else "") + thread_text


def finding_facts(
    f: Finding, labels: Mapping[int, str], code: Callable[[str], str], text: Callable[[str], str]
) -> tuple[str, list[str]]:
    """What every report says of a finding before its summary, marked up by the caller's `code` and `text`:
    the heading's tail (where, who) and the facts (ops, swap, who waits)."""
    tail = ""
    if f.group:
        tail += f" on {code(f.group)}"
    if f.seq is not None:
        tail += f" at seq {f.seq}"
    tail += f": {text(ranks_phrase(f.ranks, labels))}"
    facts = []
    if f.op:
        facts.append(f"op {code(f.op)}")
    if f.expected_op:
        facts.append(f"expected {code(f.expected_op)}")
    if f.swap is not None:
        facts.append(f"swap: {f.swap.calls} calls from {code(f.swap.from_group)} to {code(f.swap.to_group)}")
    if f.waiting_ranks:
        facts.append(f"waiting: {text(ranks_phrase(f.waiting_ranks, labels))}")
    return tail, facts



def natural_key(text: str | None) -> tuple:
    """'tp:2' before 'tp:10'."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text or "") if p)


def seq_key(seq: int | None) -> tuple[int, int]:
    return (1, 0) if seq is None else (0, int(seq))


@dataclass(frozen=True)
class CallClass:
    """Ranks that posted exactly the same ops (one per position) around a divergence: one column in a report."""

    ranks: tuple[int, ...]
    calls: tuple[OpCall, ...]  # the first rank's calls, ordered by seq
    culprit: bool

    def at(self, seq: int | None) -> OpCall | None:
        return next((c for c in self.calls if c.seq == seq), None)


def call_classes(calls: Iterable[OpCall], culprits: Iterable[int]) -> list[CallClass]:
    """Group ranks by what they posted; the majority first, culprits last, so columns read 'expected | odd one'."""
    culprit_set = {int(r) for r in culprits}
    by_rank: dict[int, list[OpCall]] = defaultdict(list)
    for call in calls:
        by_rank[int(call.rank)].append(call)
    members: dict[tuple, list[int]] = defaultdict(list)
    sample: dict[tuple, tuple[OpCall, ...]] = {}
    for rank, own in by_rank.items():
        own.sort(key=lambda c: seq_key(c.seq))
        sig = (rank in culprit_set,) + tuple((c.seq, c.label(), c.state) for c in own)
        members[sig].append(rank)
        sample.setdefault(sig, tuple(own))
    classes = [CallClass(tuple(sorted(rs)), sample[sig], sig[0]) for sig, rs in members.items()]
    classes.sort(key=lambda c: (c.culprit, -len(c.ranks), c.ranks[0]))
    return classes


def class_seqs(classes: Iterable[CallClass]) -> list[int | None]:
    """Every position that any class posted at, in order: the rows of a side-by-side table."""
    return sorted({c.seq for cls in classes for c in cls.calls}, key=seq_key)


@dataclass(frozen=True)
class PositionRow:
    """Members of one communicator that stand at the same place: one table row, however many ranks."""

    ranks: tuple[int, ...]
    position: RankPosition | None  # None: a member that left no trace
    culprit: bool
    differs: bool  # not where the majority of the group stands


def _position_key(p: RankPosition | None) -> tuple:
    if p is None:
        return ("<none>",)
    return (p.last_seq, p.last_op, p.state, int(p.calls), int(p.completed))


def collapse_positions(view: GroupView, culprits: Iterable[int]) -> list[PositionRow]:
    """Members with identical positions become one row; culprits always get their own row."""
    culprit_set = {int(r) for r in culprits}
    by_rank: dict[int, RankPosition | None] = {int(r): None for r in view.ranks}
    for p in view.positions:
        # a member that never called on it is shown as leaving no trace, not as standing at a blank position
        by_rank[int(p.rank)] = None if p.last_op is None and not p.calls else p
    counts: dict[tuple, int] = defaultdict(int)
    for p in by_rank.values():
        counts[_position_key(p)] += 1
    top = sorted(counts.values(), reverse=True)
    majority = None
    if top and (len(top) == 1 or top[0] > top[1]):
        majority = max(counts, key=lambda k: counts[k])
    rows: dict[tuple, list[int]] = defaultdict(list)
    for rank, p in by_rank.items():
        rows[(_position_key(p), rank in culprit_set)].append(rank)
    out = [
        PositionRow(tuple(sorted(rs)), by_rank[rs[0]], is_culprit, key != majority)
        for (key, is_culprit), rs in rows.items()
    ]
    out.sort(key=lambda row: row.ranks[0])
    return out


def is_uniform(view: GroupView) -> bool:
    """Every member stands at the same place: nothing to look at in this communicator."""
    return len(collapse_positions(view, ())) <= 1


def verdict_finding(d: Diagnosis) -> Finding | None:
    """The finding the verdict was chosen from, so its evidence and ops can be shown under the verdict."""
    v = d.verdict
    candidates = [f for f in d.findings if f.kind == v.kind]
    for f in candidates:
        if f.role == "cause" and (v.group is None or f.group == v.group):
            return f
    return candidates[0] if candidates else None


def divergence_finding(d: Diagnosis) -> Finding | None:
    """The finding whose per-rank ops best show the first divergence: the verdict's own, else the first cause."""
    main = verdict_finding(d)
    if main is not None and main.calls:
        return main
    with_calls = [f for f in d.findings if f.calls]
    causes = [f for f in with_calls if f.role == "cause"]
    return (causes or with_calls or [None])[0]


def culprits(d: Diagnosis) -> tuple[int, ...]:
    return tuple(sorted({int(r) for r in d.verdict.culprit_ranks}))


def swap_findings(d: Diagnosis) -> list[Finding]:
    return [f for f in d.findings if f.kind == CALL_COUNT_SWAP and f.swap is not None]


def other_causes(d: Diagnosis) -> list[Finding]:
    """Causes besides the verdict's own finding and the swaps (which get their own section)."""
    main = verdict_finding(d)
    return [
        f for f in d.findings
        if f.role != "symptom" and f is not main and f.kind not in (CALL_COUNT_SWAP, NO_FAULT_FOUND)
    ]


@dataclass(frozen=True)
class SymptomLine:
    """All symptom findings of one kind, counted: 'lagging_rank x6 on ranks 0-5, 7'."""

    kind: str
    count: int
    ranks: tuple[int, ...]
    groups: tuple[str, ...]
    example: str  # the first such finding's summary


def symptom_lines(d: Diagnosis) -> list[SymptomLine]:
    by_kind: dict[str, list[Finding]] = defaultdict(list)
    for f in d.findings:
        if f.role == "symptom":
            by_kind[f.kind].append(f)
    counts = dict(counted_kinds([f for fs in by_kind.values() for f in fs]))
    lines = []
    for kind, fs in by_kind.items():
        ranks = sorted({int(r) for f in fs for r in f.ranks})
        groups = sorted({f.group for f in fs if f.group}, key=natural_key)
        lines.append(SymptomLine(kind, counts[kind], tuple(ranks), tuple(groups), fs[0].summary))
    lines.sort(key=lambda s: (-s.count, s.kind))
    return lines


def ordered_groups(d: Diagnosis) -> list[GroupView]:
    """Communicators in the order a reader needs them: the verdict's, those the causes name, those holding a
    culprit, those the symptoms name, those whose members disagree, then the rest (naturally sorted)."""
    by_causes = {f.group for f in d.findings if f.group and f.role != "symptom"}
    for f in swap_findings(d):
        by_causes.update((f.swap.from_group, f.swap.to_group))  # type: ignore[union-attr]
    by_symptoms = {f.group for f in d.findings if f.group and f.role == "symptom"}
    bad = set(culprits(d))

    def priority(view: GroupView) -> tuple:
        if view.group == d.verdict.group:
            rank = 0
        elif view.group in by_causes:
            rank = 1
        elif bad & {int(r) for r in view.ranks}:
            rank = 2
        elif view.group in by_symptoms:
            rank = 3
        elif not is_uniform(view):
            rank = 4
        else:
            rank = 5
        return (rank, natural_key(view.group))

    return sorted(d.groups, key=priority)


def explanation(d: Diagnosis) -> str:
    """The paragraph under the verdict's summary: the swap behind it, who waits, why this verdict."""
    v = d.verdict
    labels = d.rank_labels
    parts = []
    for f in swap_findings(d):
        s = f.swap
        assert s is not None
        who = ranks_phrase(f.ranks, labels)
        parts.append(
            f"{who[0].upper()}{who[1:]} made {s.calls} fewer calls on {s.from_group} and {s.calls} more on "
            f"{s.to_group} than {'its' if len(f.ranks) == 1 else 'their'} peers (a call-count swap)."
        )
    parts.append(_waiting(d))
    if v.reason:
        parts.append(f"Why this verdict: {sentence(v.reason)}")
    if v.kind != NO_FAULT_FOUND:
        parts.append(f"Confidence: {v.confidence}.")
    return " ".join(p for p in parts if p)


def _waiting(d: Diagnosis) -> str:
    """Who waits on the culprits: every waiter of the wait chain (direct and through others) when there is one,
    else the verdict finding's own waiters."""
    bad = set(culprits(d))
    chain = next((f for f in d.findings if f.kind == WAIT_CHAIN and f.details
                  and any(set(r) & bad for r in f.details.get("roots", []))), None)
    if chain is not None:
        direct = [int(r) for r in chain.details.get("direct", [])]
        indirect = [int(r) for r in chain.details.get("indirect", [])]
        every = ranks_phrase(direct + indirect, d.rank_labels)
        text = f"{every[0].upper()}{every[1:]} {'is' if len(set(direct + indirect)) == 1 else 'are'} waiting on it"
        if direct and indirect:
            text += (f": {rank_ranges(direct)} directly, {rank_ranges(indirect)} through "
                     f"{'another rank' if len(indirect) == 1 else 'other ranks'}")
        return text + "."
    main = verdict_finding(d)
    if main is None or not main.waiting_ranks:
        return ""
    waiting = ranks_phrase(main.waiting_ranks, d.rank_labels)
    return f"{waiting[0].upper()}{waiting[1:]} {'is' if len(set(main.waiting_ranks)) == 1 else 'are'} waiting on it."


def sentence(text: str) -> str:
    """Capitalized and ending in a full stop, for summaries written as clauses by the passes (a finding kind
    such as 'oom' or 'lagging_rank' keeps its spelling)."""
    text = (text or "").strip()
    if not text:
        return text
    first = text.split(" ", 1)[0]
    if not ("_" in first or first in KINDS):
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."
