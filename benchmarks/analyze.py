"""`hangdoc analyze` at scale: Flight Recorder dumps against torchfrtrace, and a very large bundle.

The configurations the goals name (each command bounded by --timeout, the whole run by --budget):

    python benchmarks/analyze.py --ranks 1024 --entries 1000 --bundle 0          # FR side by side, 3 repeats
    python benchmarks/analyze.py --ranks --bundle 16384x2000                     # the 33M-row bundle only
    python benchmarks/analyze.py                                                 # both (the default)
    python benchmarks/analyze.py --quick                                         # 256 ranks, a 2048x2000 bundle

    options: [--ranks N ...] [--entries E] [--bundle RANKSxCALLS | 0] [--repeats R] [--skip-torchfrtrace]
             [--timeout S] [--budget S] [--keep DIR (inputs written there once and reused)]

1. Flight Recorder: for each --ranks, one pickle dump per rank in the NCCL layout of dump version 2.10
   (world group, tp groups of 8, dp groups across them, each with a DeviceMesh-style description; FSDP-like
   steps of 4 tp all_reduce, a dp reduce_scatter and all_gather, a world all_reduce; stack frames shared
   between entries as torch writes them; ring buffers of --entries that wrapped). One rank posts an
   all_gather where its tp peers post all_reduce, so its tp group hangs and every dp group with it.
   Each repeat runs, one after another in the same round: the unpickle floor (every file loaded by the C
   unpickler in one process, nothing else), `hangdoc analyze --format json` (the real CLI, in a child
   process, which must name the planted rank) and torchfrtrace on the same files (when torch is
   installed). Figures are medians over the repeats, so a load spike hits one round, not one tool.
2. A bundle of RANKS x CALLS collective rows (the same job, written column by column, no dumps), analysed
   by the same CLI, --repeats times; the run must print a progress line on stderr when it takes over 1 s.

Printed per tool: wall time, CPU time (user + system of the process tree: worker processes included) and
peak memory: the largest process's maximum RSS, and the process tree's peak proportional set size (PSS,
shared pages counted once; sampled every 20 ms for 2 s, then every 250 ms, so a short spike can be
missed). Then the ratios the goals are stated in:
  FR 1024 x 1000: torchfrtrace wall / hangdoc wall >= 15; hangdoc CPU / unpickle floor CPU <= 2; < 600 MB.
  bundle 16384 x 2000: <= 6 s and <= 2 GB.
On a loaded machine CPU time and the ratio to the floor measured in the same round are the figures to
trust; wall times are not.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

TP = 8
# One training step: (group kind, op) in call order. The hang is planted in the last tp call of a step.
STEP = (("tp", "all_reduce"),) * 4 + (("dp", "reduce_scatter"), ("dp", "all_gather"), ("world", "all_reduce"))
STUCK_TP = 3  # index in STEP of the tp call the culprit's group never finishes
NEXT_DP = 4  # where every other rank then waits
# The console script's own entry point, run by this interpreter (a PATH lookup can hit a slow shim).
HANGDOC = [sys.executable, "-c", "import sys; from hangdoc.cli import main; sys.exit(main())"]
T0_NS = 1_730_000_000_000_000_000
HIDDEN, TOKENS, SHARD = 8192, 4096, 1 << 20


@dataclass(frozen=True)
class Job:
    """ranks = tp x dp; group names are torch's global counter: "0" world, then the tp groups, then dp."""

    ranks: int

    @property
    def tp(self) -> int:
        return min(TP, self.ranks)

    @property
    def dp(self) -> int:
        return self.ranks // self.tp

    @property
    def culprit(self) -> int:
        return self.ranks // 2 + 3 if self.ranks > 8 else self.ranks - 1

    def in_culprit_group(self, rank: int) -> bool:
        return rank // self.tp == self.culprit // self.tp

    def group(self, kind: str, rank: int) -> tuple[str, str, list[int]]:
        """(name, desc, members) of `rank`'s group of a kind."""
        if kind == "world":
            return "0", "default_pg", list(range(self.ranks))
        if kind == "tp":
            k = rank // self.tp
            return str(1 + k), "mesh_tp", list(range(k * self.tp, (k + 1) * self.tp))
        k = rank % self.tp
        return str(1 + self.dp + k), "mesh_dp", list(range(k, self.ranks, self.tp))

    def calls(self, rank: int, steps: int) -> int:
        """Calls `rank` made in all: `steps` whole steps, then the hung one."""
        return steps * len(STEP) + (STUCK_TP if self.in_culprit_group(rank) else NEXT_DP) + 1


def _shapes(kind: str, op: str, job: Job) -> tuple[list[list[int]], list[list[int]], str]:
    if kind == "tp" and op == "all_reduce":
        return [[TOKENS, HIDDEN]], [[TOKENS, HIDDEN]], "BFloat16"
    if op == "all_gather" and kind == "tp":
        return [[TOKENS, HIDDEN]], [[TOKENS * job.tp, HIDDEN]], "BFloat16"
    if op == "reduce_scatter":
        return [[SHARD * job.dp]], [[SHARD]], "Float"
    if op == "all_gather":
        return [[SHARD]], [[SHARD * job.dp]], "Float"
    return [[1]], [[1]], "Float"


_PNAME = {"all_reduce": "nccl:all_reduce", "reduce_scatter": "nccl:_reduce_scatter_base", "all_gather": "nccl:_all_gather_base"}
_FRAMES = [
    {"name": n, "filename": f, "line": ln}
    for n, f, ln in [
        ("all_reduce", "/usr/lib/python3/site-packages/torch/distributed/distributed_c10d.py", 2806),
        ("wrapper", "/usr/lib/python3/site-packages/torch/distributed/c10d_logger.py", 81),
        ("_reduce_scatter_base", "/usr/lib/python3/site-packages/torch/distributed/distributed_c10d.py", 4420),
        ("_all_gather_base", "/usr/lib/python3/site-packages/torch/distributed/distributed_c10d.py", 3972),
        ("forward", "/work/model/layers.py", 118),
        ("forward", "/work/model/attention.py", 77),
        ("_call_impl", "/usr/lib/python3/site-packages/torch/nn/modules/module.py", 1762),
        ("_wrapped_call_impl", "/usr/lib/python3/site-packages/torch/nn/modules/module.py", 1751),
        ("backward", "/usr/lib/python3/site-packages/torch/autograd/__init__.py", 353),
        ("reduce_grads", "/work/train/fsdp.py", 211),
        ("unshard", "/work/train/fsdp.py", 160),
        ("log_loss", "/work/train/loop.py", 96),
        ("train_step", "/work/train/loop.py", 64),
        ("main", "/work/train/main.py", 30),
        ("<module>", "/work/train/main.py", 44),
    ]
]


def _stack(kind: str, op: str) -> list[int]:
    """Frame indices, innermost first: torch's frames, then the model's modules nested a few deep (each
    through nn.Module's call wrappers), then the training loop: 6 to 16 frames."""
    module = [6, 7, 5, 6, 7, 4, 6, 7, 4, 6, 7]  # forward -> attention -> layer -> block ..., via _call_impl
    if kind == "tp":
        inner = ([0, 1] if op == "all_reduce" else [3, 1]) + module
    elif op == "reduce_scatter":
        inner = [2, 1, 9, 8] + module[:5]
    elif op == "all_gather":
        inner = [3, 1, 10] + module[:5]
    else:
        inner = [0, 1, 11]
    return inner + [12, 13, 14]


def fr_dump(job: Job, rank: int, entries: int) -> dict:
    """One rank's dump: its last `entries` calls (the ring wrapped), the last one still running."""
    steps = max(0, (entries - NEXT_DP) // len(STEP)) + 2
    total = job.calls(rank, steps)
    first = max(0, total - entries)
    seqs: dict[str, int] = {}
    groups = {kind: job.group(kind, rank) for kind in ("world", "tp", "dp")}
    frames = _FRAMES  # the same dicts in every entry, as torch's pickler shares them
    stacks = {(k, o): [frames[i] for i in _stack(k, o)] for k, o in set(STEP) | {("tp", "all_gather")}}
    out = []
    for i in range(total):
        kind, op = STEP[i % len(STEP)]
        if rank == job.culprit and i == total - 1:
            op = "all_gather"
        name, desc, _ = groups[kind]
        seqs[name] = seqs.get(name, 0) + 1
        if i < first:
            continue
        in_s, out_s, dtype = _shapes(kind, op, job)
        last = i == total - 1
        t = T0_NS + i * 7_000_000 + rank * 1000
        out.append({  # the key order of torch's writer
            "frames": list(stacks[(kind, op)]),
            "record_id": i,
            "pg_id": int(name),
            "process_group": (name, desc),
            "thread_name": "pt_main_thread",
            "thread_id": "140213412222720",
            "collective_seq_id": seqs[name],
            "p2p_seq_id": 0,
            "op_id": seqs[name],
            "profiling_name": _PNAME[op],
            "time_created_ns": t,
            "duration_ms": None if last else 1.5,
            "input_sizes": in_s,
            "input_dtypes": [dtype],
            "output_sizes": out_s,
            "output_dtypes": [dtype],
            "state": "started" if last else "completed",
            "time_discovered_started_ns": t + 50_000,
            "time_discovered_completed_ns": None if last else t + 1_500_000,
            "retired": not last,
            "timeout_ms": 600_000,
            "is_p2p": False,
        })
    pg_config = {n: {"name": n, "desc": d, "ranks": "[" + ", ".join(map(str, m)) + "]"} for n, d, m in groups.values()}
    pg_status = {n: {"last_enqueued_collective": seqs[n], "last_started_collective": seqs[n],
                     "last_completed_collective": seqs[n] - 1} for n, _, _ in groups.values()}
    return {"version": "2.10", "comm_lib_version": "2.27.3", "pg_config": pg_config, "pg_status": pg_status,
            "entries": out}


def _write_dumps(args: tuple[int, int, int, str]) -> None:
    ranks, entries, lo, directory = args
    job = Job(ranks)
    for rank in range(lo, min(lo + 64, ranks)):
        with open(os.path.join(directory, f"nccl_trace_rank_{rank}"), "wb") as f:
            pickle.dump(fr_dump(job, rank, entries), f, protocol=2)


def write_fr_dumps(directory: Path, ranks: int, entries: int) -> None:
    from concurrent.futures import ProcessPoolExecutor

    directory.mkdir(parents=True, exist_ok=True)
    chunks = [(ranks, entries, lo, str(directory)) for lo in range(0, ranks, 64)]
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(_write_dumps, chunks))


# ---------------------------------------------------------------------------------------------------
# the bundle, column by column
# ---------------------------------------------------------------------------------------------------
def _dict_col(indices: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), pa.array(values, pa.string()))


_KINDS = np.array([{"world": 0, "tp": 1, "dp": 2}[k] for k, _ in STEP], np.int8)
_OPS = ("all_reduce", "reduce_scatter", "all_gather")
_STEP_OPS = np.array([_OPS.index(o) for _, o in STEP], np.int8)
# seq of a call = (its step) * (calls of its kind per step) + (calls of its kind earlier in the step) + 1
_PER_STEP = np.array([sum(1 for k, _ in STEP if k == name) for name in ("world", "tp", "dp")], np.int64)
_BEFORE = np.array([sum(1 for k2, _ in STEP[:j] if k2 == k) for j, (k, _) in enumerate(STEP)], np.int64)


def _bundle_rows(job: Job, steps: int, lo: int, hi: int, listed: dict[int, tuple[int, list[int]]]) -> pa.Table:
    """Ranks lo..hi-1 of the bundle: every call of the job kept (no ring), column by column.
    `listed`: rank -> (kind code, members) of the groups whose members that rank's rows list."""
    from hangdoc.schema import COLLECTIVES

    r = np.arange(lo, hi)
    n_of = np.array([job.calls(x, steps) for x in range(lo, hi)], np.int64)
    starts = np.concatenate([[0], np.cumsum(n_of)])
    n = int(starts[-1])
    rank = np.repeat(r, n_of)
    i = np.arange(n) - starts[:-1][rank - lo]  # call index within the rank
    pos = i % len(STEP)
    kind = _KINDS[pos]
    op = _STEP_OPS[pos]
    last = i == n_of[rank - lo] - 1
    op[last & (rank == job.culprit)] = _OPS.index("all_gather")
    seq = (i // len(STEP)) * _PER_STEP[kind] + _BEFORE[pos] + 1
    ntp = job.dp  # tp groups
    names = ["0"] + [str(1 + k) for k in range(ntp)] + [str(1 + ntp + k) for k in range(job.tp)]
    group = np.where(kind == 0, 0, np.where(kind == 1, 1 + rank // job.tp, 1 + ntp + rank % job.tp))
    # group_ranks: one row per communicator (the first call of that kind of its lowest member)
    at = [(int(starts[x - lo]) + int(np.flatnonzero(_KINDS == k)[0]), m) for x in range(lo, hi) for k, m in listed.get(x, [])]
    at.sort()
    lengths = np.zeros(n, np.int64)
    lengths[[row for row, _ in at]] = [len(m) for _, m in at]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate([np.array(m, np.int64) for _, m in at] or [np.zeros(0, np.int64)])
    group_ranks = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=pa.array(lengths == 0))
    combo = kind.astype(np.int64) * len(_OPS) + op
    combos = [(k, o) for k in ("world", "tp", "dp") for o in _OPS]
    shapes = [_shapes(k, o, job) for k, o in combos]

    def shape_col(which: int) -> pa.Array:  # one shape per row, from the row's (kind, op)
        per = [sh[which][0] for sh in shapes]
        ndim = np.array([len(x) for x in per], np.int64)[combo]
        inner_off = np.zeros(n + 1, np.int64)
        np.cumsum(ndim, out=inner_off[1:])
        flat_dims = np.concatenate([np.array(x, np.int64) for x in per])
        first_dim = np.concatenate([[0], np.cumsum([len(x) for x in per])[:-1]])
        values = flat_dims[np.repeat(first_dim[combo], ndim) + (np.arange(int(inner_off[-1])) - np.repeat(inner_off[:-1], ndim))]
        inner = pa.LargeListArray.from_arrays(pa.array(inner_off), pa.array(values))
        return pa.LargeListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int64)), inner)

    numel = [[int(np.prod(sh[w][0])) for sh in shapes] for w in (0, 1)]
    cols = {
        "host": _dict_col((rank - lo) // 8, [f"node{h:05d}" for h in range(lo // 8, (hi + 7) // 8)]),
        "rank": pa.array(rank),
        "pid": pa.array(4000 + rank % 8),
        "group": _dict_col(group, names),
        "group_desc": _dict_col(kind, ["default_pg", "mesh_tp", "mesh_dp"]),
        "group_ranks": group_ranks,
        "group_size": pa.array(np.array([job.ranks, job.tp, job.dp], np.int64)[kind]),
        "rank_in_group": pa.array(np.where(kind == 0, rank, np.where(kind == 1, rank % job.tp, rank // job.tp))),
        "seq": pa.array(seq),
        "op": _dict_col(op, list(_OPS)),
        "dtype": _dict_col(np.array([sh[2] == "Float" for sh in shapes], np.int8)[combo], ["bfloat16", "float32"]),
        "in_shapes": shape_col(0),
        "out_shapes": shape_col(1),
        "in_numel": pa.array(np.array(numel[0], np.int64)[combo]),
        "out_numel": pa.array(np.array(numel[1], np.int64)[combo]),
        "t_issue": pa.array(T0_NS / 1e9 + rank * 1e-6 + i * 0.007),
        "state": _dict_col(last.astype(np.int8), ["completed", "started"]),
        "source": _dict_col(np.zeros(n, np.int8), ["flight-recorder"]),
        "record_id": pa.array(i),
        "call_site": _dict_col(combo, [f"{o} in {k} step (train.py)" for k, o in combos]),
    }
    return pa.table({f.name: cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type) for f in COLLECTIVES})


def write_bundle(path: Path, ranks: int, calls: int) -> int:
    """RANKS x ~CALLS rows of the same job as the dumps (every call kept) as a hangdoc bundle, written a
    slice of ranks at a time so that generating it takes little memory."""
    import pyarrow.parquet as pq

    from hangdoc.bundle import Bundle
    from hangdoc.schema import COLLECTIVES, MANIFEST_NAME

    job = Job(ranks)
    steps = max(0, (calls - NEXT_DP - 1) // len(STEP))
    listed: dict[int, list[tuple[int, list[int]]]] = {}
    for code, kind, lowest in ((0, "world", [0]), (1, "tp", range(0, ranks, job.tp)), (2, "dp", range(job.tp))):
        for x in lowest:
            listed.setdefault(x, []).append((code, job.group(kind, x)[2]))
    b = Bundle()
    b.add("collectives", COLLECTIVES.empty_table())
    b.write(path)  # the manifest; the table is then streamed into the bundle's Parquet file
    total = 0
    per = max(1, (1 << 20) // max(calls, 1))  # ranks per row group
    with pq.ParquetWriter(path / "collectives.parquet", COLLECTIVES, compression="zstd") as w:
        for lo in range(0, ranks, per):
            t = _bundle_rows(job, steps, lo, min(lo + per, ranks), listed)
            w.write_table(t, row_group_size=1 << 21)
            total += t.num_rows
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["tables"]["collectives"] = total
    (path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return total


# ---------------------------------------------------------------------------------------------------
# measuring a child process
# ---------------------------------------------------------------------------------------------------
def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out.extend(kids)
        todo.extend(kids)
    return out


@dataclass
class Run:
    wall: float
    user: float
    sys: float
    max_rss_mb: float  # the largest single process
    tree_pss_mb: float  # the whole tree, sampled
    rc: int
    stdout: str
    stderr: str


def measure(cmd: list[str], timeout: float) -> Run:
    """Run `cmd`, returning wall and CPU time (its own and its waited-for children's) and peak memory."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True)
    peak = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            total = _pss_kb(proc.pid) + sum(_pss_kb(c) for c in _children(proc.pid))
            peak[0] = max(peak[0], total)
            # reading smaps of a process of GBs walks its page tables and stalls its page faults: sample
            # often while runs are short, rarely once they are long
            done.wait(0.02 if time.perf_counter() - t0 < 2 else 0.25)

    sampler = threading.Thread(target=poll, daemon=True)
    sampler.start()
    deadline = time.monotonic() + timeout
    status = None
    try:
        while status is None:
            pid, st, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status = st
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, 9)
                pid, st, usage = os.wait4(proc.pid, 0)
                status = st
                break
            time.sleep(0.01)
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    return Run(wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024, peak[0] / 1024, proc.returncode,
               out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def hangdoc_analyze(path: Path, culprit: int, timeout: float) -> Run:
    run = measure([*HANGDOC, "analyze", str(path), "--format", "json"], timeout)
    if run.rc != 0:
        raise SystemExit(f"hangdoc analyze {path} failed (rc {run.rc}): {run.stderr.strip()[-2000:]}")
    verdict = json.loads(run.stdout)["verdict"]
    if verdict.get("culprit_ranks") != [culprit]:
        raise SystemExit(f"hangdoc analyze {path}: verdict names {verdict.get('culprit_ranks')}, planted rank is "
                         f"{culprit}: {verdict.get('summary')}")
    return run


_FLOOR = """
import gc, os, pickle, sys
gc.disable()  # as hangdoc parses: the cyclic GC off while unpickling
d = sys.argv[1]
for name in sorted(os.listdir(d)):
    with open(os.path.join(d, name), "rb") as f:
        pickle.load(f)
"""


def unpickle_floor(path: Path, timeout: float) -> Run:
    """Plain C unpickling of every dump, one process, nothing else: what no reader of these files can beat."""
    return measure([sys.executable, "-c", _FLOOR, str(path)], timeout)


def torchfrtrace(path: Path, timeout: float) -> Run | None:
    try:
        import torch.distributed.flight_recorder.fr_trace  # noqa: F401
    except ImportError:
        return None
    return measure([sys.executable, "-m", "torch.distributed.flight_recorder.fr_trace", str(path),
                    "--prefix", "nccl_trace_rank_"], timeout)


def _cpu(run: Run) -> float:
    return run.user + run.sys


def _fmt(run: Run) -> str:
    return (f"wall {run.wall:6.2f} s  cpu {_cpu(run):6.2f} s ({run.user:.2f} user + {run.sys:.2f} sys)  "
            f"max RSS {run.max_rss_mb:5.0f} MB  tree PSS {run.tree_pss_mb:5.0f} MB")


def median_run(runs: list[Run]) -> Run:
    """Per figure, the median over the repeats."""
    def med(values: list[float]) -> float:
        return float(np.median(values))

    return Run(med([r.wall for r in runs]), med([r.user for r in runs]), med([r.sys for r in runs]),
               med([r.max_rss_mb for r in runs]), med([r.tree_pss_mb for r in runs]), runs[-1].rc,
               runs[-1].stdout, runs[-1].stderr)


def _load() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"
    except OSError:
        return ""


def fr_side_by_side(d: Path, ranks: int, entries: int, repeats: int, tools: bool, timeout: float,
                    deadline: float) -> None:
    job = Job(ranks)
    floors: list[Run] = []
    ours: list[Run] = []
    theirs: list[Run] = []
    for i in range(repeats):
        if i and time.monotonic() > deadline:
            print(f"   --budget reached: {i} of {repeats} repeats")
            break
        floors.append(unpickle_floor(d, timeout))
        ours.append(hangdoc_analyze(d, job.culprit, timeout))
        t = torchfrtrace(d, timeout) if tools else None
        if t is not None:
            theirs.append(t)
        print(f"   round {i + 1}: floor cpu {_cpu(floors[-1]):.2f} s, hangdoc {ours[-1].wall:.2f} s wall / "
              f"{_cpu(ours[-1]):.2f} s cpu" + (f", torchfrtrace {t.wall:.2f} s wall" if t else "") + f"  ({_load()})")
    floor, mine = median_run(floors), median_run(ours)
    n = len(ours)
    print(f"FR {ranks:6d} x {entries}: hangdoc      {_fmt(mine)}  (names rank {job.culprit}; median of {n})")
    print(f"FR {ranks:6d} x {entries}: unpickle     {_fmt(floor)}  (the floor: C unpickler, one process)")
    if theirs:
        other = median_run(theirs)
        tail = "" if other.rc == 0 else f"  (exit {other.rc})"
        print(f"FR {ranks:6d} x {entries}: torchfrtrace {_fmt(other)}{tail}")
    print(f"   hangdoc cpu / unpickle floor: {_cpu(mine) / max(_cpu(floor), 1e-9):.2f}x (goal <= 2)")
    if theirs:
        print(f"   torchfrtrace / hangdoc: {other.wall / mine.wall:.1f}x wall (goal >= 15), "
              f"{_cpu(other) / max(_cpu(mine), 1e-9):.1f}x cpu, {other.max_rss_mb / max(mine.tree_pss_mb, 1):.1f}x memory")


def bundle_runs(path: Path, ranks: int, calls: int, repeats: int, timeout: float, deadline: float) -> None:
    runs = []
    for i in range(repeats):
        if i and time.monotonic() > deadline:
            print(f"   --budget reached: {i} of {repeats} repeats")
            break
        runs.append(hangdoc_analyze(path, Job(ranks).culprit, timeout))
    run = median_run(runs)
    progress = [line for line in runs[-1].stderr.splitlines() if line.strip()]
    print(f"bundle {ranks} x {calls}: hangdoc {_fmt(run)}  (names rank {Job(ranks).culprit}; median of {len(runs)})")
    print(f"   goal <= 6 s and <= 2 GB; progress on stderr: {progress[-1] if progress else '(none)'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="*", default=None, help="FR dump sizes (default 1024; none: skip FR)")
    ap.add_argument("--entries", type=int, default=1000, help="FR entries per rank (default 1000)")
    ap.add_argument("--bundle", default=None, help="RANKSxCALLS bundle to analyse (default 16384x2000; 0 skips)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds per configuration; medians are printed (default 3)")
    ap.add_argument("--skip-torchfrtrace", action="store_true")
    ap.add_argument("--quick", action="store_true", help="256 ranks, a 2048x2000 bundle")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per command (default 600)")
    ap.add_argument("--budget", type=float, default=2400,
                    help="seconds for the whole run: once spent, no further repeat starts (default 2400)")
    ap.add_argument("--keep", type=Path, default=None, help="write the inputs here and keep them")
    a = ap.parse_args(argv)
    sizes = a.ranks if a.ranks is not None else ([256] if a.quick else [1024])
    bundle = a.bundle or ("2048x2000" if a.quick else "16384x2000")
    deadline = time.monotonic() + a.budget

    root = a.keep or Path(tempfile.mkdtemp(prefix="hangdoc-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(_load())
    try:
        for ranks in sizes:
            d = root / f"fr-{ranks}x{a.entries}"
            if not d.exists():
                t = time.perf_counter()
                write_fr_dumps(d, ranks, a.entries)
                print(f"wrote {ranks} dumps x {a.entries} entries ({sum(f.stat().st_size for f in d.iterdir()) / 1e6:.0f} MB) "
                      f"in {time.perf_counter() - t:.1f} s")
            fr_side_by_side(d, ranks, a.entries, a.repeats, not a.skip_torchfrtrace, a.timeout, deadline)
        if bundle != "0":
            ranks, calls = (int(x) for x in bundle.lower().split("x"))
            path = root / f"bundle-{ranks}x{calls}"
            if not path.exists():
                t = time.perf_counter()
                n = write_bundle(path, ranks, calls)
                size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
                print(f"wrote bundle {ranks} x {calls}: {n:,} rows ({size:.0f} MB) in {time.perf_counter() - t:.1f} s")
            bundle_runs(path, ranks, calls, a.repeats, a.timeout, deadline)
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(_load())
    return 0


if __name__ == "__main__":
    sys.exit(main())
