"""The Diagnosis and what it is made of. Frozen, so reporters can only render it.

Field names here mirror the JSON report contract in docs/report-json.md; keep them stable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# Finding kinds of the report contract. Passes may add more; these names never change.
COLLECTIVE_MISMATCH = "collective_mismatch"
LAGGING_RANK = "lagging_rank"
MISSING_RANK = "missing_rank"
CALL_COUNT_SWAP = "call_count_swap"
ORDER_INVERSION = "order_inversion"
GPU_SPIN_WAIT = "gpu_spin_wait"
RANK_EXITED = "rank_exited"
RANK_STOPPED = "rank_stopped"  # a rank's process stopped (SIGSTOP, a debugger) while its peers run
ORPHANED_PROCESS = "orphaned_process"
STUCK_IN_TEARDOWN = "stuck_in_teardown"
STUCK_IN_KERNEL = "stuck_in_kernel"  # a rank's main thread in uninterruptible sleep (D) in every sample
OOM = "oom"
KV_TRANSFER_STRANDED = "kv_transfer_stranded"
LOG_SIGNATURE = "log_signature"
NO_FAULT_FOUND = "no_fault_found"
ANALYSIS_INCOMPLETE = "analysis_incomplete"  # a pass crashed: the verdict stands on the others, at low confidence
STACK_DIVERGENCE = "stack_divergence"
WAIT_CHAIN = "wait_chain"  # symptom: stuck ranks waiting, directly or through others, on a root cause


@dataclass(frozen=True)
class OpCall:
    """What one rank posted at one position of a communicator."""

    rank: int
    seq: int | None
    op: str
    reduce_op: str | None = None
    dtype: str | None = None
    in_shapes: tuple[tuple[int, ...], ...] = ()
    out_shapes: tuple[tuple[int, ...], ...] = ()
    in_numel: int | None = None
    out_numel: int | None = None
    state: str = "unknown"

    def label(self) -> str:
        """'all_reduce SUM [15, 2] bfloat16', the way people write ops in bug reports."""
        parts = [self.op]
        if self.reduce_op:
            parts.append(self.reduce_op)
        if self.in_shapes:
            parts.append(", ".join(str(list(s)) for s in self.in_shapes))
        elif self.in_numel is not None:
            parts.append(f"numel={self.in_numel}")
        if self.dtype:
            parts.append(self.dtype)
        return " ".join(parts)


@dataclass(frozen=True)
class Swap:
    """A rank made `calls` fewer calls on `from_group`'s family and `calls` more on `to_group`'s."""

    from_group: str
    to_group: str
    calls: int


@dataclass(frozen=True)
class Finding:
    kind: str
    ranks: tuple[int, ...]
    summary: str
    group: str | None = None
    seq: int | None = None
    op: str | None = None
    expected_op: str | None = None
    evidence: tuple[str, ...] = ()
    calls: tuple[OpCall, ...] = ()  # each member's op at the position, for side-by-side display
    waiting_ranks: tuple[int, ...] = ()  # ranks blocked because of this fault
    swap: Swap | None = None
    role: str = "cause"  # "cause" or "symptom" (explained by another finding)
    count: int = 1  # how many occurrences this one finding stands for
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    kind: str
    culprit_ranks: tuple[int, ...]
    group: str | None
    summary: str
    reason: str = ""  # why this finding was chosen over the others
    confidence: str = "medium"  # high / medium / low


@dataclass(frozen=True)
class RankPosition:
    """Where one member of a communicator stands: its last call and how many it completed."""

    rank: int
    last_seq: int | None
    last_op: str | None  # OpCall.label() of the last call, None when it left no trace
    state: str | None
    calls: int  # calls recorded on this communicator
    completed: int  # calls known to have completed


@dataclass(frozen=True)
class GroupView:
    """One communicator as the reporters show it."""

    group: str  # stable readable id: "tp:1", "dp:0", or the recorder's name
    desc: str | None
    family: str | None
    ranks: tuple[int, ...]
    positions: tuple[RankPosition, ...]


@dataclass(frozen=True)
class AlignmentWindow:
    """Each member's calls on one communicator around its first divergence: the columns of the HTML picture."""

    group: str
    seq: int | None  # the first position where members disagree (or stop); None when they never do
    ranks: tuple[int, ...]  # members, including any that left no call in the window
    calls: tuple[OpCall, ...]  # every member's calls in the window (a few positions either side of `seq`)


@dataclass(frozen=True)
class WaitEdge:
    """`rank` is blocked waiting for `waits_on` (on `group` when known): one arrow of the wait-for graph."""

    rank: int
    waits_on: int
    group: str | None = None


@dataclass(frozen=True)
class GpuSeries:
    """One GPU's samples over the capture, for sparklines (percent; NaN where a sample lacks the metric)."""

    host: str
    gpu: int
    rank: int | None
    sm_util: tuple[float, ...]
    mem_bw_util: tuple[float, ...]


@dataclass(frozen=True)
class StackMember:
    """One thread in a stack class: the rank (None for a process without one), where it runs and its name."""

    rank: int | None
    host: str | None
    pid: int | None
    thread: str | None  # thread name, or "thread TID"
    title: str | None = None  # process title or command (VLLM::Worker_TP1, python train.py)


@dataclass(frozen=True)
class StackClass:
    """Threads standing at the same place (STAT's equivalence class): one stack, every thread that shows it.

    Rank classes (each rank's main thread, or its thread inside a collective) come first, the odd ones out
    before the majority; classes of processes without a rank (an engine core, a plain script) follow."""

    members: tuple[StackMember, ...]
    category: str  # collective / teardown / idle / model / other
    op: str | None
    where: str  # 'all_reduce <- forward <- ...': the deciding frame and its callers
    what: str  # 'in a collective (all_reduce)', 'in teardown', 'idle waiting for work', 'not in a collective'
    frames: tuple[str, ...]  # the whole stack, innermost first: 'function (file.py:12)'
    top: tuple[str, ...]  # the few frames a short report shows: where it waits, then its callers
    odd: bool = False  # fewer ranks stand here than at the most common place
    branch: str | None = None  # the first frame (from the outermost) it does not share with the most common class
    progress: str = "one sample"  # frozen / progressing / one sample

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(sorted({m.rank for m in self.members if m.rank is not None}))


@dataclass(frozen=True)
class RankProcess:
    """Who a rank is, so a reader can go from the verdict to `py-spy dump --pid` or `kill`."""

    rank: int
    host: str | None
    pid: int | None
    title: str | None  # process title (VLLM::Worker_TP1), else the command line


@dataclass(frozen=True)
class Diagnosis:
    hangdoc_version: str
    inputs: tuple[str, ...]
    verdict: Verdict
    findings: tuple[Finding, ...]
    groups: tuple[GroupView, ...] = ()
    checked: tuple[str, ...] = ()  # what the passes looked at, for no_fault_found and the report footer
    notes: tuple[str, ...] = ()  # input notes: files skipped, ranks without a trace file...
    rank_labels: Mapping[int, str] = field(default_factory=dict)  # 6 -> "DP 1, TP rank 2"
    alignment: tuple[AlignmentWindow, ...] = ()  # verdict's communicator first
    wait_for: tuple[WaitEdge, ...] = ()
    gpus: tuple[GpuSeries, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)  # "torch" -> "2.13.0", "nccl" -> "2.27.3"...
    stacks: tuple[StackClass, ...] = ()  # where each rank and process stands, odd ones first
    rank_processes: Mapping[int, RankProcess] = field(default_factory=dict)
