"""The terminal report: verdict panel, ops side by side, collapsed and capped communicator tables."""
from __future__ import annotations

import io
import re

from rich.console import Console

from hangdoc.report import render, render_text
from hangdoc.report.terminal import MAX_ROWS
from hangdoc.report.terminal import render as terminal
from report_cases import ODD_LABEL, PEER_LABEL, healthy, huge, seed001


def _text(d, width: int = 140) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    terminal(d, console)
    return console.export_text()


def _line_with(text: str, *needles: str) -> str:
    lines = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert lines, f"no line holds {needles}:\n{text}"
    return lines[0]


def test_verdict_panel_names_culprit_with_label_group_and_reason():
    text = _text(seed001())
    panel = text.split("First divergence")[0]
    assert "collective_mismatch" in panel
    assert _line_with(panel, "culprit", "rank 6 (DP 1, TP rank 2)")
    assert _line_with(panel, "communicator", "tp:1")
    assert "every chain of waits leads to rank 6" in panel
    assert _line_with(panel, "confidence", "high")


def test_divergence_shows_ops_side_by_side_with_peers_in_one_column():
    text = _text(seed001())
    div = text.split("First divergence")[1].split("Call-count swaps")[0]
    assert "on tp:1 at seq 389" in div
    row = _line_with(div, PEER_LABEL, ODD_LABEL)  # brackets survive: cells are not parsed as markup
    assert row.index(PEER_LABEL) < row.index(ODD_LABEL)  # the majority first, the culprit beside it
    heads = _line_with(div, "ranks 4, 5, 7", "rank 6 (DP 1, TP rank 2)")
    assert heads.index("ranks 4, 5, 7") < heads.index("rank 6")
    assert _line_with(div, "3 ranks", "culprit")
    assert div.count(PEER_LABEL) == 1  # three identical peers form one column, not three


def test_swap_symptoms_groups_notes_and_checks_are_shown():
    text = _text(seed001())
    assert re.search(r"rank 6\s+dp:2\s+tp:1\s+17", text)
    symptoms = text.split("Symptoms")[1].split("Communicator")[0]
    assert _line_with(symptoms, "gpu_spin_wait x8", "ranks 0-7")
    assert _line_with(symptoms, "log_signature x3")
    assert symptoms.index("gpu_spin_wait") < symptoms.index("lagging_rank")  # most frequent first
    tp1 = text.split("Communicator tp:1")[1].split("Communicator")[0]
    # tables name ranks without their labels (the verdict panel and divergence table give those) so rows fit
    assert re.search(r"ranks 4, 5, 7\s+389\s+" + re.escape(PEER_LABEL) + r"\s+started\s+389", tp1)
    assert re.search(r"rank 6\s+406\s+" + re.escape(ODD_LABEL) + r".*culprit", tp1)
    tp0 = text.split("Communicator tp:0")[1].split("Communicator")[0]
    assert re.search(r"rank 0\s+1122.*differs", tp0)
    assert re.search(r"ranks 1-3\s+1123", tp0) and "differs" not in _line_with(tp0, "ranks 1-3")
    assert text.index("Communicator tp:1") < text.index("Communicator dp:2") < text.index("Communicator tp:0")
    assert "Communicators with every member at the same place" not in text  # no dp group is uniform here
    assert text.index("Notes") < text.index("Checked")
    assert "rank 3: no py-spy dump" in text and "compared per-family call counts" in text


def test_no_fault_found_shows_what_was_checked():
    text = _text(healthy())
    assert "no_fault_found" in text and "culprit" not in text
    assert "looked for lagging and missing ranks" in text
    assert "tp:0, ranks 0-3: seq 99 all_reduce SUM [8] float32 (completed)" in text


def test_1024_ranks_collapse_and_stay_short():
    text = _text(huge())
    assert re.search(r"ranks 0-511, 513-1023\s+2000\s+barrier", text)
    assert re.search(r"rank 512\s+1999.*culprit", text)
    assert _line_with(text, "lagging_rank x1023", "ranks 0-511, 513-1023")
    assert f"... {128 - MAX_ROWS} more rows ({128 - MAX_ROWS} ranks)" in text
    assert re.search(r"\.\.\. \d+ more communicators not shown", text)
    assert "... 2990 more" in text  # evidence capped
    assert _line_with(text, "ranks 513-519", "rank 512 (DP 64, TP rank 0)")
    assert len(text.splitlines()) < 250


def test_text_to_a_file_is_plain(tmp_path):
    path = tmp_path / "report.txt"
    render(seed001(), "text", path)
    content = path.read_text(encoding="utf-8")
    assert "\x1b[" not in content
    assert "rank 6 (DP 1, TP rank 2)" in content and ODD_LABEL in content
    assert content == render_text(seed001(), "text")


def test_text_to_stdout_when_piped_is_plain(capsys):
    render(seed001(), "text", None)
    out = capsys.readouterr().out
    assert "\x1b[" not in out and _line_with(out, PEER_LABEL, ODD_LABEL)
