"""The analysis pipeline: a list of passes over the bundle's tables, then one verdict over all findings.

A pass is a pure function `Context -> list[Finding]`. To add one, write it in its own module and append it
to PASSES; it sees the bundle tables (`ctx.table(name)`), the findings of the passes before it
(`ctx.findings`) and the shared collective precomputation (`ctx.collectives`). Mark findings that are
explained by another rank's fault `role="symptom"`; the verdict is chosen by verdict.select (see there
for how new kinds are ranked).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hangdoc import __version__
from hangdoc.analysis import verdict as verdict_mod
from hangdoc.analysis.align import mismatch_pass
from hangdoc.analysis.model import (
    ANALYSIS_INCOMPLETE,
    NO_FAULT_FOUND,
    AlignmentWindow,
    Diagnosis,
    Finding,
    GroupView,
    RankPosition,
    Verdict,
    WaitEdge,
)
from hangdoc.analysis.gpu import gpu_signatures
from hangdoc.analysis.host import context_views, has_process_data, host_signatures
from hangdoc.analysis.logs import log_signatures
from hangdoc.analysis.report_data import (
    environment,
    fold_notes,
    gpu_series,
    process_labels,
    rank_processes,
    stack_classes as stack_class_list,
)
from hangdoc.analysis.stacks import stack_classes
from hangdoc.analysis.swaps import swap_pass
from hangdoc.analysis.text import plural
from hangdoc.analysis.view import CollectiveView, Fetch, Scan, build
from hangdoc.analysis.waits import lagging_pass, missing_pass, order_inversion_pass, wait_chain_pass
from hangdoc.bundle import Bundle
from hangdoc.errors import BundleError
from hangdoc.schema import TABLES, empty


@dataclass(frozen=True)
class Context:
    """What a pass sees. Frozen; `with_findings` makes the next pass's context and shares the cache.

    With `scan`, the collectives table stays on disk: the view is built from it batch by batch, and
    `table("collectives")` is the view's digest (the rows the passes that read the table whole need)."""

    tables: Mapping[str, pa.Table]
    findings: tuple[Finding, ...] = ()
    fetch: Fetch | None = field(default=None, repr=False, compare=False)  # collectives rows of DEFERRED columns
    scan: Scan | None = field(default=None, repr=False, compare=False)  # the collectives table in batches
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def table(self, name: str) -> pa.Table:
        """The named table, or an empty one of its schema."""
        if name not in TABLES:
            raise KeyError(name)
        if name == "collectives" and self.scan is not None:
            self.collectives  # noqa: B018  (builds the digest with the view)
            return self._cache["collectives.digest"]
        t = self.tables.get(name)
        return t if t is not None else empty(name)

    @property
    def collectives(self) -> CollectiveView | None:
        """The collectives table precomputed once for every collective pass; None when there are no calls."""
        if "collectives" not in self._cache:
            table = self.tables.get("collectives")
            view = None
            if table is not None and table.num_rows:
                view = build(table, world_size_hint=_world_size(self.table("processes")), fetch=self.fetch,
                             scan=self.scan)
            self._cache["collectives.digest"] = view.digest if view is not None else empty("collectives")
            self._cache["collectives"] = view if view is not None and view.n_rows else None
        return self._cache["collectives"]

    def with_findings(self, more: list[Finding]) -> "Context":
        return replace(self, findings=self.findings + tuple(more))


Pass = Callable[[Context], "list[Finding]"]

# Columns no pass reads in bulk: a bundle may leave them on disk (Bundle.open's `defer`). The collectives stay
# there whole: the view sweeps them a row group at a time (Bundle.scan) and fetches the few rows a finding
# quotes (Bundle.take); the passes that read the table itself get the view's digest (Context.table).
DEFERRED: dict[str, tuple[str, ...]] = {"collectives": tuple(TABLES["collectives"].names)}

PASSES: list[Pass] = [
    mismatch_pass,
    lagging_pass,
    missing_pass,
    swap_pass,
    order_inversion_pass,
    wait_chain_pass,
    stack_classes,
    host_signatures,
    log_signatures,
    gpu_signatures,
]


def _world_size(processes: pa.Table) -> int:
    if not processes.num_rows:
        return 0
    v = pc.max(processes.column("world_size")).as_py()
    return int(v) if v else 0


def run_passes(ctx: Context, passes: list[Pass] | None = None) -> tuple[Context, list[tuple[str, str]]]:
    """Run passes in order; a pass that crashes is returned as (name, error) and the rest still run."""
    failed: list[tuple[str, str]] = []
    for p in PASSES if passes is None else passes:
        try:
            found = p(ctx)
        except BundleError:  # the table swept from disk is unreadable: the input's fault, said in one line
            raise
        except Exception as exc:  # a bug in one pass must not hide what the others found
            failed.append((getattr(p, "__name__", str(p)), f"{type(exc).__name__}: {exc}"))
            continue
        ctx = ctx.with_findings(list(found))
    return ctx, failed


def diagnose(bundle: Bundle) -> Diagnosis:
    ctx = Context(tables=dict(bundle.tables), fetch=lambda cols, rows: bundle.take("collectives", cols, rows),
                  scan=lambda cols: bundle.scan("collectives", cols))
    ctx, failed = run_passes(ctx)
    view = ctx.collectives
    graph = view.waits if view is not None else None
    findings = list(ctx.findings)
    checked = _checked(ctx, view)
    verdict = verdict_mod.select(findings, graph)
    ranked = verdict_mod.rank_findings(findings, graph)
    if failed:
        incomplete = analysis_incomplete(failed)
        verdict = verdict_mod.incomplete(verdict, incomplete)
        ranked = [incomplete] + ranked if verdict.kind == ANALYSIS_INCOMPLETE else ranked + [incomplete]
    elif verdict is None:
        nff = no_fault_found(view)
        verdict = Verdict(kind=NO_FAULT_FOUND, culprit_ranks=(), group=None, summary=nff.summary,
                          reason="no pass found an inconsistency", confidence="medium")
        ranked.append(nff)
    procs = context_views(ctx)[0] if has_process_data(ctx) else None  # traces alone: no Processes to build
    labels = {**(process_labels(procs) if procs is not None else {}), **(view.labels if view is not None else {})}
    return Diagnosis(
        hangdoc_version=__version__,
        inputs=tuple(str(x) for x in bundle.manifest.get("inputs", [])),
        verdict=verdict,
        findings=tuple(ranked),
        groups=group_views(view),
        checked=checked,
        notes=fold_notes(list(bundle.notes) + [f"analysis pass {name} failed: {err}" for name, err in failed]
                         + list(_view_notes(view))),
        rank_labels=labels,
        alignment=alignment_windows(view, verdict),
        wait_for=wait_edges(view),
        gpus=gpu_series(ctx),
        environment=environment(ctx, bundle.manifest),
        stacks=stack_class_list(ctx),
        rank_processes=rank_processes(procs, view),
    )


# --- pieces of the Diagnosis ---------------------------------------------------------------------

def analysis_incomplete(failed: list[tuple[str, str]]) -> Finding:
    """The passes that crashed, as a finding: what they would have read was not analysed, so the verdict
    cannot claim a healthy job."""
    names = [name for name, _ in failed]
    summary = (f"analysis incomplete: the {', '.join(names)} {'pass' if len(names) == 1 else 'passes'} failed "
               f"({', '.join(sorted({err.split(':', 1)[0] for _, err in failed}))}), so what "
               f"{'it' if len(names) == 1 else 'they'} would have found is missing; the error is in the notes: "
               f"report it with this input to get a full diagnosis")
    return Finding(kind=ANALYSIS_INCOMPLETE, ranks=(), summary=summary,
                   evidence=tuple(f"{name}: {err}" for name, err in failed), details={"failed_passes": names})


def no_fault_found(view: CollectiveView | None) -> Finding:
    """What was compared, so 'nothing found' is a statement about evidence, not an absence of it."""
    if view is None:
        return Finding(kind=NO_FAULT_FOUND, ranks=(), summary="no fault found: the input holds no collective calls "
                       "and no other check found anything to report")
    in_flight = np.nonzero(view.pair_front_row >= 0)[0]
    summary = (
        f"no fault found: checked {plural(len(view.comms), 'communicator')}, {plural(len(view.ranks), 'rank')} "
        f"and {plural(view.n_rows, 'call')}; every member of every communicator posted the same calls in the "
        f"same order"
    )
    evidence = []
    if in_flight.size:
        p = int(in_flight[0])
        call = view.call(int(view.pair_front_row[p]))
        ranks_in_flight = len(set(view.pair_rank[in_flight].tolist()))
        summary += (
            f"; {plural(ranks_in_flight, 'rank')} {'is' if ranks_in_flight == 1 else 'are'} in calls their peers also "
            f"posted (e.g. {call.label()} on {view.comms[int(view.pair_comm[p])].id} seq {call.seq}), so a hang "
            f"would be below the collective layer (network, GPU, or a process outside the trace)"
        )
    else:
        summary += "; every call completed"
    for c in view.comms[:20]:
        evidence.append(f"{c.id}: {plural(len(c.members), 'member')}, calls compared by sequence number")
    return Finding(kind=NO_FAULT_FOUND, ranks=(), summary=summary, evidence=tuple(evidence))


def _checked(ctx: Context, view: CollectiveView | None) -> tuple[str, ...]:
    lines = []
    if view is None:
        lines.append("collectives: none in the input")
    else:
        fams: dict[str, int] = {}
        for c in view.comms:
            fams[c.family] = fams.get(c.family, 0) + 1
        fam_text = ", ".join(f"{f} x{n}" for f, n in sorted(fams.items()))
        lines.append(
            f"collectives: {plural(view.n_rows, 'call')} from {plural(len(view.ranks), 'rank')} on "
            f"{plural(len(view.comms), 'communicator')} ({fam_text}), aligned by per-communicator sequence number"
        )
        lines.append("calls in flight compared across the members of each communicator")
        lines.append(f"completed call counts compared per family ({', '.join(sorted(fams))}) against each rank's peers")
        g = view.waits
        lines.append(f"wait-for graph: {plural(len(g.out), 'waiting rank')}, {plural(len(g.waits), 'wait')}")
    rows = [f"{name} {t.num_rows:,}" for name, t in ctx.tables.items() if t is not None and t.num_rows]
    if rows:
        lines.append("tables read (rows): " + ", ".join(rows))
    return tuple(lines)


def _view_notes(view: CollectiveView | None) -> tuple[str, ...]:
    if view is None or not view.dropped_rows:
        return ()
    return (f"{plural(view.dropped_rows, 'collective row')} without a rank or sequence number were not aligned",)


def _id_key(cid: str) -> tuple:
    fam, _, num = cid.partition(":")
    return (fam, int(num) if num.isdigit() else -1, cid)


def group_views(view: CollectiveView | None) -> tuple[GroupView, ...]:
    """Each member's position per communicator: the call it is stuck in, else its last call."""
    if view is None:
        return ()
    show = np.where(view.pair_front_row >= 0, view.pair_front_row, view.pair_last_row)
    calls = view.calls(show.tolist(), labels_only=True)
    pos_of: dict[tuple[int, int], RankPosition] = {}
    for p, call in enumerate(calls):
        pos_of[(int(view.pair_comm[p]), int(view.pair_rank[p]))] = RankPosition(
            rank=int(view.pair_rank[p]),
            last_seq=int(view.pair_maxseq[p]) if view.pair_front_row[p] < 0 else int(view.pair_front[p]),
            last_op=call.label(),
            state=call.state,
            calls=int(view.pair_maxseq[p]),
            completed=int(view.pair_done[p]),
        )
    out = []
    for c in sorted(view.comms, key=lambda c: _id_key(c.id)):
        ranks = sorted(set(c.members) | set(view.pair_rank[view.comm_pairs(c.index)].tolist()))
        positions = tuple(
            pos_of.get((c.index, r)) or RankPosition(rank=r, last_seq=None, last_op=None, state=None, calls=0, completed=0)
            for r in ranks
        )
        out.append(GroupView(group=c.id, desc=_desc(c), family=c.family, ranks=tuple(ranks), positions=positions))
    return tuple(out)


def _desc(c) -> str | None:
    """'recorded as tp:0' when the recorder's name differs from the readable id, plus a telling description."""
    parts = []
    if c.name and c.name != c.id:
        parts.append(f"recorded as {c.name}")
    if c.desc and c.desc not in (c.name, c.id, "undefined"):
        parts.append(c.desc)
    return "; ".join(parts) or None


def wait_edges(view: CollectiveView | None) -> tuple[WaitEdge, ...]:
    if view is None:
        return ()
    edges = {(w.waiter, w.target, view.comms[w.comm].id) for w in view.waits.waits if w.waiter != w.target}
    return tuple(WaitEdge(rank=a, waits_on=b, group=g) for a, b, g in sorted(edges))


def alignment_windows(view: CollectiveView | None, verdict: Verdict, before: int = 4, after: int = 1,
                      limit: int = 6, members: int = 32) -> tuple[AlignmentWindow, ...]:
    """Each member's calls around where its communicator diverged or stopped, the verdict's communicator first.
    A member's window ends at its own call in flight (seq numbers may have drifted apart), else at the
    position its peers are stuck in. Large communicators show the ranks at fault and the first others."""
    if view is None:
        return ()
    anchors: dict[int, int] = {}  # comm -> seq
    named: dict[int, set[int]] = {}  # comm -> ranks at fault there
    for c in view.conflicts:
        anchors.setdefault(c.comm, c.seq or 0)
        named.setdefault(c.comm, set()).update(c.culprits)
    for lag in view.waits.lags:
        anchors.setdefault(lag.comm, lag.seq)
        named.setdefault(lag.comm, set()).add(lag.rank)
    order = sorted(anchors, key=lambda c: (view.comms[c].id != verdict.group, _id_key(view.comms[c].id)))[:limit]
    if not order:
        return ()
    pair_anchor = np.full(view.pair_comm.size, -(1 << 40), np.int64)
    shown: dict[int, tuple[int, ...]] = {}
    for c in order:
        seq = anchors[c]
        comm = view.comms[c]
        ranks = sorted(set(comm.members) | set(view.pair_rank[view.comm_pairs(c)].tolist()))
        if len(ranks) > members:
            keep = sorted(named.get(c, set()))
            ranks = sorted(set(keep) | set([r for r in ranks if r not in keep][: members - len(keep)]))
        shown[c] = tuple(ranks)
        allowed = set(ranks)
        for p in view.comm_pairs(c).tolist():
            if int(view.pair_rank[p]) in allowed:
                own = view.pair_front[p] if view.pair_front_row[p] >= 0 else min(seq, view.pair_maxseq[p] + 1)
                pair_anchor[p] = int(own)
    hits = []
    for a in range(0, view.n_rows, 1 << 20):  # in slices: no full-length temporaries
        anchor = pair_anchor[view.pair[a : a + (1 << 20)]]
        seq = view.seq[a : a + (1 << 20)]
        hits.append(np.flatnonzero((seq >= anchor - before) & (seq <= anchor + after)) + a)
    rows = np.concatenate(hits) if hits else np.zeros(0, np.int64)
    by_comm: dict[int, list[int]] = {}
    for r, c in zip(rows.tolist(), view.pair_comm[view.pair[rows]].tolist()):
        by_comm.setdefault(c, []).append(r)
    out = []
    for c in order:
        calls = sorted(view.calls(by_comm.get(c, [])), key=lambda x: (x.rank, x.seq or 0))
        out.append(AlignmentWindow(group=view.comms[c].id, seq=anchors[c], ranks=shown[c], calls=tuple(calls)))
    return tuple(out)
