"""Reading bundles: dictionary columns, all-null columns, and columns deferred until a few rows are asked for."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hangdoc.analysis.pipeline import DEFERRED, Context, diagnose
from hangdoc.analysis.procs import distinct
from hangdoc.importers import logfacts
from hangdoc.bundle import Bundle
from hangdoc.schema import COLLECTIVES, table_from_rows
from collrows import seed001_rows


def _bundle(tmp_path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    b = Bundle()
    b.add("collectives", table_from_rows("collectives", rows))
    path = b.write(tmp_path / "b")
    if row_group_size:  # several row groups, as a large bundle has
        pq.write_table(b.tables["collectives"], path / "collectives.parquet", row_group_size=row_group_size)
    return path


def _rows(n: int = 40) -> list[dict]:
    return [
        dict(rank=i % 4, group="0", group_ranks=[0, 1, 2, 3] if i < 4 else None, seq=i // 4 + 1, op="all_gather",
             dtype="float32", in_shapes=[[i, 2]], out_shapes=[[4 * i, 2]], in_numel=2 * i, out_numel=8 * i,
             state="completed", call_site=f"f{i % 3}", record_id=i)
        for i in range(n)
    ]


def test_string_columns_read_back_dictionary_encoded_and_all_null_columns_as_nulls(tmp_path: Path) -> None:
    b = Bundle.open(_bundle(tmp_path, _rows()))
    t = b.table("collectives")
    assert t.schema.equals(COLLECTIVES)
    assert pa.types.is_dictionary(t.schema.field("op").type)
    assert t.column("op").to_pylist() == ["all_gather"] * 40
    assert t.column("peer").null_count == 40 and t.column("reduce_op").null_count == 40  # never written
    assert t.column("record_id").to_pylist() == list(range(40))


def test_deferred_columns_stay_on_disk_until_taken(tmp_path: Path) -> None:
    path = _bundle(tmp_path, _rows(), row_group_size=7)
    full = Bundle.open(path).table("collectives")
    b = Bundle.open(path, defer={"collectives": ("in_shapes", "call_site", "record_id")})
    t = b.table("collectives")
    assert t.schema.equals(COLLECTIVES)
    assert t.column("in_shapes").null_count == 40 and t.column("call_site").null_count == 40
    assert t.column("out_shapes").equals(full.column("out_shapes"))  # not deferred
    rows = [39, 0, 15, 8, 15, 22]  # across row groups, out of order, repeated
    got = b.take("collectives", ["in_shapes", "call_site", "out_numel", "record_id"], rows)
    assert got["in_shapes"].to_pylist() == [[[r, 2]] for r in rows]
    assert got["call_site"].to_pylist() == [f"f{r % 3}" for r in rows]
    assert got["out_numel"].to_pylist() == [8 * r for r in rows]
    assert got["record_id"].to_pylist() == rows


def test_a_deferred_bundle_is_read_in_full_before_it_is_written_or_grown(tmp_path: Path) -> None:
    path = _bundle(tmp_path, _rows(), row_group_size=7)
    full = Bundle.open(path).table("collectives")
    b = Bundle.open(path, defer=DEFERRED)
    b.write(tmp_path / "copy")
    assert Bundle.open(tmp_path / "copy").table("collectives").equals(full)
    b = Bundle.open(path, defer=DEFERRED)
    b.add("collectives", table_from_rows("collectives", _rows(1)))
    assert b.table("collectives").column("in_shapes").to_pylist()[:40] == full.column("in_shapes").to_pylist()
    merged = Bundle.merge([Bundle.open(path, defer=DEFERRED), Bundle.open(path, defer=DEFERRED)])
    # the same bundle twice is counted once (hangdoc.duplicates)
    assert merged.table("collectives").column("call_site").to_pylist() == full.column("call_site").to_pylist()


@pytest.mark.parametrize("row_group_size", [None, 500])
def test_analysis_of_a_deferred_bundle_quotes_the_same_calls(tmp_path: Path, row_group_size: int | None) -> None:
    path = _bundle(tmp_path, seed001_rows(), row_group_size)
    eager, lazy = diagnose(Bundle.open(path)), diagnose(Bundle.open(path, defer=DEFERRED))
    assert lazy.verdict == eager.verdict and lazy.findings == eager.findings
    assert lazy.alignment == eager.alignment
    six = [c for f in lazy.findings for c in f.calls if c.rank == 6 and c.op == "all_gatherv"]
    assert six and six[0].in_shapes == ((14, 256),)  # read from the file, not the placeholder nulls


def test_scan_sweeps_a_table_a_row_group_at_a_time(tmp_path: Path) -> None:
    path = _bundle(tmp_path, _rows(), row_group_size=7)
    full = Bundle.open(path).table("collectives")
    b = Bundle.open(path, defer={"collectives": ("in_shapes", "call_site", "seq")})
    cols = ["rank", "seq", "call_site", "in_shapes", "op"]
    batches = list(b.scan("collectives", cols))
    assert [x.num_rows for x in batches] == [7] * 5 + [5]
    assert pa.Table.from_batches(batches).to_pylist() == full.select(cols).to_pylist()
    assert pa.types.is_dictionary(batches[0].schema.field("call_site").type)  # read from disk as the schema says
    in_memory = pa.Table.from_batches(list(Bundle.open(path).scan("collectives", cols)))
    assert in_memory.to_pylist() == full.select(cols).to_pylist()


CAPTURED = Path(__file__).resolve().parents[2] / "fixtures" / "bundle-tp4-rank0-behind"  # processes and traces


def _watchdog_logs(where: Path) -> Path:
    """Three ranks' c10d watchdog lines: collectives rows read from a log, which the log pass reads itself."""
    where.mkdir()
    for r in (1, 2, 3):
        (where / f"rank{r}.log").write_text(
            f"[rank{r}]:[E418 14:07:12.123456789 ProcessGroupNCCL.cpp:632] [Rank {r}] Watchdog caught collective "
            f"operation timeout: WorkNCCL(SeqNum=57, OpType=ALLREDUCE, NumelIn=4096, NumelOut=4096, "
            f"Timeout(ms)=300000) ran for 300012 milliseconds before timing out.\n")
    return where


@pytest.mark.parametrize("case", ["processes", "logs"])
def test_passes_that_read_the_collectives_table_see_the_same_rows_when_it_stays_on_disk(tmp_path: Path,
                                                                                      case: str) -> None:
    """The process and log passes read a digest of the collectives (distinct host, pid, rank; rows from logs)
    when the table is swept from disk: their findings must not change."""
    from hangdoc.importers import load_inputs
    from hangdoc.report.jsonreport import to_dict

    src = CAPTURED if case == "processes" else _watchdog_logs(tmp_path / "logs")
    b = load_inputs([src])
    assert b.rows("collectives")
    path = b.write(tmp_path / "b")
    pq.write_table(b.tables["collectives"], path / "collectives.parquet", row_group_size=3)
    eager, lazy = to_dict(diagnose(Bundle.open(path))), to_dict(diagnose(Bundle.open(path, defer=DEFERRED)))
    assert lazy == eager
    assert eager["findings"] and eager["verdict"]["kind"] != "no_fault_found"
    b = Bundle.open(path, defer=DEFERRED)
    ctx = Context(tables=dict(b.tables), fetch=lambda c, r: b.take("collectives", c, r),
                  scan=lambda c: b.scan("collectives", c))
    digest, full = ctx.table("collectives"), Bundle.open(path).table("collectives")
    assert digest.num_rows < full.num_rows or case == "logs"  # 231 calls of 4 processes: 4 rows
    key = ("host", "pid", "rank")
    assert distinct(digest, key) == distinct(full, key)
    assert digest.filter(pc.is_valid(digest.column("source"))).to_pylist() == [
        r for r in full.to_pylist() if r["source"] in logfacts.SOURCES]
