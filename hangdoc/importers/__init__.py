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
import stat
from pathlib import Path
from types import ModuleType
from typing import Collection, Mapping

from hangdoc.bundle import Bundle
from hangdoc.errors import HangdocError, InputError
from hangdoc.safeio import files_in, kind, leaves

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


def _files_of(path: Path) -> tuple[list[Path], list[str]]:
    """A named file as given; a directory's regular files, with notes on what was skipped (see safeio)."""
    if not path.is_dir():
        return [path], []
    return files_in(path, hidden=False)


def _check_named(p: Path) -> None:
    """An input named on the command line: it exists and is a directory or a regular file (after symlinks)."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{p}: no such file or directory") from None
    except OSError as exc:
        raise InputError(f"{p}: unreadable: {exc.strerror or exc}") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise InputError(f"{p}: not a regular file or directory ({kind(mode)})")


def load_path(path: str | Path, defer: Mapping[str, Collection[str]] | None = None) -> Bundle:
    """One input (a bundle dir, a dump/trace dir, or a single file) as a bundle; `defer`: see Bundle.open."""
    p = Path(path)
    _check_named(p)
    if Bundle.is_bundle(p):
        bundle = Bundle.open(p, defer=defer)
    elif p.is_dir() and any(Bundle.is_bundle(c) for c in p.iterdir()):
        # a directory of bundles, one per node (what `hangdoc capture --ray` writes): all of them, merged
        parts, skipped = [], []
        for c in sorted(p.iterdir()):
            target = leaves(p, c)
            if target is not None:
                skipped.append(f"{c}: skipped, a symlink to {target}, outside {p}")
            elif Bundle.is_bundle(c):
                parts.append(Bundle.open(c, defer=defer))
        bundle = Bundle.merge(parts)
        for note in skipped:
            bundle.note(note)
    else:
        files, skipped = _files_of(p)
        bundle = _read_files(files, skipped, str(p), "directory" if p.is_dir() else "file")
    return _with_input(bundle, p)


def _with_input(bundle: Bundle, p: Path) -> Bundle:
    bundle.manifest.setdefault("inputs", [])
    if str(p) not in bundle.manifest["inputs"]:
        bundle.manifest["inputs"].append(str(p))
    return bundle


def _read_files(files: list[Path], skipped: list[str], name: str, what: str) -> Bundle:
    """Files read together, each importer handed all the files it claims (`name` and `what` say in errors
    which input: "logs/" and "directory", or "a.log, b.log" and "files")."""
    claimed: dict[str, tuple[ModuleType, list[Path]]] = {}
    unknown: list[Path] = []
    mods = importers()
    for f in files:
        for mod in mods:
            try:
                ok = mod.matches(f)
            except OSError:
                ok = False
            except Exception as exc:  # a hostile file (JSON nested 100,000 deep) must not end the run
                skipped.append(f"{f}: skipped, {mod.NAME} could not sniff it ({type(exc).__name__})")
                ok = False
            if ok:
                claimed.setdefault(mod.NAME, (mod, []))[1].append(f)
                break
        else:
            unknown.append(f)
    if not claimed:
        raise InputError(
            f"{name}: {what} {'hold' if what == 'files' else 'holds'} nothing hangdoc reads (a bundle, Flight "
            f"Recorder dumps, collective traces, py-spy dumps, nvidia-smi output or engine logs with known hang lines)"
            + (f"; {_count(unknown)} of no known format, first: {unknown[0]}" if unknown else "")
            + (f"; {len(skipped)} skipped, first: {skipped[0]}" if skipped else "")
        )
    parts = []
    for mod, claimed_files in claimed.values():
        try:
            parts.append(mod.read(claimed_files))
        except HangdocError:
            raise
        except Exception as exc:  # an importer bug or unexpected layout: one line, not a traceback
            raise InputError(f"{name}: {mod.NAME} import failed: {type(exc).__name__}: {exc}") from None
    bundle = parts[0] if len(parts) == 1 else Bundle.merge(parts)
    for name, (_, claimed_files) in claimed.items():
        if name != "log":  # the log importer says per file what it read each one as
            bundle.note(f"{_count(claimed_files)} read as {name}: {_names(claimed_files)}")
    if unknown:
        bundle.note(f"{_count(unknown)} not read (no format hangdoc knows): {_names(unknown)}")
    for note in skipped:
        bundle.note(note)
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
    # Plain files named together are read together, as a directory's files are: one rank's watchdog line can
    # name the process group another rank's line leaves out, and an importer sees every rank's file at once.
    named = [Path(p) for p in paths]
    for p in named:
        _check_named(p)
    plain = [p for p in named if not p.is_dir()]
    bundles = [load_path(p, defer) for p in named if p.is_dir()]
    if len(plain) == 1:
        bundles.append(load_path(plain[0], defer))
    elif plain:
        bundle = _read_files(plain, [], ", ".join(str(p) for p in plain[:3]) + (" ..." if len(plain) > 3 else ""),
                             "files")
        for p in plain:
            _with_input(bundle, p)
        bundles.append(bundle)
    return bundles[0] if len(bundles) == 1 else Bundle.merge(bundles)
