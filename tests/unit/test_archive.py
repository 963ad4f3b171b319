"""`hangdoc report`: the archive holds bundles and the three reports, no secret survives in any file of it,
and past the size cap the biggest tables are sampled down, as its manifest says."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hangdoc.analysis.pipeline import diagnose
from hangdoc.bundle import Bundle
from hangdoc.cli import app
from hangdoc.errors import HangdocError
from hangdoc.importers import load_inputs
from hangdoc.report.archive import build_archive, sample_down
from hangdoc.schema import conform, table_from_rows

SEED001 = Path(__file__).resolve().parents[2] / "fixtures" / "seed001-tp4-dp2"
SECRETS = {
    "hf": "hf_" + "Zq8x" * 8,
    "openai": "sk-proj-" + "aB3d" * 6,
    "note": "hunter2-not-a-word",
    "env": "plain-but-secret-value",
    "flag": "s3cr3t-flag-value",
}


def _secret_bundle(tmp_path: Path) -> Path:
    """Seed 001's calls on node-12 plus what a careless import could carry: tokens in argv, env, logs, notes."""
    b = load_inputs([SEED001])
    b.manifest.update(host="node-12", command=["hangdoc", "capture", "--api-key", SECRETS["flag"]])
    b.add("processes", table_from_rows("processes", [
        {"host": "node-12", "pid": 4000 + r, "ppid": 3999, "parent_alive": True, "global_rank": r, "status": "sleeping",
         "cmdline": ["python", "-m", "vllm.entrypoints.openai.api_server", "--hf-token", SECRETS["hf"], "--port", "8000"],
         "env": [("RANK", str(r)), ("VLLM_API_KEY", SECRETS["env"]), ("HF_TOKEN", SECRETS["hf"])]}
        for r in range(8)]))
    b.add("log_events", table_from_rows("log_events", [
        {"host": "node-12", "file": "server.log", "line_no": 7, "signature": "vllm_shm_broadcast_timeout",
         "severity": "warning", "text": f"OPENAI_API_KEY={SECRETS['openai']} No available shared memory broadcast "
                                        "block found in 60 seconds.",
         "context": [f"Authorization: Bearer {SECRETS['openai']}"]}]))
    b.note(f"logs: connected with db password: {SECRETS['note']}")
    return b.write(tmp_path / "node-12.bundle")


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _readable(name: str, data: bytes) -> str:
    if name.endswith(".parquet"):
        return json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str)
    return data.decode("utf-8")


def test_archive_holds_reports_and_bundle_with_every_secret_redacted(tmp_path: Path) -> None:
    src = _secret_bundle(tmp_path)
    raw = {name: _readable(name, p.read_bytes()) for name, p in ((p.name, p) for p in src.iterdir())}
    assert any(SECRETS["hf"] in text for text in raw.values())  # the input really carries them

    out = tmp_path / "hang-report.tar.gz"
    result = build_archive([src], out)
    files = _members(out)
    top = "hang-report"
    assert {f"{top}/README.txt", f"{top}/MANIFEST.json", f"{top}/report.md", f"{top}/report.html",
            f"{top}/report.json", f"{top}/bundles/node-12/manifest.json",
            f"{top}/bundles/node-12/collectives.parquet", f"{top}/bundles/node-12/processes.parquet",
            f"{top}/bundles/node-12/log_events.parquet"} <= set(files)
    for name, data in files.items():
        text = _readable(name, data)
        for what, secret in SECRETS.items():
            assert secret not in text, f"{what} secret in {name}"

    # the reports tell seed 001's story
    report = json.loads(files[f"{top}/report.json"])
    assert report["verdict"]["kind"] == "collective_mismatch" and report["verdict"]["culprit_ranks"] == [6]
    assert files[f"{top}/report.md"].decode().startswith("## hangdoc: collective_mismatch on `tp:1`, rank 6")
    assert b'data-culprit="6"' in files[f"{top}/report.html"]
    # what was redacted is listed, and what was kept is still useful
    manifest = json.loads(files[f"{top}/MANIFEST.json"])
    where = {r["where"]: r["values"] for r in manifest["redacted"]}
    assert where["processes.cmdline"] == 8 and where["processes.env"] == 8
    assert where["log_events.text"] == 1 and where["log_events.context"] == 1 and where["manifest"] >= 2
    assert manifest["dropped"] == [] and manifest["verdict"]["culprit_ranks"] == [6]
    assert manifest["bundles"]["node-12"]["tables"]["collectives"] == 1600
    procs = pq.read_table(io.BytesIO(files[f"{top}/bundles/node-12/processes.parquet"])).to_pylist()
    assert procs[0]["cmdline"][-2:] == ["--port", "8000"] and dict(procs[0]["env"]) == {"RANK": "0",
                                                                                         "VLLM_API_KEY": "<redacted>"}
    logs = pq.read_table(io.BytesIO(files[f"{top}/bundles/node-12/log_events.parquet"])).to_pylist()
    assert "No available shared memory broadcast block" in logs[0]["text"]
    assert "README" not in result.manifest and result.manifest["bytes"] == out.stat().st_size
    # the archived bundle analyses like the original
    (tmp_path / "x").mkdir()
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    again = diagnose(Bundle.open(tmp_path / "x" / top / "bundles" / "node-12"))
    assert again.verdict.culprit_ranks == (6,) and again.verdict.group == "tp:1"


def test_raw_traces_become_a_bundle_and_the_cli_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "r.tar.gz"
    run = CliRunner().invoke(app, ["report", str(SEED001), "--output", str(out)])
    assert run.exit_code == 0, run.output
    assert "verdict: collective_mismatch, culprit ranks 6" in run.output
    files = _members(out)
    assert "r/bundles/seed001-tp4-dp2/collectives.parquet" in files
    assert json.loads(files["r/MANIFEST.json"])["inputs"] == [str(SEED001)]
    with pytest.raises(HangdocError, match="already exists"):
        build_archive([SEED001], out)


def _big_bundle(tmp_path: Path) -> Path:
    """Seed 001 plus 200k thread samples of noise (a long capture): far over a 1 MB cap."""
    b = load_inputs([SEED001])
    rng = np.random.default_rng(1)
    n = 200_000
    samples = pa.table({
        "host": pa.array(["node-12"] * n), "pid": pa.array(rng.integers(1, 64, n)),
        "tid": pa.array(rng.integers(1, 10_000, n)), "sample": pa.array(np.repeat(np.arange(100), n // 100)),
        "t": pa.array(rng.random(n) * 1e6), "utime": pa.array(rng.random(n)), "stime": pa.array(rng.random(n)),
    })
    b.add("thread_samples", conform("thread_samples", samples))
    return b.write(tmp_path / "big.bundle")


def test_size_cap_samples_the_biggest_table_down_and_says_so(tmp_path: Path) -> None:
    src = _big_bundle(tmp_path)
    out = tmp_path / "capped.tar.gz"
    result = build_archive([src], out, max_mb=1.0)
    assert out.stat().st_size <= 2**20
    manifest = json.loads(_members(out)["capped/MANIFEST.json"])
    assert [(d["bundle"], d["table"]) for d in manifest["dropped"]] == [("big", "thread_samples")]
    entry = manifest["dropped"][0]
    assert entry["rows"] == 200_000 and 0 < entry["kept"] < 100_000 and entry["how"].startswith("the latest")
    kept = pq.read_table(io.BytesIO(_members(out)["capped/bundles/big/thread_samples.parquet"]))
    assert kept.num_rows == entry["kept"] and min(kept.column("sample").to_pylist()) > 0
    assert max(kept.column("sample").to_pylist()) == 99  # the latest samples stay
    assert manifest["bundles"]["big"]["tables"]["collectives"] == 1600  # the small tables are untouched
    assert result.diagnosis.verdict.culprit_ranks == (6,)


def test_sampling_collectives_keeps_each_pairs_last_calls_and_every_open_call() -> None:
    calls = load_inputs([SEED001]).table("collectives")
    open_before = sum(1 for s in calls.column("state").to_pylist() if s != "completed")
    kept, how = sample_down("collectives", calls, 200)
    assert kept.num_rows < calls.num_rows / 2 and "last" in how
    assert sum(1 for s in kept.column("state").to_pylist() if s != "completed") == open_before
    for rank in range(8):  # each rank keeps its newest call on each communicator
        for group in {g for r, g in zip(calls.column("rank").to_pylist(), calls.column("group").to_pylist()) if r == rank}:
            full = [s for r, g, s in zip(calls.column("rank").to_pylist(), calls.column("group").to_pylist(),
                                         calls.column("seq").to_pylist()) if r == rank and g == group]
            mine = [s for r, g, s in zip(kept.column("rank").to_pylist(), kept.column("group").to_pylist(),
                                         kept.column("seq").to_pylist()) if r == rank and g == group]
            assert max(mine) == max(full)
