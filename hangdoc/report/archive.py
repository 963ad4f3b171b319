"""`hangdoc report`: one archive to attach to a bug report.

It holds each input as a bundle (bundles as they are, other artifacts converted), the Markdown, HTML and
JSON reports, a README and MANIFEST.json. Everything is redacted first (command lines, environments, log
lines, titles, notes and manifests: hangdoc.redact), and the reports are made from the redacted data, so
no report quotes a secret. Past the size cap the biggest tables are sampled down (a collective table keeps
each rank's last calls on each communicator, sampled tables their latest samples, others evenly spaced rows),
then dropped; the reports were made before that, from all rows. MANIFEST.json lists what was redacted,
sampled and dropped.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hangdoc import __version__, tempdirs
from hangdoc.analysis.model import Diagnosis
from hangdoc.bundle import Bundle
from hangdoc.errors import HangdocError, InputError
from hangdoc.redact import redact_bundle, redact_text

FORMAT = "hangdoc.report-archive/1"
DEFAULT_MAX_MB = 25.0  # GitHub's limit for a file attached to an issue
MIN_ROWS = 1000  # below this a table is dropped rather than sampled further
README = """\
hangdoc report archive

report.md     the diagnosis as a GitHub issue comment (paste it)
report.html   the same with pictures: open it in a browser (self-contained, loads nothing)
report.json   the diagnosis for scripts (schema hangdoc.report/1)
bundles/      what the diagnosis was made from, one bundle per input, redacted
MANIFEST.json what was redacted, sampled or dropped to fit the size cap

Re-run the analysis:   hangdoc analyze bundles/*
See inside a bundle:   hangdoc inspect bundles/NAME   (Parquet files: pandas, DuckDB, pyarrow)
"""


@dataclass
class ArchiveResult:
    path: Path
    diagnosis: Diagnosis
    manifest: dict[str, Any] = field(default_factory=dict)


# --- the size cap ------------------------------------------------------------------------------------------


def parquet_size(table: pa.Table) -> int:
    """Bytes the table takes as a bundle writes it."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.tell()


def sample_down(name: str, table: pa.Table, keep: int) -> tuple[pa.Table, str]:
    """About `keep` rows of a table, chosen so what is left still tells the end of the story."""
    n = table.num_rows
    if name == "collectives":
        import pandas as pd

        key = pd.DataFrame({
            "rank": table.column("rank").to_numpy(zero_copy_only=False),
            "group": pc.cast(table.column("group"), pa.string()).to_numpy(zero_copy_only=False),
            "seq": pc.fill_null(table.column("seq"), 0).to_numpy(zero_copy_only=False),
        })
        pairs = max(int(key.groupby(["rank", "group"], dropna=False).ngroups), 1)
        last = max(keep // pairs, 1)
        from_end = key.sort_values("seq", kind="stable").groupby(["rank", "group"], dropna=False).cumcount(
            ascending=False).sort_index().to_numpy()
        state = pc.cast(table.column("state"), pa.string())
        open_calls = pc.fill_null(pc.not_equal(state, "completed"), True).to_numpy(zero_copy_only=False)
        mask = (from_end < last) | open_calls
        return table.filter(pa.array(mask)), f"each rank's last {last} calls per communicator and every call not completed"
    if "sample" in table.column_names:
        samples = np.unique(pc.fill_null(table.column("sample"), 0).to_numpy(zero_copy_only=False))
        take = max(int(len(samples) * keep / n), 1)
        latest = samples[-take:]
        mask = pc.is_in(pc.fill_null(table.column("sample"), 0), pa.array(latest))
        return table.filter(mask), f"the latest {take} of {len(samples)} samples"
    step = max(int(np.ceil(n / max(keep, 1))), 2)
    return table.take(pa.array(np.arange(0, n, step))), f"every {step}th row"


def fit(bundles: dict[str, Bundle], budget: int) -> tuple[list[dict[str, Any]], int]:
    """Sample down (then drop) the biggest tables until the bundles fit in `budget` bytes. Returns what was
    done, one entry per table touched, and the bundles' size afterwards."""
    sizes = {(b, t): parquet_size(table) for b, bundle in bundles.items() for t, table in bundle.tables.items()}
    done: dict[tuple[str, str], dict[str, Any]] = {}
    while sum(sizes.values()) > budget and sizes:
        (b, t), size = max(sizes.items(), key=lambda kv: kv[1])
        table = bundles[b].tables[t]
        entry = done.setdefault((b, t), {"bundle": b, "table": t, "rows": table.num_rows, "kept": table.num_rows,
                                         "how": None})
        excess = sum(sizes.values()) - budget
        keep = int(table.num_rows * min(0.5, max(0.0, (size - excess) / size) * 0.9))
        if keep < MIN_ROWS:
            bundles[b].tables.pop(t)
            del sizes[(b, t)]
            entry.update(kept=0, how="dropped: too large even sampled down")
            continue
        smaller, how = sample_down(t, table, keep)
        if smaller.num_rows >= table.num_rows:  # nothing more to take out this way
            bundles[b].tables.pop(t)
            del sizes[(b, t)]
            entry.update(kept=0, how="dropped: too large even sampled down")
            continue
        bundles[b].tables[t] = smaller
        sizes[(b, t)] = parquet_size(smaller)
        entry.update(kept=smaller.num_rows, how=how)
    return list(done.values()), sum(sizes.values())


# --- the archive -------------------------------------------------------------------------------------------


def _names(inputs: Sequence[Path]) -> list[str]:
    out: list[str] = []
    for p in inputs:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(p).name.removesuffix(".bundle")) or "input"
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """No user or group names of the machine that made the archive; readable modes."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def build_archive(inputs: Sequence[Path], output: Path, max_mb: float = DEFAULT_MAX_MB) -> ArchiveResult:
    """Load, redact, diagnose, render, fit under the cap, and write one .tar.gz (atomically)."""
    from hangdoc.analysis.pipeline import diagnose
    from hangdoc.importers import load_path
    from hangdoc.report import render_text

    if not inputs:
        raise InputError("no input given")
    output = Path(output)
    if output.exists():
        raise HangdocError(f"{output}: already exists; choose a new --output")
    if max_mb <= 0:
        raise InputError("--max-size must be positive")
    names = _names(inputs)
    bundles = {name: load_path(p) for name, p in zip(names, inputs)}
    redacted: list[dict[str, Any]] = []
    for name, b in bundles.items():
        for where, n in sorted(redact_bundle(b).items()):
            redacted.append({"bundle": name, "where": where, "values": n})
    merged = next(iter(bundles.values())) if len(bundles) == 1 else Bundle.merge(list(bundles.values()))
    diagnosis = diagnose(merged)
    reports = {f"report.{ext}": render_text(diagnosis, fmt).encode("utf-8")
               for ext, fmt in (("md", "markdown"), ("html", "html"), ("json", "json"))}
    cap = int(max_mb * 2**20)
    room = cap - sum(len(r) for r in reports.values()) - len(README) - 64 * 1024  # manifest and tar headers
    dropped, size = fit(bundles, max(room, 0))
    top = output.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar") or "hang-report"
    manifest = {
        "format": FORMAT,
        "hangdoc_version": __version__,
        "created": time.time(),
        "inputs": [redact_text(str(p)) for p in inputs],
        "verdict": {"kind": diagnosis.verdict.kind, "culprit_ranks": list(diagnosis.verdict.culprit_ranks),
                    "group": diagnosis.verdict.group, "summary": diagnosis.verdict.summary},
        "bundles": {name: {"tables": {t: b.rows(t) for t in sorted(b.tables)}} for name, b in bundles.items()},
        "redacted": redacted,
        "dropped": dropped,
        "max_bytes": cap,
        "notes": ["the reports were made from every (redacted) row, before any table was sampled down"]
        + ([f"over the size cap even with no tables left: {sum(len(r) for r in reports.values()):,} bytes of reports"]
           if room < 0 else []),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    work = tempdirs.make(output.parent, output.name)  # also removes those a killed writer left here
    try:
        for name, b in bundles.items():
            b.write(work / name)
        tmp = work / "archive.tar.gz"
        mtime = manifest["created"]
        with tarfile.open(tmp, "w:gz") as tar:
            _add_bytes(tar, f"{top}/README.txt", README.encode(), mtime)
            _add_bytes(tar, f"{top}/MANIFEST.json", json.dumps(manifest, indent=2, default=str).encode(), mtime)
            for fname, data in reports.items():
                _add_bytes(tar, f"{top}/{fname}", data, mtime)
            for name in bundles:
                tar.add(work / name, arcname=f"{top}/bundles/{name}", filter=_anonymous)
        os.replace(tmp, output)
    except OSError as exc:
        raise HangdocError(f"{output}: cannot write the archive: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest["bytes"] = output.stat().st_size
    return ArchiveResult(output, diagnosis, manifest)
