"""What the golden tests compare: each README fixture's reports, and the documented examples, made by the real
code. `HANGDOC_UPDATE_GOLDEN=1 python -m pytest tests/golden` rewrites the golden files and the generated blocks
of README.md and docs/ from these functions; without it the tests compare."""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from hangdoc.analysis.model import Diagnosis
from hangdoc.analysis.pipeline import DEFERRED, diagnose
from hangdoc.importers import load_inputs
from hangdoc.report import render_text, to_dict

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "expected"
WIDTH = 80
UPDATE = os.environ.get("HANGDOC_UPDATE_GOLDEN") == "1"


def readme_fixtures() -> list[str]:
    """Every fixture directory the README names."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    names = dict.fromkeys(re.findall(r"fixtures/([A-Za-z0-9_-]+)", text))
    return [n for n in names if (ROOT / "fixtures" / n).is_dir()]


@functools.lru_cache(maxsize=None)
def diagnosis_of(path: str) -> Diagnosis:
    """The diagnosis of a path relative to the repository root, named as a user in the root would name it
    (a Diagnosis is frozen, so the tests share one per fixture)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return diagnose(load_inputs([Path(path)], defer=DEFERRED))
    finally:
        os.chdir(cwd)


def text_report(d: Diagnosis) -> str:
    return render_text(d, "text", width=WIDTH)


def markdown_report(d: Diagnosis) -> str:
    return render_text(d, "markdown")


def readme_example() -> str:
    """README's example output: seed 001's text report at 80 columns."""
    d = diagnosis_of("fixtures/seed001-tp4-dp2")
    return "```text\n$ COLUMNS=80 hangdoc analyze fixtures/seed001-tp4-dp2\n" + text_report(d).rstrip("\n") + "\n```"


def report_json_example() -> str:
    """docs/report-json.md's example: seed 001's JSON report with only the verdict's communicator in `groups`."""
    data = to_dict(diagnosis_of("fixtures/seed001-tp4-dp2"))
    data["groups"] = [g for g in data["groups"] if g["group"] == data["verdict"]["group"]]
    return "```json\n" + json.dumps(data, indent=2, ensure_ascii=False) + "\n```"


def jsonl_example_verdict(tmp: Path) -> str:
    """docs/trace-formats.md: what `hangdoc analyze` says of the one-rank JSONL example above the marker."""
    doc = (ROOT / "docs" / "trace-formats.md").read_text(encoding="utf-8")
    block = doc.split("```jsonl\n", 1)[1].split("```", 1)[0]
    trace = tmp / "rank6.jsonl"
    trace.write_text(block, encoding="utf-8")
    d = diagnose(load_inputs([trace], defer=DEFERRED))
    return "```json\n" + json.dumps({"verdict": to_dict(d)["verdict"]}, indent=2, ensure_ascii=False) + "\n```"


def sync_file(path: Path, content: str) -> str | None:
    """Rewrite `path` under UPDATE; else None when it holds `content`, or what differs."""
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return None
    if not path.exists():
        return f"{path.name} is missing: run HANGDOC_UPDATE_GOLDEN=1 python -m pytest tests/golden"
    return None if path.read_text(encoding="utf-8") == content else _differs(path.name, path.read_text(), content)


def sync_block(path: Path, name: str, content: str) -> str | None:
    """The same for the text between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->` in a doc."""
    doc = path.read_text(encoding="utf-8")
    start, end = f"<!-- generated: {name} -->", f"<!-- end generated: {name} -->"
    if start not in doc or end not in doc:
        return f"{path.name} has no {start} ... {end} block"
    head, rest = doc.split(start, 1)
    old, tail = rest.split(end, 1)
    new = f"\n{content}\n"
    if UPDATE:
        path.write_text(head + start + new + end + tail, encoding="utf-8")
        return None
    return None if old == new else _differs(f"{path.name} ({name})", old, new)


def _differs(what: str, old: str, new: str) -> str:
    import difflib

    diff = "".join(list(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "golden", "now"))[:60])
    return (f"{what} differs from what the code prints now; if the change is intended, run "
            f"HANGDOC_UPDATE_GOLDEN=1 python -m pytest tests/golden and review the diff\n{diff}")
