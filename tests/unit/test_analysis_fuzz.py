"""No analysis pass may raise on rows with missing fields: every column of every table is nullable, and real
inputs leave any of them out (a log line without a time or an op, a process without a rank, a py-spy dump
without a host). Each pass in PASSES runs over real fixture inputs with one column null at a time (in every
other row, so nulls sit next to values, and in every row) and with all columns null at once."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from hangdoc.analysis.pipeline import Context, diagnose, run_passes
from hangdoc.bundle import Bundle
from hangdoc.importers import load_inputs
from hangdoc.schema import TABLES, table_from_rows

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

# Seed 003's run as a user pasted it: rank 0 skipped warm-up after an OOM, ranks 1-3 logged the c10d watchdog,
# rank 3 also its PG status line (a SeqNum without an OpType next to one with it).
TRTLLM_LOGS = {
    "rank0.log": "[TRT-LLM] [RANK 0] [W] Skipping warmup for batch size 64 due to: CUDA out of memory. "
                 "Tried to allocate 2.00 GiB\n",
    **{f"rank{r}.log": f"[rank{r}]:[E1204 10:10:01.123456 1234 ProcessGroupNCCL.cpp:632] [Rank {r}] Watchdog caught "
                       f"collective operation timeout: WorkNCCL(SeqNum=1132079, OpType=ALLREDUCE, NumelIn=8192, "
                       f"NumelOut=8192, Timeout(ms)=300000) ran for 300012 milliseconds before timing out.\n"
       for r in (1, 2, 3)},
}
TRTLLM_LOGS["rank3.log"] += (
    "[rank3]:[E1204 10:10:01.223456 1234 ProcessGroupNCCL.cpp:1664] [PG ID 0 PG GUID 0(default_pg) Rank 3] "
    "failure detected by watchdog at work sequence id: 1132079 PG status: last enqueued work: 1132079, "
    "last completed work: 1132078\n"
)


def _host_rows() -> dict[str, list[dict]]:
    """/proc evidence for seed 000's workers (pids 48211-48214): every thread state the host pass tells apart."""
    samples, stacks = [], []
    states = {48211: ("S", "futex_wait_queue"), 48212: ("T", "do_signal_stop"), 48213: ("D", "nvidia_wait"),
              48214: ("Z", None), 48107: ("R", "0")}
    for pid, (state, wchan) in states.items():
        for s in range(3):
            samples.append(dict(host="node0", pid=pid, tid=pid, comm="python", sample=s, t=100.0 + s, state=state,
                                wchan=wchan, utime=1.0 + s, stime=0.5, voluntary_ctxt_switches=10,
                                nonvoluntary_ctxt_switches=2, syscall="futex"))
            samples.append(dict(host="node0", pid=pid, tid=pid + 1000, comm="gloo", sample=s, t=100.0 + s,
                                state="S", wchan="ep_poll", utime=0.1, stime=0.1, syscall="epoll_wait"))
        stacks.append(dict(host="node0", pid=pid, tid=pid, frames=["futex_wait_queue+0x5c", "do_futex+0x10"]))
    samples.append(dict(host="node0", pid=48211, tid=48299, comm="gone", sample=2, t=102.0, state="gone"))
    gpus = [dict(host="node0", gpu=g, uuid=f"GPU-{g}", bus_id=f"0000:0{g}:00.0", name="H100", sample=s, t=100.0 + s,
                 sm_util=100.0, mem_bw_util=0.0, mem_used=70 << 30, mem_total=80 << 30, power_w=300.0,
                 sm_clock_mhz=1980.0, temperature_c=60.0, xid=0, ecc_uncorrected=0, source="nvml")
            for g in range(4) for s in range(2)]
    return {"thread_samples": samples, "kernel_stacks": stacks, "gpu_samples": gpus}


def _scenario(tmp: Path, dirs: list[str], extra: dict[str, list[dict]] | None = None,
              logs: dict[str, str] | None = None) -> dict[str, pa.Table]:
    paths: list[Path] = [FIXTURES / d for d in dirs]
    for name, text in (logs or {}).items():
        (tmp / name).write_text(text)
        paths.append(tmp / name)
    tables = {n: t for n, t in load_inputs(paths).tables.items() if t is not None}
    for name, rows in (extra or {}).items():
        tables[name] = pa.concat_tables([tables[name], table_from_rows(name, rows)]) if name in tables \
            else table_from_rows(name, rows)
    return tables


SCENARIOS = {
    "hosts": lambda tmp: _scenario(tmp, ["seed000-teardown", "seed003-trtllm-oom"], _host_rows(), TRTLLM_LOGS),
    "logs": lambda tmp: _scenario(tmp, ["seed002-nixl-kv-leak", "seed004-startup-race"]),
    "collectives": lambda tmp: _scenario(tmp, ["seed001-tp4-dp2", "bundle-tp4-rank0-behind", "order-inversion",
                                               "missing-rank"]),
}


def with_nulls(table: pa.Table, columns: list[str], every: int) -> pa.Table:
    """`columns` set to null in every `every`-th row (1: all rows; 2: rows 0, 2, 4 ...)."""
    for name in columns:
        i = table.schema.get_field_index(name)
        values = table.column(i).to_pylist()
        nulled = [None if k % every == 0 else v for k, v in enumerate(values)]
        table = table.set_column(i, table.schema.field(i), pa.array(nulled, type=table.schema.field(i).type))
    return table


def failures(tables: dict[str, pa.Table]) -> list[tuple[str, str]]:
    _, failed = run_passes(Context(tables=tables))
    return failed


def diagnosis_error(tables: dict[str, pa.Table]) -> str | None:
    """What stops a whole diagnosis (the passes and the pieces around them) on these tables, if anything."""
    b = Bundle()
    for name, t in tables.items():
        b.add(name, t)
    try:
        diagnose(b)
    except Exception as exc:  # reported with the variant that caused it
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_pass_runs_on_the_unaltered_inputs(scenario: str, tmp_path: Path) -> None:
    tables = SCENARIOS[scenario](tmp_path)
    _, failed = run_passes(Context(tables=tables))
    assert failed == [] and diagnosis_error(tables) is None


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_pass_raises_on_null_fields(scenario: str, tmp_path: Path) -> None:
    tables = SCENARIOS[scenario](tmp_path)
    assert {n for n in TABLES if tables.get(n) is not None and tables[n].num_rows}, "a scenario without rows"
    crashes = []
    for name, table in tables.items():
        if not table.num_rows:
            continue
        columns = [f.name for f in TABLES[name] if f.nullable]
        variants = [(f"{c} null in every other row", [c], 2) for c in columns]
        variants += [(f"{c} null in every row", [c], 1) for c in columns]
        variants += [("all columns null in every other row", columns, 2), ("all columns null", columns, 1)]
        for what, cols, every in variants:
            nulled = {**tables, name: with_nulls(table, cols, every)}
            for pass_name, err in failures(nulled):
                crashes.append(f"{name}: {what}: {pass_name} raised {err}")
            if len(cols) > 1 and (err := diagnosis_error(nulled)):
                crashes.append(f"{name}: {what}: diagnose raised {err}")
    assert not crashes, "\n".join(crashes[:20])
