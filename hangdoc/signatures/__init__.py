"""Known log lines, kept as data (catalogue.json) so the catalogue grows without code changes.

Each entry: id (stable name), regex (Python syntax; use scoped flags such as `(?i:...)`), severity
(info / warning / error / critical), event (what the line says about the rank it is about: one of
schema.EVENTS; a line never blames its printer by itself), kind (the finding kind a process-level pass files
it under: rank_exited, orphaned_process, oom, kv_transfer_stranded, log_signature) and meaning (one sentence
for the report). Optional: action (what to do next, for the report and docs) and phase ("startup" for lines
that only appear when a job fails to come up). Named groups in a regex (request, seconds, worker,
worker_rank ...) are the fields analysis passes read from a matched line; `worker` / `worker_rank` make the
line about that rank rather than its printer. Lines that give a collective's position (c10d watchdog, desync
reports, NCCL RAS ...) are read by hangdoc.importers.logfacts into collectives rows as well.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from hangdoc.errors import InputError
from hangdoc.schema import EVENTS

CATALOGUE = Path(__file__).with_name("catalogue.json")
SEVERITIES = ("info", "warning", "error", "critical")


@dataclass(frozen=True)
class Signature:
    id: str
    regex: re.Pattern[str]
    severity: str
    event: str
    kind: str
    meaning: str
    action: str = ""
    phase: str | None = None

    def search(self, text: str) -> re.Match[str] | None:
        return self.regex.search(text)


def parse_catalogue(data: object, origin: str = "catalogue") -> tuple[Signature, ...]:
    """Validate and compile a catalogue document; a bad entry is an InputError naming it."""
    entries = data.get("signatures") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InputError(f"{origin}: expected an object with a 'signatures' list")
    out: list[Signature] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{origin}: signature #{i}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: not an object")
        missing = [k for k in ("id", "regex", "severity", "event", "kind", "meaning") if not isinstance(entry.get(k), str)]
        if missing:
            raise InputError(f"{where}: missing or non-string field(s) {missing}")
        if entry["id"] in seen:
            raise InputError(f"{where}: duplicate id {entry['id']!r}")
        if entry["severity"] not in SEVERITIES:
            raise InputError(f"{where}: severity {entry['severity']!r} is not one of {SEVERITIES}")
        if entry["event"] not in EVENTS:
            raise InputError(f"{where}: event {entry['event']!r} is not one of {EVENTS}")
        try:
            regex = re.compile(entry["regex"])
        except re.error as exc:
            raise InputError(f"{where} ({entry['id']}): bad regex: {exc}") from None
        optional = {k: entry[k] for k in ("action", "phase") if entry.get(k) is not None}
        if any(not isinstance(v, str) for v in optional.values()):
            raise InputError(f"{where} ({entry['id']}): action and phase must be strings")
        seen.add(entry["id"])
        out.append(Signature(entry["id"], regex, entry["severity"], entry["event"], entry["kind"], entry["meaning"],
                             **optional))
    return tuple(out)


def load_catalogue(path: str | Path | None = None) -> tuple[Signature, ...]:
    """The shipped catalogue, or another file of the same shape."""
    if path is None:
        return _shipped()
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: unreadable signature catalogue: {exc}") from None
    return parse_catalogue(data, str(p))


@lru_cache(maxsize=1)
def _shipped() -> tuple[Signature, ...]:
    return parse_catalogue(json.loads(CATALOGUE.read_text()), CATALOGUE.name)


def match_line(line: str, catalogue: tuple[Signature, ...] | None = None) -> list[Signature]:
    """Every signature the line matches, in catalogue order."""
    return [sig for sig in (catalogue if catalogue is not None else load_catalogue()) if sig.search(line)]
