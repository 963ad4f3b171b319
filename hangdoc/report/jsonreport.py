"""The JSON report: the stable contract (docs/report-json.md) that scripts and other tools read.

to_dict() is the single source of that contract; the other reporters render the Diagnosis itself, but anything
machine-readable goes through here. Output is deterministic: fixed key order, ranks sorted, plain ints.
"""
from __future__ import annotations

import functools
import json
from typing import Any

from hangdoc.analysis.model import (
    Diagnosis,
    Finding,
    GroupView,
    OpCall,
    RankPosition,
    RankProcess,
    StackClass,
    Verdict,
)
from hangdoc.report.condense import natural_key

SCHEMA = "hangdoc.report/1"


def to_dict(d: Diagnosis) -> dict[str, Any]:
    """The report as plain JSON-ready data, contract fields first."""
    return {
        "schema": SCHEMA,
        "hangdoc_version": str(d.hangdoc_version),
        "inputs": sorted(str(i) for i in d.inputs),
        "verdict": _verdict(d.verdict),
        "findings": [_finding(f) for f in d.findings],
        "groups": [_group(g) for g in sorted(d.groups, key=lambda g: natural_key(g.group))],
        "checked": [str(c) for c in d.checked],
        "notes": [str(n) for n in d.notes],
        "rank_labels": {str(r): str(d.rank_labels[r]) for r in sorted(d.rank_labels, key=int)},
        "ranks": [_rank_process(d.rank_processes[r]) for r in sorted(d.rank_processes, key=int)],
        "stacks": [_stack(c) for c in d.stacks],
    }


def dumps(d: Diagnosis) -> str:
    return indented(to_dict(d)) + "\n"


_SCALARS = (str, int, float, bool, type(None))


def indented(value: Any, level: int = 0) -> str:
    """The same bytes as json.dumps(value, indent=2, ensure_ascii=False), at C speed for large reports.

    json.dumps with indent runs Python's pure encoder (about 2 us a value); without indent it runs the C one, and
    its item separator may hold the newline and padding. So each container whose members are all scalars goes to
    the C encoder in one call, and only the containers above them are joined here.
    """
    if not isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    pad = "\n" + "  " * (level + 1)
    members = value.values() if isinstance(value, dict) else value
    if all(isinstance(v, _SCALARS) for v in members):
        flat = _flat_encoder(level).encode(value)
        return flat[0] + pad + flat[1:-1] + pad[:-2] + flat[-1]
    if isinstance(value, dict):
        items = [f"{_key(k)}: {indented(v, level + 1)}" for k, v in value.items()]
        return "{" + pad + ("," + pad).join(items) + pad[:-2] + "}"
    return "[" + pad + ("," + pad).join([indented(v, level + 1) for v in value]) + pad[:-2] + "]"


@functools.lru_cache(maxsize=None)
def _flat_encoder(level: int) -> json.JSONEncoder:
    return json.JSONEncoder(ensure_ascii=False, separators=(",\n" + "  " * (level + 1), ": "))


def _key(key: Any) -> str:
    """A dict key as json writes it (non-string keys become strings the way json converts them)."""
    if isinstance(key, str):
        return json.dumps(key, ensure_ascii=False)
    return json.dumps({key: None}, ensure_ascii=False)[1:-7]


def _ranks(ranks) -> list[int]:
    return sorted({int(r) for r in ranks})


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


def _opt_str(value) -> str | None:
    return None if value is None else str(value)


def _verdict(v: Verdict) -> dict[str, Any]:
    return {
        "kind": str(v.kind),
        "culprit_ranks": _ranks(v.culprit_ranks),
        "group": _opt_str(v.group),
        "summary": str(v.summary),
        "reason": str(v.reason),
        "confidence": str(v.confidence),
    }


def _finding(f: Finding) -> dict[str, Any]:
    return {
        "kind": str(f.kind),
        "ranks": _ranks(f.ranks),
        "group": _opt_str(f.group),
        "seq": _opt_int(f.seq),
        "op": _opt_str(f.op),
        "expected_op": _opt_str(f.expected_op),
        "summary": str(f.summary),
        "evidence": [str(e) for e in f.evidence],
        "swap": None if f.swap is None else {
            "from_group": str(f.swap.from_group),
            "to_group": str(f.swap.to_group),
            "calls": int(f.swap.calls),
        },
        "role": str(f.role),
        "count": int(f.count),
        "waiting_ranks": _ranks(f.waiting_ranks),
        "calls": [_call(c) for c in sorted(f.calls, key=lambda c: (int(c.rank), -1 if c.seq is None else int(c.seq)))],
        "details": json_ready(f.details),
    }


def _call(c: OpCall) -> dict[str, Any]:
    return {
        "rank": int(c.rank),
        "seq": _opt_int(c.seq),
        "op": str(c.op),
        "label": c.label(),
        "reduce_op": _opt_str(c.reduce_op),
        "dtype": _opt_str(c.dtype),
        "in_shapes": [[int(x) for x in s] for s in c.in_shapes],
        "out_shapes": [[int(x) for x in s] for s in c.out_shapes],
        "in_numel": _opt_int(c.in_numel),
        "out_numel": _opt_int(c.out_numel),
        "state": str(c.state),
    }


def _rank_process(p: RankProcess) -> dict[str, Any]:
    return {"rank": int(p.rank), "host": _opt_str(p.host), "pid": _opt_int(p.pid), "title": _opt_str(p.title)}


def _stack(c: StackClass) -> dict[str, Any]:
    return {
        "ranks": _ranks(c.ranks),
        "members": [{"rank": _opt_int(m.rank), "host": _opt_str(m.host), "pid": _opt_int(m.pid),
                     "thread": _opt_str(m.thread), "title": _opt_str(m.title)} for m in c.members],
        "category": str(c.category),
        "op": _opt_str(c.op),
        "what": str(c.what),
        "where": str(c.where),
        "odd": bool(c.odd),
        "branch": _opt_str(c.branch),
        "progress": str(c.progress),
        "top": [str(f) for f in c.top],
        "frames": [str(f) for f in c.frames],
    }


def _group(g: GroupView) -> dict[str, Any]:
    return {
        "group": str(g.group),
        "desc": _opt_str(g.desc),
        "family": _opt_str(g.family),
        "ranks": _ranks(g.ranks),
        "positions": [_position(p) for p in sorted(g.positions, key=lambda p: int(p.rank))],
    }


def _position(p: RankPosition) -> dict[str, Any]:
    return {
        "rank": int(p.rank),
        "last_seq": _opt_int(p.last_seq),
        "last_op": _opt_str(p.last_op),
        "state": _opt_str(p.state),
        "calls": int(p.calls),
        "completed": int(p.completed),
    }


def json_ready(value: Any) -> Any:
    """Finding.details may hold numpy or pyarrow scalars, tuples, sets or paths: make them JSON, keys sorted."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if hasattr(value, "as_py"):
        return json_ready(value.as_py())  # pyarrow scalars
    if hasattr(value, "item") and callable(value.item) and not hasattr(value, "__len__"):
        return json_ready(value.item())  # numpy scalars
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): json_ready(value[k]) for k in sorted(value, key=lambda k: natural_key(str(k)))}
    if isinstance(value, (set, frozenset)):
        return sorted((json_ready(v) for v in value), key=lambda v: natural_key(str(v)))
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        seq = value.tolist() if hasattr(value, "tolist") else value
        return [json_ready(v) for v in seq]
    return str(value)
