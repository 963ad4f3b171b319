"""Engine, launcher and library logs (PyTorch c10d, NCCL, vLLM, SGLang, TensorRT-LLM, torchrun) -> facts about ranks.

Lines that give a collective's position become collectives rows (hangdoc.importers.logfacts); lines the
signature catalogue knows become log_events rows with the event they tell about their rank; one "seen" row per
rank and file says whose log is in the input. Prose (README, Markdown notes) is skipped with a note. Each
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
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hangdoc.bundle import Bundle
from hangdoc.capture import ranks as ranknames
from hangdoc.errors import InputError
from hangdoc.importers import logfacts, pyspy
from hangdoc.safeio import open_regular
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
_GLOG = re.compile(r"\[(?P<level>[EWIF])(?P<mon>\d\d?)(?P<day>\d\d) (?P<time>\d\d:\d\d:\d\d)")  # c10 logs "E321" for 03-21
_TRTLLM = re.compile(
    r"\[(?P<mon>\d\d)/(?P<day>\d\d)/(?P<year>\d{4})-(?P<time>\d\d:\d\d:\d\d)\] \[TRT-LLM\](?: \[RANK (?P<rank>\d+)\])? \[(?P<level>[EWIDV])\]"
)
_TRT_RANK = re.compile(r"\[TRT-LLM\] \[RANK (?P<rank>\d+)\]")
_SGLANG = re.compile(
    r"\[(?P<year>\d{4})-(?P<mon>\d\d)-(?P<day>\d\d) (?P<time>\d\d:\d\d:\d\d)(?P<idx>(?: (?:DP|PP|TP|EP|CP|DCP|PCP)\d+)*)\]"
)
_NCCL = re.compile(r"(?P<host>[\w.-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] NCCL (?P<level>WARN|INFO|TRACE)")
_ISO = re.compile(r"(?P<year>\d{4})-(?P<mon>\d\d)-(?P<day>\d\d)[ T](?P<time>\d\d:\d\d:\d\d)")
_RANK_IN_TEXT = re.compile(r"\[Rank (?P<rank>\d+)\]")
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
        m = logfacts.PG_PREFIX.search(line)
        if m is not None:
            if m["pg"] == logfacts.DEFAULT_PG:  # a subgroup's prefix names the rank in that group, not the global one
                info.rank = int(m["rank"])
        else:
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
def read_tail(path: str, max_bytes: int) -> tuple[str, bool]:
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


def _head(path: Path) -> str | None:
    try:
        with open_regular(path) as fh:
            raw = fh.read(_SNIFF)
    except OSError:
        return None
    if b"\x00" in raw:
        return None
    return _ANSI.sub("", raw.decode("utf-8", "replace"))


_PROSE_SUFFIXES = (".md", ".markdown", ".rst", ".html", ".htm", ".adoc")
_PROSE_NAMES = re.compile(r"^(?:readme|notes?|source|summary|description|changelog|license)\b", re.I)
_FENCE = re.compile(r"^\s*(?:```|~~~)", re.M)


def prose_reason(path: Path, head: str) -> str | None:
    """Why a file is prose written by a person (a README, notes, a Markdown bug report) rather than machine
    output, or None. Error text quoted in prose is not evidence about any rank."""
    if path.suffix.lower() in _PROSE_SUFFIXES:
        return f"a {path.suffix.lstrip('.')} document"
    if _PROSE_NAMES.match(path.name):
        return "a README or notes file"
    if len(_FENCE.findall(head)) >= 2:
        return "prose with quoted blocks (Markdown fences)"
    return None


def matches(path: Path) -> bool:
    """A text file whose first 64 KiB show an engine log prefix or a catalogued hang line (prose that quotes one
    is claimed too, so that the report can say it was skipped)."""
    head = _head(path)
    if not head:
        return False
    if any(h.search(head) for h in _LOG_HINTS):
        return True
    return _combined(load_catalogue()).search(head) is not None or _FACT_HINT.search(head) is not None


_FACT_HINT = re.compile(r"WorkNCCL\(|CollectiveFingerPrint\(|Not all ranks joining collective|"
                        r"have launched up to operation|finished collective #|Timeout at collective: |"
                        r"Root Cause \(first observed failure\)|NCCL INFO \w+: opCount")
_COMBINED: dict[int, re.Pattern[str]] = {}


def _combined(catalogue: tuple[Signature, ...]) -> re.Pattern[str]:
    """One alternation of every signature, so most lines cost one regex search."""
    key = id(catalogue)
    if key not in _COMBINED:
        _COMBINED[key] = re.compile("|".join(f"(?:{_strip_groups(s.regex.pattern)})" for s in catalogue))
    return _COMBINED[key]


def _strip_groups(pattern: str) -> str:
    return re.sub(r"\(\?P<\w+>", "(?:", pattern)


Who = tuple  # the key a writer's rank resolves from: ("rank", r) / ("pid", host, pid) / ("ix", indices) / ("file", r)


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


@dataclass
class Scan:
    """One log read: catalogue hits, the processes its prefixes name, the facts its lines give, and who wrote it."""

    hits: list[_Raw] = field(default_factory=list)
    procs: dict[tuple[Any, int], LineInfo] = field(default_factory=dict)
    reader: logfacts.Reader | None = None
    writers: dict[Who, tuple[int, str]] = field(default_factory=dict)  # writer -> (first line no, its text)
    writer_info: dict[Who, LineInfo] = field(default_factory=dict)


def _who(info: LineInfo, fallback: int | None) -> Who:
    """The writer's key; a pid or index key carries the file's rank, used when the pid resolves to none."""
    if info.rank is not None:
        return ("rank", info.rank)
    if info.pid is not None:
        return ("pid", info.host, info.pid, fallback)
    if info.indices and role_of(info.name) != "engine":
        return ("ix", tuple(sorted(info.indices.items())), fallback)
    return ("file", fallback)


def scan_text(
    text: str, *, file: str, host: str | None = None, year: int | None = None, rank: int | None = None,
    catalogue: tuple[Signature, ...] | None = None, index_sets: set[tuple[tuple[str, int], ...]] | None = None,
    owner_pid: int | None = None,
) -> Scan:
    """Catalogue hits, facts and writers of one log (pure). Every parallelism index set a worker prefix shows is
    added to `index_sets` (the TP/PP sizes come from them). `owner_pid`: the process whose stdout this is
    (lines with no pid of their own are its)."""
    catalogue = catalogue if catalogue is not None else load_catalogue()
    year = year or time.gmtime().tm_year
    combined = _combined(catalogue)
    lines = text.splitlines()
    sample = lines[:200]
    srun = sum(1 for ln in sample if _SRUN.match(ln)) > len(sample) // 2 and len(sample) >= 4
    scan = Scan(reader=logfacts.Reader(file, host))
    recent: dict[Any, list[str]] = {}
    for no, line in unwrap(lines):
        info, body = parse_line(line, year, srun)
        info.host = info.host or host
        if info.pid is None and owner_pid is not None:
            info.pid = owner_pid
        if info.indices and index_sets is not None and role_of(info.name) != "engine":
            index_sets.add(tuple(sorted(info.indices.items())))
        if info.pid is not None:
            known = scan.procs.setdefault((info.host, info.pid), LineInfo(info.host, info.pid))
            known.name = known.name or info.name
            known.indices = known.indices or info.indices
            known.rank = known.rank if known.rank is not None else info.rank
        who = _who(info, rank)
        if body.strip() and who not in scan.writers and (who[0] != "file" or who[1] is not None):
            scan.writers[who] = (no, body[:300])
            scan.writer_info[who] = info
        scan.reader.feed(no, who, info.t, body)
        ctx_key = info.pid if info.pid is not None else info.rank
        if combined.search(body):
            for sig in catalogue:
                m = sig.search(body)
                if m is None:
                    continue
                fields = {k: v for k, v in m.groupdict().items() if v is not None}
                scan.hits.append(_Raw(file, no, info, sig, fields, body[:_MAX_TEXT], list(recent.get(ctx_key, [])), rank))
        ctx = recent.setdefault(ctx_key, [])
        ctx.append(body[:300])
        if len(ctx) > _CONTEXT:
            del ctx[0]
    scan.reader.finish()
    return scan


_C10D_MARK = re.compile(r"ProcessGroupNCCL|WorkNCCL\(|\[PG(?: ID)? \d+|\[Rank \d+\]")
_OWN_PREFIX = re.compile(r"^\s*(?:\[rank\d+\]:|\[[EWIF]\d{3,4} |\[\d{4}-\d\d-\d\d|\d{4}-\d\d-\d\d|[\w.-]+:\d+:\d+ \[)")
_BARE_PREFIX = re.compile(r"\[(?:PG(?: ID)? \d+[^\]]*)?Rank\s*\d*\]?$|\[PG(?: ID)? \d+[^\]]*$")


def unwrap(lines: list[str], limit: int = 4):
    """(line number, line) with c10d watchdog lines that a terminal or a web page wrapped joined back: a line
    with a c10d mark whose brackets are open, or that ends in its bare `[PG .. Rank N]` prefix, takes the
    lines after it that have no prefix of their own (at most `limit`). A word cut in two is joined back whole
    when that makes the WorkNCCL(...) record readable."""
    i, n = 0, len(lines)
    while i < n:
        line = _ANSI.sub("", lines[i]).rstrip("\r")
        no = i + 1
        i += 1
        if _C10D_MARK.search(line):
            joined = 0
            while i < n and joined < limit and _open(line):
                nxt = _ANSI.sub("", lines[i]).rstrip("\r")
                if not nxt.strip() or _OWN_PREFIX.match(nxt):
                    break
                glued = line + nxt.strip()
                line = glued if logfacts.work_readable(glued) and not logfacts.work_readable(line + " " + nxt.strip()) \
                    else line.rstrip() + " " + nxt.strip()
                i += 1
                joined += 1
        yield no, line


def _open(line: str) -> bool:
    return (line.count("(") > line.count(")") or line.count("[") > line.count("]")
            or bool(_BARE_PREFIX.search(line.rstrip())) or line.rstrip().endswith(("last completed", "NCCL", ",")))


def _resolve(procs: dict[tuple[Any, int], LineInfo], index_sets: set[tuple[tuple[str, int], ...]],
             known: Mapping[tuple[Any, int], int] | None = None) -> tuple[dict[str, int], dict[tuple[Any, int], int | None]]:
    """Global rank of every named process, with sizes taken across every worker prefix seen; `known`: ranks a
    live capture already has for (host, pid)."""
    sets = [dict(ix) for ix in index_sets] + [p.indices for p in procs.values() if p.indices and role_of(p.name) != "engine"]
    sizes = ranknames.parallel_sizes(sets, [])
    out: dict[tuple[Any, int], int | None] = {}
    for key, p in procs.items():
        if p.rank is not None:
            out[key] = p.rank
        elif known and key in known:
            out[key] = known[key]
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


def _rank_of(who: Who, ranks: dict[tuple[Any, int], int | None], sizes: dict[str, int]) -> int | None:
    if who[0] in ("rank", "file"):
        return who[1]
    if who[0] == "pid":
        r = ranks.get((who[1], who[2]))
        return r if r is not None else who[3]
    r = ranknames.global_from_indices(dict(who[1]), sizes)
    return r if r is not None else who[2]


# Of two facts about one call of one rank, the one that says more about where the rank is wins its state.
_STATE_RANK = {"timed_out": 4, "started": 3, "issued": 2, "unknown": 1, "completed": 0}


def _merge_calls(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (rank, group, seq); fields one fact lacks come from another; a position's op, where only
    some ranks' lines name it, from the ranks that do (a PG status line gives the position, not the op)."""
    named = {(r["rank"], r["seq"]): r["group"] for r in rows
             if r.get("source") == logfacts.C10D and r["group"] != logfacts.UNNAMED_PG}
    at_seq: dict[Any, set[str]] = defaultdict(set)  # seq -> the groups other ranks' lines name at it
    for (_, seq), group in named.items():
        at_seq[seq].add(group)
    for row in rows:
        if row["group"] != logfacts.UNNAMED_PG:
            continue
        if (row["rank"], row["seq"]) in named:
            row["group"] = named[(row["rank"], row["seq"])]  # the PG status line just after names it
        elif row.get("source") == logfacts.C10D and len(at_seq.get(row["seq"], ())) == 1:
            # another rank's watchdog line names the one group at this SeqNum: a per-group counter that agrees is
            # that group (a desync report counts collectives differently, so its rows are left as they are)
            row["group"] = next(iter(at_seq[row["seq"]]))
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (row.get("host") if row.get("source") == logfacts.NCCL_INFO else None, row["rank"], row["group"], row["seq"])
        have = merged.get(key)
        if have is None:
            merged[key] = dict(row)
            continue
        if _STATE_RANK.get(row.get("state"), 1) > _STATE_RANK.get(have.get("state"), 1):
            have["state"] = row["state"]
        for k, v in row.items():
            if have.get(k) is None and v is not None:
                have[k] = v
    said: dict[tuple[str, int], dict[str, Any]] = {}
    for row in merged.values():
        if row.get("op"):
            have = said.setdefault((row["group"], row["seq"]), {})
            for k in _CALL_FIELDS:
                if have.get(k) is None and row.get(k) is not None:
                    have[k] = row[k]
    for row in merged.values():
        peer = said.get((row["group"], row["seq"]), {})
        if row.get("op") in (None, peer.get("op")):
            for k in _CALL_FIELDS:
                if row.get(k) is None:
                    row[k] = peer.get(k)
    return list(merged.values())


# What one line may leave out of a call that another rank's line about the same call gives.
_CALL_FIELDS = ("op", "in_numel", "out_numel", "dtype", "reduce_op")


def facts_from(scans: list[Scan], index_sets: set[tuple[tuple[str, int], ...]] | None = None,
               pid_ranks: Mapping[tuple[Any, int], int] | None = None,
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(log_events rows, processes rows, collectives rows, notes) from the scans of one or many logs;
    `pid_ranks`: ranks of (host, pid) known from elsewhere (a live capture's process table)."""
    procs: dict[tuple[Any, int], LineInfo] = {}
    for scan in scans:
        for key, p in scan.procs.items():
            have = procs.setdefault(key, p)
            if have is not p:
                have.name = have.name or p.name
                have.indices = have.indices or p.indices
                have.rank = have.rank if have.rank is not None else p.rank
    sizes, ranks = _resolve(procs, index_sets or set(), pid_ranks)
    events: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    notes: list[str] = []
    for scan in scans:
        for h in scan.hits:
            rank = _rank_of(_who(h.info, h.fallback_rank), ranks, sizes)
            subject = _subject_rank(h.fields, h.info, sizes)
            if subject is not None:
                rank = subject  # "Worker proc VllmWorker-2 died": the event is about that worker, not the engine
            events.append(
                {"host": h.info.host, "file": h.file, "line_no": h.line_no, "t": h.info.t, "pid": h.info.pid,
                 "rank": rank, "signature": h.sig.id, "event": h.sig.event, "severity": h.sig.severity,
                 "text": h.text, "context": h.context}
            )
        reader = scan.reader
        assert reader is not None
        for e, who in zip(reader.events, reader.event_who):
            if e["rank"] is None and who is not None:
                e["rank"] = _rank_of(who, ranks, sizes)
            events.append(e)
        unranked = 0
        for f in reader.facts:
            row = dict(f.row)
            if row["rank"] is None:
                row["rank"] = _rank_of(f.who, ranks, sizes)
            if row["rank"] is None:
                unranked += 1
                continue
            calls.append(row)
        if unranked:
            notes.append(f"{reader.file}: {unranked} collective line(s) name no rank (no [rankN] prefix, rank in "
                         f"the text or rank in the file name) and were not aligned")
        for who, (no, text) in scan.writers.items():
            r = _rank_of(who, ranks, sizes)
            if r is not None:
                events.append({"host": scan.writer_info[who].host, "file": reader.file, "line_no": no, "t": None,
                               "pid": scan.writer_info[who].pid, "rank": r, "signature": "rank_seen",
                               "event": "seen", "severity": "info", "text": text, "context": []})
    calls = _merge_calls(calls)
    seen = {int(e["rank"]) for e in events if e.get("rank") is not None} | {int(c["rank"]) for c in calls}
    seen |= {r for r in ranks.values() if r is not None}
    world = max(seen) + 1 if seen else 0
    for c in calls:
        if c["group"] == logfacts.DEFAULT_PG and c.get("source") != logfacts.FR_TEXT:
            c["group_size"] = max(c.get("group_size") or 0, world)
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
    return events, rows, calls, notes


def read(files: list[Path]) -> Bundle:
    bundle = Bundle()
    catalogue = load_catalogue()
    scans: list[Scan] = []
    frames: list[dict[str, Any]] = []
    index_sets: set[tuple[tuple[str, int], ...]] = set()
    for f in files:
        reason = prose_reason(Path(f), _head(Path(f)) or "")
        if reason:
            bundle.note(f"{f}: skipped, {reason}: text a person wrote is not read as a log")
            continue
        try:
            text, truncated = read_tail(str(f), MAX_BYTES)
            year = time.gmtime(os.stat(f).st_mtime).tm_year
        except OSError as exc:
            raise InputError(f"{f}: unreadable: {exc.strerror or exc}") from None
        if truncated:
            bundle.note(f"{f}: larger than {MAX_BYTES >> 20} MB, read only its last {MAX_BYTES >> 20} MB (no line numbers)")
        scan = scan_text(text, file=str(f), year=year, rank=file_rank(Path(f)), catalogue=catalogue,
                         index_sets=index_sets)
        if truncated:
            for h in scan.hits:
                h.line_no = None
        scans.append(scan)
        if _STACK_HINT.search(text):
            stack_rows, titles = pyspy.parse_text(_ANSI.sub("", text))
            frames.extend(stack_rows)
            for pid, title in titles.items():  # "Process 88693: sglang::scheduler_PP2_TP1" names the stacks below
                name = title.split("::", 1)[-1].split()[0] if title.strip() else ""
                if ranknames.parse_indices(name) and (None, pid) not in scan.procs:
                    scan.procs[(None, pid)] = LineInfo(None, pid, name=name, indices=ranknames.parse_indices(name))
        bundle.note(f"{f}: read as a log ({_read_as(scan)})")
    events, proc_rows, calls, notes = facts_from(scans, index_sets)
    for n in notes:
        bundle.note(n)
    if not any(e["event"] != "seen" for e in events) and not frames and not calls:
        bundle.note(f"{len(scans)} log file(s) read; no known hang line in them")
    if events:
        bundle.add("log_events", table_from_rows("log_events", events))
    if calls:
        bundle.add("collectives", table_from_rows("collectives", calls))
    if proc_rows:
        bundle.add("processes", table_from_rows("processes", proc_rows))
    if frames:
        bundle.add("py_frames", table_from_rows("py_frames", frames))
    return bundle


def _read_as(scan: Scan) -> str:
    """'c10d-watchdog, traceback; lines from ranks 1, 3' for the report's list of inputs."""
    kinds = sorted((scan.reader.formats if scan.reader else set()) | {h.sig.id for h in scan.hits})
    ranks = sorted({w[1] for w in scan.writers if w[0] == "rank"})
    parts = [", ".join(kinds[:8]) + (" ..." if len(kinds) > 8 else "") if kinds else "no known hang line"]
    if ranks:
        parts.append("lines from rank" + ("s " if len(ranks) > 1 else " ") + ", ".join(map(str, ranks[:16])))
    return "; ".join(parts)
