"""One line on stderr before work that takes more than a second, so a long analysis says what it is doing.

Stdout stays the report alone. Callers announce a stage only when its size makes it slow (thousands of
dump files, millions of calls); small inputs print nothing.
"""
from __future__ import annotations

import sys


def announce(what: str) -> None:
    """'hangdoc: reading 1,024 Flight Recorder files ...' on stderr, flushed at once."""
    try:
        print(f"hangdoc: {what} ...", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed or gone: the work goes on without it
        pass
