"""The terminal report (rich): verdict first, the diverging ops side by side, then who stands where.

Every cell is a rich Text, never markup, because op labels like '[15, 2]' would otherwise be eaten as tags.
Tables collapse ranks that stand at the same place and are capped, so 1024 ranks fit on a screen.
"""
from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hangdoc.analysis.model import NO_FAULT_FOUND, STACK_DIVERGENCE, Diagnosis, Finding, GroupView
from hangdoc.analysis.text import rank_ranges
from hangdoc.report.condense import (
    call_classes,
    class_seqs,
    collapse_positions,
    culprits,
    divergence_finding,
    identity,
    is_uniform,
    other_causes,
    ordered_groups,
    rank_name,
    ranks_phrase,
    stack_count,
    stack_members,
    swap_findings,
    symptom_lines,
    verdict_finding,
)

MAX_GROUPS = 6  # communicators shown as tables; the rest are counted
MAX_ROWS = 12  # rows per communicator table
MAX_COLUMNS = 4  # op variants side by side
MAX_LINES = 10  # evidence lines, symptom kinds, notes, checks
MAX_CULPRITS = 8
MAX_STACKS = 6  # stack classes shown; the rest are counted

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
    if d.stacks:
        parts.append(_stacks(d))
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
        bad = culprits(d)
        if len(bad) > 1:
            grid.add_row("culprits", Text(ranks_phrase(bad, d.rank_labels), style=CULPRIT))
        known = [r for r in bad if identity(r, d)] if len(bad) > 1 else bad
        for r in known[:MAX_CULPRITS]:  # who each one is: what `py-spy dump --pid` and `kill` need
            who = identity(r, d)
            grid.add_row("culprit" if len(bad) == 1 else "", Text.assemble(
                (rank_name(r, d.rank_labels), CULPRIT), (f": {who}" if who else "", "")))
        if len(known) > MAX_CULPRITS:
            grid.add_row("", Text(f"... {len(known) - MAX_CULPRITS} more", style=CULPRIT))
    if v.group:
        grid.add_row("communicator", Text(v.group))
    grid.add_row("summary", Text(v.summary))
    if v.reason:
        grid.add_row("why", Text(v.reason))
    if not ok:
        grid.add_row("confidence", Text(v.confidence))
    return Panel(grid, title=Text("hangdoc diagnosis", style="bold"), border_style="green" if ok else "red",
                 expand=False)


def _title(text: str) -> Text:
    return Text(text, style="bold")


def _table(title: str) -> Table:
    return Table(title=_title(title), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, collapse_padding=True)


def _divergence(d: Diagnosis, f: Finding) -> Table:
    """One column per distinct op (identical peers share a column), one row per position."""
    bad = set(culprits(d)) | (set(f.ranks) if f.role == "cause" else set())
    classes = call_classes(f.calls, bad)
    shown, hidden = classes[:MAX_COLUMNS], classes[MAX_COLUMNS:]
    where = f" on {f.group}" if f.group else ""
    at = f" at seq {f.seq}" if f.seq is not None else ""
    table = _table(f"First divergence{where}{at} ({f.kind})")
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
    table = _table("Call-count swaps")
    for name in ("ranks", "fewer calls on", "more calls on", "calls"):
        table.add_column(name, justify="right" if name == "calls" else "left")
    for f in swaps[:MAX_ROWS]:
        s = f.swap
        assert s is not None
        table.add_row(Text(ranks_phrase(f.ranks, {}), style=CULPRIT), Text(s.from_group), Text(s.to_group),
                      Text(str(s.calls)))
    if len(swaps) > MAX_ROWS:
        table.add_row(Text(f"... {len(swaps) - MAX_ROWS} more", style=DIM), "", "", "")
    return table


def _stacks(d: Diagnosis) -> Group:
    """Each stack class: who stands there, then the frames it waits in (innermost first)."""
    odd = ", odd ones first" if any(c.odd for c in d.stacks) else ""
    out: list = [_title(f"Stacks ({stack_count(d)}{odd})")]
    for cls in d.stacks[:MAX_STACKS]:
        style = CULPRIT if cls.odd else "bold"
        out.append(_indented(Text.assemble((stack_members(cls, d.rank_labels), style),
                                           (f"  {cls.what}, {cls.progress}", DIM),
                                           ("  (odd one out)" if cls.odd else "", style)), 2))
        frames = list(cls.top) or ["(no frames)"]
        if cls.branch:
            frames.append(f"... {cls.branch}")
        out.extend(_indented(Text(("" if i == 0 else "<- ") + frame), 4) for i, frame in enumerate(frames))
    if len(d.stacks) > MAX_STACKS:
        out.append(_indented(Text(f"... {len(d.stacks) - MAX_STACKS} more classes", style=DIM), 2))
    return Group(*out, Text(""))


def _other_causes(d: Diagnosis, causes: list[Finding]) -> Group:
    out: list = [_title("Other findings")]
    for f in causes[:MAX_ROWS]:
        kind = f.kind if f.count <= 1 else f"{f.kind} x{f.count}"
        where = f" on {f.group}" if f.group else ""
        # a stack divergence is the stack classes above, said again: point there instead
        summary = "the stacks differ (see Stacks above)" if f.kind == STACK_DIVERGENCE and d.stacks else f.summary
        out.append(_indented(Text.assemble((kind, "bold"), f"{where}, {ranks_phrase(f.ranks, d.rank_labels, 6)}: ",
                                           summary), 2))
    if len(causes) > MAX_ROWS:
        out.append(_indented(Text(f"... {len(causes) - MAX_ROWS} more", style=DIM), 2))
    return Group(*out, Text(""))


def _symptoms(d: Diagnosis) -> Group | None:
    lines = symptom_lines(d)
    if not lines:
        return None
    out: list = [_title("Symptoms (explained by the verdict)")]
    for s in lines[:MAX_LINES]:
        out.append(_indented(Text.assemble(
            (f"{s.kind} x{s.count}" if s.count > 1 else s.kind, "bold"),
            f", {ranks_phrase(s.ranks, d.rank_labels, max_parts=6)}", (f": e.g. {s.example}", DIM),
        ), 2))
    if len(lines) > MAX_LINES:
        out.append(_indented(Text(f"... {len(lines) - MAX_LINES} more kinds", style=DIM), 2))
    return Group(*out, Text(""))


def _groups(d: Diagnosis) -> list:
    """Communicators whose members stand at different places as tables; the rest, one line each."""
    views = ordered_groups(d)
    bad = culprits(d)
    tables = [v for v in views if not is_uniform(v) or set(bad) & set(v.ranks)]
    uniform = [v for v in views if v not in tables]
    parts: list = [_group_table(view, bad) for view in tables[:MAX_GROUPS]]
    rest = tables[MAX_GROUPS:]
    if uniform:
        out: list = [_title("Communicators with every member at the same place")]
        for view in uniform[:MAX_LINES]:
            p = view.positions[0] if view.positions else None
            at = (f"seq {p.last_seq} {p.last_op} ({p.state})" if p is not None and p.last_op else "no trace")
            out.append(_indented(Text(f"{view.group}, ranks {rank_ranges(view.ranks)}: {at}"), 2))
        rest += uniform[MAX_LINES:]
        parts.append(Group(*out, Text("")))
    if rest:
        parts.append(Text(f"... {len(rest)} more communicators not shown", style=DIM))
    return parts


def _group_table(view: GroupView, bad: tuple[int, ...]) -> Table:
    """Members at the same place share a row; ranks and ops never wrap (a row per place reads at a glance)."""
    title = view.group if not view.desc or view.desc == view.group else f"{view.group} ({view.desc})"
    table = _table(f"Communicator {title}: {len(view.ranks)} ranks")
    table.add_column("ranks", no_wrap=True)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("op", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    rows = collapse_positions(view, bad)
    for row in rows[:MAX_ROWS]:
        style = CULPRIT if row.culprit else DIFFERS if row.differs else ""
        flag = "culprit" if row.culprit else "differs" if row.differs else ""
        p = row.position
        ranks = Text(ranks_phrase(row.ranks, {}, max_parts=8), style=style)
        if p is None:
            table.add_row(ranks, "-", Text("no trace", style=style), "-", "-", Text(flag, style=style))
            continue
        table.add_row(ranks, Text("-" if p.last_seq is None else str(p.last_seq)),
                      Text(p.last_op or "-", style=style), Text(p.state or "-"), Text(str(p.completed)),
                      Text(flag, style=style))
    if len(rows) > MAX_ROWS:
        more = rows[MAX_ROWS:]
        table.add_row(Text(f"... {len(more)} more rows ({sum(len(r.ranks) for r in more)} ranks)", style=DIM),
                      "", "", "", "", "")
    return table


def _indented(text: Text, by: int) -> Padding:
    """A line whose wrapped continuation keeps the indent (never back at column 0)."""
    return Padding(text, (0, 0, 0, by))


def _lines(title: str, lines) -> Group:
    out: list = [_title(title)]
    for line in list(lines)[:MAX_LINES]:
        out.append(_indented(Text(str(line)), 2))
    if len(lines) > MAX_LINES:
        out.append(_indented(Text(f"... {len(lines) - MAX_LINES} more", style=DIM), 2))
    return Group(*out, Text(""))
