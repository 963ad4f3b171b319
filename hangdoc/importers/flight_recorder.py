"""PyTorch Flight Recorder (FR) dumps -> the `collectives` table.

One file per rank, named prefix + rank ("nccl_trace_rank_3"), pickle or JSON, dump versions from the
2024 layouts ("1.x": one `seq_id`) through "2.0"+ (`collective_seq_id` / `p2p_seq_id`) up to "2.10".
What real dumps need and this module does (docs/trace-formats.md has the full mapping):

- seq = collective_seq_id for collectives, p2p_seq_id for send/recv (a p2p row's seq counts that rank's
  p2p calls on the group, apart from its collectives). record_id is kept but never aligned on: ring
  buffers wrap at different points on different ranks.
- gloo never moves `state` past "scheduled"; there `retired` is the completion signal.
- Coalesced groups (entries sharing one seq, closed by a "coalesced" entry) become one collective row;
  p2p members stay one row each and take the closing entry's state.
- gloo writes no ranks into pg_config; membership and sizes are then inferred from the entries of all
  rank files together.
- Pickles are untrusted: loaded with safe_pickle (plain data only), and every field walked is bounded
  (depth, elements reached with shared lists counted each time, tensors per call); entries without a
  profiling name, a sequence number or a process group are counted in a note and left out.

Speed: each file is parsed on its own (in worker processes when there are many): entries are transposed
into columns in one C-level pass, per-row values go through small dictionaries over the few distinct
names a file holds, and the columns travel back as Arrow. Groups, which need every rank, are resolved
once afterwards over (rank, group) pairs, not rows.
"""
from __future__ import annotations

import gc
import json
import math
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import eq, itemgetter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hangdoc.bundle import Bundle
from hangdoc.errors import InputError
from hangdoc.importers import safe_pickle
from hangdoc.importers.ops import normalize_dtype, normalize_op, normalize_state
from hangdoc.progress import announce
from hangdoc.schema import COLLECTIVES, empty, null_column

NAME = "flight-recorder"
SOURCE = "flight-recorder"
NEWEST_KNOWN_VERSION = (2, 10)

_SNIFF_BYTES = 4096
_RANK_RE = re.compile(r"(\d+)(?:\.(?:json|pkl|pickle))?$")
_PARALLEL_MIN_FILES = 64
_ANNOUNCE_FILES = 256  # about a second of parsing on one core: say so on stderr

P2P_OPS = frozenset({"send", "recv"})
_GATHER_OPS = ("all_gather", "all_gather_coalesced")  # output = group size x input
_SCATTER_OPS = ("reduce_scatter", "reduce_scatter_coalesced")  # input = group size x output

_shapes = pa.list_(pa.list_(pa.int64()))
_ints = pa.list_(pa.int64())
_dict = pa.dictionary(pa.int32(), pa.string())
# What a worker returns per file: every per-row column already in its final form, except the group
# (pg_key indexes the file's own (pg name, pg desc) list) and the peer (still group-local).
_PART = pa.schema(
    [
        ("rank", pa.int64()),
        ("pg_key", pa.int32()),
        ("seq", pa.int64()),
        ("op", _dict),
        ("dtype", _dict),
        ("in_shapes", _shapes),
        ("out_shapes", _shapes),
        ("in_numel", pa.int64()),
        ("out_numel", pa.int64()),
        ("peer_local", pa.int64()),
        ("t_issue", pa.float64()),
        ("state", _dict),
        ("record_id", pa.int64()),
        ("call_site", _dict),
    ]
)


# ----------------------------------------------------------------------------------------------------
# sniffing and file naming
# ----------------------------------------------------------------------------------------------------
def matches(path: Path) -> bool:
    """A Flight Recorder dump: a pickle or JSON object whose first bytes name FR keys. Never parses."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return b"pg_config" in head or (b"entries" in head and b"profiling_name" in head)
    if head.lstrip()[:1] == b"{":
        return b'"pg_config"' in head or (b'"entries"' in head and b'"profiling_name"' in head)
    return False


def _empty_siblings(files: Iterable[Path], ranks: Iterable[int]) -> dict[int, Path]:
    """rank -> a zero-byte file beside `files`, named like them but for its rank. matches() cannot claim an
    empty file, yet it is there: "no file for rank 3" would send people looking for one."""
    found: dict[int, Path] = {}
    patterns = set()
    for f in files:
        m = _RANK_RE.search(f.name)
        if m:
            patterns.add((f.parent, f.name[: m.start(1)], f.name[m.end(1) :]))
    for rank in ranks:
        for parent, before, after in sorted(patterns):
            candidate = parent / f"{before}{rank}{after}"
            try:
                if candidate.is_file() and candidate.stat().st_size == 0:
                    found[rank] = candidate
                    break
            except OSError:
                continue
    return found


def rank_of(path: str | Path) -> int | None:
    """The rank a file holds: the number that ends its name (an optional .json/.pkl suffix aside)."""
    m = _RANK_RE.search(Path(path).name)
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------------------------------
# one file -> raw columns (runs in worker processes)
# ----------------------------------------------------------------------------------------------------
class _BadDump(Exception):
    """A file that cannot be used; the message becomes a bundle note."""


@dataclass
class _Parsed:
    rank: int
    path: str
    table: pa.Table | None = None
    version: str | None = None
    pg_ranks: dict[str, tuple[int, ...]] = field(default_factory=dict)  # pg name -> ranks, from pg_config
    pg_desc: dict[str, str] = field(default_factory=dict)  # pg name -> desc, from pg_config
    pg_keys: list[tuple[str, str | None]] = field(default_factory=list)  # per pg_key: (name, desc)
    backends: set[str] = field(default_factory=set)  # "nccl", "gloo", ...
    comm_lib_version: str | None = None  # "comm_lib_version" (2.8+) or "nccl_version" (2.4-2.7)
    first_record_id: int | None = None
    skipped: int = 0  # entries without a profiling name, sequence number or process group
    error: str | None = None


def load_dump(path: Path) -> dict:
    """The dump dict of one file (pickle through safe_pickle, or JSON); _BadDump says why not."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _BadDump(f"unreadable: {exc.strerror or exc}") from None
    if not data.strip():
        raise _BadDump("empty file")
    try:
        obj = safe_pickle.loads(data) if data[0] == 0x80 else json.loads(data)
    except safe_pickle.UnsafePickleError as exc:
        raise _BadDump(f"{exc}; nothing in it was run") from None
    except RecursionError:
        raise _BadDump("corrupt: nested too deeply") from None
    except Exception as exc:  # truncated/corrupt pickle or JSON: EOFError, UnpicklingError, ValueError, ...
        raise _BadDump(f"truncated or corrupt ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(obj, dict) or not ({"entries", "pg_config", "version"} & set(obj)):
        raise _BadDump("not a Flight Recorder dump (no entries / pg_config / version)")
    try:  # everything but the entries (extract bounds those field by field)
        safe_pickle.check_bounds([v for k, v in obj.items() if k != "entries"], max_depth=6,
                                 max_items=safe_pickle.element_budget(len(data)))
    except safe_pickle.BoundsError as exc:
        raise _BadDump(f"refused: its header is {exc}") from None
    return obj


def _parse_ranks(value: Any) -> tuple[int, ...] | None:
    """pg_config "ranks": the string "[0, 1, 2]" (every version) or a list; never eval'd."""
    if isinstance(value, (list, tuple)):
        items: list[Any] = list(value)
    elif isinstance(value, str):
        try:  # JSON's list syntax, parsed in C (a 16k-rank world group is parsed in every rank file)
            items = json.loads(value)
            if type(items) is not list or not all(type(x) is int for x in items):
                raise ValueError
        except ValueError:
            body = value.strip().strip("[]").strip()
            items = [x for x in body.split(",") if x.strip()] if body else []
    else:
        return None
    try:
        return tuple(sorted({int(x) for x in items})) or None
    except (TypeError, ValueError):
        return None


_FIELDS = (
    "process_group", "pg_id", "seq_id", "collective_seq_id", "p2p_seq_id", "is_p2p", "profiling_name",
    "state", "retired", "input_dtypes", "output_dtypes", "input_sizes", "output_sizes", "time_created_ns",
    "record_id", "frames",
)  # fmt: skip


def _transpose(entries: list[dict]) -> dict[str, tuple]:
    """Entries (dicts) -> one tuple per field, in one C-level pass when every entry has the same keys."""
    first = entries[0]
    keys = [k for k in _FIELDS if k in first and not (k == "pg_id" and "process_group" in first)]
    keys += [k for k in ("profiling_name", "record_id") if k not in keys]  # required; >= 2 keys for itemgetter
    try:
        return dict(zip(keys, zip(*map(itemgetter(*keys), entries))))
    except KeyError:  # ragged entries
        pass
    except TypeError:  # an entry that is not a dict
        raise _BadDump("entries is not a list of dicts") from None
    if not all(isinstance(e, dict) for e in entries):
        raise _BadDump("entries is not a list of dicts")
    return {k: tuple(e.get(k) for e in entries) for k in keys}


_MAX_TENSORS = 1 << 16  # tensors in one call's inputs or outputs
_MAX_DIMS = 256  # dims of one tensor's shape
_SCALAR_FIELDS = ("state", "retired", "is_p2p", "time_created_ns", "record_id", "pg_id")
_SEQ_FIELDS = ("seq_id", "collective_seq_id", "p2p_seq_id")
_NONE = type(None)


def _validated(c: dict[str, tuple], n: int) -> tuple[dict[str, tuple], int]:
    """The columns of the entries that carry what every row needs (a profiling name, a sequence number, a
    process group), and how many did not. _BadDump ("refused: ...") where a field read later is past its
    bounds: deeper, longer or (shared references followed) bigger than any real dump, or a container where
    a single value belongs. Checked column by column at C speed, before anything hashes or prints a value."""
    budget = safe_pickle.element_budget(256 * n)
    # Lists walked one level (shapes: walked in full by _shapes, after folding) or read at one index
    # (dtypes: the first; frames: one step per reference, each frame read once): bounded by their
    # lengths, each value checked where it is read.
    for key in ("input_sizes", "output_sizes", "input_dtypes", "output_dtypes", "frames", "process_group"):
        refs = c.get(key)
        if refs is None:
            continue
        if not set(map(type, refs)) <= {list, tuple, _NONE}:
            raise _BadDump(f"refused: {key} is not a list per entry")
        if sum(map(len, filter(None, refs))) > budget:
            raise _BadDump(f"refused: {key} holds more than {budget:,} elements in all")
    for key in _SCALAR_FIELDS:
        if key in c and set(map(type, c[key])) & safe_pickle.CONTAINERS:
            raise _BadDump(f"refused: {key} holds a container where a single value belongs")

    pname_ok = set(map(type, c["profiling_name"])) == {str}
    seq_cols = [c[k] for k in _SEQ_FIELDS if k in c]
    seq_ok = any(set(map(type, col)) == {int} for col in seq_cols)
    group = c.get("process_group") or c.get("pg_id")
    try:
        group_ok = group is not None and None not in group and all(map(len, c.get("process_group", ("?",))))
    except TypeError:  # a process_group that is a number
        group_ok = False
    if pname_ok and seq_ok and group_ok:
        return c, 0
    ok = [
        type(p) is str and any(type(col[i]) is int for col in seq_cols) and _has_group(c, i)
        for i, p in enumerate(c["profiling_name"])
    ]
    kept = sum(ok)
    return {k: tuple(compress(v, ok)) for k, v in c.items()}, n - kept


_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def _firsts(lists: tuple | list) -> list:
    """Each entry's first element, None for an empty or missing list (at C speed when none is)."""
    try:
        return list(map(_FIRST, lists))
    except (TypeError, IndexError, KeyError):
        return [x[0] if x else None for x in lists]


def _plain_values(key: str, *columns: list) -> None:
    """Values that get hashed or printed must be plain (a container there could be a bomb)."""
    for col in columns:
        if not set(map(type, col)) <= {str, int, _NONE}:
            raise _BadDump(f"refused: {key} holds a container where a name belongs")


def _has_group(c: dict[str, tuple], i: int) -> bool:
    pg = c.get("process_group")
    if pg is not None and isinstance(pg[i], (list, tuple)) and pg[i] and pg[i][0] is not None:
        return True
    pid = c.get("pg_id")
    return pid is not None and pid[i] is not None and type(pid[i]) in (int, str)


# Library frames: torch itself, installed packages (decorators such as typing_extensions'), the stdlib.
_LIBRARY_FRAME = re.compile(r"/(?:site|dist)-packages/|/lib/python\d+(?:\.\d+)?/|(?:^|/)torch/")


_PLAIN = frozenset({str, int, float, bool, _NONE})
_NO_STACK = (object(),)  # equal to no stack a dump holds
_MAX_FRAMES = 4096  # frames in a stack that others are compared against


def _plain_stack(frames: Any) -> bool:
    """Every frame a dict of plain keys and values: a stack compared against this one with == costs at most
    its length (frames shared with it match by identity, any other fails at its first plain value)."""
    return type(frames) in (list, tuple) and len(frames) <= _MAX_FRAMES and all(
        type(fr) is dict and set(map(type, fr)) <= {str} and set(map(type, fr.values())) <= _PLAIN for fr in frames
    )


def _call_sites(frames_col: tuple, hints: list) -> list[str | None]:
    """Per entry: the innermost frame outside libraries (the user's call), else the innermost frame.

    Entries with one profiling name and group mostly repeat one stack of shared frame dicts, so each round
    takes the first stack of each hint (a plain value per entry) and compares every entry's stack with it
    at C speed; what a few rounds leave goes through _call_sites_by_id."""
    out = np.full(len(frames_col), None, object)
    rows, stacks = np.arange(len(frames_col)), list(frames_col)
    for _ in range(3):
        if not stacks:
            break
        first = dict(zip(reversed(hints), range(len(hints) - 1, -1, -1)))  # hint -> its first entry
        refs = {h: stacks[i] if _plain_stack(stacks[i]) else _NO_STACK for h, i in first.items()}
        site = {h: _call_sites_by_id([ref])[0] for h, ref in refs.items()}
        same = np.fromiter(map(eq, map(refs.__getitem__, hints), stacks), bool, len(stacks))
        out[rows[same]] = np.array(list(map(site.__getitem__, compress(hints, same))), object)
        rows, keep = rows[~same], (~same).tolist()
        stacks, hints = list(compress(stacks, keep)), list(compress(hints, keep))
    if stacks:
        out[rows] = np.array(_call_sites_by_id(stacks), object)
    return out.tolist()


def _call_sites_by_id(frames_col: list) -> list[str | None]:
    """_call_sites one entry at a time: each distinct stack (by the identities of its frames) resolved once."""
    frame_of: dict[int, tuple[bool, str] | None] = {}
    site_of: dict[tuple[int, ...], str | None] = {}
    search = _LIBRARY_FRAME.search
    out: list[str | None] = []
    append = out.append
    for frames in frames_col:
        key = tuple(map(id, frames)) if frames else ()
        site = site_of.get(key, "")
        if site == "":
            site = None
            for fr in frames or ():  # a few frames each: torch's own, then the caller's
                got = frame_of.get(id(fr), "")
                if got == "":
                    got = frame_of[id(fr)] = _frame(fr, search)
                if got is None:
                    continue
                if site is None:
                    site = got[1]
                if not got[0]:
                    site = got[1]
                    break
            site_of[key] = site
        append(site)
    return out


def _frame(fr: Any, search: Any) -> tuple[bool, str] | None:
    """(is a library frame, "name (file:line)"), or None for anything but a frame dict."""
    if type(fr) is not dict:
        return None
    fname, name, line = (_plain(fr.get(k)) for k in ("filename", "name", "line"))
    return bool(search(fname)), f"{name} ({fname}:{line})"


def _plain(value: Any) -> str:
    """A frame field as text; anything but a plain value is "?" (never printed: it could be a bomb)."""
    return str(value) if type(value) in (str, int) else "?"


def extract(dump: dict, rank: int) -> tuple[pa.Table, list[tuple[str, str | None]], set[str], int]:
    """One rank's entries as a _PART table, its (pg name, pg desc) keys, the backends named and how many
    entries lacked a field every row needs (left out).

    Layout differences are settled here, per key; per-row values go through small dictionaries over
    the few distinct names, states and dtypes a file holds."""
    entries = dump.get("entries") or []  # JSON dumps leave "entries" out when the buffer is empty
    if not isinstance(entries, list) or not isinstance(entries[0] if entries else {}, dict):
        raise _BadDump("entries is not a list of dicts")
    if not entries:
        return _PART.empty_table(), [], set(), 0
    c, skipped = _validated(_transpose(entries), len(entries))
    n = len(c["profiling_name"])
    if not n:
        return _PART.empty_table(), [], set(), skipped
    nothing = (None,) * n

    pgs = c.get("process_group")
    if pgs is None:  # oldest dumps: only pg_id
        names, descs = list(map(str, c.get("pg_id", ("?",) * n))), list(nothing)
    else:  # (name, desc) tuple in pickles, [name, desc] list in JSON
        try:
            names, descs = list(map(_FIRST, pgs)), list(map(_SECOND, pgs))
        except (TypeError, IndexError):
            names = [p[0] if p else "?" for p in pgs]
            descs = [p[1] if p and len(p) > 1 else None for p in pgs]
        _plain_values("process_group", names, descs)
        if set(map(type, names)) != {str}:
            names = list(map(str, names))
    if "seq_id" in c and "collective_seq_id" not in c:  # "1.x": one counter for collectives and p2p
        cseq = pseq = c["seq_id"]
    else:
        cseq, pseq = c.get("collective_seq_id", nothing), c.get("p2p_seq_id", nothing)
    cols: dict[str, Any] = {
        "pg_name": names,
        "pg_desc": descs,
        "pname": c["profiling_name"],
        "cseq": cseq,
        "pseq": pseq,
        "is_p2p": c.get("is_p2p", nothing),
        "state": c.get("state", nothing),
        "retired": c.get("retired", nothing),
        "in_dtypes": c.get("input_dtypes", nothing),
        "out_dtypes": c.get("output_dtypes", nothing),
        "in_shapes": c.get("input_sizes", nothing),
        "out_shapes": c.get("output_sizes", nothing),
        "created_ns": c.get("time_created_ns", nothing),
        "record_id": c["record_id"],
        "frames": c.get("frames", nothing),
    }
    if _has_coalesced(names, cseq, cols["pname"], cols["is_p2p"]):
        cols = fold_coalesced(cols)
    table, keys = _derive(cols, rank)
    return table, keys, {_bare_op(p)[0] for p in set(cols["pname"])}, skipped  # set() first: few distinct names


def _derive(cols: dict[str, Any], rank: int) -> tuple[pa.Table, list[tuple[str, str | None]]]:
    """Raw FR columns of one file -> a _PART table (our op, seq, state, dtype, numels, time, peer).

    Per-row work goes through dictionaries over the few distinct values a file holds, with map() where
    it can; numels and times are computed by Arrow/numpy over the whole file."""
    n = len(cols["pname"])
    pnames = cols["pname"]
    info = {p: _op_info(p) for p in set(pnames)}  # -> (op, is gloo, group-local peer)
    ops = list(map({p: i[0] for p, i in info.items()}.__getitem__, pnames))
    any_p2p = any(i[0] in P2P_OPS for i in info.values())
    flags = cols["is_p2p"]
    if None not in flags:
        p2p = flags
    else:  # no is_p2p before "2.2": from the name
        p2p = [o in P2P_OPS if f is None else bool(f) for f, o in zip(flags, ops)]
    seq = [ps if f else cs for cs, ps, f in zip(cols["cseq"], cols["pseq"], p2p)] if any(p2p) else cols["cseq"]
    if any(i[1] for i in info.values()):  # gloo: completion from `retired`
        gloo = list(map({p: i[1] for p, i in info.items()}.__getitem__, pnames))
        states = [_STATES.get((s, r is True, g), "unknown") for s, r, g in zip(cols["state"], cols["retired"], gloo)]
    else:
        ours = {s: _STATES.get((s, False, False), "unknown") for s in set(cols["state"])}  # plain values
        states = list(map(ours.__getitem__, cols["state"]))
    dt = _DtypeNames()
    first_in = _firsts(cols["in_dtypes"])
    _plain_values("input_dtypes", first_in)
    dtypes = list(map(dt.__getitem__, first_in))
    if None in first_in:  # no input tensors (recv, barrier): the output's dtype
        first_out = _firsts(cols["out_dtypes"])
        _plain_values("output_dtypes", first_out)
        dtypes = [d if d is not None else dt[o] for d, o in zip(dtypes, first_out)]
    pairs = list(zip(cols["pg_name"], cols["pg_desc"]))
    index = {k: i for i, k in enumerate(dict.fromkeys(pairs))}
    pg_key = list(map(index.__getitem__, pairs))
    frames = cols["frames"]
    budget = safe_pickle.element_budget(256 * n)
    in_shapes, in_numel = _shapes(cols["in_shapes"], "input_sizes", budget)
    out_shapes, out_numel = _shapes(cols["out_shapes"], "output_sizes", budget)
    table = pa.Table.from_pydict(
        {
            "rank": pa.repeat(pa.scalar(rank, pa.int64()), n),
            "pg_key": pg_key,
            "seq": seq,
            "op": ops,
            "dtype": dtypes,
            "in_shapes": in_shapes,
            "out_shapes": out_shapes,
            "in_numel": in_numel,
            "out_numel": out_numel,
            "peer_local": [info[p][2] for p in pnames] if any_p2p else pa.nulls(n, pa.int64()),
            "t_issue": pa.nulls(n, pa.float64()),
            "state": states,
            "record_id": cols["record_id"],
            "call_site": (_call_sites(frames, list(zip(pg_key, pnames))) if any(f is not None for f in frames)
                          else pa.nulls(n, pa.string())),
        },
        schema=_PART,
    )
    created = pa.array(cols["created_ns"], pa.int64())
    t_issue = pc.if_else(pc.greater(created, 0), pc.multiply(pc.cast(created, pa.float64(), safe=False), 1e-9), None)
    table = table.set_column(10, "t_issue", t_issue)
    return table, [(name, None if desc is None else str(desc)) for name, desc in index]


# (FR state, retired, recorded by gloo) -> our state. gloo never updates `state` (it has no device
# events), so there `retired` is the completion signal. Elsewhere retired-but-"scheduled" is a call the
# watchdog gave up on (timed out): it never started, so it stays "issued".
_STATES: dict[tuple[Any, bool, bool], str] = {
    (s, r, g): ("completed" if (g and r) else "issued") if s == "scheduled" else normalize_state(s)
    for s in ("scheduled", "started", "completed")
    for r in (False, True)
    for g in (False, True)
}


def _op_info(pname: Any) -> tuple[str, bool, int | None]:
    """'nccl:send 0->1' -> ('send', False, 1): our op, whether gloo recorded it, the group-local peer."""
    backend, op, meta = _bare_op(pname)
    op = normalize_op(op) if op else "unknown"
    peer = None
    if op in P2P_OPS:  # "send me->peer", "recv me<-peer", in group ranks
        m = re.fullmatch(r"\s*\d+\s*(?:->|<-)\s*(\d+)\s*", meta)
        peer = int(m.group(1)) if m else None
    return op, backend == "gloo", peer


class _DtypeNames(dict):
    def __missing__(self, key: Any) -> str | None:
        value = None if key is None else normalize_dtype(str(key))
        self[key] = value
        return value


def _shapes(col: list | tuple, key: str, budget: int) -> tuple[pa.Array, pa.Array]:
    """Per entry, its tensors' shapes as Arrow (list of lists of int64) and its element count: the sum over
    its tensors of the product of their dims; both null where the shapes are unknown.

    The one field walked in full, so it is bounded as it is walked, level by level and each level counted
    before it is expanded: tensors per call, dims per tensor, elements in all (a list shared by many
    entries counted each time), and ints at the bottom. _BadDump ("refused: ...") past a bound."""
    kinds = set(map(type, col))
    if not kinds <= {list, tuple, _NONE}:
        raise _BadDump(f"refused: {key} is not a list of shapes per entry")
    null = None
    if _NONE in kinds:
        null = np.array([x is None for x in col])
        col = [() if x is None else x for x in col]
    per_call = np.array(list(map(len, col)), np.int64)
    _bounded(key, per_call, _MAX_TENSORS, "tensors in one call", budget)
    tensors = list(chain.from_iterable(col))
    if not set(map(type, tensors)) <= {list, tuple}:
        raise _BadDump(f"refused: {key} holds a tensor shape that is not a list of dims")
    per_tensor = np.array(list(map(len, tensors)), np.int64)
    _bounded(key, per_tensor, _MAX_DIMS, "dims in one shape", budget - int(per_call.sum()))
    dims = list(chain.from_iterable(tensors))
    if not set(map(type, dims)) <= {int}:
        raise _BadDump(f"refused: {key} holds a dim that is not an integer")
    try:
        values = np.array(dims, np.int64)
    except OverflowError:
        raise _BadDump(f"refused: {key} holds a dim beyond 64 bits") from None
    inner_off = np.zeros(len(tensors) + 1, np.int32)
    np.cumsum(per_tensor, out=inner_off[1:])
    outer_off = np.zeros(len(col) + 1, np.int32)
    np.cumsum(per_call, out=outer_off[1:])
    inner = pa.ListArray.from_arrays(pa.array(inner_off), pa.array(values))
    shapes = pa.ListArray.from_arrays(pa.array(outer_off), inner, mask=None if null is None else pa.array(null))
    # products per tensor (a 0-dim tensor, shape [], holds one element), then sums per call
    prod = _sum_or_product(np.multiply, values, inner_off, per_tensor, 1)
    numel = _sum_or_product(np.add, prod, outer_off, per_call, 0)
    return shapes, pa.array(numel, mask=null)


def _sum_or_product(op: np.ufunc, values: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, empty: int) -> np.ndarray:
    """op over each run values[offsets[i]:offsets[i+1]]; `empty` for a run of none."""
    if not values.size:
        return np.full(len(lengths), empty, np.int64)
    if lengths.all():
        return op.reduceat(values, offsets[:-1])
    out = np.full(len(lengths), empty, np.int64)
    has = lengths > 0
    out[has] = op.reduceat(values, offsets[:-1][has])
    return out


def _bounded(key: str, lengths: np.ndarray, most: int, what: str, budget: int) -> None:
    if lengths.size and int(lengths.max()) > most:
        raise _BadDump(f"refused: {key} holds {int(lengths.max()):,} {what} (at most {most:,})")
    if int(lengths.sum()) > budget:
        raise _BadDump(f"refused: {key} holds more than {budget:,} elements once shared lists are followed")


def _bare_op(pname: Any) -> tuple[str, str, str]:
    """'nccl:send 0->1' -> ('nccl', 'send', '0->1')."""
    name = str(pname or "")
    backend, sep, rest = name.partition(":")
    if not sep:
        backend, rest = "", name
    op, _, meta = rest.partition(" ")
    return backend.lower(), op, meta.strip()


def _has_coalesced(names: list, cseq: tuple, pnames: tuple, is_p2p: tuple) -> bool:
    """Cheap check: any "coalesced" entry, or two collective entries of one group with one seq."""
    distinct = set(pnames)
    if any("coalesced" in str(p) for p in distinct):
        return True
    p2p_names = {p for p in distinct if _op_info(p)[0] in P2P_OPS}
    if not p2p_names and not any(is_p2p):  # the common case, at C speed
        return len(set(zip(names, cseq))) < len(names)
    keys = [(g, s) for g, s, p, f in zip(names, cseq, pnames, is_p2p) if not (f or p in p2p_names)]
    return len(set(keys)) < len(keys)


def fold_coalesced(cols: dict[str, Any]) -> dict[str, list]:
    """Fold coalesced groups: entries of one group sharing a seq, usually closed by a "coalesced" entry.

    Collective members become one row named "<backend>:<op>_coalesced" when all share one op (else
    "<backend>:coalesced"), shapes concatenated; p2p members stay one row each. Both take the closing
    entry's state and retired flag: only it carries the device events. A closing entry without members
    (before dump version 2.7 collective members were not recorded) stays a "coalesced" row; a p2p one
    without members is dropped.
    """
    cols = {k: list(v) for k, v in cols.items()}
    n = len(cols["pname"])
    names = {p: (*_bare_op(p)[:2], _op_info(p)[0]) for p in set(cols["pname"])}  # few distinct names
    p2p = [bool(f) if f is not None else names[p][2] in P2P_OPS for f, p in zip(cols["is_p2p"], cols["pname"])]
    keep: list[int] = []
    member_ops: dict[int, set[str]] = {}  # kept collective row -> bare ops of its run
    folded: dict[int, str] = {}  # kept collective row that took members -> backend of the last one
    grown: set[tuple[str, int]] = set()  # (column, row) whose list is already a fresh copy to extend
    runs: dict[tuple[Any, bool], tuple[Any, list[int]]] = {}  # (pg, p2p) -> (seq, rows of the open run)
    for i in range(n):
        backend, op, ours = names[cols["pname"][i]]
        closing = ours == "coalesced"
        if cols["is_p2p"][i] is None and closing:  # before 2.2: p2p if it closes p2p
            open_p2p = runs.get((cols["pg_name"][i], True))
            p2p[i] = open_p2p is not None and open_p2p[0] == cols["pseq"][i]
        key = (cols["pg_name"][i], p2p[i])
        seq = cols["pseq"][i] if p2p[i] else cols["cseq"][i]
        run = runs.get(key)
        in_run = run is not None and run[0] == seq
        if closing:
            if in_run:
                for j in run[1]:
                    cols["state"][j], cols["retired"][j] = cols["state"][i], cols["retired"][i]
                runs.pop(key)
            elif not p2p[i]:
                keep.append(i)
            continue
        if in_run and not p2p[i]:
            j = run[1][0]
            member_ops[j].add(op)
            folded[j] = backend
            for k in ("in_shapes", "out_shapes", "in_dtypes", "out_dtypes"):
                if cols[k][i] is not None:
                    if (k, j) not in grown:  # copy once, then extend in place: linear in the run's length
                        cols[k][j] = list(cols[k][j] or [])
                        grown.add((k, j))
                    cols[k][j].extend(cols[k][i])
            continue
        keep.append(i)
        if in_run:
            run[1].append(i)
        else:
            runs[key] = (seq, [i])
            member_ops[i] = {op}
    for j, backend in folded.items():
        ops = member_ops[j]
        cols["pname"][j] = f"{backend}:{next(iter(ops)) + '_coalesced' if len(ops) == 1 else 'coalesced'}"
    return {k: [v[i] for i in keep] for k, v in cols.items()}


_RANK_SETS: dict[tuple[int, ...], tuple[int, ...]] = {}
_RANKS_OF: dict[str, tuple[int, ...] | None] = {}  # pg_config "ranks" text -> its parsed members


def _parse_file(path: str, rank: int) -> _Parsed:
    out = _Parsed(rank=rank, path=path)
    try:
        dump = load_dump(Path(path))
        out.version = None if dump.get("version") is None else str(dump["version"])
        lib = dump.get("comm_lib_version") or dump.get("nccl_version")
        out.comm_lib_version = str(lib) if lib else None
        cfg = dump.get("pg_config")
        for key, val in (cfg.items() if isinstance(cfg, dict) else ()):
            if not isinstance(val, dict) or not str(val.get("name", key)):
                continue  # gloo writes a single '' key with no ranks
            name = str(val.get("name", key))
            raw = val.get("ranks")
            # every rank file spells the world group's members alike: parsed once per process
            ranks = _RANKS_OF.get(raw) if type(raw) is str else None
            if ranks is None:
                ranks = _parse_ranks(raw)
                if type(raw) is str and len(_RANKS_OF) < 4096:
                    _RANKS_OF[raw] = ranks
            if ranks:
                # one object per distinct member set, so a chunk of results pickles each set once
                out.pg_ranks[name] = _RANK_SETS.setdefault(ranks, ranks)
            if val.get("desc") not in (None, ""):
                out.pg_desc[name] = str(val["desc"])
        out.table, out.pg_keys, out.backends, out.skipped = extract(dump, rank)
        if out.table.num_rows:
            out.first_record_id = pc.min(out.table.column("record_id")).as_py()
    except _BadDump as exc:
        out.error = str(exc)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, pa.ArrowException) as exc:
        out.error = f"unexpected layout ({type(exc).__name__}: {str(exc)[:100]})"
    return out


def _parse_chunk(items: list[tuple[str, int]]) -> list[_Parsed]:
    # Unpickling makes ~20 containers per entry; the cyclic GC rescanning them costs more than the
    # parse itself, and dumps hold no cycles, so it is off while parsing.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [_parse_file(p, r) for p, r in items]
    finally:
        if was_enabled:
            gc.enable()


def _parse_chunk_ipc(items: list[tuple[str, int]]) -> tuple[list[_Parsed], bytes]:
    """Worker side: the chunk's tables travel back as one Arrow IPC stream (one allocation to receive,
    read without copying) rather than as thousands of pickled buffers."""
    parsed = _parse_chunk(items)
    tables = [p.table for p in parsed if p.table is not None]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, _PART) as writer:
        for t in tables:
            writer.write_table(t)
    for p in parsed:
        p.table = None if p.table is None else p.table.num_rows  # type: ignore[assignment]
    return parsed, sink.getvalue().to_pybytes()


def _parse_all(items: list[tuple[str, int]]) -> list[_Parsed]:
    """Parse every file; in worker processes when there are many (unpickling is per-file CPU work)."""
    workers = min(os.cpu_count() or 1, 16)
    if len(items) >= _ANNOUNCE_FILES:
        announce(f"reading {len(items):,} Flight Recorder files" + (f" in {workers} processes" if workers > 1 else ""))
    if len(items) < _PARALLEL_MIN_FILES or workers < 2:
        return _parse_chunk(items)
    # Small chunks, so that the last one leaves the other workers idle for little time (a file is a few ms).
    size = max(1, math.ceil(len(items) / (workers * 16)))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    import multiprocessing as mp
    import threading

    import pandas  # noqa: F401  pyarrow imports it at its first pa.array of a list: once here, not per worker

    # fork is cheapest, but only safe while this process runs a single thread
    methods = mp.get_all_start_methods()
    method = "fork" if "fork" in methods and threading.active_count() == 1 else ("forkserver" if "forkserver" in methods else None)
    ctx = mp.get_context(method) if method else None
    out: list[_Parsed] = []
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for parsed, ipc in pool.map(_parse_chunk_ipc, chunks):
                table = pa.ipc.open_stream(pa.py_buffer(ipc)).read_all()
                offset = 0
                for p in parsed:
                    if p.table is not None:
                        rows = int(p.table)  # type: ignore[call-overload]
                        p.table = table.slice(offset, rows)
                        offset += rows
                out.extend(parsed)
    except (OSError, RuntimeError):  # no worker processes allowed here: do it inline
        return _parse_chunk(items)
    return out


# ----------------------------------------------------------------------------------------------------
# groups
# ----------------------------------------------------------------------------------------------------
def _fmt_ranks(ranks: Any) -> str:
    ranks = sorted(ranks)
    return ", ".join(map(str, ranks[:16])) + (f" ... ({len(ranks)} in all)" if len(ranks) > 16 else "")


def _clean_desc(desc: Any) -> str | None:
    return None if desc in (None, "", "undefined") else str(desc)


@dataclass
class _Group:
    id: str
    name: str
    desc: str | None
    ranks: tuple[int, ...]  # sorted members (from pg_config, or inferred)
    size: int
    from_config: bool  # members from pg_config rather than inferred from entries

    @property
    def complete(self) -> bool:
        """ranks lists every member."""
        return len(self.ranks) == self.size


def _pair_stats(t: pa.Table, pair: np.ndarray, n_pairs: int) -> tuple[np.ndarray, list[int]]:
    """Per (rank, pg) pair over the rows of every file: its first row, and the group size its all_gather
    (out = size x in) or reduce_scatter (in = size x out) calls imply (0 if none)."""
    first = np.full(n_pairs, len(pair), np.int64)
    first[pair[::-1]] = np.arange(len(pair) - 1, -1, -1)  # the last write of each pair wins: its first row
    implied = np.zeros(n_pairs, np.int64)
    op = t.column("op")
    gather = pc.is_in(op, value_set=pa.array(_GATHER_OPS)).to_numpy(zero_copy_only=False)
    scatter = pc.is_in(op, value_set=pa.array(_SCATTER_OPS)).to_numpy(zero_copy_only=False)
    if gather.any() or scatter.any():
        i_n = pc.fill_null(t.column("in_numel"), 0).to_numpy()
        o_n = pc.fill_null(t.column("out_numel"), 0).to_numpy()
        big, small = np.where(gather, o_n, i_n), np.where(gather, i_n, o_n)
        ok = (gather | scatter) & (small > 0) & (big > 0)
        ok[ok] = big[ok] % small[ok] == 0
        np.maximum.at(implied, pair[ok], big[ok] // np.maximum(small[ok], 1))
    return first, implied.tolist()


def resolve_groups(
    pairs: list[tuple[int, str, str | None]],
    parsed: list[_Parsed],
    implied: list[int],
    world: int,
    notes: list[str],
) -> tuple[list[_Group], list[int]]:
    """Groups, and for each (rank, pg name, pg desc) pair the index of its group.

    pg_config ranks win where a dump has them (one name can then stand for several groups, as with
    split_group). Otherwise (gloo) the members are the ranks whose files report the group, the default
    group spans the world, and the size is the larger of the member count and the largest size its
    all_gather / reduce_scatter shapes imply (`implied`, per pair).
    """
    cfg_ranks = {p.rank: p.pg_ranks for p in parsed}
    cfg_desc: dict[str, str] = {}
    for p in parsed:
        cfg_desc.update(p.pg_desc)
    reporters: dict[tuple[str, str | None], set[int]] = {}
    sizes: dict[tuple[str, str | None], int] = {}
    for (rank, name, desc), size in zip(pairs, implied):
        reporters.setdefault((name, desc), set()).add(rank)
        sizes[(name, desc)] = max(sizes.get((name, desc), 0), size)

    groups: list[_Group] = []
    where: dict[tuple[int, str, str | None], int] = {}
    inferred = 0
    for (name, raw_desc), seen in sorted(reporters.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        desc = _clean_desc(raw_desc) or _clean_desc(cfg_desc.get(name))
        by_cfg: dict[tuple[int, ...], set[int]] = {}
        rest: set[int] = set()
        for r in seen:
            members = cfg_ranks.get(r, {}).get(name)
            (by_cfg.setdefault(members, set()) if members else rest).add(r)
        index: dict[tuple[int, ...], int] = {}
        for members, rs in sorted(by_cfg.items()):
            groups.append(_Group(name, name, desc, members, len(members), True))
            index[members] = len(groups) - 1
            for r in rs:
                where[(r, name, raw_desc)] = index[members]
        for r in sorted(rest):
            fits = [m for m in index if r in m]
            if len(fits) == 1:
                where[(r, name, raw_desc)] = index[fits[0]]
                rest.discard(r)
        if not rest:
            continue
        size = max(len(rest), sizes.get((name, raw_desc), 0))
        if desc == "default_pg":
            size = max(size, world)
            members = tuple(range(size))
        else:
            members = tuple(sorted(rest))
            if size > len(members):
                notes.append(
                    f"group {name} ({desc or 'no description'}): its calls imply {size} members but only "
                    f"rank(s) {_fmt_ranks(members)} left entries for it; membership incomplete"
                )
        groups.append(_Group(name, name, desc, members, size, False))
        inferred += 1
        for r in rest:
            where[(r, name, raw_desc)] = len(groups) - 1
    count: dict[str, int] = {}
    for g in groups:
        count[g.name] = count.get(g.name, 0) + 1
    for g in groups:  # ids: the FR pg name, made unique where one name stands for several groups
        if count[g.name] > 1:
            g.id = f"{g.name}#{g.ranks[0]}"
    if inferred:
        notes.append(
            f"pg_config holds no ranks (as gloo writes it): members of {inferred} group(s) inferred from "
            "which rank files report them, group sizes from all_gather/reduce_scatter shapes"
        )
    return groups, [where[p] for p in pairs]


# ----------------------------------------------------------------------------------------------------
# assembly
# ----------------------------------------------------------------------------------------------------
def assemble(parsed: list[_Parsed], world: int, notes: list[str]) -> tuple[pa.Table, list[_Group]]:
    """The collectives table: every file's rows plus group columns, resolved over (rank, pg) pairs and
    gathered onto the rows in one go. A group's members are listed once in all (schema: group_ranks), on
    the first row of the lowest rank that reports it."""
    parsed = [p for p in parsed if p.table is not None and p.table.num_rows]
    pairs = [(p.rank, name, desc) for p in parsed for name, desc in p.pg_keys]
    t = pa.concat_tables([p.table for p in parsed]).combine_chunks()  # one chunk per column, not per file
    n = t.num_rows
    rows = np.array([p.table.num_rows for p in parsed], np.int64)
    key0 = np.cumsum([0] + [len(p.pg_keys) for p in parsed])[:-1]  # each file's first pair
    pair = t.column("pg_key").to_numpy().astype(np.int64)
    pair += np.repeat(key0, rows)
    pair_first_row, implied = _pair_stats(t, pair, len(pairs))
    groups, pair_group = resolve_groups(pairs, parsed, implied, world, notes)
    pair_group_a = np.array(pair_group, np.int32)
    gi = pair_group_a[pair]

    # group_ranks: the first row of each group's first pair (pairs come in rank order)
    first_pair = {}
    for k, g in enumerate(pair_group):
        first_pair.setdefault(g, k)
    listed_rows = pair_first_row[list(first_pair.values())]
    order = np.argsort(listed_rows)
    listed_groups = [groups[g] for g in first_pair]
    lengths = np.zeros(n, np.int64)
    lengths[listed_rows] = [len(g.ranks) for g in listed_groups]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((r for i in order.tolist() for r in listed_groups[i].ranks), np.int64)
    group_ranks = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=pa.array(lengths == 0))

    where: dict[int, dict[int, int]] = {}  # group -> {rank: its index among the members}
    rank_in = []
    for (rank, _, _), g in zip(pairs, pair_group):
        if g not in where:
            where[g] = {r: i for i, r in enumerate(groups[g].ranks)}
        rank_in.append(where[g].get(rank))
    descs = list(dict.fromkeys(g.desc for g in groups if g.desc is not None))
    desc_at = {d: i for i, d in enumerate(descs)}
    desc = np.array([desc_at.get(g.desc, -1) for g in groups], np.int32)[gi]
    peers = t.column("peer_local")
    if peers.null_count < n:  # group-local p2p peers -> global ranks
        glob = []
        for g, loc in zip(gi.tolist(), peers.to_pylist()):
            grp = groups[g]
            glob.append(grp.ranks[loc] if loc is not None and grp.complete and 0 <= loc < len(grp.ranks) else None)
        peers = pa.array(glob, pa.int64())
    cols = {
        "host": null_column(n, _dict),
        "rank": t.column("rank"),
        "pid": null_column(n, pa.int64()),
        "group": pa.DictionaryArray.from_arrays(pa.array(gi), pa.array([g.id for g in groups], pa.string())),
        "group_desc": pa.DictionaryArray.from_arrays(pa.array(desc, mask=desc < 0), pa.array(descs, pa.string())),
        "group_ranks": group_ranks,
        "group_size": pa.array(np.array([g.size for g in groups], np.int64)[gi]),
        "rank_in_group": pa.array(rank_in, pa.int64()).take(pa.array(pair)),
        "seq": t.column("seq"),
        "op": t.column("op"),
        "reduce_op": null_column(n, _dict),
        "dtype": t.column("dtype"),
        "in_shapes": t.column("in_shapes"),
        "out_shapes": t.column("out_shapes"),
        "in_numel": t.column("in_numel"),
        "out_numel": t.column("out_numel"),
        "peer": peers,
        "t_issue": t.column("t_issue"),
        "state": t.column("state"),
        "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([SOURCE])),
        "record_id": t.column("record_id"),
        "call_site": t.column("call_site"),
    }
    return pa.table(cols, schema=COLLECTIVES), groups


def _version_tuple(version: Any) -> tuple[int, int] | None:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(version))
    return (int(m.group(1)), int(m.group(2))) if m else None


def read(files: list[Path]) -> Bundle:
    """All rank files of one dump set -> a bundle with the collectives table and notes."""
    t0 = time.monotonic()
    notes: list[str] = []
    by_rank: dict[int, Path] = {}
    for f in sorted(Path(x) for x in files):
        r = rank_of(f)
        if r is None:
            notes.append(f"{f}: cannot tell the rank from the file name (expected a prefix followed by the rank number); skipped")
        elif r in by_rank:
            notes.append(f"{f}: a second file for rank {r} (first: {by_rank[r].name}); skipped")
        else:
            by_rank[r] = f
    parsed = _parse_all([(str(p), r) for r, p in sorted(by_rank.items())])
    good = [p for p in parsed if p.table is not None]
    notes.extend(f"{p.path}: rank {p.rank} skipped: {p.error}" for p in parsed if p.error)
    if not good:
        reason = next((p.error for p in parsed if p.error), None) or "no rank number in the file names"
        raise InputError(f"{len(files)} Flight Recorder file{'s' if len(files) != 1 else ''}, none readable: {reason}")

    versions = sorted({p.version or "?" for p in good})
    for v in versions:
        vt = _version_tuple(v)
        if vt is None or vt > NEWEST_KNOWN_VERSION:
            notes.append(f"Flight Recorder dump version {v} is not one hangdoc knows (up to 2.10); read by key names")
    if len(versions) > 1:
        notes.append(f"rank files carry different dump versions: {', '.join(versions)}")
    notes.extend(
        f"{p.path}: {p.skipped:,} entries without a profiling name, sequence number or process group; left out"
        for p in good if p.skipped
    )
    empty_ranks = [p.rank for p in good if p.table.num_rows == 0 and not p.skipped]
    if empty_ranks:
        notes.append(f"rank(s) {_fmt_ranks(empty_ranks)}: Flight Recorder buffer is empty (recording off? set TORCH_FR_BUFFER_SIZE)")
    wrapped = [p.rank for p in good if p.first_record_id]
    if wrapped:
        notes.append(
            f"ring buffer wrapped on rank(s) {_fmt_ranks(wrapped)}: their oldest calls are gone; rows align by "
            "per-group sequence numbers, so a rank's first retained seq can differ from its peers'"
        )

    world = max([max(by_rank) + 1] + [max(m) + 1 for p in good for m in p.pg_ranks.values()])
    groups: list[_Group] = []
    if any(p.table.num_rows for p in good):
        table, groups = assemble(good, world, notes)
        world = max([world] + [g.size for g in groups if g.desc == "default_pg"])
        if any("gloo" in p.backends for p in good):
            notes.append(
                "gloo entries: 'state' stays 'scheduled', so a call counts as completed once 'retired' "
                "(gloo also retires a call that failed, e.g. timed out)"
            )
    else:
        table = empty("collectives")
    missing = sorted(set(range(world)) - set(by_rank))
    empty_files = _empty_siblings(by_rank.values(), missing)
    if empty_files:
        names = ", ".join(p.name for p in empty_files.values())
        notes.append(f"rank(s) {_fmt_ranks(empty_files)}: Flight Recorder file is empty ({names}: 0 bytes, nothing "
                     "was written into it)")
        missing = [r for r in missing if r not in empty_files]
    if missing:
        notes.append(f"no Flight Recorder file for rank(s) {_fmt_ranks(missing)} (world size {world})")
    if missing or empty_files:
        if any(not g.from_config and g.desc != "default_pg" for g in groups):
            notes.append(
                "groups inferred from entries cannot list members whose files are missing: their sizes "
                "are lower bounds unless an all_gather/reduce_scatter shape gives them"
            )

    bundle = Bundle()
    bundle.add("collectives", table)
    for note in notes:
        bundle.note(note)
    bundle.record_collector(
        NAME,
        ran=True,
        seconds=time.monotonic() - t0,
        notes=[f"{len(good)} rank file{'s' if len(good) != 1 else ''}, {table.num_rows} rows, "
               f"dump version{'s' if len(versions) != 1 else ''} {', '.join(versions)}"]
        + [f"communication library version {v}" for v in sorted({p.comm_lib_version for p in good if p.comm_lib_version})],
    )
    return bundle
