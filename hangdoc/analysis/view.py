"""The collectives table as integer arrays, computed once and shared by every collective pass.

Everything here is columnar (numpy over whole columns): communicator codes from (group, group_ranks),
a per-row call signature, per-(communicator, rank) summaries and the per-position agreement check, so a
16k-rank x 2k-call table is a few vectorised sweeps rather than Python loops over rows or rank pairs.
Only the few rows a finding quotes are ever turned into Python objects (OpCall).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hangdoc.analysis.groups import Comm, CommSpec, build_comms, rank_labels
from hangdoc.analysis.model import OpCall
from hangdoc.importers.ops import normalize_dtype, normalize_op, normalize_reduce_op, normalize_state

# Which element count must agree across members, per op (the others compare op and dtype only).
IN_NUMEL_OPS = frozenset({"all_reduce", "broadcast", "reduce", "all_gather", "gather"})
OUT_NUMEL_OPS = frozenset({"reduce_scatter", "scatter"})
REDUCING_OPS = frozenset({"all_reduce", "reduce", "reduce_scatter", "reduce_scatterv"})
P2P_OPS = frozenset({"send", "recv"})

ISSUED, STARTED, COMPLETED, UNKNOWN = 0, 1, 2, 3
_STATE_CODE = {"issued": ISSUED, "started": STARTED, "completed": COMPLETED, "unknown": UNKNOWN}
_NONE = np.iinfo(np.int64).max
_NUMEL_BITS = 44  # element counts up to 17.6e12 are told apart exactly
_NUMEL_MASK = (1 << _NUMEL_BITS) - 1


def _codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """Dictionary codes of a string column (null -> -1) and the dictionary."""
    if col.num_chunks == 0 or len(col) == 0:
        return np.zeros(0, np.int32), []
    # Read with its dictionary kept (Parquet stores these columns that way), a column is already encoded.
    enc = col if pa.types.is_dictionary(col.type) else col.dictionary_encode()
    enc = enc.unify_dictionaries()
    idx = pa.chunked_array([c.indices for c in enc.chunks], type=enc.type.index_type)
    codes = pc.fill_null(idx, -1).to_numpy()
    return codes, enc.chunks[0].dictionary.to_pylist()


def _ints(col: pa.ChunkedArray, fill: int = -1) -> np.ndarray:
    if len(col) == 0:
        return np.zeros(0, np.int64)
    if col.null_count:
        col = pc.fill_null(col, fill)
    return col.to_numpy().astype(np.int64, copy=False)


def take(col: pa.ChunkedArray, idx: np.ndarray | Sequence[int]) -> pa.Array:
    """col[idx] chunk by chunk: ChunkedArray.take concatenates the chunks first, which costs the whole
    column (seconds for a big list column) to fetch a handful of rows."""
    idx = np.asarray(idx, dtype=np.int64)
    if col.num_chunks == 1:
        return col.chunk(0).take(pa.array(idx))
    if col.num_chunks == 0 or idx.size == 0:
        return pa.array([], type=col.type)
    bounds = np.cumsum([0] + [len(c) for c in col.chunks])
    which = np.searchsorted(bounds, idx, side="right") - 1
    order = np.argsort(which, kind="stable")
    parts = []
    for k in np.unique(which).tolist():
        sel = order[which[order] == k]
        parts.append(col.chunk(k).take(pa.array(idx[sel] - bounds[k])))
    got = pa.concat_arrays(parts)
    inverse = np.empty(idx.size, np.int64)
    inverse[order] = np.arange(idx.size)
    return got.take(pa.array(inverse))


def _ids(values: list) -> np.ndarray:
    """Dense ids of values, equal values sharing one: ['a', 'b', 'a'] -> [0, 1, 0]."""
    index: dict = {}
    return np.array([index.setdefault(v, len(index)) for v in values], dtype=np.int64)


def _mix(v: np.ndarray) -> np.ndarray:
    """A 64-bit integer hash (splitmix64 finaliser), so a sum over members identifies a member set."""
    x = (v.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return x


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
        col = take(self.table.column("t_issue"), self.table_rows(rows))
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
    def calls(self, rows: Iterable[int]) -> list[OpCall]:
        """OpCalls for view rows (cached; only ever asked for the few rows a finding quotes)."""
        rows = [int(r) for r in rows]
        need = sorted({r for r in rows if r not in self._calls})
        if need:
            ids = self.table_rows(need)
            cols = {name: take(self.table.column(name), ids).to_pylist() for name in (
                "rank", "seq", "op", "reduce_op", "dtype", "in_shapes", "out_shapes", "in_numel", "out_numel", "state"
            )}
            for i, r in enumerate(need):
                op = normalize_op(cols["op"][i]) if cols["op"][i] else "unknown"
                red = cols["reduce_op"][i]
                dtype = cols["dtype"][i]
                state = cols["state"][i]
                self._calls[r] = OpCall(
                    rank=cols["rank"][i],
                    seq=cols["seq"][i],
                    op=op,
                    reduce_op=normalize_reduce_op(red) if red and op in REDUCING_OPS else None,
                    dtype=normalize_dtype(dtype) if dtype else None,
                    in_shapes=tuple(tuple(s) for s in (cols["in_shapes"][i] or ()) if s is not None),
                    out_shapes=tuple(tuple(s) for s in (cols["out_shapes"][i] or ()) if s is not None),
                    in_numel=cols["in_numel"][i],
                    out_numel=cols["out_numel"][i],
                    state=normalize_state(state) if state else "unknown",
                )
        return [self._calls[r] for r in rows]

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


def build(table: pa.Table, world_size_hint: int = 0) -> CollectiveView:
    """Vectorised precomputation over the whole collectives table."""
    rank = _ints(table.column("rank"))
    seq = _ints(table.column("seq"))
    row_ids = None  # view row == table row unless rows had to be dropped
    t = table
    dropped = 0
    if rank.size and (rank.min() < 0 or seq.min() < 0):  # no rank or seq: nothing to align them by
        keep = (rank >= 0) & (seq >= 0)
        dropped = int(keep.size - keep.sum())
        row_ids = np.nonzero(keep)[0]
        t = table.filter(pa.array(keep))
        rank, seq = rank[row_ids], seq[row_ids]
    n = int(rank.size)

    # Dictionary-encode the string columns in parallel (Arrow releases the GIL).
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:
        coded = {c: ex.submit(_codes, t.column(c)) for c in ("op", "reduce_op", "dtype", "state", "group")}
        numels = {c: ex.submit(_ints, t.column(c)) for c in ("in_numel", "out_numel")}
        coded = {c: f.result() for c, f in coded.items()}
        numels = {c: f.result() for c, f in numels.items()}

    # Signature: call class (send and recv match), reduce op (reducing ops only) and dtype, worked out per
    # combination of dictionary entries and then gathered once per row; plus the element count that the
    # op's size rule compares.
    op_codes, op_names = coded["op"]
    red_codes, red_names = coded["reduce_op"]
    dt_codes, dt_names = coded["dtype"]
    canon = [normalize_op(o) if o else "unknown" for o in op_names] + ["unknown"]  # last entry: null
    cls = ["p2p" if c in P2P_OPS else c for c in canon]
    cls_id = _ids(cls)
    red_id = _ids([normalize_reduce_op(x) if x else "" for x in red_names] + [""])
    dt_id = _ids([normalize_dtype(x) if x else "" for x in dt_names] + [""])
    reducing = np.array([c in REDUCING_OPS for c in canon])
    n_op, n_red, n_dt = len(canon), len(red_id), len(dt_id)

    def signature(o: np.ndarray, r_: np.ndarray, d_: np.ndarray) -> np.ndarray:
        return (cls_id[o] * (n_red + 1) + np.where(reducing[o], red_id[r_] + 1, 0)) * n_dt + dt_id[d_]

    if n_op * n_red * n_dt <= 1 << 20:
        table_sig = signature(*np.meshgrid(np.arange(n_op), np.arange(n_red), np.arange(n_dt), indexing="ij"))
        table_sig = table_sig.astype(np.int32) if table_sig.max() < 1 << 31 else table_sig
        combo = (op_codes % n_op).astype(np.int64)  # code -1 (null) -> the last entry
        combo *= n_red
        combo += red_codes % n_red
        combo *= n_dt
        combo += dt_codes % n_dt
        sig = table_sig.ravel()[combo]
        del combo
    else:  # many distinct names (odd input): per row
        sig = signature(op_codes % n_op, red_codes % n_red, dt_codes % n_dt)
    if sig.size and sig.max() >= 1 << (63 - _NUMEL_BITS):  # absurdly many names: renumber
        sig = pd.factorize(sig)[0]
    rule = np.array([1 if c in IN_NUMEL_OPS else 2 if c in OUT_NUMEL_OPS else 0 for c in canon], np.int8)[op_codes]
    numel = numels["in_numel"]
    if not numel.flags.writeable:  # a view of the Arrow buffer
        numel = numel.copy()
    out_rule = rule == 2
    numel[out_rule] = numels["out_numel"][out_rule]
    numel[rule == 0] = -1
    del rule, out_rule, numels
    # One int64 per call: what must match, the count in the low bits (-1, "not compared", is all ones).
    sig = sig.astype(np.int64) << _NUMEL_BITS
    sig |= numel & _NUMEL_MASK
    del numel

    st_codes, st_names = coded["state"]
    state = np.array([_STATE_CODE[normalize_state(x)] if x else UNKNOWN for x in st_names] + [UNKNOWN], np.int8)[st_codes]

    # Pairs: one per (rank, recorder's group name); a process names each of its communicators uniquely.
    # p2p calls keep their own counter on a communicator (FR's p2p_seq_id): they are a channel of their own.
    g_codes, g_names = coded["group"]
    n_names = len(g_names) + 1
    is_p2p = np.array([c in P2P_OPS for c in canon], np.int64)[op_codes]
    pair_key = (rank * 2 + is_p2p) * n_names + g_codes % n_names
    del is_p2p
    pair, uniq = _factorize(pair_key)
    del pair_key
    n_pairs = int(uniq.size)
    first = np.full(n_pairs, n, np.int64)  # each pair's first row
    np.minimum.at(first, pair, np.arange(n))
    pair_rank = (uniq // (2 * n_names)).astype(np.int64)
    pair_gname = (uniq % (2 * n_names)).astype(np.int64)  # name index, + n_names for the p2p channel

    # Members from the pair's first row that lists them (an importer may list them only once per pair).
    listed = np.nonzero(pc.is_valid(t.column("group_ranks")).to_numpy(zero_copy_only=False))[0]
    first_listed = first.copy()
    first_listed[pair[listed][::-1]] = listed[::-1]
    first_cols = {name: take(t.column(name), first) for name in ("group_size", "group_desc")}
    first_cols["group_ranks"] = take(t.column("group_ranks"), first_listed)
    specs, pair_comm, world_size = _communicators(
        first_cols, pair_rank, pair_gname, g_names + [""], world_size_hint, rank
    )
    comms = build_comms(specs, world_size)
    n_comms = len(comms)

    # Per-pair summaries.
    pair_rows = np.bincount(pair, minlength=n_pairs)
    pair_maxseq = np.full(n_pairs, -1, np.int64)
    np.maximum.at(pair_maxseq, pair, seq)
    pair_minseq = np.full(n_pairs, _NONE, np.int64)
    np.minimum.at(pair_minseq, pair, seq)

    # Dense (communicator, seq) positions; a sparse fallback keeps odd seq ranges from exploding memory.
    comm_min = np.full(n_comms, _NONE, np.int64)
    np.minimum.at(comm_min, pair_comm, pair_minseq)
    comm_max = np.full(n_comms, -1, np.int64)
    np.maximum.at(comm_max, pair_comm, pair_maxseq)
    span = np.maximum(comm_max - comm_min + 1, 0)
    if n_comms and int(span.sum()) <= 4 * n + 1_000_000:
        base = np.concatenate([[0], np.cumsum(span)[:-1]])
        pos = (base - comm_min)[pair_comm][pair]
        pos += seq
        n_pos = int(span.sum())
        pos_comm = np.repeat(np.arange(n_comms), span)
    else:
        pos, uniq_pos = pd.factorize(pair_comm[pair] * (1 << 40) + seq)
        pos = pos.astype(np.int64)
        n_pos = int(uniq_pos.size)
        pos_comm = (uniq_pos >> 40).astype(np.int64)
    ref_sig = np.zeros(n_pos, np.int64)
    ref_sig[pos] = sig
    bad_pos = np.unique(pos[sig != ref_sig[pos]])
    del ref_sig
    bad_flag = np.zeros(n_pos, bool)
    bad_flag[bad_pos] = True
    comm_bad = np.bincount(pos_comm[bad_pos], minlength=n_comms)
    comm_first_bad = np.zeros(n_comms, np.int64)
    comm_first_bad_pos = np.full(n_comms, -1, np.int64)
    if bad_pos.size:
        bad_rows = np.nonzero(bad_flag[pos])[0]
        first_seq = np.full(n_comms, _NONE, np.int64)
        bad_comm = pair_comm[pair[bad_rows]]
        np.minimum.at(first_seq, bad_comm, seq[bad_rows])
        comm_first_bad = np.where(first_seq == _NONE, 0, first_seq)
        at_first = seq[bad_rows] == first_seq[bad_comm]
        comm_first_bad_pos[bad_comm[at_first]] = pos[bad_rows[at_first]]

    # Completion. With unknown states every call but a rank's last on a communicator completed. That last
    # one completed too when most members went past it and its position agrees (it was matched), or when
    # the rank issued a later call elsewhere: a rank blocks in one call at a time, so it has at most one
    # call in flight.
    done = state == COMPLETED
    last = seq == pair_maxseq[pair]
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
        when = pc.fill_null(take(t.column("t_issue"), tail), np.nan).to_numpy(zero_copy_only=False).astype(float)
        rk = rank[tail]
        untimed = np.zeros(int(rk.max()) + 1, bool)
        untimed[rk[np.isnan(when)]] = True
        when = np.where(untimed[rk], tail.astype(float), when)
        latest = np.full(untimed.size, -np.inf)
        np.maximum.at(latest, rk, when)
        done[tail] |= when < latest[rk]
    nd = np.nonzero(~done)[0]
    pair_front = np.full(n_pairs, _NONE, np.int64)
    np.minimum.at(pair_front, pair[nd], seq[nd])
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
    )


def _factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) of non-negative int keys; a dense lookup when their range is small (it is: rank x
    group name), a hash otherwise."""
    if keys.size == 0:
        return keys.astype(np.int32), keys
    top = int(keys.max()) + 1
    if top <= 4 * keys.size + (1 << 22):
        seen = np.zeros(top, bool)
        seen[keys] = True
        uniq = np.flatnonzero(seen)
        code = np.cumsum(seen, dtype=np.int32 if uniq.size < 1 << 31 else np.int64) - 1
        return code[keys], uniq
    codes, uniq = pd.factorize(keys)
    return codes.astype(np.int32) if uniq.size < 1 << 31 else codes, uniq


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
    rank: np.ndarray,
) -> tuple[list[CommSpec], np.ndarray, int]:
    """Key each (rank, group name) pair by (name, member set); pairs without members join the one
    communicator of that name that lists their rank, else a communicator of the ranks reporting the name."""
    n_pairs = len(pair_rank)
    lst = first["group_ranks"]
    lengths = pc.fill_null(pc.list_value_length(lst), -1).to_numpy().astype(np.int64)
    flat = pc.list_flatten(lst).to_numpy().astype(np.int64)
    parents = pc.list_parent_indices(lst).to_numpy().astype(np.int64)
    h = np.zeros(n_pairs, np.uint64)
    if flat.size:
        np.add.at(h, parents, _mix(flat))
    sizes = pc.fill_null(first["group_size"], 0).to_numpy(zero_copy_only=False).astype(np.int64)
    descs = first["group_desc"].to_pylist()

    keys: dict[tuple[int, int, int], int] = {}
    pair_key = np.empty(n_pairs, np.int64)
    rep: list[int] = []
    for p, k in enumerate(zip(pair_gname.tolist(), lengths.tolist(), h.tolist())):
        if k[1] < 0:
            k = (k[0], -1, 0)
        if k not in keys:
            keys[k] = len(rep)
            rep.append(p)
        pair_key[p] = keys[k]
    key_list = list(keys)
    member_sets: list[tuple[int, ...] | None] = [
        tuple(sorted(lst[rep[i]].as_py())) if k[1] >= 0 else None for i, k in enumerate(key_list)
    ]
    world = max(
        [world_size_hint, int(rank.max()) + 1 if rank.size else 0, int(sizes.max()) if sizes.size else 0]
        + [m[-1] + 1 for m in member_sets if m]
    )

    # Resolve pairs whose trace gave no members.
    known_by_name: dict[int, dict[int, list[int]]] = {}
    for i, (k, m) in enumerate(zip(key_list, member_sets)):
        if m is not None:
            d = known_by_name.setdefault(k[0], {})
            for r in m:
                d.setdefault(r, []).append(i)
    final_key = pair_key.copy()
    unknown_keys = [i for i, m in enumerate(member_sets) if m is None]
    reporters: dict[int, list[int]] = {}
    if unknown_keys:
        unknown_set = set(unknown_keys)
        for p in range(n_pairs):
            k = int(pair_key[p])
            if k in unknown_set:
                cands = known_by_name.get(key_list[k][0], {}).get(int(pair_rank[p]), [])
                if len(cands) == 1:
                    final_key[p] = cands[0]
                else:
                    reporters.setdefault(k, []).append(int(pair_rank[p]))

    used = sorted(set(final_key.tolist()))
    remap = {k: i for i, k in enumerate(used)}
    specs: list[CommSpec] = []
    desc_of: dict[int, str | None] = {}
    size_of: dict[int, int] = {}
    for p in range(n_pairs):
        k = int(final_key[p])
        if desc_of.get(k) is None:
            desc_of[k] = descs[p]
        size_of[k] = max(size_of.get(k, 0), int(sizes[p]))
    for k in used:
        name = names[key_list[k][0] % len(names)]
        m = member_sets[k]
        known = m is not None
        if m is None:
            m = tuple(sorted(set(reporters.get(k, []))))
            if size_of.get(k, 0) == world and world > len(m):
                m, known = tuple(range(world)), True  # a world-sized group: every rank is a member
        specs.append(CommSpec(name=name, desc=desc_of.get(k), members=m, members_known=known,
                              p2p=key_list[k][0] >= len(names),
                              size=max(size_of.get(k, 0), len(m))))
    pair_comm = np.array([remap[int(k)] for k in final_key.tolist()], dtype=np.int64)
    return specs, pair_comm, world
