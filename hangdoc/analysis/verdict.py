"""Verdict selection over every finding, whichever pass made it.

Ranking is generic so later passes' kinds (rank_exited, oom, stuck_in_teardown, log_signature ...) compete
on the same terms: causes before symptoms; then how well the finding's ranks match a root of the wait-for
graph (the rank every chain of waits leads to); then a priority per kind (how direct the evidence is);
then fewer ranks. A pass can override its kind's priority with `details["priority"]`, lend a clause
to the verdict sentence with `details["clause"]` (used when it names the same ranks as the verdict), and
state its confidence with `details["confidence"]` (used when no wait-for graph says more).
"""
from __future__ import annotations

import re

from typing import TYPE_CHECKING, Sequence

from hangdoc.analysis import model as m
from hangdoc.analysis.model import Finding, Verdict
from hangdoc.analysis.text import counted_text, number, plural, ranks_text

if TYPE_CHECKING:
    from hangdoc.analysis.waits import WaitGraph

KIND_PRIORITY: dict[str, int] = {
    m.COLLECTIVE_MISMATCH: 100,
    m.ORDER_INVERSION: 95,
    m.RANK_STOPPED: 92,
    m.RANK_EXITED: 90,
    m.STUCK_IN_KERNEL: 88,
    m.STUCK_IN_TEARDOWN: 85,
    m.OOM: 80,
    m.MISSING_RANK: 75,
    m.LAGGING_RANK: 70,
    m.KV_TRANSFER_STRANDED: 65,
    m.CALL_COUNT_SWAP: 60,
    m.STACK_DIVERGENCE: 55,
    m.ORPHANED_PROCESS: 50,
    m.LOG_SIGNATURE: 30,
    m.GPU_SPIN_WAIT: 20,
    m.WAIT_CHAIN: 10,
    m.NO_FAULT_FOUND: 0,
    m.ANALYSIS_INCOMPLETE: 0,
}
DEFAULT_PRIORITY = 40


def priority(f: Finding) -> int:
    p = f.details.get("priority") if f.details else None
    return int(p) if isinstance(p, (int, float)) else KIND_PRIORITY.get(f.kind, DEFAULT_PRIORITY)


def rootness(f: Finding, graph: "WaitGraph | None") -> int:
    """3: the finding's ranks are exactly a root of the wait-for graph; 2: inside one; 1: overlap one;
    0: no graph or unrelated; -1: its ranks themselves wait on other ranks."""
    if graph is None or not graph.out or not f.ranks:
        return 0
    rs = set(f.ranks)
    roots = graph.roots()
    if any(rs == set(t) for t in roots):
        return 3
    if any(rs <= t for t in roots):
        return 2
    if any(rs & t for t in roots):
        return 1
    if rs <= graph.waiting:
        return -1
    return 0


def rank_findings(findings: Sequence[Finding], graph: "WaitGraph | None") -> list[Finding]:
    """Best first."""
    def key(f: Finding):
        return (f.role != "symptom", rootness(f, graph), priority(f), -len(f.ranks), f.count)
    return sorted((f for f in findings if f.kind != m.NO_FAULT_FOUND), key=key, reverse=True)


def select(findings: Sequence[Finding], graph: "WaitGraph | None" = None) -> Verdict | None:
    """The verdict from all findings, or None when there are none (the caller reports no_fault_found)."""
    ranked = rank_findings(findings, graph)
    if not ranked:
        return None
    primary = ranked[0]
    causes = [f for f in ranked if f.role != "symptom"]
    symptoms = [f for f in ranked if f.role == "symptom"]
    culprits = set(primary.ranks)
    root = rootness(primary, graph)
    tie = bool(primary.details.get("tie")) if primary.details else False

    parts = [primary.summary]
    corroborating: list[Finding] = []
    used_kinds = {primary.kind}
    for f in causes[1:]:
        clause = f.details.get("clause") if f.details else None
        if not clause or f.kind in used_kinds or not (set(f.ranks) & culprits):
            continue
        peers = f.details.get("peers_text")
        if peers and primary.group is not None and f.details.get("reference_group") == primary.group:
            clause = clause.replace(str(peers), "those peers")  # the verdict's sentence already named them
        numbers = set(re.findall(r"\d+", clause))
        if not numbers or not numbers <= set(re.findall(r"\d+", primary.summary)):
            parts.append(clause)  # a clause whose numbers the sentence already gives says nothing new
        corroborating.append(f)
        used_kinds.add(f.kind)
    waiting_on: set[int] = set()
    if graph is not None and root >= 2:
        waiting_on = graph.waiting_on(culprits)
        others = graph.waiting - culprits
        who = ranks_text(culprits) if not tie else "this tie"
        if waiting_on and waiting_on == others:
            parts.append(f"every other stuck rank is waiting, directly or through another rank, on {who}")
        elif waiting_on:
            parts.append(f"{number(len(waiting_on))} of the {number(len(others))} other stuck ranks wait, directly "
                         f"or through another rank, on {who}")

    reason: list[str] = []
    if root == 3 and waiting_on:
        reason.append(f"{ranks_text(culprits)} {'is' if len(culprits) == 1 else 'are'} the root of the wait-for "
                      f"graph ({plural(len(waiting_on), 'stuck rank')} {'waits' if len(waiting_on) == 1 else 'wait'} on "
                      f"{'it' if len(culprits) == 1 else 'them'})")
    elif root == 3:
        reason.append(f"{ranks_text(culprits)} {'is' if len(culprits) == 1 else 'are'} a root of the wait-for graph")
    elif root > 0:
        reason.append(f"{ranks_text(culprits)} {'is' if len(culprits) == 1 else 'are'} part of a root of the "
                      f"wait-for graph")
    rest = [f for f in causes if f is not primary and f.kind not in used_kinds - {primary.kind}]
    if rest:
        off_root = sorted({f.kind for f in rest if rootness(f, graph) < root})
        weaker = sorted({f.kind for f in rest if rootness(f, graph) >= root} - {primary.kind})
        if off_root:
            reason.append(f"{', '.join(off_root)} {'does' if len(off_root) == 1 else 'do'} not point at the root "
                          f"of the wait-for graph")
        if weaker:
            reason.append(f"{primary.kind} is more direct evidence than {', '.join(weaker)}")
    if corroborating:
        same = "rank" if len(culprits) == 1 else "ranks"
        reason.append("corroborated by " + ", ".join(f.kind for f in corroborating) + f" on the same {same}")
    if symptoms and primary.role != "symptom":
        if not reason:
            reason.append("the only cause found")
        reason.append(f"what follows from it: {counted_text(symptoms)}")
    if primary.role == "symptom":
        reason.append("no cause was found; this is the strongest symptom")
    if tie:
        reason.append("the members split evenly, so no side can be named the culprit")

    roots = graph.roots() if graph is not None else []
    elsewhere = [r for r in roots if not (r & culprits)]
    if elsewhere:
        reason.append(f"the wait-for graph has {plural(len(elsewhere), 'other independent root')} "
                      f"({'; '.join(ranks_text(r) for r in elsewhere[:4])}): see the other findings")
    if tie or primary.role == "symptom":
        confidence = "low"
    elif root == 3 and len(roots) == 1:
        confidence = "high"
    elif root >= 1:
        confidence = "medium"
    elif graph is not None and graph.out:
        confidence = "low"  # ranks wait, but not on what this finding names
    elif primary.details and primary.details.get("confidence") in ("high", "medium", "low"):
        confidence = primary.details["confidence"]  # no wait-for graph to judge by: the pass says how sure it is
    else:
        confidence = "medium" if priority(primary) >= KIND_PRIORITY[m.LAGGING_RANK] else "low"

    return Verdict(
        kind=primary.kind,
        culprit_ranks=() if tie else tuple(sorted(culprits)),  # an even split cannot decide: name nobody
        group=primary.group,
        summary="; ".join(parts),
        reason="; ".join(reason) or "the only finding",
        confidence=confidence,
    )


def incomplete(verdict: Verdict | None, failed: Finding) -> Verdict:
    """The verdict when a pass crashed: what the others found, at low confidence and saying which pass is
    missing; with nothing found, `analysis_incomplete` (never no_fault_found: the failed pass may hold the fault)."""
    if verdict is None:
        return Verdict(kind=m.ANALYSIS_INCOMPLETE, culprit_ranks=(), group=None, summary=failed.summary,
                       reason="the passes that ran found no fault, but that is no evidence of a healthy job "
                              "while one did not run to the end", confidence="low")
    names = list(failed.details.get("failed_passes", ()))
    which = f"the {', '.join(names)} {'pass' if len(names) == 1 else 'passes'} failed"
    return Verdict(kind=verdict.kind, culprit_ranks=verdict.culprit_ranks, group=verdict.group,
                   summary=f"{verdict.summary}; analysis incomplete: {which}",
                   reason="; ".join(x for x in (verdict.reason, f"confidence is low because {which} and what "
                                                f"{'it' if len(names) == 1 else 'they'} would have found is missing")
                                    if x),
                   confidence="low")
