"""Call-count swaps: a rank made k fewer calls on one communicator family and k more on another than its peers.

Counts are calls posted (the highest seq per rank and communicator: a call queued behind one that never
finished was still made), less the one call a rank is blocked in where it has one in flight, so a rank
merely one call into a step its peers already entered shows no swap. Completed counts alone would hide
the swap of a rank that queued a run of calls that never completed. Each rank is compared with the median
of its peers in every communicator of 3+ members it belongs to; vectorised per communicator size, exact
only for the few members that deviate at all.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from hangdoc.analysis.groups import WORLD
from hangdoc.analysis.model import CALL_COUNT_SWAP, Finding, Swap
from hangdoc.analysis.text import plural, ranks_text
from hangdoc.analysis.view import CollectiveView

if TYPE_CHECKING:
    from hangdoc.analysis.pipeline import Context


ALL_RANKS = -1  # reference "communicator" of every rank
EXACT_UP_TO = 16  # groups up to this size get an exact leave-one-out median


def posted_counts(view: CollectiveView) -> np.ndarray:
    """Per pair: calls posted, less the oldest call still in flight (the one the rank is blocked in)."""
    blocked = (view.pair_front_row >= 0) & (view.pair_front <= view.pair_posted)
    return view.pair_posted - blocked


def family_counts(view: CollectiveView, per_pair: np.ndarray | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(counts[rank, family] summed from `per_pair` (default: posted_counts), NaN where the rank is in no
    communicator of the family; family names; the rank ids of the rows)."""
    per_pair = posted_counts(view) if per_pair is None else per_pair
    families = sorted({c.family for c in view.comms if not c.p2p})  # p2p counts differ by pipeline stage
    fam_idx = {f: i for i, f in enumerate(families)}
    ranks = np.asarray(view.ranks, dtype=np.int64)
    if not ranks.size:
        return np.zeros((0, len(families))), families, ranks
    row_of = np.full(int(ranks.max()) + 1, -1, np.int64)
    row_of[ranks] = np.arange(ranks.size)
    keep = np.asarray([not c.p2p for c in view.comms], dtype=bool)[view.pair_comm]
    pair_fam = np.asarray([fam_idx.get(c.family, -1) for c in view.comms], dtype=np.int64)[view.pair_comm][keep]
    counts = np.zeros((ranks.size, len(families)))
    member = np.zeros((ranks.size, len(families)), bool)
    np.add.at(counts, (row_of[view.pair_rank[keep]], pair_fam), per_pair[keep])
    member[row_of[view.pair_rank[keep]], pair_fam] = True
    for c in view.comms:  # members of a communicator that made no call on it still count, as 0
        if c.members_known and not c.p2p:
            rows = row_of[[r for r in c.members if r < row_of.size]]
            member[rows[rows >= 0], fam_idx[c.family]] = True
    counts[~member] = np.nan
    return counts, families, ranks


def find_swaps(view: CollectiveView) -> list[tuple[int, int, Swap, dict]]:
    """(rank, reference communicator, Swap, numbers) for every rank whose counts swap against its peers."""
    counts, families, ranks = family_counts(view)
    if counts.shape[1] < 2:
        return []
    posted = family_counts(view, view.pair_posted)[0]
    completed = family_counts(view, view.pair_done)[0]
    row_of = {int(r): i for i, r in enumerate(ranks.tolist())}
    # Reference communicators (3+ present members), grouped by size so medians are one numpy call each.
    by_size: dict[int, list[tuple[int, list[int]]]] = {}
    for c in view.comms:
        rows = [row_of[r] for r in c.members if r in row_of]
        if len(rows) >= 3 and not c.p2p:
            by_size.setdefault(len(rows), []).append((c.index, rows))
    if len(ranks) >= 3:  # every rank: the reference of last resort (jobs whose groups all have 2 members)
        by_size.setdefault(len(ranks), []).append((ALL_RANKS, list(range(len(ranks)))))
    # (member row, comm, peers' median per family, fraction of members at that median, peer rows)
    candidates: list[tuple[int, int, np.ndarray, np.ndarray, list[int]]] = []
    for size, items in by_size.items():
        m = np.asarray([rows for _, rows in items], dtype=np.int64)  # comms x size
        x = counts[m]  # comms x size x families
        med = _nanmedian(x, axis=1)
        agree = np.mean(x == med[:, None, :], axis=1)
        ci, mi = np.nonzero((np.abs(x - med[:, None, :]) >= 0.5).any(axis=2))
        for a, b in zip(ci.tolist()[:20000], mi.tolist()[:20000]):
            rows = items[a][1]
            peers = rows[:b] + rows[b + 1:]
            if size <= EXACT_UP_TO:  # small groups: the peers' own median, without the rank itself
                pm = _nanmedian(counts[peers], axis=0)
                candidates.append((rows[b], items[a][0], pm, np.mean(counts[rows] == pm, axis=0), peers))
            else:  # large groups: one member barely moves the median
                candidates.append((rows[b], items[a][0], med[a], agree[a], peers))
    best: dict[int, tuple] = {}
    for row, comm, peer_med, agreeing, peers in candidates:
        d = counts[row] - peer_med
        ok = ~np.isnan(d) & (np.abs(d - np.round(d)) < 1e-9)
        plus = [(int(d[f]), f) for f in range(len(families)) if ok[f] and d[f] >= 1]
        minus = [(int(-d[f]), f) for f in range(len(families)) if ok[f] and d[f] <= -1]
        pairs = [(k, fp, fm) for k, fp in plus for k2, fm in minus if k == k2]
        if not pairs:
            continue
        # Only a swap when the rank is the odd one out: a strict majority of members agree (2 vs 2 is no one's fault).
        k, fp, fm = max(pairs)
        if min(agreeing[fp], agreeing[fm]) <= 0.5:
            continue
        rank = int(ranks[row])
        swap = Swap(from_group=_comm_of(view, rank, families[fm]), to_group=_comm_of(view, rank, families[fp]),
                    calls=k)
        numbers = {
            "from_family": families[fm], "to_family": families[fp],
            "rank_counts": {families[f]: _num(counts[row, f]) for f in (fm, fp)},
            "peer_median": {families[f]: _num(peer_med[f]) for f in (fm, fp)},
            "rank_posted": {families[f]: _num(posted[row, f]) for f in (fm, fp)},
            "rank_completed": {families[f]: _num(completed[row, f]) for f in (fm, fp)},
            "peer_posted": {families[f]: _num(_nanmedian(posted[peers, f], axis=0)) for f in (fm, fp)},
            "peer_completed": {families[f]: _num(_nanmedian(completed[peers, f], axis=0)) for f in (fm, fp)},
            "peers": [int(ranks[p]) for p in peers[:64]],
            "n_peers": len(peers),
        }
        # Prefer a communicator of a real family over the world group, then the one with most peers.
        pref = (0 if comm == ALL_RANKS else 1 if view.comms[comm].family == WORLD else 2, len(peers), k)
        prev = best.get(rank)
        if prev is None or pref > prev[4]:
            best[rank] = (rank, comm, swap, numbers, pref)
    return [best[r][:4] for r in sorted(best)]


def _nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    """Median ignoring NaN (families a rank is not in); NaN where a whole slice is NaN, quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def _counts_text(posted: dict, completed: dict, f_to: str, f_from: str) -> str:
    """'posted 407 tp and 9593 dp calls, completed 389 and 9593'."""
    return (f"posted {posted[f_to]} {f_to} and {posted[f_from]} {f_from} calls, "
            f"completed {completed[f_to]} and {completed[f_from]}")


def _comm_of(view: CollectiveView, rank: int, family: str) -> str:
    ids = sorted(view.comms[int(view.pair_comm[p])].id for p in view.rank_pairs(rank)
                 if view.comms[int(view.pair_comm[p])].family == family)  # p2p families never get here
    if not ids:
        ids = sorted(c.id for c in view.comms if c.family == family and rank in c.members)
    return ids[0] if ids else family


def swap_pass(ctx: "Context") -> list[Finding]:
    """call_count_swap: one finding per rank whose posted calls moved k calls from one family to another."""
    view = ctx.collectives
    if view is None:
        return []
    findings = []
    for rank, comm, swap, nums in find_swaps(view):
        ref_id = view.comms[comm].id if comm != ALL_RANKS else "all ranks"
        ref_family = view.comms[comm].family if comm != ALL_RANKS else None
        k = swap.calls
        f_from, f_to = nums["from_family"], nums["to_family"]
        peers = nums["peers"]
        if ref_family is None:
            peers_text = "the other ranks"
        elif nums["n_peers"] <= 8:
            peers_text = f"its {ref_family} peers {', '.join(str(p) for p in peers)}"
        else:
            peers_text = f"its {nums['n_peers']:,} {ref_family} peers"
        summary = (
            f"{view.label(rank)} made {k} fewer {f_from} calls (on {swap.from_group}) and {k} more {f_to} calls "
            f"(on {swap.to_group}) than {peers_text}: a call-count swap of {k}"
        )
        who = ranks_text(peers) if nums["n_peers"] <= 64 else plural(nums["n_peers"], "peer")
        evidence = (
            f"rank {rank} {_counts_text(nums['rank_posted'], nums['rank_completed'], f_to, f_from)}",
            f"{who} (median) {_counts_text(nums['peer_posted'], nums['peer_completed'], f_to, f_from)}",
            f"compared within {ref_id}: posted calls less the one a rank is blocked in",
        )
        findings.append(Finding(
            kind=CALL_COUNT_SWAP,
            ranks=(rank,),
            summary=summary,
            group=ref_id if comm != ALL_RANKS else swap.to_group,
            evidence=evidence,
            swap=swap,
            details={
                **nums,
                "reference_group": ref_id,
                "clause": f"it made {k} fewer {f_from} calls and {k} more {f_to} calls than {peers_text} "
                          f"(a call-count swap)",
                "peers_text": peers_text,
            },
        ))
    return findings
