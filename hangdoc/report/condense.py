"""Condensing a Diagnosis for people: rank ranges, op classes, collapsed positions, group order.

Shared by every reporter so that 1024 ranks read the same way in a terminal and in an issue comment, and so
that "which ranks agree" is decided once, not three times.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from hangdoc.analysis.model import (
    CALL_COUNT_SWAP,
    NO_FAULT_FOUND,
    Diagnosis,
    Finding,
    GroupView,
    OpCall,
    RankPosition,
)
from hangdoc.analysis.text import rank_ranges


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
        by_rank[int(p.rank)] = p
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
    lines = []
    for kind, fs in by_kind.items():
        ranks = sorted({int(r) for f in fs for r in f.ranks})
        groups = sorted({f.group for f in fs if f.group}, key=natural_key)
        lines.append(SymptomLine(kind, sum(max(int(f.count), 1) for f in fs), tuple(ranks), tuple(groups), fs[0].summary))
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
    """The paragraph under the verdict's summary: the swap behind it, who waits, what follows, why this verdict."""
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
    main = verdict_finding(d)
    if main is not None and main.waiting_ranks:
        waiting = ranks_phrase(main.waiting_ranks, labels)
        parts.append(f"{waiting[0].upper()}{waiting[1:]} {'is' if len(set(main.waiting_ranks)) == 1 else 'are'} "
                     "waiting on it, directly or through another rank.")
    symptoms = symptom_lines(d)
    if symptoms:
        n = sum(s.count for s in symptoms)
        kinds = ", ".join(f"{s.kind} x{s.count}" for s in symptoms)
        parts.append(f"{n} other observation{'s' if n != 1 else ''} follow from it ({kinds}).")
    if v.reason:
        parts.append(f"Why this verdict: {sentence(v.reason)}")
    if v.kind != NO_FAULT_FOUND:
        parts.append(f"Confidence: {v.confidence}.")
    return " ".join(p for p in parts if p)


def sentence(text: str) -> str:
    """Capitalized and ending in a full stop, for summaries written as clauses by the passes."""
    text = (text or "").strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."
