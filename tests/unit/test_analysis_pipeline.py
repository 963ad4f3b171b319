"""The pipeline's contract: Context, PASSES, pass isolation, and what diagnose fills in."""
from __future__ import annotations

from collrows import bundle, call, history, seed001_rows
from hangdoc import __version__
from hangdoc.analysis import pipeline
from hangdoc.analysis.model import ANALYSIS_INCOMPLETE, NO_FAULT_FOUND, Finding
from hangdoc.analysis.pipeline import PASSES, Context, diagnose
from hangdoc.bundle import Bundle
from hangdoc.schema import TABLES


def test_context_table_is_empty_with_schema_when_absent():
    ctx = Context(tables={})
    t = ctx.table("processes")
    assert t.num_rows == 0 and t.schema == TABLES["processes"]
    assert ctx.collectives is None


def test_collective_view_is_built_once_and_shared_with_later_contexts():
    ctx = Context(tables=bundle(seed001_rows()).tables)
    view = ctx.collectives
    later = ctx.with_findings([Finding(kind="x", ranks=(), summary="x")])
    assert later.collectives is view
    assert later.findings[0].kind == "x" and ctx.findings == ()


def test_passes_see_earlier_findings_and_can_be_appended(monkeypatch):
    seen: list[tuple[str, ...]] = []

    def watcher(ctx: Context) -> list[Finding]:
        seen.append(tuple(f.kind for f in ctx.findings))
        return [Finding(kind="stack_divergence", ranks=(6,), summary="rank 6's main thread is elsewhere")]

    monkeypatch.setattr(pipeline, "PASSES", PASSES + [watcher])
    d = diagnose(bundle(seed001_rows()))
    assert {"collective_mismatch", "call_count_swap", "wait_chain"} <= set(seen[0])
    assert "stack_divergence" in [f.kind for f in d.findings]
    assert d.verdict.kind == "collective_mismatch"  # the more direct evidence on the same root


def test_a_crashing_pass_becomes_a_note_and_lowers_confidence(monkeypatch):
    def broken(ctx: Context) -> list[Finding]:
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "PASSES", [broken] + PASSES)
    d = diagnose(bundle(seed001_rows()))
    assert d.verdict.kind == "collective_mismatch" and d.verdict.culprit_ranks == (6,)
    assert d.verdict.confidence == "low"
    assert d.verdict.summary.endswith("; analysis incomplete: the broken pass failed")
    assert "confidence is low because the broken pass failed" in d.verdict.reason
    assert any("broken failed: RuntimeError: boom" in n for n in d.notes)
    incomplete = d.findings[-1]
    assert incomplete.kind == ANALYSIS_INCOMPLETE and incomplete.details["failed_passes"] == ["broken"]
    assert incomplete.evidence == ("broken: RuntimeError: boom",)


def test_a_crashing_pass_with_nothing_else_found_is_analysis_incomplete_not_no_fault_found(monkeypatch):
    def broken(ctx: Context) -> list[Finding]:
        raise TypeError("'<' not supported between instances of 'NoneType' and 'str'")

    healthy = bundle(history(0, "tp:0", 3, ranks=[0, 1]) + history(1, "tp:0", 3, ranks=[0, 1]))
    assert diagnose(healthy).verdict.kind == NO_FAULT_FOUND
    monkeypatch.setattr(pipeline, "PASSES", PASSES + [broken])
    d = diagnose(healthy)
    assert d.verdict.kind == ANALYSIS_INCOMPLETE and d.verdict.culprit_ranks == () and d.verdict.confidence == "low"
    assert d.verdict.summary.startswith("analysis incomplete: the broken pass failed (TypeError)")
    assert [f.kind for f in d.findings] == [ANALYSIS_INCOMPLETE]


def test_the_trtllm_logs_that_crashed_the_log_pass_get_a_verdict(tmp_path):
    """Rank 0 skipped warm-up after an OOM; ranks 1-3 timed out, rank 3 with a PG status line as well (a SeqNum
    without an op next to one with it, which once made the log pass raise and the verdict no_fault_found)."""
    from test_analysis_fuzz import TRTLLM_LOGS

    from hangdoc.importers import load_inputs

    for name, text in TRTLLM_LOGS.items():
        (tmp_path / name).write_text(text)
    d = diagnose(load_inputs(sorted(tmp_path.iterdir())))
    assert not [n for n in d.notes if "failed" in n]
    assert d.verdict.kind not in (NO_FAULT_FOUND, ANALYSIS_INCOMPLETE) and d.verdict.culprit_ranks == (0,)
    assert d.verdict.summary.count("1132079") == 1


def test_diagnosis_carries_version_inputs_notes():
    b = bundle(seed001_rows(), inputs=["dumps/"])
    b.note("rank 9: trace file truncated")
    d = diagnose(b)
    assert d.hangdoc_version == __version__
    assert d.inputs == ("dumps/",)
    assert "rank 9: trace file truncated" in d.notes


def test_notes_are_said_once_and_expected_ones_fold_into_one_line():
    b = Bundle()
    for pid in (11, 12):  # two captures merged: each said the same two expected things
        b.note(f"pystacks: native stacks unavailable for pid(s) {pid} (py-spy said: Can't get native stack traces "
               "with the --nonblocking option.); Python-only stacks taken, target not paused")
        b.note("gpus: no GPU data: NVML did not start: NVML Shared Library Not Found (no NVIDIA driver on this host?)")
        b.note("logs: 2 log files read; no known hang line in them")
    d = diagnose(b)
    assert d.notes == (
        "logs: 2 log files read; no known hang line in them",
        "not collected: native stacks (py-spy ran without pausing the job); GPU data (NVML not available on this host)",
    )


def test_text_to_a_pipe_is_as_wide_as_columns_says(monkeypatch):
    from hangdoc.report import render_text

    d = diagnose(bundle(seed001_rows()))
    monkeypatch.setenv("COLUMNS", "80")
    narrow = render_text(d, "text")
    assert max(len(line) for line in narrow.splitlines()) == 80
    assert all(line == line.rstrip() for line in narrow.splitlines())
    monkeypatch.delenv("COLUMNS")
    assert max(len(line) for line in render_text(d, "text").splitlines()) > 80


def test_empty_bundle_is_no_fault_found_with_no_calls():
    d = diagnose(Bundle())
    assert d.verdict.kind == NO_FAULT_FOUND
    assert "no collective calls" in d.verdict.summary
    assert d.groups == () and d.rank_labels == {}
    assert "collectives: none in the input" in d.checked


def test_rows_without_rank_or_seq_are_noted_not_fatal():
    rows = []
    for r in range(4):
        rows += history(r, "0", 3, ranks=[0, 1, 2, 3])
    rows.append(call(None, "0", 4, ranks=[0, 1, 2, 3]))
    rows.append(call(1, "0", None, ranks=[0, 1, 2, 3]))
    d = diagnose(bundle(rows))
    assert d.verdict.kind == NO_FAULT_FOUND
    assert any("2 collective rows without a rank or sequence number" in n for n in d.notes)


def test_missing_member_shows_in_its_group_view():
    rows = []
    for r in (0, 1, 2):
        rows += history(r, "0", 4, ranks=[0, 1, 2, 3], last_state="started")
    d = diagnose(bundle(rows))
    (g,) = d.groups
    assert g.ranks == (0, 1, 2, 3)
    missing = next(p for p in g.positions if p.rank == 3)
    assert (missing.last_seq, missing.last_op, missing.calls) == (None, None, 0)
