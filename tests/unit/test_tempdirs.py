"""Temp directories a killed writer leaves beside its output are removed by the next writer into that
parent; a live writer's are not. The writers here are real processes, paused in the middle of a bundle
write and killed with SIGKILL."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hangdoc import tempdirs
from hangdoc.bundle import Bundle
from hangdoc.report.archive import build_archive
from hangdoc.schema import table_from_rows

# Writes a bundle, pausing after its first table file (as a slow disk would), so it can be killed mid-write.
WRITER = textwrap.dedent(
    """
    import sys, time
    import pyarrow.parquet as pq
    from hangdoc.bundle import Bundle
    from hangdoc.schema import table_from_rows
    real = pq.write_table
    def slow(*a, **k):
        real(*a, **k)
        print("writing", flush=True)
        time.sleep(60)
    pq.write_table = slow
    b = Bundle()
    b.add("log_events", table_from_rows("log_events", [{"host": "h", "file": "f", "line_no": 1, "text": "t"}]))
    b.write(sys.argv[1])
    """
)

SEED001 = Path(__file__).resolve().parents[2] / "fixtures" / "seed001-tp4-dp2"


def _start_writer(out: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    assert p.stdout.readline().strip() == "writing"
    return p


def _temps(parent: Path) -> list[Path]:
    return sorted(d for d in parent.iterdir() if d.name.startswith("."))


@pytest.fixture
def writers():
    started: list[subprocess.Popen] = []
    yield lambda out: started.append(_start_writer(out)) or started[-1]
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_next_write_removes_a_killed_writers_temp_dir_but_not_a_live_ones(tmp_path: Path, writers) -> None:
    killed = writers(tmp_path / "first")
    live = writers(tmp_path / "second")
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    left = _temps(tmp_path)
    assert len(left) == 2 and all((d / "log_events.parquet").exists() for d in left)
    assert any(str(killed.pid) in d.name for d in left) and any(str(live.pid) in d.name for d in left)

    b = Bundle()
    b.add("log_events", table_from_rows("log_events", [{"host": "h", "file": "f", "line_no": 1, "text": "t"}]))
    b.write(tmp_path / "third")
    left = _temps(tmp_path)
    assert [d for d in left if str(live.pid) in d.name] == left and len(left) == 1  # the live one stays

    live.send_signal(signal.SIGKILL)
    live.wait(10)
    build_archive([tmp_path / "third"], tmp_path / "r.tar.gz")  # a report into the same parent sweeps too
    assert _temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.tar.gz", "third"]


def test_sweep_leaves_other_owners_and_other_files_alone(tmp_path: Path) -> None:
    tag = tempdirs._owner_tag()
    dead = 2**22 + 12345  # above the largest pid Linux allows: never a running process
    keep = [
        tmp_path / f".b.{tempdirs.MARK}-otherhost-{tag.split('-')[-1]}-{dead}-abcd1234",  # another host's
        tmp_path / f".b.{tempdirs.MARK}-{tag}0-{dead}-abcd1234",  # another pid namespace's
        tmp_path / f".b.{dead}",  # not ours by name
    ]
    for d in keep:
        d.mkdir()
    (tmp_path / f".f.{tempdirs.MARK}-{tag}-{dead}-abcd1234").write_text("a file, not a temp dir")
    stale = tmp_path / f".b.{tempdirs.MARK}-{tag}-{dead}-abcd1234"
    stale.mkdir()
    (stale / "x").write_text("x")
    assert tempdirs.sweep(tmp_path) == [stale]
    assert all(d.exists() for d in keep) and (tmp_path / f".f.{tempdirs.MARK}-{tag}-{dead}-abcd1234").exists()
