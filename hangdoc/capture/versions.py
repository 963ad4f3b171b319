"""Versions of what the job runs on (Python, torch, NCCL, vLLM, SGLang, ...), from the files its processes map.

/proc/PID/maps names every shared library a process loaded: .../site-packages/torch/lib/libtorch_cpu.so,
.../nvidia/nccl/lib/libnccl.so.2, /usr/lib/.../libnccl.so.2.21.5. The site-packages directory they sit in holds
each installed package's dist-info, whose name carries its version. Nothing of the job is imported or paused,
and hangdoc's own environment (often another virtualenv) is never what gets reported.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

# dist-info name (normalised) -> how reports call it
PACKAGES = {
    "torch": "torch",
    "vllm": "vLLM",
    "sglang": "SGLang",
    "tensorrt_llm": "TensorRT-LLM",
    "nvidia_nccl_cu11": "NCCL",
    "nvidia_nccl_cu12": "NCCL",
    "nvidia_nccl_cu13": "NCCL",
    "ray": "Ray",
    "triton": "Triton",
    "flashinfer_python": "FlashInfer",
    "nixl": "NIXL",
    "deepspeed": "DeepSpeed",
    "megatron_core": "Megatron-Core",
}
MAX_PIDS = 16  # processes of one job share their environments; a few are enough
_DIST_INFO = re.compile(r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<version>[^-]+)\.dist-info$")
_SITE = re.compile(r"^(?P<site>.*/(?:site|dist)-packages)/")
_PYTHON = re.compile(r"/(?:lib/)?python(?P<v>3\.\d+)/|libpython(?P<lib>3\.\d+)")
_NCCL_SO = re.compile(r"/libnccl\.so\.(?P<v>\d+\.\d+\.\d+)$")


def _mapped(pid: int) -> set[str]:
    try:
        text = Path(f"/proc/{pid}/maps").read_text(errors="replace")
    except OSError:
        return set()
    return {line.split(None, 5)[5].strip() for line in text.splitlines() if len(line.split(None, 5)) == 6}


def _site_versions(site: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        entries = list(site.iterdir())
    except OSError:
        return out
    for entry in entries:
        m = _DIST_INFO.match(entry.name)
        if m:
            name = re.sub(r"[-.]+", "_", m.group("name")).lower()
            if name in PACKAGES:
                out[PACKAGES[name]] = m.group("version")
    return out


def versions_of(paths: Iterable[str]) -> dict[str, str]:
    """Versions named by one process's mapped files."""
    out: dict[str, str] = {}
    sites: set[str] = set()
    for path in paths:
        m = _PYTHON.search(path)
        if m and "Python" not in out:
            out["Python"] = m.group("v") or m.group("lib")
        m = _SITE.match(path)
        if m:
            sites.add(m.group("site"))
        m = _NCCL_SO.search(path)
        if m:
            out["NCCL (library)"] = m.group("v")
    for site in sorted(sites):
        for name, version in _site_versions(Path(site)).items():
            out.setdefault(name, version)
    return out


def package_versions(pids: Iterable[int]) -> dict[str, str]:
    """Versions across the job's processes: one value, or each distinct one when processes differ."""
    seen: dict[str, set[str]] = {}
    for pid in list(pids)[:MAX_PIDS]:
        for name, version in versions_of(_mapped(pid)).items():
            seen.setdefault(name, set()).add(version)
    return {name: ", ".join(sorted(vs)) for name, vs in sorted(seen.items())}
