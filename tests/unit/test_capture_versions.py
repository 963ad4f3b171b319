"""Versions of the job's stack, read from the files its processes map, end up in the report's environment."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hangdoc.analysis.pipeline import diagnose
from hangdoc.bundle import Bundle
from hangdoc.capture.versions import package_versions, versions_of
from hangdoc.importers import load_inputs
from hangdoc.report import markdown

SEED001 = Path(__file__).resolve().parents[2] / "fixtures" / "seed001-tp4-dp2"


def test_versions_from_mapped_paths(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.12" / "site-packages"
    for d in ("torch-2.9.1+cu128.dist-info", "vllm-0.11.0.dist-info", "nvidia_nccl_cu12-2.27.3.dist-info",
              "requests-2.32.0.dist-info", "torch"):
        (site / d).mkdir(parents=True)
    mapped = [
        f"{site}/torch/lib/libtorch_cuda.so",
        "/usr/lib/x86_64-linux-gnu/libnccl.so.2.21.5",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "[heap]",
    ]
    assert versions_of(mapped) == {
        "Python": "3.12", "torch": "2.9.1+cu128", "vLLM": "0.11.0", "NCCL": "2.27.3", "NCCL (library)": "2.21.5",
    }
    assert versions_of(["/usr/lib/x86_64-linux-gnu/libc.so.6"]) == {}


def test_versions_of_a_live_process_are_its_own() -> None:
    torch = pytest.importorskip("torch")
    proc = subprocess.Popen([sys.executable, "-c", "import torch, sys, time; print('up', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        got = package_versions([proc.pid])
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert got["torch"] == torch.__version__
    assert got["Python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert package_versions([proc.pid]) == {}  # gone: nothing, no error


def test_environment_block_names_each_nodes_versions(tmp_path: Path) -> None:
    seed = load_inputs([SEED001])
    calls = seed.table("collectives")
    parts = []
    for i, (host, torch_version) in enumerate((("node-12", "2.9.1"), ("node-15", "2.9.0"))):
        b = Bundle()
        b.manifest.update(host=host, created=float(i), capture={"versions": {"torch": torch_version, "vLLM": "0.11.0"},
                                                                  "nvidia_driver": "580.65.06"})
        import pyarrow.compute as pc

        b.add("collectives", calls.filter(pc.equal(calls.column("host"), host)))
        parts.append(b)
    d = diagnose(Bundle.merge(parts))
    assert d.environment["torch"] == "2.9.0, 2.9.1"  # nodes that differ say so
    assert d.environment["vLLM"] == "0.11.0" and d.environment["NVIDIA driver"] == "580.65.06"
    text = markdown.render(d)
    env_block = text[text.index("<summary>Environment"):]
    assert "| torch | `2.9.0, 2.9.1` |" in env_block and "| vLLM | `0.11.0` |" in env_block
