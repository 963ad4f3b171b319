"""JSONL collective traces: one JSON object per line, one line per collective call (docs/trace-formats.md).

The format exists so that home-made instrumentation (a patched pynccl, a logging wrapper) can be fed to
hangdoc with a few lines of conversion. Reading is lenient: a bad line is skipped and counted, unknown
fields are ignored, and only when no file holds a single valid line is the input an error.
"""
from __future__ import annotations

import gzip
import json
import math
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import pyarrow as pa

from hangdoc.bundle import Bundle
from hangdoc.errors import InputError
from hangdoc.importers.ops import normalize_dtype, normalize_op, normalize_reduce_op, normalize_state
from hangdoc.schema import COLLECTIVES

NAME = "jsonl"
SOURCE = "jsonl"
SUFFIXES = (".jsonl", ".jsonl.gz")
HEADER_KEY = "hangdoc_trace"
FORMAT_VERSION = 1
_SNIFF_LINES = 50  # blank lines tolerated before the first object when sniffing
_SHOWN_BAD_LINES = 5
_CHUNK_LINES = 4096  # lines parsed per json.loads call
_MAX_LINE = 16 << 20  # a call's line is a few hundred bytes; longer ones are skipped unread
_INT64 = 1 << 63

# Row tuple order; the table is built column by column from these.
_COLUMNS = (
    "host",
    "rank",
    "pid",
    "group",
    "group_desc",
    "group_ranks",
    "group_size",
    "rank_in_group",
    "seq",
    "op",
    "reduce_op",
    "dtype",
    "in_shapes",
    "out_shapes",
    "in_numel",
    "out_numel",
    "peer",
    "t_issue",
    "state",
    "record_id",
    "call_site",
)


# Every field a line may carry, in the order _Reader._row unpacks them.
_KEYS = (
    "rank", "group", "op", "group_ranks", "group_size", "rank_in_group", "seq", "in_shapes", "shape", "out_shapes",
    "in_numel", "numel", "out_numel", "reduce_op", "dtype", "state", "time", "t", "pid", "peer", "host",
    "group_desc", "record_id", "call_site",
)  # fmt: skip


class _BadLine(ValueError):
    """A line that is JSON but not a usable call; the message says why, for the skip note."""


def _open(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _lines(fh: BinaryIO, limit: int = _MAX_LINE, block: int = 1 << 20) -> Iterator[bytes | None]:
    """The file's lines (without their newline), None for each one longer than `limit`, whose bytes are
    dropped as they come: a decompression bomb is one endless line, and it must not be held in memory.
    Read in blocks, about as fast as iterating the file."""
    block = min(block, limit)  # so a line inside one block is always shorter than `limit`
    # gzip: read1, so what a truncated stream held before its end is kept (read raises and drops the block)
    read = fh.read1 if isinstance(fh, gzip.GzipFile) else fh.read
    pending = b""  # the start of a line not ended yet (shorter than `limit`)
    over = False  # the current line is past `limit`: dropped up to its newline
    while data := read(block):
        pieces = data.split(b"\n")
        tail = pieces.pop()
        if pieces:
            first = pending + pieces[0]
            yield None if over or len(first) >= limit else first
            yield from pieces[1:]
            pending, over = tail, False
        else:
            pending += tail
        if len(pending) >= limit:
            pending, over = b"", True
    if over:
        yield None
    elif pending:
        yield pending


def matches(path: Path) -> bool:
    """A .jsonl / .jsonl.gz file whose first non-empty line is an object with "op" or a trace header."""
    if not path.name.endswith(SUFFIXES):
        return False
    try:
        with _open(path) as fh:
            for _ in range(_SNIFF_LINES):
                line = fh.readline(1 << 20)
                if not line:
                    return False
                if line.strip():
                    obj = json.loads(line)
                    return isinstance(obj, dict) and ("op" in obj or HEADER_KEY in obj)
    except (OSError, EOFError, zlib.error, ValueError, RecursionError):
        return False
    return False


def _int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is int and -_INT64 <= value < _INT64:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 19:
        return int(value)
    raise _BadLine(f"{what} is not an integer")


def _ranks(value: Any) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _BadLine("group_ranks is not a list")
    return sorted(_int(r, "group_ranks") for r in value)  # type: ignore[type-var]


def _prod(dims: list[Any]) -> Any:
    try:
        return math.prod(dims)
    except TypeError:
        return None


def _numel(shapes: Any, what: str) -> int | None:
    """Total elements of a list of shapes; also the check that it is one (a non-int product means it is not)."""
    if shapes is None:
        return None
    if type(shapes) is not list:
        raise _BadLine(f"{what} is not a list of shapes")
    if len(shapes) == 1 and type(shapes[0]) is list:
        n = _prod(shapes[0])
        if type(n) is int:
            return n
    total = 0
    for s in shapes:
        if type(s) is not list:
            raise _BadLine(f"{what} is not a list of shapes")
        n = _prod(s)
        if type(n) is not int:
            raise _BadLine(f"{what} holds a non-integer dimension")
        total += n
    return total


def _membership(
    rank: int, group: str, raw_ranks: Any, raw_size: Any, raw_in_group: Any, groups: dict[str, list[int]]
) -> tuple[list[int] | None, int | None, int | None]:
    """(sorted member ranks, size, rank's index among them) from a line's fields or the header's groups."""
    ranks = _ranks(raw_ranks)
    if ranks is None:
        ranks = groups.get(group)
    size = _int(raw_size, "group_size")
    if size is None and ranks is not None:
        size = len(ranks)
    in_group = _int(raw_in_group, "rank_in_group")
    if in_group is None and ranks is not None:
        if rank not in ranks:
            raise _BadLine(f"rank {rank} is not in group_ranks")
        in_group = ranks.index(rank)
    return ranks, size, in_group


def _time(value: Any) -> float | None:
    """Unix seconds, or ISO 8601 text (naive times are taken as UTC)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise _BadLine("time is neither unix seconds nor ISO 8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    raise _BadLine("time is neither unix seconds nor ISO 8601")


class _Reader:
    """Accumulates rows from every file of one input; seq counters run across files in name order."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.last_seq: dict[tuple[int, str], int] = {}
        self.notes: list[str] = []
        self._membership: dict[tuple[Any, ...], tuple[list[int] | None, int | None, int | None]] = {}
        self._path = Path()
        self._defaults: dict[str, Any] = {}
        self._groups: dict[str, list[int]] = {}
        self._bad: list[tuple[int, str]] = []
        self._n_bad = 0

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def read_file(self, path: Path) -> None:
        self._path = path
        self._defaults, self._groups = {}, {}
        self._membership.clear()
        self._bad, self._n_bad = [], 0
        before = len(self.rows)
        line_no = 0
        chunk: list[bytes] = []
        error: BaseException | None = None
        try:
            with _open(path) as fh:
                for line in _lines(fh):
                    if line is None:  # too long to be a call: skipped without holding it
                        self._chunk(chunk, line_no)
                        line_no += len(chunk) + 1
                        chunk = []
                        self._bad_line(line_no, f"longer than {_MAX_LINE >> 20} MB")
                        continue
                    chunk.append(line)
                    if len(chunk) == _CHUNK_LINES:
                        self._chunk(chunk, line_no)
                        line_no += len(chunk)
                        chunk = []
        except (OSError, EOFError, zlib.error) as exc:
            error = exc
        self._chunk(chunk, line_no)
        line_no += len(chunk)
        if error is not None:
            kept = len(self.rows) - before
            self.note(
                f"{path}: unreadable after line {line_no} ({type(error).__name__}: {error}); "
                f"kept the {kept} call(s) before it"
            )
        bad = ""
        if self._n_bad:
            shown = ", ".join(f"{n} ({why})" for n, why in self._bad)
            more = ", ..." if self._n_bad > len(self._bad) else ""
            bad = f"{self._n_bad} bad line{'s' if self._n_bad != 1 else ''}: line {shown}{more}"
        if len(self.rows) == before:
            self.note(f"{path}: no valid collective call in this file" + (f" ({bad})" if bad else ""))
        elif bad:
            self.note(f"{path}: skipped {bad}")

    def _chunk(self, lines: list[bytes], first_line: int) -> None:
        """Parse many lines in one json.loads; on any bad line redo the chunk line by line to name it."""
        if not lines:
            return
        saved = (dict(self.last_seq), self._defaults, self._groups, len(self.rows))
        nonblank = [line for line in lines if line and not line.isspace()]
        try:
            objs = json.loads(b"[" + b",".join(nonblank) + b"]")
            if len(objs) != len(nonblank):  # a line held two values ("{...}, {...}")
                raise _BadLine("more than one JSON value")
            row, append = self._row, self.rows.append
            for obj in objs:
                if type(obj) is not dict:
                    raise _BadLine("not a JSON object")
                if HEADER_KEY in obj:
                    self._header(obj)
                else:
                    append(row(obj))
            return
        except (ValueError, TypeError, RecursionError):  # RecursionError: a line nested too deep for json
            self.last_seq, self._defaults, self._groups, n = saved
            del self.rows[n:]
            self._membership.clear()
        for line_no, line in enumerate(lines, first_line + 1):
            if not line or line.isspace():
                continue
            try:
                obj = json.loads(line)
                if type(obj) is not dict:
                    raise _BadLine("not a JSON object")
                if HEADER_KEY in obj:
                    self._header(obj)
                else:
                    self.rows.append(self._row(obj))
            except (ValueError, TypeError, RecursionError) as exc:  # json errors and _BadLine are ValueErrors
                self._bad_line(line_no, str(exc) if isinstance(exc, _BadLine) else "not valid JSON")

    def _bad_line(self, line_no: int, why: str) -> None:
        self._n_bad += 1
        if len(self._bad) < _SHOWN_BAD_LINES:
            self._bad.append((line_no, why))

    def _header(self, obj: dict[str, Any]) -> None:
        """A header line: defaults for the lines after it, and optionally a map of group name -> member ranks."""
        version = obj.get(HEADER_KEY)
        if version != FORMAT_VERSION:
            self.note(f"{self._path}: trace header version {version!r}, read as version {FORMAT_VERSION}")
        self._defaults = {k: v for k, v in obj.items() if k not in (HEADER_KEY, "groups")}
        self._groups = {}
        raw = obj.get("groups")
        if isinstance(raw, dict):
            for name, members in raw.items():
                if isinstance(members, list):
                    self._groups[str(name)] = _ranks(members)  # type: ignore[assignment]
        self._membership.clear()  # the new group map may differ from the last header's

    def _row(self, obj: dict[str, Any]) -> tuple[Any, ...]:
        # Hot path, one call per line: every field fetched in one C-level map, then cheap type checks;
        # helpers only run for the rare line that needs conversion.
        if self._defaults:
            obj = {**self._defaults, **obj}
        (
            rank, group, op, raw_ranks, raw_size, raw_in_group, seq, in_shapes, shape, out_shapes,
            in_numel, numel, out_numel, reduce_op, dtype, state, t, t2, pid, peer, host, desc,
            record_id, call_site,
        ) = map(obj.get, _KEYS)  # fmt: skip
        if type(rank) is not int:
            rank = _int(rank, "rank")
            if rank is None:
                raise _BadLine("no rank")
        if type(group) is not str:
            if group is None:
                raise _BadLine("no group")
            group = str(group)
        if type(op) is not str or not op:
            raise _BadLine("no op")

        member_key = (
            rank,
            group,
            tuple(raw_ranks) if type(raw_ranks) is list else raw_ranks,
            raw_size,
            raw_in_group,
        )
        membership = self._membership.get(member_key)
        if membership is None:
            membership = self._membership[member_key] = _membership(
                rank, group, raw_ranks, raw_size, raw_in_group, self._groups
            )

        if type(seq) is not int:
            seq = _int(seq, "seq")
            if seq is None:
                seq = self.last_seq.get((rank, group), 0) + 1
        self.last_seq[(rank, group)] = seq

        if in_numel is None:
            in_numel = numel
        if in_shapes is None and shape is not None:
            in_shapes = [shape]
            counted = _numel(in_shapes, "shape")
            if in_numel is None:
                in_numel = counted
        elif in_shapes is not None:
            counted = _numel(in_shapes, "in_shapes")
            if in_numel is None:
                in_numel = counted
        if type(in_numel) is not int and in_numel is not None:
            in_numel = _int(in_numel, "numel")
        if out_shapes is not None:
            counted = _numel(out_shapes, "out_shapes")
            if out_numel is None:
                out_numel = counted
        if type(out_numel) is not int and out_numel is not None:
            out_numel = _int(out_numel, "out_numel")
        if t is None:
            t = t2
        if type(t) is not float:
            t = _time(t)
        return (
            host if host is None or type(host) is str else str(host),
            rank,
            pid if pid is None or type(pid) is int else _int(pid, "pid"),
            group,
            group if desc is None else str(desc),
            *membership,
            seq,
            normalize_op(op),
            normalize_reduce_op(reduce_op) if type(reduce_op) is str and reduce_op else None,
            normalize_dtype(dtype) if type(dtype) is str and dtype else None,
            in_shapes,
            out_shapes,
            in_numel,
            out_numel,
            peer if peer is None or type(peer) is int else _int(peer, "peer"),
            t,
            normalize_state(state) if type(state) is str else "unknown",
            record_id if record_id is None or type(record_id) is int else _int(record_id, "record_id"),
            call_site if call_site is None or type(call_site) is str else str(call_site),
        )

    def table(self) -> pa.Table:
        rows = self._latest_per_call()
        try:
            return _table(rows)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        # Some value passed the per-line checks but not Arrow (a bool as a dimension, say): find those rows.
        good = []
        for row in rows:
            try:
                _table([row])
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                continue
            good.append(row)
        self.note(f"dropped {len(rows) - len(good)} call(s) with values that do not fit the collectives table")
        return _table(good)

    def _latest_per_call(self) -> list[tuple[Any, ...]]:
        """A later line for the same (rank, group, seq) replaces the earlier one: state updates as events."""
        latest: dict[tuple[int, str, int], int] = {}
        for i, row in enumerate(self.rows):
            latest[(row[1], row[3], row[8])] = i
        if len(latest) == len(self.rows):
            return self.rows
        replaced = len(self.rows) - len(latest)
        self.notes.append(
            f"{replaced} line{'s' if replaced != 1 else ''} repeated an earlier call (same rank, group and seq); "
            "the later line was kept"
        )
        return [self.rows[i] for i in sorted(latest.values())]


def _listed_once(groups: tuple, members: tuple) -> list[list[int] | None]:
    """group_ranks on the first row of each communicator (group name + member set) only, as the schema
    allows: a large group repeated on every row costs more than the rest of the row."""
    out: list[list[int] | None] = [None] * len(members)
    seen_obj: set[int] = set()  # member lists are shared between a (rank, group)'s rows
    seen: set[tuple[str, tuple[int, ...]]] = set()
    for i, m in enumerate(members):
        if m is None or id(m) in seen_obj:
            continue
        seen_obj.add(id(m))
        key = (groups[i], tuple(m))
        if key not in seen:
            seen.add(key)
            out[i] = m
    return out


def _table(rows: list[tuple[Any, ...]]) -> pa.Table:
    columns = list(zip(*rows)) if rows else [() for _ in _COLUMNS]
    at = _COLUMNS.index("group_ranks")
    columns[at] = _listed_once(columns[_COLUMNS.index("group")], columns[at])
    arrays = {name: pa.array(col, type=COLLECTIVES.field(name).type) for name, col in zip(_COLUMNS, columns)}
    arrays["source"] = pa.DictionaryArray.from_arrays(pa.array([0] * len(rows), pa.int32()), pa.array([SOURCE]))
    return pa.table(arrays)


def read(files: list[Path]) -> Bundle:
    """Every file's calls in one bundle; files that hold nothing usable become notes."""
    reader = _Reader()
    for path in sorted(files, key=lambda p: str(p)):
        reader.read_file(Path(path))
    if not reader.rows:
        if len(files) == 1:
            raise InputError("; ".join(reader.notes))
        raise InputError(f"none of {len(files)} JSONL traces holds a valid collective call (first: {reader.notes[0]})")
    bundle = Bundle()
    bundle.add("collectives", reader.table())
    for note in reader.notes:
        bundle.note(note)
    return bundle
