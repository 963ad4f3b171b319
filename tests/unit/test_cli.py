"""CLI conventions every verb shares: --version, readable --help, one exit-status map, sizes people read."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hangdoc
from hangdoc.cli import app
from hangdoc.errors import EXIT_MEANINGS, Exit
from hangdoc.inspect import human_size

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
VERBS = ["analyze", "import", "capture", "report", "inspect", "run"]


def hangdoc_cli(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real entry point (main(): the exit-status mapping lives there, not in the typer app)."""
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", "from hangdoc.cli import main; main()", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
    )


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"hangdoc {hangdoc.__version__}"


@pytest.mark.parametrize("verb", [None, *VERBS])
def test_help_names_values_not_python_types(verb: str | None) -> None:
    result = CliRunner().invoke(app, [verb, "--help"] if verb else ["--help"], prog_name="hangdoc", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.output
    for leak in ("<bool>", "<int", "<float", "<str>", "<path>", "list[", "Path]", "{"):
        assert leak not in text, (verb, leak, text)
    assert all(len(line) <= 80 for line in text.splitlines())
    if verb in ("analyze", "import", "report"):
        assert f"Usage: hangdoc {verb} [OPTIONS] INPUT..." in text
    if verb == "capture":
        assert re.search(r"--pid\s+PID\s", text) and re.search(r"--output\s+-o\s+DIR\s", text)
        assert re.search(r"--no-pyspy\s+Skip", text)  # a flag takes no value: nothing between name and help


def test_exit_statuses_are_one_map_for_every_verb(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-input"
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "x").write_text("x")
    cases = [
        (["analyze", "--no-such-option", FIXTURES / "rank0-odd"], Exit.USAGE),
        (["capture", "--samples", "0", "-o", tmp_path / "c"], Exit.USAGE),
        (["capture", "--native", "--no-pyspy", "-o", tmp_path / "c"], Exit.USAGE),
        (["report", FIXTURES / "rank0-odd", "--max-size", "0", "-o", tmp_path / "r.tar.gz"], Exit.USAGE),
        (["analyze", missing], Exit.INPUT),
        (["import", missing, "-o", tmp_path / "b"], Exit.INPUT),
        (["report", missing, "-o", tmp_path / "r.tar.gz"], Exit.INPUT),
        (["inspect", missing], Exit.INPUT),
        (["import", FIXTURES / "rank0-odd", "-o", existing], Exit.FAILED),
        (["capture", "--pid", "1", "--no-pyspy", "-o", existing], Exit.FAILED),
        (["capture", "--match", "^no-such-process-title-4242$", "--no-pyspy", "-o", tmp_path / "c"], Exit.NOTHING_TO_CAPTURE),
    ]
    for args, code in cases:
        proc = hangdoc_cli(*args)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        if code != Exit.USAGE:  # click prints its own usage lines
            assert proc.stderr.startswith("hangdoc: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_docs_list_exactly_the_exit_statuses_the_code_uses() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", doc, re.M))
    assert {int(k): v for k, v in rows.items()} == {int(k): v for k, v in EXIT_MEANINGS.items()}
    assert set(EXIT_MEANINGS) == set(Exit)
    assert "docs/cli.md" in (ROOT / "README.md").read_text()


def test_sizes_read_as_bytes_kb_mb() -> None:
    assert human_size(0) == "0 B"
    assert human_size(812) == "812 B"
    assert human_size(48_300) == "47.2 KB"
    assert human_size(3 * 2**20) == "3.0 MB"


def test_report_of_a_small_archive_does_not_say_zero_mb(tmp_path: Path) -> None:
    out = tmp_path / "r.tar.gz"
    result = CliRunner().invoke(app, ["report", str(FIXTURES / "rank0-odd"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if l.startswith("archive:"))
    assert "0.0 MB" not in line
    assert line.endswith(f"({human_size(out.stat().st_size)})") and " KB)" in line, line
