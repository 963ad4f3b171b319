"""One spelling for collective ops, reduce ops, dtypes and call states, whichever recorder wrote them.

Traces name the same call many ways ("nccl:all_reduce", "allreduce", "ncclAllReduce", "_allgather_base",
"RedOpType.SUM", "torch.bfloat16", "BFloat16"). Alignment compares these strings across ranks, so every
importer maps them through here; a second table elsewhere would let two importers disagree.
"""
from __future__ import annotations

import re
from functools import lru_cache

# Keys are lower-case with every "_", "-" and space removed.
_OPS: dict[str, str] = {
    "allreduce": "all_reduce",
    "sparseallreduce": "all_reduce",
    "allreducesparse": "all_reduce",
    "allreducebarrier": "barrier",
    "allgather": "all_gather",
    "allgatherintotensor": "all_gather",
    "allgathersingle": "all_gather",
    "allgatherv": "all_gatherv",
    "reducescatter": "reduce_scatter",
    "reducescattertensor": "reduce_scatter",
    "reducescattersingle": "reduce_scatter",
    "reducescatterv": "reduce_scatterv",
    "alltoall": "all_to_all",
    "alltoallsingle": "all_to_all",
    "alltoallv": "all_to_all",
    "alltoallvsingle": "all_to_all",
    "broadcast": "broadcast",
    "bcast": "broadcast",
    "broadcastoop": "broadcast",
    "reduce": "reduce",
    "reduceoop": "reduce",
    "gather": "gather",
    "scatter": "scatter",
    "barrier": "barrier",
    "send": "send",
    "isend": "send",
    "recv": "recv",
    "irecv": "recv",
    "recvanysource": "recv",
    "coalesced": "coalesced",
}

_REDUCE_OPS: dict[str, str] = {
    "sum": "SUM",
    "avg": "AVG",
    "mean": "AVG",
    "product": "PRODUCT",
    "prod": "PRODUCT",
    "min": "MIN",
    "max": "MAX",
    "band": "BAND",
    "bor": "BOR",
    "bxor": "BXOR",
    "premulsum": "PREMUL_SUM",
}

_DTYPES: dict[str, str] = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "half": "float16",
    "fp16": "float16",
    "float32": "float32",
    "float": "float32",
    "fp32": "float32",
    "float64": "float64",
    "double": "float64",
    "fp64": "float64",
    "int8": "int8",
    "char": "int8",
    "uint8": "uint8",
    "byte": "uint8",
    "int16": "int16",
    "short": "int16",
    "int32": "int32",
    "int": "int32",
    "int64": "int64",
    "long": "int64",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "float8e4m3fn": "float8_e4m3fn",
    "float8e5m2": "float8_e5m2",
    "fp8e4m3": "float8_e4m3fn",
    "fp8e5m2": "float8_e5m2",
    "complex32": "complex32",
    "complexhalf": "complex32",
    "complex64": "complex64",
    "complexfloat": "complex64",
    "complex128": "complex128",
    "complexdouble": "complex128",
}

_STATES: dict[str, str] = {
    "issued": "issued",
    "scheduled": "issued",
    "queued": "issued",
    "enqueued": "issued",
    "started": "started",
    "running": "started",
    "inprogress": "started",
    "active": "started",
    "timedout": "timed_out",
    "completed": "completed",
    "complete": "completed",
    "done": "completed",
    "finished": "completed",
    "retired": "completed",
    "unknown": "unknown",
}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def _last_word(name: str) -> str:
    """'torch.bfloat16' -> 'bfloat16', '<RedOpType.SUM: 0>' -> 'SUM': the enum member, not its class."""
    words = _WORD.findall(name)
    s = words[-1] if words else name.strip()
    if s.startswith("nccl") and len(s) > 4:
        s = s[4:]
    return s


@lru_cache(maxsize=4096)
def normalize_op(name: str) -> str:
    """'nccl:_allgather_base' -> 'all_gather', 'ncclAllReduce' -> 'all_reduce'; unknown ops snake_cased."""
    s = name.strip().rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    if s.startswith("nccl") and len(s) > 4 and s[4].isupper():
        s = s[4:]
    key = _key(s)
    if key in _OPS:
        return _OPS[key]
    for suffix, tail in (("base", ""), ("coalesced", "_coalesced")):
        if key.endswith(suffix) and key[: -len(suffix)] in _OPS:
            return _OPS[key[: -len(suffix)]] + tail
    snake = _CAMEL.sub("_", s).lower().strip("_")
    return snake or name


@lru_cache(maxsize=256)
def normalize_reduce_op(name: str) -> str:
    """'RedOpType.SUM', 'ReduceOp.SUM', 'ncclSum', 'sum' -> 'SUM'."""
    s = _last_word(name)
    return _REDUCE_OPS.get(_key(s), s.upper())


@lru_cache(maxsize=256)
def normalize_dtype(name: str) -> str:
    """'torch.bfloat16', 'BFloat16', 'bf16', 'ncclBfloat16' -> 'bfloat16'."""
    s = _last_word(name)
    return _DTYPES.get(_key(s), s.lower())


@lru_cache(maxsize=64)
def normalize_state(name: str) -> str:
    """A recorder's call state as one of schema.STATES ('scheduled' -> issued, 'retired' -> completed)."""
    return _STATES.get(_key(name), "unknown")
