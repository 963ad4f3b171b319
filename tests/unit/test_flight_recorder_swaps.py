"""Call-count swaps on Flight Recorder dumps: calls a rank queued that never completed still count as posted.

The set is seed 001's shape, TP=4 x DP=2 (global rank = dp * 4 + tp): in the hung step, rank 6 takes a
data-dependent path and enqueues 18 tp all_gather calls (async: none ever completes, each with its own
collective_seq_id) where its tp peers first make 17 dp calls and then post one tp all_reduce.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fr_synthetic import Call, dump, write_rank
from hangdoc.analysis.model import CALL_COUNT_SWAP, COLLECTIVE_MISMATCH
from hangdoc.analysis.pipeline import diagnose
from hangdoc.importers import flight_recorder as fr

TP, DP = 4, 2
STEPS = 5  # healthy steps before the hang: 2 dp calls, then 3 tp calls each
GROUPS = {
    "0": ("default_pg", list(range(TP * DP))),
    **{str(1 + d): ("tp", [d * TP + t for t in range(TP)]) for d in range(DP)},
    **{str(1 + DP + t): ("dp", [d * TP + t for d in range(DP)]) for t in range(TP)},
}


def _groups(rank: int) -> tuple[tuple[str, str], tuple[str, str]]:
    return (str(1 + rank // TP), "tp"), (str(1 + DP + rank % TP), "dp")


def _history(rank: int) -> tuple[list[Call], int, int]:
    tp, dp = _groups(rank)
    calls, n_tp, n_dp = [], 0, 0
    for _ in range(STEPS):
        for _ in range(2):
            n_dp += 1
            calls.append(Call(dp, "all_reduce", n_dp, [[4096]]))
        for _ in range(3):
            n_tp += 1
            calls.append(Call(tp, "all_reduce", n_tp, [[15, 2]], dtype="BFloat16"))
    return calls, n_tp, n_dp


def _seed001_set(directory: Path, queued_state: str) -> None:
    """Rank 6 queues 18 tp all_gather; its tp peers (and ranks 0, 1, 3) make 17 dp calls and wait in tp;
    rank 2, rank 6's dp partner, waits in a dp call rank 6 never makes."""
    for rank in range(TP * DP):
        tp, dp = _groups(rank)
        calls, n_tp, n_dp = _history(rank)
        if rank == 6:
            for i in range(18):
                state = "started" if i == 0 else queued_state
                calls.append(Call(tp, "all_gather", n_tp + 1 + i, [[14, 256]], [[56, 256]], dtype="BFloat16",
                                  state=state, retired=False))
        elif rank == 2:
            calls.append(Call(dp, "all_reduce", n_dp + 1, [[4096]], state="started", retired=False))
        else:
            calls += [Call(dp, "all_reduce", n_dp + 1 + i, [[4096]]) for i in range(17)]
            calls.append(Call(tp, "all_reduce", n_tp + 1, [[15, 2]], dtype="BFloat16", state="started", retired=False))
        write_rank(directory, rank, dump(calls, "2.10", GROUPS))


@pytest.mark.parametrize("queued_state", ["started", "scheduled"])
def test_seed001_shaped_dumps_name_rank_6_the_mismatch_and_the_swap_of_17(tmp_path: Path, queued_state: str) -> None:
    _seed001_set(tmp_path, queued_state)
    d = diagnose(fr.read(sorted(tmp_path.iterdir())))
    assert d.verdict.culprit_ranks == (6,)
    mismatch = next(f for f in d.findings if f.kind == COLLECTIVE_MISMATCH)
    assert mismatch.ranks == (6,) and mismatch.group == "tp:1"
    (swap,) = [f for f in d.findings if f.kind == CALL_COUNT_SWAP]
    assert swap.ranks == (6,)
    assert swap.swap is not None and swap.swap.calls == 17
    assert (swap.swap.from_group, swap.swap.to_group) == ("dp:2", "tp:1")
    base_tp, base_dp = 3 * STEPS, 2 * STEPS
    text = "\n".join(swap.evidence)
    # what each side posted and completed: rank 6 completed no extra call at all, its peers 17 dp calls
    assert f"rank 6 posted {base_tp + 18} tp and {base_dp} dp calls, completed {base_tp} and {base_dp}" in text
    assert f"(median) posted {base_tp + 1} tp and {base_dp + 17} dp calls, completed {base_tp} and {base_dp + 17}" in text
    assert "posted" in text and "completed" in text


def test_healthy_set_with_ranks_one_call_apart_has_no_swap(tmp_path: Path) -> None:
    """Between steps: ranks 0, 2, 3, 5 and 7 have entered the next step's dp call, rank 1 is still in its last
    tp call (+1 tp, -1 dp by posted calls), ranks 4 and 6 are between calls. Nobody swapped anything."""
    for rank in range(TP * DP):
        tp, dp = _groups(rank)
        calls, n_tp, n_dp = _history(rank)
        if rank == 1:
            calls.append(Call(tp, "all_reduce", n_tp + 1, [[15, 2]], dtype="BFloat16", state="started", retired=False))
        elif rank not in (4, 6):
            calls.append(Call(dp, "all_reduce", n_dp + 1, [[4096]], state="started", retired=False))
        write_rank(tmp_path, rank, dump(calls, "2.10", GROUPS))
    d = diagnose(fr.read(sorted(tmp_path.iterdir())))
    assert [f for f in d.findings if f.kind == CALL_COUNT_SWAP] == []
