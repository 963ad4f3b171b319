"""`hangdoc inspect`: what a bundle holds, for people who open its Parquet files themselves.

Of the tables it reads only the host and rank columns, so it answers at once on a bundle of millions of calls.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hangdoc.bundle import Bundle
from hangdoc.report.condense import rank_ranges
from hangdoc.schema import MANIFEST_NAME, TABLES

MAX_NOTES = 30
RANK_COLUMNS = {"processes": "global_rank", "collectives": "rank", "log_events": "rank"}


def _when(t: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(t)).astimezone().isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def human_size(n: float) -> str:
    """1234 -> '1.2 KB': bytes in the unit a person reads (a small archive is not '0.0 MB')."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _distinct(table: pa.Table, column: str) -> set[Any]:
    col = table.column(column)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return {v for v in pc.unique(col).to_pylist() if v is not None}


def describe(path: str | os.PathLike[str]) -> str:
    """A plain-text description of one bundle."""
    root = Path(path)
    wanted = {name: {"host", RANK_COLUMNS.get(name)} for name in TABLES}
    bundle = Bundle.open(root, defer={name: tuple(c for c in TABLES[name].names if c not in wanted[name])
                                      for name in TABLES})
    manifest = bundle.manifest
    lines = [f"bundle {root}"]
    lines.append(f"  made by hangdoc {manifest.get('hangdoc_version', '?')} (bundle version "
                 f"{manifest.get('bundle_version', '?')}) on {manifest.get('host', '?')} at {_when(manifest.get('created'))}")
    if manifest.get("command"):
        lines.append(f"  command: {' '.join(str(a) for a in manifest['command'])}")
    for p in manifest.get("parts") or []:
        lines.append(f"  part: host {p.get('host', '?')}, {_when(p.get('created'))}, inputs "
                     f"{', '.join(str(i) for i in p.get('inputs') or []) or '-'}")
    if manifest.get("inputs"):
        lines.append(f"  inputs: {', '.join(str(i) for i in manifest['inputs'])}")

    hosts: set[str] = set()
    ranks: dict[str, set[int]] = {}
    lines.append("tables")
    for name, table in bundle.tables.items():
        hosts |= {str(h) for h in _distinct(table, "host")}
        if name in RANK_COLUMNS:
            ranks[name] = {int(r) for r in _distinct(table, RANK_COLUMNS[name])}
        file = root / f"{name}.parquet"
        size = human_size(file.stat().st_size) if file.exists() else "-"
        lines.append(f"  {name:<15} {table.num_rows:>12,} rows  {len(TABLES[name]):>3} columns  {size:>9}  {file.name}")
    if not bundle.tables:
        lines.append("  (none)")
    lines.append(f"hosts ({len(hosts)}): {', '.join(sorted(hosts)) or 'not recorded'}")
    every = set().union(*ranks.values()) if ranks else set()
    lines.append(f"ranks ({len(every)}): {rank_ranges(every) if every else 'none recorded'}")
    for name, rs in ranks.items():
        if rs and rs != every:
            lines.append(f"  in {name}: {rank_ranges(rs)}")

    collectors = manifest.get("collectors") or {}
    if collectors:
        lines.append("collectors")
        for name, c in collectors.items():
            state = "ran" if c.get("ran") else "failed" if c.get("error") else "skipped"
            lines.append(f"  {name:<11} {state:<8} {float(c.get('seconds') or 0):7.2f} s"
                         + (f"  error: {c['error']}" if c.get("error") else ""))
            for note in c.get("notes") or []:
                lines.append(f"    - {note}")
    notes = manifest.get("notes") or []
    if notes:
        lines.append(f"notes ({len(notes)})")
        lines += [f"  - {n}" for n in notes[:MAX_NOTES]]
        if len(notes) > MAX_NOTES:
            lines.append(f"  ... {len(notes) - MAX_NOTES} more in {MANIFEST_NAME}")
    first = next(iter(bundle.tables), "collectives")
    lines.append(f"open a table with pandas (pd.read_parquet('{root / (first + '.parquet')}')) or DuckDB "
                 f"(SELECT * FROM '{root / (first + '.parquet')}'); see docs/reports.md")
    return "\n".join(lines) + "\n"
