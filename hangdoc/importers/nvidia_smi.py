"""nvidia-smi output people paste into bug reports -> gpu_samples and gpu_processes rows.

Reads the default table (any driver era, several tables in one file from `nvidia-smi -l`), `nvidia-smi -q`,
`--query-gpu=... --format=csv` (with its header; units in the values or not), `--query-compute-apps=...
--format=csv` and `nvidia-smi dmon`. Each repeated snapshot becomes one sample, so "100 % SM, 0 % memory
bandwidth across samples" can be judged. nvidia-smi does not name the host: rows carry host = null, which the
analysis passes treat as "the same host as the processes beside it". Timestamps without a zone are read as UTC.
"""
from __future__ import annotations

import calendar
import csv
import io
import re
import time
from pathlib import Path
from typing import Any

from hangdoc.bundle import Bundle
from hangdoc.schema import table_from_rows

NAME = "nvidia-smi"
MIB = 1024 * 1024
_SNIFF = 8192

_TABLE_HEAD = re.compile(r"NVIDIA-SMI\s+[\d.]+\s+Driver Version")
_Q_HEAD = "==============NVSMI LOG=============="
_DMON_HEAD = re.compile(r"^#\s*gpu\s+.*\b(sm|pwr)\b", re.M)


def _kind(head: str) -> str | None:
    if _Q_HEAD in head:
        return "q"
    if _TABLE_HEAD.search(head):
        return "table"
    if _DMON_HEAD.search(head):
        return "dmon"
    first = head.lstrip().splitlines()[0].lower() if head.strip() else ""
    if "," in first:
        if "utilization.gpu" in first or "memory.used" in first or ("index" in first and "uuid" in first):
            return "query-gpu"
        if "pid" in first and ("used_gpu_memory" in first or "used_memory" in first):
            return "compute-apps"
    return None


def matches(path: Path) -> bool:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            head = fh.read(_SNIFF)
    except (OSError, UnicodeError):
        return False
    return _kind(head) is not None


# --- small value parsers ---------------------------------------------------------------------------
_NUM = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _num(text: str | None) -> float | None:
    if text is None:
        return None
    m = _NUM.search(text)
    return float(m.group()) if m else None


def _mib(text: str | None) -> int | None:
    """'81234 MiB' / '81234MiB' / '81234' (MiB assumed) -> bytes."""
    v = _num(text)
    if v is None:
        return None
    t = text.lower() if text else ""
    if "gib" in t:
        return int(v * 1024 * MIB)
    if "kib" in t:
        return int(v * 1024)
    return int(v * MIB)


_CLOCK_FORMATS = ("%a %b %d %H:%M:%S %Y", "%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M:%S")


def _when(text: str) -> float | None:
    text = " ".join(text.split())
    for fmt in _CLOCK_FORMATS:
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    return None


_CLOCK_LINE = re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d+ [\d:]+ \d{4}")


# --- default table ---------------------------------------------------------------------------------
_GPU_ROW = re.compile(
    r"\|\s*(?P<idx>\d+)\s+(?P<name>.+?)\s+(?:On|Off)\s*\|\s*(?P<bus>[0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f])"
    r"\s+(?:On|Off)\s*\|\s*(?P<ecc>\S+)\s*\|"
)
_GPU_ROW2 = re.compile(
    r"\|\s*(?P<fan>\S+)\s+(?P<temp>\d+|N/A)C?\s+(?P<perf>P\d+|N/A)\s+(?P<pw>[\d.]+|N/A)W?\s*/\s*(?P<cap>[\d.]+|N/A)W?\s*\|"
    r"\s*(?P<used>\d+)MiB\s*/\s*(?P<total>\d+)MiB\s*\|\s*(?P<util>\d+|N/A)%?"
)
_PROC_ROW = re.compile(
    r"\|\s*(?P<gpu>\d+)\s+(?:(?:N/A|\d+)\s+(?:N/A|\d+)\s+)?(?P<pid>\d+)\s+(?P<type>C\+G|M\+C|C|G|M)\s+(?P<name>.*?)\s+(?P<mem>\d+|N/A)(?:MiB)?\s*\|"
)


def _parse_table(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    samples: list[dict[str, Any]] = []
    procs: list[dict[str, Any]] = []
    sample = -1
    t: float | None = None
    pending: dict[str, Any] | None = None
    in_procs = False
    for line in text.splitlines():
        clock = _CLOCK_LINE.search(line)
        if clock and "|" not in line:
            t = _when(clock.group())
            continue
        if _TABLE_HEAD.search(line):
            sample += 1
            in_procs = False
            continue
        if sample < 0:
            continue
        if "Processes:" in line:
            in_procs = True
            continue
        if in_procs:
            m = _PROC_ROW.search(line)
            if m:
                procs.append(
                    {"gpu": int(m["gpu"]), "pid": int(m["pid"]), "used_memory": _mib(m["mem"]) if m["mem"] != "N/A" else None,
                     "sample": sample}
                )
            continue
        m = _GPU_ROW.search(line)
        if m:
            pending = {
                "gpu": int(m["idx"]), "name": m["name"].strip(), "bus_id": m["bus"], "sample": sample, "t": t,
                "ecc_uncorrected": int(m["ecc"]) if m["ecc"].isdigit() else None,
            }
            continue
        m = _GPU_ROW2.search(line)
        if m and pending is not None:
            pending.update(
                temperature_c=_num(m["temp"]), power_w=_num(m["pw"]), mem_used=int(m["used"]) * MIB,
                mem_total=int(m["total"]) * MIB, sm_util=_num(m["util"]),
            )
            samples.append(pending)
            pending = None
    return samples, _last_sample_procs(procs)


def _last_sample_procs(procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """gpu_processes has no sample column: keep the newest snapshot's process list."""
    if not procs:
        return []
    last = max(p["sample"] for p in procs)
    return [{k: v for k, v in p.items() if k != "sample"} for p in procs if p["sample"] == last]


# --- nvidia-smi -q ---------------------------------------------------------------------------------
_KV = re.compile(r"^(?P<indent>\s*)(?P<key>[^:]+?)\s*:\s*(?P<value>.*?)\s*$")
_GPU_BLOCK = re.compile(r"^GPU\s+(?P<bus>[0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f])\s*$")


def _parse_q(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    samples: list[dict[str, Any]] = []
    procs: list[dict[str, Any]] = []
    sample = -1
    t: float | None = None
    index = 0
    gpu: dict[str, Any] | None = None
    path: list[tuple[int, str]] = []  # (indent, section name)
    proc: dict[str, Any] | None = None

    def close_gpu() -> None:
        nonlocal gpu, proc
        if proc is not None and gpu is not None:
            procs.append(proc)
        proc = None
        if gpu is not None:
            samples.append(gpu)
        gpu = None

    for raw in text.splitlines():
        if _Q_HEAD in raw:
            close_gpu()
            sample += 1
            index = 0
            continue
        if not raw.strip() or sample < 0:
            continue
        indent = len(raw) - len(raw.lstrip())
        stripped = raw.strip()
        m = _GPU_BLOCK.match(stripped)
        if m and indent == 0:
            close_gpu()
            gpu = {"gpu": index, "bus_id": m["bus"], "sample": sample, "t": t}
            index += 1
            path = []
            continue
        kv = _KV.match(raw)
        while path and path[-1][0] >= indent:
            path.pop()
        if not kv or not kv["value"] and ":" not in stripped:
            path.append((indent, stripped))
            continue
        key, value = kv["key"].strip(), kv["value"]
        if gpu is None:
            if key == "Timestamp":
                t = _when(value)
            continue
        section = " / ".join(name for _, name in path)
        leaf = path[-1][1] if path else ""
        if key == "Product Name":
            gpu["name"] = value
        elif key == "GPU UUID":
            gpu["uuid"] = value
        elif leaf == "FB Memory Usage" and key in ("Total", "Used"):
            gpu["mem_total" if key == "Total" else "mem_used"] = _mib(value)
        elif leaf == "Utilization" and key in ("Gpu", "Memory"):
            gpu["sm_util" if key == "Gpu" else "mem_bw_util"] = _num(value)
        elif leaf == "Temperature" and key == "GPU Current Temp":
            gpu["temperature_c"] = _num(value)
        elif "Power Readings" in section and key in ("Power Draw", "Instantaneous Power Draw") and gpu.get("power_w") is None:
            gpu["power_w"] = _num(value)
        elif leaf == "Clocks" and key == "SM":
            gpu["sm_clock_mhz"] = _num(value)
        elif "Processes" in section:
            if key == "GPU instance ID" or (key == "Process ID" and proc is not None and "pid" in proc):
                if proc is not None and "pid" in proc:
                    procs.append(proc)
                proc = {"gpu": gpu["gpu"], "uuid": gpu.get("uuid"), "sample": sample}
            if key == "Process ID":
                if proc is None:
                    proc = {"gpu": gpu["gpu"], "uuid": gpu.get("uuid"), "sample": sample}
                proc["pid"] = int(_num(value) or 0)
            elif key == "Used GPU Memory" and proc is not None:
                proc["used_memory"] = _mib(value)
    close_gpu()
    return samples, _last_sample_procs([p for p in procs if "pid" in p])


# --- CSV queries -----------------------------------------------------------------------------------
_GPU_CSV = {
    "index": "gpu", "uuid": "uuid", "gpu_uuid": "uuid", "name": "name", "gpu_name": "name", "pci.bus_id": "bus_id",
    "gpu_bus_id": "bus_id", "utilization.gpu": "sm_util", "utilization.memory": "mem_bw_util", "memory.used": "mem_used",
    "memory.total": "mem_total", "power.draw": "power_w", "power.draw.instant": "power_w", "clocks.sm": "sm_clock_mhz",
    "clocks.current.sm": "sm_clock_mhz", "temperature.gpu": "temperature_c", "timestamp": "t",
    "ecc.errors.uncorrected.volatile.total": "ecc_uncorrected", "pid": "pid", "used_gpu_memory": "used_memory",
    "used_memory": "used_memory",
}
_MEM_COLS = {"mem_used", "mem_total", "used_memory"}
_FLOAT_COLS = {"sm_util", "mem_bw_util", "power_w", "sm_clock_mhz", "temperature_c"}


def _csv_rows(text: str) -> list[dict[str, Any]]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    rows: list[dict[str, Any]] = []
    header: list[str] | None = None
    for rec in csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True):
        cells = [c.strip() for c in rec]
        keys = [re.sub(r"\s*\[.*\]$", "", c).lower() for c in cells]
        if any(k in _GPU_CSV for k in keys) and not any(_NUM.fullmatch(c.split(" ")[0] or "x") for c in cells[:1]):
            if header is None or keys == [re.sub(r"\s*\[.*\]$", "", h).lower() for h in header]:
                header = cells
                continue
        if header is None or len(cells) != len(header):
            continue
        row: dict[str, Any] = {}
        for h, value in zip(header, cells):
            col = _GPU_CSV.get(re.sub(r"\s*\[.*\]$", "", h).lower())
            if col is None or value in ("", "[N/A]", "N/A", "[Not Supported]"):
                continue
            unit = h[h.find("[") :] if "[" in h else ""
            if col in _MEM_COLS:
                row[col] = _mib(value + " " + unit) if not re.search(r"[A-Za-z]", value) else _mib(value)
            elif col in _FLOAT_COLS:
                row[col] = _num(value)
            elif col in ("gpu", "pid", "ecc_uncorrected"):
                n = _num(value)
                row[col] = int(n) if n is not None else None
            elif col == "t":
                row[col] = _when(value)
            else:
                row[col] = value
        rows.append(row)
    return rows


def _parse_query_gpu(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    samples: list[dict[str, Any]] = []
    seen: dict[Any, int] = {}
    for pos, row in enumerate(_csv_rows(text)):
        key = row.get("uuid") or row.get("bus_id") or row.get("gpu", pos)
        row["sample"] = seen.get(key, -1) + 1  # `-l N` repeats every GPU once per interval
        seen[key] = row["sample"]
        samples.append(row)
    return samples, []


def _parse_compute_apps(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    procs = []
    for row in _csv_rows(text):
        if row.get("pid") is None:
            continue
        procs.append({k: row.get(k) for k in ("pid", "used_memory", "uuid", "bus_id", "gpu") if row.get(k) is not None})
    return [], procs


# --- dmon ------------------------------------------------------------------------------------------
def _parse_dmon(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    samples: list[dict[str, Any]] = []
    cols: list[str] = []
    seen: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "#":
            if len(parts) > 1 and parts[1].lower() == "gpu":
                cols = [p.lower() for p in parts[1:]]
            continue
        if not cols or len(parts) != len(cols) or not parts[0].isdigit():
            continue
        rec = dict(zip(cols, parts))
        gpu = int(rec["gpu"])
        seen[gpu] = seen.get(gpu, -1) + 1
        samples.append(
            {"gpu": gpu, "sample": seen[gpu], "sm_util": _num(rec.get("sm")), "mem_bw_util": _num(rec.get("mem")),
             "power_w": _num(rec.get("pwr")), "temperature_c": _num(rec.get("gtemp")), "sm_clock_mhz": _num(rec.get("pclk"))}
        )
    return samples, []


_PARSERS = {"table": _parse_table, "q": _parse_q, "query-gpu": _parse_query_gpu, "compute-apps": _parse_compute_apps,
            "dmon": _parse_dmon}


def parse_text(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(gpu_samples rows, gpu_processes rows) of one nvidia-smi output; ([], []) when it is none."""
    kind = _kind(text[:_SNIFF])
    if kind is None:
        return [], []
    return _PARSERS[kind](text)


def read(files: list[Path]) -> Bundle:
    bundle = Bundle()
    all_samples: list[dict[str, Any]] = []
    all_procs: list[dict[str, Any]] = []
    base = 0
    for f in files:
        text = Path(f).read_text(encoding="utf-8", errors="replace")
        samples, procs = parse_text(text)
        if not samples and not procs:
            bundle.note(f"{f}: looked like nvidia-smi output but held no GPU rows")
            continue
        for s in samples:
            s["sample"] = s.get("sample", 0) + base
            s["source"] = "nvidia-smi"
        base = max([s["sample"] for s in samples], default=base - 1) + 1
        all_samples.extend(samples)
        all_procs.extend(procs)
    _resolve_gpus(all_samples, all_procs)
    if all_samples:
        bundle.add("gpu_samples", table_from_rows("gpu_samples", all_samples))
    if all_procs:
        rows = [{k: p.get(k) for k in ("gpu", "uuid", "pid", "used_memory")} for p in all_procs]
        bundle.add("gpu_processes", table_from_rows("gpu_processes", rows))
    bundle.manifest["inputs"] = [str(f) for f in files]
    return bundle


def _resolve_gpus(samples: list[dict[str, Any]], procs: list[dict[str, Any]]) -> None:
    """Fill each process row's GPU index/uuid from the samples (compute-apps CSV names GPUs by uuid or bus id)."""
    by_uuid = {s["uuid"]: s for s in samples if s.get("uuid")}
    by_bus = {str(s["bus_id"]).upper()[-12:]: s for s in samples if s.get("bus_id")}
    by_idx = {s["gpu"]: s for s in samples if s.get("gpu") is not None}
    for p in procs:
        s = by_uuid.get(p.get("uuid")) or by_bus.get(str(p.get("bus_id", "")).upper()[-12:]) or by_idx.get(p.get("gpu"))
        if s is not None:
            p.setdefault("gpu", s.get("gpu"))
            if p.get("gpu") is None:
                p["gpu"] = s.get("gpu")
            p["uuid"] = p.get("uuid") or s.get("uuid")
