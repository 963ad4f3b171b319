"""Verdict selection is generic: later passes' kinds compete by role, wait-for root-ness and kind priority."""
from __future__ import annotations

from collrows import bundle, call, history, seed001_rows
from hangdoc.analysis import pipeline
from hangdoc.analysis.model import (
    COLLECTIVE_MISMATCH,
    GPU_SPIN_WAIT,
    LAGGING_RANK,
    LOG_SIGNATURE,
    NO_FAULT_FOUND,
    OOM,
    RANK_EXITED,
    Finding,
)
from hangdoc.analysis.pipeline import Context, diagnose
from hangdoc.analysis.verdict import rank_findings, select

WORLD = [0, 1, 2, 3]


def _skipped_rows():
    """Rank 0 stopped after 10 calls; ranks 1-3 wait in call 11."""
    rows = history(0, "0", 10, ranks=WORLD)
    for r in (1, 2, 3):
        rows += history(r, "0", 11, ranks=WORLD, last_state="started")
    return rows


def _with_pass(monkeypatch, *findings: Finding):
    def extra(ctx: Context) -> list[Finding]:
        return list(findings)
    monkeypatch.setattr(pipeline, "PASSES", pipeline.PASSES + [extra])


def test_a_later_passes_cause_on_the_root_rank_wins_and_borrows_its_clause(monkeypatch):
    oom = Finding(kind=OOM, ranks=(0,), summary="global rank 0 ran out of GPU memory at 10:42:03",
                  details={"clause": "it caught the OOM and skipped the next collective"})
    _with_pass(monkeypatch, oom)
    d = diagnose(bundle(_skipped_rows()))
    assert d.verdict.kind == OOM
    assert d.verdict.culprit_ranks == (0,)
    assert d.verdict.summary.startswith("global rank 0 ran out of GPU memory")
    assert "never issued seq 11" in d.verdict.summary  # the lagging finding's clause corroborates
    assert "every other stuck rank is waiting" in d.verdict.summary
    assert d.verdict.confidence == "high"


def test_a_cause_on_a_rank_that_waits_for_others_does_not_beat_the_root(monkeypatch):
    exited = Finding(kind=RANK_EXITED, ranks=(2,), summary="rank 2's process exited")  # rank 2 waits on 0
    _with_pass(monkeypatch, exited)
    d = diagnose(bundle(_skipped_rows()))
    assert d.verdict.kind == LAGGING_RANK and d.verdict.culprit_ranks == (0,)
    assert "rank_exited does not point at the root" in d.verdict.reason


def test_symptoms_never_become_the_verdict_when_a_cause_exists(monkeypatch):
    spin = Finding(kind=GPU_SPIN_WAIT, ranks=(0,), summary="GPU 0 spins", role="symptom", details={"priority": 1000})
    _with_pass(monkeypatch, spin)
    d = diagnose(bundle(seed001_rows()))
    assert d.verdict.kind == COLLECTIVE_MISMATCH
    assert d.findings[-1].role == "symptom"


def test_only_symptoms_give_a_low_confidence_verdict():
    spin = Finding(kind=GPU_SPIN_WAIT, ranks=(1,), summary="GPU 1 at 100% SM, 0% memory bandwidth", role="symptom")
    v = select([spin])
    assert v.kind == GPU_SPIN_WAIT and v.confidence == "low"


def test_priority_by_kind_without_a_wait_graph_and_override():
    log = Finding(kind=LOG_SIGNATURE, ranks=(1,), summary="shm_broadcast timeout")
    exited = Finding(kind=RANK_EXITED, ranks=(3,), summary="rank 3 exited")
    assert select([log, exited]).kind == RANK_EXITED
    boosted = Finding(kind=LOG_SIGNATURE, ranks=(1,), summary="EngineDeadError", details={"priority": 99})
    assert select([boosted, exited]).kind == LOG_SIGNATURE
    unknown = Finding(kind="brand_new_kind", ranks=(2,), summary="x")
    assert [f.kind for f in rank_findings([log, unknown], None)] == ["brand_new_kind", LOG_SIGNATURE]
    assert select([log]).confidence == "low"


def test_healthy_trace_is_no_fault_found_and_says_what_was_checked():
    rows = []
    for r in range(8):
        rows += history(r, "tp:0", 30, ranks=[r // 4 * 4 + i for i in range(4)])
        rows += history(r, "dp:0", 10, ranks=[r % 4, r % 4 + 4])
    d = diagnose(bundle(rows))
    assert [f.kind for f in d.findings] == [NO_FAULT_FOUND]
    assert d.verdict.kind == NO_FAULT_FOUND and d.verdict.culprit_ranks == ()
    s = d.verdict.summary
    assert "6 communicators" in s and "8 ranks" in s and "320 calls" in s and "every call completed" in s


def test_everyone_in_the_same_call_points_below_the_collective_layer():
    rows = []
    for r in WORLD:
        rows += history(r, "0", 5, ranks=WORLD, last_state="started")
    d = diagnose(bundle(rows))
    assert d.verdict.kind == NO_FAULT_FOUND
    assert "4 ranks are in calls their peers also posted" in d.verdict.summary
    assert "below the collective layer" in d.verdict.summary


def test_two_independent_faults_are_both_kept_and_the_verdict_says_so():
    rows = []
    for g, members in (("a", [0, 1, 2]), ("b", [3, 4, 5])):
        for r in members:
            rows += history(r, g, 4, ranks=members)
            odd = (g == "a" and r == 1) or (g == "b" and r == 5)
            rows.append(call(r, g, 5, "broadcast" if odd else "all_reduce", ranks=members, state="started"))
    d = diagnose(bundle(rows))
    mismatches = [f for f in d.findings if f.kind == COLLECTIVE_MISMATCH]
    assert sorted(f.ranks for f in mismatches) == [(1,), (5,)]
    assert d.verdict.culprit_ranks in ((1,), (5,))
    assert d.verdict.confidence == "medium"
    assert "1 other independent root" in d.verdict.reason
