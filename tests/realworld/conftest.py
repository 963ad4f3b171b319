"""Print the real-world corpus score after the run: "realworld: N/M cases right", one line per wrong case."""
from __future__ import annotations

import pytest

# case name -> None (right) or why it is wrong; filled through the realworld_results fixture.
_RESULTS: dict[str, str | None] = {}


@pytest.fixture
def realworld_results() -> dict[str, str | None]:
    return _RESULTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    right = sum(1 for why in _RESULTS.values() if why is None)
    terminalreporter.write_sep("-", f"realworld: {right}/{len(_RESULTS)} cases right")
    for name, why in sorted(_RESULTS.items()):
        if why is not None:
            terminalreporter.write_line(f"  {name}: {why}")
