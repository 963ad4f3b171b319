"""A captured hung Python process: its report must say where each thread waits (file:line), not only that the
threads sleep in futex. The process's main thread and a worker thread both block on one threading.Lock."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CMD_TIMEOUT_S = 120
HOLDER = textwrap.dedent(
    """
    import threading

    lock = threading.Lock()
    lock.acquire()


    def worker():
        lock.acquire()  # WORKER WAITS HERE


    t = threading.Thread(target=worker, name="lock-worker", daemon=True)
    t.start()
    print("ready", flush=True)
    lock.acquire()  # MAIN WAITS HERE
    """
)


def _hangdoc() -> list[str]:
    beside = Path(sys.executable).parent / "hangdoc"
    exe = str(beside) if beside.exists() else shutil.which("hangdoc")
    assert exe, "the hangdoc console script is not installed (pip install -e .)"
    return [exe]


def _line_of(marker: str) -> int:
    return next(i for i, line in enumerate(HOLDER.splitlines(), 1) if marker in line)


def _run(args: list[str], cwd: Path) -> str:
    res = subprocess.run(args, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, cwd=cwd,
                         env={**os.environ, "COLUMNS": "80"}, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{args[1:3]} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_report_names_the_line_each_thread_waits_at(tmp_path):
    if shutil.which("py-spy") is None:
        pytest.skip("py-spy is not installed")
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while proc.stdout.readline().strip() != "ready":
            assert proc.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
        time.sleep(0.5)  # from the print into the blocking acquire
        bundle = tmp_path / "bundle"
        _run(_hangdoc() + ["capture", "--pid", str(proc.pid), "--output", str(bundle)], tmp_path)
        assert proc.poll() is None, "capture must leave the process running"
    finally:
        proc.kill()
        proc.wait(timeout=30)

    main_at = f"holder.py:{_line_of('MAIN WAITS HERE')}"
    worker_at = f"holder.py:{_line_of('WORKER WAITS HERE')}"
    text = _run(_hangdoc() + ["analyze", str(bundle)], tmp_path)
    markdown = _run(_hangdoc() + ["analyze", str(bundle), "--format", "markdown"], tmp_path)
    report = json.loads(_run(_hangdoc() + ["analyze", str(bundle), "--format", "json"], tmp_path))
    for out in (text, markdown):
        assert main_at in out and worker_at in out, out
        assert "lock-worker" in out, out
    assert max(len(line) for line in text.splitlines()) <= 80, text
    stacks = {m["thread"]: c for c in report["stacks"] for m in c["members"]}
    assert stacks["MainThread"]["top"][0].endswith(f"({main_at})")
    assert stacks["lock-worker"]["top"][0].endswith(f"({worker_at})")
    assert {m["pid"] for c in report["stacks"] for m in c["members"]} == {proc.pid}
