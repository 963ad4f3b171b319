"""py-spy dump output (`--json` and plain text, one or many processes) as py_frames rows.

The live capture and the importer share this parser, so a stack a user pasted from a bug report and
one hangdoc captured itself land in the bundle the same way. Formats follow py-spy 0.3/0.4's dump:
JSON is a list of thread traces, frames innermost first; text is "Process N: cmdline" headers,
"Thread TID (idle|active|active+gil): "name"" lines, then "    function (file:line)" frames.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from hangdoc.bundle import Bundle
from hangdoc.errors import InputError
from hangdoc.schema import table_from_rows

NAME = "py-spy"
SOURCE = "py-spy"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PROCESS = re.compile(r"^\s*Process (\d+): ?(.*)$")
_THREAD = re.compile(r'^\s*Thread (0x[0-9A-Fa-f]+|\d+)(?: \(([^)]*)\))?(?:: "(.*)")?\s*$')
_FRAME = re.compile(r"^\s{2,}(\S.*?) \(([^()]*?)(?::(\d+))?\)\s*$")
_NATIVE_SUFFIXES = (".so", ".c", ".cc", ".cpp", ".cxx", ".h", ".hpp", ".cu", ".cuh")
_RANK_IN_NAME = re.compile(r"(?:rank|RANK)[_\-.]?(\d+)")


def _is_native_file(file: str) -> bool:
    """Text dumps do not flag native frames; their 'file' is a shared object, a C/C++ source or '?'."""
    f = file.strip()
    return f == "?" or f.endswith(_NATIVE_SUFFIXES) or ".so." in f


def _frame_row(
    host: str | None, pid: int | None, tid: int | None, thread_name: str | None, sample: int, depth: int,
    function: str, file: str | None, line: int | None, native: bool, idle: bool | None, source: str,
) -> dict[str, Any]:
    return {
        "host": host, "pid": pid, "tid": tid, "thread_name": thread_name, "sample": sample, "depth": depth,
        "function": function, "file": file, "line": line or None, "native": native, "idle": idle,
        "source": source,
    }


def rows_from_json(
    traces: Iterable[dict[str, Any]], *, host: str | None = None, sample: int = 0, source: str = SOURCE
) -> list[dict[str, Any]]:
    """Rows from py-spy's JSON thread traces (the list `py-spy dump --json` prints)."""
    rows: list[dict[str, Any]] = []
    for trace in traces:
        if not isinstance(trace, dict) or "frames" not in trace:
            continue
        tid = trace.get("os_thread_id")
        if tid is None:
            tid = trace.get("thread_id")
        active = trace.get("active")
        idle = None if active is None else not bool(active)
        for depth, frame in enumerate(trace.get("frames") or []):
            file = frame.get("filename")
            # py-spy sets `module` only on frames it unwound natively (the shared object they live in).
            native = frame.get("module") is not None or file == "?"
            rows.append(
                _frame_row(host, trace.get("pid"), tid, trace.get("thread_name"), sample, depth,
                           str(frame.get("name", "?")), file, frame.get("line"), native, idle, source)
            )
    return rows


def _json_values(text: str) -> list[Any]:
    """Every JSON value in `text`: people concatenate one `py-spy dump --json` per process into a file."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    while True:
        start = min((j for j in (text.find("[", i), text.find("{", i)) if j >= 0), default=-1)
        if start < 0:
            return values
        try:
            value, i = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        values.append(value)


def parse_json_text(text: str, *, host: str | None = None, sample: int = 0) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for value in _json_values(text):
        rows.extend(rows_from_json(value if isinstance(value, list) else [value], host=host, sample=sample))
    return rows


def parse_text(
    text: str, *, host: str | None = None, pid: int | None = None, sample: int = 0
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Rows from the plain-text dump, and each process's command line (pid -> cmdline) from its header.

    `pid` is used for threads printed before any "Process N:" header (a pasted fragment).
    """
    rows: list[dict[str, Any]] = []
    cmdlines: dict[int, str] = {}
    tid: int | None = None
    name: str | None = None
    idle: bool | None = None
    depth = 0
    in_thread = False
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        m = _PROCESS.match(line)
        if m:
            pid = int(m.group(1))
            cmdlines[pid] = m.group(2).strip()
            in_thread = False
            continue
        m = _THREAD.match(line)
        if m:
            raw_tid = m.group(1)
            tid = int(raw_tid, 16) if raw_tid.lower().startswith("0x") else int(raw_tid)
            status = (m.group(2) or "").strip()
            idle = True if status == "idle" else False if status.startswith("active") else None
            name = m.group(3)
            depth = 0
            in_thread = True
            continue
        if not in_thread:
            continue
        m = _FRAME.match(line)
        if m and len(line) - len(line.lstrip()) < 8:  # deeper lines are --locals output
            function, file, lineno = m.group(1), m.group(2), m.group(3)
            rows.append(
                _frame_row(host, pid, tid, name, sample, depth, function, file,
                           int(lineno) if lineno else None, _is_native_file(file), idle, SOURCE)
            )
            depth += 1
        elif line.strip() and not line.startswith(" "):
            in_thread = False  # anything unindented ends the thread's frame list
    return rows, cmdlines


def parse(text: str, *, host: str | None = None, pid: int | None = None, sample: int = 0) -> list[dict[str, Any]]:
    """Rows from either format, sniffed from the content."""
    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{"):
        return parse_json_text(text, host=host, sample=sample)
    return parse_text(text, host=host, pid=pid, sample=sample)[0]


# --- importer protocol ---------------------------------------------------------------------------
def matches(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8192).decode("utf-8", "replace")
    head = _ANSI.sub("", head)
    if head.lstrip().startswith(("[", "{")):
        # py-spy prints a list of thread traces; "owns_gil" is its own key (a Flight Recorder JSON dump,
        # an object, also has "thread_id" and "frames").
        return head.lstrip().startswith("[") and '"owns_gil"' in head
    has_thread = any(_THREAD.match(line) for line in head.splitlines())
    return has_thread and (bool(re.search(r"^\s*Process \d+:", head, re.M)) or bool(re.search(r"\((?:idle|active)", head)))


def _rank_from_name(path: Path) -> int | None:
    m = _RANK_IN_NAME.search(path.name)
    return int(m.group(1)) if m else None


def read(files: list[Path]) -> Bundle:
    """One bundle of every dump: py_frames, plus a processes row per dumped process (cmdline from the text
    header, global rank from a file name like `rank3.txt`, the way bug reports attach them)."""
    bundle = Bundle()
    frames: list[dict[str, Any]] = []
    procs: dict[int, dict[str, Any]] = {}
    for sample_file in files:
        try:
            text = sample_file.read_text(errors="replace")
        except OSError as exc:
            raise InputError(f"{sample_file}: unreadable: {exc.strerror or exc}") from None
        stripped = text.lstrip()
        if stripped.startswith(("[", "{")):
            rows, cmdlines = parse_json_text(text), {}
        else:
            rows, cmdlines = parse_text(text)
        if not rows:
            bundle.note(f"{sample_file}: no py-spy stack found in it")
            continue
        frames.extend(rows)
        rank = _rank_from_name(sample_file)
        pids = {r["pid"] for r in rows if r["pid"] is not None}
        if rank is not None and len(pids) > 1:
            bundle.note(f"{sample_file}: {len(pids)} processes in one file named for rank {rank}; rank not assigned")
            rank = None
        for pid in pids:
            row = procs.setdefault(pid, {"pid": pid})
            if pid in cmdlines:
                row["cmdline"] = cmdlines[pid].split()
                row["title"] = cmdlines[pid]
            if rank is not None:
                row["global_rank"] = rank
                row["rank_source"] = "file"
    bundle.add("py_frames", table_from_rows("py_frames", frames))
    if procs:
        bundle.add("processes", table_from_rows("processes", procs.values()))
    return bundle
