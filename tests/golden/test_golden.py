"""Golden reports: every fixture the README names, as text at 80 columns and as Markdown, compared with the files
in tests/golden/expected; and the examples in README.md and docs/ compared with what the code prints. Besides the
comparison, each report is checked for what no report may hold (see `_slips`)."""
from __future__ import annotations

import re

import pytest

from hangdoc.report.condense import divergence_finding, stack_members, symptom_lines
from golden import (
    HERE,
    ROOT,
    WIDTH,
    diagnosis_of,
    jsonl_example_verdict,
    markdown_report,
    readme_example,
    readme_fixtures,
    report_json_example,
    sync_block,
    sync_file,
    text_report,
)

FIXTURES = readme_fixtures()

# Phrases no report may hold: template text, a kind compared with itself, verbs that disagree with their rank.
SLIPS = (
    (re.compile(r"\{[a-z_]+\}"), "template placeholder"),
    (re.compile(r"\b(\w+) is more direct evidence than \1\b"), "a kind compared with itself"),
    (re.compile(r"\brank \d+ (still )?(wait|are|have|were)\b"), "one rank with a plural verb"),
    (re.compile(r"\branks (\d+(, | and |-))+\d+ (still )?(waits|is|has|was)\b"), "several ranks with a singular verb"),
    # hangdoc's own words only: quoted log lines keep theirs ("by 0 decode worker(s)")
    (re.compile(r"\b(rank|line|file|sample|request|notification|error|finding|value|version|call)\(s\)"),
     "'(s)' instead of a number-agreeing word"),
    (re.compile(r"\b1 (\w+)s (differ|follow|wait)\b"), "one thing with a plural noun"),
)


def _slips(text: str) -> list[str]:
    return [f"{why}: {m.group(0)!r}" for pattern, why in SLIPS for m in pattern.finditer(text)]


def test_the_slips_seen_before_are_caught():
    seen = ("ranks 1-3 wait in all_reduce while rank 0 still wait in barrier",
            "it made 17 fewer dp calls than {peers} (a call-count swap)",
            "log_signature is more direct evidence than log_signature",
            "while rank 6 wait for them", "on the same rank(s)")
    assert all(_slips(s) for s in seen), [s for s in seen if not _slips(s)]
    assert not _slips("rank 0 still waits in barrier; ranks 1-3 wait in all_reduce; ranks 1, 2 are waiting")


def test_the_readme_names_the_fixtures():
    assert "seed001-tp4-dp2" in FIXTURES and len(FIXTURES) >= 8, FIXTURES


@pytest.mark.parametrize("name", FIXTURES)
def test_reports_match_their_golden_files(name):
    d = diagnosis_of(f"fixtures/{name}")
    text, markdown = text_report(d), markdown_report(d)
    problems = [sync_file(HERE / f"{name}.txt", text), sync_file(HERE / f"{name}.md", markdown)]
    problems = [p for p in problems if p]
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("name", FIXTURES)
def test_reports_read_cleanly(name):
    d = diagnosis_of(f"fixtures/{name}")
    text, markdown = text_report(d), markdown_report(d)
    assert not _slips(text) and not _slips(markdown), _slips(text) + _slips(markdown)
    for fmt, out in (("text", text), ("markdown", markdown)):
        trailing = [line for line in out.splitlines() if line != line.rstrip()]
        assert not trailing, f"{fmt}: trailing spaces on {trailing[:3]}"
    wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not wide, f"text wider than {WIDTH} columns: {wide[:3]}"
    # every stack class is shown, with who stands there, in both reports
    for c in d.stacks:
        who = stack_members(c, d.rank_labels)
        assert who in text and who in markdown, who
    # Markdown: each communicator table once, JSON blocks indented by two
    heads = re.findall(r"^#### Communicator `[^`]+`", markdown, re.M)
    assert len(heads) == len(set(heads)), heads
    assert not re.search(r"^ \"", markdown, re.M), "a JSON block indented by one space"


def test_the_divergence_shows_every_member():
    checked = []
    for name in FIXTURES:
        d = diagnosis_of(f"fixtures/{name}")
        f = divergence_finding(d)
        if f is None or f.group is None:
            continue
        members = next(g.ranks for g in d.groups if g.group == f.group)
        assert {c.rank for c in f.calls} == set(members), (name, f.kind, f.group, [c.rank for c in f.calls])
        if "positions differ" in " ".join(f.evidence):
            assert f"{f.count:,} positions differ" in " ".join(f.evidence), (name, f.count, f.evidence)
        checked.append(name)
    assert {"seed001-tp4-dp2", "rank0-odd", "bundle-tp4-rank0-behind"} <= set(checked), checked


@pytest.mark.parametrize("name", FIXTURES)
def test_counts_agree_within_a_report(name):
    """A kind counted in one place is counted the same everywhere: the Markdown headings, the symptom lines and
    the verdict's 'what follows from it'."""
    d = diagnosis_of(f"fixtures/{name}")
    text, markdown = text_report(d), markdown_report(d)
    for i, f in enumerate(d.findings, 1):
        head = f"**{i}. {f.kind}**" + (f" x{f.count} " if f.count > 1 else " ")
        assert head in markdown, head
    for line in symptom_lines(d):
        said = f"{line.kind} x{line.count}" if line.count > 1 else line.kind
        assert said in d.verdict.reason and said in text, (said, d.verdict.reason)
        assert not re.search(rf"\b{line.kind} x(?!{line.count}\b)\d+", text + markdown), line


def test_seed001_markdown_fits_one_screen_above_its_details():
    markdown = markdown_report(diagnosis_of("fixtures/seed001-tp4-dp2"))
    head = markdown.split("<details>", 1)[0]
    assert len(head.splitlines()) <= 50, head


def test_seed001_waiting_ranks_agree_with_the_verdict():
    d = diagnosis_of("fixtures/seed001-tp4-dp2")
    markdown = markdown_report(d)
    assert "every other stuck rank is waiting" in d.verdict.summary
    assert "Ranks 0-5, 7 are waiting on it" in markdown
    assert "wait_chain x7" in markdown and "x146" in markdown and "146 positions differ" in markdown


def test_readme_example_is_the_real_output():
    problem = sync_block(ROOT / "README.md", "seed001-text", readme_example())
    assert problem is None, problem


def test_report_json_example_is_the_real_output():
    problem = sync_block(ROOT / "docs" / "report-json.md", "seed001-json", report_json_example())
    assert problem is None, problem


def test_trace_formats_example_verdict_is_the_real_output(tmp_path):
    problem = sync_block(ROOT / "docs" / "trace-formats.md", "jsonl-example-verdict", jsonl_example_verdict(tmp_path))
    assert problem is None, problem
