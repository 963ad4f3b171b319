"""Log signatures: log_events (lines the catalogue matched) grouped into findings.

- kv_transfer_stranded: NIXL prefill KV blocks freed only by lease expiry, or notifications for requests the
  prefill side does not know (seed 002). Counts distinct stranded requests, reads the lease time, and notices
  parallel-sampling siblings (`3_cmpl-...`): a KV leak, not a collective hang.
- oom: a rank ran out of GPU memory. When its peers then time out in a collective (c10d watchdog, hang
  detectors) or wait in one on their stacks, the OOM rank is the one that skipped it (seed 003).
- orphaned_process from "Parent process exited" lines; a start-up race when the lines come with start-up
  failures (BrokenPipeError, "Servers failed to start": seed 004).
- log_signature: every other catalogued line, one finding per signature with counts and ranks; the c10d
  watchdog's SeqNum and OpType are kept as the finding's seq and op.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Callable, Sequence

import pyarrow as pa

from hangdoc.analysis import stacks
from hangdoc.analysis.model import (
    COLLECTIVE_MISMATCH, KV_TRANSFER_STRANDED, LOG_SIGNATURE, OOM, ORPHANED_PROCESS, RANK_EXITED, Finding,
)
from hangdoc.analysis.host import context_views, rank_views
from hangdoc.analysis.procs import Processes, ranks_text, rows
from hangdoc.analysis.text import clip, plural
from hangdoc.importers.ops import normalize_op
from hangdoc.signatures import Signature, load_catalogue

_SIBLING = re.compile(r"^(\d+)_(.+)$")
# Catalogue ids with a special role here.
KV_EXPIRED = "nixl_expired_kv_blocks"
KV_UNRECOGNIZED = "nixl_unrecognized_request"
KV_USAGE = "vllm_kv_cache_usage"
C10D_TIMEOUT = "c10d_watchdog_timeout"
# Lines that say a rank is waiting for peers (they make an OOM elsewhere the likely reason).
WAIT_SIGNATURES = ("c10d_watchdog_timeout", "c10d_pg_status", "trtllm_hang_detected", "sglang_watchdog_timeout",
                   "gloo_timeout", "vllm_shm_broadcast_timeout")
_HANDLED_KINDS = (KV_TRANSFER_STRANDED, OOM, ORPHANED_PROCESS, RANK_EXITED)


def _fields(sig: Signature | None, text: str) -> dict[str, str]:
    if sig is None:
        return {}
    m = sig.search(text or "")
    return {k: v for k, v in m.groupdict().items() if v is not None} if m else {}


def _where(e: dict[str, Any]) -> str:
    rank = f"rank {e['rank']}, " if e.get("rank") is not None else ""
    return f"{rank}{e.get('file')}:{e.get('line_no')}: {clip(e.get('text') or '', 240)}"


def _kv(events: list[dict[str, Any]], sigs: dict[str, Signature]) -> list[Finding]:
    expired = [e for e in events if e["signature"] == KV_EXPIRED]
    unknown = [e for e in events if e["signature"] == KV_UNRECOGNIZED]
    if not expired and not unknown:
        return []
    exp_ids: dict[str, dict[str, str]] = {}
    for e in expired:
        f = _fields(sigs.get(KV_EXPIRED), e["text"])
        exp_ids.setdefault(f.get("request") or e.get("text") or "", f)
    unk_ids = {(_fields(sigs.get(KV_UNRECOGNIZED), e["text"]).get("request") or e.get("text") or "") for e in unknown}
    leases = Counter(int(f["seconds"]) for f in exp_ids.values() if f.get("seconds"))
    lease = leases.most_common(1)[0][0] if leases else None
    never_pulled = sum(1 for f in exp_ids.values() if f.get("consumers") == "0")
    stranded = set(exp_ids) | unk_ids
    parents: dict[str, set[str]] = defaultdict(set)
    for rid in stranded:
        m = _SIBLING.match(rid)
        if m:
            parents[m.group(2)].add(m.group(1))
    usage = [float(_fields(sigs.get(KV_USAGE), e["text"]).get("percent", "nan")) for e in events if e["signature"] == KV_USAGE]
    usage = [u for u in usage if u == u]
    parts = []
    if exp_ids:
        parts.append(
            f"{plural(len(exp_ids), 'prefill request')} had their KV blocks released only by lease expiry"
            + (f" after {lease} s" if lease else "")
            + (f" ({never_pulled} never pulled by any decode worker)" if never_pulled else "")
        )
    if unk_ids:
        parts.append(f"{plural(len(unk_ids), 'transfer notification')} named a request the prefill side did not know")
    summary = "KV transfer leak, not a collective hang: " + "; ".join(parts)
    if parents:
        summary += (f"; the stranded ids are parallel-sampling siblings (n > 1) of "
                    f"{plural(len(parents), 'parent request')}: "
                    f"the decode side pulled one sibling's KV and served the rest from its prefix cache")
    if usage:
        summary += f"; KV cache usage peaked at {max(usage):.1f} %"
    evidence = [_where(e) for e in (expired[:3] + unknown[:2])]
    if usage:
        evidence.append(f"KV cache usage: {min(usage):.1f}-{max(usage):.1f} % over "
                        f"{plural(len(usage), 'metrics line')}")
    details: dict[str, Any] = {
        "stranded_requests": len(stranded), "expired_requests": len(exp_ids), "unrecognized_requests": len(unk_ids),
        "lease_seconds": lease, "never_pulled": never_pulled, "sibling_parents": len(parents),
        "kv_cache_usage_max": max(usage) if usage else None,
        "confidence": "high" if len(exp_ids) >= 3 and lease else "medium",
    }
    ranks = sorted({e["rank"] for e in expired + unknown if e.get("rank") is not None})
    return [Finding(kind=KV_TRANSFER_STRANDED, ranks=tuple(ranks), summary=summary, evidence=tuple(evidence),
                    count=len(stranded), details=details)]


def _waits(events: list[dict[str, Any]], sigs: dict[str, Signature]) -> dict[int, list[tuple[dict[str, Any], dict[str, str]]]]:
    out: dict[int, list[tuple[dict[str, Any], dict[str, str]]]] = defaultdict(list)
    for e in events:
        if e["signature"] in WAIT_SIGNATURES and e.get("rank") is not None:
            out[int(e["rank"])].append((e, _fields(sigs.get(e["signature"]), e["text"])))
    return out


def _oom(events: list[dict[str, Any]], sigs: dict[str, Signature], views: dict[int, stacks.RankView],
         known_ranks: set[int]) -> list[Finding]:
    ooms = [e for e in events if sigs.get(e["signature"]) is not None and sigs[e["signature"]].kind == OOM]
    if not ooms:
        return []
    by_rank: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in ooms:
        by_rank[e.get("rank")].append(e)
    oom_ranks = sorted(r for r in by_rank if r is not None)
    waits = _waits(events, sigs)
    first_oom = min((e["t"] for e in ooms if e.get("t") is not None), default=None)
    waiting = sorted(
        r for r, ws in waits.items()
        if r not in oom_ranks and (first_oom is None or any(w.get("t") is None or w["t"] >= first_oom for w, _ in ws))
    )
    in_coll = sorted(r for r, v in views.items() if r not in oom_ranks and v.placement.category == stacks.COLLECTIVE)
    waiting = sorted(set(waiting) | set(in_coll))
    sample = by_rank[oom_ranks[0] if oom_ranks else None][0]
    what = (sample.get("text") or "").strip()
    m = re.search(r"(\w*(?:OutOfMemoryError|out of memory)(?:[^\n]*?Tried to allocate [\d.]+ \w+)?)", what, re.I)
    what = m.group(1) if m else clip(what, 160)
    who = ranks_text(oom_ranks) if oom_ranks else "a process"
    around = " ".join([sample.get("text") or ""] + list(sample.get("context") or []))
    phase = " in warm-up" if re.search(r"warm-?up|warming up", around, re.I) else ""
    summary = f"{who} ran out of GPU memory{phase} ({what})"
    seqs = sorted({(int(f["seq"]), f.get("op")) for r in waiting for _, f in waits.get(r, []) if f.get("seq")},
                  key=lambda so: (so[0], so[1] or ""))  # a PG status line gives a SeqNum without an op
    if waiting:
        ops = sorted({normalize_op(op) for _, op in seqs if op} | {views[r].placement.op for r in in_coll if views[r].placement.op})
        op_text = f" in {', '.join(ops)}" if ops else " in a collective"
        seq_text = f" (c10d SeqNum {', '.join(str(s) for s in sorted({s for s, _ in seqs}))})" if seqs else ""
        summary += (f" and went on without it; {ranks_text(waiting)} wait{op_text}{seq_text} that "
                    f"{'it' if len(oom_ranks) == 1 else 'they'} never issued")
    elif known_ranks - set(oom_ranks):
        summary += f"; {ranks_text(sorted(known_ranks - set(oom_ranks)))} logged no out-of-memory error"
    evidence = [_where(e) + (f"  (line before: {clip(e['context'][-1], 160)})" if e.get("context") else "")
                for r in by_rank for e in by_rank[r][:2]]
    for r in waiting:
        for w, f in waits.get(r, [])[:1]:
            evidence.append(_where(w))
        if r in views:
            evidence.append(f"rank {r} stack: {views[r].placement.category}: {views[r].placement.where}")
    op = None
    if seqs and len({normalize_op(o) for _, o in seqs if o}) == 1:
        op = normalize_op(next(o for _, o in seqs if o))
    return [Finding(kind=OOM, ranks=tuple(oom_ranks), summary=summary, evidence=tuple(evidence),
                    waiting_ranks=tuple(waiting), op=None, expected_op=op, count=len(ooms),
                    seq=seqs[0][0] if len({s for s, _ in seqs}) == 1 else None,
                    details={"oom_lines": len(ooms), "waiting_ranks": waiting,
                             "confidence": "high" if waiting and oom_ranks else "medium"})]


def _startup_race(events: list[dict[str, Any]], sigs: dict[str, Signature], procs: Processes) -> list[Finding]:
    parent = [e for e in events if sigs.get(e["signature"]) is not None and sigs[e["signature"]].kind == ORPHANED_PROCESS]
    if not parent:
        return []
    startup = [e for e in events if getattr(sigs.get(e["signature"]), "phase", None) == "startup"]
    ranks = sorted({e["rank"] for e in parent if e.get("rank") is not None})
    names = sorted({_writer(e, procs) for e in parent})
    first = parent[0]
    if startup:
        summary = (f"start-up race: the parent process exited before its workers finished starting; "
                   f"{', '.join(names)} logged \"{_quote(first)}\"")
        pids = {e.get("pid") for e in parent}
        after = [e for e in events if e.get("pid") in pids and e["signature"] == "broken_pipe"]
        if after:
            summary += " and then hit BrokenPipeError"
        seen: list[str] = []
        for e in sorted(startup, key=lambda e: (e.get("file") or "", e.get("line_no") or 0)):
            m = sigs[e["signature"]].search(e.get("text") or "")
            text = (m.group(0) if m else e["signature"]).rstrip(".")
            who = _writer(e, procs) if e.get("pid") is not None else None
            item = f"{who}: {text}" if who and who != "a worker" else text
            if item not in seen:
                seen.append(item)
        summary += "; start-up failures: " + "; ".join(seen[:4])
    else:
        summary = f"{', '.join(names)} lost {'their' if len(names) > 1 else 'its'} parent process: \"{_quote(first)}\""
    evidence = [_where(e) for e in parent[:4]] + [_where(e) for e in startup[:6]]
    return [Finding(kind=ORPHANED_PROCESS, ranks=tuple(ranks), summary=summary, evidence=tuple(evidence),
                    count=len(parent), details={"phase": "startup" if startup else None, "confidence": "medium",
                                                "startup_failures": sorted({e["signature"] for e in startup})})]


def _writer(e: dict[str, Any], procs: Processes) -> str:
    p = procs.find(e.get("host"), int(e["pid"])) if e.get("pid") is not None else None
    if p is not None and p.title:
        return p.title + (f" (rank {p.rank})" if p.rank is not None else "")
    return f"rank {e['rank']}" if e.get("rank") is not None else "a worker"


def _quote(e: dict[str, Any]) -> str:
    text = (e.get("text") or "").strip()
    m = re.search(r"\] (?P<msg>[^\[\]]+)$", text)
    return clip((m.group("msg") if m else text).strip(), 120)


def _generic(events: list[dict[str, Any]], sigs: dict[str, Signature], has_cause: bool,
             known: set[int] | None = None) -> list[Finding]:
    by_sig: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        sig = sigs.get(e["signature"])
        if sig is None or sig.kind in _HANDLED_KINDS or sig.id in (KV_USAGE,) or sig.severity == "info":
            continue
        by_sig[sig.id].append(e)
    out = []
    for sid, es in sorted(by_sig.items(), key=lambda kv: (kv[0] != C10D_TIMEOUT, kv[0])):
        sig = sigs[sid]
        ranks = sorted({e["rank"] for e in es if e.get("rank") is not None})
        fields = [_fields(sig, e["text"]) for e in es]
        seqs = sorted({int(f["seq"]) for f in fields if f.get("seq")})
        ops = sorted({normalize_op(f["op"]) for f in fields if f.get("op")})
        who = ranks_text(ranks) if ranks else "the log"
        summary = f"{who}: {sid.replace('_', ' ')} x{len(es)}"
        if seqs:
            summary += f" at SeqNum {', '.join(map(str, seqs))}"
        if ops:
            summary += f" ({', '.join(ops)})"
        secs = sorted({f["seconds"] for f in fields if f.get("seconds")})
        if secs:
            summary += f", after {', '.join(secs)} s"
        summary += f": {sig.meaning}"
        details: dict[str, Any] = {"signature": sid, "severity": sig.severity}
        silent = sorted((known or set()) - set(ranks))
        if sid in WAIT_SIGNATURES and len(ranks) >= 2 and silent:
            summary += f" No such line from {ranks_text(silent)}."
            details["silent_ranks"] = silent
        role = "cause"
        if has_cause:
            role, details["explained_by"] = "symptom", "another finding"
        out.append(Finding(kind=LOG_SIGNATURE, ranks=tuple(ranks), summary=summary,
                           evidence=tuple(_where(e) for e in es[:4]), count=len(es), role=role,
                           seq=seqs[0] if len(seqs) == 1 else None, op=ops[0] if len(ops) == 1 else None,
                           details=details))
    return out


_PG = re.compile(r"\[PG(?: ID)? (?P<pg>\d+)")


def _c10d_disagreement(events: list[dict[str, Any]], sigs: dict[str, Signature], oom_ranks: set[int]) -> list[Finding]:
    """c10d watchdog timeouts at the same SeqNum (and process group, when the line names it) but of different
    OpTypes: the ranks posted different collectives at one position. The minority is the culprit."""
    sig = sigs.get(C10D_TIMEOUT)
    at: dict[tuple[str | None, int], dict[int, str]] = defaultdict(dict)
    for e in events:
        if e["signature"] != C10D_TIMEOUT or e.get("rank") is None:
            continue
        f = _fields(sig, e["text"])
        if f.get("seq") and f.get("op"):
            pg = _PG.search(e["text"] or "")
            at[(pg.group("pg") if pg else None, int(f["seq"]))][int(e["rank"])] = normalize_op(f["op"])
    out = []
    for (pg, seq), by_rank in sorted(at.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        votes = Counter(by_rank.values())
        if len(votes) < 2:
            continue
        (expected, n), *rest = votes.most_common()
        if rest and rest[0][1] == n:
            continue  # a tie names no culprit
        odd = sorted(r for r, op in by_rank.items() if op != expected)
        ops = sorted({by_rank[r] for r in odd})
        peers = sorted(r for r, op in by_rank.items() if op == expected)
        where = f"SeqNum {seq}" + (f" of process group {pg}" if pg is not None else "")
        summary = (f"c10d watchdog timeouts disagree at {where}: {ranks_text(odd)} timed out in {', '.join(ops)} "
                   f"where {ranks_text(peers)} timed out in {expected}")
        if pg is None:
            summary += " (the log does not name the process group; assuming one communicator)"
        details: dict[str, Any] = {"source": "log", "confidence": "medium" if pg is not None else "low"}
        role = "cause"
        if set(odd) <= oom_ranks:
            role, details["explained_by"] = "symptom", OOM
        out.append(Finding(kind=COLLECTIVE_MISMATCH, ranks=tuple(odd), summary=summary, seq=seq,
                           op=ops[0] if len(ops) == 1 else None, expected_op=expected, waiting_ranks=tuple(peers),
                           group=f"pg:{pg}" if pg is not None else None, role=role, details=details,
                           evidence=tuple(f"rank {r}: {op} at SeqNum {seq}" for r, op in sorted(by_rank.items()))))
    return out


def _deaths(events: list[dict[str, Any]], sigs: dict[str, Signature], earlier: Sequence[Finding]) -> list[Finding]:
    """rank_exited from "died unexpectedly"-style lines the host pass did not already account for."""
    covered = {r for f in earlier if f.kind == RANK_EXITED for r in f.ranks}
    died = [e for e in events if sigs.get(e["signature"]) is not None and sigs[e["signature"]].kind == RANK_EXITED
            and sigs[e["signature"]].severity in ("error", "critical") and e.get("rank") not in covered]
    if not died:
        return []
    ranks = sorted({e["rank"] for e in died if e.get("rank") is not None})
    summary = f"{ranks_text(ranks) if ranks else 'a worker'} died: \"{_quote(died[0])}\""
    return [Finding(kind=RANK_EXITED, ranks=tuple(ranks), summary=summary, evidence=tuple(_where(e) for e in died[:4]),
                    count=len(died), details={"source": "log", "confidence": "medium"})]


def log_findings(table: Callable[[str], pa.Table], earlier: Sequence[Finding] = (), procs: Processes | None = None,
                 views: list[stacks.RankView] | None = None) -> list[Finding]:
    events = [e for e in rows(table("log_events")) if e.get("signature")]
    if not events:
        return []
    sigs = {s.id: s for s in load_catalogue()}
    procs = procs if procs is not None else Processes(table)
    views = {v.rank: v for v in (views if views is not None else rank_views(table, procs)) if v.rank is not None}
    known = {r for r in procs.ranked()} | {int(e["rank"]) for e in events if e.get("rank") is not None}
    findings = _kv(events, sigs) + _oom(events, sigs, views, known) + _startup_race(events, sigs, procs)
    findings += _deaths(events, sigs, earlier)
    oom_ranks = {r for f in findings if f.kind == OOM for r in f.ranks}
    findings += _c10d_disagreement(events, sigs, oom_ranks)
    has_cause = any(f.role == "cause" for f in list(earlier) + findings)
    return findings + _generic(events, sigs, has_cause, known)


def log_signatures(ctx: Any) -> list[Finding]:
    """Analysis pass: catalogued log lines as findings."""
    if not ctx.table("log_events").num_rows:
        return []
    return log_findings(ctx.table, list(getattr(ctx, "findings", ())), *context_views(ctx))

