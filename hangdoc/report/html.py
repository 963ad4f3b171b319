"""The HTML report: one self-contained file (inline CSS, SVG and a few lines of script; nothing is fetched).

It shows what text cannot: ranks as rows and each communicator's calls around the divergence as columns, ops
coloured by type, the diverging cells marked and the wait-for arrows between ranks; per-family call counts as
bars around the family median (a swap reads as one rank short on one family and long on another); GPU
sparklines. Below the pictures comes the same text as the Markdown report, and the Markdown itself to paste
into an issue. Every string that came from a trace goes through `_e` (HTML escaping), also inside SVG.
"""
from __future__ import annotations

import html
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from hangdoc.analysis.model import (
    NO_FAULT_FOUND,
    AlignmentWindow,
    Diagnosis,
    Finding,
    GpuSeries,
    GroupView,
    OpCall,
    WaitEdge,
)
from hangdoc.report import markdown
from hangdoc.report.condense import (
    call_classes,
    class_seqs,
    collapse_positions,
    culprits,
    divergence_finding,
    explanation,
    finding_facts,
    identity,
    natural_key,
    ordered_groups,
    rank_name,
    ranks_phrase,
    seq_key,
    sentence,
    stack_count,
    stack_members,
    swap_findings,
    verdict_finding,
)

MAX_ROWS = 64  # ranks in a picture; culprits, the verdict's communicator and waiters are kept first
MAX_PANELS = 4  # communicators side by side in the alignment picture
WINDOW = 4  # positions shown either side of a divergence
MAX_EDGES = 96
MAX_FINDINGS = 200
MAX_EVIDENCE = 40
MAX_GPUS = 64
MAX_GROUP_TABLES = 12
MAX_COLUMNS = 4
MAX_STACKS = 12

LABEL_W, LANE_W, CELL_W, CELL_H, HEAD_H, GAP = 190, 70, 104, 30, 44, 18

# Op families and their colours (colour-blind-safe Tableau 10); the first matching prefix wins.
OP_CLASSES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("all_reduce", ("all_reduce", "allreduce"), "#4e79a7"),
    ("all_gather", ("all_gather", "allgather", "_allgather"), "#59a14f"),
    ("reduce_scatter", ("reduce_scatter", "reducescatter", "_reduce_scatter"), "#f28e2b"),
    ("all_to_all", ("all_to_all", "alltoall"), "#edc948"),
    ("broadcast", ("broadcast",), "#b07aa1"),
    ("send/recv", ("send", "recv", "isend", "irecv", "p2p", "batch_isend"), "#76b7b2"),
    ("reduce/gather/scatter", ("reduce", "gather", "scatter"), "#ff9da7"),
    ("barrier", ("barrier",), "#9c755f"),
)
OTHER_COLOUR = "#bab0ac"


def op_class(op: str | None) -> tuple[str, str]:
    """('all_gather', colour) for 'all_gatherv ...'; ('other', grey) for anything unknown."""
    word = (op or "").strip().lower().split(" ", 1)[0]
    for name, prefixes, colour in OP_CLASSES:
        if word.startswith(prefixes):
            return name, colour
    return "other", OTHER_COLOUR


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --- the alignment picture ---------------------------------------------------------------------------------


@dataclass
class _Panel:
    """One communicator's columns. Each member's calls are placed relative to its own anchor (the call it is
    stuck in, else the position its peers stopped at), so a rank whose sequence numbers drifted ahead (a call
    -count swap) still lines up with its peers at the call that matters: column 0."""

    group: str
    seq: int | None
    members: frozenset[int]
    offsets: list[int]
    anchors: dict[int, int]
    cells: dict[tuple[int, int], OpCall] = field(default_factory=dict)

    @property
    def aligned(self) -> bool:
        """Every member is anchored at the same sequence number: columns are plain positions."""
        return len(set(self.anchors.values())) <= 1

    def majority(self, offset: int) -> str | None:
        """The label most members posted at `offset`, when one label has a strict plurality."""
        counts = Counter(c.label() for (r, o), c in self.cells.items() if o == offset)
        top = counts.most_common(2)
        if not top or (len(top) == 2 and top[0][1] == top[1][1]):
            return None
        return top[0][0]

    def heading(self, offset: int) -> str:
        if self.aligned and self.anchors:
            return f"seq {next(iter(self.anchors.values())) + offset}"
        return "stuck in" if offset == 0 else f"{offset:+d}"


def _fallback_windows(d: Diagnosis) -> list[AlignmentWindow]:
    """Without analysis-provided windows: the findings' side-by-side ops, else each member's last call."""
    views = {g.group: g for g in d.groups}
    windows: dict[str, AlignmentWindow] = {}
    with_calls = sorted((f for f in d.findings if f.calls), key=lambda f: f.role != "cause")
    for f in with_calls:
        group = f.group or "?"
        if group in windows:
            continue
        members = views[group].ranks if group in views else tuple(c.rank for c in f.calls)
        windows[group] = AlignmentWindow(group, f.seq, tuple(members), tuple(f.calls))
    named = {f.group for f in d.findings if f.group} | {g for f in swap_findings(d) for g in (f.swap.from_group,
                                                                                           f.swap.to_group)}
    for view in ordered_groups(d):
        if len(windows) >= MAX_PANELS:
            break
        if view.group in windows or (windows and view.group not in named):
            continue
        calls = tuple(  # each member's last call: enough to show who stopped where
            OpCall(rank=p.rank, seq=p.last_seq, op=p.last_op, state=p.state or "unknown")
            for p in view.positions if p.last_op
        )
        seqs = {c.seq for c in calls}
        if calls and len(seqs) > 1:  # members stand at different places: worth a column each
            windows[view.group] = AlignmentWindow(view.group, min(seqs, key=seq_key), view.ranks, calls)
    return list(windows.values())


def _anchor(calls: list[OpCall], default: int | None) -> int | None:
    """Where a member stands: its first call in flight, else the window's position, else its last call."""
    flying = [c.seq for c in calls if c.seq is not None and c.state in ("issued", "started")]
    if flying:
        return min(flying)
    if default is not None:
        return default
    seqs = [c.seq for c in calls if c.seq is not None]
    return max(seqs) if seqs else None


def _panels(d: Diagnosis) -> list[_Panel]:
    windows = list(d.alignment) or _fallback_windows(d)
    order = {g.group: i for i, g in enumerate(ordered_groups(d))}
    windows.sort(key=lambda w: (w.group != d.verdict.group, order.get(w.group, len(order)), natural_key(w.group)))
    panels = []
    for w in windows[:MAX_PANELS]:
        by_rank: dict[int, list[OpCall]] = defaultdict(list)
        for c in w.calls:
            by_rank[int(c.rank)].append(c)
        members = frozenset(int(r) for r in w.ranks) | set(by_rank)
        anchors = {r: a for r in members if (a := _anchor(by_rank.get(r, []), w.seq)) is not None}
        cells: dict[tuple[int, int], OpCall] = {}
        for r, calls in by_rank.items():
            for c in calls:
                if c.seq is not None and r in anchors and abs(c.seq - anchors[r]) <= WINDOW:
                    cells.setdefault((r, c.seq - anchors[r]), c)
        offsets = sorted({o for _, o in cells} | {0})
        panels.append(_Panel(w.group, w.seq, members, offsets, anchors, cells))
    return panels


def _edges(d: Diagnosis) -> list[WaitEdge]:
    """The wait-for graph: the analysis's own, else each cause's waiting ranks pointing at its ranks."""
    edges = list(d.wait_for)
    if not edges:
        main = verdict_finding(d)
        for f in [main] + [f for f in d.findings if f is not main and f.role == "cause"]:
            if f is None or not f.ranks:
                continue
            target = min(int(r) for r in f.ranks)
            edges += [WaitEdge(int(r), target, f.group) for r in f.waiting_ranks if int(r) not in f.ranks]
    seen: set[tuple[int, int]] = set()
    out = []
    for e in edges:
        key = (int(e.rank), int(e.waits_on))
        if key not in seen and key[0] != key[1]:
            seen.add(key)
            out.append(e)
    return out


def _pick_rows(candidates: Iterable[int], first: Sequence[Iterable[int]], limit: int = MAX_ROWS) -> tuple[list[int], int]:
    """At most `limit` ranks, the ones in `first` (in priority order) kept first; returns (sorted rows, hidden)."""
    pool = sorted({int(r) for r in candidates})
    chosen: list[int] = []
    for group in list(first) + [pool]:
        for r in sorted({int(x) for x in group}):
            if len(chosen) >= limit:
                break
            if r in pool and r not in chosen:
                chosen.append(r)
    return sorted(chosen), len(pool) - len(chosen)


def _row_label(d: Diagnosis, rank: int, bad: set[int], x: float, y: float) -> str:
    label = d.rank_labels.get(rank)
    cls = "rlabel culprit" if rank in bad else "rlabel"
    text = f'<tspan font-weight="bold">rank {rank}</tspan>'
    if label:
        text += f'<tspan class="muted"> {_e(label)}</tspan>'
    return f'<text class="{cls}" x="{x}" y="{y}">{text}</text>'


def _cell(p: _Panel, rank: int, offset: int, bad: set[int], x: float, y: float) -> str:
    call = p.cells.get((rank, offset))
    box = f'x="{x + 2}" y="{y + 2}" width="{CELL_W - 4}" height="{CELL_H - 4}" rx="3"'
    if call is None:
        if not any(o == offset for _, o in p.cells):
            return ""
        seq = p.anchors.get(rank, 0) + offset if rank in p.anchors else None
        return (f'<g class="cell missing" data-rank="{rank}" data-seq="{_e(seq)}"><title>rank {rank}: no call at '
                f'{_e(p.group)} seq {_e(seq)}</title><rect {box}/></g>')
    name, colour = op_class(call.op)
    label = call.label()
    majority = p.majority(offset)
    diverges = majority is not None and label != majority
    in_flight = call.state in ("issued", "started")
    cls = "cell" + (" diverge" if diverges else "") + (" inflight" if in_flight else "")
    attrs = f' data-rank="{rank}" data-seq="{_e(call.seq)}" data-op="{_e(name)}"'
    if diverges:
        attrs += ' data-diverging="1"'
    if rank in bad:
        attrs += f' data-culprit-cell="{rank}"'
    short = call.op if len(call.op) <= 15 else call.op[:14] + "…"
    if p.aligned:
        text = f'<text x="{x + CELL_W / 2}" y="{y + CELL_H / 2 + 4}" text-anchor="middle">{_e(short)}</text>'
    else:  # each member at its own sequence number: say which
        text = (f'<text x="{x + CELL_W / 2}" y="{y + 13}" text-anchor="middle">{_e(short)}</text>'
                f'<text class="cseq" x="{x + CELL_W / 2}" y="{y + CELL_H - 5}" text-anchor="middle">seq {_e(call.seq)}</text>')
    return (f'<g class="{cls}"{attrs}><title>rank {rank} {_e(p.group)} seq {_e(call.seq)}: {_e(label)} '
            f'({_e(call.state)}){" - differs from " + _e(majority) if diverges else ""}</title>'
            f'<rect {box} fill="{colour}"/>' + (f'<rect {box} fill="url(#hatch)"/>' if in_flight else "")
            + text + "</g>")


def alignment_svg(d: Diagnosis) -> str:
    """Ranks as rows, each communicator's calls around its divergence as columns, and in a lane between the
    rank names and the calls, arrows from each waiting rank to the rank it waits for."""
    panels = _panels(d)
    if not panels:
        return ""
    bad = set(culprits(d))
    edges = _edges(d)
    members = set().union(*(p.members for p in panels))
    verdict_members = next((p.members for p in panels if p.group == d.verdict.group), frozenset())
    rows, hidden = _pick_rows(members, [bad, verdict_members, {e.waits_on for e in edges}, {e.rank for e in edges}])
    y_of = {r: HEAD_H + i * CELL_H for i, r in enumerate(rows)}
    shown_edges = [e for e in edges if e.rank in y_of and e.waits_on in y_of][:MAX_EDGES]
    lane = LANE_W if shown_edges else 0
    x = LABEL_W + lane
    parts: list[str] = []
    for p in panels:
        width = len(p.offsets) * CELL_W
        parts.append(f'<g class="panel" data-group="{_e(p.group)}">')
        parts.append(f'<text class="ghead" x="{x + width / 2}" y="14" text-anchor="middle">{_e(p.group)}</text>')
        for j, offset in enumerate(p.offsets):
            cx = x + j * CELL_W
            first = offset == 0
            parts.append(
                f'<text class="shead{" first" if first else ""}" x="{cx + CELL_W / 2}" y="34" text-anchor="middle">'
                f'{_e(p.heading(offset))}{" ◆" if first else ""}</text>'
            )
            if first:
                parts.append(f'<rect class="firstcol" x="{cx}" y="{HEAD_H - 4}" width="{CELL_W}" '
                             f'height="{len(rows) * CELL_H + 8}"/>')
            for r in rows:
                if r in p.members:
                    parts.append(_cell(p, r, offset, bad, cx, y_of[r]))
        parts.append("</g>")
        x += width + GAP
    arrows = []
    right = LABEL_W + lane - 4
    for e in shown_edges:
        y1, y2 = y_of[e.rank] + CELL_H / 2, y_of[e.waits_on] + CELL_H / 2
        bulge = min(12 + 6 * abs(y2 - y1) / CELL_H, lane - 12)
        hot = " hot" if e.waits_on in bad else ""
        arrows.append(
            f'<path class="wait{hot}" data-from="{e.rank}" data-to="{e.waits_on}" d="M{right} {y1} '
            f'C{right - bulge} {y1} {right - bulge} {y2} {right - 2} {y2}" marker-end="url(#arrow)">'
            f'<title>rank {e.rank} waits for rank {e.waits_on}{" on " + _e(e.group) if e.group else ""}</title></path>'
        )
    row_parts = []
    for r in rows:
        y = y_of[r]
        attrs = f' data-rank="{r}"' + (f' data-culprit="{r}"' if r in bad else "")
        row_parts.append(
            f'<g class="row{" culprit" if r in bad else ""}"{attrs}><rect class="rowbg" x="0" y="{y}" '
            f'width="{x - GAP}" height="{CELL_H}"/>{_row_label(d, r, bad, 6, y + CELL_H / 2 + 4)}</g>'
        )
    if arrows:
        parts.append(f'<text class="muted" x="{LABEL_W + lane / 2}" y="34" text-anchor="middle">waits for</text>')
    width = x - GAP + 10
    height = HEAD_H + len(rows) * CELL_H + 10
    svg = (
        f'<svg class="align" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" role="img" aria-label="alignment of collective calls">'
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="2.5" height="6" fill="#ffffff" opacity="0.35"/></pattern>'
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="context-stroke"/></marker></defs>'
        + "".join(row_parts) + "".join(parts) + "".join(arrows) + "</svg>"
    )
    note = f'<p class="muted">{hidden} more ranks not shown.</p>' if hidden else ""
    return svg + note + _legend(panels)


def _legend(panels: list[_Panel]) -> str:
    used = {op_class(c.op)[0] for p in panels for c in p.cells.values()}
    items = [(name, colour) for name, _, colour in OP_CLASSES if name in used]
    if "other" in used:
        items.append(("other", OTHER_COLOUR))
    keys = "".join(f'<span class="key"><i style="background:{c}"></i>{_e(n)}</span>' for n, c in items)
    return (f'<p class="legend">{keys}<span class="key"><i class="k-inflight"></i>in flight (issued/started)</span>'
            '<span class="key"><i class="k-diverge"></i>differs from the majority</span>'
            '<span class="key"><i class="k-missing"></i>no call</span><span class="key">◆ where each rank is stuck</span></p>')


# --- call counts per family ------------------------------------------------------------------------------


def family_counts(d: Diagnosis) -> dict[str, dict[int, int]]:
    """family -> rank -> calls recorded on that family's communicators (from the communicator views)."""
    out: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for g in d.groups:
        fam = g.family or g.group.split(":", 1)[0]
        for p in g.positions:
            out[fam][int(p.rank)] += int(p.calls)
    return {f: dict(v) for f, v in sorted(out.items(), key=lambda kv: natural_key(kv[0]))}


def _partitions(d: Diagnosis) -> dict[str, dict[int, tuple[int, ...]]]:
    """family -> rank -> members of the rank's communicator, for families whose communicators partition ranks."""
    out: dict[str, dict[int, tuple[int, ...]]] = {}
    broken: set[str] = set()
    for g in d.groups:
        fam = g.family or g.group.split(":", 1)[0]
        members = tuple(sorted(int(r) for r in g.ranks))
        if len(members) < 2:
            broken.add(fam)
        for r in members:
            if out.setdefault(fam, {}).setdefault(r, members) != members:
                broken.add(fam)
    return {f: m for f, m in out.items() if f not in broken}


def count_deltas(d: Diagnosis) -> tuple[str | None, dict[str, dict[int, float]]]:
    """Each rank's calls per family minus its peers' median: (peer family, family -> rank -> delta).

    Peers are the members of the rank's communicator of one family (seed 001 compares a rank with its TP peers);
    the family picked is the one that leaves the fewest ranks off their peers' count, the whole family's
    median when none does better. Peers share every step, so a nonzero delta on two families is a swap.
    """
    counts = family_counts(d)
    choices: list[tuple[str | None, dict[int, tuple[int, ...]] | None]] = [(None, None)]
    choices += sorted(_partitions(d).items(), key=lambda kv: -len(next(iter(kv[1].values()))))
    best: tuple[tuple[int, float], str | None, dict[str, dict[int, float]]] | None = None
    for peer_family, peers in choices:
        deltas: dict[str, dict[int, float]] = {}
        for fam, c in counts.items():
            deltas[fam] = {}
            for r, n in c.items():
                group = peers.get(r) if peers is not None else None
                pool = [c[p] for p in group if p in c] if group else list(c.values())
                deltas[fam][r] = n - statistics.median(pool)
        odd = {r for v in deltas.values() for r, x in v.items() if x}
        score = (len(odd), sum(abs(x) for v in deltas.values() for x in v.values()))
        if best is None or score < best[0]:
            best = (score, peer_family, deltas)
    return (best[1], best[2]) if best else (None, {})


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def counts_svg(d: Diagnosis) -> str:
    """Per rank and family, the call count as a bar left or right of its peers' median."""
    counts = {f: c for f, c in family_counts(d).items() if c}
    if not counts:
        return ""
    peer_family, deltas = count_deltas(d)
    bad = set(culprits(d))
    swapped = {int(r) for f in swap_findings(d) for r in f.ranks}
    all_ranks = {r for c in counts.values() for r in c}
    odd = {r for f in deltas for r, v in deltas[f].items() if v}
    rows, hidden = _pick_rows(all_ranks, [bad, swapped, odd])
    col_w, half = 300, 80
    y_of = {r: HEAD_H + i * CELL_H for i, r in enumerate(rows)}
    parts = []
    for r in rows:
        attrs = f' data-rank="{r}"' + (f' data-culprit="{r}"' if r in bad else "") + (' data-swap="1"' if r in swapped else "")
        parts.append(
            f'<g class="row{" culprit" if r in bad else ""}{" swap" if r in swapped else ""}"{attrs}>'
            f'<rect class="rowbg" x="0" y="{y_of[r]}" width="{LABEL_W + col_w * len(counts)}" height="{CELL_H}"/>'
            f'{_row_label(d, r, bad, 6, y_of[r] + CELL_H / 2 + 4)}</g>'
        )
    base = f"vs. {peer_family} peers" if peer_family else "vs. family median"
    for k, (fam, c) in enumerate(counts.items()):
        mid = LABEL_W + k * col_w + half + 10
        scale = max((abs(v) for v in deltas[fam].values()), default=0) or 1
        parts.append(f'<text class="ghead" x="{mid}" y="14" text-anchor="middle">{_e(fam)} calls</text>'
                     f'<text class="shead" x="{mid}" y="34" text-anchor="middle">{_e(base)}</text>'
                     f'<line class="zero" x1="{mid}" x2="{mid}" y1="{HEAD_H - 4}" y2="{HEAD_H + len(rows) * CELL_H}"/>')
        for r in rows:
            if r not in c:
                continue
            delta = deltas[fam][r]
            length = half * abs(delta) / scale
            left = mid - length if delta < 0 else mid
            y = y_of[r]
            sign = "" if not delta else (f" (+{_num(delta)})" if delta > 0 else f" (−{_num(-delta)})")
            cls = "bar" + (" up" if delta > 0 else " down" if delta < 0 else "")
            parts.append(
                f'<g class="{cls}" data-rank="{r}" data-family="{_e(fam)}" data-calls="{c[r]}" '
                f'data-delta="{_num(delta)}"><title>rank {r}: {c[r]} calls on {_e(fam)}{sign}</title>'
                f'<rect x="{left:.1f}" y="{y + 5}" width="{max(length, 1.5):.1f}" height="{CELL_H - 10}"/>'
                f'<text x="{mid + half + 14}" y="{y + CELL_H / 2 + 4}">{c[r]}{sign}</text></g>'
            )
    width = LABEL_W + col_w * len(counts) + 10
    height = HEAD_H + len(rows) * CELL_H + 10
    note = f'<p class="muted">{hidden} more ranks not shown.</p>' if hidden else ""
    return (f'<svg class="counts" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="calls per rank and family">'
            + "".join(parts) + "</svg>" + note)


# --- GPU sparklines --------------------------------------------------------------------------------------


def sparkline(values: Sequence[float], colour: str, width: int = 160, height: int = 26) -> str:
    """A polyline of percent values (0-100); gaps where a value is missing."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if not pts:
        return '<span class="muted">no data</span>'
    n = max(len(values) - 1, 1)
    runs: list[list[str]] = [[]]
    prev = None
    for i, v in pts:
        if prev is not None and i != prev + 1:
            runs.append([])
        prev = i
        x = 2 + (width - 4) * i / n
        y = height - 2 - (height - 4) * max(0.0, min(v, 100.0)) / 100
        runs[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline points="{" ".join(r)}" fill="none" stroke="{colour}" stroke-width="1.6"/>' if len(r) > 1 else
        f'<circle cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="1.8" fill="{colour}"/>'
        for r in runs if r
    )
    return (f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><rect width="{width}" height="{height}" class="sparkbg"/>{lines}</svg>')


def _last(values: Sequence[float]) -> str:
    good = [v for v in values if v is not None and not math.isnan(v)]
    return f"{good[-1]:.0f}%" if good else "-"


def gpus_html(gpus: Sequence[GpuSeries]) -> str:
    rows = []
    for g in sorted(gpus, key=lambda g: (natural_key(g.host), g.gpu))[:MAX_GPUS]:
        rank = "-" if g.rank is None else str(g.rank)
        rows.append(
            f'<tr data-rank="{_e(rank)}"><td>{_e(g.host)}</td><td>{g.gpu}</td><td>{rank}</td>'
            f'<td>{sparkline(g.sm_util, "#e15759")} {_last(g.sm_util)}</td>'
            f'<td>{sparkline(g.mem_bw_util, "#4e79a7")} {_last(g.mem_bw_util)}</td></tr>'
        )
    more = f'<p class="muted">{len(gpus) - MAX_GPUS} more GPUs not shown.</p>' if len(gpus) > MAX_GPUS else ""
    return ('<table class="gpus"><thead><tr><th>host</th><th>GPU</th><th>rank</th><th>SM busy</th>'
            '<th>memory bandwidth</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>" + more +
            '<p class="muted">SM busy near 100% with memory bandwidth near 0% while a rank is inside a collective is '
            'the signature of NCCL kernels spinning on a peer that never arrives.</p>')


# --- the text (what the Markdown says) ---------------------------------------------------------------------


def _ops_table(d: Diagnosis, f: Finding) -> str:
    bad = set(culprits(d)) | (set(f.ranks) if f.role == "cause" else set())
    classes = call_classes(f.calls, bad)
    shown, hidden = classes[:MAX_COLUMNS], classes[MAX_COLUMNS:]
    heads = ["<th>seq</th>"]
    for cls in shown:
        name = _e(ranks_phrase(cls.ranks, d.rank_labels, max_parts=6))
        heads.append(f'<th class="culprit" data-culprit="{cls.ranks[0]}">{name} (culprit)</th>' if cls.culprit
                     else f"<th>{name} ({len(cls.ranks)})</th>")
    if hidden:
        heads.append(f"<th>... {len(hidden)} more variants</th>")
    body = []
    for seq in class_seqs(classes):
        cells = [f'<td class="num">{"?" if seq is None else seq}</td>']
        for cls in shown:
            call = cls.at(seq)
            if call is None:
                cells.append("<td>-</td>")
            else:
                cells.append(f'<td class="{"culprit" if cls.culprit else ""}"><code>{_e(call.label())}</code> '
                             f'{_e(call.state)}</td>')
        if hidden:
            cells.append(f"<td>{sum(len(c.ranks) for c in hidden)} ranks</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    where = f" on <code>{_e(f.group)}</code>" if f.group else ""
    at = f" at seq {f.seq}" if f.seq is not None else ""
    return (f"<h3>First divergence{where}{at}</h3><table><thead><tr>{''.join(heads)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _group_table(d: Diagnosis, view: GroupView) -> str:
    rows = collapse_positions(view, culprits(d))
    desc = f" ({_e(view.desc)})" if view.desc and view.desc != view.group else ""
    body = []
    for row in rows:
        flag = "culprit" if row.culprit else "differs" if row.differs else ""
        who = _e(ranks_phrase(row.ranks, d.rank_labels, max_parts=8))
        attrs = f' class="{flag}"' + (f' data-culprit="{row.ranks[0]}"' if row.culprit else "")
        p = row.position
        if p is None:
            body.append(f"<tr{attrs}><td>{who}</td><td>-</td><td>no trace</td><td>-</td><td>-</td><td>-</td>"
                        f"<td>{flag}</td></tr>")
            continue
        body.append(
            f'<tr{attrs}><td>{who}</td><td class="num">{"-" if p.last_seq is None else p.last_seq}</td>'
            f'<td><code>{_e(p.last_op or "-")}</code></td><td>{_e(p.state or "-")}</td>'
            f'<td class="num">{p.calls}</td><td class="num">{p.completed}</td><td>{flag}</td></tr>'
        )
    return (f"<h4>Communicator <code>{_e(view.group)}</code>{desc}: {len(view.ranks)} ranks</h4>"
            "<table><thead><tr><th>ranks</th><th>last seq</th><th>last op</th><th>state</th><th>calls</th>"
            f"<th>done</th><th></th></tr></thead><tbody>{''.join(body)}</tbody></table>")


def _finding_html(d: Diagnosis, i: int, f: Finding) -> str:
    tail, facts = finding_facts(f, d.rank_labels, lambda s: f"<code>{_e(s)}</code>", _e)
    head = _e(f.kind) + (f" ×{f.count}" if f.count > 1 else "") + f" ({_e(f.role)})" + tail
    out = [f'<li class="finding {_e(f.role)}" data-kind="{_e(f.kind)}"><p><b>{head}</b></p>']
    if facts:
        out.append(f"<p>{'; '.join(facts)}</p>")
    out.append(f"<p>{_e(f.summary)}</p>")
    if f.evidence:
        lines = [_e(e) for e in f.evidence[:MAX_EVIDENCE]]
        if len(f.evidence) > MAX_EVIDENCE:
            lines.append(f"... {len(f.evidence) - MAX_EVIDENCE} more lines (see the JSON report)")
        out.append(f"<pre>{chr(10).join(lines)}</pre>")
    out.append("</li>")
    return "".join(out)


def _stacks_html(d: Diagnosis) -> str:
    """Each stack class: who stands there (the odd ones first, marked) and its whole stack, innermost first."""
    items = []
    for c in d.stacks[:MAX_STACKS]:
        who = _e(stack_members(c, d.rank_labels, None))
        via = f" via <code>{_e(c.branch)}</code>" if c.branch else ""
        items.append(f'<li class="stack{" odd" if c.odd else ""}"><p><b>{who}</b>: {_e(c.what)}, {_e(c.progress)}'
                     f'{" (odd one out)" if c.odd else ""}{via}</p><pre>{_e(chr(10).join(c.frames))}</pre></li>')
    more = (f'<p class="muted">{len(d.stacks) - MAX_STACKS} more classes: see the JSON report.</p>'
            if len(d.stacks) > MAX_STACKS else "")
    return (f'<details open id="stacks"><summary>Stacks ({stack_count(d)})</summary>'
            f'<ol class="stacks">{"".join(items)}</ol>{more}</details>')


def _text_sections(d: Diagnosis) -> str:
    out = []
    div = divergence_finding(d)
    if div is not None:
        out.append(_ops_table(d, div))
    if d.stacks:
        out.append(_stacks_html(d))
    if d.findings:
        items = [_finding_html(d, i, f) for i, f in enumerate(d.findings[:MAX_FINDINGS], 1)]
        more = (f'<p class="muted">{len(d.findings) - MAX_FINDINGS} more findings: see the JSON report.</p>'
                if len(d.findings) > MAX_FINDINGS else "")
        out.append(f'<details open id="findings"><summary>Findings ({len(d.findings)})</summary>'
                   f'<ol class="findings">{"".join(items)}</ol>{more}</details>')
    if d.groups:
        views = ordered_groups(d)
        tables = "".join(_group_table(d, v) for v in views[:MAX_GROUP_TABLES])
        more = (f'<p class="muted">{len(views) - MAX_GROUP_TABLES} more communicators: see the JSON report.</p>'
                if len(views) > MAX_GROUP_TABLES else "")
        out.append(f'<details id="communicators"><summary>Communicators ({len(views)})</summary>{tables}{more}</details>')
    if d.environment:
        rows = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>"
                       for k, v in sorted(d.environment.items()))
        out.append(f'<details id="environment"><summary>Environment</summary><table><tbody>{rows}</tbody>'
                   "</table></details>")
    foot = []
    if d.notes:
        foot.append("<h4>Notes</h4><ul>" + "".join(f"<li>{_e(n)}</li>" for n in d.notes) + "</ul>")
    if d.checked:
        foot.append("<h4>Checked</h4><ul>" + "".join(f"<li>{_e(c)}</li>" for c in d.checked) + "</ul>")
    foot.append(f"<h4>Inputs ({len(d.inputs)})</h4><ul>" +
                "".join(f"<li><code>{_e(i)}</code></li>" for i in sorted(d.inputs)) + "</ul>")
    out.append(f'<details id="notes"><summary>Notes, checks and inputs</summary>{"".join(foot)}</details>')
    return "".join(out)


# --- the page ----------------------------------------------------------------------------------------------


def title(d: Diagnosis) -> str:
    v = d.verdict
    if v.kind == NO_FAULT_FOUND:
        return "hangdoc: no fault found"
    who = ", ".join(rank_name(r, d.rank_labels) for r in culprits(d)[:4])
    return f"hangdoc: {v.kind}" + (f" on {v.group}" if v.group else "") + (f", {who}" if who else "")


def render(d: Diagnosis) -> str:
    v = d.verdict
    ok = v.kind == NO_FAULT_FOUND
    sections = []
    picture = alignment_svg(d)
    if picture:
        sections.append(f'<section id="alignment"><h2>Calls around the divergence</h2><p class="muted">Ranks are '
                        "rows; each communicator's calls are columns in sequence-number order (never wall time), lined "
                        "up at the call each rank is stuck in (◆); where a rank's sequence numbers drifted from its "
                        "peers', each cell shows its own. Arrows point from a waiting rank to the rank it waits for."
                        f'</p><div class="scroll">{picture}</div></section>')
    counts = counts_svg(d)
    if counts:
        sections.append('<section id="counts"><h2>Calls per rank and communicator family</h2><p class="muted">'
                        "Bars show each rank's count against its peers' median: a rank short on one family and "
                        f'long on another has swapped calls between them.</p><div class="scroll">{counts}</div>'
                        "</section>")
    if d.gpus:
        sections.append(f'<section id="gpus"><h2>GPUs</h2>{gpus_html(d.gpus)}</section>')
    culprit_tags = "".join(f'<span class="tag culprit" data-culprit="{r}">{_e(rank_name(r, d.rank_labels))}</span>'
                           + (f'<span class="muted">{_e(identity(r, d))}</span> ' if identity(r, d) else "")
                           for r in culprits(d))
    more = explanation(d)
    md = markdown.render(d)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{_e(title(d))}</title><style>{_CSS}</style></head>
<body data-verdict="{_e(v.kind)}">
<header class="{"ok" if ok else "bad"}"><h1>{_e(title(d))}</h1>
<p class="verdict"><b>Verdict:</b> {_e(sentence(v.summary))}</p>
{f'<p class="culprits">Culprit: {culprit_tags}</p>' if culprit_tags else ""}
{f'<p>{_e(more)}</p>' if more else ""}
</header>
<main>
{"".join(sections)}
<section id="text"><h2>Report</h2>{_text_sections(d)}</section>
<section id="markdown"><details><summary>Markdown for an issue comment ({len(md)} characters)</summary>
<p><button type="button" id="copy-md">Copy</button></p><pre id="markdown-source">{_e(md)}</pre></details></section>
</main>
<footer class="muted">hangdoc {_e(d.hangdoc_version)} · self-contained report, nothing is loaded from the network</footer>
<script>{_JS}</script>
</body></html>
"""


_CSS = """
:root{--bad:#c0392b;--ok:#2e7d32;--muted:#666;--line:#ddd;font-family:system-ui,-apple-system,"Segoe UI",Roboto,
sans-serif;font-size:14px;color:#222;background:#fff}
body{margin:0 auto;max-width:1400px;padding:0 20px 40px}
header{border-left:6px solid var(--bad);padding:6px 16px;margin:16px 0;background:#fdf3f2}
header.ok{border-color:var(--ok);background:#f1f8f1}
h1{font-size:20px;margin:8px 0}h2{font-size:17px;margin:24px 0 6px;border-bottom:1px solid var(--line)}
h3{font-size:15px}h4{font-size:14px;margin:14px 0 4px}
.muted{color:var(--muted)}code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:420px;white-space:pre-wrap;word-break:break-word}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid var(--line);padding:3px 8px;text-align:left;
vertical-align:top}td.num{text-align:right}tr.culprit td,td.culprit,th.culprit{color:var(--bad);font-weight:600}
tr.differs td{background:#fff8e1}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;margin-right:6px}
.tag.culprit{background:var(--bad);color:#fff;font-weight:600}
.scroll{overflow-x:auto}
svg text{font-size:11px;fill:#222}svg .muted{fill:var(--muted)}
svg .ghead{font-weight:700;font-size:12px}svg .shead{fill:var(--muted)}svg .shead.first{fill:var(--bad);
font-weight:700}
svg .rowbg{fill:transparent}svg .row:nth-child(even) .rowbg{fill:#f7f7f7}
svg .row.culprit .rowbg{fill:#fde2df}svg .rlabel.culprit{fill:var(--bad)}
svg .row.hl .rowbg{fill:#fff3b0}
svg .firstcol{fill:#fde2df;opacity:.55}
svg .cell text{fill:#fff;font-size:10.5px;font-weight:600;pointer-events:none}svg .cell text.cseq{font-size:9px;font-weight:400}
svg .cell.diverge rect:first-of-type{stroke:var(--bad);stroke-width:3}
svg .cell.missing rect{fill:none;stroke:#999;stroke-dasharray:3 3}
svg path.wait{fill:none;stroke:#888;stroke-width:1.3;opacity:.8}svg path.wait.hot{stroke:var(--bad)}
svg .bar rect{fill:#bbb}svg .bar.up rect{fill:#e15759}svg .bar.down rect{fill:#4e79a7}
svg .zero{stroke:#999}svg .row.swap .rowbg{fill:#fff3d6}
svg .sparkbg{fill:#f4f4f4}.spark{vertical-align:middle}
.legend .key{display:inline-flex;align-items:center;margin-right:14px}
.legend i{display:inline-block;width:14px;height:12px;margin-right:5px;border-radius:2px}
.legend .k-inflight{background:repeating-linear-gradient(45deg,#4e79a7 0 3px,#9db5d3 3px 6px)}
.legend .k-diverge{border:3px solid var(--bad);width:10px;height:8px}
.legend .k-missing{border:1px dashed #999}
ol.findings li{margin-bottom:10px}li.symptom{color:#444}
footer{margin-top:30px;font-size:12px}
"""

# Hovering a rank highlights it in every picture; the copy button puts the Markdown on the clipboard.
_JS = """
(function(){
  var rows=document.querySelectorAll('svg .row[data-rank]');
  function mark(rank,on){rows.forEach(function(r){if(r.getAttribute('data-rank')===rank){r.classList.toggle('hl',on);}});}
  document.querySelectorAll('svg [data-rank]').forEach(function(el){
    var rank=el.getAttribute('data-rank');
    el.addEventListener('mouseenter',function(){mark(rank,true);});
    el.addEventListener('mouseleave',function(){mark(rank,false);});
  });
  var button=document.getElementById('copy-md');
  if(button){button.addEventListener('click',function(){
    var text=document.getElementById('markdown-source').textContent;
    if(navigator.clipboard){navigator.clipboard.writeText(text).then(function(){button.textContent='Copied';});}
  });}
  var culprits=document.querySelectorAll('svg .row[data-culprit]');
  document.body.setAttribute('data-rendered', String(culprits.length));
})();
"""
