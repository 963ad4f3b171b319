"""Wrappers for torch.distributed collectives and point-to-point calls.

`torch.distributed.X` and `torch.distributed.distributed_c10d.X` are the same function object; both names
are replaced by one wrapper, so calls through either (and torch's own internal calls, which look the name
up in distributed_c10d) are recorded once.

A group is recorded by its c10d name (identical on every member, and the name Flight Recorder uses), its
description and its member global ranks. Point-to-point calls are not counted in their group's collective
sequence (that would shift the alignment of every later collective on ranks that do not take part): each
pair of ranks gets its own channel, "<group>/p2p:<lo>-<hi>", with its own sequence.
"""
from __future__ import annotations

import sys
import time
from types import ModuleType
from typing import Any, Callable

from hangdoc.tracer import activate as _act
from hangdoc.tracer import completion
from hangdoc.tracer import format as F
from hangdoc.tracer.ring import GroupEntry, Recorder

_getframe = sys._getframe
SKIP = GroupEntry(F.NO_GROUP, iter(()), (), -1)  # a group this rank is not in: c10d returns without a call

_dist: Any = None
_c10d: Any = None
DTYPE: dict[Any, int] = {}
REDUCE: dict[Any, int] = {}
_NR = object()  # "this op has no reduce op" (ReduceOp.SUM compares equal to 0, so 0 cannot say it)
_OTHER_REDUCE = F.REDUCE_CODE["OTHER"]
_OTHER_DTYPE = F.DTYPE_CODE["other"]
_warned: set[str] = set()


def _warn_once(what: str, exc: BaseException) -> None:
    if what not in _warned:
        _warned.add(what)
        print(f"hangdoc: tracer skipped a {what} call it could not read: {type(exc).__name__}: {exc}",
              file=sys.stderr)


# --- argument probes: the original signatures, returning what the record needs ------------------------
# (tensor, out_numel or -1 for "same as input", group, reduce op, peer (global), peer (group-relative), async)
def _p_all_reduce(tensor, op=None, group=None, async_op=False):
    return tensor, -1, group, op, None, None, async_op


def _p_all_reduce_coalesced(tensors, op=None, group=None, async_op=False):
    return (tensors[0] if tensors else None), -1, group, op, None, None, async_op


def _p_all_gather(tensor_list, tensor, group=None, async_op=False):
    return tensor, tensor.numel() * len(tensor_list), group, _NR, None, None, async_op


def _p_all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    return input_tensor, output_tensor.numel(), group, _NR, None, None, async_op


def _p_all_gather_coalesced(output_tensor_lists, input_tensor_list, group=None, async_op=False):
    t = input_tensor_list[0] if input_tensor_list else None
    return t, -1, group, _NR, None, None, async_op


def _p_reduce_scatter(output, input_list, op=None, group=None, async_op=False):
    return (input_list[0] if input_list else output), output.numel(), group, op, None, None, async_op


def _p_reduce_scatter_tensor(output, input, op=None, group=None, async_op=False):
    return input, output.numel(), group, op, None, None, async_op


def _p_broadcast(tensor, src=None, group=None, async_op=False, group_src=None):
    return tensor, -1, group, _NR, src, group_src, async_op


def _p_reduce(tensor, dst=None, op=None, group=None, async_op=False, group_dst=None):
    return tensor, -1, group, op, dst, group_dst, async_op


def _p_gather(tensor, gather_list=None, dst=None, group=None, async_op=False, group_dst=None):
    return tensor, -1, group, _NR, dst, group_dst, async_op


def _p_scatter(tensor, scatter_list=None, src=None, group=None, async_op=False, group_src=None):
    return tensor, -1, group, _NR, src, group_src, async_op


def _p_all_to_all(output_tensor_list, input_tensor_list, group=None, async_op=False):
    t = input_tensor_list[0] if input_tensor_list else None
    return t, -1, group, _NR, None, None, async_op


def _p_all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None, group=None,
                         async_op=False):
    return input, output.numel(), group, _NR, None, None, async_op


def _p_barrier(group=None, async_op=False, device_ids=None, timeout=None):
    return None, -1, group, _NR, None, None, async_op


def _p_monitored_barrier(group=None, timeout=None, wait_all_ranks=False):
    return None, -1, group, _NR, None, None, False


def _p_send(tensor, dst=None, group=None, tag=0, group_dst=None):
    return tensor, -1, group, _NR, dst, group_dst, False


def _p_recv(tensor, src=None, group=None, tag=0, group_src=None):
    return tensor, -1, group, _NR, src, group_src, False


def _p_isend(tensor, dst=None, group=None, tag=0, group_dst=None):
    return tensor, -1, group, _NR, dst, group_dst, True


def _p_irecv(tensor, src=None, group=None, tag=0, group_src=None):
    return tensor, -1, group, _NR, src, group_src, True


# function name -> (op recorded, probe)
OPS: dict[str, tuple[str, Callable[..., tuple]]] = {
    "all_reduce": ("all_reduce", _p_all_reduce),
    "all_reduce_coalesced": ("all_reduce_coalesced", _p_all_reduce_coalesced),
    "all_gather": ("all_gather", _p_all_gather),
    "all_gather_into_tensor": ("all_gather", _p_all_gather_into_tensor),
    "all_gather_single": ("all_gather", _p_all_gather_into_tensor),
    "all_gather_coalesced": ("all_gather_coalesced", _p_all_gather_coalesced),
    "reduce_scatter": ("reduce_scatter", _p_reduce_scatter),
    "reduce_scatter_tensor": ("reduce_scatter", _p_reduce_scatter_tensor),
    "reduce_scatter_single": ("reduce_scatter", _p_reduce_scatter_tensor),
    "broadcast": ("broadcast", _p_broadcast),
    "reduce": ("reduce", _p_reduce),
    "gather": ("gather", _p_gather),
    "scatter": ("scatter", _p_scatter),
    "all_to_all": ("all_to_all", _p_all_to_all),
    "all_to_all_single": ("all_to_all", _p_all_to_all_single),
    "barrier": ("barrier", _p_barrier),
    "monitored_barrier": ("barrier", _p_monitored_barrier),
    "send": ("send", _p_send),
    "recv": ("recv", _p_recv),
    "isend": ("send", _p_isend),
    "irecv": ("recv", _p_irecv),
}


# --- groups ---------------------------------------------------------------------------------------
def _group_entry(rec: Recorder, group: Any) -> GroupEntry:
    """Slow path: resolve a process group (None = the default group) and register it."""
    pg = group if group is not None else _c10d._get_default_group()
    ranks = tuple(_dist.get_process_group_ranks(pg))
    me = _dist.get_rank()
    if rec.rank < 0:
        rec.set_rank(me, _dist.get_world_size(), _act._env_rank("LOCAL_RANK"))
    if me not in ranks:
        entry = SKIP
    else:
        desc = getattr(pg, "group_desc", None) or ""
        entry = rec.group("torch", str(pg.group_name), "" if desc == "undefined" else desc, ranks,
                          ranks.index(me))
    rec.cache[group] = entry
    return entry


def _p2p_entry(rec: Recorder, parent: GroupEntry, group: Any, peer: int) -> GroupEntry:
    key = (group, peer)
    entry = rec.cache.get(key)
    if entry is None:
        me = parent.ranks[parent.rank_in_group]
        pair = (min(me, peer), max(me, peer)) if peer >= 0 else parent.ranks
        pg = group if group is not None else _c10d._get_default_group()
        tail = f"{pair[0]}-{pair[1]}" if peer >= 0 else "any"
        entry = rec.group("torch", f"{pg.group_name}/p2p:{tail}", "p2p", pair, pair.index(me))
        rec.cache[key] = entry
    return entry


# --- the wrapper ------------------------------------------------------------------------------------
def make_wrapper(original: Callable[..., Any], op_name: str, probe: Callable[..., tuple]) -> Callable[..., Any]:
    """The traced version of one torch.distributed function.

    The hot path is written out inline on purpose (no helper calls, constants bound as closure variables):
    every attribute load and call here is paid on every collective of the job.
    """
    op = F.OP_CODE[op_name]
    p2p = op in F.P2P_OPS
    is_compiling = _compiling_check()
    dtypes, reduces = DTYPE, REDUCE
    cuda_build = _cuda_build()
    packs = tuple(s.pack_into for s in F.RECORDS_BY_NDIM)
    stamp_at, cursor_at, cursor_offset = F.STAMP.unpack_from, F.STAMP.pack_into, F.CURSOR_OFFSET
    state_offset, record_bytes, no_group, issued, completed = (
        F.STATE_OFFSET, F.RECORD_BYTES, F.NO_GROUP, F.ISSUED, F.COMPLETED)
    f_async, f_cuda = F.F_ASYNC, F.F_CUDA
    other_reduce, other_dtype = _OTHER_REDUCE, _OTHER_DTYPE
    getframe, time_ns = _getframe, time.time_ns
    act = _act

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if is_compiling():  # let torch.compile see the original function, and nothing of ours
            return original(*args, **kwargs)
        stamp = 0
        try:
            t, out_numel, group, redop, peer, group_peer, async_op = probe(*args, **kwargs)
            rec = act.REC or act.recorder()
            entry = rec.cache.get(group) or _group_entry(rec, group)
            if entry.gid != no_group:
                if group_peer is not None:
                    peer = entry.ranks[group_peer]
                elif peer is None:
                    peer = -1
                if p2p:
                    entry = _p2p_entry(rec, entry, group, peer)
                mm, base, cap, index, sites = rec.hot
                f = getframe(1)
                site = sites.get(id(f.f_code) | (f.f_lasti << 48))
                if site is None:
                    site = rec.site(f)
                idx = next(index)
                stamp = idx + 1
                off = base + (idx % cap) * record_bytes
                if not idx & 1023:  # the header's write cursor, for readers that look only at the header
                    cursor_at(mm, cursor_offset, idx)
                flags = f_async if async_op else 0
                if t is None:
                    packs[0](mm, off, stamp, time_ns(), 0, 0, next(entry.seq), entry.gid, op, 0, 0, 0, issued,
                             flags, peer, site, stamp)
                else:
                    shape = t.shape
                    nd = len(shape)
                    numel = t.numel()
                    if cuda_build and t.is_cuda:
                        flags |= f_cuda
                    out = numel if out_numel < 0 else out_numel
                    seq = next(entry.seq)
                    rc = reduces.get(redop, other_reduce)
                    dc = dtypes.get(t.dtype, other_dtype)
                    # The common ranks get a plain call: star-unpacking the shape costs more than the pack.
                    if nd == 2:
                        packs[2](mm, off, stamp, time_ns(), numel, out, shape[0], shape[1], seq, entry.gid, op,
                                 rc, dc, 2, issued, flags, peer, site, stamp)
                    elif nd == 1:
                        packs[1](mm, off, stamp, time_ns(), numel, out, shape[0], seq, entry.gid, op, rc, dc, 1,
                                 issued, flags, peer, site, stamp)
                    else:
                        packs[min(nd, 4)](mm, off, stamp, time_ns(), numel, out, *shape[:4], seq, entry.gid, op,
                                          rc, dc, nd, issued, flags, peer, site, stamp)
        except Exception as exc:  # tracing never changes what the application sees
            _warn_once(op_name, exc)
            stamp = 0
        if not stamp:
            return original(*args, **kwargs)
        try:
            result = original(*args, **kwargs)
        except BaseException:
            rec.complete(stamp, issued, F.F_RAISED)
            raise
        if flags:
            if async_op and result is not None:
                completion.watch(rec, stamp, result)
            elif flags & f_cuda:
                completion.watch_cuda(rec, stamp)
            else:
                rec.complete(stamp)
        elif stamp_at(mm, off)[0] == stamp:  # the slot is still ours (no wrap-around meanwhile)
            mm[off + state_offset] = completed
        return result

    wrapper.__name__ = getattr(original, "__name__", op_name)
    wrapper.__qualname__ = getattr(original, "__qualname__", op_name)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    wrapper.__module__ = getattr(original, "__module__", __name__)
    return wrapper


def _compiling_check() -> Callable[[], bool]:
    """torch.compiler.is_compiling: constant True while dynamo traces, False (cheaply) when running."""
    import torch

    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return check if check is not None else (lambda: False)


def _cuda_build() -> bool:
    """Only a CUDA/ROCm build of torch can have GPU tensors; a CPU build skips the is_cuda checks."""
    import torch

    return bool(getattr(torch.version, "cuda", None) or getattr(torch.version, "hip", None))


def _destroy_wrapper(original: Callable[..., Any]) -> Callable[..., Any]:
    """Forget cached groups on destroy_process_group: a new group object may reuse the old one's id."""

    def destroy_process_group(*args: Any, **kwargs: Any) -> Any:
        rec = _act.REC
        if rec is not None:
            rec.cache.clear()
        return original(*args, **kwargs)

    return destroy_process_group


def _tables() -> None:
    import torch

    REDUCE[None] = F.REDUCE_CODE["SUM"]  # the default of every reducing call
    REDUCE[_NR] = 0

    for code, name in enumerate(F.DTYPES):
        dt = getattr(torch, name, None) if name else None
        if isinstance(dt, torch.dtype):
            DTYPE[dt] = code
    red = getattr(_dist.ReduceOp, "RedOpType", None)
    for name in F.REDUCE_OPS[1:]:
        for owner in (red, _dist.ReduceOp):
            value = getattr(owner, name, None) if owner is not None else None
            if value is not None:
                try:
                    REDUCE[value] = F.REDUCE_CODE[name]
                except TypeError:  # an unhashable ReduceOp instance: recorded as OTHER
                    pass


def _delegates(fn: Any) -> bool:
    """Does this function call another traced function by its global name (send -> isend in torch 2.13)?

    Then only the callee is wrapped, so that every call is recorded exactly once, whichever name the
    application used.
    """
    import dis
    import inspect

    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return False
    return any(
        ins.opname == "LOAD_GLOBAL" and ins.argval in OPS and ins.argval != code.co_name
        for ins in dis.get_instructions(code)
    )


def install_after_torch(torch_module: ModuleType) -> None:
    """Called by the import hook once `import torch` has completed."""
    import torch.distributed

    install(torch.distributed)


def install(module: ModuleType) -> None:
    """Wrap torch.distributed once it has been imported (called by the import hook)."""
    global _dist, _c10d
    if not module.is_available():
        return
    from torch.distributed import distributed_c10d

    _dist, _c10d = module, distributed_c10d
    _tables()
    for name, (op_name, probe) in OPS.items():
        original = getattr(distributed_c10d, name, None)
        if original is None or getattr(original, "__hangdoc_wrapped__", False) or _delegates(original):
            continue
        wrapper = make_wrapper(original, op_name, probe)
        _act.patch(distributed_c10d, name, lambda _o, w=wrapper: w)
        if getattr(module, name, None) is original:
            _act.patch(module, name, lambda _o, w=wrapper: w)
    for owner in (distributed_c10d, module):
        _act.patch(owner, "destroy_process_group", _destroy_wrapper)
