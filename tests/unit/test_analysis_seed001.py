"""Seed 001 rebuilt by hand: the full verdict, with recorded states and with a home-made trace's unknown ones."""
from __future__ import annotations

import pytest

from collrows import bundle, seed001_rows
from hangdoc.analysis.model import CALL_COUNT_SWAP, COLLECTIVE_MISMATCH, LAGGING_RANK, WAIT_CHAIN, Swap
from hangdoc.analysis.pipeline import diagnose

EXPECTED = (
    "global rank 6 (DP 1, TP rank 2) posted all_gatherv [14, 256] on tp:1 where its three tp peers posted "
    "all_reduce SUM [15, 2]; it made 17 fewer dp calls and 17 more tp calls than those peers (a call-count swap); "
    "every other stuck rank is waiting, directly or through another rank, on rank 6"
)


@pytest.mark.parametrize("states", [True, False], ids=["recorded-states", "unknown-states"])
def test_seed001_verdict_names_rank_6_the_op_and_the_swap(states):
    d = diagnose(bundle(seed001_rows(states=states)))
    v = d.verdict
    assert v.kind == COLLECTIVE_MISMATCH
    assert v.culprit_ranks == (6,)
    assert v.group == "tp:1"
    assert v.summary == EXPECTED
    assert v.confidence == "high"
    assert "root of the wait-for graph" in v.reason

    kinds = [f.kind for f in d.findings]
    assert kinds == [COLLECTIVE_MISMATCH, CALL_COUNT_SWAP, WAIT_CHAIN]  # no flood, symptoms last
    mismatch, swap, chain = d.findings
    assert mismatch.op == "all_gatherv [14, 256] bfloat16"
    assert mismatch.expected_op == "all_reduce SUM [15, 2] bfloat16"
    assert mismatch.seq == 390
    assert mismatch.waiting_ranks == (4, 5, 7)
    assert {c.rank: c.seq for c in mismatch.calls} == {4: 390, 5: 390, 6: 407, 7: 390}
    assert swap.swap == Swap(from_group="dp:2", to_group="tp:1", calls=17)
    assert swap.ranks == (6,)
    assert chain.role == "symptom"
    assert chain.ranks == (0, 1, 2, 3, 4, 5, 7)
    assert chain.details["direct"] == [2, 4, 5, 7] and chain.details["indirect"] == [0, 1, 3]
    assert any("ranks 0, 1, 3 wait in tp:0" in e and "rank 2" in e for e in chain.evidence)
    assert any("rank 2 waits in dp:2" in e and "rank 6" in e for e in chain.evidence)
    assert LAGGING_RANK not in kinds  # rank 2's lag is a symptom, rank 6's is explained by the mismatch


def test_seed001_groups_labels_and_wait_edges():
    d = diagnose(bundle(seed001_rows(), inputs=["traces/node-1", "traces/node-15"]))
    assert d.inputs == ("traces/node-1", "traces/node-15")
    assert [g.group for g in d.groups] == ["dp:0", "dp:1", "dp:2", "dp:3", "tp:0", "tp:1"]
    tp1 = next(g for g in d.groups if g.group == "tp:1")
    assert tp1.ranks == (4, 5, 6, 7) and tp1.family == "tp"
    pos = {p.rank: p for p in tp1.positions}
    assert pos[6].last_seq == 407 and pos[6].last_op == "all_gatherv [14, 256] bfloat16" and pos[6].state == "started"
    assert (pos[6].calls, pos[6].completed) == (407, 406)
    assert (pos[4].last_seq, pos[4].calls, pos[4].completed) == (390, 390, 389)
    assert d.rank_labels[6] == "DP 1, TP rank 2" and d.rank_labels[3] == "DP 0, TP rank 3"
    edges = {(e.rank, e.waits_on, e.group) for e in d.wait_for}
    assert edges == {(0, 2, "tp:0"), (1, 2, "tp:0"), (3, 2, "tp:0"), (2, 6, "dp:2"),
                     (4, 6, "tp:1"), (5, 6, "tp:1"), (7, 6, "tp:1")}
    assert d.alignment[0].group == "tp:1"
    assert any(c.rank == 6 and c.seq == 407 for c in d.alignment[0].calls)
    assert any("8 ranks on 6 communicators" in line for line in d.checked)


def test_a_different_odd_rank_moves_the_verdict():
    """Nothing is pinned to rank 6: the culprit follows the data (seed 001 saw ranks 7, 0, 3 and 2 too)."""
    d = diagnose(bundle(seed001_rows(odd=1, swap=5)))
    assert d.verdict.culprit_ranks == (1,)
    assert d.verdict.group == "tp:0"
    swap = next(f for f in d.findings if f.kind == CALL_COUNT_SWAP)
    assert swap.swap == Swap(from_group="dp:1", to_group="tp:0", calls=5)
    assert "DP 0, TP rank 1" in d.verdict.summary
