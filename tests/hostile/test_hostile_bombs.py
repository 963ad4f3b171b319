"""Bombs and malformed entries: a decompression bomb, JSON nested 100,000 deep, Parquet tables that are
garbage or of the wrong shape. Each ends within the memory and time bounds, as a note (the rest of the input
still read) or as one error line."""
from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bounded import assert_one_line_error, hangdoc
from hangdoc.bundle import Bundle
from hangdoc.errors import BundleError
from hangdoc.importers import load_inputs

SEED001 = Path(__file__).resolve().parents[2] / "fixtures" / "seed001-tp4-dp2"
CALL = {"op": "all_reduce", "group": "0", "seq": 1, "in_shapes": [[4]], "dtype": "float32"}


def _report(r) -> dict:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout)


def test_jsonl_decompression_bomb_is_skipped_line_by_line(tmp_path: Path) -> None:
    """1 GB of one line packed into about 1 MB: read past in pieces under a 768 MB address-space limit."""
    d = tmp_path / "trace"
    d.mkdir()
    with gzip.open(d / "rank0.jsonl.gz", "wb", compresslevel=1) as f:
        f.write((json.dumps(dict(CALL, rank=0)) + "\n" + json.dumps(dict(CALL, rank=1)) + "\n").encode())
        f.write(b'{"op": "all_reduce", "rank": 0, "pad": "')
        chunk = b"a" * (16 << 20)
        for _ in range(64):
            f.write(chunk)
        f.write(b'"}\n')
    assert (d / "rank0.jsonl.gz").stat().st_size < 8 << 20
    report = _report(hangdoc("analyze", d, "--format", "json", memory_mb=768, timeout=120))
    assert f"{d / 'rank0.jsonl.gz'}: skipped 1 bad line: line 3 (longer than 16 MB)" in report["notes"]
    assert "tables read (rows): collectives 2" in report["checked"]


def test_json_nested_100000_deep_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    d = tmp_path / "trace"
    d.mkdir()
    deep = "[" * 100_000 + "]" * 100_000
    (d / "rank0.jsonl").write_text(json.dumps(dict(CALL, rank=0)) + "\n" + '{"op": "x", "pad": ' + deep + "}\n"
                                   + json.dumps(dict(CALL, rank=1)) + "\n")
    report = _report(hangdoc("analyze", d, "--format", "json"))
    assert any("rank0.jsonl: skipped 1 bad line: line 2" in n for n in report["notes"])
    # nested that deep from its first line: not taken for a trace at all
    (d / "rank0.jsonl").write_text('{"op": "x", "pad": ' + deep + "}\n")
    assert_one_line_error(hangdoc("analyze", d), "holds nothing hangdoc reads")


def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1" + os.urandom(1000) + b"PAR1")


def _wrong_types(path: Path) -> None:
    pq.write_table(pa.table({"rank": ["a", "b"], "seq": [[1], [2]], "op": [1, 2]}), path)


def _unknown_columns(path: Path) -> None:
    pq.write_table(pa.table({"x": [1]}), path)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _pages(path: Path) -> None:
    """A sound footer over spoiled data pages: found only when the rows are read."""
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    end = len(data) - 8 - footer
    data[4:end] = os.urandom(end - 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("spoil", [_garbage, _wrong_types, _unknown_columns, _empty], ids=lambda f: f.__name__[1:])
def test_malformed_bundle_table_is_one_line(tmp_path: Path, spoil) -> None:
    path = load_inputs([SEED001]).write(tmp_path / "b")
    spoil(path / "collectives.parquet")
    with pytest.raises(BundleError, match="collectives.parquet: unreadable table"):
        Bundle.open(path)
    assert_one_line_error(hangdoc("analyze", path), "collectives.parquet: unreadable table")


def test_spoiled_pages_of_a_bundle_table_are_one_line(tmp_path: Path) -> None:
    path = load_inputs([SEED001]).write(tmp_path / "b")
    _pages(path / "collectives.parquet")
    assert_one_line_error(hangdoc("analyze", path), "collectives.parquet: unreadable table")
