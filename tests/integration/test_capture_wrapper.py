"""`hangdoc capture --pid` of a launcher (`timeout`, a shell) records the job processes under it, not only the
wrapper. Real process trees; every group this test starts is killed in finally."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hangdoc.bundle import Bundle

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc"),
    pytest.mark.skipif(shutil.which("timeout") is None or shutil.which("bash") is None, reason="needs timeout and bash"),
]
ROOT = Path(__file__).resolve().parents[2]

# Says its pid, then blocks in a C call (time.sleep); gone by itself after 120 s should the runner die first.
CHILD = textwrap.dedent(
    """
    import os, threading, time
    threading.Timer(120, os._exit, (0,)).start()
    print(os.getpid(), flush=True)
    time.sleep(120)
    """
)


def _start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """A wrapper in its own session and the pid its Python child prints."""
    wrapper = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               env=dict(os.environ, **(env or {})), start_new_session=True)
    assert wrapper.stdout is not None
    return wrapper, int(wrapper.stdout.readline())


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _bystander(shell: int) -> int:
    """The shell's `sleep` child (bash may start it a moment after the Python one)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for c in _children(shell):
            try:
                if Path(f"/proc/{c}/comm").read_text().strip() == "sleep":
                    return c
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError("the shell started no sleep")


def test_pid_of_a_wrapper_captures_the_job_under_it(tmp_path: Path) -> None:
    started: list[subprocess.Popen] = []
    try:
        # timeout -> python with torchrun's rank variables
        timeout, ranked = _start(["timeout", "60", sys.executable, "-c", CHILD], {"RANK": "0", "WORLD_SIZE": "2"})
        started.append(timeout)
        # a shell -> a python titled like a vLLM worker, and an unrelated sleep beside it
        shell, titled = _start(["bash", "-c", '(exec -a VLLM::Worker_TP1 "$0" -c "$1") & exec 1>&-; sleep 60 & wait',
                                sys.executable, CHILD])
        started.append(shell)
        bystander = _bystander(shell.pid)

        out = tmp_path / "bundle"
        proc = subprocess.run(
            [sys.executable, "-c", "from hangdoc.cli import main; main()", "capture", "--pid", str(timeout.pid),
             "--pid", str(shell.pid), "--native", "--samples", "1", "--interval", "0", "-o", str(out)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=str(ROOT), CI="true", COLUMNS="120"),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        bundle = Bundle.open(out)
        reasons = {t["pid"]: t["reason"] for t in bundle.manifest["capture"]["targets"]}
        assert reasons == {
            timeout.pid: "--pid",
            ranked: f"under --pid {timeout.pid}: rank environment",
            shell.pid: "--pid",
            titled: f"under --pid {shell.pid}: title/command line",
        }, reasons
        assert bystander not in reasons
        ranks = {r["pid"]: (r["global_rank"], r["rank_source"]) for r in bundle.table("processes").to_pylist()}
        assert ranks[ranked] == (0, "env") and ranks[titled] == (1, "title")
        frames = bundle.table("py_frames").to_pylist()
        assert {ranked, titled} <= {r["pid"] for r in frames}
        assert bundle.manifest["capture"]["native"] is True
        if not any(r["native"] for r in frames):  # py-spy could not pause them here: a note says why
            assert any("native stacks unavailable" in n for n in bundle.notes), bundle.notes
        else:
            assert any(r["native"] and r["function"] == "clock_nanosleep" and r["pid"] == ranked for r in frames)
    finally:
        for p in started:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
