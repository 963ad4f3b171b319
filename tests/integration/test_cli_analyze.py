"""`hangdoc analyze` end to end: the installed console script on the shipped fixtures and on bad input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TIMEOUT_S = 120  # a cold start on a busy machine; analysis itself takes well under a second


def _hangdoc() -> str:
    beside = Path(sys.executable).with_name("hangdoc")
    found = str(beside) if beside.exists() else shutil.which("hangdoc")
    if not found:
        pytest.fail("the hangdoc console script is not installed (pip install -e .)")
    return found


def hangdoc(*args: Any, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    return subprocess.run(
        [_hangdoc(), *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, env=env
    )


def analyze_json(*inputs: Any) -> dict[str, Any]:
    proc = hangdoc("analyze", *inputs, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def finding(report: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [f for f in report["findings"] if f["kind"] == kind]
    assert found, f"no {kind} finding among {[f['kind'] for f in report['findings']]}"
    return found[0]


# --- seed 001 ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seed001() -> dict[str, Any]:
    return analyze_json(FIXTURES / "seed001-tp4-dp2")


def test_seed001_verdict(seed001: dict[str, Any]) -> None:
    assert seed001["schema"] == "hangdoc.report/1"
    verdict = seed001["verdict"]
    assert verdict["kind"] == "collective_mismatch"
    assert verdict["culprit_ranks"] == [6]
    assert verdict["group"] == "tp:1"
    assert "6" in verdict["summary"] and "all_gatherv" in verdict["summary"]


def test_seed001_names_the_mismatched_ops(seed001: dict[str, Any]) -> None:
    mismatch = finding(seed001, "collective_mismatch")
    assert mismatch["ranks"] == [6] and mismatch["group"] == "tp:1"
    assert mismatch["op"].startswith("all_gatherv") and "[14, 256]" in mismatch["op"]
    assert mismatch["expected_op"].startswith("all_reduce SUM") and "[15, 2]" in mismatch["expected_op"]


def test_seed001_call_count_swap(seed001: dict[str, Any]) -> None:
    swap = finding(seed001, "call_count_swap")
    assert swap["ranks"] == [6]
    assert swap["swap"]["from_group"].startswith("dp")
    assert swap["swap"]["to_group"] == "tp:1"
    assert swap["swap"]["calls"] == 17


def test_seed001_cascade_is_not_blamed(seed001: dict[str, Any]) -> None:
    """Ranks 0-5 and 7 are stuck too, but only as symptoms: no cause finding names them."""
    for f in seed001["findings"]:
        if f["role"] == "cause" and f["kind"] != "no_fault_found":
            assert f["ranks"] == [6], f


def test_seed001_trace_files_as_arguments() -> None:
    files = sorted((FIXTURES / "seed001-tp4-dp2").glob("*.jsonl"))
    assert len(files) == 8
    report = analyze_json(*files)
    assert (report["verdict"]["kind"], report["verdict"]["culprit_ranks"]) == ("collective_mismatch", [6])


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_seed001_human_formats(fmt: str) -> None:
    proc = hangdoc("analyze", FIXTURES / "seed001-tp4-dp2", "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "rank 6" in out
    assert "all_gatherv [14, 256]" in out and "all_reduce SUM [15, 2]" in out
    assert "tp:1" in out and "17" in out
    assert "\x1b[" not in out  # no colour codes when not writing to a terminal
    if fmt == "markdown":
        assert out.lstrip().startswith("#") and "<details>" in out


def test_output_file(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    proc = hangdoc("analyze", FIXTURES / "seed001-tp4-dp2", "--format", "markdown", "--output", target)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    text = target.read_text()
    assert "rank 6" in text and "all_gatherv" in text

    target = tmp_path / "report.json"
    proc = hangdoc("analyze", FIXTURES / "seed001-tp4-dp2", "-f", "json", "-o", target)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(target.read_text())["verdict"]["culprit_ranks"] == [6]


# --- the other fixtures ----------------------------------------------------------------------------------------------
def test_rank0_is_the_odd_one_out() -> None:
    report = analyze_json(FIXTURES / "rank0-odd")
    assert report["verdict"]["kind"] == "collective_mismatch"
    assert report["verdict"]["culprit_ranks"] == [0]
    mismatch = finding(report, "collective_mismatch")
    assert mismatch["op"].startswith("all_gather") and mismatch["expected_op"].startswith("all_reduce")


def test_healthy_traces_find_no_fault() -> None:
    report = analyze_json(FIXTURES / "healthy-tp2-dp2")
    assert report["verdict"]["kind"] == "no_fault_found"
    assert report["verdict"]["culprit_ranks"] == []
    assert [f["kind"] for f in report["findings"] if f["role"] == "cause"] == ["no_fault_found"]
    assert report["checked"]


def test_order_inversion() -> None:
    report = analyze_json(FIXTURES / "order-inversion")
    assert report["verdict"]["kind"] == "order_inversion"
    assert report["verdict"]["culprit_ranks"] == [0, 1]


def test_missing_rank() -> None:
    report = analyze_json(FIXTURES / "missing-rank")
    assert report["verdict"]["kind"] == "missing_rank"
    assert report["verdict"]["culprit_ranks"] == [3]
    assert sorted(finding(report, "missing_rank")["waiting_ranks"]) == [0, 1, 2]


def test_bundle_directory() -> None:
    report = analyze_json(FIXTURES / "bundle-tp4-rank0-behind")
    assert report["verdict"]["kind"] == "lagging_rank"
    assert report["verdict"]["culprit_ranks"] == [0]
    lagging = finding(report, "lagging_rank")
    assert lagging["seq"] == 58 and sorted(lagging["waiting_ranks"]) == [1, 2, 3]
    # every member's call, the culprit's last one too, as docs/report-json.md says
    assert [(c["rank"], c["seq"], c["state"]) for c in lagging["calls"]] == [
        (0, 57, "completed"), (1, 58, "started"), (2, 58, "started"), (3, 58, "started")]
    assert report["ranks"][0] == {"rank": 0, "host": "trt-node-0", "pid": 90100, "title": "python3"}


def test_bad_lines_become_notes_not_errors(tmp_path: Path) -> None:
    src = (FIXTURES / "rank0-odd" / "collectives.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "collectives.jsonl").write_text("".join(src[:10]) + "{broken\n" + "".join(src[10:]))
    report = analyze_json(tmp_path)
    assert report["verdict"]["culprit_ranks"] == [0]
    assert any("skipped 1 bad line: line 11" in n for n in report["notes"])


# --- errors: one line, no traceback, non-zero exit ------------------------------------------------------------------
def _assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hangdoc: error:")
    assert proc.stdout.strip() == ""
    return lines[0]


def test_error_corrupt_trace_file(tmp_path: Path) -> None:
    bad = tmp_path / "trace_rank0.jsonl"
    bad.write_bytes(os.urandom(256).replace(b"\n", b"x"))
    line = _assert_one_line_error(hangdoc("analyze", bad), 3)
    assert str(bad) in line


def test_error_trace_with_no_valid_call(tmp_path: Path) -> None:
    bad = tmp_path / "trace_rank0.jsonl"
    bad.write_text('{"rank": 0, "group": "tp:0", "op": 42}\n{"rank": 0}\n')
    line = _assert_one_line_error(hangdoc("analyze", tmp_path), 3)
    assert "no valid collective call" in line


def test_error_corrupt_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "bundle-tp4-rank0-behind", bundle)
    (bundle / "collectives.parquet").write_bytes(b"PAR1 this is not parquet")
    _assert_one_line_error(hangdoc("analyze", bundle), 3)


def test_error_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _assert_one_line_error(hangdoc("analyze", empty), 3)
    assert str(empty) in line


def test_error_unrelated_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing to see here\n")
    (tmp_path / "config.yaml").write_text("a: 1\n")
    (tmp_path / "events.jsonl").write_text('{"level": "info", "msg": "started"}\n')
    _assert_one_line_error(hangdoc("analyze", tmp_path), 3)


def test_error_nonexistent_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    line = _assert_one_line_error(hangdoc("analyze", missing), 3)
    assert "no such file or directory" in line
