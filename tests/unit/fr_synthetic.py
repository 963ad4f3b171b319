"""Synthetic Flight Recorder dumps in each writer layout, for tests and speed measurements.

Layouts follow the C++ writer of each era:
  "1.5"  : seq_id (one counter for everything), process_group, no dtypes / is_p2p / pg_status
  "2.2"  : collective_seq_id + p2p_seq_id, is_p2p, input/output dtypes, timeout_ms
  "2.4"  : + pg_status
  "2.7"  : + nccl_version
  "2.10" : + thread_id / thread_name, comm_lib_version instead of nccl_version
Pickles are written with Python's pickle (plain dicts, lists, tuples: what torch's own pickler emits);
JSON mirrors dump_json (lists for tuples, 0 for unset timestamps, string pg_status values, and no
"entries" key when the buffer is empty).
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSIONS = ("1.5", "2.2", "2.4", "2.7", "2.10")
T0 = 1_700_000_000_000_000_000  # ns


@dataclass
class Call:
    """One recorded call, as the writer saw it on one rank."""

    pg: tuple[str, str]  # (pg name, desc)
    op: str  # profiling name without backend ("all_reduce", "send 0->1", "coalesced")
    seq: int  # collective_seq_id, or p2p_seq_id for p2p calls
    in_sizes: list[list[int]] = field(default_factory=lambda: [[4]])
    out_sizes: list[list[int]] | None = None
    dtype: str = "Float"
    state: str = "completed"
    retired: bool = True
    p2p: bool | None = None  # default: op starts with send/recv
    backend: str = "nccl"
    frames: list[dict[str, Any]] | None = None

    @property
    def is_p2p(self) -> bool:
        return self.p2p if self.p2p is not None else self.op.split(" ")[0] in ("send", "recv")


def entry(call: Call, record_id: int, version: str, op_id: int | None = None) -> dict[str, Any]:
    out_sizes = call.out_sizes if call.out_sizes is not None else call.in_sizes
    e: dict[str, Any] = {
        "record_id": record_id,
        "pg_id": int(call.pg[0]) if call.pg[0].isdigit() else 0,
        "process_group": tuple(call.pg),
    }
    if version == "1.5":
        e["seq_id"] = call.seq
    else:
        e["collective_seq_id"] = 0 if call.is_p2p else call.seq
        e["p2p_seq_id"] = call.seq if call.is_p2p else 0
    e["op_id"] = op_id if op_id is not None else record_id + 1
    e["profiling_name"] = f"{call.backend}:{call.op}"
    e["time_created_ns"] = T0 + record_id * 1000
    e["input_sizes"] = call.in_sizes
    if version != "1.5":
        e["input_dtypes"] = [call.dtype] * len(call.in_sizes)
    e["output_sizes"] = out_sizes
    if version != "1.5":
        e["output_dtypes"] = [call.dtype] * len(out_sizes)
    e["state"] = call.state
    started = call.state in ("started", "completed")
    e["time_discovered_started_ns"] = T0 + record_id * 1000 + 10 if started else None
    e["time_discovered_completed_ns"] = T0 + record_id * 1000 + 20 if call.state == "completed" else None
    e["retired"] = call.retired
    if version != "1.5":
        e["timeout_ms"] = 600000
        e["is_p2p"] = call.is_p2p
    if version == "2.10":
        e["thread_id"] = "140000000000000"
        e["thread_name"] = "pt_main_thread"
    if call.frames is not None:
        e["frames"] = call.frames
    elif version == "1.5":
        e["frames"] = []
    return e


def pg_config(groups: dict[str, tuple[str, list[int]]] | None) -> dict[str, dict[str, str]]:
    """{name: (desc, ranks)} -> pg_config; None gives gloo's broken form (a single '' key, no ranks)."""
    if groups is None:
        return {"": {"name": "", "desc": "", "ranks": "[]"}}
    return {n: {"name": n, "desc": d, "ranks": "[" + ", ".join(map(str, r)) + "]"} for n, (d, r) in groups.items()}


def dump(
    calls: list[Call],
    version: str = "2.10",
    groups: dict[str, tuple[str, list[int]]] | None = None,
    first_record_id: int = 0,
) -> dict[str, Any]:
    """A dump dict; `first_record_id` > 0 models a ring that wrapped (older records overwritten)."""
    d: dict[str, Any] = {"version": version, "pg_config": pg_config(groups)}
    vt = tuple(int(x) for x in version.split("."))
    if vt >= (2, 4):
        d["pg_status"] = {"0": {"last_enqueued_collective": 1, "last_started_collective": 1, "last_completed_collective": 1}}
    if version == "2.7":
        d["nccl_version"] = "2.21.5"
    if version == "2.10":
        d["comm_lib_version"] = "2.27.3"
    d["entries"] = [entry(c, first_record_id + i, version) for i, c in enumerate(calls)]
    return d


def to_json(d: dict[str, Any]) -> str:
    j = json.loads(json.dumps(d))  # tuples -> lists
    for e in j.get("entries", []):
        for k in ("time_discovered_started_ns", "time_discovered_completed_ns"):
            if e.get(k) is None:
                e[k] = 0
        e.pop("frames", None)  # dump_json writes no stack traces
    for st in j.get("pg_status", {}).values():
        for k in st:
            st[k] = str(st[k])
    if not j.get("entries"):
        j.pop("entries", None)
    return json.dumps(j, sort_keys=True)


def write_rank(
    directory: Path, rank: int, d: dict[str, Any], *, form: str = "pickle", prefix: str = "nccl_trace_rank_"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{prefix}{rank}"
    if form == "json":
        path.write_text(to_json(d))
    else:
        path.write_bytes(pickle.dumps(d, protocol=2))
    return path
