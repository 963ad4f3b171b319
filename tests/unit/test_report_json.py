"""The JSON report follows the contract in docs/report-json.md: names, types, order, determinism."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hangdoc.analysis.model import CALL_COUNT_SWAP, COLLECTIVE_MISMATCH, NO_FAULT_FOUND, Finding
from hangdoc.report import render, render_text, to_dict
from hangdoc.report.jsonreport import indented
from report_cases import ODD_LABEL, PEER_LABEL, healthy, seed001

CONTRACT_FINDING = ("kind", "ranks", "group", "seq", "op", "expected_op", "summary", "evidence", "swap")


def test_top_level_and_verdict_follow_the_contract():
    out = to_dict(seed001())
    assert list(out)[:5] == ["schema", "hangdoc_version", "inputs", "verdict", "findings"]
    assert out["schema"] == "hangdoc.report/1"
    assert out["hangdoc_version"] == "0.1.0"
    assert out["inputs"] == ["traces/node-1", "traces/node-15"]
    assert out["verdict"] == {
        "kind": COLLECTIVE_MISMATCH,
        "culprit_ranks": [6],
        "group": "tp:1",
        "summary": seed001().verdict.summary,
        "reason": "every chain of waits leads to rank 6",
        "confidence": "high",
    }


def test_every_finding_carries_the_contract_names_with_their_types():
    findings = to_dict(seed001())["findings"]
    assert [f["kind"] for f in findings] == [COLLECTIVE_MISMATCH, CALL_COUNT_SWAP, "lagging_rank",
                                            "gpu_spin_wait", "log_signature"]
    for f in findings:
        for name in CONTRACT_FINDING:
            assert name in f, (f["kind"], name)
        assert all(type(r) is int for r in f["ranks"]) and f["ranks"] == sorted(f["ranks"])
        assert f["seq"] is None or type(f["seq"]) is int
        assert isinstance(f["evidence"], list)
    mismatch, swap, lagging, spin, _ = findings
    assert (mismatch["ranks"], mismatch["group"], mismatch["seq"]) == ([6], "tp:1", 389)
    assert (mismatch["op"], mismatch["expected_op"]) == (ODD_LABEL, PEER_LABEL)
    assert mismatch["swap"] is None and mismatch["role"] == "cause"
    assert mismatch["waiting_ranks"] == [0, 1, 2, 3, 4, 5, 7]
    assert [c["rank"] for c in mismatch["calls"]] == [4, 5, 6, 7]
    assert mismatch["calls"][2]["label"] == ODD_LABEL and mismatch["calls"][2]["in_shapes"] == [[14, 256]]
    assert mismatch["details"] == {"majority": 3, "minority": 1, "positions": [389]}
    assert swap["swap"] == {"from_group": "dp:2", "to_group": "tp:1", "calls": 17}
    assert type(swap["swap"]["calls"]) is int
    assert (swap["seq"], swap["op"], swap["expected_op"]) == (None, None, None)
    assert lagging["role"] == "symptom" and lagging["group"] == "tp:0"
    assert spin["count"] == 8 and spin["group"] is None


def test_groups_positions_and_labels_are_sorted_and_plain():
    out = to_dict(seed001())
    assert [g["group"] for g in out["groups"]] == ["dp:0", "dp:1", "dp:2", "dp:3", "tp:0", "tp:1"]
    tp1 = out["groups"][-1]
    assert tp1["ranks"] == [4, 5, 6, 7] and tp1["family"] == "tp"
    assert [p["rank"] for p in tp1["positions"]] == [4, 5, 6, 7]
    assert tp1["positions"][2] == {"rank": 6, "last_seq": 406, "last_op": ODD_LABEL, "state": "started",
                                   "calls": 407, "completed": 406}
    assert out["rank_labels"]["6"] == "DP 1, TP rank 2"
    assert list(out["rank_labels"]) == [str(r) for r in range(8)]
    assert out["checked"] and out["notes"] == ["rank 3: no py-spy dump"]


def test_dump_round_trips_and_is_deterministic(tmp_path):
    d = seed001()
    text = render_text(d, "json")
    assert json.loads(text) == to_dict(d)
    assert render_text(seed001(), "json") == text
    path = tmp_path / "report.json"
    render(d, "json", path)
    assert path.read_text(encoding="utf-8") == text


def test_numpy_values_from_passes_become_sorted_plain_ints():
    d = seed001()
    odd = Finding(kind="lagging_rank", ranks=(np.int64(5), np.int64(2)), summary="x", seq=np.int64(7),
                  waiting_ranks=(np.int32(3), np.int32(1)), details={"b": np.float64(1.5), "a": {np.int64(2)}})
    d = replace(d, findings=(odd,))
    f = json.loads(render_text(d, "json"))["findings"][0]
    assert f["ranks"] == [2, 5] and f["seq"] == 7 and f["waiting_ranks"] == [1, 3]
    assert f["details"] == {"a": [2], "b": 1.5}
    assert list(f["details"]) == ["a", "b"]


def test_no_fault_found_has_no_culprit():
    out = to_dict(healthy())
    assert out["verdict"]["kind"] == NO_FAULT_FOUND
    assert out["verdict"]["culprit_ranks"] == [] and out["verdict"]["group"] is None
    assert out["findings"][0]["kind"] == NO_FAULT_FOUND and out["findings"][0]["ranks"] == list(range(8))
    assert len(out["checked"]) == 3


def test_documented_example_has_the_same_shape_as_the_output():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "report-json.md").read_text(encoding="utf-8")
    example = json.loads(doc.split("```json\n", 1)[1].split("```", 1)[0])
    out = to_dict(seed001())
    assert list(example) == list(out)
    assert list(example["verdict"]) == list(out["verdict"])
    assert [list(f) for f in example["findings"]] == [list(f) for f in out["findings"][:3]]
    assert list(example["findings"][0]["calls"][0]) == list(out["findings"][0]["calls"][0])
    assert list(example["groups"][0]) == list(out["groups"][0])
    assert list(example["groups"][0]["positions"][0]) == list(out["groups"][0]["positions"][0])


def test_indented_writes_the_same_bytes_as_json_dumps_with_indent():
    cases = [
        {}, [], {"a": []}, [[], {}], "s", 5, None, 1.5, ("t",), {"k": (1, (2, 3))},
        [1, [2, [3, []]], "x", (4, 5)],
        [{"a": 1, "b": "x,\n  y"}] * 3,
        {"a": {"b": [1, 2, {"c": None}]}, "é\n\"": "ü\u2028", 1: True, 2.5: False, None: math.nan,
         True: [math.inf, -math.inf, 1e300, 0.1]},
        to_dict(seed001()), to_dict(healthy()),
    ]
    for case in cases:
        assert indented(case) == json.dumps(case, indent=2, ensure_ascii=False)


def test_indented_refuses_what_json_refuses():
    for bad in ({"a": [object()]}, [{"a": {1, 2}}], {"a": [1, {"b": object()}]}):
        with pytest.raises(TypeError):
            indented(bad)
