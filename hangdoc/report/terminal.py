"""The terminal report (rich): verdict first, the diverging ops side by side, then who stands where.

Every cell is a rich Text, never markup, because op labels like '[15, 2]' would otherwise be eaten as tags.
Tables collapse ranks that stand at the same place and are capped, so 1024 ranks fit on a screen.
"""
from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hangdoc.analysis.model import NO_FAULT_FOUND, Diagnosis, Finding, GroupView
from hangdoc.report.condense import (
    call_classes,
    class_seqs,
    collapse_positions,
    culprits,
    divergence_finding,
    is_uniform,
    other_causes,
    ordered_groups,
    rank_name,
    ranks_phrase,
    swap_findings,
    symptom_lines,
    verdict_finding,
)

MAX_GROUPS = 6  # communicators shown as tables; the rest are counted
MAX_ROWS = 12  # rows per communicator table
MAX_COLUMNS = 4  # op variants side by side
MAX_LINES = 10  # evidence lines, symptom kinds, notes, checks
MAX_CULPRITS = 8

CULPRIT = "bold red"
DIFFERS = "yellow"
DIM = "dim"


def render(d: Diagnosis, console: Console) -> None:
    for part in renderables(d):
        console.print(part)


def renderables(d: Diagnosis) -> list:
    parts: list = [_verdict_panel(d)]
    div = divergence_finding(d)
    if div is not None:
        parts.append(_divergence(d, div))
    swaps = swap_findings(d)
    if swaps:
        parts.append(_swaps(d, swaps))
    main = verdict_finding(d)
    if main is not None and main.evidence:
        parts.append(_lines("Evidence", main.evidence))
    causes = other_causes(d)
    if causes:
        parts.append(_other_causes(d, causes))
    symptoms = _symptoms(d)
    if symptoms is not None:
        parts.append(symptoms)
    parts.extend(_groups(d))
    if d.notes:
        parts.append(_lines("Notes", d.notes))
    if d.checked:
        parts.append(_lines("Checked", d.checked))
    return parts


def _verdict_panel(d: Diagnosis) -> Panel:
    v = d.verdict
    ok = v.kind == NO_FAULT_FOUND
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("verdict", Text(v.kind, style="bold green" if ok else CULPRIT))
    if v.culprit_ranks:
        names = [rank_name(r, d.rank_labels) for r in culprits(d)]
        shown = ", ".join(names[:MAX_CULPRITS])
        if len(names) > MAX_CULPRITS:
            shown += f", ... {len(names) - MAX_CULPRITS} more"
        grid.add_row("culprit", Text(shown, style=CULPRIT))
    if v.group:
        grid.add_row("communicator", Text(v.group))
    grid.add_row("summary", Text(v.summary))
    if v.reason:
        grid.add_row("why", Text(v.reason))
    if not ok:
        grid.add_row("confidence", Text(v.confidence))
    return Panel(grid, title=Text("hangdoc diagnosis", style="bold"), border_style="green" if ok else "red",
                 expand=False)


def _divergence(d: Diagnosis, f: Finding) -> Table:
    """One column per distinct op (identical peers share a column), one row per position."""
    bad = set(culprits(d)) | (set(f.ranks) if f.role == "cause" else set())
    classes = call_classes(f.calls, bad)
    shown, hidden = classes[:MAX_COLUMNS], classes[MAX_COLUMNS:]
    where = f" on {f.group}" if f.group else ""
    at = f" at seq {f.seq}" if f.seq is not None else ""
    table = Table(title=Text(f"First divergence{where}{at} ({f.kind})", style="bold"), box=box.SIMPLE_HEAD,
                  title_justify="left")
    table.add_column("seq", justify="right", style=DIM)
    for cls in shown:
        head = ranks_phrase(cls.ranks, d.rank_labels, max_parts=6)
        tag = "culprit" if cls.culprit else f"{len(cls.ranks)} rank{'s' if len(cls.ranks) != 1 else ''}"
        table.add_column(Text(f"{head}\n{tag}", style=CULPRIT if cls.culprit else "bold"))
    if hidden:
        table.add_column(Text(f"... {len(hidden)} more variants", style=DIM))
    for seq in class_seqs(classes):
        cells: list = [Text("?" if seq is None else str(seq))]
        for cls in shown:
            call = cls.at(seq)
            if call is None:
                cells.append(Text("-", style=DIM))
            else:
                cells.append(Text.assemble((call.label(), CULPRIT if cls.culprit else ""), (f"\n{call.state}", DIM)))
        if hidden:
            cells.append(Text(f"{sum(len(c.ranks) for c in hidden)} ranks", style=DIM))
        table.add_row(*cells)
    return table


def _swaps(d: Diagnosis, swaps: list[Finding]) -> Table:
    table = Table(title=Text("Call-count swaps", style="bold"), box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("ranks", "fewer calls on", "more calls on", "calls"):
        table.add_column(name, justify="right" if name == "calls" else "left")
    for f in swaps[:MAX_ROWS]:
        s = f.swap
        assert s is not None
        table.add_row(Text(ranks_phrase(f.ranks, d.rank_labels), style=CULPRIT), Text(s.from_group),
                      Text(s.to_group), Text(str(s.calls)))
    if len(swaps) > MAX_ROWS:
        table.add_row(Text(f"... {len(swaps) - MAX_ROWS} more", style=DIM), "", "", "")
    return table


def _other_causes(d: Diagnosis, causes: list[Finding]) -> Table:
    table = Table(title=Text("Other findings", style="bold"), box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("kind", "ranks", "group", "summary"):
        table.add_column(name)
    for f in causes[:MAX_ROWS]:
        kind = f.kind if f.count <= 1 else f"{f.kind} x{f.count}"
        table.add_row(Text(kind), Text(ranks_phrase(f.ranks, d.rank_labels, max_parts=6)), Text(f.group or "-"),
                      Text(f.summary))
    if len(causes) > MAX_ROWS:
        table.add_row(Text(f"... {len(causes) - MAX_ROWS} more", style=DIM), "", "", "")
    return table


def _symptoms(d: Diagnosis) -> Group | None:
    lines = symptom_lines(d)
    if not lines:
        return None
    out = [Text("Symptoms (explained by the verdict)", style="bold")]
    for s in lines[:MAX_LINES]:
        out.append(Text.assemble(
            "  ", (f"{s.kind} x{s.count}", "bold"), f"  {ranks_phrase(s.ranks, d.rank_labels, max_parts=6)}",
            (f"  e.g. {s.example}", DIM),
        ))
    if len(lines) > MAX_LINES:
        out.append(Text(f"  ... {len(lines) - MAX_LINES} more kinds", style=DIM))
    return Group(*out, Text(""))


def _groups(d: Diagnosis) -> list:
    views = ordered_groups(d)
    bad = culprits(d)
    shown: list[GroupView] = []
    rest: list[GroupView] = []
    for view in views:
        (shown if len(shown) < MAX_GROUPS else rest).append(view)
    parts: list = [_group_table(d, view, bad) for view in shown]
    if rest:
        uniform = sum(1 for v in rest if is_uniform(v))
        parts.append(Text(f"... {len(rest)} more communicators not shown ({uniform} with every member at the same "
                          "position)", style=DIM))
    return parts


def _group_table(d: Diagnosis, view: GroupView, bad: tuple[int, ...]) -> Table:
    title = view.group if not view.desc or view.desc == view.group else f"{view.group} ({view.desc})"
    table = Table(title=Text(f"Communicator {title}: {len(view.ranks)} ranks", style="bold"), box=box.SIMPLE_HEAD,
                  title_justify="left")
    table.add_column("ranks")
    table.add_column("last seq", justify="right")
    table.add_column("last op")
    table.add_column("state")
    table.add_column("calls", justify="right")
    table.add_column("done", justify="right")
    table.add_column("")
    rows = collapse_positions(view, bad)
    for row in rows[:MAX_ROWS]:
        style = CULPRIT if row.culprit else DIFFERS if row.differs else ""
        flag = "culprit" if row.culprit else "differs" if row.differs else ""
        p = row.position
        ranks = Text(ranks_phrase(row.ranks, d.rank_labels, max_parts=8), style=style)
        if p is None:
            table.add_row(ranks, "-", Text("no trace", style=style), "-", "-", "-", Text(flag, style=style))
            continue
        table.add_row(ranks, Text("-" if p.last_seq is None else str(p.last_seq)),
                      Text(p.last_op or "-", style=style), Text(p.state or "-"), Text(str(p.calls)),
                      Text(str(p.completed)), Text(flag, style=style))
    if len(rows) > MAX_ROWS:
        more = rows[MAX_ROWS:]
        table.add_row(Text(f"... {len(more)} more rows ({sum(len(r.ranks) for r in more)} ranks)", style=DIM),
                      "", "", "", "", "", "")
    return table


def _lines(title: str, lines) -> Group:
    out = [Text(title, style="bold")]
    for line in list(lines)[:MAX_LINES]:
        out.append(Text(f"  {line}"))
    if len(lines) > MAX_LINES:
        out.append(Text(f"  ... {len(lines) - MAX_LINES} more", style=DIM))
    return Group(*out, Text(""))
