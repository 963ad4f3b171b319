"""Diagnoses built by hand for the reporter tests: seed 001's mismatch, a healthy run, and a 1024-rank one."""
from __future__ import annotations

from hangdoc.analysis.model import (
    CALL_COUNT_SWAP,
    COLLECTIVE_MISMATCH,
    GPU_SPIN_WAIT,
    LAGGING_RANK,
    LOG_SIGNATURE,
    NO_FAULT_FOUND,
    Diagnosis,
    Finding,
    GroupView,
    OpCall,
    RankPosition,
    Swap,
    Verdict,
)

PEER_OP = dict(op="all_reduce", reduce_op="SUM", dtype="bfloat16", in_shapes=((15, 2),), in_numel=30)
ODD_OP = dict(op="all_gatherv", dtype="bfloat16", in_shapes=((14, 256),), in_numel=3584)
PEER_LABEL = "all_reduce SUM [15, 2] bfloat16"
ODD_LABEL = "all_gatherv [14, 256] bfloat16"


def _labels(ranks, tp: int) -> dict[int, str]:
    return {r: f"DP {r // tp}, TP rank {r % tp}" for r in ranks}


def _view(group: str, ranks, positions) -> GroupView:
    family = group.split(":")[0]
    return GroupView(group=group, desc=group, family=family, ranks=tuple(ranks), positions=tuple(positions))


def seed001() -> Diagnosis:
    """TP=4 x DP=2: global rank 6 posts all_gatherv on tp:1 while its peers post all_reduce; 17-call swap."""
    calls = tuple(
        OpCall(rank=r, seq=389, state="started", **(ODD_OP if r == 6 else PEER_OP)) for r in (7, 6, 5, 4)
    )
    mismatch = Finding(
        kind=COLLECTIVE_MISMATCH,
        ranks=(6,),
        group="tp:1",
        seq=389,
        op=ODD_LABEL,
        expected_op=PEER_LABEL,
        summary="global rank 6 (DP 1, TP rank 2) posted all_gatherv [14, 256] on tp:1 where its three tp peers "
                "posted all_reduce SUM [15, 2]",
        evidence=("tp:1 seq 389: ranks 4, 5, 7 all_reduce SUM [15, 2] bfloat16 (started)",
                  "tp:1 seq 389: rank 6 all_gatherv [14, 256] bfloat16 (started)"),
        calls=calls,
        waiting_ranks=(7, 5, 4, 3, 2, 1, 0),
        details={"majority": 3, "minority": 1, "positions": (389,)},
    )
    swap = Finding(
        kind=CALL_COUNT_SWAP,
        ranks=(6,),
        group="dp:2",
        summary="rank 6 made 17 fewer dp calls and 17 more tp calls than its peers",
        evidence=("dp calls: rank 6 9593, peers 9610", "tp calls: rank 6 407, peers 390"),
        swap=Swap(from_group="dp:2", to_group="tp:1", calls=17),
    )
    lagging = Finding(
        kind=LAGGING_RANK, ranks=(0,), group="tp:0", seq=1123, summary="rank 0 is one call behind on tp:0",
        waiting_ranks=(1, 2, 3), role="symptom",
    )
    spin = Finding(
        kind=GPU_SPIN_WAIT, ranks=tuple(range(8)), summary="GPU at 100% SM, 0% memory bandwidth",
        role="symptom", count=8,
    )
    logs = Finding(
        kind=LOG_SIGNATURE, ranks=(0,), summary="shm_broadcast: No available shared memory broadcast block",
        role="symptom", count=3,
    )
    tp0 = [RankPosition(0, 1122, "all_reduce SUM [10733, 2] bfloat16", "started", 1122, 1121)] + [
        RankPosition(r, 1123, "all_reduce SUM [10733, 3072] bfloat16", "started", 1123, 1122) for r in (1, 2, 3)
    ]
    tp1 = [RankPosition(r, 389, PEER_LABEL, "started", 390, 389) for r in (4, 5, 7)] + [
        RankPosition(6, 406, ODD_LABEL, "started", 407, 406)
    ]
    dps = [
        _view(f"dp:{i}", (i, i + 4), [
            RankPosition(i, 8877, "all_reduce SUM [1] int32", "completed", 8878 if i == 0 else 8877,
                         8878 if i == 0 else 8877),
            RankPosition(i + 4, 9592 if i == 2 else 9609, "all_reduce SUM [1] int32", "completed",
                         9593 if i == 2 else 9610, 9593 if i == 2 else 9610),
        ])
        for i in range(4)
    ]
    return Diagnosis(
        hangdoc_version="0.1.0",
        inputs=("traces/node-15", "traces/node-1"),
        verdict=Verdict(
            kind=COLLECTIVE_MISMATCH, culprit_ranks=(6,), group="tp:1",
            summary="global rank 6 (DP 1, TP rank 2) posted all_gatherv [14, 256] on tp:1 where its three tp "
                    "peers posted all_reduce SUM [15, 2]",
            reason="every chain of waits leads to rank 6", confidence="high",
        ),
        findings=(mismatch, swap, lagging, spin, logs),
        groups=(_view("tp:1", range(4, 8), tp1), *dps, _view("tp:0", range(4), tp0)),
        checked=("aligned 6 communicators by sequence number", "compared per-family call counts"),
        notes=("rank 3: no py-spy dump",),
        rank_labels=_labels(range(8), 4),
    )


def healthy() -> Diagnosis:
    groups = tuple(
        _view(f"tp:{g}", range(4 * g, 4 * g + 4),
              [RankPosition(r, 99, "all_reduce SUM [8] float32", "completed", 100, 100) for r in range(4 * g, 4 * g + 4)])
        for g in range(2)
    )
    return Diagnosis(
        hangdoc_version="0.1.0",
        inputs=("fixtures/healthy",),
        verdict=Verdict(kind=NO_FAULT_FOUND, culprit_ranks=(), group=None,
                        summary="all 8 ranks completed the same 100 collectives on every communicator"),
        findings=(Finding(kind=NO_FAULT_FOUND, ranks=tuple(range(8)),
                          summary="traces are consistent across all communicators"),),
        groups=groups,
        checked=("aligned 2 communicators by sequence number", "compared per-family call counts",
                 "looked for lagging and missing ranks"),
    )


def huge(n: int = 1024, tp: int = 8) -> Diagnosis:
    """n ranks: rank n/2 posts a different op on its tp group; every other rank lags and says so at length."""
    bad = n // 2
    tp_group = f"tp:{bad // tp}"
    members = range(bad - bad % tp, bad - bad % tp + tp)
    calls = tuple(OpCall(rank=r, seq=500, state="started", **(ODD_OP if r == bad else PEER_OP)) for r in members)
    mismatch = Finding(
        kind=COLLECTIVE_MISMATCH, ranks=(bad,), group=tp_group, seq=500, op=ODD_LABEL, expected_op=PEER_LABEL,
        summary=f"rank {bad} posted all_gatherv where its peers posted all_reduce", calls=calls,
        waiting_ranks=tuple(r for r in range(n) if r != bad),
        evidence=tuple(f"evidence line {i} " + "x" * 80 for i in range(3000)),
    )
    symptoms = tuple(
        Finding(kind=LAGGING_RANK, ranks=(r,), group=f"dp:{r % tp}", seq=1000,
                summary=f"rank {r} waits in dp:{r % tp} for rank {bad}", role="symptom",
                evidence=tuple(f"rank {r} stack frame {i} " + "y" * 60 for i in range(30)))
        for r in range(n) if r != bad
    )
    world = [RankPosition(r, 2000, "barrier", "started", 2001, 2000) for r in range(n) if r != bad]
    world.append(RankPosition(bad, 1999, "all_reduce MAX [1] int64", "completed", 2000, 2000))
    groups = [_view("world:0", range(n), world)]
    for g in range(n // tp):
        ranks = range(g * tp, g * tp + tp)
        groups.append(_view(f"tp:{g}", ranks, [
            RankPosition(r, 500, ODD_LABEL if r == bad else PEER_LABEL, "started", 501, 500) for r in ranks]))
    for g in range(tp):
        ranks = range(g, n, tp)  # every rank at its own count: nothing collapses
        groups.append(_view(f"dp:{g}", ranks, [
            RankPosition(r, 1000 + r, "all_reduce SUM [1] int32", "started", 1001 + r, 1000 + r) for r in ranks]))
    return Diagnosis(
        hangdoc_version="0.1.0",
        inputs=tuple(f"dumps/rank{r}" for r in range(n)),
        verdict=Verdict(kind=COLLECTIVE_MISMATCH, culprit_ranks=(bad,), group=tp_group,
                        summary=f"rank {bad} posted all_gatherv [14, 256] on {tp_group}", confidence="high"),
        findings=(mismatch, *symptoms),
        groups=tuple(groups),
        checked=tuple(f"check {i}" for i in range(50)),
        notes=tuple(f"rank {r}: trace file truncated" for r in range(0, n, 2)),
        rank_labels=_labels(range(n), tp),
    )
