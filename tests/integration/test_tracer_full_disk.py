"""The tracer never kills the job it observes: a trace directory on a full file system, a file size limit
below the trace file's size, the directory removed while the job runs. Real processes under the installed
start-up hook; the full disk is a real 1 MiB tmpfs (skipped where this user may not mount one)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from tracer_jobs import TIMEOUT_S, hangdoc_exe, rows, run_job

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

# On a full file system the first store into a page of a sparse trace file that has no block behind it
# is SIGBUS; a forked child tries again and says so too.
JOB = textwrap.dedent("""
    import os, resource, shutil, sys
    if sys.argv[2] == "fsize":
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    import torch, torch.distributed as dist
    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
    t = torch.ones(16)
    for i in range(300):
        dist.all_reduce(t)
        if i == 100 and sys.argv[2] == "rmdir":
            shutil.rmtree(os.environ["HANGDOC_TRACE_DIR"])
    dist.destroy_process_group()
    if sys.argv[2] != "rmdir":
        pid = os.fork()
        if pid == 0:
            dist.init_process_group("gloo", init_method="file://" + sys.argv[1] + "-child", rank=0, world_size=1)
            dist.all_reduce(t)
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    print("done", t[0].item(), flush=True)
""")


@pytest.fixture()
def full_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, filled up by a ballast file."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs CAP_SYS_ADMIN): {made.stderr.strip()}")
    try:
        with open(mnt / "ballast", "wb", buffering=0) as fh:  # fill it: no page of any file can be had now
            try:
                while True:
                    fh.write(b"\xff" * 4096)
            except OSError:
                pass
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _run(tmp_path: Path, trace_dir: Path, how: str) -> tuple[int, str]:
    (tmp_path / "job.py").write_text(JOB)
    return run_job([hangdoc_exe(), "run", "--trace-dir", str(trace_dir), "--", sys.executable, "job.py",
                    str(tmp_path / "store"), how], tmp_path, timeout=TIMEOUT_S)


def _off_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("hangdoc: tracing off in process")]


def test_full_file_system_traces_nothing_and_the_job_runs_on(tmp_path: Path, full_fs: Path) -> None:
    trace_dir = full_fs / "trace"
    rc, out = _run(tmp_path, trace_dir, "full")
    assert rc == 0, f"exit {rc} (135 or -7 is SIGBUS):\n{out[-3000:]}"
    assert "done 1.0" in out
    off = _off_lines(out)
    assert len(off) == 2, out[-3000:]  # once for the process, once for its forked child; not per call
    assert all("No space left on device" in line for line in off), off
    assert list(trace_dir.glob("*.hdtrace")) == []  # nothing half-made left behind


def test_file_size_limit_below_the_trace_traces_nothing(tmp_path: Path) -> None:
    """ulimit -f: extending a file past it raises SIGXFSZ, which kills as surely as SIGBUS."""
    trace_dir = tmp_path / "trace"
    rc, out = _run(tmp_path, trace_dir, "fsize")
    assert rc == 0, f"exit {rc} (153 or -25 is SIGXFSZ):\n{out[-3000:]}"
    off = _off_lines(out)
    assert len(off) == 2 and all("file size limit" in line for line in off), out[-3000:]
    assert list(trace_dir.glob("*.hdtrace")) == []


def test_trace_directory_removed_while_running(tmp_path: Path) -> None:
    """The open mapping keeps the removed file alive: the job goes on, its records go nowhere."""
    trace_dir = tmp_path / "trace"
    rc, out = _run(tmp_path, trace_dir, "rmdir")
    assert rc == 0, out[-3000:]
    assert "done 1.0" in out and not _off_lines(out)
    assert not trace_dir.exists() or rows(trace_dir) == []
