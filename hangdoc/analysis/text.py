"""Small phrasing helpers so findings read the way people write hang reports."""
from __future__ import annotations

from typing import Iterable

from hangdoc.analysis.model import Finding, OpCall

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


def rank_ranges(ranks: Iterable[int], max_parts: int | None = 16) -> str:
    """'0-3, 6, 8, 9': runs of three or more become a range; past max_parts the rest is counted, not listed."""
    rs = sorted({int(r) for r in ranks})
    if not rs:
        return "none"
    parts: list[str] = []
    start = prev = rs[0]
    for r in rs[1:] + [None]:  # type: ignore[list-item]
        if r is not None and r == prev + 1:
            prev = r
            continue
        if prev - start >= 2:
            parts.append(f"{start}-{prev}")
        else:
            parts.extend(str(x) for x in range(start, prev + 1))
        if r is not None:
            start = prev = r
    if max_parts is not None and len(parts) > max_parts:
        shown = ", ".join(parts[:max_parts])
        return f"{shown}, ... ({len(rs)} ranks in all)"
    return ", ".join(parts)


def short_label(call: OpCall, dtype: bool = False) -> str:
    """'all_reduce SUM [15, 2]': the label without dtype unless the dtype is what differs."""
    if dtype:
        return call.label()
    return OpCall(rank=call.rank, seq=call.seq, op=call.op, reduce_op=call.reduce_op, in_shapes=call.in_shapes,
                  in_numel=call.in_numel).label()


def verb(who, singular: str, plural_form: str) -> str:
    """The verb agreeing with a rank list: verb([6], 'waits', 'wait') -> 'waits'."""
    return singular if len(set(who)) == 1 else plural_form


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def counted_kinds(findings: Iterable[Finding]) -> list[tuple[str, int]]:
    """[('wait_chain', 7), ('log_signature', 4)]: occurrences per kind (a finding may stand for several), most
    first; every report counts findings this one way."""
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.kind] = counts.get(f.kind, 0) + max(int(f.count), 1)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def counted_text(findings: Iterable[Finding]) -> str:
    """'wait_chain x7, log_signature x4'."""
    return ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in counted_kinds(findings))


def clip(text: str, limit: int) -> str:
    """Text cut to at most `limit` characters at a word boundary, with ' ...' where it was cut."""
    text = str(text)
    if len(text) <= limit:
        return text
    head = text[: max(limit - 4, 1)]
    cut = head.rsplit(" ", 1)[0] if " " in head[limit // 2 :] else head
    return cut.rstrip(" ,;:") + " ..."
