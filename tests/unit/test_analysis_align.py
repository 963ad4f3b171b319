"""collective_mismatch: majority vote, ties, size rules, aliases, and one finding per fault."""
from __future__ import annotations

import pytest

from collrows import bundle, call, history
from hangdoc.analysis.align import mismatch_pass
from hangdoc.analysis.model import COLLECTIVE_MISMATCH
from hangdoc.analysis.pipeline import Context, diagnose

WORLD = [0, 1, 2, 3]


def _ctx(rows) -> Context:
    return Context(tables=bundle(rows).tables)


def _world(n_calls=5, **kw):
    rows = []
    for r in WORLD:
        rows += history(r, "0", n_calls, ranks=WORLD, **kw)
    return rows


def test_rank_0_is_the_odd_one_out():
    """The first-rank-is-right approach would blame ranks 1, 2, 3 here."""
    rows = _world()
    rows[2] = call(0, "0", 3, "all_gather", ranks=WORLD, shape=(4,))  # rank 0's third call
    (f,) = mismatch_pass(_ctx(rows))
    assert f.kind == COLLECTIVE_MISMATCH
    assert f.ranks == (0,)
    assert f.seq == 3
    assert f.op.startswith("all_gather") and f.expected_op.startswith("all_reduce")
    assert f.waiting_ranks == (1, 2, 3)
    assert not f.details["tie"]
    d = diagnose(bundle(rows))
    assert d.verdict.culprit_ranks == (0,)


def test_even_split_is_a_tie_not_a_verdict_on_one_side():
    rows = []
    for r in WORLD:
        op = "all_reduce" if r < 2 else "broadcast"
        rows += history(r, "0", 3, ranks=WORLD)
        rows.append(call(r, "0", 4, op, ranks=WORLD, state="started"))
    (f,) = mismatch_pass(_ctx(rows))
    assert f.details["tie"]
    assert f.ranks == (0, 1, 2, 3)
    assert f.expected_op is None
    assert "tie" in f.summary and "two against two" in f.summary
    d = diagnose(bundle(rows))
    assert d.verdict.kind == COLLECTIVE_MISMATCH
    assert d.verdict.confidence == "low"
    assert d.verdict.culprit_ranks == ()  # an even split cannot decide: nobody is named
    assert "tie" in d.verdict.summary


def _split_three(rank1_posts_past: bool) -> list[dict]:
    """The ms-swift#10183 shape: ranks 0 and 1 stuck in one broadcast with different sizes, rank 2 ahead."""
    three = [0, 1, 2]
    rows = []
    for r in three:
        rows += history(r, "0", 3, ranks=three)
    rows.append(call(0, "0", 4, "broadcast", ranks=three, shape=(24084544,), state="started"))
    rows.append(call(1, "0", 4, "broadcast", ranks=three, shape=(64,), state="started"))
    if rank1_posts_past:
        rows.append(call(1, "0", 5, "all_reduce", ranks=three, state="issued"))
    rows += [call(2, "0", 4, "broadcast", ranks=three, shape=(64,)), call(2, "0", 5, ranks=three),
             call(2, "0", 6, ranks=three, state="started")]
    return rows


def test_a_tie_that_calls_posted_break_names_the_rank_that_never_moved_on():
    (f,) = mismatch_pass(_ctx(_split_three(rank1_posts_past=True)))
    assert not f.details["tie"] and f.ranks == (0,)
    assert "no call after it" in f.summary
    assert diagnose(bundle(_split_three(rank1_posts_past=True))).verdict.culprit_ranks == (0,)


def test_a_tie_stays_a_tie_when_two_voters_posted_as_few_calls():
    (f,) = mismatch_pass(_ctx(_split_three(rank1_posts_past=False)))
    assert f.details["tie"]
    assert diagnose(bundle(_split_three(rank1_posts_past=False))).verdict.culprit_ranks == ()


@pytest.mark.parametrize(
    "op, shape_a, shape_b, other, mismatch",
    [
        ("all_reduce", (4,), (8,), {}, True),  # element counts must agree
        ("broadcast", (4,), (8,), {}, True),
        ("all_gather", (4,), (8,), {}, True),  # each rank contributes the same count
        ("reduce_scatter", (16,), (32,), {}, True),  # output counts must agree
        ("all_gatherv", (4,), (8,), {}, False),  # per-rank sizes may differ
        ("reduce_scatterv", (16,), (32,), {}, False),
        ("all_to_all", (4,), (8,), {}, False),
        ("all_reduce", (4,), (4,), {"dtype": "float16"}, True),
        ("all_reduce", (4,), (4,), {"reduce_op": "MAX"}, True),
        ("broadcast", (4,), (4,), {"reduce_op": "MAX"}, False),  # reduce op means nothing to a broadcast
        ("all_reduce", (4,), (4,), {}, False),
    ],
)
def test_size_and_signature_rules(op, shape_a, shape_b, other, mismatch):
    rows = []
    for r in WORLD:
        odd = r == 2
        kw = dict(reduce_op="SUM", dtype="float32")
        if odd:
            kw.update(other)
        rows.append(call(r, "0", 1, op, ranks=WORLD, shape=shape_b if odd else shape_a, **kw))
    found = mismatch_pass(_ctx(rows))
    assert bool(found) == mismatch
    if mismatch:
        assert found[0].ranks == (2,)


def test_unnormalised_aliases_are_the_same_op():
    names = ["_allgather_base", "all_gather_into_tensor", "nccl:all_gather", "allgather"]
    rows = [call(r, "0", 1, names[r], ranks=WORLD, shape=(4,)) for r in WORLD]
    rows += [call(r, "0", 2, ["allreduce", "all_reduce", "ncclAllReduce", "nccl:all_reduce"][r], ranks=WORLD,
                  reduce_op=["SUM", "RedOpType.SUM", "ReduceOp.SUM", "sum"][r], dtype=["torch.float32", "float32",
                  "Float", "float32"][r]) for r in WORLD]
    assert mismatch_pass(_ctx(rows)) == []


def test_send_matches_recv():
    rows = [call(0, "p2p", 1, "send", ranks=[0, 1]), call(1, "p2p", 1, "recv", ranks=[0, 1])]
    assert mismatch_pass(_ctx(rows)) == []


def test_drifted_history_is_one_finding_with_count_and_first_seq():
    """Rank 3 inserts one extra call at seq 5: every later position differs, but that is one fault."""
    rows = []
    for r in WORLD:
        ops = ["all_reduce", "all_gather"] * 10
        if r == 3:
            ops.insert(4, "broadcast")
        rows += [call(r, "0", s + 1, op, ranks=WORLD) for s, op in enumerate(ops[:20])]
    found = mismatch_pass(_ctx(rows))
    assert len(found) == 1
    (f,) = found
    assert f.ranks == (3,)
    assert f.seq == 5
    assert f.count == 16  # positions 5..20 all differ
    assert f.details["history_first_seq"] == 5


def test_frontier_mismatch_when_seq_numbers_differ():
    rows = []
    for r in WORLD:
        n = 12 if r == 1 else 7
        rows += history(r, "0", n - 1, ranks=WORLD)
        odd = dict(op="all_gatherv", shape=(14, 256)) if r == 1 else dict(op="all_reduce", shape=(15, 2))
        rows.append(call(r, "0", n, ranks=WORLD, state="started", reduce_op="SUM", **odd))
    (f,) = mismatch_pass(_ctx(rows))
    assert f.ranks == (1,)
    assert f.seq == 7
    assert f.details["culprit_seqs"] == {1: 12}
    assert any("5 calls apart" in e for e in f.evidence)
    assert "its three" in f.summary


def test_mismatch_confined_to_its_own_communicator():
    rows = []
    for group, members in (("a", [0, 1, 2]), ("b", [3, 4, 5])):
        for r in members:
            rows += history(r, group, 4, ranks=members)
    rows[5] = call(1, "a", 2, "barrier", ranks=[0, 1, 2])  # rank 1's second call
    found = mismatch_pass(_ctx(rows))
    assert [f.group for f in found] == ["a:0"]
    assert found[0].ranks == (1,)


def test_p2p_calls_count_apart_from_collectives_on_one_group():
    """FR numbers a group's send/recv with their own counter: p2p seq 2 is not collective seq 2."""
    rows = []
    for r in (0, 1):
        rows += history(r, "pp", 4, ranks=[0, 1])
    rows += [call(0, "pp", s, "send", ranks=[0, 1]) for s in (1, 2)]
    rows += [call(1, "pp", s, "recv", ranks=[0, 1]) for s in (1, 2)]
    d = diagnose(bundle(rows))
    assert d.verdict.kind == "no_fault_found"
    assert sorted(g.group for g in d.groups) == ["pp:0", "pp:0/p2p"]
    rows.append(call(0, "pp", 3, "send", ranks=[0, 1], state="started"))  # rank 1 never posts the recv
    d = diagnose(bundle(rows))
    assert d.verdict.kind == "lagging_rank" and d.verdict.culprit_ranks == (1,)
    assert d.verdict.group == "pp:0/p2p"


def test_p2p_in_a_larger_group_is_not_aligned_by_position():
    rows = []
    for r in range(4):
        rows += history(r, "pp", 3, ranks=[0, 1, 2, 3])
    rows += [call(0, "pp", 1, "send", ranks=[0, 1, 2, 3]), call(1, "pp", 1, "recv", ranks=[0, 1, 2, 3]),
             call(1, "pp", 2, "send", ranks=[0, 1, 2, 3], state="started"),
             call(2, "pp", 1, "send", ranks=[0, 1, 2, 3], dtype="int8")]
    d = diagnose(bundle(rows))
    assert d.verdict.kind == "no_fault_found"


def test_members_that_completed_the_position_still_vote():
    """gloo retires a call that timed out: ranks 2, 3 'completed' all_reduce at seq 7 while ranks 0 and 1 are
    still in theirs. Only 0 and 1 are in flight (1 against 1), but 2 and 3 posted all_reduce there too."""
    rows = []
    for r in WORLD:
        rows += history(r, "0", 6, ranks=WORLD)
        op = "all_gather" if r == 0 else "all_reduce"
        rows.append(call(r, "0", 7, op, ranks=WORLD, state="completed" if r >= 2 else "issued"))
    (f,) = mismatch_pass(_ctx(rows))
    assert f.ranks == (0,) and not f.details["tie"]
    assert f.waiting_ranks == (1,)  # 2 and 3 are not waiting any more
    assert {c.rank for c in f.calls} == {0, 1, 2, 3}
