"""The real-world corpus: evidence pasted into public bug reports, and the verdict each thread supports.

Every folder next to this file is one case: `evidence/` holds the machine output as the thread pasted it,
`SOURCE.md` says where it comes from and how sure its truth is, `expected.json` says which ranks the thread
supports as the cause and which ranks the evidence shows waiting. This test runs the real CLI on each
`evidence/` folder and judges its JSON verdict:

- naming a waiting rank as culprit is always wrong;
- strong/weak truth with culprit ranks: the named culprits must be exactly those (weak: naming none is accepted,
  and so is hangdoc's one-line "cannot read this" error, exit 3);
- undecided, or strong truth whose cause is not a rank (no culprit ranks): naming any culprit is wrong;
- strong truth: the verdict kind must be one of `acceptable_kinds`;
- a crash, a traceback or output that is not the JSON report is wrong.

conftest.py prints the score ("realworld: N/M cases right") at the end of the run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CASES = sorted(p for p in HERE.iterdir() if p.is_dir() and (p / "expected.json").is_file())
TIMEOUT_S = 120
TRUTHS = {"strong", "weak", "undecided"}


def load_expected(case: Path) -> dict:
    expected = json.loads((case / "expected.json").read_text())
    assert expected["truth"] in TRUTHS, f"{case.name}: truth must be one of {sorted(TRUTHS)}"
    for key in ("culprit_ranks", "waiting_ranks", "acceptable_kinds", "formats"):
        assert isinstance(expected[key], list), f"{case.name}: {key} must be a list"
    assert not set(expected["culprit_ranks"]) & set(expected["waiting_ranks"]), f"{case.name}: culprit also waiting"
    if expected["truth"] == "undecided":
        assert expected["culprit_ranks"] == [], f"{case.name}: an undecided case names no culprit"
    return expected


def run_analyze(evidence: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="80", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "hangdoc.cli", "analyze", str(evidence), "--format", "json"],
        capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, env=env,
    )


def last_line(text: str, evidence: Path) -> str:
    lines = text.replace(str(evidence), "evidence").strip().splitlines()
    return lines[-1][:200] if lines else "no output"


def judge(expected: dict, proc: subprocess.CompletedProcess[str], evidence: Path) -> str | None:
    """Why the verdict is wrong for this case, or None when it is right."""
    if "Traceback (most recent call last)" in proc.stderr:
        return f"crashed (exit {proc.returncode}): {last_line(proc.stderr, evidence)}"
    try:
        report = json.loads(proc.stdout)
        verdict = report["verdict"]
        kind, named = verdict["kind"], sorted(int(r) for r in verdict["culprit_ranks"])
    except (ValueError, KeyError, TypeError) as exc:
        refused = proc.returncode == 3 and proc.stderr.strip().count("\n") == 0 and \
            proc.stderr.startswith("hangdoc: error:")
        if refused and expected["truth"] == "weak":
            return None  # one line saying the input cannot be read names nobody, which a weak truth accepts
        return f"no JSON verdict (exit {proc.returncode}, {type(exc).__name__}): {last_line(proc.stderr, evidence)}"
    said = f"verdict {kind} {named}"
    waiting = sorted(set(named) & set(expected["waiting_ranks"]))
    if waiting:
        return f"{said} names waiting rank(s) {waiting}"
    truth, culprits = expected["truth"], sorted(expected["culprit_ranks"])
    if truth == "undecided" and named:
        return f"{said}: the evidence cannot decide, no culprit should be named"
    if truth == "strong" and not culprits and named:
        return f"{said}: the cause is not a rank, no culprit should be named"
    if truth in ("strong", "weak") and culprits and named != culprits:
        if not (truth == "weak" and not named):
            return f"{said}, expected culprits {culprits}"
    if truth == "strong" and kind not in expected["acceptable_kinds"]:
        return f"{said}: kind not in {expected['acceptable_kinds']}"
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Path, realworld_results: dict[str, str | None]) -> None:
    expected = load_expected(case)
    assert (case / "SOURCE.md").is_file(), f"{case.name}: SOURCE.md missing"
    evidence = case / "evidence"
    assert evidence.is_dir() and any(evidence.iterdir()), f"{case.name}: no evidence"
    try:
        proc = run_analyze(evidence)
        wrong = judge(expected, proc, evidence)
    except subprocess.TimeoutExpired:
        wrong = f"hangdoc analyze ran past {TIMEOUT_S} s"
    realworld_results[case.name] = wrong
    if wrong:
        pytest.fail(f"{case.name}: {wrong}", pytrace=False)


def test_corpus_is_big_enough_and_listed() -> None:
    assert len(CASES) >= 25, f"only {len(CASES)} real-world cases"
    readme = (HERE / "README.md").read_text()
    unlisted = [c.name for c in CASES if f"| {c.name} |" not in readme]
    assert not unlisted, f"cases missing from README.md: {unlisted}"


def _verdict(kind: str, ranks: list[int]) -> subprocess.CompletedProcess[str]:
    out = json.dumps({"verdict": {"kind": kind, "culprit_ranks": ranks, "summary": ""}, "findings": []})
    return subprocess.CompletedProcess([], 0, stdout=out, stderr="")


def test_judge_rules_on_hand_built_verdicts() -> None:
    """The scoring rules themselves, on verdicts built by hand (no CLI run)."""
    ev = HERE
    strong = {"truth": "strong", "culprit_ranks": [7], "waiting_ranks": [0, 1], "acceptable_kinds": ["lagging_rank"]}
    assert judge(strong, _verdict("lagging_rank", [7]), ev) is None
    assert "waiting rank(s) [0]" in judge(strong, _verdict("lagging_rank", [0, 7]), ev)
    assert "expected culprits [7]" in judge(strong, _verdict("lagging_rank", []), ev)
    assert "kind not in" in judge(strong, _verdict("log_signature", [7]), ev)
    weak = dict(strong, truth="weak")
    assert judge(weak, _verdict("no_fault_found", []), ev) is None
    assert judge(weak, _verdict("log_signature", [7]), ev) is None
    assert "expected culprits" in judge(weak, _verdict("lagging_rank", [3]), ev)
    undecided = {"truth": "undecided", "culprit_ranks": [], "waiting_ranks": [0], "acceptable_kinds": []}
    assert judge(undecided, _verdict("no_fault_found", []), ev) is None
    assert "no culprit should be named" in judge(undecided, _verdict("rank_exited", [5]), ev)
    not_a_rank = {"truth": "strong", "culprit_ranks": [], "waiting_ranks": [], "acceptable_kinds": ["orphaned_process"]}
    assert judge(not_a_rank, _verdict("orphaned_process", []), ev) is None
    assert "not a rank" in judge(not_a_rank, _verdict("orphaned_process", [2]), ev)
    crash = subprocess.CompletedProcess([], 1, stdout="", stderr="Traceback (most recent call last):\nTypeError: x")
    assert judge(undecided, crash, ev).startswith("crashed (exit 1): TypeError: x")
    refused = subprocess.CompletedProcess([], 2, stdout="", stderr="hangdoc: error: nothing readable")
    assert "no JSON verdict (exit 2" in judge(undecided, refused, ev)
    unreadable = subprocess.CompletedProcess([], 3, stdout="", stderr="hangdoc: error: holds nothing hangdoc reads\n")
    assert judge(dict(strong, truth="weak"), unreadable, ev) is None
    assert "no JSON verdict (exit 3" in judge(strong, unreadable, ev)
    assert "no JSON verdict (exit 3" in judge(undecided, unreadable, ev)
