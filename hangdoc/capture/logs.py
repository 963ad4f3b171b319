"""Log lines matching known hang signatures, with context and the rank that wrote them where it shows.

Inputs: files and globs given on the command line, and the targets' stdout/stderr when those are regular
files. Only the tail of a large file is read (the hang is at the end); each file is read in a daemon
thread with a deadline, since a log on a dead network mount can block forever.
"""
from __future__ import annotations

import glob
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from hangdoc.capture import ranks as rk
from hangdoc.capture.base import CollectorOutput
from hangdoc.capture.timeouts import Timeout, run_bounded
from hangdoc.safeio import files_in, open_regular
from hangdoc.schema import table_from_rows
from hangdoc.signatures import Signature, load_catalogue

TAIL_BYTES = 64 << 20
CONTEXT_LINES = 3
KEEP_PER_SIGNATURE = 100  # first and last N matches of one signature in one file; the rest are counted

_RANK = re.compile(r"\[rank\s?(\d+)\]", re.IGNORECASE)
_SGLANG_PREFIX = re.compile(r"\[[^\]\n]*?\s((?:(?:DP|PP|TP|EP)\d+\s?)+)\]")
_ISO_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,6}))?")


@dataclass
class LogScan:
    output: CollectorOutput = field(default_factory=CollectorOutput)
    titles: dict[int, str] = field(default_factory=dict)  # pid -> worker name seen in log prefixes


def read_tail(path: str, max_bytes: int = TAIL_BYTES) -> tuple[str, bool]:
    """The last max_bytes of a file, starting at a line boundary; (text, truncated)."""
    with open_regular(path) as f:  # never a FIFO or a device: those would block or never end
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        f.seek(start)
        data = f.read(size - start)
    if start:
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else b""
    return data.decode("utf-8", "replace"), bool(start)


def parse_time(line: str) -> float | None:
    """Unix time of an ISO-like timestamp in the line (local time), else None."""
    m = _ISO_TIME.search(line)
    if not m:
        return None
    try:
        t = time.mktime(time.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None
    return t + (float(f"0.{m.group(3)}") if m.group(3) else 0.0)


def attribute(
    line: str, pid_ranks: Mapping[int, int], sizes: Mapping[str, int], owner_pid: int | None
) -> tuple[int | None, int | None]:
    """(pid, rank) of the process that wrote a line: '[rank3]', '(Worker_TP2 pid=12)', '[... DP0 TP3]', file owner."""
    pid, rank = owner_pid, None
    titles = rk.log_titles(line)
    if titles:
        pid, name = next(iter(titles.items()))
        rank = pid_ranks.get(pid)
        if rank is None and rk.holds_rank(name):
            rank = rk.global_from_indices(rk.parse_indices(name), sizes)
    m = _RANK.search(line)
    if m:
        rank = int(m.group(1))
    elif rank is None:
        m2 = _SGLANG_PREFIX.search(line)
        if m2:
            rank = rk.global_from_indices(rk.parse_indices(m2.group(1)), sizes)
    if rank is None and pid is not None:
        rank = pid_ranks.get(pid)
    return pid, rank


def scan_text(
    text: str,
    file: str,
    host: str,
    catalogue: Sequence[Signature],
    *,
    pid_ranks: Mapping[int, int] | None = None,
    sizes: Mapping[str, int] | None = None,
    owner_pid: int | None = None,
    line_numbers: bool = True,
) -> tuple[list[dict[str, Any]], list[str]]:
    """log_events rows for every catalogue match in `text` (pure)."""
    pid_ranks, sizes = pid_ranks or {}, sizes or {}
    notes: list[str] = []
    hits: list[tuple[int, Signature]] = []
    for sig in catalogue:
        found: list[int] = []
        line_end = -1
        for m in sig.regex.finditer(text):
            if m.start() <= line_end:
                continue  # one row per line and signature
            found.append(m.start())
            line_end = text.find("\n", m.start())
            line_end = len(text) if line_end < 0 else line_end
        if len(found) > 2 * KEEP_PER_SIGNATURE:
            notes.append(
                f"{file}: {len(found)} lines match {sig.id}; kept the first and last {KEEP_PER_SIGNATURE}"
            )
            found = found[:KEEP_PER_SIGNATURE] + found[-KEEP_PER_SIGNATURE:]
        hits.extend((pos, sig) for pos in found)
    hits.sort(key=lambda h: h[0])
    rows: list[dict[str, Any]] = []
    line_no, counted_to = 1, 0
    for pos, sig in hits:
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line_no += text.count("\n", counted_to, start)
        counted_to = start
        before_start = start
        for _ in range(CONTEXT_LINES):
            if before_start == 0:
                break
            before_start = text.rfind("\n", 0, before_start - 1) + 1
        after_end = end
        for _ in range(CONTEXT_LINES):
            if after_end >= len(text):
                break
            nxt = text.find("\n", after_end + 1)
            after_end = len(text) if nxt < 0 else nxt
        line = text[start:end]
        context = text[before_start:start].splitlines() + text[end + 1 : after_end].splitlines()
        pid, rank = attribute(line, pid_ranks, sizes, owner_pid)
        rows.append(
            {
                "host": host,
                "file": file,
                "line_no": line_no if line_numbers else None,
                "t": parse_time(line),
                "pid": pid,
                "rank": rank,
                "signature": sig.id,
                "severity": sig.severity,
                "text": line,
                "context": context,
            }
        )
    return rows, notes


def expand_inputs(patterns: Iterable[str]) -> tuple[list[str], list[str]]:
    """Files named by paths, globs and directories (a directory means the regular files directly in it)."""
    files: list[str] = []
    notes: list[str] = []
    for pattern in patterns:
        matched = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matched:
            notes.append(f"--logs {pattern}: matches no file")
        for path in matched:
            if os.path.isdir(path):  # its regular files; symlinks out of it skipped (safeio)
                found, skipped = files_in(path, recursive=False)
                files.extend(str(p) for p in found)
                notes.extend(skipped)
            else:
                files.append(path)
    return files, notes


def scan_logs(
    patterns: Sequence[str],
    processes: Sequence[Mapping[str, Any]],
    host: str,
    *,
    catalogue: Sequence[Signature] | None = None,
    max_bytes: int = TAIL_BYTES,
    file_timeout: float = 10.0,
) -> LogScan:
    """Scan the given logs and the targets' stdout/stderr files; processes rows give ranks for attribution."""
    scan = LogScan()
    out = scan.output
    catalogue = tuple(catalogue) if catalogue is not None else load_catalogue()
    files, notes = expand_inputs(patterns)
    out.notes.extend(notes)
    owners: dict[str, set[int]] = {}
    for row in processes:
        for key in ("stdout_path", "stderr_path"):
            if row.get(key):
                owners.setdefault(os.path.realpath(row[key]), set()).add(row["pid"])
                files.append(row[key])
    pid_ranks = {r["pid"]: r["global_rank"] for r in processes if r.get("global_rank") is not None}
    index_sets = [rk.parse_indices(r["title"]) for r in processes if r.get("title")]
    sizes = rk.parallel_sizes(index_sets, [r.get("cmdline") or [] for r in processes])
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in files:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            text, truncated = run_bounded(read_tail, real, max_bytes, timeout=file_timeout, name="hangdoc-log")
        except Timeout:
            out.notes.append(f"{path}: not read, reading did not finish within {file_timeout:g} s")
            continue
        except OSError as exc:
            out.notes.append(f"{path}: not read: {exc.strerror or exc}")
            continue
        if "\0" in text[:4096]:
            out.notes.append(f"{path}: skipped, not a text file")
            continue
        if truncated:
            out.notes.append(f"{path}: larger than {max_bytes >> 20} MB, scanned only its last {max_bytes >> 20} MB (no line numbers)")
        scan.titles.update(rk.log_titles(text))
        owner = owners.get(real)
        file_rows, file_notes = scan_text(
            text, path, host, catalogue, pid_ranks=pid_ranks, sizes=sizes,
            owner_pid=next(iter(owner)) if owner and len(owner) == 1 else None, line_numbers=not truncated,
        )
        rows.extend(file_rows)
        out.notes.extend(file_notes)
    out.tables["log_events"] = table_from_rows("log_events", rows)
    return scan


def collect_logs(patterns: Sequence[str], processes: Sequence[Mapping[str, Any]], host: str) -> CollectorOutput:
    return scan_logs(patterns, processes, host).output
