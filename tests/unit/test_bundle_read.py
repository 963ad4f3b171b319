"""Reading bundles: dictionary columns, all-null columns, and columns deferred until a few rows are asked for."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hangdoc.analysis.pipeline import DEFERRED, diagnose
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
