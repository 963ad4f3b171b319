"""Lagging and missing ranks, order inversion, the wait-for graph's root, and cascades summarised once."""
from __future__ import annotations

import pytest

from collrows import AR, DP_SYNC, bundle, call, history
from hangdoc.analysis.model import (
    COLLECTIVE_MISMATCH,
    LAGGING_RANK,
    MISSING_RANK,
    ORDER_INVERSION,
    WAIT_CHAIN,
)
from hangdoc.analysis.pipeline import Context, diagnose
from hangdoc.analysis.waits import lagging_pass, missing_pass, order_inversion_pass, wait_chain_pass

WORLD = [0, 1, 2, 3]


def _ctx(rows) -> Context:
    return Context(tables=bundle(rows).tables)


@pytest.mark.parametrize("states", [True, False], ids=["recorded-states", "unknown-states"])
def test_rank_that_skipped_a_collective_is_lagging(states):
    """Seed 003: rank 0 caught an OOM and moved on; ranks 1-3 wait in a collective it never issued."""
    rows = history(0, "0", 10, ranks=WORLD)
    for r in (1, 2, 3):
        rows += history(r, "0", 11, ranks=WORLD, last_state="started")
    if not states:
        for row in rows:
            row["state"] = "unknown"
    (f,) = lagging_pass(_ctx(rows))
    assert f.kind == LAGGING_RANK
    assert f.ranks == (0,)
    assert f.seq == 11
    assert f.waiting_ranks == (1, 2, 3)
    assert "never issued" in f.summary
    assert any("no collective in flight" in e for e in f.evidence)
    d = diagnose(bundle(rows))
    assert d.verdict.kind == LAGGING_RANK
    assert d.verdict.culprit_ranks == (0,)
    assert d.verdict.confidence == "high"


def test_rank_with_no_rows_is_missing():
    rows = []
    for r in (0, 1, 2):
        rows += history(r, "0", 5, ranks=WORLD, last_state="started")
    (f,) = missing_pass(_ctx(rows))
    assert f.kind == MISSING_RANK
    assert f.ranks == (3,)
    assert f.waiting_ranks == (0, 1, 2)
    assert lagging_pass(_ctx(rows)) == []  # a missing rank is not also reported as lagging
    d = diagnose(bundle(rows))
    assert d.verdict.kind == MISSING_RANK and d.verdict.culprit_ranks == (3,)


def test_two_ranks_waiting_on_each_other_in_different_groups():
    """Rank 0 entered group a first, rank 1 entered group b first; each waits for the other."""
    rows = history(0, "a", 2, ranks=[0, 1]) + history(1, "a", 2, ranks=[0, 1])
    rows += history(0, "b", 2, ranks=[0, 1]) + history(1, "b", 2, ranks=[0, 1])
    rows.append(call(0, "a", 3, ranks=[0, 1], state="started"))
    rows.append(call(1, "b", 3, ranks=[0, 1], state="started"))
    (f,) = order_inversion_pass(_ctx(rows))
    assert f.kind == ORDER_INVERSION
    assert f.ranks == (0, 1)
    assert "opposite orders" in f.summary
    d = diagnose(bundle(rows))
    assert d.verdict.kind == ORDER_INVERSION
    assert LAGGING_RANK not in [x.kind for x in d.findings]  # each rank waits too: not a plain laggard


def _cascade(tp=4, dp=4, odd=1, base_tp=20, base_dp=10):
    """TP x DP job: `odd` posts a different tp call; its dp peers wait in dp for it; their tp peers wait in tp
    for them. Every tp group but the odd one's has one laggard, all of them symptoms."""
    rows = []
    world = tp * dp
    for r in range(world):
        tpg = [r // tp * tp + i for i in range(tp)]
        dpg = [r % tp + tp * i for i in range(dp)]
        t_ = dict(ranks=tpg, **AR)
        d_ = dict(ranks=dpg, **DP_SYNC)
        if r // tp == odd // tp:  # the odd rank's tp group: all stuck in tp, the odd one with another op
            rows += history(r, "tp:0", base_tp, t0=0, **t_)
            op = dict(op="all_gatherv", shape=(14, 256)) if r == odd else {}
            rows.append(call(r, "tp:0", base_tp + 1, state="started", t=1e5, **{**t_, **op}))
            rows += history(r, "dp:0", base_dp, t0=1e3, **d_)
        elif r % tp == odd % tp:  # odd's dp peers: wait in dp for it
            rows += history(r, "tp:0", base_tp, t0=0, **t_)
            rows += history(r, "dp:0", base_dp + 1, t0=1e4, last_state="started", **d_)
        else:  # their tp peers: wait in tp for the dp waiter
            rows += history(r, "tp:0", base_tp + 1, t0=0, last_state="started", **t_)
            rows += history(r, "dp:0", base_dp + 1, t0=-1e4, **d_)
    return rows


def test_cascade_is_one_symptom_finding_not_a_flood():
    rows = _cascade()
    d = diagnose(bundle(rows))
    assert d.verdict.kind == COLLECTIVE_MISMATCH and d.verdict.culprit_ranks == (1,)
    assert d.verdict.confidence == "high"
    assert "every other stuck rank is waiting" in d.verdict.summary
    kinds = [f.kind for f in d.findings]
    assert kinds.count(LAGGING_RANK) == 0
    assert kinds.count(WAIT_CHAIN) == 1
    chain = next(f for f in d.findings if f.kind == WAIT_CHAIN)
    assert chain.role == "symptom"
    assert chain.count == 15 and 1 not in chain.ranks
    assert sorted(chain.details["indirect"]) == [r for r in range(16) if r // 4 != 0 and r % 4 != 1]
    assert chain.details["depth"] == 2


def test_wait_chain_pass_is_empty_without_waits():
    rows = []
    for r in WORLD:
        rows += history(r, "0", 4, ranks=WORLD)
    assert wait_chain_pass(_ctx(rows)) == []
    assert lagging_pass(_ctx(rows)) == []
    assert order_inversion_pass(_ctx(rows)) == []


def test_laggard_waiting_in_a_consistent_call_elsewhere_is_still_the_root():
    """Rank 3 is in a world all_reduce that every rank posted (nobody waits on anyone there), so its tp peers
    waiting for it in tp have nowhere further to look: rank 3 is the root."""
    rows = []
    for r in WORLD:
        rows += history(r, "world", 3, ranks=WORLD, desc="default_pg", last_state="started")
        rows += history(r, "tp", 5 if r == 3 else 6, ranks=WORLD, last_state=None if r == 3 else "started")
    (f,) = lagging_pass(_ctx(rows))
    assert f.ranks == (3,)
    assert any("rank 3 is itself in all_reduce" in e and "world seq 3" in e for e in f.evidence)


def test_each_rank_waiting_in_a_call_the_other_never_issued_is_an_inversion():
    rows = []
    for r in WORLD:
        rows += history(r, "world", 2, ranks=WORLD, desc="default_pg")
        rows += history(r, "tp", 5 if r == 3 else 6, ranks=WORLD, last_state=None if r == 3 else "started")
    rows.append(call(3, "world", 3, ranks=WORLD, desc="default_pg", state="started"))
    (f,) = order_inversion_pass(_ctx(rows))
    assert f.ranks == (0, 1, 2, 3)
    assert lagging_pass(_ctx(rows)) == []
