"""Small phrasing helpers so findings read the way people write hang reports."""
from __future__ import annotations

from typing import Iterable

from hangdoc.analysis.model import OpCall

_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def number(n: int) -> str:
    """3 -> 'three', 12 -> '12'."""
    return _WORDS[n] if 0 <= n < len(_WORDS) else f"{n:,}"


def ranks_text(ranks: Iterable[int], limit: int = 12) -> str:
    """'rank 6', 'ranks 4, 5, 7', 'ranks 0, 1, 2, ... (4,096 ranks)'."""
    rs = sorted(set(int(r) for r in ranks))
    if len(rs) == 1:
        return f"rank {rs[0]}"
    if len(rs) <= limit:
        return "ranks " + ", ".join(str(r) for r in rs)
    return "ranks " + ", ".join(str(r) for r in rs[: limit - 2]) + f", ... {rs[-1]} ({len(rs):,} ranks)"


def short_label(call: OpCall, dtype: bool = False) -> str:
    """'all_reduce SUM [15, 2]': the label without dtype unless the dtype is what differs."""
    if dtype:
        return call.label()
    return OpCall(rank=call.rank, seq=call.seq, op=call.op, reduce_op=call.reduce_op, in_shapes=call.in_shapes,
                  in_numel=call.in_numel).label()


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")
