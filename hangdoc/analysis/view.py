"""The collectives table as integer arrays, computed once and shared by every collective pass.

Everything here is columnar (numpy over whole columns): communicator codes from (group, group_ranks),
a per-row call signature, per-(communicator, rank) summaries and the per-position agreement check, so a
16k-rank x 2k-call table is a few vectorised sweeps rather than Python loops over rows or rank pairs.
Only the few rows a finding quotes are ever turned into Python objects (OpCall).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hangdoc.analysis.groups import Comm, CommSpec, build_comms, rank_labels
from hangdoc.bundle import take_rows
from hangdoc.analysis.model import OpCall
from hangdoc.importers import logfacts
from hangdoc.importers.ops import normalize_dtype, normalize_op, normalize_reduce_op, normalize_state
from hangdoc.progress import announce
from hangdoc.schema import TABLES, conform, empty

# Which element count must agree across members, per op (the others compare op and dtype only).
IN_NUMEL_OPS = frozenset({"all_reduce", "broadcast", "reduce", "all_gather", "gather"})
OUT_NUMEL_OPS = frozenset({"reduce_scatter", "scatter"})
REDUCING_OPS = frozenset({"all_reduce", "reduce", "reduce_scatter", "reduce_scatterv"})
P2P_OPS = frozenset({"send", "recv"})

ISSUED, STARTED, COMPLETED, UNKNOWN = 0, 1, 2, 3
_STATE_CODE = {"issued": ISSUED, "started": STARTED, "timed_out": STARTED, "completed": COMPLETED, "unknown": UNKNOWN}
_NONE = np.iinfo(np.int64).max
_NUMEL_BITS = 44  # element counts up to 17.6e12 are told apart exactly
_NUMEL_MASK = (1 << _NUMEL_BITS) - 1
_SLICE = 1 << 16  # rows per step of the per-row loops
_ANNOUNCE_ROWS = 4_000_000  # about a second of aligning: say so on stderr


def _mix(v: np.ndarray) -> np.ndarray:
    """A 64-bit integer hash (splitmix64 finaliser), so a sum over members identifies a member set."""
    x = (v.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return x


# Some columns of some table rows, by column name (a bundle may read them from disk only when asked).
Fetch = Callable[[Sequence[str], np.ndarray], "dict[str, pa.Array]"]


@dataclass(frozen=True)
class Conflict:
    """Members of one communicator posted different calls where they must post the same one."""

    comm: int
    at_frontier: bool  # True: the calls the members are stuck in; False: an earlier position in history
    seq: int | None  # where the majority (or, on a tie, the lowest side) stands
    culprits: tuple[int, ...]  # the minority; on a tie every voter
    majority: tuple[int, ...]
    tie: bool
    rows: tuple[int, ...]  # one row per voter (view row indices)
    history_first_seq: int | None  # first position whose members disagree, if any
    history_positions: int  # how many positions disagree
    in_flight: tuple[int, ...] = ()  # voters stuck in their call (frontier conflicts); the others completed it
    behind: dict[int, int] | None = None  # a tie broken by calls posted: rank -> highest seq, the culprit's lowest


@dataclass
class CollectiveView:
    """Arrays over the rows of the collectives table (rows without rank or seq dropped) and per
    (communicator, rank) 'pairs'. Built by `build`; passes read it, never mutate it."""

    table: pa.Table
    row_ids: np.ndarray | None  # view row -> table row (None: the same)
    rank: np.ndarray
    seq: np.ndarray
    pair: np.ndarray  # view row -> pair
    sig: np.ndarray  # what must match between members: op class, reduce op, dtype, compared element count
    state: np.ndarray
    done: np.ndarray  # bool: the call is known (or inferred) to have completed
    pos: np.ndarray  # view row -> dense (communicator, seq) position
    bad_pos: np.ndarray  # sorted positions whose members disagree
    comms: list[Comm]
    pair_comm: np.ndarray
    pair_rank: np.ndarray
    pair_rows: np.ndarray  # rows recorded
    pair_maxseq: np.ndarray  # calls made on the communicator (highest seq)
    pair_done: np.ndarray  # calls completed before the first in-flight one
    pair_front: np.ndarray  # seq of the first call not completed, or 0
    pair_front_row: np.ndarray  # its view row, or -1
    pair_last_row: np.ndarray  # view row of the highest seq
    comm_first_bad: np.ndarray  # first disagreeing seq per communicator, or 0
    comm_first_bad_pos: np.ndarray  # its position, or -1
    comm_bad: np.ndarray  # disagreeing positions per communicator
    world_size: int
    dropped_rows: int = 0
    fetch: Fetch | None = None  # table rows of some columns; default: from `table` (see Bundle.take)
    # The rows of the table that passes reading it whole need: one per distinct (host, pid, rank), every row
    # read from a log line. It stands in for the table when that stays on disk (Context.table).
    digest: pa.Table | None = field(default=None, repr=False)
    _calls: dict[int, OpCall] = field(default_factory=dict, repr=False)

    # --- sizes ----------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return int(self.rank.size)

    @cached_property
    def ranks(self) -> tuple[int, ...]:
        """Ranks that left at least one row."""
        return tuple(int(r) for r in np.unique(self.pair_rank))

    @cached_property
    def missing_ranks(self) -> tuple[int, ...]:
        """Ranks that are members of some communicator (or below the world size) yet left no rows."""
        expected = set(range(self.world_size))
        for c in self.comms:
            if c.members_known:
                expected.update(c.members)
        return tuple(sorted(expected - set(self.ranks)))

    @cached_property
    def sources(self) -> frozenset[str]:
        """Where the rows come from ('flight-recorder', 'c10d-watchdog' ...), read from each pair's last row."""
        col = self._get(["source"], self.table_rows(self.pair_last_row))["source"]
        return frozenset(s for s in col.to_pylist() if s)

    @cached_property
    def labels(self) -> dict[int, str]:
        return rank_labels(self.comms)

    def label(self, rank: int) -> str:
        """'global rank 6 (DP 1, TP rank 2)'."""
        coord = self.labels.get(rank)
        return f"global rank {rank} ({coord})" if coord else f"global rank {rank}"

    @cached_property
    def aligned(self) -> np.ndarray:
        """Per communicator: do its members' calls line up by seq? Not so for the p2p channel of a group of
        more than two ranks (each rank counts its own sends and receives, to and from different peers)."""
        return np.array([not (c.p2p and len(c.members) != 2) for c in self.comms], dtype=bool)

    @cached_property
    def pair_posted(self) -> np.ndarray:
        """Per pair, the calls its rank posted on the communicator: the highest seq among rows that record
        calls (see records_calls). Only pairs whose highest row is log-derived are looked at row by row."""
        last = self.pair_last_row
        src = self._get(["source"], self.table_rows(last))["source"].to_pylist()
        odd = np.flatnonzero([not records_calls(s) for s in src])
        if not odd.size:
            return self.pair_maxseq
        rows = np.flatnonzero(np.isin(self.pair, odd))
        src = self._get(["source"], self.table_rows(rows))["source"].to_pylist()
        rows = rows[[records_calls(s) for s in src]]
        posted = self.pair_maxseq.copy()
        posted[odd] = 0
        np.maximum.at(posted, self.pair[rows], self.seq[rows].astype(np.int64))
        return posted

    # --- pairs ----------------------------------------------------------------------------------
    @cached_property
    def _pairs_by_comm(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.pair_comm, kind="stable")
        starts = np.searchsorted(self.pair_comm[order], np.arange(len(self.comms) + 1))
        return order, starts

    def comm_pairs(self, comm: int) -> np.ndarray:
        """Pair indices of one communicator."""
        order, starts = self._pairs_by_comm
        return order[starts[comm] : starts[comm + 1]]

    @cached_property
    def _pairs_by_rank(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for p, r in enumerate(self.pair_rank.tolist()):
            out.setdefault(r, []).append(p)
        return out

    def rank_pairs(self, rank: int) -> list[int]:
        return self._pairs_by_rank.get(rank, [])

    def pair_of(self, comm: int, rank: int) -> int | None:
        for p in self.comm_pairs(comm).tolist():
            if int(self.pair_rank[p]) == rank:
                return p
        return None

    def times(self, rows: Sequence[int]) -> np.ndarray:
        """t_issue of view rows (NaN where unknown)."""
        col = self._get(["t_issue"], self.table_rows(rows))["t_issue"]
        return pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False).astype(float)

    def frontiers_of(self, rank: int) -> list[int]:
        """Pairs in which `rank` has a call in flight, oldest call first."""
        ps = [p for p in self.rank_pairs(rank) if self.pair_front_row[p] >= 0]
        if not ps:
            return []
        when = np.nan_to_num(self.times([int(self.pair_front_row[p]) for p in ps]), nan=np.inf)
        return [p for _, _, p in sorted(zip(when.tolist(), (self.comms[int(self.pair_comm[p])].id for p in ps), ps))]

    def table_rows(self, rows: Sequence[int]) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return rows if self.row_ids is None else self.row_ids[rows]

    # --- calls as objects -----------------------------------------------------------------------
    def calls(self, rows: Iterable[int], *, labels_only: bool = False) -> list[OpCall]:
        """OpCalls for view rows (cached; only ever asked for the few rows a finding quotes). `labels_only`:
        calls good for label() and state only, not cached (every rank's position: output shapes and counts of
        every row group would be read for nothing)."""
        rows = [int(r) for r in rows]
        need = sorted({r for r in rows if r not in self._calls})
        made: dict[int, OpCall] = {}
        if need:
            ids = self.table_rows(need)
            names = ("op", "reduce_op", "dtype", "in_shapes", "in_numel", "state")
            names += () if labels_only else ("out_shapes", "out_numel")
            got = self._get(names, ids)
            cols = {name: got[name].to_pylist() for name in names}
            cols["rank"], cols["seq"] = self.rank[need].tolist(), self.seq[need].tolist()  # not read again
            out_shapes, out_numel = cols.get("out_shapes"), cols.get("out_numel")
            for i, r in enumerate(need):
                op = normalize_op(cols["op"][i]) if cols["op"][i] else "unknown"
                red = cols["reduce_op"][i]
                dtype = cols["dtype"][i]
                state = cols["state"][i]
                made[r] = OpCall(
                    rank=cols["rank"][i],
                    seq=cols["seq"][i],
                    op=op,
                    reduce_op=normalize_reduce_op(red) if red and op in REDUCING_OPS else None,
                    dtype=normalize_dtype(dtype) if dtype else None,
                    in_shapes=tuple(tuple(s) for s in (cols["in_shapes"][i] or ()) if s is not None),
                    out_shapes=tuple(tuple(s) for s in (out_shapes[i] or ()) if s is not None) if out_shapes else (),
                    in_numel=cols["in_numel"][i],
                    out_numel=out_numel[i] if out_numel else None,
                    state=normalize_state(state) if state else "unknown",
                )
            if not labels_only:
                self._calls.update(made)
        return [self._calls[r] if r in self._calls else made[r] for r in rows]

    def values(self, names: Sequence[str], rows: Sequence[int]) -> dict[str, list]:
        """Some columns of a few view rows, as Python lists."""
        got = self._get(names, self.table_rows(rows))
        return {name: got[name].to_pylist() for name in names}

    def _get(self, names: Sequence[str], table_rows: np.ndarray) -> dict[str, pa.Array]:
        return _fetcher(self.table, self.fetch)(names, table_rows)

    def call(self, row: int) -> OpCall:
        return self.calls([row])[0]

    def same_call(self, a: int, b: int) -> bool:
        """Do two rows post calls that can match (same op, reduce op, dtype and the size that must agree)?"""
        return bool(self.sig[a] == self.sig[b])

    # --- shared results of the collective passes (computed on first use) --------------------------
    @cached_property
    def conflicts(self) -> list[Conflict]:
        from hangdoc.analysis.align import find_conflicts

        return find_conflicts(self)

    @cached_property
    def waits(self):  # -> hangdoc.analysis.waits.WaitGraph
        from hangdoc.analysis.waits import build_wait_graph

        return build_wait_graph(self)


_CODED = ("op", "reduce_op", "dtype", "state", "group", "host", "source")
# The columns the view reads for every row: the rest are fetched for the few rows that need them.
SCANNED = ("rank", "seq", "op", "reduce_op", "dtype", "state", "group", "group_ranks", "in_numel", "out_numel",
           "host", "pid", "source")
_NO_GROUP = (1 << 31) - 1  # group name id of rows without one (the last name, once the names are counted)
_CLASSES = 1 << (63 - _NUMEL_BITS)  # call classes a signature tells apart next to its element count

# Batches of some columns of the collectives table (a bundle reads them from disk a row group at a time).
Scan = Callable[[Sequence[str]], Iterable[pa.RecordBatch]]


def records_calls(source: str | None) -> bool:
    """Does a row of this source record a call its rank posted? Traces, Flight Recorder dumps and hand-built
    rows do. A row read from a log line ("... timed out waiting in all_reduce SeqNum 11") is evidence about
    one call, and a log need not show every call, so it never raises a rank's count of posted calls."""
    return not source or "log" not in source.lower()


def _coded(b: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with its string columns dictionary-encoded (bundle tables already are; hand-built ones may
    not be)."""
    for name in _CODED:
        i = b.schema.get_field_index(name)
        if not pa.types.is_dictionary(b.column(i).type):
            b = b.set_column(i, name, b.column(i).cast(pa.dictionary(pa.int32(), pa.string())))
    return b


def _local_codes(col: pa.DictionaryArray) -> np.ndarray:
    """The indices of one batch's dictionary column, null -> len(dictionary) (the lookup tables' last entry)."""
    idx = col.indices
    if idx.null_count:
        idx = pc.fill_null(idx, len(col.dictionary))
    return idx.to_numpy()


def _int_values(col: pa.Array, fill: int) -> np.ndarray:
    if col.null_count:
        col = pc.fill_null(col, fill)
    return col.to_numpy().astype(np.int64, copy=False)


def _fit(a: np.ndarray, top: int) -> np.ndarray:
    """`a`, widened to int64 when `top` does not fit its int32."""
    return a.astype(np.int64) if top >= 1 << 31 and a.dtype != np.int64 else a


@dataclass
class _Batch:
    """One batch's dictionary codes mapped to the view's: per local code (null last), what the view needs."""

    op_cls: np.ndarray  # call class (send and recv match) id of each op
    rule: np.ndarray  # 1: in_numel must agree, 2: out_numel, 0: neither
    p2p: np.ndarray
    reducing: np.ndarray
    red: np.ndarray  # reduce op id (counted for reducing ops only)
    dtype: np.ndarray
    state: np.ndarray
    group: np.ndarray  # group name id, _NO_GROUP for null
    log: np.ndarray  # source is a log line


class _Dictionaries:
    """Global ids of the dictionary values met batch by batch (in order of first appearance, as one pass over
    the whole table's dictionaries would number them)."""

    def __init__(self) -> None:
        self.ids: dict[str, dict] = {c: {} for c in ("cls", "red", "dtype", "group")}

    def _id(self, kind: str, value) -> int:
        return self.ids[kind].setdefault(value, len(self.ids[kind]))

    def batch(self, b: pa.RecordBatch) -> _Batch:
        def values(name: str) -> list:
            return b.column(name).dictionary.to_pylist() + [None]

        ops = [normalize_op(o) if o else "unknown" for o in values("op")]
        group_ids = {c: self._id("group", c) for c in values("group")[:-1]}
        return _Batch(
            op_cls=np.array([self._id("cls", "p2p" if c in P2P_OPS else c) for c in ops], np.int64),
            rule=np.array([1 if c in IN_NUMEL_OPS else 2 if c in OUT_NUMEL_OPS else 0 for c in ops], np.int8),
            p2p=np.array([c in P2P_OPS for c in ops], np.int64),
            reducing=np.array([c in REDUCING_OPS for c in ops]),
            red=np.array([self._id("red", normalize_reduce_op(x) if x else "") for x in values("reduce_op")], np.int64),
            dtype=np.array([self._id("dtype", normalize_dtype(x) if x else "") for x in values("dtype")], np.int64),
            state=np.array([_STATE_CODE[normalize_state(x)] if x else UNKNOWN for x in values("state")], np.int8),
            group=np.array([group_ids[v] if v is not None else _NO_GROUP for v in values("group")], np.int64),
            log=np.array([x in logfacts.SOURCES or not records_calls(x) for x in values("source")], bool),
        )


def _digest_part(b: pa.RecordBatch, log: np.ndarray, start: int) -> tuple[pa.Table, np.ndarray]:
    """The rows of a batch that stand for it in the digest (see CollectiveView.digest): where host, pid or
    rank changes (rows come grouped by process), distinct; and the table rows read from log lines."""
    host = _local_codes(b.column("host"))
    pid = _int_values(b.column("pid"), -1)
    rank = _int_values(b.column("rank"), -1)
    change = np.ones(b.num_rows, bool)
    change[1:] = (host[1:] != host[:-1]) | (pid[1:] != pid[:-1]) | (rank[1:] != rank[:-1])
    who = pa.Table.from_batches([b.select(["host", "pid", "rank"]).filter(pa.array(change))])
    if who.num_rows > 4096:  # rows not grouped by process: keep each one once
        who = who.group_by(["host", "pid", "rank"], use_threads=False).aggregate([])
    return who, np.flatnonzero(log[_local_codes(b.column("source"))]) + start


def build(table: pa.Table, world_size_hint: int = 0, fetch: Fetch | None = None,
          scan: Scan | None = None) -> CollectiveView:
    """Vectorised precomputation over the whole collectives table.

    Row-level work goes batch by batch: `scan` hands the table over a row group at a time (a bundle reads
    it from disk so, never whole), each batch's dictionary codes go through small lookup tables into a few
    preallocated per-row arrays, so no full-size temporary is made per step (at 30M rows each one is
    hundreds of MB of fresh memory)."""
    total = table.num_rows
    if total >= _ANNOUNCE_ROWS:
        announce(f"aligning {total:,} collective calls")
    if scan is None:
        t = table
        if t.num_rows and t.column("rank").num_chunks > 64 and t.num_rows < 65536 * t.column("rank").num_chunks:
            t = t.select(list(SCANNED)).combine_chunks()  # many small chunks (a table per rank file): fewer, larger batches
        scan = lambda columns: (b for b in t.select(list(columns)).to_batches(max_chunksize=1 << 20) if b.num_rows)

    # Per-row arrays, as narrow as the values allow (each is n x 4 or 8 bytes of fresh memory).
    rank = np.empty(total, np.int32)
    seq = np.empty(total, np.int32)
    sig = np.empty(total, np.int64)
    state = np.empty(total, np.int8)
    pair = np.empty(total, np.int32)
    numels: np.ndarray | None = None  # element counts apart from the signatures: absurdly many call classes
    names = _Dictionaries()
    classes, pairs = _Codes(), _Codes()
    rank_max = 0
    steps = [0]  # rows of each slice: numpy temporaries of a slice stay in cache and in malloc's heap
    kept: list[tuple[int, int, np.ndarray | None]] = []  # per batch: first table row, rows, those kept (None: all)
    dropped = 0
    who: list[pa.Table] = []
    log_rows: list[np.ndarray] = []
    listed: list[np.ndarray] = []  # per batch, the first row of each pair that lists its group's members
    listings: list[pa.Array] = []
    start = 0  # table row of the batch
    for b in scan(SCANNED):
        b = _coded(b)
        lut = names.batch(b)
        part, logs = _digest_part(b, lut.log, start)
        who.append(part)
        log_rows.append(logs)
        # Rows without rank or seq have nothing to align by.
        rk, sq = b.column("rank"), b.column("seq")
        lo = [pc.min(c).as_py() for c in (rk, sq)]
        keep = None
        if rk.null_count or sq.null_count or any(v is not None and v < 0 for v in lo):
            keep = (_int_values(rk, -1) >= 0) & (_int_values(sq, -1) >= 0)
            dropped += int(keep.size - keep.sum())
            b = b.filter(pa.array(keep))
        size = b.num_rows if keep is None else keep.size
        kept.append((start, size, None if keep is None else np.flatnonzero(keep) + start))
        start += size
        if not b.num_rows:
            continue
        top_rank = pc.max(b.column("rank")).as_py()
        rank_max = max(rank_max, top_rank)
        rank = _fit(rank, top_rank)
        seq = _fit(seq, pc.max(b.column("seq")).as_py())
        first = steps[-1]
        valid = np.flatnonzero(b.column("group_ranks").is_valid().to_numpy(zero_copy_only=False))
        # Call class x reduce op (reducing ops only), per local (op, reduce op) code, scaled to leave room for
        # the dtype: the key of the class of each call.
        n_red, n_dt = len(names.ids["red"]) + 1, len(names.ids["dtype"])
        op_red = (lut.op_cls[:, None] * n_red + np.where(lut.reducing[:, None], lut.red[None, :] + 1, 0)).ravel() * n_dt
        for o in range(0, b.num_rows, _SLICE):
            s = b.slice(o, _SLICE)
            a, z = steps[-1], steps[-1] + s.num_rows
            steps.append(z)
            rb = s.column("rank").to_numpy()
            rank[a:z] = rb
            seq[a:z] = s.column("seq").to_numpy()
            op = _local_codes(s.column("op"))
            combo = op_red[op.astype(np.int64) * len(lut.red) + _local_codes(s.column("reduce_op"))]
            combo += lut.dtype[_local_codes(s.column("dtype"))]
            top = classes.codes(combo, lambda k, r=n_red, d=n_dt: (k // d // r, k // d % r, k % d)).astype(np.int64)
            r = lut.rule[op]
            in_n = _int_values(s.column("in_numel"), -1)
            numel = np.where(r == 1, in_n, np.where(r == 2, _int_values(s.column("out_numel"), -1), -1))
            # One int64 per call: what must match, the count in the low bits (-1, "not compared", is all ones).
            if numels is None and len(classes.ids) >= _CLASSES:
                numels = np.empty(total, np.int64)
                numels[:a] = sig[:a] & _NUMEL_MASK
                sig[:a] >>= _NUMEL_BITS
            if numels is not None:
                numels[a:z] = numel
            else:
                top <<= _NUMEL_BITS
                top |= numel & _NUMEL_MASK
            sig[a:z] = top
            state[a:z] = lut.state[_local_codes(s.column("state"))]
            # Pairs: one per (rank, recorder's group name); a process names each of its communicators uniquely.
            # p2p calls keep their own counter on a communicator (FR's p2p_seq_id): a channel of their own.
            g = _local_codes(s.column("group"))
            n_local = len(lut.group)
            key = (rb - rb.min()).astype(np.int64) * (2 * n_local)
            key += lut.p2p[op] * n_local
            key += g
            pair[a:z] = pairs.codes(key, lambda k, lo=int(rb.min()), n=n_local, gl=lut.group: (
                lo + k // (2 * n), k // n % 2, int(gl[k % n])))
        if valid.size:  # each pair's first listing in the batch, with the listing
            at = np.sort(np.unique(pair[first + valid], return_index=True)[1])
            listed.append(first + valid[at])
            listings.append(b.column("group_ranks").take(pa.array(valid[at])))
    n = steps[-1]
    rank, seq, sig, state, pair = rank[:n], seq[:n], sig[:n], state[:n], pair[:n]
    # view row -> table row, when rows were dropped
    row_ids = np.concatenate([np.arange(a, a + size) if k is None else k for a, size, k in kept]) if dropped else None
    del kept
    get = _fetcher(table, fetch)
    if numels is not None:
        sig = _hash_factorize(sig)[0].astype(np.int64) << _NUMEL_BITS
        sig |= numels[:n] & _NUMEL_MASK
        del numels
    g_names = list(names.ids["group"])
    n_names = len(g_names) + 1
    keys = pairs.sorted(pair)  # pair ids in (rank, p2p, group name) order, as a dense factorisation gives
    n_pairs = len(keys)
    pair_rank = np.array([k[0] for k in keys], np.int64)
    pair_gname = np.array([(k[2] if k[2] != _NO_GROUP else n_names - 1) + n_names * k[1] for k in keys], np.int64)
    digest = _digest(who, np.concatenate(log_rows) if log_rows else np.zeros(0, np.int64), get)

    # Each pair's first row, and the first row of each pair's (rank, group name) that lists the members (an
    # importer lists them on one row per communicator; a p2p channel's members are its communicator's).
    first = np.full(n_pairs, n, np.int64)
    for a, z in zip(steps[-2::-1], steps[:0:-1]):  # later slices first: earlier rows overwrite
        first[pair[a:z][::-1]] = np.arange(z - 1, a - 1, -1)
    first_listed = np.full(n_pairs, n, np.int64)
    listed_rows = np.concatenate(listed) if listed else np.zeros(0, np.int64)
    first_listed[pair[listed_rows][::-1]] = listed_rows[::-1]
    base, _ = _factorize(pair_rank * n_names + pair_gname % n_names)
    base_listed = np.full(n_pairs, n, np.int64)
    np.minimum.at(base_listed, base, first_listed)
    first_listed = base_listed[base]
    has_list = first_listed < n
    first_cols = get(["group_size", "group_desc"], _table_rows(row_ids, first))
    at = np.searchsorted(listed_rows, first_listed[has_list])
    which = np.full(n_pairs, -1, np.int64)
    which[has_list] = at
    all_listings = pa.concat_arrays(listings) if listings else pa.array([], pa.list_(pa.int64()))
    first_cols["group_ranks"] = all_listings.take(pa.array(which, mask=~has_list))
    del listed, listings, all_listings
    specs, pair_comm, world_size = _communicators(
        first_cols, pair_rank, pair_gname, g_names + [""], world_size_hint, int(rank_max)
    )
    comms = build_comms(specs, world_size)
    n_comms = len(comms)

    # Per-pair summaries.
    pair_rows = np.zeros(n_pairs, np.int64)
    for a in range(0, n, 1 << 20):  # in steps: bincount copies its input to int64 first
        pair_rows += np.bincount(pair[a : a + (1 << 20)], minlength=n_pairs)
    pair_maxseq = np.full(n_pairs, -1, seq.dtype)  # ufunc.at is fast only when the dtypes match
    np.maximum.at(pair_maxseq, pair, seq)
    pair_maxseq = pair_maxseq.astype(np.int64)
    top = np.iinfo(seq.dtype).max
    pair_minseq = np.full(n_pairs, top, seq.dtype)
    np.minimum.at(pair_minseq, pair, seq)
    pair_minseq = np.where(pair_minseq == top, _NONE, pair_minseq.astype(np.int64))

    # Dense (communicator, seq) positions; a sparse fallback keeps odd seq ranges from exploding memory.
    comm_min = np.full(n_comms, _NONE, np.int64)
    np.minimum.at(comm_min, pair_comm, pair_minseq)
    comm_max = np.full(n_comms, -1, np.int64)
    np.maximum.at(comm_max, pair_comm, pair_maxseq)
    span = np.maximum(comm_max - comm_min + 1, 0)
    if n_comms and int(span.sum()) <= 4 * n + 1_000_000:
        base_pos = np.concatenate([[0], np.cumsum(span)[:-1]])
        n_pos = int(span.sum())
        pos = np.empty(n, np.int32 if n_pos < 1 << 31 else np.int64)
        pair_off = (base_pos - comm_min)[pair_comm]
        if seq.dtype == pos.dtype:  # int32 sums: no int64 temporaries (the offsets lie within the seq range)
            pair_off = pair_off.astype(pos.dtype)
        for a, z in zip(steps[:-1], steps[1:]):
            np.add(pair_off[pair[a:z]], seq[a:z], out=pos[a:z], casting="unsafe")
        pos_comm = np.repeat(np.arange(n_comms), span)
    else:
        pos, uniq_pos = _hash_factorize(pair_comm[pair] * (1 << 40) + seq)
        pos = pos.astype(np.int64)
        n_pos = int(uniq_pos.size)
        pos_comm = (uniq_pos >> 40).astype(np.int64)
    # Positions whose members disagree: compare each row with one reference row per position.
    ref_sig = np.zeros(n_pos, np.int64)
    ref_sig[pos] = sig
    bad = [pos[a:z][sig[a:z] != ref_sig[pos[a:z]]] for a, z in zip(steps[:-1], steps[1:])]
    del ref_sig
    bad_pos = np.unique(np.concatenate(bad)) if bad else np.zeros(0, np.int64)
    bad_flag = np.zeros(n_pos, bool)
    bad_flag[bad_pos] = True
    comm_bad = np.bincount(pos_comm[bad_pos], minlength=n_comms)
    comm_first_bad = np.zeros(n_comms, np.int64)
    comm_first_bad_pos = np.full(n_comms, -1, np.int64)
    if bad_pos.size:
        bad_rows = np.nonzero(bad_flag[pos])[0]
        first_seq = np.full(n_comms, _NONE, np.int64)
        bad_comm = pair_comm[pair[bad_rows]]
        np.minimum.at(first_seq, bad_comm, seq[bad_rows].astype(np.int64))
        comm_first_bad = np.where(first_seq == _NONE, 0, first_seq)
        at_first = seq[bad_rows] == first_seq[bad_comm]
        comm_first_bad_pos[bad_comm[at_first]] = pos[bad_rows[at_first]]

    # Completion. With unknown states every call but a rank's last on a communicator completed. That last
    # one completed too when most members went past it and its position agrees (it was matched), or when
    # the rank issued a later call elsewhere: a rank blocks in one call at a time, so it has at most one
    # call in flight.
    done = state == COMPLETED
    last = np.empty(n, bool)
    for a, z in zip(steps[:-1], steps[1:]):
        np.equal(seq[a:z], pair_maxseq[pair[a:z]], out=last[a:z])
    unknown = state == UNKNOWN
    tail = np.zeros(0, np.int64)
    if unknown.any():
        done |= unknown & ~last
        tail = np.nonzero(unknown & last)[0]
    del unknown
    if tail.size:
        med = _upper_median_per_comm(pair_comm, pair_maxseq, n_comms)
        done[tail] = (seq[tail] < med[pair_comm[pair[tail]]]) & ~bad_flag[pos[tail]]
        # "Later" is the issue time, or the row order for a rank without times (traces are written in order).
        when = pc.fill_null(get(["t_issue"], _table_rows(row_ids, tail))["t_issue"], np.nan)
        when = when.to_numpy(zero_copy_only=False).astype(float)
        rk = rank[tail].astype(np.int64)
        untimed = np.zeros(int(rk.max()) + 1, bool)
        untimed[rk[np.isnan(when)]] = True
        when = np.where(untimed[rk], tail.astype(float), when)
        latest = np.full(untimed.size, -np.inf)
        np.maximum.at(latest, rk, when)
        done[tail] |= when < latest[rk]
    nd = np.nonzero(~done)[0]
    pair_front = np.full(n_pairs, _NONE, np.int64)
    np.minimum.at(pair_front, pair[nd], seq[nd].astype(np.int64))
    has_front = pair_front != _NONE
    pair_front_row = np.full(n_pairs, -1, np.int64)
    at_front = nd[seq[nd] == pair_front[pair[nd]]]
    pair_front_row[pair[at_front][::-1]] = at_front[::-1]
    pair_done = np.where(has_front, pair_front - 1, pair_maxseq)
    pair_front = np.where(has_front, pair_front, 0)
    pair_last_row = np.full(n_pairs, -1, np.int64)
    at_last = np.nonzero(last)[0]
    pair_last_row[pair[at_last]] = at_last

    return CollectiveView(
        table=table,
        row_ids=row_ids,
        rank=rank,
        seq=seq,
        pair=pair,
        sig=sig,
        state=state,
        done=done,
        pos=pos,
        bad_pos=bad_pos,
        comms=comms,
        pair_comm=pair_comm,
        pair_rank=pair_rank,
        pair_rows=pair_rows,
        pair_maxseq=pair_maxseq,
        pair_done=pair_done,
        pair_front=pair_front,
        pair_front_row=pair_front_row,
        pair_last_row=pair_last_row,
        comm_first_bad=comm_first_bad,
        comm_first_bad_pos=comm_first_bad_pos,
        comm_bad=comm_bad,
        world_size=world_size,
        dropped_rows=dropped,
        fetch=fetch,
        digest=digest,
    )


def _fetcher(table: pa.Table, fetch: Fetch | None) -> Fetch:
    """`fetch`, or rows taken from `table` itself."""
    return fetch or (lambda names, rows: {c: take_rows(table.column(c), rows) for c in names})


def _table_rows(row_ids: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    return rows if row_ids is None else row_ids[rows]


def _factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) of non-negative int keys; a dense lookup when their range is small (it is: rank x
    group name), a hash otherwise."""
    if keys.size == 0:
        return keys.astype(np.int32), keys
    top = int(keys.max()) + 1
    if top <= 4 * keys.size + (1 << 22):
        seen = np.zeros(top, bool)  # zero pages: only those the keys fall on are ever touched
        seen[keys] = True
        uniq = np.flatnonzero(seen)
        del seen
        code = np.zeros(top, np.int32 if uniq.size < 1 << 31 else np.int64)
        code[uniq] = np.arange(uniq.size)
        return code[keys], uniq
    codes, uniq = _hash_factorize(keys)
    return codes.astype(np.int32) if uniq.size < 1 << 31 else codes, uniq


class _Codes:
    """Dense ids of int keys met slice by slice: a slice of a table holds a few ranks, so each slice's keys
    are factorised over their own small range, in cache, and only its few distinct keys are named
    (`name(key)`: what the key stands for across slices) and looked up in a dict. `sorted` then renumbers
    the ids in the order of those names."""

    def __init__(self) -> None:
        self.ids: dict = {}

    def codes(self, key: np.ndarray, name: Callable[[int], Any]) -> np.ndarray:
        if not key.size:
            return key.astype(np.int32)
        lo, hi = int(key.min()), int(key.max())
        if hi - lo < 4 * key.size + (1 << 16):
            seen = np.zeros(hi - lo + 1, bool)
            seen[key - lo] = True
            local = np.flatnonzero(seen)
            table = np.zeros(hi - lo + 1, np.int32)
            table[local] = [self.ids.setdefault(name(k), len(self.ids)) for k in (local + lo).tolist()]
            return table[key - lo]
        local, inverse = np.unique(key, return_inverse=True)
        ids = np.array([self.ids.setdefault(name(k), len(self.ids)) for k in local.tolist()], np.int32)
        return ids[inverse.reshape(-1)]

    def sorted(self, pair: np.ndarray) -> list:
        """The names in ascending order; `pair` (the ids handed out) renumbered in place to match."""
        keys = list(self.ids)
        order = sorted(range(len(keys)), key=keys.__getitem__)
        if order != list(range(len(keys))):
            rank = np.empty(len(order), np.int32)
            rank[order] = np.arange(len(order), dtype=np.int32)
            for a in range(0, pair.size, 1 << 20):
                pair[a : a + (1 << 20)] = rank[pair[a : a + (1 << 20)]]
        return [keys[i] for i in order]


def _hash_factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pandas.factorize, imported only for inputs that need it (importing pandas costs a fifth of a second)."""
    import pandas as pd

    return pd.factorize(keys)


def _upper_median_per_comm(pair_comm: np.ndarray, values: np.ndarray, n_comms: int) -> np.ndarray:
    order = np.lexsort((values, pair_comm))
    counts = np.bincount(pair_comm, minlength=n_comms)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    idx = np.minimum(starts + counts // 2, max(len(order) - 1, 0))
    out = values[order][idx] if len(order) else np.zeros(n_comms, np.int64)
    return np.where(counts > 0, out, 0)


def _communicators(
    first: dict[str, pa.Array],
    pair_rank: np.ndarray,
    pair_gname: np.ndarray,
    names: list[str],
    world_size_hint: int,
    rank_max: int,
) -> tuple[list[CommSpec], np.ndarray, int]:
    """Key each (rank, group name) pair by (name, member set). A pair whose rank and name list no members
    joins the one member set of that name that holds its rank; failing that, a communicator of the ranks
    reporting the name. `first["group_ranks"]` is each pair's listing, null where its rank gave none."""
    n_pairs = len(pair_rank)
    n_names = len(names)
    base_name = (pair_gname % n_names).tolist()
    lst = first["group_ranks"]
    lengths = pc.fill_null(pc.list_value_length(lst), -1).to_numpy().astype(np.int64)
    flat = pc.list_flatten(lst).to_numpy().astype(np.int64)
    parents = pc.list_parent_indices(lst).to_numpy().astype(np.int64)
    h = np.zeros(n_pairs, np.uint64)
    if flat.size:
        np.add.at(h, parents, _mix(flat))
    sizes = pc.fill_null(first["group_size"], 0).to_numpy(zero_copy_only=False).astype(np.int64)
    descs = first["group_desc"].to_pylist()

    # Member sets, by (base name, length, hash); and per name, which sets hold each rank.
    member_sets: dict[tuple[int, int, int], tuple[int, ...]] = {}
    holding: dict[int, dict[int, list[tuple[int, int, int]]]] = {}
    pair_set: list[tuple[int, int, int] | None] = [None] * n_pairs
    for p in np.flatnonzero(lengths >= 0).tolist():
        k = (base_name[p], int(lengths[p]), int(h[p]))
        pair_set[p] = k
        if k not in member_sets:
            members = tuple(sorted(lst[p].as_py()))
            member_sets[k] = members
            d = holding.setdefault(k[0], {})
            for r in members:
                d.setdefault(r, []).append(k)
    ranks = pair_rank.tolist()
    for p in range(n_pairs):
        if pair_set[p] is None:
            cands = holding.get(base_name[p], {}).get(ranks[p], [])
            if len(cands) == 1:
                pair_set[p] = cands[0]
    world = max(
        [world_size_hint, rank_max + 1, int(sizes.max()) if sizes.size else 0]
        + [m[-1] + 1 for m in member_sets.values() if m]
    )

    # Communicators: (name with its p2p flag, member set); pairs with no member set share one per name.
    gnames = pair_gname.tolist()
    comm_of: dict[tuple[int, tuple[int, int, int] | None], int] = {}
    pair_comm = np.empty(n_pairs, np.int64)
    reporters: dict[int, list[int]] = {}
    desc_of: dict[int, str | None] = {}
    size_of: dict[int, int] = {}
    for p in range(n_pairs):
        c = comm_of.setdefault((gnames[p], pair_set[p]), len(comm_of))
        pair_comm[p] = c
        if pair_set[p] is None:
            reporters.setdefault(c, []).append(ranks[p])
        if desc_of.get(c) is None:
            desc_of[c] = descs[p]
        size_of[c] = max(size_of.get(c, 0), int(sizes[p]))
    specs: list[CommSpec] = []
    for (gname, mkey), c in comm_of.items():  # in order of first appearance
        m = member_sets[mkey] if mkey is not None else None
        known = m is not None
        if m is None:
            m = tuple(sorted(set(reporters.get(c, []))))
            if size_of.get(c, 0) == world and world >= len(m):
                m, known = tuple(range(world)), True  # a world-sized group: every rank is a member
        specs.append(CommSpec(name=names[gname % n_names], desc=desc_of.get(c), members=m, members_known=known,
                              p2p=gname >= n_names, size=max(size_of.get(c, 0), len(m))))
    return specs, pair_comm, world


def _digest(who: list[pa.Table], log_rows: np.ndarray, get: Fetch) -> pa.Table:
    """CollectiveView.digest: the distinct (host, pid, rank) rows and the rows read from log lines."""
    parts = []
    if who:
        w = pa.concat_tables(who).unify_dictionaries()
        if w.num_rows > 4096:
            w = w.group_by(["host", "pid", "rank"], use_threads=False).aggregate([])
        parts.append(conform("collectives", w))
    if log_rows.size:
        names = TABLES["collectives"].names
        got = get(names, log_rows)
        parts.append(conform("collectives", pa.table({c: got[c] for c in names})))
    return pa.concat_tables(parts) if parts else empty("collectives")
