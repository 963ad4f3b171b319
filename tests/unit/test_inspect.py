"""`hangdoc inspect`: tables and rows, hosts, ranks and what each collector said, from a bundle on disk."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hangdoc.bundle import Bundle
from hangdoc.cli import app
from hangdoc.errors import BundleError
from hangdoc.inspect import describe
from hangdoc.schema import table_from_rows


def _bundle(tmp_path: Path) -> Path:
    b = Bundle()
    b.manifest["host"] = "gpu-node-3"
    b.add("processes", table_from_rows("processes", [
        {"host": "gpu-node-3", "pid": 100 + r, "global_rank": r} for r in (8, 9, 10, 11)] + [
        {"host": "gpu-node-3", "pid": 99, "role": "launcher"}]))
    b.add("collectives", table_from_rows("collectives", [
        {"host": "gpu-node-3", "rank": r, "group": "tp:2", "seq": s, "op": "all_reduce"}
        for r in (8, 9, 10, 11, 15) for s in range(1, 31)]))
    b.add("thread_samples", table_from_rows("thread_samples", [
        {"host": "gpu-node-3", "pid": 100, "tid": 100, "sample": k} for k in range(3)]))
    b.record_collector("threads", ran=True, seconds=1.234)
    b.record_collector("pystacks", ran=False, seconds=5.0, error="py-spy: permission denied",
                       notes=["run as root or with CAP_SYS_PTRACE"])
    b.note("pystacks: failed: py-spy: permission denied")
    return b.write(tmp_path / "node3.bundle")


def test_describe_lists_tables_hosts_ranks_and_collectors(tmp_path: Path) -> None:
    path = _bundle(tmp_path)
    text = describe(path)
    lines = text.splitlines()
    assert lines[0] == f"bundle {path}"
    rows = {l.split()[0]: l.split()[1] for l in lines if l.startswith("  ") and " rows " in l}
    assert rows == {"processes": "5", "thread_samples": "3", "collectives": "150"}
    assert "hosts (1): gpu-node-3" in lines
    assert "ranks (5): 8-11, 15" in lines
    assert "  in processes: 8-11" in lines  # rank 15 left calls but no process on this node
    threads = next(l for l in lines if l.strip().startswith("threads"))
    assert "ran" in threads and "1.23 s" in threads
    pystacks = next(l for l in lines if l.strip().startswith("pystacks"))
    assert "failed" in pystacks and "py-spy: permission denied" in pystacks
    assert "    - run as root or with CAP_SYS_PTRACE" in lines
    assert "notes (1)" in lines
    assert "collectives.parquet" in text and "pd.read_parquet(" in text


def test_cli_inspect_and_a_directory_that_is_no_bundle(tmp_path: Path) -> None:
    path = _bundle(tmp_path)
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0 and "ranks (5): 8-11, 15" in result.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="not a hangdoc bundle"):
        describe(tmp_path / "empty")
