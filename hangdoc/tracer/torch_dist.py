"""Wrappers for torch.distributed collectives and point-to-point calls.

`torch.distributed.X` and `torch.distributed.distributed_c10d.X` are the same function object; both names
are replaced by one wrapper, so calls through either (and torch's own internal calls, which look the name
up in distributed_c10d) are recorded once.

A group is recorded by its c10d name (identical on every member, and the name Flight Recorder uses), its
description and its member global ranks. Point-to-point calls are not counted in their group's collective
sequence (that would shift the alignment of every later collective on ranks that do not take part): each
pair of ranks gets its own channel, "<group>/p2p:<lo>-<hi>", with its own sequence.

The wrappers are generated with each original's own parameter list, for speed: see wrapper_source.
"""
from __future__ import annotations

import inspect
import itertools
import linecache
import sys
import time
from types import ModuleType
from typing import Any, Callable

from hangdoc.tracer import activate as _act
from hangdoc.tracer import completion
from hangdoc.tracer import format as F
from hangdoc.tracer.ring import SKIP, GroupEntry, Recorder
from hangdoc.tracer.wrapper_source import FORMAT_NAMES, Spec, source

_dist: Any = None
_c10d: Any = None
DTYPE: dict[Any, int] = {}  # torch.dtype -> code
_REDUCE_BY_ID: dict[int, int] = {}  # id(ReduceOp member) -> code: hashing a pybind enum costs ~150 ns
_REDUCE_MEMBERS: list[Any] = []  # ...so the members are kept alive: no other object can take their ids
_REDUCE: dict[Any, int] = {}
_OTHER_REDUCE = F.REDUCE_CODE["OTHER"]
_OTHER_DTYPE = F.DTYPE_CODE["other"]
_warned: set[str] = set()
_serial = itertools.count()
_NO_SITE = (None, -1, 0)  # (code, instruction offset, call-site id) of a wrapper's last call
_namespaces: list[dict[str, Any]] = []  # the generated wrappers' globals


def _rebind() -> None:
    """The recorder changed (created, off, a forked child's, stopped): give every generated wrapper the new
    HOT (a global of its own is one lookup less per call than activate.HOT) and drop its remembered call
    site, which belongs to the old recorder's call-site table."""
    for namespace in _namespaces:
        namespace["HOT"] = _act.HOT
        namespace["LAST_SITE"] = _NO_SITE


def _warn_once(what: str, exc: BaseException) -> None:
    if what not in _warned:
        _warned.add(what)
        print(f"hangdoc: tracer skipped a {what} call it could not read: {type(exc).__name__}: {exc}",
              file=sys.stderr)


# function name -> what to record
OPS: dict[str, Spec] = {
    "all_reduce": Spec("all_reduce", reduce="op"),
    "all_reduce_coalesced": Spec("all_reduce_coalesced", tensor="tensors[0] if tensors else None", reduce="op"),
    "all_gather": Spec("all_gather", out="n * len(tensor_list)"),
    "all_gather_into_tensor": Spec("all_gather", tensor="input_tensor", out="output_tensor.numel()"),
    "all_gather_single": Spec("all_gather", tensor="input_tensor", out="output_tensor.numel()"),
    "all_gather_coalesced": Spec("all_gather_coalesced",
                                 tensor="input_tensor_list[0] if input_tensor_list else None"),
    "reduce_scatter": Spec("reduce_scatter", tensor="input_list[0] if input_list else output",
                           out="output.numel()", reduce="op"),
    "reduce_scatter_tensor": Spec("reduce_scatter", tensor="input", out="output.numel()", reduce="op"),
    "reduce_scatter_single": Spec("reduce_scatter", tensor="input", out="output.numel()", reduce="op"),
    "broadcast": Spec("broadcast", peer="src", group_peer="group_src"),
    "reduce": Spec("reduce", reduce="op", peer="dst", group_peer="group_dst"),
    "gather": Spec("gather", peer="dst", group_peer="group_dst"),
    "scatter": Spec("scatter", peer="src", group_peer="group_src"),
    "all_to_all": Spec("all_to_all", tensor="input_tensor_list[0] if input_tensor_list else None"),
    "all_to_all_single": Spec("all_to_all", tensor="input", out="output.numel()"),
    "barrier": Spec("barrier", tensor="None"),
    "monitored_barrier": Spec("barrier", tensor="None", async_op="False"),
    "send": Spec("send", peer="dst", group_peer="group_dst", async_op="False"),
    "recv": Spec("recv", peer="src", group_peer="group_src", async_op="False"),
    "isend": Spec("send", peer="dst", group_peer="group_dst", async_op="True"),
    "irecv": Spec("recv", peer="src", group_peer="group_src", async_op="True"),
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
        entry = SKIP  # a group this rank is not in: c10d returns without a call
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


def _reduce_code(op: Any) -> int:
    """The code of a reduce op (None: the default of every reducing call, SUM)."""
    code = _REDUCE_BY_ID.get(id(op))
    if code is None:
        try:
            code = _REDUCE.get(op, _OTHER_REDUCE)
        except TypeError:  # an unhashable ReduceOp instance (PREMUL_SUM and friends)
            code = _OTHER_REDUCE
    return code


# --- the wrapper ------------------------------------------------------------------------------------
def make_wrapper(original: Callable[..., Any], name: str, spec: Spec | None = None) -> Callable[..., Any]:
    """The traced version of one torch.distributed function, with the original's parameter list.

    Raises ValueError when the original's parameters are not the ones `spec` reads (a torch version that
    renamed them): that function is then left unwrapped.
    """
    spec = spec or OPS[name]
    if not DTYPE:  # the dtype and reduce-op tables (install() fills them first)
        fill_tables()
    fn_name = getattr(original, "__name__", name)
    compiling, check = _compiling_check()
    src, consts = source(fn_name, spec, inspect.signature(original), _cuda_build(), compiling, _reduce_code)
    filename = f"<hangdoc wrapper {name} #{next(_serial)}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)  # readable tracebacks
    namespace: dict[str, Any] = {
        **FORMAT_NAMES, **consts, **check, "original": original, "HOT": _act.HOT, "hot": _act.hot, "SKIP": SKIP,
        "group_entry": _group_entry, "p2p_entry": _p2p_entry, "reduce_code": _reduce_code, "dtypes": DTYPE,
        "getframe": sys._getframe, "time_ns": time.time_ns, "warn_once": _warn_once, "watch": completion.watch,
        "watch_cuda": completion.watch_cuda, "LAST_SITE": _NO_SITE,
    }
    exec(compile(src, filename, "exec"), namespace)  # noqa: S102 - our own template, see wrapper_source
    _namespaces.append(namespace)
    wrapper = namespace[fn_name]
    wrapper.__qualname__ = getattr(original, "__qualname__", name)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    wrapper.__module__ = getattr(original, "__module__", __name__)
    return wrapper


def _compiling_check() -> tuple[str, dict[str, Any]]:
    """How the wrapper asks "is torch.compile tracing me?": an expression and the names it uses.

    torch.compile treats torch.compiler.is_compiling() and is_dynamo_compiling() as the constant True while
    it traces. The latter is a plain `return False` when running, cheaper than the former; the flag behind
    is_compiling() covers torch.export's other tracers. Reading the flag alone would not do: torch.compile
    would guard on its value and compile the wrapper again on every call.
    """
    import torch

    compiler = getattr(torch, "compiler", None)
    if callable(getattr(compiler, "is_dynamo_compiling", None)) and isinstance(
            getattr(compiler, "_is_compiling_flag", None), bool):
        return ("is_dynamo_compiling() or compiler._is_compiling_flag",
                {"is_dynamo_compiling": compiler.is_dynamo_compiling, "compiler": compiler})
    return "is_compiling()", {"is_compiling": is_compiling_function()}


def is_compiling_function() -> Callable[[], bool]:
    """torch.compiler.is_compiling, or a stand-in on a torch without it."""
    import torch

    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return check if check is not None else (lambda: False)


def compiling_function() -> Callable[[], bool]:
    """The check of _compiling_check as a function, for the library wrappers. Not is_compiling() itself:
    that asks torch.jit.is_scripting() first, which costs over a microsecond per call."""
    expr, names = _compiling_check()
    namespace = dict(names)
    exec(f"def compiling():\n    return {expr}\n", namespace)  # noqa: S102 - one of two fixed expressions
    return namespace["compiling"]


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


def fill_tables() -> None:
    """The dtype and reduce-op code tables, filled once torch is imported."""
    global _dist, _c10d
    import torch
    import torch.distributed
    from torch.distributed import distributed_c10d

    _dist, _c10d = _dist or torch.distributed, _c10d or distributed_c10d

    _REDUCE[None] = F.REDUCE_CODE["SUM"]  # the default of every reducing call
    for value in vars(torch).values():
        if isinstance(value, torch.dtype):
            DTYPE[value] = F.DTYPE_CODE.get(str(value).rpartition(".")[2], _OTHER_DTYPE)
    red = getattr(_dist.ReduceOp, "RedOpType", None)
    for name in F.REDUCE_OPS[1:]:
        for owner in (red, _dist.ReduceOp):
            value = getattr(owner, name, None) if owner is not None else None
            if value is not None:
                if value is getattr(owner, name):  # a member, not a new object per lookup
                    _REDUCE_MEMBERS.append(value)
                    _REDUCE_BY_ID[id(value)] = F.REDUCE_CODE[name]
                try:
                    _REDUCE[value] = F.REDUCE_CODE[name]
                except TypeError:  # an unhashable ReduceOp instance: recorded as OTHER
                    pass


def _delegates(fn: Any) -> bool:
    """Does this function call another traced function by its global name (send -> isend in torch 2.13)?

    Then only the callee is wrapped, so that every call is recorded exactly once, whichever name the
    application used.
    """
    import dis

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
    fill_tables()
    if _rebind not in _act.ON_HOT_CHANGE:
        _act.ON_HOT_CHANGE.append(_rebind)
    for name, spec in OPS.items():
        original = getattr(distributed_c10d, name, None)
        if original is None or getattr(original, "__hangdoc_wrapped__", False) or _delegates(original):
            continue
        try:
            wrapper = make_wrapper(original, name, spec)
        except (ValueError, TypeError) as exc:  # a signature this version of the wrappers cannot read
            print(f"hangdoc: tracer left torch.distributed.{name} unwrapped: {exc}", file=sys.stderr)
            continue
        _act.patch(distributed_c10d, name, lambda _o, w=wrapper: w)
        if getattr(module, name, None) is original:
            _act.patch(module, name, lambda _o, w=wrapper: w)
    for owner in (distributed_c10d, module):
        _act.patch(owner, "destroy_process_group", _destroy_wrapper)
