"""GPU rows from recorded NVML values, XIDs from kernel log lines, and the real no-NVML path of this host."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hangdoc.capture import gpu
from hangdoc.schema import table_from_rows

RECORDING = json.loads((Path(__file__).parents[1] / "fixtures" / "nvml" / "h200_nccl_spin.json").read_text())


def _nvml_works() -> bool:
    try:
        gpu.read_nvml()
        return True
    except gpu.NvmlUnavailable:
        return False


def test_rows_from_recorded_nccl_spin():
    rows = gpu.rows_from_recording(RECORDING, "node-15", {"0000:2a:00": 79})
    samples = rows["gpu_samples"]
    assert len(samples) == 4  # 2 GPUs x 2 samples
    first = samples[0]
    assert (first["gpu"], first["sample"], first["host"], first["source"]) == (0, 0, "node-15", "nvml")
    assert first["sm_util"] == 100.0 and first["mem_bw_util"] == 0.0
    assert first["mem_used"] == 96636764160 and first["mem_total"] == 150754820096
    assert first["power_w"] == pytest.approx(311.482)  # NVML reports milliwatts
    assert (first["sm_clock_mhz"], first["temperature_c"], first["ecc_uncorrected"]) == (1980.0, 58.0, 0)
    assert first["xid"] is None
    assert {r["xid"] for r in samples if r["gpu"] == 1} == {79}  # matched through the normalized bus id
    procs = rows["gpu_processes"]
    assert [(p["gpu"], p["pid"], p["used_memory"]) for p in procs] == [
        (0, 3408431, 96636764160 - 553648128), (1, 3408430, 96636764160 + 2097152 - 553648128)]
    table_from_rows("gpu_samples", samples)
    table_from_rows("gpu_processes", procs)


def test_missing_fields_stay_null():
    rec = {"samples": [{"sample": 0, "t": 1.0, "gpus": [{"index": 0, "utilization_gpu": None, "power_mw": None}]}]}
    row = gpu.rows_from_recording(rec, "h")["gpu_samples"][0]
    assert row["sm_util"] is None and row["power_w"] is None and row["uuid"] is None


def test_gpu_process_map():
    assert gpu.gpu_process_map(RECORDING) == {3408431: [0], 3408430: [1]}
    assert gpu.gpu_process_map(None) == {}


def test_kernel_xids_and_bus_ids():
    lines = [
        "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.127.08",
        "NVRM: Xid (PCI:0000:18:00): 13, pid=4242, name=python3, Graphics Exception",
        "NVRM: Xid (PCI:0000:2a:00): 79, pid=<unknown>, name=<unknown>, GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:18:00): 31, pid=4242, name=python3, Ch 00000008, intr 10000000. MMU Fault",
    ]
    assert gpu.parse_kernel_xids(lines) == {"0000:18:00": 31, "0000:2a:00": 79}
    assert gpu.normalize_bus_id("00000000:2A:00.0") == "0000:2a:00"
    assert gpu.normalize_bus_id("0000:2a:00") == "0000:2a:00"
    assert gpu.normalize_bus_id(None) is None


@pytest.mark.skipif(_nvml_works(), reason="this host has a working NVML")
def test_no_nvml_gives_empty_tables_and_a_reason():
    out = gpu.collect_gpus("h", samples=2, interval=0.0)
    assert out.tables["gpu_samples"].num_rows == 0 and out.tables["gpu_processes"].num_rows == 0
    assert len(out.notes) == 1 and "NVML" in out.notes[0]
    recording, why = gpu.probe(timeout=5.0)
    assert recording is None and "NVML" in why


def test_kernel_log_read_is_bounded_and_never_raises():
    xids, note = gpu.kernel_xids(timeout=2.0)
    assert isinstance(xids, dict)
    assert note is None or "kernel log" in note
