"""The helpers every reporter shares: rank ranges, op classes, collapsed positions, group order, render()."""
from __future__ import annotations

import pytest

from hangdoc.analysis.model import GroupView, OpCall, RankPosition
from hangdoc.errors import HangdocError
from hangdoc.report import render
from hangdoc.report.condense import (
    call_classes,
    collapse_positions,
    ordered_groups,
    rank_name,
    rank_ranges,
    ranks_phrase,
)
from report_cases import seed001


def test_rank_ranges():
    assert rank_ranges([6, 0, 1, 2, 3]) == "0-3, 6"
    assert rank_ranges([4, 5, 7]) == "4, 5, 7"
    assert rank_ranges([r for r in range(1024) if r != 512]) == "0-511, 513-1023"
    assert rank_ranges([]) == "none"
    assert rank_ranges(range(0, 100, 2), max_parts=3) == "0, 2, 4, ... (50 ranks in all)"


def test_rank_names_use_labels():
    labels = {6: "DP 1, TP rank 2"}
    assert rank_name(6, labels) == "rank 6 (DP 1, TP rank 2)"
    assert rank_name(5, labels) == "rank 5"
    assert ranks_phrase([6], labels) == "rank 6 (DP 1, TP rank 2)"
    assert ranks_phrase([7, 6, 5], labels) == "ranks 5-7"


def test_call_classes_group_identical_ops_majority_first():
    ar = dict(op="all_reduce", reduce_op="SUM", in_shapes=((15, 2),))
    calls = [OpCall(r, 9, **ar) for r in (0, 1, 3)] + [OpCall(2, 9, op="all_gatherv", in_shapes=((14, 256),))]
    classes = call_classes(calls, culprits=[2])
    assert [(c.ranks, c.culprit) for c in classes] == [((0, 1, 3), False), ((2,), True)]
    assert classes[1].at(9).label() == "all_gatherv [14, 256]"
    # no culprit named: the bigger class still comes first
    assert [c.ranks for c in call_classes(calls, culprits=[])] == [(0, 1, 3), (2,)]


def test_collapse_positions_majority_culprit_and_missing_members():
    pos = [RankPosition(r, 10, "barrier", "started", 11, 10) for r in (0, 1, 2, 4)]
    pos.append(RankPosition(3, 10, "barrier", "started", 11, 10))
    view = GroupView("g", None, None, ranks=(0, 1, 2, 3, 4, 5), positions=tuple(pos))
    rows = collapse_positions(view, culprits=[3])
    assert [(r.ranks, r.culprit, r.differs) for r in rows] == [
        ((0, 1, 2, 4), False, False), ((3,), True, False), ((5,), False, True)]
    assert rows[2].position is None  # rank 5 left no trace


def test_groups_ordered_verdict_then_causes_then_symptoms():
    assert [g.group for g in ordered_groups(seed001())] == ["tp:1", "dp:2", "tp:0", "dp:0", "dp:1", "dp:3"]


def test_render_rejects_unknown_format_and_unwritable_output(tmp_path):
    with pytest.raises(HangdocError, match="unknown report format"):
        render(seed001(), "html5", None)
    with pytest.raises(HangdocError, match="cannot write report"):
        render(seed001(), "json", tmp_path / "missing-dir" / "r.json")


def test_a_sparse_diagnosis_renders_in_every_format():
    """Passes may leave most fields empty: no groups, no calls, no labels, a member without a trace."""
    from hangdoc.analysis.model import Diagnosis, Finding, Verdict
    from hangdoc.report import render_text

    d = Diagnosis(
        hangdoc_version="0.1.0", inputs=(),
        verdict=Verdict(kind="missing_rank", culprit_ranks=(3,), group=None, summary="rank 3 left no trace"),
        findings=(Finding(kind="missing_rank", ranks=(3,), summary="rank 3 left no trace"),),
        groups=(GroupView("pg0", None, None, ranks=(0, 3), positions=(
            RankPosition(0, None, None, None, 0, 0),)),),
    )
    text = render_text(d, "text")
    assert "rank 3" in text and "no trace" in text
    md = render_text(d, "markdown")
    assert md.startswith("## hangdoc: missing_rank, rank 3\n") and "| **rank 3** | - | no trace |" in md
    assert '"culprit_ranks": [\n      3\n    ]' in render_text(d, "json")
