"""Reporters: each renders only the Diagnosis, never the bundle, so every format tells the same story."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from hangdoc.analysis.model import Diagnosis
from hangdoc.errors import HangdocError
from hangdoc.report.jsonreport import to_dict

__all__ = ["FORMATS", "render", "render_text", "to_dict"]

FORMATS = ("text", "markdown", "json", "html")
FILE_WIDTH = 120  # text reports written to a file or a pipe: wide enough for op labels side by side


def file_width() -> int:
    """Text written to a file or a pipe: $COLUMNS when set (COLUMNS=80 hangdoc analyze ... | less), else wide."""
    try:
        return max(int(os.environ.get("COLUMNS", "")), 40)
    except ValueError:
        return FILE_WIDTH


def render_text(diagnosis: Diagnosis, fmt: str, width: int | None = None) -> str:
    """The report as a string, plain text for `text` (no ANSI codes, no trailing spaces)."""
    if fmt == "json":
        from hangdoc.report.jsonreport import dumps

        return dumps(diagnosis)
    if fmt == "markdown":
        from hangdoc.report.markdown import render as markdown

        return markdown(diagnosis)
    if fmt == "html":
        from hangdoc.report.html import render as html

        return html(diagnosis)
    if fmt == "text":
        import io

        from rich.console import Console

        from hangdoc.report.terminal import render as terminal

        console = Console(file=io.StringIO(), width=width or file_width(), force_terminal=False, no_color=True,
                          highlight=False, emoji=False)
        terminal(diagnosis, console)
        text = console.file.getvalue()  # type: ignore[attr-defined]
        return "\n".join(line.rstrip() for line in text.split("\n"))
    raise HangdocError(f"unknown report format {fmt!r} (choose one of {', '.join(FORMATS)})")


def render(diagnosis: Diagnosis, fmt: str, output: Path | None) -> None:
    """Write the report to `output`, or to stdout (text in colour when stdout is a terminal)."""
    if fmt not in FORMATS:
        raise HangdocError(f"unknown report format {fmt!r} (choose one of {', '.join(FORMATS)})")
    if output is None and fmt == "text" and sys.stdout.isatty():
        from rich.console import Console

        from hangdoc.report.terminal import render as terminal

        terminal(diagnosis, Console(highlight=False, emoji=False))
        return
    text = render_text(diagnosis, fmt)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HangdocError(f"cannot write report to {output}: {exc.strerror or exc}") from exc
