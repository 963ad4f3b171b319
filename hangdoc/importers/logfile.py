"""Engine and launcher logs (vLLM, SGLang, TensorRT-LLM, torchrun, NCCL) -> log_events rows via the catalogue.

Only lines the signature catalogue knows become events; everything else is read just for who wrote it. Each
line is attributed to a process and a rank from its prefix, the way these projects print them:
`(Worker_DP1_TP2 pid=123) INFO 10-22 17:38:02 [file.py:1] ...` (vLLM, also `(VllmWorker rank=0 pid=1)`),
`[2025-04-03 20:06:34 DP1 TP0] ...` (SGLang), `[01/16/2026-06:20:17] [TRT-LLM] [RANK 0] [E] ...`,
`[rank3]:[E1218 20:27:21.4 ProcessGroupNCCL.cpp:629] ...` (torch), `host:pid:tid [dev] NCCL WARN ...`, journald's
`Aug 25 17:51:32 host vllm[45252]: ...`, mpirun's `[1,5]<stderr>:` and srun's `5: `; lines with no rank of their
own take the file's (`rank3.log`, torchrun's `attempt_0/3/stderr.log`). vLLM names become global ranks with
vLLM's layout once every file has been read (TP size = highest TP index + 1). A processes row per named pid
(rank_source "log") lets stacks and GPU rows of the same pid find their rank. py-spy dumps that SGLang's
watchdog writes into its log become py_frames rows.
"""
from __future__ import annotations

import calendar
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hangdoc.bundle import Bundle
from hangdoc.capture import ranks as ranknames
from hangdoc.capture.logs import read_tail
from hangdoc.errors import InputError
from hangdoc.importers import pyspy
from hangdoc.schema import table_from_rows
from hangdoc.signatures import Signature, load_catalogue

NAME = "log"
MAX_BYTES = 512 << 20  # the hang is at the end of a log; beyond this only the tail is read
_SNIFF = 65536
_MAX_TEXT = 2000
_CONTEXT = 3  # preceding lines of the same process kept with an event
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_JOURNALD = re.compile(
    r"^(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+(?P<day>\d+) (?P<time>\d\d:\d\d:\d\d) (?P<host>\S+) "
    r"[\w.@-]+\[(?P<pid>\d+)\]: "
)
_COMPOSE = re.compile(r"^(?P<svc>[\w.-]+)\s+\| ")
_MPI_TAG = re.compile(r"^\[\d+,(?P<rank>\d+)\]<(?:stdout|stderr)>:\s?")
_SRUN = re.compile(r"^\s{0,4}(?P<rank>\d{1,5}): ")
_VLLM_PROC = re.compile(r"\((?P<name>[A-Za-z][\w]*?)(?: rank=(?P<rank>\d+))? pid=(?P<pid>\d+)(?:, ip=[^)]*)?\)")
_VLLM_LEVEL = re.compile(
    r"\b(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<mon>\d\d)-(?P<day>\d\d) (?P<time>\d\d:\d\d:\d\d)(?:\.\d+)? \["
)
_TORCH_RANK = re.compile(r"\[rank(?P<rank>\d+)\]:")
_GLOG = re.compile(r"\[(?P<level>[EWIF])(?P<mon>\d\d)(?P<day>\d\d) (?P<time>\d\d:\d\d:\d\d)")
_TRTLLM = re.compile(
    r"\[(?P<mon>\d\d)/(?P<day>\d\d)/(?P<year>\d{4})-(?P<time>\d\d:\d\d:\d\d)\] \[TRT-LLM\](?: \[RANK (?P<rank>\d+)\])? \[(?P<level>[EWIDV])\]"
)
_TRT_RANK = re.compile(r"\[TRT-LLM\] \[RANK (?P<rank>\d+)\]")
_SGLANG = re.compile(
    r"\[(?P<year>\d{4})-(?P<mon>\d\d)-(?P<day>\d\d) (?P<time>\d\d:\d\d:\d\d)(?P<idx>(?: (?:DP|PP|TP|EP|CP|DCP|PCP)\d+)*)\]"
)
_NCCL = re.compile(r"(?P<host>[\w.-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] NCCL (?P<level>WARN|INFO|TRACE)")
_ISO = re.compile(r"(?P<year>\d{4})-(?P<mon>\d\d)-(?P<day>\d\d)[ T](?P<time>\d\d:\d\d:\d\d)")
_RANK_IN_TEXT = re.compile(r"\[(?:PG ID \d+ PG GUID \S+ )?Rank (?P<rank>\d+)\]")
_FILE_RANK = re.compile(r"(?:^|[^a-z])rank[_\-.]?(\d+)", re.I)
_TORCHRUN_FILE = re.compile(r"attempt_\d+/(\d+)/std(?:out|err)\.log$")
_LEVELS = {"E": "error", "F": "critical", "W": "warning", "I": "info", "D": "debug", "V": "debug", "WARN": "warning"}
_ROLES = {"worker": "worker", "vllmworker": "worker", "vllmworkerprocess": "worker", "rayworkerwrapper": "worker",
          "rayworkerproc": "worker", "scheduler": "worker", "enginecore": "engine", "apiserver": "api"}
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_LOG_HINTS = (_VLLM_PROC, _VLLM_LEVEL, _TRTLLM, _SGLANG, _NCCL, _TORCH_RANK, _JOURNALD)
_STACK_HINT = re.compile(r"^\s*Thread (?:0x[0-9A-Fa-f]+|\d+) \((?:idle|active)", re.M)


@dataclass
class LineInfo:
    """Who wrote a line and when."""

    host: str | None = None
    pid: int | None = None
    name: str | None = None  # vLLM/SGLang process name: Worker_DP1_TP2, EngineCore_DP0, ...
    indices: dict[str, int] = field(default_factory=dict)
    rank: int | None = None  # an explicit global rank ([rank3]:, [RANK 3], rank=3)
    level: str | None = None
    t: float | None = None


def _clock(year: int, mon: int, day: int, hms: str) -> float | None:
    try:
        h, m, s = (int(x) for x in hms.split(":"))
        return float(calendar.timegm((year, mon, day, h, m, s, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def parse_line(line: str, year: int, srun: bool = False) -> tuple[LineInfo, str]:
    """The line's author and time, and the line with launcher prefixes (journald, compose, mpirun, srun) removed."""
    info = LineInfo()
    m = _JOURNALD.match(line)
    if m:
        info.host, info.pid = m["host"], int(m["pid"])
        info.t = _clock(year, _MONTHS[m["mon"]], int(m["day"]), m["time"])
        line = line[m.end():]
    m = _COMPOSE.match(line)
    if m and "|" not in line[: m.start("svc")]:
        line = line[m.end():]
    m = _MPI_TAG.match(line)
    if m:
        info.rank = int(m["rank"])
        line = line[m.end():]
    elif srun:
        m = _SRUN.match(line)
        if m:
            info.rank = int(m["rank"])
            line = line[m.end():]
    m = _VLLM_PROC.search(line)
    if m and m.start() < 40:
        info.pid = int(m["pid"])
        info.name = m["name"]
        info.indices = ranknames.parse_indices(m["name"])
        if m["rank"] is not None:
            info.rank = int(m["rank"])
    m = _VLLM_LEVEL.search(line)
    if m:
        info.level = m["level"].lower()
        info.t = info.t or _clock(year, int(m["mon"]), int(m["day"]), m["time"])
    m = _TRTLLM.search(line)
    if m:
        info.level = _LEVELS.get(m["level"], info.level)
        info.t = info.t or _clock(int(m["year"]), int(m["mon"]), int(m["day"]), m["time"])
        if m["rank"] is not None:
            info.rank = int(m["rank"])
    m = _TORCH_RANK.search(line)
    if m and m.start() < 20:
        info.rank = int(m["rank"])
        g = _GLOG.search(line, m.end())
        if g:
            info.level = _LEVELS.get(g["level"], info.level)
            info.t = info.t or _clock(year, int(g["mon"]), int(g["day"]), g["time"])
    m = _SGLANG.match(line) or (_SGLANG.search(line) if info.name is None else None)
    if m and m.start() < 40:
        info.t = info.t or _clock(int(m["year"]), int(m["mon"]), int(m["day"]), m["time"])
        if m["idx"]:
            info.indices = info.indices or ranknames.parse_indices(m["idx"])
    m = _NCCL.search(line)
    if m:
        info.host = info.host or m["host"]
        info.pid = info.pid or int(m["pid"])
        info.level = _LEVELS.get(m["level"], info.level)
    if info.t is None:
        m = _ISO.search(line[:64])
        if m:
            info.t = _clock(int(m["year"]), int(m["mon"]), int(m["day"]), m["time"])
    if info.rank is None:
        m = _RANK_IN_TEXT.search(line)
        if m:
            info.rank = int(m["rank"])
    return info, line


def role_of(name: str | None) -> str | None:
    if not name:
        return None
    base = re.split(r"_(?:DP|PP|PCP|TP|DCP|EP)?\d", name, maxsplit=1)[0].split("-")[0].lower()
    return _ROLES.get(base, "other")


def file_rank(path: Path) -> int | None:
    """A rank the file's name gives (`rank3.log`, torchrun's `attempt_0/3/stderr.log`)."""
    m = _TORCHRUN_FILE.search(path.as_posix())
    if m:
        return int(m.group(1))
    m = _FILE_RANK.search(path.name)
    return int(m.group(1)) if m else None


# --- importer protocol ------------------------------------------------------------------------------
def _head(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_SNIFF)
    except OSError:
        return None
    if b"\x00" in raw:
        return None
    return _ANSI.sub("", raw.decode("utf-8", "replace"))


def matches(path: Path) -> bool:
    """A text file whose first 64 KiB show an engine log prefix or a catalogued hang line."""
    head = _head(path)
    if not head:
        return False
    if any(h.search(head) for h in _LOG_HINTS):
        return True
    return _combined(load_catalogue()).search(head) is not None


_COMBINED: dict[int, re.Pattern[str]] = {}


def _combined(catalogue: tuple[Signature, ...]) -> re.Pattern[str]:
    """One alternation of every signature, so most lines cost one regex search."""
    key = id(catalogue)
    if key not in _COMBINED:
        _COMBINED[key] = re.compile("|".join(f"(?:{_strip_groups(s.regex.pattern)})" for s in catalogue))
    return _COMBINED[key]


def _strip_groups(pattern: str) -> str:
    return re.sub(r"\(\?P<\w+>", "(?:", pattern)


@dataclass
class _Raw:
    file: str
    line_no: int | None
    info: LineInfo
    sig: Signature
    fields: dict[str, str]
    text: str
    context: list[str]
    fallback_rank: int | None


def scan_text(
    text: str, *, file: str, host: str | None = None, year: int | None = None, rank: int | None = None,
    catalogue: tuple[Signature, ...] | None = None, index_sets: set[tuple[tuple[str, int], ...]] | None = None,
) -> tuple[list[_Raw], dict[tuple[Any, int], LineInfo]]:
    """Catalogue hits of one log and every process the log names (pid -> what its prefix said). Every
    parallelism index set a worker prefix shows is added to `index_sets` (the TP/PP sizes come from them)."""
    catalogue = catalogue if catalogue is not None else load_catalogue()
    year = year or time.gmtime().tm_year
    combined = _combined(catalogue)
    lines = text.splitlines()
    sample = lines[:200]
    srun = sum(1 for ln in sample if _SRUN.match(ln)) > len(sample) // 2 and len(sample) >= 4
    hits: list[_Raw] = []
    procs: dict[tuple[Any, int], LineInfo] = {}
    recent: dict[Any, list[str]] = {}
    for no, raw in enumerate(lines, 1):
        line = _ANSI.sub("", raw).rstrip("\r")
        info, body = parse_line(line, year, srun)
        info.host = info.host or host
        if info.indices and index_sets is not None and role_of(info.name) != "engine":
            index_sets.add(tuple(sorted(info.indices.items())))
        if info.pid is not None:
            known = procs.setdefault((info.host, info.pid), LineInfo(info.host, info.pid))
            known.name = known.name or info.name
            known.indices = known.indices or info.indices
            known.rank = known.rank if known.rank is not None else info.rank
        who = info.pid if info.pid is not None else info.rank
        if combined.search(body):
            for sig in catalogue:
                m = sig.search(body)
                if m is None:
                    continue
                fields = {k: v for k, v in m.groupdict().items() if v is not None}
                hits.append(_Raw(file, no, info, sig, fields, body[:_MAX_TEXT], list(recent.get(who, [])), rank))
        ctx = recent.setdefault(who, [])
        ctx.append(body[:300])
        if len(ctx) > _CONTEXT:
            del ctx[0]
    return hits, procs


def _resolve(procs: dict[tuple[Any, int], LineInfo], index_sets: set[tuple[tuple[str, int], ...]]
             ) -> tuple[dict[str, int], dict[tuple[Any, int], int | None]]:
    """Global rank of every named process, with sizes taken across every worker prefix seen."""
    sets = [dict(ix) for ix in index_sets] + [p.indices for p in procs.values() if p.indices and role_of(p.name) != "engine"]
    sizes = ranknames.parallel_sizes(sets, [])
    out: dict[tuple[Any, int], int | None] = {}
    for key, p in procs.items():
        if p.rank is not None:
            out[key] = p.rank
        elif p.indices and role_of(p.name) in ("worker", None, "other"):
            out[key] = ranknames.global_from_indices(p.indices, sizes)
        else:
            out[key] = None
    return sizes, out


def _subject_rank(fields: dict[str, str], writer: LineInfo, sizes: dict[str, int]) -> int | None:
    """The rank a line is about when it names another process (catalogue groups `worker_rank` / `worker`)."""
    if fields.get("worker_rank"):
        return int(fields["worker_rank"])
    name = fields.get("worker")
    if not name:
        return None
    indices = ranknames.parse_indices(name)
    if indices:
        return ranknames.global_from_indices(indices, sizes)
    m = re.search(r"(\d+)$", name)
    if not m:
        return None
    per_engine = sizes.get("tp", 1) * sizes.get("pp", 1) * sizes.get("pcp", 1)
    return writer.indices.get("dp", 0) * per_engine + int(m.group(1))


def events_from(hits: list[_Raw], procs: dict[tuple[Any, int], LineInfo],
                index_sets: set[tuple[tuple[str, int], ...]] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(log_events rows, processes rows) from the hits and processes of one or many logs."""
    sizes, ranks = _resolve(procs, index_sets or set())
    events = []
    for h in hits:
        key = (h.info.host, h.info.pid) if h.info.pid is not None else None
        rank = h.info.rank
        if rank is None and key is not None:
            rank = ranks.get(key)
        if rank is None and h.info.indices and role_of(h.info.name) != "engine":
            rank = ranknames.global_from_indices(h.info.indices, sizes)
        if rank is None and key is None:
            rank = h.fallback_rank
        subject = _subject_rank(h.fields, h.info, sizes)
        if subject is not None:
            rank = subject  # "Worker proc VllmWorker-2 died": the event is about that worker, not the engine
        events.append(
            {"host": h.info.host, "file": h.file, "line_no": h.line_no, "t": h.info.t, "pid": h.info.pid, "rank": rank,
             "signature": h.sig.id, "severity": h.sig.severity, "text": h.text, "context": h.context}
        )
    rows = []
    for (host, pid), p in procs.items():
        if p.name is None and ranks.get((host, pid)) is None:
            continue
        ix = p.indices
        rows.append(
            {"host": host, "pid": pid, "title": p.name, "role": role_of(p.name), "global_rank": ranks.get((host, pid)),
             "tp_rank": ix.get("tp"), "dp_rank": ix.get("dp"), "pp_rank": ix.get("pp"), "ep_rank": ix.get("ep"),
             "rank_source": "log" if ranks.get((host, pid)) is not None else None}
        )
    return events, rows


def read(files: list[Path]) -> Bundle:
    bundle = Bundle()
    catalogue = load_catalogue()
    hits: list[_Raw] = []
    procs: dict[tuple[Any, int], LineInfo] = {}
    frames: list[dict[str, Any]] = []
    index_sets: set[tuple[tuple[str, int], ...]] = set()
    for f in files:
        try:
            text, truncated = read_tail(str(f), MAX_BYTES)
            year = time.gmtime(os.stat(f).st_mtime).tm_year
        except OSError as exc:
            raise InputError(f"{f}: unreadable: {exc.strerror or exc}") from None
        if truncated:
            bundle.note(f"{f}: larger than {MAX_BYTES >> 20} MB, read only its last {MAX_BYTES >> 20} MB (no line numbers)")
        file_hits, file_procs = scan_text(text, file=str(f), year=year, rank=file_rank(Path(f)), catalogue=catalogue,
                                          index_sets=index_sets)
        if truncated:
            for h in file_hits:
                h.line_no = None  # type: ignore[assignment]
        hits.extend(file_hits)
        for key, p in file_procs.items():
            have = procs.setdefault(key, p)
            if have is not p:
                have.name = have.name or p.name
                have.indices = have.indices or p.indices
                have.rank = have.rank if have.rank is not None else p.rank
        if _STACK_HINT.search(text):
            frames.extend(pyspy.parse_text(_ANSI.sub("", text))[0])
    events, proc_rows = events_from(hits, procs, index_sets)
    if not events and not frames:
        bundle.note(f"{len(files)} log file{'s' if len(files) != 1 else ''} read; no known hang line in them")
    if events:
        bundle.add("log_events", table_from_rows("log_events", events))
    if proc_rows:
        bundle.add("processes", table_from_rows("processes", proc_rows))
    if frames:
        bundle.add("py_frames", table_from_rows("py_frames", frames))
    return bundle
