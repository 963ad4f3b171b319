"""GPUs through NVML (nvidia-ml-py): utilization, memory, power, clocks, per-process memory, ECC and XID.

Reading and mapping are split: read_nvml() records raw NVML values as plain JSON-able dicts, and
rows_from_recording() turns a recording into table rows. The mapping is pure, so it is tested on recorded
values from real GPUs; the live read runs in a daemon thread with a deadline because NVML calls into a
wedged driver (a GPU fallen off the bus) can block for minutes.

XIDs: NVML only reports XID events that happen after a listener registers, which is useless after the
fact, so past XIDs come from the kernel log (/dev/kmsg, non-blocking; needs CAP_SYSLOG where
dmesg_restrict is set).
"""
from __future__ import annotations

import os
import re
import threading
import time
from typing import Any, Callable, Mapping

from hangdoc.capture.base import CollectorOutput
from hangdoc.capture.timeouts import Timeout, run_bounded
from hangdoc.schema import table_from_rows

_XID = re.compile(r"NVRM: Xid \(PCI:([0-9a-fA-F]+:[0-9a-fA-F]+:[0-9a-fA-F]+)[^)]*\): (\d+)")


class NvmlUnavailable(Exception):
    """NVML cannot be used here (no library, no driver, no permission); the message says why."""


def normalize_bus_id(bus_id: str | None) -> str | None:
    """'00000000:3B:00.0' (NVML) and '0000:3b:00' (kernel log) -> '0000:3b:00'."""
    if not bus_id:
        return None
    parts = bus_id.split(".")[0].split(":")
    if len(parts) < 3:
        return bus_id.lower()
    try:
        domain = int(parts[-3], 16)
    except ValueError:
        return bus_id.lower()
    return f"{domain:04x}:{parts[-2].lower()}:{parts[-1].lower()}"


def parse_kernel_xids(lines: list[str]) -> dict[str, int]:
    """Last XID per GPU bus id from kernel log lines ('NVRM: Xid (PCI:0000:3b:00): 79, pid=...')."""
    out: dict[str, int] = {}
    for line in lines:
        m = _XID.search(line)
        if m:
            out[normalize_bus_id(m.group(1)) or m.group(1)] = int(m.group(2))
    return out


def read_kernel_log(max_records: int = 200_000) -> list[str]:
    """Messages of the kernel ring buffer via /dev/kmsg, read without blocking."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    lines: list[str] = []
    try:
        for _ in range(max_records):
            try:
                record = os.read(fd, 16384)
            except BlockingIOError:
                break
            except BrokenPipeError:  # records overwritten while reading: skip on
                continue
            if not record:
                break
            lines.append(record.decode("utf-8", "replace").partition(";")[2].rstrip("\n"))
    finally:
        os.close(fd)
    return lines


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _read_gpu(nvml: Any, index: int, failed: set[str]) -> dict[str, Any]:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)

    def get(field: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except nvml.NVMLError:
            failed.add(field)
            return None

    util = get("utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    mem = get("memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    pci = get("pci", lambda: nvml.nvmlDeviceGetPciInfo(handle))
    procs: dict[int, int | None] = {}
    for kind, fn in (
        ("compute processes", nvml.nvmlDeviceGetComputeRunningProcesses),
        ("graphics processes", nvml.nvmlDeviceGetGraphicsRunningProcesses),
    ):
        for p in get(kind, lambda: fn(handle)) or ():
            pid, used = int(p.pid), getattr(p, "usedGpuMemory", None)
            if used is not None:
                procs[pid] = max(used, procs.get(pid) or 0)
            else:
                procs.setdefault(pid, None)
    return {
        "index": index,
        "uuid": _text(get("uuid", lambda: nvml.nvmlDeviceGetUUID(handle))),
        "bus_id": _text(pci.busId) if pci is not None else None,
        "name": _text(get("name", lambda: nvml.nvmlDeviceGetName(handle))),
        "utilization_gpu": util.gpu if util is not None else None,
        "utilization_memory": util.memory if util is not None else None,
        "memory_used": mem.used if mem is not None else None,
        "memory_total": mem.total if mem is not None else None,
        "power_mw": get("power", lambda: nvml.nvmlDeviceGetPowerUsage(handle)),
        "clock_sm_mhz": get("sm clock", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "temperature_c": get(
            "temperature", lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        ),
        "ecc_uncorrected_volatile": get(
            "ecc",
            lambda: nvml.nvmlDeviceGetTotalEccErrors(
                handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
            ),
        ),
        "processes": [{"pid": pid, "used_memory": used} for pid, used in sorted(procs.items())],
    }


def read_nvml(
    samples: int = 1,
    interval: float = 0.0,
    *,
    stop: threading.Event | None = None,
    on_sample: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """A recording: {'source': 'nvml', 'driver_version', 'samples': [{'sample', 't', 'gpus': [raw values]}],
    'unsupported': [fields NVML refused]}. Raises NvmlUnavailable when NVML cannot start."""
    try:
        import pynvml as nvml
    except ImportError as exc:
        raise NvmlUnavailable(f"nvidia-ml-py is not installed ({exc})") from None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML did not start: {exc} (no NVIDIA driver on this host?)") from None
    try:
        failed: set[str] = set()
        recording: dict[str, Any] = {"source": "nvml", "samples": []}
        try:
            recording["driver_version"] = _text(nvml.nvmlSystemGetDriverVersion())
        except nvml.NVMLError:
            recording["driver_version"] = None
        count = nvml.nvmlDeviceGetCount()
        start = time.monotonic()
        for k in range(samples):
            wait = start + k * interval - time.monotonic()
            if k and stop is not None and stop.wait(max(0.0, wait)):
                break
            if k and stop is None and wait > 0:
                time.sleep(wait)
            sample = {"sample": k, "t": time.time(), "gpus": [_read_gpu(nvml, i, failed) for i in range(count)]}
            recording["samples"].append(sample)
            recording["unsupported"] = sorted(failed)
            if on_sample is not None:
                on_sample(sample)
        recording["unsupported"] = sorted(failed)
        return recording
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def rows_from_recording(
    recording: Mapping[str, Any], host: str, xids: Mapping[str, int] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """gpu_samples and gpu_processes rows from a recording (pure). Per-process memory comes from the last sample."""
    xids = xids or {}
    source = recording.get("source", "nvml")
    samples_rows: list[dict[str, Any]] = []
    proc_rows: list[dict[str, Any]] = []
    samples = recording.get("samples", [])
    for sample in samples:
        for g in sample["gpus"]:
            power = g.get("power_mw")
            samples_rows.append(
                {
                    "host": host,
                    "gpu": g["index"],
                    "uuid": g.get("uuid"),
                    "bus_id": g.get("bus_id"),
                    "name": g.get("name"),
                    "sample": sample["sample"],
                    "t": sample["t"],
                    "sm_util": _float(g.get("utilization_gpu")),
                    "mem_bw_util": _float(g.get("utilization_memory")),
                    "mem_used": g.get("memory_used"),
                    "mem_total": g.get("memory_total"),
                    "power_w": power / 1000.0 if power is not None else None,
                    "sm_clock_mhz": _float(g.get("clock_sm_mhz")),
                    "temperature_c": _float(g.get("temperature_c")),
                    "xid": xids.get(normalize_bus_id(g.get("bus_id")) or ""),
                    "ecc_uncorrected": g.get("ecc_uncorrected_volatile"),
                    "source": source,
                }
            )
    if samples:
        for g in samples[-1]["gpus"]:
            for p in g.get("processes", []):
                proc_rows.append(
                    {"host": host, "gpu": g["index"], "uuid": g.get("uuid"), "pid": p["pid"], "used_memory": p.get("used_memory")}
                )
    return {"gpu_samples": samples_rows, "gpu_processes": proc_rows}


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def gpu_process_map(recording: Mapping[str, Any] | None) -> dict[int, list[int]]:
    """pid -> GPU indices it holds memory on, from a recording's last sample."""
    out: dict[int, list[int]] = {}
    if recording and recording.get("samples"):
        for g in recording["samples"][-1]["gpus"]:
            for p in g.get("processes", []):
                out.setdefault(p["pid"], []).append(g["index"])
    return out


def probe(timeout: float = 5.0) -> tuple[dict[str, Any] | None, str | None]:
    """One NVML reading for target discovery: (recording, None) or (None, why not)."""
    try:
        return run_bounded(read_nvml, timeout=timeout, name="hangdoc-nvml-probe"), None
    except NvmlUnavailable as exc:
        return None, str(exc)
    except Timeout:
        return None, f"NVML did not answer within {timeout:g} s (driver wedged or a GPU fell off the bus?)"
    except Exception as exc:  # an NVML error after init: still a note, never a crash
        return None, f"NVML failed: {type(exc).__name__}: {exc}"


def kernel_xids(timeout: float = 2.0) -> tuple[dict[str, int], str | None]:
    try:
        return parse_kernel_xids(run_bounded(read_kernel_log, timeout=timeout, name="hangdoc-kmsg")), None
    except PermissionError:
        return {}, "kernel log unreadable (dmesg_restrict; needs CAP_SYSLOG): past XIDs not collected"
    except (OSError, Timeout) as exc:
        return {}, f"kernel log not read ({exc or 'timed out'}): past XIDs not collected"


def collect_gpus(
    host: str,
    *,
    samples: int = 3,
    interval: float = 0.5,
    stop: threading.Event | None = None,
    partial: CollectorOutput | None = None,
    on_sample: Callable[[int], None] | None = None,
) -> CollectorOutput:
    """gpu_samples / gpu_processes; without NVML both tables are empty and a note says why.

    Meant to run inside the orchestrator's bounded thread: `partial` holds every finished sample, so a
    driver that stops answering mid-capture still leaves the samples taken before.
    """
    out = partial if partial is not None else CollectorOutput()
    out.tables["gpu_samples"] = table_from_rows("gpu_samples", [])
    out.tables["gpu_processes"] = table_from_rows("gpu_processes", [])
    xids, note = kernel_xids()
    recording: dict[str, Any] = {"source": "nvml", "samples": []}

    def keep(sample: dict[str, Any]) -> None:
        recording["samples"].append(sample)
        rows = rows_from_recording(recording, host, xids)
        for name, table_rows in rows.items():
            out.tables[name] = table_from_rows(name, table_rows)
        if on_sample is not None:
            on_sample(sample["sample"])

    try:
        done = read_nvml(samples, interval, stop=stop, on_sample=keep)
    except NvmlUnavailable as exc:
        out.notes.append(f"no GPU data: {exc}")
        return out
    if done.get("unsupported"):
        out.notes.append(f"NVML could not report: {', '.join(done['unsupported'])}")
    if note and done["samples"]:
        out.notes.append(note)
    if not done["samples"] or not done["samples"][0]["gpus"]:
        out.notes.append("NVML started but reports no GPUs")
    return out
