"""Logs on a stuck node, read the way `hangdoc analyze` reads them (hangdoc.importers.logfile).

Inputs: files and globs given on the command line, and the targets' stdout/stderr when those are regular
files. Only the tail of a large file is read (the hang is at the end); each file is read in a daemon
thread with a deadline, since a log on a dead network mount can block forever. Each line is attributed to a
rank by the importer's rules, with two more sources only a live capture has: the rank of the process whose
stdout the file is, and the ranks of the live processes the prefixes name by pid.
"""
from __future__ import annotations

import glob
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from hangdoc.capture import ranks as rk
from hangdoc.capture.base import CollectorOutput
from hangdoc.capture.timeouts import Timeout, run_bounded
from hangdoc.importers import logfile
from hangdoc.importers.logfile import read_tail
from hangdoc.safeio import files_in
from hangdoc.schema import table_from_rows
from hangdoc.signatures import Signature, load_catalogue

__all__ = ["LogScan", "read_tail", "scan_logs", "collect_logs", "expand_inputs", "cap_events"]

TAIL_BYTES = 64 << 20
KEEP_PER_SIGNATURE = 100  # first and last N matches of one signature in one file; the rest are counted


@dataclass
class LogScan:
    output: CollectorOutput = field(default_factory=CollectorOutput)
    titles: dict[int, str] = field(default_factory=dict)  # pid -> worker name seen in log prefixes


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


def cap_events(rows: list[dict[str, Any]], keep: int = KEEP_PER_SIGNATURE) -> tuple[list[dict[str, Any]], list[str]]:
    """The first and last `keep` events of each (file, signature); a note counts what was left out."""
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r.get("file"), r.get("signature"))].append(r)
    out: list[dict[str, Any]] = []
    notes = []
    for (file, sig), rs in groups.items():
        if len(rs) > 2 * keep:
            notes.append(f"{file}: {len(rs)} lines match {sig}; kept the first and last {keep}")
            rs = rs[:keep] + rs[-keep:]
        out.extend(rs)
    return out, notes


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
    pid_ranks = {(host, r["pid"]): r["global_rank"] for r in processes if r.get("global_rank") is not None}
    index_sets = {tuple(sorted(rk.parse_indices(r["title"]).items())) for r in processes if r.get("title")}
    index_sets.discard(())
    scans: list[logfile.Scan] = []
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
        reason = logfile.prose_reason(Path(path), text[:65536])
        if reason:
            out.notes.append(f"{path}: skipped, {reason}: text a person wrote is not read as a log")
            continue
        if truncated:
            out.notes.append(f"{path}: larger than {max_bytes >> 20} MB, scanned only its last {max_bytes >> 20} MB (no line numbers)")
        scan.titles.update(rk.log_titles(text))
        owner = owners.get(real)
        owner_pid = next(iter(owner)) if owner and len(owner) == 1 else None
        one = logfile.scan_text(text, file=path, host=host, catalogue=tuple(catalogue), index_sets=index_sets,
                                rank=logfile.file_rank(Path(path)), owner_pid=owner_pid)
        if truncated:
            for h in one.hits:
                h.line_no = None
        scans.append(one)
    events, _, calls, fact_notes = logfile.facts_from(scans, index_sets, pid_ranks=pid_ranks)
    events, cap_notes = cap_events(events)
    out.notes.extend(fact_notes + cap_notes)
    out.tables["log_events"] = table_from_rows("log_events", events)
    if calls:
        out.tables["collectives"] = table_from_rows("collectives", calls)
    return scan


def collect_logs(patterns: Sequence[str], processes: Sequence[Mapping[str, Any]], host: str) -> CollectorOutput:
    return scan_logs(patterns, processes, host).output
