"""Wrappers for vLLM's and SGLang's own communication layers.

Why here and not only in torch.distributed: vLLM and SGLang run most collectives through pynccl, custom
all-reduce kernels or shared memory, which torch.distributed (and Flight Recorder) never see. Their
GroupCoordinator methods are the one place every path goes through. The public ones (`all_reduce`...) are
traced by torch.compile and dispatch through `torch.ops.vllm.*` custom ops; the methods wrapped here are
the ones those ops call at run time (`_all_reduce_out_place`...), plus the direct ones (`all_gatherv`,
`broadcast`, `send`...).

Only the outermost library call is recorded (a GroupCoordinator method that ends in pynccl is one record,
on the coordinator's group). A group is named after vLLM's `unique_name` family plus which group of that
family it is, computed from the member ranks: the tensor-parallel group of ranks 4-7 with TP=4 is "tp:1",
on all four members (vLLM itself calls it "tp:0" on every rank, since each process builds only its own).
Torch-level calls these methods make are recorded too, on the torch process group they use.
"""
from __future__ import annotations

import sys
import threading
import time
import weakref
from types import ModuleType
from typing import Any, Callable

from hangdoc.tracer import activate as _act
from hangdoc.tracer import completion
from hangdoc.tracer import format as F
from hangdoc.tracer.ring import SKIP, GroupEntry, Recorder

_R = F.REDUCE_CODE
_OTHER_DTYPE = F.DTYPE_CODE["other"]
_PACKS = tuple(s.pack_into for s in F.RECORDS_BY_NDIM)
RECORD_BYTES, CURSOR_MASK, P2P_OPS, put_cursor = F.RECORD_BYTES, F.CURSOR_EVERY - 1, F.P2P_OPS, F.STAMP.pack_into


class _Depth(threading.local):
    """Per thread: is a library call being recorded (its nested library calls are not)? A one-item list,
    so that the hot path reads the thread-local once and then only indexes (setting an attribute of a
    threading.local costs several times more)."""

    def __init__(self) -> None:
        self.busy = [0]


_tls = _Depth()
_owner_label: dict[int, tuple[Any, str]] = {}  # id(process group) -> (ref, coordinator label), for pynccl/custom-AR
_warned: set[str] = set()


class Meta:
    """Shape, dtype and size of a tensor that does not exist yet (recv(size, dtype))."""

    __slots__ = ("shape", "dtype", "is_cuda")

    def __init__(self, shape: Any, dtype: Any) -> None:
        self.shape, self.dtype, self.is_cuda = tuple(shape), dtype, False

    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


def partition_index(ranks: tuple[int, ...]) -> int:
    """Which group of its family a group is, from its members alone.

    Families partition the ranks into equal arithmetic runs (TP: 0-3, 4-7; DP: 0,4 / 1,5...): the index of
    the run start..start+step*(n-1) is (start // (step*n)) * step + start % step, i.e. dense 0, 1, 2...
    Irregular groups fall back to their lowest rank, which still names them uniquely.
    """
    r = sorted(ranks)
    if len(r) < 2:
        return r[0] if r else 0
    step = r[1] - r[0]
    if step <= 0 or any(b - a != step for a, b in zip(r, r[1:])):
        return r[0]
    return (r[0] // (step * len(r))) * step + r[0] % step


def group_label(unique_name: str, ranks: tuple[int, ...]) -> str:
    """'tp:0' on ranks 4-7 (TP=4) -> 'tp:1'. A second group of one name in a process keeps its counter."""
    base, _, counter = str(unique_name).rpartition(":")
    if not base or not counter.isdigit():
        base, counter = str(unique_name), "0"
    if counter != "0":
        base = f"{base}{counter}"
    return f"{base}:{partition_index(ranks)}"


def _torch_ranks(group: Any, fallback_size: int) -> tuple[int, ...]:
    dist = sys.modules.get("torch.distributed")
    try:
        return tuple(dist.get_process_group_ranks(group))  # type: ignore[union-attr]
    except Exception:  # StatelessProcessGroup and friends: ranks relative to the group
        return tuple(range(fallback_size))


# --- group resolution per kind of object -------------------------------------------------------------
def _coordinator_entry(kind: str) -> Callable[[Recorder, Any], GroupEntry]:
    def resolve(rec: Recorder, coord: Any) -> GroupEntry:
        ranks = tuple(coord.ranks)
        if len(ranks) < 2:
            entry = SKIP
        else:
            label = group_label(coord.unique_name, ranks)
            for pg in (getattr(coord, "cpu_group", None), getattr(coord, "device_group", None)):
                if pg is not None:
                    try:
                        ref: Any = weakref.ref(pg)
                    except TypeError:
                        ref = lambda pg=pg: pg  # noqa: E731
                    _owner_label[id(pg)] = (ref, label)
            if rec.rank < 0:
                dist = sys.modules.get("torch.distributed")
                world = dist.get_world_size() if dist is not None and dist.is_initialized() else -1
                rec.set_rank(int(coord.rank), world, int(getattr(coord, "local_rank", -1)))
            entry = rec.group(kind, label, str(coord.unique_name), ranks, int(coord.rank_in_group))
        rec.cache[coord] = entry
        return entry

    return resolve


def _communicator_entry(kind: str, suffix: str) -> Callable[[Recorder, Any], GroupEntry]:
    """pynccl / custom all-reduce objects: `group` (a cpu process group), `rank` (in group), `world_size`."""

    def resolve(rec: Recorder, comm: Any) -> GroupEntry:
        size = int(getattr(comm, "world_size", 0) or 0)
        group = getattr(comm, "group", None)
        ranks = _torch_ranks(group, size)
        if len(ranks) < 2:
            entry = SKIP
        else:
            ref, owner = _owner_label.get(id(group), (None, None))
            if ref is None or ref() is not group:
                owner = None  # an id reused by a newer object
            name = f"{owner}/{suffix}" if owner else f"{suffix}:{partition_index(ranks)}"
            rank_in_group = int(getattr(comm, "rank", -1))
            entry = rec.group(kind, name, name, ranks, rank_in_group)
        rec.cache[comm] = entry
        return entry

    return resolve


# --- the wrapper ------------------------------------------------------------------------------------------
def make_method_wrapper(original: Callable[..., Any], op_name: str, probe: Callable[..., tuple],
                        resolve: Callable[[Recorder, Any], GroupEntry]) -> Callable[..., Any]:
    """probe(self, *args, **kwargs) -> (tensor or Meta or None, out numel or -1, reduce code, peer index in
    group or None, op code or None to skip the call).

    The record is packed here, as in the torch.distributed wrappers: a call through Recorder.write and
    Recorder.site costs twice as much, and vLLM's decode steps make one of these calls per layer."""
    compiling = _compiling_check()
    getframe, time_ns, packs, dtypes, other_dtype = sys._getframe, time.time_ns, _PACKS, _dtype_table(), _OTHER_DTYPE
    pack2 = packs[2]

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if compiling():  # first: torch.compile reads this as true and sees nothing else of ours
            return original(self, *args, **kwargs)
        busy = _tls.busy
        if busy[0]:
            return original(self, *args, **kwargs)
        stamp = 0
        try:
            t, out_numel, redop, peer_index, op = probe(self, *args, **kwargs)
            if op is not None:
                rec, mm, base, cap, index, sites, cache, heads, states = _act.HOT or _act.hot()
                try:
                    entry = cache[self]
                except KeyError:
                    entry = resolve(rec, self)
                if entry is not SKIP:
                    peer, flags = -1, 0
                    if peer_index is not None and 0 <= peer_index < len(entry.ranks):
                        peer = entry.ranks[peer_index]
                        if op in P2P_OPS:
                            me = entry.ranks[entry.rank_in_group]
                            pair = (min(me, peer), max(me, peer))
                            entry = rec.group("p2p", f"{entry.name}/p2p:{pair[0]}-{pair[1]}", "p2p", pair,
                                              pair.index(me))
                    f = getframe(1)
                    try:
                        site = sites[id(f.f_code)][f.f_lasti]
                    except KeyError:
                        site = rec.site(f)
                    seq = next(entry.seq)
                    idx = next(index)
                    off = base + idx % cap * RECORD_BYTES
                    if not idx & CURSOR_MASK:
                        put_cursor(mm, F.CURSOR_OFFSET, idx)
                    if t is None:
                        packs[0](mm, off, idx + 1, time_ns(), 0, 0, seq, entry.gid, op, redop, 0, 0, F.ISSUED, 0,
                                 peer, site, idx + 1)
                    else:
                        shape = t.shape
                        nd = len(shape)
                        flags = F.F_CUDA if t.is_cuda else 0
                        try:
                            dc = dtypes[t.dtype]
                        except KeyError:
                            dc = other_dtype
                        if nd == 2:  # vLLM's activations: (tokens, hidden); no star-unpacking, no slice
                            d0, d1 = shape
                            n = d0 * d1
                            pack2(mm, off, idx + 1, time_ns(), n, n if out_numel < 0 else out_numel, d0, d1, seq,
                                  entry.gid, op, redop, dc, 2, F.ISSUED, flags, peer, site, idx + 1)
                        else:
                            n = t.numel()
                            packs[min(nd, 4)](mm, off, idx + 1, time_ns(), n, n if out_numel < 0 else out_numel,
                                              *shape[:4], seq, entry.gid, op, redop, dc, nd, F.ISSUED, flags, peer,
                                              site, idx + 1)
                    stamp = idx + 1
        except Exception as exc:  # tracing never changes what the application sees
            _warn_once(op_name, exc)
            stamp = 0
        if not stamp:
            return original(self, *args, **kwargs)
        busy[0] += 1
        try:
            result = original(self, *args, **kwargs)
        except BaseException:
            if heads[off >> 3] == stamp:
                states[off + 1] |= F.F_RAISED  # the flags byte; the state stays "issued"
            raise
        finally:
            busy[0] -= 1
        if flags:
            completion.watch_cuda(rec, stamp, kwargs.get("stream"))
        elif heads[off >> 3] == stamp:  # the slot is still ours (no wrap-around meanwhile)
            states[off] = F.COMPLETED
        return result

    wrapper.__name__ = getattr(original, "__name__", op_name)
    wrapper.__qualname__ = getattr(original, "__qualname__", op_name)
    return wrapper


def _dtype_table() -> dict[Any, int]:
    """torch.dtype -> code (the torch.distributed wrappers' table, filled once torch is imported)."""
    from hangdoc.tracer import torch_dist

    if not torch_dist.DTYPE:
        torch_dist.fill_tables()
    return torch_dist.DTYPE


def _compiling_check() -> Callable[[], bool]:
    from hangdoc.tracer.torch_dist import compiling_function

    return compiling_function()


def _warn_once(what: str, exc: BaseException) -> None:
    if what not in _warned:
        _warned.add(what)
        print(f"hangdoc: tracer skipped a {what} call it could not read: {type(exc).__name__}: {exc}",
              file=sys.stderr)


# --- probes ---------------------------------------------------------------------------------------------
# Each returns (tensor, out_numel, reduce code, peer index in the group, op code or None to skip the call).
_A = F.OP_CODE
_SUM = _R["SUM"]


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, (list, tuple)) and x else x


def _ws(self: Any) -> int:
    return int(getattr(self, "world_size", 1) or 1)


def _next_rank(self: Any) -> int:
    return (int(self.rank_in_group) + 1) % _ws(self)


def _prev_rank(self: Any) -> int:
    return (int(self.rank_in_group) - 1) % _ws(self)


VLLM_COORDINATOR: dict[str, tuple[str, Callable[..., tuple]]] = {
    "_all_reduce_out_place": ("all_reduce", lambda self, input_, *a, **k: (input_, -1, _SUM, None, _A["all_reduce"])),
    "_all_gather_out_place": ("all_gather", lambda self, input_, dim=-1, *a, **k: (
        input_, input_.numel() * _ws(self), 0, None, _A["all_gather"])),
    "_reduce_scatter_out_place": ("reduce_scatter", lambda self, input_, dim=-1, *a, **k: (
        input_, input_.numel() // _ws(self), _SUM, None, _A["reduce_scatter"])),
    "all_gatherv": ("all_gatherv", lambda self, input_, *a, **k: (
        _first(input_), -1, 0, None, _A["all_gatherv"])),
    "reduce_scatterv": ("reduce_scatterv", lambda self, input_, *a, **k: (
        input_, -1, _SUM, None, _A["reduce_scatterv"])),
    "reduce_scatterv_into_output": ("reduce_scatterv", lambda self, input_, output=None, *a, **k: (
        input_, output.numel() if output is not None else -1, _SUM, None, _A["reduce_scatterv"])),
    "gather": ("gather", lambda self, input_, dst=0, *a, **k: (input_, -1, 0, dst, _A["gather"])),
    "broadcast": ("broadcast", lambda self, input_, src=0, *a, **k: (input_, -1, 0, src, _A["broadcast"])),
    "send": ("send", lambda self, tensor, dst=None, *a, **k: (
        tensor, -1, 0, _next_rank(self) if dst is None else dst, _A["send"])),
    "recv": ("recv", lambda self, size, dtype, src=None, *a, **k: (
        Meta(size, dtype), -1, 0, _prev_rank(self) if src is None else src, _A["recv"])),
    "dispatch_router_logits": ("dispatch_router_logits", lambda self, hidden_states, *a, **k: (
        hidden_states, -1, 0, None, _A["dispatch_router_logits"])),
    "dispatch": ("dispatch", lambda self, hidden_states, *a, **k: (hidden_states, -1, 0, None, _A["dispatch"])),
    "combine": ("combine", lambda self, hidden_states, *a, **k: (hidden_states, -1, 0, None, _A["combine"])),
}

SGLANG_COORDINATOR: dict[str, tuple[str, Callable[..., tuple]]] = {
    "_all_reduce_out_place": VLLM_COORDINATOR["_all_reduce_out_place"],
    "_all_reduce_in_place": VLLM_COORDINATOR["_all_reduce_out_place"],
    "_all_gather_into_tensor": ("all_gather", lambda self, output, input, *a, **k: (
        input, output.numel(), 0, None, _A["all_gather"])),
    "_reduce_scatter_tensor": ("reduce_scatter", lambda self, output, input, *a, **k: (
        input, output.numel(), _SUM, None, _A["reduce_scatter"])),
    "_all_to_all_single": ("all_to_all", lambda self, output, input, *a, **k: (
        input, output.numel(), 0, None, _A["all_to_all"])),
    "reduce_scatter": ("reduce_scatter", lambda self, output, input_list, *a, **k: (
        _first(input_list), output.numel(), _SUM, None, _A["reduce_scatter"])),
    "reduce_scatterv": ("reduce_scatterv", lambda self, input_, output=None, sizes=None, *a, **k: (
        input_, output.numel() if output is not None else -1, _SUM, None, _A["reduce_scatterv"])),
    "all_gatherv": ("all_gatherv", lambda self, input_, *a, **k: (_first(input_), -1, 0, None, _A["all_gatherv"])),
    "gather": VLLM_COORDINATOR["gather"],
    "broadcast": VLLM_COORDINATOR["broadcast"],
    "send": VLLM_COORDINATOR["send"],
    "recv": VLLM_COORDINATOR["recv"],
}


def _enabled(self: Any) -> bool:
    return not getattr(self, "disabled", False)


def _redop(op: Any) -> int:
    name = str(op).rpartition(".")[2].upper()
    return _R.get(name, _R["OTHER"]) if op is not None else _SUM


def _on(self: Any, code: int) -> int | None:
    return code if _enabled(self) else None


def _pynccl_all_reduce(self: Any, in_tensor: Any, a: tuple, k: dict) -> tuple:
    """vLLM: all_reduce(in_tensor, out_tensor=None, op=SUM, stream=None); SGLang: all_reduce(tensor, op=SUM)."""
    op = k.get("op")
    if a:
        op = (a[1] if len(a) > 1 else op) if a[0] is None or hasattr(a[0], "numel") else a[0]
    return in_tensor, -1, _redop(op), None, _on(self, _A["all_reduce"])


# pynccl (vLLM and SGLang): peers and roots are ranks in the communicator; a disabled one does nothing.
PYNCCL: dict[str, tuple[str, Callable[..., tuple]]] = {
    "all_reduce": ("all_reduce", lambda self, in_tensor, *a, **k: _pynccl_all_reduce(self, in_tensor, a, k)),
    "outplace_all_reduce": ("all_reduce", lambda self, in_tensor, out_tensor=None, op=None, *a, **k: (
        in_tensor, -1, _redop(op), None, _on(self, _A["all_reduce"]))),
    "all_gather": ("all_gather", lambda self, output_tensor, input_tensor, sizes=None, *a, **k: (
        input_tensor, output_tensor.numel(), 0, None,
        _on(self, _A["all_gather"] if sizes is None or not isinstance(sizes, (list, tuple)) else _A["all_gatherv"]))),
    "all_gatherv": ("all_gatherv", lambda self, output_tensor, input_tensor, *a, **k: (
        input_tensor, output_tensor.numel(), 0, None, _on(self, _A["all_gatherv"]))),
    "reduce_scatter": ("reduce_scatter", lambda self, output_tensor, input_tensor, op=None, sizes=None, *a, **k: (
        input_tensor, output_tensor.numel(), _redop(op), None,
        _on(self, _A["reduce_scatter"] if sizes is None or not isinstance(sizes, (list, tuple))
            else _A["reduce_scatterv"]))),
    "reduce_scatterv": ("reduce_scatterv", lambda self, output_tensor, input_tensor, sizes=None, op=None, *a, **k: (
        input_tensor, output_tensor.numel(), _redop(op), None, _on(self, _A["reduce_scatterv"]))),
    "reduce": ("reduce", lambda self, output_tensor, input_tensor, root=0, op=None, *a, **k: (
        input_tensor, output_tensor.numel(), _redop(op), root, _on(self, _A["reduce"]))),
    "scatter": ("scatter", lambda self, output_tensor, input_tensor, sizes=None, root=0, *a, **k: (
        input_tensor, output_tensor.numel(), 0, root, _on(self, _A["scatter"]))),
    "all_to_all_single": ("all_to_all", lambda self, output_tensor, input_tensor, *a, **k: (
        input_tensor, output_tensor.numel(), 0, None, _on(self, _A["all_to_all"]))),
    "broadcast": ("broadcast", lambda self, tensor, src, *a, **k: (tensor, -1, 0, src, _on(self, _A["broadcast"]))),
    "send": ("send", lambda self, tensor, dst, *a, **k: (tensor, -1, 0, dst, _on(self, _A["send"]))),
    "recv": ("recv", lambda self, tensor, src, *a, **k: (tensor, -1, 0, src, _on(self, _A["recv"]))),
}

CUSTOM_AR: dict[str, tuple[str, Callable[..., tuple]]] = {
    "all_reduce": ("all_reduce", lambda self, inp, *a, **k: (inp, -1, _SUM, None, _on(self, _A["all_reduce"]))),
}
SGLANG_CUSTOM_AR = {"_all_reduce_impl": CUSTOM_AR["all_reduce"]}  # SGLang's kernel call has this name


def wrap_class(cls: Any, methods: dict[str, tuple[str, Callable[..., tuple]]],
               resolve: Callable[[Recorder, Any], GroupEntry]) -> list[str]:
    """Wrap the methods `cls` defines itself; returns their names (a method a version lacks is skipped)."""
    done = []
    for name, (op_name, probe) in methods.items():
        if name in vars(cls):
            if _act.patch(cls, name, lambda orig, o=op_name, p=probe: make_method_wrapper(orig, o, p, resolve)):
                done.append(name)
    return done


def _install(module: ModuleType, class_name: str, methods: dict, resolve: Callable) -> None:
    cls = getattr(module, class_name, None)
    if cls is not None:
        wrap_class(cls, methods, resolve)


def install_vllm_coordinator(module: ModuleType) -> None:
    _install(module, "GroupCoordinator", VLLM_COORDINATOR, _coordinator_entry("vllm"))


def install_vllm_pynccl(module: ModuleType) -> None:
    _install(module, "PyNcclCommunicator", PYNCCL, _communicator_entry("vllm", "pynccl"))


def install_vllm_custom_ar(module: ModuleType) -> None:
    _install(module, "CustomAllreduce", CUSTOM_AR, _communicator_entry("vllm", "custom_ar"))


def install_sglang_coordinator(module: ModuleType) -> None:
    _install(module, "GroupCoordinator", SGLANG_COORDINATOR, _coordinator_entry("sglang"))


def install_sglang_pynccl(module: ModuleType) -> None:
    _install(module, "PyNcclCommunicator", PYNCCL, _communicator_entry("sglang", "pynccl"))


def install_sglang_custom_ar(module: ModuleType) -> None:
    _install(module, "CustomAllreduce", SGLANG_CUSTOM_AR, _communicator_entry("sglang", "custom_ar"))
