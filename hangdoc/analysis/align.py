"""Alignment: where members of a communicator posted calls that cannot match, and who is the odd one out.

Two places are compared. The frontier (each member's first call not completed) is where the job hangs;
members' seq numbers there may differ when call counts drifted (seed 001: rank 6 at tp call 407, its
peers at 390), so frontier calls are compared regardless of seq. History positions (same seq) show where
members first went different ways. The culprit is the minority by vote among members, never "rank 0 is
right"; an even split is reported as a tie.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from hangdoc.analysis.model import COLLECTIVE_MISMATCH, Finding, OpCall
from hangdoc.analysis.text import number, plural, ranks_text, short_label
from hangdoc.analysis.view import CollectiveView, Conflict

if TYPE_CHECKING:
    from hangdoc.analysis.pipeline import Context


def _vote(view: CollectiveView, rows: list[int]) -> tuple[list[int], list[int], bool]:
    """(majority rows, culprit rows, tie). A unique plurality wins; an even top is a tie (all are culprits)."""
    keys = [int(view.sig[r]) for r in rows]
    counts = Counter(keys).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return [], list(rows), True
    top = counts[0][0]
    return [r for r, k in zip(rows, keys) if k == top], [r for r, k in zip(rows, keys) if k != top], False


def _one_per_rank(view: CollectiveView, rows: np.ndarray) -> list[int]:
    seen: dict[int, int] = {}
    for r in rows.tolist():
        seen.setdefault(int(view.rank[r]), r)
    return [seen[k] for k in sorted(seen)]


def find_conflicts(view: CollectiveView) -> list[Conflict]:
    """One Conflict per communicator whose members disagree at the frontier or, failing that, in history."""
    out: list[Conflict] = []
    fp = np.nonzero(view.pair_front_row >= 0)[0]
    frontier_comms: set[int] = set()
    if fp.size:
        rows = view.pair_front_row[fp]
        comm = view.pair_comm[fp]
        n_comms = len(view.comms)
        ref_sig = np.zeros(n_comms, np.int64)
        ref_sig[comm] = view.sig[rows]
        bad = view.sig[rows] != ref_sig[comm]
        frontier_comms = {c for c in np.unique(comm[bad]).tolist() if view.aligned[c]}
    # Members with nothing in flight still vote with what they posted where the others are stuck (the same
    # seq), e.g. gloo retires a call that timed out: that rank's call there is still evidence.
    fronts: dict[int, list[int]] = {}
    at_pos: dict[int, int] = {}  # comm -> position where most of its in-flight calls are
    for c in sorted(frontier_comms):
        pairs = view.comm_pairs(c)
        fronts[c] = sorted((int(view.pair_front_row[p]) for p in pairs.tolist() if view.pair_front_row[p] >= 0),
                           key=lambda r: int(view.rank[r]))
        seq = Counter(int(view.seq[r]) for r in fronts[c]).most_common(1)[0][0]
        at_pos[c] = int(view.pos[next(r for r in fronts[c] if view.seq[r] == seq)])
    others: dict[int, list[int]] = {}
    if at_pos:
        for r in np.nonzero(np.isin(view.pos, list(at_pos.values())))[0].tolist():
            others.setdefault(int(view.pair_comm[view.pair[r]]), []).append(r)
    for c in sorted(frontier_comms):
        in_flight = {int(view.rank[r]) for r in fronts[c]}
        extra = [r for r in _one_per_rank(view, np.asarray(others.get(c, []), dtype=np.int64))
                 if int(view.rank[r]) not in in_flight]
        rows = sorted(fronts[c] + extra, key=lambda r: int(view.rank[r]))
        out.append(_conflict(view, c, rows, at_frontier=True, in_flight=in_flight))
    history = [c for c in np.nonzero(view.comm_bad)[0].tolist() if c not in frontier_comms and view.aligned[c]]
    if history:
        targets = view.comm_first_bad_pos[history]
        at = np.nonzero(np.isin(view.pos, targets))[0]
        by_comm: dict[int, list[int]] = {}
        for r in at.tolist():
            by_comm.setdefault(int(view.pair_comm[view.pair[r]]), []).append(r)
        for c in history:
            rows = _one_per_rank(view, np.asarray(by_comm.get(c, []), dtype=np.int64))
            if len(rows) > 1:
                out.append(_conflict(view, c, rows, at_frontier=False))
    return out


def _conflict(view: CollectiveView, comm: int, rows: list[int], at_frontier: bool,
              in_flight: set[int] | None = None) -> Conflict:
    majority, culprits, tie = _vote(view, rows)
    behind = _behind(view, comm, rows) if tie and at_frontier else None
    if behind is not None:
        lowest = min(behind, key=lambda r: behind[r])
        culprits = [r for r in rows if int(view.rank[r]) == lowest]
        majority = [r for r in rows if int(view.rank[r]) != lowest]
        tie = False
    seqs = Counter(int(view.seq[r]) for r in (culprits if behind is not None else majority or rows))
    seq = min(seqs) if tie else seqs.most_common(1)[0][0]
    first = int(view.comm_first_bad[comm])
    return Conflict(
        comm=comm,
        at_frontier=at_frontier,
        seq=seq,
        culprits=tuple(sorted(int(view.rank[r]) for r in culprits)),
        majority=tuple(sorted(int(view.rank[r]) for r in majority)),
        tie=tie,
        rows=tuple(rows),
        history_first_seq=first or None,
        history_positions=int(view.comm_bad[comm]),
        in_flight=tuple(sorted(in_flight or ())),
        behind=behind,
    )


def _behind(view: CollectiveView, comm: int, rows: list[int]) -> dict[int, int] | None:
    """A tie at the frontier that calls posted break: one voter posted no call past the one it is stuck in,
    while every other member of the communicator with evidence went past it (a PG status line's "last enqueued
    work" says so where a log is all there is). That voter never moved on: it is where the others wait.
    Returns rank -> highest seq posted, or None when no single voter is behind all the others."""
    voters = {int(view.rank[r]) for r in rows}
    posted = {int(view.pair_rank[p]): int(view.pair_maxseq[p]) for p in view.comm_pairs(comm).tolist()}
    if len(posted) < 3 or not voters <= set(posted):
        return None
    lowest = min(posted.values())
    at_lowest = [r for r, n in posted.items() if n == lowest]
    if len(at_lowest) != 1 or at_lowest[0] not in voters:
        return None
    r = at_lowest[0]
    stuck_at = next(int(view.seq[x]) for x in rows if int(view.rank[x]) == r)
    return posted if lowest == stuck_at else None


def _sides(view: CollectiveView, rows: tuple[int, ...]) -> list[tuple[list[int], OpCall]]:
    """Voters grouped by the call they posted, largest side first."""
    sides: dict[int, list[int]] = {}
    for r in rows:
        sides.setdefault(int(view.sig[r]), []).append(r)
    ordered = sorted(sides.values(), key=lambda rs: (-len(rs), int(view.rank[rs[0]])))
    return [([int(view.rank[r]) for r in rs], view.call(rs[0])) for rs in ordered]


def _state_text(calls: list[OpCall]) -> str:
    states = sorted({c.state for c in calls})
    return "/".join(states)


def describe(view: CollectiveView, c: Conflict) -> Finding:
    """The Finding for one conflict: sides, seq numbers, history, and who waits."""
    comm = view.comms[c.comm]
    calls = view.calls(c.rows)
    by_rank = {call.rank: call for call in calls}
    sides = _sides(view, c.rows)
    dtypes = {call.dtype for _, call in sides}
    show_dtype = len(dtypes) > 1
    where = comm.id
    evidence: list[str] = []
    for ranks, call in sides:
        side_calls = [by_rank[r] for r in ranks]
        seqs = sorted({x.seq for x in side_calls if x.seq is not None})
        at = f"seq {seqs[0]}" if len(seqs) == 1 else f"seqs {seqs[0]}-{seqs[-1]}"
        evidence.append(f"{where} {at}: {ranks_text(ranks)} posted {call.label()} ({_state_text(side_calls)})")
    culprit_calls = [by_rank[r] for r in c.culprits]
    if c.at_frontier:
        cseqs = {x.seq for x in culprit_calls}
        if not c.tie and c.seq not in cseqs:
            gap = max(abs((x.seq or 0) - c.seq) for x in culprit_calls)
            evidence.append(
                f"call counts on {where} differ: {ranks_text(c.culprits)} at call {', '.join(str(s) for s in sorted(cseqs))}, "
                f"{ranks_text(c.majority)} at call {c.seq} ({plural(gap, 'call')} apart)"
            )
        voters = set(by_rank)
        idle = [int(view.pair_rank[p]) for p in view.comm_pairs(c.comm).tolist()
                if view.pair_front_row[p] < 0 and int(view.pair_rank[p]) not in voters]
        for r in sorted(idle)[:8]:
            p = view.pair_of(c.comm, r)
            last = view.call(int(view.pair_last_row[p])) if p is not None else None
            if last is not None:
                evidence.append(f"rank {r} has no call in flight on {where} (last: seq {last.seq} {last.label()}, {last.state})")
    count = c.history_positions + (1 if c.at_frontier else 0)
    if c.history_positions:
        evidence.append(
            f"members' histories on {where} first differ at seq {c.history_first_seq}: "
            f"{plural(count, 'position')} {'differs' if count == 1 else 'differ'}"
            + (", the calls in flight included" if c.at_frontier else "")
        )

    if c.tie:
        parts = [f"{ranks_text(rs)} posted {short_label(call, show_dtype)}" for rs, call in sides]
        counts = " against ".join(number(len(rs)) for rs, _ in sides)
        summary = (
            f"on {where} (seq {c.seq}) {' and '.join(parts)}: {counts}, so there is no majority to say which "
            f"side diverged (a tie)"
        )
        op = " / ".join(call.label() for _, call in sides)
        expected = None
        waiting = tuple(sorted(int(view.rank[r]) for r in c.rows if not c.at_frontier or view.rank[r] in c.in_flight))
    else:
        major = sides[0][1]
        culprit_labels = list(dict.fromkeys(short_label(x, show_dtype) for x in culprit_calls))
        if len(c.culprits) == 1:
            who = view.label(c.culprits[0])
        else:
            who = "global " + ranks_text(c.culprits)
        others = [r for r in comm.members if r not in c.culprits]
        if sorted(others) == list(c.majority):
            peers = f"its {number(len(c.majority))} {comm.family} peers" if len(c.culprits) == 1 else \
                f"the other {number(len(c.majority))} {comm.family} members"
        else:
            peers = f"{ranks_text(c.majority)} (the majority of the {number(len(c.rows))} ranks compared)"
        posted = " and ".join(culprit_labels)
        if c.behind is not None:
            ahead = sorted(n for r, n in c.behind.items() if r not in c.culprits)
            summary = (
                f"{who} posted {posted} on {where} (seq {c.seq}) and no call after it, where every other member "
                f"with evidence posted more ({ahead[0]}-{ahead[-1]}) and the others in flight stand at "
                f"{' and '.join(short_label(call, show_dtype) for rs, call in sides if not set(rs) & set(c.culprits))}"
                f": it never moved past the call the others went beyond"
            )
        elif c.at_frontier:
            summary = f"{who} posted {posted} on {where} where {peers} posted {short_label(major, show_dtype)}"
        else:
            summary = (
                f"{who} posted {posted} at seq {c.seq} of {where} where {peers} posted "
                f"{short_label(major, show_dtype)}"
            )
        op = " / ".join(dict.fromkeys(x.label() for x in culprit_calls))
        expected = major.label()
        waiting = tuple(r for r in c.majority if not c.at_frontier or r in c.in_flight)
    return Finding(
        kind=COLLECTIVE_MISMATCH,
        ranks=c.culprits,
        summary=summary,
        group=where,
        seq=c.seq if c.at_frontier else (c.history_first_seq or c.seq),
        op=op,
        expected_op=expected,
        evidence=tuple(evidence),
        calls=tuple(sorted(calls, key=lambda x: x.rank)),
        waiting_ranks=waiting,
        count=max(count, 1),
        details={
            "tie": c.tie,
            "at_frontier": c.at_frontier,
            "family": comm.family,
            "majority_ranks": list(c.majority),
            "culprit_seqs": {x.rank: x.seq for x in culprit_calls},
            "history_first_seq": c.history_first_seq,
            "history_positions": c.history_positions,
            "clause": f"it posted {' and '.join(dict.fromkeys(short_label(x) for x in culprit_calls))} on {where}"
            + ("" if c.tie else f" where its peers posted {short_label(sides[0][1])}"),
        },
    )


def mismatch_pass(ctx: "Context") -> list[Finding]:
    """collective_mismatch: one finding per communicator whose members posted calls that cannot match."""
    view = ctx.collectives
    if view is None:
        return []
    return [describe(view, c) for c in view.conflicts]
