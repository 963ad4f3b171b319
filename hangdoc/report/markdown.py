"""The Markdown report, shaped for a GitHub issue comment.

Verdict and explanation first (what a maintainer reads), then the communicator around the first divergence, then
everything else folded into <details>. Capped below GitHub's 65536-character comment limit: sections are filled
item by item and what does not fit is counted in a note, never cut mid-table or mid-code-block.
"""
from __future__ import annotations

import json

from hangdoc.analysis.model import NO_FAULT_FOUND, Diagnosis, Finding, GpuSeries, GroupView, StackClass
from hangdoc.analysis.text import clip, plural
from hangdoc.report.condense import (
    call_classes,
    class_seqs,
    collapse_positions,
    culprits,
    divergence_finding,
    explanation,
    finding_facts,
    identity,
    ordered_groups,
    rank_name,
    ranks_phrase,
    sentence,
    stack_count,
    stack_members,
    verdict_finding,
)
from hangdoc.report.jsonreport import json_ready

LIMIT = 60_000  # GitHub allows 65536 characters per comment; leave room for a line of the user's own
MAX_COLUMNS = 4
HEAD_ROWS = 20
GROUP_ROWS = 12
STACK_ROWS = 6
FINDING_EVIDENCE = 20
LINE_CHARS = 500
DETAILS_CHARS = 3000
GPU_SAMPLES = 12  # last samples per GPU in the table
_RESERVE = 500  # kept free for the truncation notes


def render(d: Diagnosis, limit: int = LIMIT) -> str:
    doc = _Doc(limit)
    doc.head(_head(d))
    main = verdict_finding(d)
    if main is not None and main.evidence:
        doc.details(f"Evidence ({plural(len(main.evidence), 'line')})", "```text\n",
                    [_line(e) + "\n" for e in main.evidence], "```\n", share=0.2)
    if d.stacks:
        doc.details(f"Stacks ({stack_count(d)})", "",
                    [_stack(d, c) for c in d.stacks], "", share=0.2)
    if d.findings:
        doc.details(f"Findings ({len(d.findings)})", "", [_finding(d, i, f) for i, f in enumerate(d.findings, 1)], "",
                    share=0.35)
    head_group = _head_group(d)
    views = [v for v in ordered_groups(d) if v is not head_group]
    if views:
        doc.details(f"{'Other communicators' if head_group else 'Communicators'} ({len(views)})", "",
                    [_group(d, v, GROUP_ROWS) for v in views], "", share=0.25)
    if d.gpus:
        doc.details(f"GPU samples ({len(d.gpus)} GPUs)", "| host | GPU | rank | SM busy % | memory bandwidth % |\n"
                    "|---|---:|---:|---|---|\n", [_gpu(g) for g in d.gpus], "", share=0.1)
    if d.environment:
        doc.details("Environment", "| | |\n|---|---|\n",
                    [f"| {_cell(k)} | `{_code(v)}` |\n" for k, v in d.environment.items()], "", share=0.05)
    doc.details("Notes, checks and inputs", "", _footer(d), "", share=0.1)
    return doc.text()


class _Doc:
    """Appends blocks while they fit in `limit` characters and counts what was left out."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.omitted = 0

    def _add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def _room(self) -> int:
        return self.limit - _RESERVE - self.size

    def head(self, text: str) -> None:
        if len(text) > self._room():  # only a pathological summary gets here: cut at a line boundary
            cut = text[: max(self._room(), 0)].rsplit("\n", 1)[0]
            self.omitted += 1
            text = cut + "\n\n"
        self._add(text)

    def details(self, title: str, prefix: str, items: list[str], suffix: str, share: float) -> None:
        """A folded section of whole items, at most `share` of the limit so one long section cannot starve the
        ones after it."""
        opening = f"<details><summary>{_md(title)}</summary>\n\n{prefix}"
        closing = f"{suffix}\n</details>\n\n"
        if len(opening) + len(closing) > self._room():
            self.omitted += max(len(items), 1)
            return
        end = self.size + min(self._room(), int(self.limit * share))
        self._add(opening)
        kept = 0
        for item in items:
            if self.size + len(item) + len(closing) > end:
                break
            self._add(item)
            kept += 1
        self._add(suffix)
        if kept < len(items):
            self.omitted += len(items) - kept
            self._add(f"\n_... {len(items) - kept} more not shown: the report is capped at {self.limit} characters._\n")
        self._add("\n</details>\n\n")

    def text(self) -> str:
        out = "".join(self.parts)
        if self.omitted:
            out += (f"> Report truncated to fit a GitHub comment ({self.limit} characters): {self.omitted} items "
                    "left out. `hangdoc analyze --format json` has all of them.\n")
        return out


def _head(d: Diagnosis) -> str:
    v = d.verdict
    bad = culprits(d)
    if v.kind == NO_FAULT_FOUND:
        title = "## hangdoc: no fault found"
    else:
        who = ", ".join(rank_name(r, d.rank_labels) for r in bad[:4])
        if len(bad) > 4:
            who += f" and {len(bad) - 4} more"
        title = f"## hangdoc: {_md(v.kind)}" + (f" on `{_code(v.group)}`" if v.group else "")
        title += f", {_md(who)}" if who else ""
    out = [title, "", f"**Verdict:** {_md(sentence(v.summary))}", ""]
    more = explanation(d)
    if more:
        out += [_md(more), ""]
    for r in bad[:4]:
        who = identity(r, d)
        if who:
            out += [f"**Culprit:** {_md(rank_name(r, d.rank_labels))}: `{_code(who)}`", ""]
    div = divergence_finding(d)
    if div is not None:
        out.append(_divergence(d, div))
    view = _head_group(d)
    if view is not None:
        out.append(_group(d, view, HEAD_ROWS))
    if d.stacks:
        out.append(_stack_table(d))
    return "\n".join(out).rstrip("\n") + "\n\n"


def _head_group(d: Diagnosis) -> GroupView | None:
    """The communicator shown under the verdict (the verdict's, else the divergence's): shown there only."""
    div = divergence_finding(d)
    group = d.verdict.group or (div.group if div is not None else None)
    return next((g for g in d.groups if g.group == group), None)


def _stack_table(d: Diagnosis) -> str:
    """Where each class of ranks and processes stands, one row each, odd ones first (full stacks below)."""
    lines = ["#### Where each rank and process stands", "", "| who | where it waits | |", "|---|---|---|"]
    for c in d.stacks[:STACK_ROWS]:
        who = _cell(stack_members(c, d.rank_labels))
        where = f"`{_code(c.top[0])}`" if c.top else "-"
        if len(c.top) > 1:
            where += f" <- `{_code(c.top[1])}`"
        if c.branch:
            where += f" via `{_code(c.branch)}`"
        lines.append(f"| {'**' + who + '**' if c.odd else who} | {where} | {_cell(c.what)}"
                     f"{', odd one out' if c.odd else ''} |")
    if len(d.stacks) > STACK_ROWS:
        lines.append(f"| ... {len(d.stacks) - STACK_ROWS} more classes | | |")
    return "\n".join(lines) + "\n"


def _stack(d: Diagnosis, c: StackClass) -> str:
    head = f"**{_md(stack_members(c, d.rank_labels, None))}**: {_md(c.what)}, {_md(c.progress)}"
    head += (", odd one out" if c.odd else "") + (f", via `{_code(c.branch)}`" if c.branch else "")
    frames = [_line(f) for f in c.frames] or ["(no frames)"]
    return "\n".join([head, "", "```text", *frames, "```", ""]) + "\n"


def _divergence(d: Diagnosis, f: Finding) -> str:
    """The ops at the divergence side by side: one column per distinct op, identical peers share a column."""
    bad = set(culprits(d)) | (set(f.ranks) if f.role == "cause" else set())
    classes = call_classes(f.calls, bad)
    shown, hidden = classes[:MAX_COLUMNS], classes[MAX_COLUMNS:]
    where = f" on `{_code(f.group)}`" if f.group else ""
    at = f" at seq {f.seq}" if f.seq is not None else ""
    heads = ["seq"]
    for cls in shown:
        name = _cell(ranks_phrase(cls.ranks, d.rank_labels, max_parts=6))
        heads.append(f"**{name}** (culprit)" if cls.culprit else f"{name} ({len(cls.ranks)})")
    if hidden:
        heads.append(f"... {len(hidden)} more variants")
    lines = [f"### First divergence{where}{at}", "", "| " + " | ".join(heads) + " |",
             "|---:" + "|---" * (len(heads) - 1) + "|"]
    for seq in class_seqs(classes):
        cells = ["?" if seq is None else str(seq)]
        for cls in shown:
            call = cls.at(seq)
            if call is None:
                cells.append("-")
            else:
                op = f"`{_code(call.label())}`"
                cells.append(f"**{op}** {_cell(call.state)}" if cls.culprit else f"{op} {_cell(call.state)}")
        if hidden:
            cells.append(f"{sum(len(c.ranks) for c in hidden)} ranks")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _group(d: Diagnosis, view: GroupView, max_rows: int) -> str:
    """One communicator: members that stand at the same place share a row."""
    desc = f" ({_md(view.desc)})" if view.desc and view.desc != view.group else ""
    rows = collapse_positions(view, culprits(d))
    lines = [f"#### Communicator `{_code(view.group)}`{desc}: {len(view.ranks)} ranks", "",
             "| ranks | last seq | last op | state | calls | done | |", "|---|---:|---|---|---:|---:|---|"]
    for row in rows[:max_rows]:
        ranks = _cell(ranks_phrase(row.ranks, d.rank_labels, max_parts=8))
        flag = "**culprit**" if row.culprit else "differs" if row.differs else ""
        if row.culprit:
            ranks = f"**{ranks}**"
        p = row.position
        if p is None:
            lines.append(f"| {ranks} | - | no trace | - | - | - | {flag} |")
            continue
        seq = "-" if p.last_seq is None else str(p.last_seq)
        op = f"`{_code(p.last_op)}`" if p.last_op else "-"
        lines.append(f"| {ranks} | {seq} | {op} | {_cell(p.state or '-')} | {p.calls} | {p.completed} | {flag} |")
    if len(rows) > max_rows:
        more = rows[max_rows:]
        lines.append(f"| ... {len(more)} more rows ({sum(len(r.ranks) for r in more)} ranks) | | | | | | |")
    return "\n".join(lines) + "\n\n"


def _finding(d: Diagnosis, index: int, f: Finding) -> str:
    tail, facts = finding_facts(f, d.rank_labels, lambda s: f"`{_code(s)}`", _md)
    head = f"**{index}. {_md(f.kind)}**" + (f" x{f.count}" if f.count > 1 else "") + f" ({_md(f.role)})" + tail
    out = [head, ""]
    if facts:
        out += ["; ".join(facts), ""]
    out += [_md(f.summary), ""]
    if f.evidence and f is verdict_finding(d):
        out += ["_Evidence: see above._", ""]
    elif f.evidence:
        lines = [_line(e) for e in f.evidence[:FINDING_EVIDENCE]]
        if len(f.evidence) > FINDING_EVIDENCE:
            lines.append(f"... {len(f.evidence) - FINDING_EVIDENCE} more lines")
        out += ["```text", *lines, "```", ""]
    if f.details:
        out += _details_json(f.details)
    return "\n".join(out) + "\n"


def _details_json(details) -> list[str]:
    """A finding's details as an indented JSON block; the largest keys are left out (and named) rather than the
    block being cut mid-way."""
    data = json_ready(details)
    left: list[str] = []
    while True:
        text = _json(data).replace("```", "'''")
        if len(text) <= DETAILS_CHARS or not data:
            break
        big = max(data, key=lambda k: len(json.dumps(data[k])))
        left.append(big)
        data = {k: v for k, v in data.items() if k != big}
    out = ["```json", text, "```", ""]
    if left:
        out += [f"_Left out here: {_md(', '.join(sorted(left)))} (`--format json` has them)._", ""]
    return out


def _json(value, indent: int = 0) -> str:
    """JSON indented by two, with lists of numbers and short strings on one line ([4, 5, 7], not five lines)."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value:
        flat = json.dumps(value, ensure_ascii=False)
        if all(not isinstance(v, (dict, list)) for v in value) and len(flat) <= 100:
            return flat
        return "[\n" + ",\n".join(f"{inner}{_json(v, indent + 2)}" for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


def _gpu(g: GpuSeries) -> str:
    """One GPU's last samples: '100 100 99' reads as a spin where the picture would show a flat line."""
    def last(values: tuple[float, ...]) -> str:
        shown = ["-" if v != v else f"{v:.0f}" for v in values[-GPU_SAMPLES:]]
        return ("... " if len(values) > GPU_SAMPLES else "") + " ".join(shown)

    rank = "-" if g.rank is None else str(g.rank)
    return f"| {_cell(g.host)} | {g.gpu} | {rank} | {last(g.sm_util)} | {last(g.mem_bw_util)} |\n"


def _footer(d: Diagnosis) -> list[str]:
    items = []
    if d.notes:
        items.append("**Notes**\n\n")
        items += [f"- {_md(_line(n))}\n" for n in d.notes]
        items.append("\n")
    if d.checked:
        items.append("**Checked**\n\n")
        items += [f"- {_md(_line(c))}\n" for c in d.checked]
        items.append("\n")
    items.append(f"**Inputs** ({len(d.inputs)})\n\n")
    items += [f"- `{_code(_line(i))}`\n" for i in sorted(d.inputs)]
    items.append(f"\nhangdoc {_md(d.hangdoc_version)}\n")
    return items


def _md(text: object) -> str:
    """Plain text safe in Markdown prose: no raw HTML."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: object) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def _code(text: object) -> str:
    """Inside `code` spans, which also sit in table cells."""
    return str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ")


def _line(text: object) -> str:
    return clip(str(text).replace("```", "'''").replace("\n", " "), LINE_CHARS)
