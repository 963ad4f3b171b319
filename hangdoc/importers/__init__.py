"""Importers: turn artifacts people already have (dumps, traces, stack text) into bundle rows.

Each importer module exposes:
    NAME: str
    def matches(path: Path) -> bool         # cheap sniff of one file (name and first bytes)
    def read(files: list[Path]) -> Bundle   # all matching files of one input at once
A directory is read by handing each importer the files it claims, so an importer sees every rank's
file together (group membership is often only inferable across ranks).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Collection, Mapping

from hangdoc.bundle import Bundle
from hangdoc.errors import HangdocError, InputError

# Order matters: the first importer that matches a file claims it.
IMPORTER_MODULES: tuple[str, ...] = (
    "hangdoc.importers.hangdoc_trace",
    "hangdoc.importers.flight_recorder",
    "hangdoc.importers.jsonl",
    "hangdoc.importers.pyspy",
    "hangdoc.importers.vllm_watchdog",
    "hangdoc.importers.nvidia_smi",
    "hangdoc.importers.logfile",  # last: it claims any text file with an engine log prefix or a catalogued line
)


def importers() -> list[ModuleType]:
    return [importlib.import_module(name) for name in IMPORTER_MODULES]


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def load_path(path: str | Path, defer: Mapping[str, Collection[str]] | None = None) -> Bundle:
    """One input (a bundle dir, a dump/trace dir, or a single file) as a bundle; `defer`: see Bundle.open."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if Bundle.is_bundle(p):
        bundle = Bundle.open(p, defer=defer)
    elif p.is_dir() and any(Bundle.is_bundle(c) for c in p.iterdir()):
        # a directory of bundles, one per node (what `hangdoc capture --ray` writes): all of them, merged
        bundle = Bundle.merge([Bundle.open(c, defer=defer) for c in sorted(p.iterdir()) if Bundle.is_bundle(c)])
    else:
        claimed: dict[str, tuple[ModuleType, list[Path]]] = {}
        skipped: list[Path] = []
        mods = importers()
        for f in _files_of(p):
            for mod in mods:
                try:
                    ok = mod.matches(f)
                except OSError:
                    ok = False
                if ok:
                    claimed.setdefault(mod.NAME, (mod, []))[1].append(f)
                    break
            else:
                skipped.append(f)
        if not claimed:
            what = "directory" if p.is_dir() else "file"
            raise InputError(
                f"{p}: {what} holds nothing hangdoc reads (a bundle, Flight Recorder dumps, collective traces, "
                f"py-spy dumps, nvidia-smi output or engine logs with known hang lines)"
            )
        parts = []
        for mod, files in claimed.values():
            try:
                parts.append(mod.read(files))
            except HangdocError:
                raise
            except Exception as exc:  # an importer bug or unexpected layout: one line, not a traceback
                raise InputError(f"{p}: {mod.NAME} import failed: {type(exc).__name__}: {exc}") from None
        bundle = parts[0] if len(parts) == 1 else Bundle.merge(parts)
        for name, (_, files) in claimed.items():
            if name != "log":  # the log importer says per file what it read each one as
                bundle.note(f"{_count(files)} read as {name}: {_names(files)}")
        if skipped:
            bundle.note(f"{_count(skipped)} not read (no format hangdoc knows): {_names(skipped)}")
    bundle.manifest.setdefault("inputs", [])
    if str(p) not in bundle.manifest["inputs"]:
        bundle.manifest["inputs"].append(str(p))
    return bundle


def _count(files: list[Path]) -> str:
    return f"{len(files)} file{'s' if len(files) != 1 else ''}"


def _names(files: list[Path], limit: int = 4) -> str:
    shown = ", ".join(f.name for f in files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def load_inputs(paths: list[str | Path], defer: Mapping[str, Collection[str]] | None = None) -> Bundle:
    """All inputs merged into one bundle."""
    if not paths:
        raise InputError("no input given")
    bundles = [load_path(p, defer) for p in paths]
    return bundles[0] if len(bundles) == 1 else Bundle.merge(bundles)
