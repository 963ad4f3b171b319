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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hangdoc import __version__, tempdirs
from hangdoc.errors import BundleError, OutputError
from hangdoc.safeio import member_problem, open_regular
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


def take_rows(col: pa.ChunkedArray, idx: np.ndarray | Sequence[int]) -> pa.Array:
    """col[idx] chunk by chunk: ChunkedArray.take concatenates the chunks first, which costs the whole
    column (seconds for a big list column) to fetch a handful of rows."""
    idx = np.asarray(idx, dtype=np.int64)
    if col.num_chunks == 1:
        return col.chunk(0).take(pa.array(idx))
    if col.num_chunks == 0 or idx.size == 0:
        return pa.array([], type=col.type)
    bounds = np.cumsum([0] + [len(c) for c in col.chunks])
    which = np.searchsorted(bounds, idx, side="right") - 1
    order = np.argsort(which, kind="stable")
    parts = []
    for k in np.unique(which).tolist():
        sel = order[which[order] == k]
        parts.append(col.chunk(k).take(pa.array(idx[sel] - bounds[k])))
    got = pa.concat_arrays(parts)
    inverse = np.empty(idx.size, np.int64)
    inverse[order] = np.arange(idx.size)
    return got.take(pa.array(inverse))


MANIFEST_MAX_BYTES = 64 << 20
MANIFEST_MAX_DEPTH = 32
_STR, _NUM, _INT = (str,), (int, float), (int,)
# Fields a reader relies on, with the type each must have when present (a bundle is an input like any other).
_MANIFEST_FIELDS: dict[str, tuple[tuple[type, ...], tuple[type, ...] | None]] = {
    "hangdoc_version": (_STR, None),
    "host": (_STR, None),
    "created": (_NUM, None),
    "command": ((list,), _STR),
    "inputs": ((list,), _STR),
    "notes": ((list,), _STR),
    "collectors": ((dict,), (dict,)),
    "tables": ((dict,), _INT),
    "capture": ((dict,), None),
    "parts": ((list,), (dict,)),
}
_COLLECTOR_FIELDS = {"ran": (bool,), "seconds": _NUM, "error": _STR, "notes": (list,)}


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in a JSON value (iteratively: a hostile file must not recurse)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            if d <= MANIFEST_MAX_DEPTH:
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def manifest_problem(m: Any, where: str = "") -> str | None:
    """What is wrong with a manifest's shape (None when a reader may rely on its fields)."""
    if not isinstance(m, dict):
        return f"{where or 'the manifest'} is {_kind(m)}, not an object"
    for key, (types, items) in _MANIFEST_FIELDS.items():
        v = m.get(key)
        if v is None:
            continue
        if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
            return f"{where}{key} is {_kind(v)}"
        for x in (v.values() if isinstance(v, dict) else v) if items else ():
            if not isinstance(x, items) or isinstance(x, bool) and bool not in items:
                return f"{where}{key} holds {_kind(x)}"
    for name, c in (m.get("collectors") or {}).items():
        for key, types in _COLLECTOR_FIELDS.items():
            if c.get(key) is not None and not isinstance(c[key], types):
                return f"{where}collectors.{name}.{key} is {_kind(c[key])}"
    for i, part in enumerate(m.get("parts") or []):
        problem = manifest_problem(part, f"{where}parts[{i}].")
        if problem:
            return problem
    return None


def _read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a bundle directory, checked: any failure is one 'not a hangdoc bundle' line."""
    file = root / MANIFEST_NAME
    bad = f"{root}: not a hangdoc bundle: {MANIFEST_NAME}"
    problem = member_problem(root, file) if os.path.lexists(file) else None
    if problem is not None:
        raise BundleError(f"{bad} {problem.removeprefix('skipped, ')}")
    try:
        with open_regular(file) as f:
            data = f.read(MANIFEST_MAX_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"{root}: not a hangdoc bundle (no {MANIFEST_NAME})") from None
    except OSError as exc:
        raise BundleError(f"{bad} unreadable: {exc.strerror or exc}") from None
    if len(data) > MANIFEST_MAX_BYTES:
        raise BundleError(f"{bad} is larger than {MANIFEST_MAX_BYTES >> 20} MB")
    try:
        manifest = json.loads(data)
    except RecursionError:
        raise BundleError(f"{bad} nests deeper than {MANIFEST_MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise BundleError(f"{bad} is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{bad} has no \"format\": \"{BUNDLE_FORMAT}\"")
    version = manifest.get("bundle_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{bad} bundle_version is {version!r}, not a version number")
    if version > BUNDLE_VERSION:
        raise BundleError(
            f"{root}: bundle version {version!r} is newer than this hangdoc reads ({BUNDLE_VERSION}); upgrade hangdoc"
        )
    if _depth(manifest) > MANIFEST_MAX_DEPTH:
        raise BundleError(f"{bad} nests deeper than {MANIFEST_MAX_DEPTH} levels")
    problem = manifest_problem(manifest)
    if problem is not None:
        raise BundleError(f"{bad} field {problem}")
    manifest.setdefault("notes", [])
    return manifest


@dataclass(frozen=True)
class _Deferred:
    """Columns of a table left in its Parquet file until asked for (see Bundle.open's `defer`)."""

    file: Path
    columns: tuple[str, ...]
    starts: np.ndarray  # first row of each row group, then the row count

    def reader(self, name: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.file, read_dictionary=dictionary_columns(name))

    def read(self, name: str, columns: Sequence[str]) -> pa.Table:
        return self.reader(name).read(columns=list(columns))


@dataclass
class Bundle:
    """Tables by name plus the manifest. Tables always conform to schema.TABLES.

    A bundle opened with `defer` holds some columns of some tables as nulls until they are needed: `take`
    reads their values for a few rows; add, merge and write read them in full first."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=_new_manifest)
    deferred: dict[str, _Deferred] = field(default_factory=dict, repr=False)
    # The row group `take` read last, when small: a reader going through a table in windows that do not
    # line up with its row groups would otherwise read each one twice.
    _last_group: tuple[tuple, pa.Table] | None = field(default=None, repr=False, compare=False)

    # --- reading -------------------------------------------------------------------------------
    @staticmethod
    def is_bundle(path: str | os.PathLike[str]) -> bool:
        return (Path(path) / MANIFEST_NAME).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike[str], defer: Mapping[str, Collection[str]] | None = None) -> "Bundle":
        """Read a bundle. `defer` names columns per table to leave on disk (a reader that needs them for a
        few rows only, such as the analysis with shapes of 30M calls, then uses `take`)."""
        root = Path(path)
        manifest = _read_manifest(root)
        tables: dict[str, pa.Table] = {}
        deferred: dict[str, _Deferred] = {}
        for name in TABLES:
            file = root / f"{name}.parquet"
            if not os.path.lexists(file):
                continue
            problem = member_problem(root, file)
            if problem is not None:  # a FIFO would block the reader; a symlink out would pull a stranger in
                manifest["notes"].append(f"{file}: {problem}; table {name} left out")
                continue
            try:
                # Dictionary columns straight from Parquet's dictionary pages (bundles written before these
                # columns were dictionary-encoded too), never as one string per row; columns that hold
                # nothing are not read (conform makes them nulls that take no memory).
                # (ParquetFile, not read_table: that one imports pyarrow.dataset and pandas, half a second)
                with pq.ParquetFile(file, read_dictionary=dictionary_columns(name)) as pf:
                    meta = pf.metadata
                    names = [c for c in meta.schema.to_arrow_schema().names if c not in _null_columns(meta)]
                    later = tuple(c for c in names if c in (defer or {}).get(name, ()))
                    names = [c for c in names if c not in later]
                    table = pf.read(columns=names)
                tables[name] = conform(name, table)
                if later:
                    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
                    deferred[name] = _Deferred(file, later, np.cumsum([0] + sizes))
            except (OSError, pa.ArrowException, KeyError) as exc:
                raise BundleError(f"{file}: unreadable table: {exc}") from None
        return cls(tables=tables, manifest=manifest, deferred=deferred)

    def take(self, name: str, columns: Sequence[str], rows: np.ndarray | Sequence[int]) -> dict[str, pa.Array]:
        """Some rows of some columns of a table, deferred ones read from the bundle's file (only the row
        groups those rows are in)."""
        rows = np.asarray(rows, dtype=np.int64)
        table = self.table(name)
        d = self.deferred.get(name)
        later = [c for c in columns if d is not None and c in d.columns]
        out = {c: take_rows(table.column(c), rows) for c in columns if c not in later}
        if later and d is not None and not rows.size:
            out.update({c: pa.array([], TABLES[name].field(c).type) for c in later})
        elif later and d is not None:
            group = np.searchsorted(d.starts, rows, side="right") - 1
            order = np.argsort(group, kind="stable")
            groups = np.unique(group).tolist()
            parts: dict[str, list[pa.Array]] = {c: [] for c in later}
            try:
                pf = d.reader(name)
            except (OSError, pa.ArrowException) as exc:
                raise BundleError(f"{d.file}: unreadable table: {exc}") from None
            for g in groups:  # one row group at a time: bounded memory (a million rows of shapes is 80 MB)
                key = (name, g, tuple(later))
                if self._last_group is not None and self._last_group[0] == key:
                    part = self._last_group[1]
                else:
                    try:
                        part = pf.read_row_group(g, columns=later)
                    except (OSError, pa.ArrowException) as exc:
                        raise BundleError(f"{d.file}: unreadable table: {exc}") from None
                    self._last_group = (key, part) if part.nbytes <= 32 << 20 else None
                sel = order[group[order] == g]
                local = rows[sel] - d.starts[g]
                run = bool(local[-1] - local[0] + 1 == local.size and (np.diff(local) == 1).all())
                for c in later:
                    typ = TABLES[name].field(c).type
                    if run:  # a window of rows: a slice, not a gather
                        got = part.column(c).slice(int(local[0]), local.size).combine_chunks()
                    else:  # the few rows first: a cast copies what it is given
                        got = take_rows(part.column(c), local)
                    parts[c].append(got if got.type == typ else got.cast(typ))
                del part
            ordered = bool((np.diff(rows) >= 0).all())
            inverse = None if ordered else np.empty(rows.size, np.int64)
            if inverse is not None:
                inverse[order] = np.arange(rows.size)
            for c in later:
                got = pa.concat_arrays(parts[c])
                out[c] = got if inverse is None else got.take(pa.array(inverse))
        return out

    def scan(self, name: str, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """A table's rows, some columns, in batches of a row group (about a million rows): deferred columns
        are read one row group at a time, the next one on a second thread while the caller works on this one,
        so a table larger than memory can be swept."""
        table = self.table(name)
        d = self.deferred.get(name)
        later = [c for c in columns if d is not None and c in d.columns]
        if d is None or not later:
            yield from (b for b in table.select(list(columns)).to_batches(max_chunksize=1 << 20) if b.num_rows)
            return
        schema = TABLES[name]
        try:
            pf = d.reader(name)
        except (OSError, pa.ArrowException) as exc:
            raise BundleError(f"{d.file}: unreadable table: {exc}") from None
        with ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(pf.read_row_group, 0, columns=later) if len(d.starts) > 1 else None
            for g in range(len(d.starts) - 1):
                try:
                    part = ahead.result()
                except (OSError, pa.ArrowException) as exc:
                    raise BundleError(f"{d.file}: unreadable table: {exc}") from None
                ahead = pool.submit(pf.read_row_group, g + 1, columns=later) if g + 2 < len(d.starts) else None
                a, z = int(d.starts[g]), int(d.starts[g + 1])
                arrays = []
                for c in columns:
                    col = part.column(c) if c in later else table.column(c).slice(a, z - a)
                    col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
                    typ = schema.field(c).type
                    arrays.append(col if col.type == typ else col.cast(typ))
                del part
                if z > a:
                    yield pa.RecordBatch.from_arrays(arrays, names=list(columns))

    def _load_deferred(self, name: str | None = None) -> None:
        """Read deferred columns in full (before rows are added, bundles merged or written)."""
        self._last_group = None
        for n in [name] if name is not None else list(self.deferred):
            d = self.deferred.pop(n, None)
            if d is None:
                continue
            try:
                full = conform(n, d.read(n, d.columns))
            except (OSError, pa.ArrowException) as exc:
                raise BundleError(f"{d.file}: unreadable table: {exc}") from None
            t = self.tables[n]
            for c in d.columns:
                t = t.set_column(t.column_names.index(c), c, full.column(c))
            self.tables[n] = t

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
        self._load_deferred(name)
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
        """One bundle holding every input bundle's rows, rows several of them hold counted once (see
        hangdoc.duplicates); manifests are kept under 'parts'."""
        from hangdoc.duplicates import drop_duplicates

        merged = cls()
        merged.manifest["parts"] = [b.manifest for b in bundles]
        for b in bundles:
            b._load_deferred()
        own_tables, notes = drop_duplicates(bundles)
        for b, own in zip(bundles, own_tables):
            merged.manifest["inputs"].extend(b.manifest.get("inputs", []))
            if own is None:  # the same capture as an earlier input
                continue
            merged.notes.extend(b.notes)
            for name, table in own.items():
                merged.add(name, table)
        merged.notes.extend(notes)
        return merged

    # --- writing -------------------------------------------------------------------------------
    def write(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write atomically: everything goes to a temp dir beside `path`, which is then renamed."""
        self._load_deferred()
        target = Path(path)
        if target.exists() and not overwrite:
            if not (target.is_dir() and not any(target.iterdir())):
                raise OutputError(f"{target}: already exists; choose a new --output")
        parent = target.parent if str(target.parent) else Path(".")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = tempdirs.make(parent, target.name)  # also removes those a killed writer left here
        except OSError as exc:
            raise OutputError(f"{target}: cannot write bundle: {exc.strerror or exc}") from None
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
                raise OutputError(f"{target}: cannot write bundle: {exc.strerror or exc}") from None
            raise
        self.manifest = manifest
        return target
