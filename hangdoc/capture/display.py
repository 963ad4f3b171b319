"""What capture shows while it runs (rich progress on stderr) and the one-screen summary at the end.

The live display is used only on a terminal outside CI; elsewhere each collector prints one plain line,
which reads well in a CI log or a ticket.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from hangdoc.bundle import Bundle

MAX_NOTES_SHOWN = 8


def live_allowed(console: Console) -> bool:
    return console.is_terminal and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


class ConsoleProgress:
    """The orchestrator's Progress on a rich console: a live task list, or plain lines when not live."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = live_allowed(console)
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "ConsoleProgress":
        if self.live:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TextColumn("[dim]{task.fields[status]}"),
                TimeElapsedColumn(), console=self.console, transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, name: str, what: str) -> None:
        if self._progress is not None:
            self._tasks[name] = self._progress.add_task(f"{name}: {what}", total=1, status="")

    def update(self, name: str, text: str) -> None:
        if self._progress is not None and name in self._tasks:
            self._progress.update(self._tasks[name], status=text)

    def finish(self, name: str, ok: bool, text: str) -> None:
        mark = "[green]ok[/]" if ok else "[red]failed[/]"
        if self._progress is not None:
            if name not in self._tasks:
                self.start(name, "")
            self._progress.update(self._tasks[name], completed=1, status=f"{'' if ok else 'FAILED: '}{text}")
        else:
            self.console.print(f"hangdoc capture: {name}: {mark} {text}", highlight=False)


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out: list[str] = []
    for v in sorted(set(values)):
        if out and v == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


def uncaptured_gpu_holders(gpu_processes: list[dict[str, Any]], captured: set[int]) -> dict[int, list[int]]:
    """pid -> GPU indices, for processes NVML saw holding GPU memory that are not among the captured pids."""
    out: dict[int, list[int]] = {}
    for row in gpu_processes:
        if row.get("pid") is not None and row["pid"] not in captured:
            gpus = out.setdefault(row["pid"], [])
            if row.get("gpu") is not None and row["gpu"] not in gpus:
                gpus.append(row["gpu"])
    return dict(sorted(out.items()))


def _uncaptured_text(holders: dict[int, list[int]], limit: int = 8) -> str:
    shown = list(holders.items())[:limit]
    who = ", ".join(f"{pid} (GPU {_ranges(gpus)})" if gpus else str(pid) for pid, gpus in shown)
    more = f" and {len(holders) - limit} more" if len(holders) > limit else ""
    add = " ".join(f"--pid {pid}" for pid, _ in shown)
    return (f"GPU process(es) {who}{more}: add {add}, or --tree with their launcher (a pid NVML reports "
            "from another PID namespace, e.g. outside this container, cannot be captured from here)")


def summarize(bundle: Bundle) -> list[tuple[str, str]]:
    """(label, text) lines of the capture summary, from the bundle alone."""
    lines: list[tuple[str, str]] = []
    procs = bundle.table("processes").to_pylist()
    roles = Counter(p["role"] for p in procs)
    gone = [p["pid"] for p in procs if p["status"] in ("gone", "zombie")]
    orphans = [p["pid"] for p in procs if p["parent_alive"] is False and p["role"] in ("worker", "engine")]
    text = f"{len(procs)} ({', '.join(f'{n} {r}' for r, n in roles.most_common())})" if procs else "none"
    if gone:
        text += f"; exited or zombie: {gone}"
    if orphans:
        text += f"; orphaned (launcher gone): {orphans}"
    lines.append(("processes", text))
    ranked = [p for p in procs if p["global_rank"] is not None]
    if ranked:
        sources = Counter(p["rank_source"] for p in ranked)
        lines.append(("ranks", f"{_ranges([p['global_rank'] for p in ranked])} "
                      f"(from {', '.join(f'{s} {n}' for s, n in sources.most_common())})"))
    else:
        lines.append(("ranks", "none found (no rank env, title, log prefix or argv)"))
    threads = bundle.table("thread_samples").to_pylist()
    if threads:
        last = max(r["sample"] for r in threads)
        states = Counter(r["state"] for r in threads if r["sample"] == last)
        n = len({(r["pid"], r["tid"]) for r in threads})
        lines.append(("threads", f"{n} threads x {last + 1} samples; last sample: "
                      + ", ".join(f"{s} {c}" for s, c in states.most_common())))
    else:
        lines.append(("threads", "none sampled"))
    lines.append(("kernel stacks", str(bundle.rows("kernel_stacks")) if bundle.rows("kernel_stacks") else "none readable"))
    py = bundle.table("py_frames")
    if py.num_rows:
        lines.append(("python stacks", f"{len(set(zip(py.column('pid').to_pylist(), py.column('tid').to_pylist())))} threads"))
    gpus = bundle.table("gpu_samples").to_pylist()
    if gpus:
        last = max(g["sample"] for g in gpus)
        per = [g for g in gpus if g["sample"] == last]
        sm = [g["sm_util"] for g in per if g["sm_util"] is not None]
        bw = [g["mem_bw_util"] for g in per if g["mem_bw_util"] is not None]
        avg = lambda xs: f"{sum(xs) / len(xs):.0f}%" if xs else "?"  # noqa: E731
        lines.append(("GPUs", f"{len(per)}; SM {avg(sm)}, memory bandwidth {avg(bw)} (mean, last sample)"))
    else:
        lines.append(("GPUs", "none"))
    holders = uncaptured_gpu_holders(bundle.table("gpu_processes").to_pylist(), {p["pid"] for p in procs})
    if holders:
        lines.append(("not captured", _uncaptured_text(holders)))
    if bundle.rows("collectives"):
        lines.append(("collectives", str(bundle.rows("collectives"))))
    events = bundle.table("log_events")
    if events.num_rows:
        kinds = events.column("event").to_pylist() if "event" in events.column_names else [None] * events.num_rows
        sigs = Counter(s for s, e in zip(events.column("signature").to_pylist(), kinds) if e != "seen")
        if sigs:
            lines.append(("log lines", ", ".join(f"{s} x{n}" for s, n in sigs.most_common())))
    failed = [(n, c) for n, c in bundle.manifest.get("collectors", {}).items() if not c.get("ran")]
    for name, c in failed:
        lines.append(("not collected", f"{name}: {c.get('error') or '; '.join(c.get('notes') or [])}"))
    return lines


def print_summary(console: Console, bundle: Bundle, path: Path | None, interrupted: bool = False) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for label, text in summarize(bundle):
        table.add_row(label, text)
    console.print()
    console.print("[bold yellow]capture interrupted[/]: partial bundle" if interrupted else "[bold]capture summary[/]")
    console.print(table)
    notes = bundle.notes
    if notes:
        console.print(f"[bold]notes[/] ({len(notes)}):", highlight=False)
        for note in notes[:MAX_NOTES_SHOWN]:
            console.print(f"  - {note}", highlight=False, soft_wrap=True)
        if len(notes) > MAX_NOTES_SHOWN:
            console.print(f"  ... {len(notes) - MAX_NOTES_SHOWN} more in the bundle's manifest.json", highlight=False)
    if path is not None:
        console.print(f"[bold]bundle[/]: {path}   (next: hangdoc analyze {path})", highlight=False)
