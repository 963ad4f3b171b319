"""Bad manifests: whatever manifest.json holds, opening the bundle ends in one 'not a hangdoc bundle' line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bounded import assert_one_line_error, hangdoc
from hangdoc.bundle import Bundle
from hangdoc.errors import BundleError
from hangdoc.schema import table_from_rows


def _bundle(tmp_path: Path, manifest: str | None = None, **fields: object) -> Path:
    b = Bundle()
    b.add("log_events", table_from_rows("log_events", [{"host": "h", "file": "x.log", "line_no": 1, "text": "hi"}]))
    path = b.write(tmp_path / "b")
    if manifest is None:
        m = json.loads((path / "manifest.json").read_text())
        m.update(fields)
        manifest = json.dumps(m)
    (path / "manifest.json").write_text(manifest)
    return path


def _nested(depth: int) -> str:
    return '{"format": "hangdoc.bundle", "bundle_version": 1, "capture": ' + "[" * depth + "]" * depth + "}"


CASES = {
    "nested 5,000 deep": (lambda: _nested(5000), "nests deeper"),
    "nested 500 deep (json parses it)": (lambda: _nested(500), "nests deeper"),
    "inputs a dict": ({"inputs": {"a": 1}}, "inputs is an object"),
    "notes a string": ({"notes": "oops"}, "notes is a string"),
    "notes holding a number": ({"notes": ["ok", 3]}, "notes holds a number"),
    "command a string": ({"command": "hangdoc capture"}, "command is a string"),
    "host a list": ({"host": ["a"]}, "host is a list"),
    "created a string": ({"created": "yesterday"}, "created is a string"),
    "collectors a list": ({"collectors": ["threads"]}, "collectors is a list"),
    "collector seconds a string": ({"collectors": {"threads": {"seconds": "x"}}}, "collectors.threads.seconds"),
    "tables holding a string": ({"tables": {"log_events": "1"}}, "tables holds a string"),
    "parts holding a bad part": ({"parts": [{"inputs": 3}]}, "parts[0].inputs is a number"),
    "version a string": ({"bundle_version": "1"}, "bundle_version is '1'"),
    "version a boolean": ({"bundle_version": True}, "bundle_version is True"),
    "no format": ({"format": None}, '"format"'),
    "a list": ("[1, 2, 3]", '"format"'),
    "not JSON": ("{\"format\": ", "not JSON"),
    "not UTF-8": ("\udcff", "not JSON"),
}


FROM_THE_CLI = ("nested 5,000 deep", "inputs a dict", "notes a string", "not JSON")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_manifest_is_one_line_not_a_bundle(tmp_path: Path, case: str) -> None:
    spec, words = CASES[case]
    spec = spec() if callable(spec) else spec
    if isinstance(spec, dict):
        path = _bundle(tmp_path, **spec)
    elif spec == "\udcff":
        path = _bundle(tmp_path, "")
        (path / "manifest.json").write_bytes(b'{"format": "hangdoc.bundle", "host": "\xff\xfe"}')
    else:
        path = _bundle(tmp_path, spec)
    with pytest.raises(BundleError, match="not a hangdoc bundle") as err:
        Bundle.open(path)
    assert words in str(err.value)
    if case in FROM_THE_CLI:  # the cases found in the wild, end to end (each CLI start costs a second or two)
        for verb in ("analyze", "inspect"):
            assert_one_line_error(hangdoc(verb, path), "not a hangdoc bundle", words)


def test_report_of_a_bad_manifest_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    path = _bundle(tmp_path, inputs={"a": 1}, notes="oops")
    out = tmp_path / "out" / "r.tar.gz"
    assert_one_line_error(hangdoc("report", path, "-o", out), "not a hangdoc bundle")
    assert not out.exists()


def test_a_good_manifest_with_extra_fields_still_opens(tmp_path: Path) -> None:
    b = Bundle.open(_bundle(tmp_path, future_field={"deep": [[1]]}, notes=["n"]))
    assert b.rows("log_events") == 1 and b.notes == ["n"]
