"""vLLM watchdog stack dumps and other faulthandler text, as py_frames rows.

vLLM's watchdog appends to `VLLM_STACK_DUMP_for_<name>_<pid>.log` a header per dump
(">>> Call stack dump #N at <ctime> due to <reason>", older releases without ">>> " and with a
"=====" trailer) followed by `faulthandler.dump_traceback(all_threads=True)`. Each dump becomes one
sample, so repeated dumps of a frozen worker show it frozen. faulthandler names threads by their
pthread id (hex), not the OS thread id, and gives no thread names.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hangdoc.bundle import Bundle
from hangdoc.errors import InputError
from hangdoc.schema import table_from_rows

NAME = "vllm-watchdog"
SOURCE = "vllm-stack-dump"

_FILE_NAME = re.compile(r"^VLLM_STACK_DUMP_for_(.+)_(\d+)\.log$")
_DUMP_HEADER = re.compile(r"^(?:>>> )?Call stack dump #(\d+)\b")
_THREAD = re.compile(r"^(Current thread|Thread|Stack) ?(0x[0-9a-fA-F]+)?(?: \[(.*?)\])? ?\(most recent call first\):\s*$")
_FRAME = re.compile(r'^\s+File "(.*)", line (\d+|\?\?\?) in (.*?)\s*$')


def parse_faulthandler(
    text: str, *, host: str | None = None, pid: int | None = None, source: str = SOURCE
) -> list[dict[str, Any]]:
    """Rows from faulthandler text; each "Call stack dump #N" block is sample N-1 (one block: sample 0)."""
    rows: list[dict[str, Any]] = []
    sample = 0
    tid: int | None = None
    name: str | None = None
    depth = 0
    in_thread = False
    for line in text.splitlines():
        m = _DUMP_HEADER.match(line)
        if m:
            sample = int(m.group(1)) - 1
            in_thread = False
            continue
        m = _THREAD.match(line)
        if m:
            tid = int(m.group(2), 16) if m.group(2) else None
            name = m.group(3)
            depth = 0
            in_thread = True
            continue
        if not in_thread:
            continue
        m = _FRAME.match(line)
        if m:
            lineno = m.group(2)
            rows.append({
                "host": host, "pid": pid, "tid": tid, "thread_name": name, "sample": sample, "depth": depth,
                "function": m.group(3), "file": m.group(1), "line": int(lineno) if lineno.isdigit() else None,
                "native": False, "idle": None, "source": source,
            })
            depth += 1
        elif not line.startswith(" "):
            in_thread = False
    return rows


def pid_of(path: Path) -> int | None:
    m = _FILE_NAME.match(path.name)
    return int(m.group(2)) if m else None


def is_dump_name(path: Path) -> bool:
    return _FILE_NAME.match(path.name) is not None


def matches(path: Path) -> bool:
    if is_dump_name(path):
        return True
    with open(path, "rb") as f:
        head = f.read(8192).decode("utf-8", "replace")
    return "(most recent call first):" in head and any(_FRAME.match(x) for x in head.splitlines())


def read_file(path: Path, *, host: str | None = None) -> list[dict[str, Any]]:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: unreadable: {exc.strerror or exc}") from None
    source = SOURCE if is_dump_name(path) else "faulthandler"
    return parse_faulthandler(text, host=host, pid=pid_of(path), source=source)


def read(files: list[Path]) -> Bundle:
    bundle = Bundle()
    rows: list[dict[str, Any]] = []
    for path in files:
        found = read_file(path)
        if not found:
            bundle.note(f"{path}: no Python stack found in it")
        rows.extend(found)
    bundle.add("py_frames", table_from_rows("py_frames", rows))
    return bundle
