"""The bundle: a directory of Parquet tables plus manifest.json. The only code that touches its paths.

Writes are atomic (temp directory beside the target, then rename), so an interrupted capture never
leaves a half bundle behind.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hangdoc import __version__
from hangdoc.errors import BundleError
from hangdoc.schema import BUNDLE_VERSION, MANIFEST_NAME, TABLES, conform, dictionary_columns, empty

BUNDLE_FORMAT = "hangdoc.bundle"


def _new_manifest() -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "bundle_version": BUNDLE_VERSION,
        "hangdoc_version": __version__,
        "host": socket.gethostname(),
        "created": time.time(),
        "command": list(sys.argv),
        "collectors": {},
        "inputs": [],
        "notes": [],
    }


def _null_columns(meta: pq.FileMetaData) -> set[str]:
    """Top-level columns whose statistics say every row is null (a 30M-row all-null int64 column still
    reads as 240 MB of zeros)."""
    if meta.num_row_groups == 0 or meta.num_rows == 0:
        return set()
    out = set()
    for j in range(meta.num_columns):
        path = meta.schema.column(j).path
        if "." in path:
            continue  # a nested leaf: its null count is not the column's
        for i in range(meta.num_row_groups):
            col = meta.row_group(i).column(j)
            stats = col.statistics if col.is_stats_set else None
            if stats is None or not stats.has_null_count or stats.null_count != meta.row_group(i).num_rows:
                break
        else:
            out.add(path)
    return out


@dataclass
class Bundle:
    """Tables by name plus the manifest. Tables always conform to schema.TABLES."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=_new_manifest)

    # --- reading -------------------------------------------------------------------------------
    @staticmethod
    def is_bundle(path: str | os.PathLike[str]) -> bool:
        return (Path(path) / MANIFEST_NAME).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "Bundle":
        root = Path(path)
        try:
            manifest = json.loads((root / MANIFEST_NAME).read_text())
        except FileNotFoundError:
            raise BundleError(f"{root}: not a hangdoc bundle (no {MANIFEST_NAME})") from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"{root}: unreadable {MANIFEST_NAME}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{root}: {MANIFEST_NAME} is not a hangdoc bundle manifest")
        version = manifest.get("bundle_version")
        if not isinstance(version, int) or version > BUNDLE_VERSION:
            raise BundleError(
                f"{root}: bundle version {version!r} is newer than this hangdoc reads ({BUNDLE_VERSION}); upgrade hangdoc"
            )
        tables: dict[str, pa.Table] = {}
        for name in TABLES:
            file = root / f"{name}.parquet"
            if not file.exists():
                continue
            try:
                # Dictionary columns straight from Parquet's dictionary pages (bundles written before these
                # columns were dictionary-encoded too), never as one string per row; columns that hold
                # nothing are not read (conform makes them nulls that take no memory).
                meta = pq.read_metadata(file)
                names = [c for c in meta.schema.to_arrow_schema().names if c not in _null_columns(meta)]
                table = pq.read_table(file, columns=names, read_dictionary=dictionary_columns(name))
                tables[name] = conform(name, table)
            except (OSError, pa.ArrowException, KeyError) as exc:
                raise BundleError(f"{file}: unreadable table: {exc}") from None
        return cls(tables=tables, manifest=manifest)

    def table(self, name: str) -> pa.Table:
        """The named table, empty (with its schema) when the bundle has none."""
        if name not in TABLES:
            raise KeyError(name)
        return self.tables.get(name, empty(name))

    def rows(self, name: str) -> int:
        return self.tables[name].num_rows if name in self.tables else 0

    @property
    def notes(self) -> list[str]:
        return self.manifest.setdefault("notes", [])

    # --- building ------------------------------------------------------------------------------
    def add(self, name: str, table: pa.Table) -> None:
        """Append rows to a table (conformed to its schema)."""
        table = conform(name, table)
        if name in self.tables and self.tables[name].num_rows:
            self.tables[name] = pa.concat_tables([self.tables[name], table])
        else:
            self.tables[name] = table

    def note(self, text: str) -> None:
        """A note for the user: a file skipped, a rank missing, something unusual in the input."""
        self.notes.append(text)

    def record_collector(
        self, name: str, *, ran: bool, seconds: float, error: str | None = None, notes: list[str] | None = None
    ) -> None:
        """Record whether a collector ran, how long it took and why it failed."""
        self.manifest.setdefault("collectors", {})[name] = {
            "ran": ran,
            "seconds": round(seconds, 4),
            "error": error,
            "notes": list(notes or []),
        }

    @classmethod
    def merge(cls, bundles: list["Bundle"]) -> "Bundle":
        """One bundle holding every input bundle's rows; manifests are kept under 'parts'."""
        merged = cls()
        merged.manifest["parts"] = [b.manifest for b in bundles]
        for b in bundles:
            merged.manifest["inputs"].extend(b.manifest.get("inputs", []))
            merged.notes.extend(b.notes)
            for name, table in b.tables.items():
                merged.add(name, table)
        return merged

    # --- writing -------------------------------------------------------------------------------
    def write(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write atomically: everything goes to a temp dir beside `path`, which is then renamed."""
        target = Path(path)
        if target.exists() and not overwrite:
            if not (target.is_dir() and not any(target.iterdir())):
                raise BundleError(f"{target}: already exists; choose a new --output")
        parent = target.parent if str(target.parent) else Path(".")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
        except OSError as exc:
            raise BundleError(f"{target}: cannot write bundle: {exc.strerror or exc}") from None
        try:
            manifest = dict(self.manifest)
            manifest["tables"] = {}
            for name in TABLES:
                if name in self.tables:
                    pq.write_table(self.tables[name], tmp / f"{name}.parquet", compression="zstd")
                    manifest["tables"][name] = self.tables[name].num_rows
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise BundleError(f"{target}: cannot write bundle: {exc.strerror or exc}") from None
            raise
        self.manifest = manifest
        return target
