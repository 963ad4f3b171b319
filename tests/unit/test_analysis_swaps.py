"""call_count_swap: +k on one family and -k on another against the rank's peers, in-flight calls not counted."""
from __future__ import annotations

import pytest

from collrows import AR, DP_SYNC, bundle, call, history, seed001_rows
from hangdoc.analysis.model import CALL_COUNT_SWAP, Swap
from hangdoc.analysis.pipeline import Context
from hangdoc.analysis.swaps import family_counts, swap_pass


def _ctx(rows) -> Context:
    return Context(tables=bundle(rows).tables)


def _job(tp_counts, dp_counts, tp=4, dp=2, in_flight=None):
    """TP x DP job with given completed calls per rank; in_flight maps rank -> ("tp"|"dp") for one extra started call."""
    rows = []
    for r in range(tp * dp):
        tpg = [r // tp * tp + i for i in range(tp)]
        dpg = [r % tp + tp * i for i in range(dp)]
        rows += history(r, "tp:0", tp_counts[r], ranks=tpg, **AR)
        rows += history(r, "dp:0", dp_counts[r], ranks=dpg, **DP_SYNC)
        fam = (in_flight or {}).get(r)
        if fam == "tp":
            rows.append(call(r, "tp:0", tp_counts[r] + 1, ranks=tpg, state="started", **AR))
        elif fam == "dp":
            rows.append(call(r, "dp:0", dp_counts[r] + 1, ranks=dpg, state="started", **DP_SYNC))
    return rows


@pytest.mark.parametrize("states", [True, False])
def test_seed001_swap_of_17(states):
    (f,) = swap_pass(_ctx(seed001_rows(states=states)))
    assert f.kind == CALL_COUNT_SWAP
    assert f.ranks == (6,)
    assert f.swap == Swap(from_group="dp:2", to_group="tp:1", calls=17)
    assert f.group == "tp:1"
    assert f.details["peers"] == [4, 5, 7]
    assert "17 fewer dp calls" in f.summary and "17 more tp calls" in f.summary


def test_rank_0_can_be_the_swapped_one():
    tp = [53, 50, 50, 50, 50, 50, 50, 50]
    dp = [17, 20, 20, 20, 20, 20, 20, 20]
    (f,) = swap_pass(_ctx(_job(tp, dp)))
    assert f.ranks == (0,)
    assert f.swap == Swap(from_group="dp:0", to_group="tp:0", calls=3)


def test_calls_in_flight_do_not_make_a_swap_of_one():
    """Rank 1 is one call into a tp collective while its tp peers are already in the next dp call:
    counting every recorded call would read +1 tp / -1 dp."""
    tp = [50] * 8
    dp = [20] * 8
    in_flight = {0: "dp", 2: "dp", 3: "dp", 1: "tp"}
    rows = _job(tp, dp, in_flight=in_flight)
    assert swap_pass(_ctx(rows)) == []
    for row in rows:  # a trace without states: the trailing call is the in-flight one
        row["state"] = "unknown"
    assert swap_pass(_ctx(rows)) == []


def test_unequal_deviation_is_not_a_swap():
    tp = [50, 53, 50, 50, 50, 50, 50, 50]
    dp = [20, 18, 20, 20, 20, 20, 20, 20]
    assert swap_pass(_ctx(_job(tp, dp))) == []


def test_even_split_in_a_group_is_not_decided_inside_that_group():
    """2 vs 2 inside tp:0 names no one there; across all eight ranks, 2 and 3 are the odd ones."""
    tp = [50, 50, 53, 53, 50, 50, 50, 50]
    dp = [20, 20, 17, 17, 20, 20, 20, 20]
    found = swap_pass(_ctx(_job(tp, dp)))
    assert sorted(f.ranks[0] for f in found) == [2, 3]
    assert {f.details["reference_group"] for f in found} == {"all ranks"}
    tp[4:6] = [53, 53]  # now half of all ranks too: no majority anywhere
    dp[4:6] = [17, 17]
    assert swap_pass(_ctx(_job(tp, dp))) == []


def test_two_member_groups_fall_back_to_all_ranks():
    """TP=2 x DP=2: no group has three members; every rank is the reference."""
    tp = [10, 10, 10, 14]
    dp = [8, 8, 8, 4]
    (f,) = swap_pass(_ctx(_job(tp, dp, tp=2, dp=2)))
    assert f.ranks == (3,)
    assert f.swap == Swap(from_group="dp:1", to_group="tp:1", calls=4)


def test_log_derived_rows_do_not_count_as_posted_calls():
    """A watchdog line read from a log names one call far ahead of the rank's trace: no swap from it."""
    tp, dp = [50] * 8, [20] * 8
    rows = _job(tp, dp)
    rows.append(call(1, "tp:0", 61, ranks=[0, 1, 2, 3], state="started", source="c10d-log", **AR))
    rows = [r for r in rows if not (r["rank"] == 1 and r["group"] == "dp:0" and r["seq"] > 10)]
    assert swap_pass(_ctx(rows)) == []  # posted: tp 50, dp 10 against 50 / 20: short on dp only
    rows[-1]["source"] = "hangdoc-trace"  # the same call recorded by a trace: a swap of 10
    (f,) = swap_pass(_ctx(rows))
    assert f.ranks == (1,) and f.swap.calls == 10


def test_family_counts_are_posted_calls_less_the_one_blocked_in():
    counts, families, ranks = family_counts(Context(tables=bundle(seed001_rows()).tables).collectives)
    assert families == ["dp", "tp"]
    assert counts[list(ranks).index(6)].tolist() == [79, 406]
    assert counts[list(ranks).index(2)].tolist() == [96, 389]
