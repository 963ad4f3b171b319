"""What every collector returns, so the orchestrator can isolate and record each one the same way."""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


@dataclass
class CollectorOutput:
    """Rows a collector gathered (by bundle table name) and notes on what it could not do and why."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
