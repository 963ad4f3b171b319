"""The source of the generated torch.distributed wrappers (see torch_dist.make_wrapper).

Why generated: every collective of the job pays for its wrapper, and most of a generic `(*args, **kwargs)`
wrapper's cost is argument handling (packing them, a probe call to bind them, unpacking them again to call
the original). A wrapper written with the original's own parameter list reads its arguments as plain
locals and calls the original positionally. The hot path below is written once; per function only the
parameter list and a few expressions (which argument is the tensor, the group, the peer...) differ.

Pure text: nothing here imports torch. The generated function's globals are FORMAT_NAMES, the values
source() returns, and the runtime helpers torch_dist supplies (original, HOT and hot, group_entry, p2p_entry,
reduce_code, dtypes, watch, watch_cuda, warn_once, SKIP and the compile check's names). Integer constants
(OP, ISSUED, ...) are written into the source as literals: a constant costs less than a global lookup.
"""
from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

from hangdoc.tracer import format as F


@dataclass(frozen=True)
class Spec:
    """What one function's record needs, as Python expressions over its parameter names."""

    op: str  # the op recorded
    tensor: str = "tensor"  # the first input tensor ("None": no tensor)
    out: str = ""  # output element count; "" = the input's; `n` is the input's element count
    reduce: str = ""  # the reduce-op parameter
    peer: str = ""  # root, or the other side of a send/recv, as a global rank
    group_peer: str = ""  # the same relative to the group (torch >= 2.6)
    async_op: str = "async_op"  # does the caller get a work handle back


# The hot path, written once and specialised per function (see source()). Every attribute load and
# call here is paid on every collective of the job: no helper calls on the common path, integer constants
# written in as literals, a tensor's element count taken from its shape, the call site of the previous call
# remembered (most calls of a function come from one place), the record's fields passed to struct one by
# one (cheaper than combining them with Python integer operations).
_TEMPLATE = '''\
def {name}({params}):
    global LAST_SITE
    if {compiling}:  # let torch.compile see the original call, and nothing of ours
{compile_call}
    stamp = 0
    try:
        rec, mm, base, cap, index, sites, cache, heads, states = HOT or hot()
        try:
            entry = cache[{group}]
        except KeyError:
            entry = group_entry(rec, {group})
        if entry is not SKIP:
{peer}
            f = getframe(1)
            last = LAST_SITE
            if f.f_code is last[0] and f.f_lasti == last[1]:
                site = last[2]
            else:
                try:
                    site = sites[id(f.f_code)][f.f_lasti]
                except KeyError:
                    site = rec.site(f)
                LAST_SITE = (f.f_code, f.f_lasti, site)
            t = {tensor}
            seq = next(entry.seq)
            idx = next(index)
            stamp = idx + 1
            off = base + idx % cap * RECORD_BYTES
            if not idx & CURSOR_MASK:  # the header's write cursor, for readers that look only at the header
                put_cursor(mm, CURSOR_OFFSET, idx)
{record}
    except Exception as exc:  # tracing never changes what the application sees
        warn_once({name!r}, exc)
        stamp = 0
    if not stamp:
        return original({call})
    try:
        result = original({call})
    except BaseException:
        if heads[off >> 3] == stamp:
            states[off + 1] |= F_RAISED  # the flags byte; the state stays "issued"
        raise
{completion}
    return result
'''

_NO_TENSOR = '''\
            pack0(mm, off, stamp, time_ns(), 0, 0, seq, entry.gid, OP, {reduce}, 0, 0, ISSUED, {flags}, {peer}, site,
                  stamp)'''

_TENSOR = '''\
            if t is None:
    {no_tensor}
            else:
                shape = t.shape
                try:
                    dc = dtypes[t.dtype]
                except KeyError:
                    dc = OTHER_DTYPE
                nd = len(shape)
                # The common ranks get a plain call: star-unpacking the shape costs more than the pack.
                if nd == 1:
                    n = shape[0]
                    pack1(mm, off, stamp, time_ns(), n, {out}, n, seq, entry.gid, OP, {reduce}, dc, 1, ISSUED, {flags},
                          {peer}, site, stamp)
                elif nd == 2:
                    d0, d1 = shape
                    n = d0 * d1
                    pack2(mm, off, stamp, time_ns(), n, {out}, d0, d1, seq, entry.gid, OP, {reduce}, dc, 2, ISSUED,
                          {flags}, {peer}, site, stamp)
                elif nd == 3:
                    d0, d1, d2 = shape
                    n = d0 * d1 * d2
                    pack3(mm, off, stamp, time_ns(), n, {out}, d0, d1, d2, seq, entry.gid, OP, {reduce}, dc, 3, ISSUED,
                          {flags}, {peer}, site, stamp)
                else:
                    n = t.numel()
                    dims = shape[:4]
                    packs[len(dims)](mm, off, stamp, time_ns(), n, {out}, *dims, seq, entry.gid, OP, {reduce}, dc,
                                     nd, ISSUED, {flags}, {peer}, site, stamp)'''

_ASYNC_DONE = '''\
    if {async_op} and result is not None:
        watch(rec, stamp, result)
        return result
'''
_CUDA_DONE = '''\
    if cuda:
        watch_cuda(rec, stamp)
        return result
'''
_DONE = '''\
    if heads[off >> 3] == stamp:  # the slot is still ours (no wrap-around meanwhile)
        states[off] = COMPLETED'''

_PEER = '''\
            peer = {peer}
            if {group_peer} is not None:
                peer = entry.ranks[{group_peer}]
            elif peer is None:
                peer = -1'''

_INTERNAL = frozenset({  # the generated function's own locals: no parameter may have these names
    "rec", "mm", "base", "cap", "index", "sites", "cache", "heads", "states", "entry", "f", "last", "site", "t",
    "seq", "idx", "stamp", "off", "shape", "dc", "n", "nd", "d0", "d1", "d2", "dims", "exc", "result", "peer", "kw",
    "cuda", "flags", "HOT", "hot", "original",
})
_ALLOWED_NAMES = frozenset({"len", "None", "True", "False"})


# The trace format's integers, written into the source; its packers, globals of the generated functions.
_LITERALS: dict[str, int] = {
    "CURSOR_OFFSET": F.CURSOR_OFFSET, "CURSOR_MASK": F.CURSOR_EVERY - 1, "RECORD_BYTES": F.RECORD_BYTES,
    "OTHER_DTYPE": F.DTYPE_CODE["other"], "F_ASYNC": F.F_ASYNC, "F_CUDA": F.F_CUDA, "F_RAISED": F.F_RAISED,
    "COMPLETED": F.COMPLETED, "ISSUED": F.ISSUED,
}
FORMAT_NAMES: dict[str, Any] = {
    "put_cursor": F.STAMP.pack_into, "packs": tuple(s.pack_into for s in F.RECORDS_BY_NDIM),
    **{f"pack{k}": s.pack_into for k, s in enumerate(F.RECORDS_BY_NDIM)},
}


def _expr_names(expr: str) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(expr, mode="eval")) if isinstance(node, ast.Name)}


def _signature_parts(sig: inspect.Signature) -> tuple[str, str, str, dict[str, Any]]:
    """The generated function's parameter list, its call of the original, the call made while torch.compile
    traces (only the arguments the caller gave, as far as can be told: torch.compile rewrites some
    collectives by looking at which ones were passed), and the default values they refer to."""
    params = list(sig.parameters.values())
    defaults: dict[str, Any] = {}
    sig_text: list[str] = []
    call: list[str] = []
    compile_pos: list[str] = []
    compile_kw: list[str] = []
    star = False
    for i, p in enumerate(params):
        default = ""
        if p.default is not p.empty:
            defaults[f"_d{i}"] = p.default
            default = f"=_d{i}"
        if p.kind is p.KEYWORD_ONLY and not star:
            sig_text.append("*")
            star = True
        if p.kind is p.VAR_POSITIONAL:
            sig_text.append(f"*{p.name}")
            star = True
            call.append(f"*{p.name}")
            compile_pos.append(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            sig_text.append(f"**{p.name}")
            call.append(f"**{p.name}")
            compile_kw.append(f"        kw.update({p.name})")
        else:
            sig_text.append(p.name + default)
            call.append(f"{p.name}={p.name}" if p.kind is p.KEYWORD_ONLY else p.name)
            if p.kind is p.POSITIONAL_ONLY or (not default and p.kind is p.POSITIONAL_OR_KEYWORD):
                compile_pos.append(p.name)
            elif default:  # passed on only when the caller gave something else than the default
                compile_kw.append(f"        if {p.name} is not _d{i}:\n            kw[{p.name!r}] = {p.name}")
            else:
                compile_kw.append(f"        kw[{p.name!r}] = {p.name}")
    positional_only = [i for i, p in enumerate(params) if p.kind is p.POSITIONAL_ONLY]
    if positional_only:
        sig_text.insert(positional_only[-1] + 1, "/")
    compile_call = "\n".join(["        kw = {}", *compile_kw,
                              f"        return original({', '.join([*compile_pos, '**kw'])})"])
    return ", ".join(sig_text), ", ".join(call), compile_call, defaults


def source(name: str, spec: Spec, sig: inspect.Signature, cuda_build: bool, compiling: str,
           reduce_code: Callable[[Any], int]) -> tuple[str, dict[str, Any]]:
    """The wrapper's source for function `name` with signature `sig`, and the values it refers to beyond
    the usual names (its defaults, REDUCE_DEFAULT). `compiling` is the expression that is true while
    torch.compile traces; reduce_code(op) the code of a reduce op. Raises ValueError when `sig` lacks a
    parameter `spec` reads."""
    names = set(sig.parameters)
    if names & _INTERNAL:
        raise ValueError(f"parameter names {sorted(names & _INTERNAL)} clash with the wrapper's")
    for expr in (spec.tensor, spec.out or "n"):
        missing = _expr_names(expr) - names - _ALLOWED_NAMES - {"n"}
        if missing:
            raise ValueError(f"no parameter {', '.join(sorted(missing))}")
    group = "group" if "group" in names else "None"
    peer = spec.peer if spec.peer in names else ""
    group_peer = spec.group_peer if spec.group_peer in names else ""
    async_op = spec.async_op if spec.async_op in ("True", "False") or spec.async_op in names else "False"
    params, call, compile_call, consts = _signature_parts(sig)
    op = F.OP_CODE[spec.op]
    literals = {**_LITERALS, "OP": op}

    prelude = []
    reduce = "0"
    if spec.reduce in names:
        default = consts["REDUCE_DEFAULT"] = sig.parameters[spec.reduce].default
        literals["RC_DEFAULT"] = reduce_code(None if default is inspect.Parameter.empty else default)
        reduce = f"RC_DEFAULT if {spec.reduce} is REDUCE_DEFAULT else reduce_code({spec.reduce})"
    flags = {"False": "0", "True": "F_ASYNC"}.get(async_op, f"F_ASYNC if {async_op} else 0")
    cuda = cuda_build and spec.tensor != "None"
    if cuda:  # the flag is recorded; completion comes from a CUDA event recorded after the call
        prelude.append(f"cuda = t is not None and t.is_cuda\nflags = ({flags}) | F_CUDA if cuda else {flags}")
        flags = "flags"
    peer_block, peer_value = "", "-1"
    if peer:
        peer_block, peer_value = _PEER.format(peer=peer, group_peer=group_peer or "None"), "peer"
        if op in F.P2P_OPS:
            peer_block += f"\n            entry = p2p_entry(rec, entry, {group}, peer)"
    fields = dict(reduce=reduce, flags=flags, peer=peer_value)
    no_tensor = _NO_TENSOR.format(**fields)
    record = no_tensor if spec.tensor == "None" else _TENSOR.format(
        no_tensor=no_tensor.replace("\n", "\n    "), out=spec.out or "n", **fields)
    record = "".join(f"            {line}\n" for line in "\n".join(prelude).splitlines()) + record
    completion_src = ""
    if async_op != "False":
        completion_src += _ASYNC_DONE.format(async_op=async_op)
    if cuda:
        completion_src += _CUDA_DONE
    completion_src += _DONE
    src = _TEMPLATE.format(
        name=name, params=params, compiling=compiling, compile_call=compile_call, group=group, peer=peer_block,
        tensor=spec.tensor, record=record, call=call, completion=completion_src,
    )
    src = re.sub(r"\b(" + "|".join(literals) + r")\b", lambda m: str(literals[m.group(1)]), src)
    return src, consts
