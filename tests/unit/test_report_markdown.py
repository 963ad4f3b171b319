"""The Markdown report for a GitHub issue: verdict first, divergence table, evidence folded, size-capped."""
from __future__ import annotations

import re
from dataclasses import replace

from hangdoc.report import render
from hangdoc.report.markdown import LIMIT
from hangdoc.report.markdown import render as markdown
from report_cases import ODD_LABEL, PEER_LABEL, healthy, huge, seed001


def _balanced(md: str) -> None:
    assert md.count("<details>") == md.count("</details>") > 0
    assert md.count("```") % 2 == 0


def test_verdict_and_explanation_come_before_everything_else():
    md = markdown(seed001())
    first, rest = md.split("\n", 1)
    assert first == "## hangdoc: collective_mismatch on `tp:1`, rank 6 (DP 1, TP rank 2)"
    head = md.split("<details>")[0]
    assert head.index("**Verdict:** Global rank 6 (DP 1, TP rank 2) posted all_gatherv [14, 256]") < head.index(
        "### First divergence")
    assert "Rank 6 (DP 1, TP rank 2) made 17 fewer calls on dp:2 and 17 more on tp:1" in head
    assert "Ranks 0-5, 7 are waiting on it" in head
    assert "Confidence: high." in head
    _balanced(md)


def test_divergence_table_puts_the_ops_side_by_side():
    md = markdown(seed001())
    head = md.split("<details>")[0]
    assert "### First divergence on `tp:1` at seq 389" in head
    assert "| seq | ranks 4, 5, 7 (3) | **rank 6 (DP 1, TP rank 2)** (culprit) |" in head
    assert f"| 389 | `{PEER_LABEL}` started | **`{ODD_LABEL}`** started |" in head
    assert "| **rank 6 (DP 1, TP rank 2)** | 406 | " in head  # the communicator table under it
    assert re.search(r"\| ranks 4, 5, 7 \| 389 \| `" + re.escape(PEER_LABEL) + r"` \| started \| 390 \| 389 \|", head)


def test_details_hold_evidence_findings_groups_and_notes():
    md = markdown(seed001())
    summaries = re.findall(r"<details><summary>(.*?)</summary>", md)
    # the verdict's communicator is shown under the verdict, so only the other five are folded away
    assert summaries == ["Evidence (2 lines)", "Findings (5)", "Other communicators (5)", "Notes, checks and inputs"]
    findings = md.split("<summary>Findings (5)</summary>")[1].split("</details>")[0]
    assert "**1. collective_mismatch** (cause) on `tp:1` at seq 389" in findings
    assert "swap: 17 calls from `dp:2` to `tp:1`" in findings
    assert "**4. gpu_spin_wait** x8 (symptom): ranks 0-7" in findings
    assert '"majority": 3' in findings
    groups = md.split("<summary>Other communicators (5)</summary>")[1].split("</details>")[0]
    assert "`tp:1`" not in groups and md.count("#### Communicator `tp:1`") == 1
    assert groups.index("`dp:2`") < groups.index("`tp:0`")
    assert "| ranks 1-3 | 1123 |" in groups
    footer = md.split("<summary>Notes, checks and inputs</summary>")[1]
    assert "- rank 3: no py-spy dump" in footer and "- `traces/node-15`" in footer
    assert "truncated" not in md


def test_text_from_traces_cannot_inject_html_or_break_tables():
    d = seed001()
    d = replace(d, verdict=replace(d.verdict, summary="rank 6 <script>alert(1)</script> | x"))
    md = markdown(d)
    assert "<script>" not in md and "&lt;script&gt;" in md


def test_no_fault_found():
    md = markdown(healthy())
    assert md.startswith("## hangdoc: no fault found\n")
    assert "- looked for lagging and missing ranks" in md
    assert "First divergence" not in md and "culprit" not in md
    _balanced(md)


def test_huge_diagnosis_stays_under_the_cap_with_a_note(tmp_path):
    d = huge()
    md = markdown(d)
    assert len(md) <= LIMIT
    _balanced(md)
    assert "Report truncated to fit a GitHub comment" in md
    assert re.search(r"_\.\.\. \d+ more not shown", md)
    # every section still got room: one long section does not starve the others
    assert re.findall(r"<summary>(.*?)</summary>", md) == [
        "Evidence (3,000 lines)", "Findings (1024)", "Other communicators (136)", "Notes, checks and inputs"]
    assert "| ranks 0-511, 513-1023 | 2000 | `barrier` |" in md
    assert "... 116 more rows (116 ranks)" in md
    path = tmp_path / "report.md"
    render(d, "markdown", path)
    assert path.read_text(encoding="utf-8") == md


def test_smaller_cap_is_respected():
    md = markdown(seed001(), limit=3000)
    assert len(md) <= 3000
    assert md.startswith("## hangdoc: collective_mismatch")
    assert "Report truncated" in md
    _balanced(md)
