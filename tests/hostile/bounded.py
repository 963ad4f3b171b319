"""Run the hangdoc command line on a hostile input the way CI does: in a subprocess with an address-space
limit and a timeout, so a bomb fails the test instead of the machine."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MEMORY_MB = 1024  # `hangdoc analyze` on seed 001 runs in well under this
TIMEOUT_S = 60.0


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def hangdoc(*args: str | Path, memory_mb: int = MEMORY_MB, timeout: float = TIMEOUT_S, cwd: Path | None = None) -> Result:
    """`hangdoc ARGS` bounded in memory and time; the process (and its session) is killed at the deadline."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))

    env = dict(os.environ, CI="true", COLUMNS="80")
    p = subprocess.Popen([sys.executable, "-m", "hangdoc.cli", *map(str, args)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                         preexec_fn=limit, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.communicate()
        raise AssertionError(f"hangdoc {' '.join(map(str, args))}: still running after {timeout:g} s") from None
    return Result(p.returncode, out, err)


def assert_one_line_error(r: Result, *words: str) -> str:
    """A non-zero exit with exactly one 'hangdoc: error:' line on stderr and no traceback; returns that line."""
    assert r.returncode not in (0, None), r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hangdoc: error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]
