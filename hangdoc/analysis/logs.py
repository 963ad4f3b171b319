"""What log lines say about ranks, judged as evidence: a rank that logged a timeout is a waiter, never the cause.

Collective positions from logs (c10d watchdog SeqNums, desync reports, NCCL RAS counts ...) are collectives rows
and the alignment, lagging and missing-rank passes judge them like any trace. This pass reads the rest:

- waiters: ranks that logged a timeout or are inside a collective (log rows, stacks);
- failures (OOM, exception, exit, fatal signal) per rank: a candidate for the cause when the rank was not
  waiting or failed before it began to; a consequence when it came after (the watchdog's abort) or after every
  waiter had timed out (teardown). The earliest candidate by time is the cause: `oom` or `rank_exited`
  (an exception counts: the rank left the collective path) naming the rank that failed (seed 003: rank 0's warm-up OOM, ranks 1-3 waiting);
- waiters with no position and no failure: the known ranks that did not report waiting (`lagging_rank`), when
  they are fewer than the waiters or their logs are in the input;
- otherwise one `log_signature` finding with no culprit that says who waits where and what would decide it;
- kv_transfer_stranded (seed 002) and orphaned_process / start-up race (seed 004) as before; "Parent process
  exited" after a worker died is a symptom of that death;
- log_signature for every other catalogued line, with no ranks: its printer is a witness.
"""
from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from hangdoc.analysis import stacks
from hangdoc.analysis.model import (
    KV_TRANSFER_STRANDED, LAGGING_RANK, LOG_SIGNATURE, OOM, ORPHANED_PROCESS, RANK_EXITED, Finding,
)
from hangdoc.analysis.host import context_views, rank_views
from hangdoc.analysis.procs import Processes, rows
from hangdoc.analysis.text import clip, plural, rank_ranges
from hangdoc.importers import logfacts
from hangdoc.signatures import Signature, load_catalogue

_SIBLING = re.compile(r"^(\d+)_(.+)$")
# Catalogue ids with a special role here.
KV_EXPIRED = "nixl_expired_kv_blocks"
KV_UNRECOGNIZED = "nixl_unrecognized_request"
KV_USAGE = "vllm_kv_cache_usage"


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


# --- what each rank's log lines say -----------------------------------------------------------------
FAILURES = ("oom", "raised", "exited", "signal")
_RAN_FOR = re.compile(r"ran for (?P<ms>\d+) milliseconds|Hang detected after (?P<s>\d+) seconds|"
                      r"watchdog_timeout=(?P<s2>[\d.]+)|Timed out waiting (?P<ms2>\d+)ms")
DECIDE = ("what would decide it: every rank's log (the ranks that logged nothing are the suspects), or next time "
          "TORCH_NCCL_TRACE_BUFFER_SIZE=2000 with TORCH_NCCL_DUMP_ON_TIMEOUT=1 (a Flight Recorder dump per rank), "
          "TORCH_NCCL_DESYNC_DEBUG=1 (the watchdog then names the lagging ranks), NCCL_DEBUG=INFO, or "
          "`py-spy dump --native` of each rank while it hangs")


def _event_of(e: dict[str, Any], sigs: dict[str, Signature]) -> str | None:
    if e.get("event"):
        return e["event"]
    sig = sigs.get(e.get("signature") or "")
    return sig.event if sig is not None else None


def _wait_start(e: dict[str, Any]) -> float | None:
    """When a waiter started waiting: the line's time less the time it says it waited."""
    if e.get("t") is None:
        return None
    m = _RAN_FOR.search(e.get("text") or "")
    if not m:
        return float(e["t"])
    if m["ms"] or m["ms2"]:
        return float(e["t"]) - int(m["ms"] or m["ms2"]) / 1000.0
    return float(e["t"]) - float(m["s"] or m["s2"])


@dataclass
class Waiting:
    """The ranks the evidence shows waiting: who, where (from collectives rows of log sources) and since when."""

    ranks: set[int] = field(default_factory=set)
    since: dict[int, float] = field(default_factory=dict)  # rank -> earliest wait start
    reported: dict[int, float] = field(default_factory=dict)  # rank -> earliest timeout line
    where: dict[tuple[str, int, str | None], set[int]] = field(default_factory=dict)  # (group, seq, op) -> ranks
    lines: dict[int, dict[str, Any]] = field(default_factory=dict)  # rank -> its first timeout line
    stacks: dict[int, str | None] = field(default_factory=dict)  # rank -> the collective its stack is in

    def text(self, limit: int = 3, then: str = "", besides: Iterable[int] = ()) -> str:
        """'ranks 1-3 timed out in all_reduce SeqNum 57 of process group 3', 'ranks 1-3 wait in all_reduce'
        (stacks), 'ranks 1-3 logged a timeout'; ranks in `besides` left out."""
        skip = set(besides)
        parts = []
        told: set[int] = set(skip)
        for (group, seq, op), rs in sorted(self.where.items(), key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1]))[:limit]:
            rs = rs - skip
            if rs:
                pg = "" if group in ("0", "detail") else " (process group not named)" if group == "unnamed" else \
                    f" of process group {group}"
                parts.append(f"{rank_ranges_text(rs)}{then} timed out in {op or 'a collective'} SeqNum {seq}{pg}")
                told |= rs
        in_stack = {r: op for r, op in self.stacks.items() if r not in told}
        if in_stack:
            ops = sorted({op for op in in_stack.values() if op})
            parts.append(f"{rank_ranges_text(in_stack)} wait{'s' if len(in_stack) == 1 else ''} in "
                         f"{', '.join(ops) if ops else 'a collective'}")
            told |= set(in_stack)
        rest = self.ranks - told
        if rest:
            parts.append(f"{rank_ranges_text(rest)}{then} logged a timeout")
        return "; ".join(parts)


def rank_ranges_text(ranks: Iterable[int]) -> str:
    rs = sorted(set(ranks))
    return ("rank " if len(rs) == 1 else "ranks ") + rank_ranges(rs)


def waiting(events: list[dict[str, Any]], sigs: dict[str, Signature], calls: list[dict[str, Any]],
            views: dict[int, stacks.RankView]) -> Waiting:
    """Waiters: ranks that logged a timeout, ranks a log shows inside a collective, ranks whose stack is in one."""
    w = Waiting()
    for e in events:
        if _event_of(e, sigs) == "timeout" and e.get("rank") is not None:
            r = int(e["rank"])
            w.ranks.add(r)
            w.lines.setdefault(r, e)
            start = _wait_start(e)
            if start is not None:
                w.since[r] = min(w.since.get(r, start), start)
                w.reported[r] = min(w.reported.get(r, float(e["t"])), float(e["t"]))
    for c in calls:
        if c.get("state") == "timed_out" and c.get("rank") is not None and c.get("seq") is not None:
            r = int(c["rank"])
            w.ranks.add(r)
            w.where.setdefault((str(c["group"]), int(c["seq"]), c.get("op")), set()).add(r)
    for r, v in views.items():
        if v.placement.category == stacks.COLLECTIVE:
            w.ranks.add(r)
            w.stacks[r] = v.placement.op
    return w


@dataclass(frozen=True)
class Failure:
    rank: int
    event: str  # one of FAILURES
    e: dict[str, Any]
    cause: bool  # False: a consequence of the rank's own wait, or teardown after the peers' timeouts
    why: str


def failures(events: list[dict[str, Any]], sigs: dict[str, Signature], w: Waiting) -> list[Failure]:
    """Every OOM, exception, exit and fatal signal on a known rank, each judged cause candidate or consequence.

    A waiter's failure after it began waiting (the watchdog's abort, the DistBackendError it raises) is a
    consequence; so is a death after every waiter had already reported its timeout (the launcher tearing the job
    down). Anything else (a rank that failed first, or a rank that never waited) is a candidate for the cause."""
    last_report = max(w.reported.values()) if w.reported else None
    first_seen = {int(e["rank"]) for e in events if e.get("rank") is not None
                  and "first observed failure" in (e.get("text") or "")}
    out: list[Failure] = []
    for e in events:
        kind = _event_of(e, sigs)
        if kind not in FAILURES or e.get("rank") is None:
            continue
        r, t = int(e["rank"]), e.get("t")
        cause, why = True, ""
        if r in w.ranks:
            start = w.since.get(r)
            if t is not None and start is not None and t >= start:
                cause, why = False, "after it had started waiting"
            elif (t is None or start is None) and kind != "oom":
                cause, why = False, "on a rank that was itself waiting"
        elif kind in ("exited", "signal") and t is not None and last_report is not None and t > last_report:
            cause, why = False, "after its peers had timed out (the job being torn down)"
        out.append(Failure(r, kind, e, cause, why))
    # Exits in the same second: torchrun's "first observed failure" orders them (its clock is finer than its log's)
    timed = [f.e["t"] for f in out if f.cause and f.e.get("t") is not None]
    if timed and first_seen:
        tied = [f for f in out if f.cause and f.e.get("t") == min(timed)]
        if len({f.rank for f in tied}) > 1 and len(first_seen & {f.rank for f in tied}) == 1:
            lead = next(iter(first_seen & {f.rank for f in tied}))
            out = [replace(f, cause=False, why=f"in the same second as rank {lead}, which torchrun observed first")
                   if f in tied and f.rank != lead else f for f in out]
    return out


def _failure_text(f: Failure) -> str:
    text = (f.e.get("text") or "").strip()
    if f.event == "oom":
        m = re.search(r"(\w*(?:OutOfMemoryError|out of memory)(?:[^\n]*?Tried to allocate [\d.]+ \w+)?)", text, re.I)
        return m.group(1) if m else text[:160]
    return _quote(f.e) if f.e.get("signature") != "torchrun-failure" else text.split(": ", 1)[-1][:160]


def _when(t: float | None) -> str:
    return time.strftime(" at %H:%M:%S", time.gmtime(t)) if t is not None else ""


# An exception a rank raised and did not survive, or survived by skipping work its peers then wait for: either
# way the rank left the collective path, which is what rank_exited tells the reader.
_FAILURE_KIND = {"oom": OOM, "raised": RANK_EXITED, "exited": RANK_EXITED, "signal": RANK_EXITED}
_FAILURE_VERB = {"oom": "ran out of GPU memory", "raised": "raised", "exited": "exited", "signal": "died of a signal"}


def failure_findings(fs: list[Failure], w: Waiting, covered: set[int]) -> list[Finding]:
    """One finding per failure kind, naming the ranks that failed. The earliest failure (by time, where the
    lines have it) is the cause; later ones and consequences are symptoms."""
    timed = [f.e["t"] for f in fs if f.cause and f.e.get("t") is not None]
    first_t = min(timed) if timed else None
    if first_t is not None:  # an untimed failure cannot be shown to come first; one on a rank that failed before is its sequel
        fs = [f if not f.cause or f.e.get("t") is not None else
              replace(f, cause=False, why="with no time to place it before the first timed failure") for f in fs]
    by_kind: dict[str, list[Failure]] = defaultdict(list)
    for f in fs:
        by_kind[_FAILURE_KIND[f.event]].append(f)
    out = []
    for kind, group in by_kind.items():
        ranks = sorted({f.rank for f in group if f.rank not in covered} or {f.rank for f in group})
        mine = [f for f in group if f.cause]
        first = min(mine or group, key=lambda f: (f.e.get("t") is None, f.e.get("t") or 0.0))
        earliest = first.cause and (first_t is None or first.e.get("t") is None or first.e["t"] <= first_t)
        role = "cause" if earliest else "symptom"
        cause_ranks = sorted({f.rank for f in mine}) or ranks
        verb = _FAILURE_VERB[first.event]
        around = " ".join([first.e.get("text") or ""] + list(first.e.get("context") or []))
        phase = " in warm-up" if first.event == "oom" and re.search(r"warm-?up|warming up", around, re.I) else ""
        summary = f"{rank_ranges_text(cause_ranks)} {verb}{phase}{_when(first.e.get('t'))} ({_failure_text(first)})"
        waiters = sorted(w.ranks - set(cause_ranks))
        if role == "cause" and waiters:
            then = " then" if first.e.get("t") is not None and w.since and first.e["t"] <= min(w.since.values()) + 1 else ""
            it = "it" if len(cause_ranks) == 1 else "they"
            summary += " and went on" if first.event == "oom" else ""
            summary += f"; {w.text(then=then, besides=cause_ranks)}, a call {it} never issued"
        elif role == "symptom":
            why = next((f.why for f in group if not f.cause), "") or "after an earlier failure elsewhere"
            summary += f": {why}"
        seqs = [(k, rs) for k, rs in w.where.items()]
        seq = seqs[0][0][1] if len(seqs) == 1 else None
        op = seqs[0][0][2] if len(seqs) == 1 else None
        evidence = [_where(f.e) + (f"  ({f.why})" if not f.cause else "") for f in group[:4]]
        evidence += [_where(w.lines[r]) for r in waiters[:3] if r in w.lines]
        out.append(Finding(kind=kind, ranks=tuple(cause_ranks if role == "cause" else ranks), summary=summary,
                           evidence=tuple(evidence), waiting_ranks=tuple(waiters) if role == "cause" else (),
                           role=role, count=len(group), seq=seq, expected_op=op,
                           details={"source": "log", "event": first.event, "waiting_ranks": waiters,
                                    "confidence": "high" if waiters and role == "cause" else "medium"}))
    return out


def silent_findings(w: Waiting, known: set[int], seen: set[int], fs: list[Failure], have_calls: bool) -> list[Finding]:
    """Waiters that name no collective position (a hang detector, a watchdog line that lost its SeqNum): the
    known ranks that did not report waiting are the suspects, named when their own logs are in the input."""
    if not w.ranks or have_calls:
        return []
    silent = sorted(known - w.ranks - {f.rank for f in fs})
    if not silent:
        return []
    world = len(known)
    if not set(silent) <= seen:
        return []  # a rank whose log is not in the input may be waiting as well
    summary = (f"{w.text()}; {rank_ranges_text(silent)} of the {world} did not: "
               f"{'it is' if len(silent) == 1 else 'they are'} where the others wait")
    return [Finding(kind=LAGGING_RANK, ranks=tuple(silent), summary=summary,
                    evidence=tuple(_where(w.lines[r]) for r in sorted(w.lines)[:4]),
                    waiting_ranks=tuple(sorted(w.ranks)),
                    details={"source": "log", "silent_ranks": silent, "confidence": "medium"})]


def undecided(w: Waiting, known: set[int], seen: set[int]) -> Finding:
    """The waiters, and what evidence would name the rank they wait for."""
    silent = sorted(known - w.ranks)
    summary = w.text()
    if silent:
        absent = [r for r in silent if r not in seen]
        summary += f"; {rank_ranges_text(silent)} logged no timeout"
        if absent:
            summary += f" ({rank_ranges_text(absent)}: no log line at all in the input)"
    waits = "it waits" if len(w.ranks) == 1 else "they wait"
    summary += f". The evidence does not single out the rank {waits} for; {DECIDE}"
    return Finding(kind=LOG_SIGNATURE, ranks=(), summary=summary, waiting_ranks=tuple(sorted(w.ranks)),
                   evidence=tuple(_where(w.lines[r]) for r in sorted(w.lines)[:6]),
                   details={"source": "log", "priority": 35, "undecided": True, "silent_ranks": silent,
                            "confidence": "low"})


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


def _generic(events: list[dict[str, Any]], sigs: dict[str, Signature], has_cause: bool) -> list[Finding]:
    """Every other catalogued line, one finding per signature. These name no culprit: who printed a line is in
    its evidence, not in `ranks` (a printer is a witness, often a waiter)."""
    by_sig: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        sig = sigs.get(e.get("signature") or "")
        if sig is None or sig.severity == "info" or sig.id in _SPECIAL:
            continue
        if _event_of(e, sigs) in FAILURES + ("seen",) or (_event_of(e, sigs) == "timeout" and e.get("rank") is not None):
            continue  # read as rank evidence above
        if sig.kind in (KV_TRANSFER_STRANDED, ORPHANED_PROCESS):
            continue
        by_sig[sig.id].append(e)
    out = []
    for sid, es in sorted(by_sig.items()):
        sig = sigs[sid]
        printers = sorted({e["rank"] for e in es if e.get("rank") is not None})
        fields = [_fields(sig, e["text"]) for e in es]
        summary = f"{sid.replace('_', ' ')} x{len(es)}"
        secs = sorted({f["seconds"] for f in fields if f.get("seconds")})
        if secs:
            summary += f", after {', '.join(secs)} s"
        if printers:
            summary += f" (printed by {rank_ranges_text(printers)})"
        summary += f": {sig.meaning}"
        role = "symptom" if has_cause else "cause"
        details: dict[str, Any] = {"signature": sid, "severity": sig.severity, "printed_by": printers}
        if has_cause:
            details["explained_by"] = "another finding"
        else:
            summary += f" No rank can be named from this line alone; {DECIDE}"
            details["confidence"] = "low"
        out.append(Finding(kind=LOG_SIGNATURE, ranks=(), summary=summary, evidence=tuple(_where(e) for e in es[:4]),
                           count=len(es), role=role, details=details))
    return out


_SPECIAL = (KV_EXPIRED, KV_UNRECOGNIZED, KV_USAGE)


def _log_calls(table: Callable[[str], pa.Table]) -> list[dict[str, Any]]:
    """Collectives rows that came from log lines (few: one per line that gives a position)."""
    t = table("collectives")
    if not t.num_rows:
        return []
    src = t.column("source")
    keep = pc.is_in(src.cast(pa.string()), value_set=pa.array(list(logfacts.SOURCES)))
    t = t.filter(pc.fill_null(keep, False)).select(["rank", "group", "seq", "op", "state", "source", "group_size"])
    return t.to_pylist() if t.num_rows else []


def log_findings(table: Callable[[str], pa.Table], earlier: Sequence[Finding] = (), procs: Processes | None = None,
                 views: list[stacks.RankView] | None = None) -> list[Finding]:
    events = [e for e in rows(table("log_events")) if e.get("signature")]
    if not events:
        return []
    sigs = {s.id: s for s in load_catalogue()}
    procs = procs if procs is not None else Processes(table)
    views = {v.rank: v for v in (views if views is not None else rank_views(table, procs)) if v.rank is not None}
    calls = _log_calls(table)
    seen = {int(e["rank"]) for e in events if e.get("rank") is not None}
    known = seen | set(procs.ranked()) | {int(c["rank"]) for c in calls if c.get("rank") is not None}
    sizes = [s for s in table("processes").column("world_size").to_pylist() if s] if table("processes").num_rows else []
    sizes += [c["group_size"] for c in calls if c.get("group") == logfacts.DEFAULT_PG and c.get("group_size")]
    world = max([max(known) + 1 if known else 0] + sizes)  # ranks count from 0: rank 3 means a world of 4 or more
    known |= set(range(world))
    w = waiting(events, sigs, calls, views)
    fs = failures(events, sigs, w)
    covered = {r for f in earlier if f.kind == RANK_EXITED for r in f.ranks}
    findings = _kv(events, sigs)
    for f in failure_findings(fs, w, covered):
        if f.kind == RANK_EXITED and set(f.ranks) <= covered:
            continue  # the host pass already has these ranks' exit, from the process table
        findings.append(f)
    findings += silent_findings(w, known, seen, fs, bool(calls))
    died_first = any(f.role == "cause" and f.kind in (OOM, RANK_EXITED) for f in findings)
    for f in _startup_race(events, sigs, procs):
        if died_first:  # "Parent process exited" after a worker died: a consequence
            f = replace(f, role="symptom", details={**f.details, "explained_by": "an earlier failure"})
        findings.append(f)
    has_cause = any(f.role == "cause" and f.ranks for f in list(earlier) + findings)
    if w.ranks and not has_cause:
        findings.append(undecided(w, known, seen))
    elif w.ranks and (w.where or w.lines):
        f = undecided(w, known, seen)
        findings.append(replace(f, role="symptom", summary=w.text(), details={**f.details, "explained_by": "another finding"}))
    has_cause = has_cause or any(f.role == "cause" for f in findings)
    return findings + _generic(events, sigs, has_cause)


def log_signatures(ctx: Any) -> list[Finding]:
    """Analysis pass: what log lines say about each rank, judged against every finding before it."""
    if not ctx.table("log_events").num_rows:
        return []
    return log_findings(ctx.table, list(getattr(ctx, "findings", ())), *context_views(ctx))
