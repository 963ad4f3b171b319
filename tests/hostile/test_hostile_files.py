"""FIFOs, sockets and symlinks among the inputs: nothing blocks, nothing outside a directory input is read.

A FIFO inside a bundle, a dump directory or a log directory is skipped with a note; one named on the command
line is a one-line error. A symlink inside a directory input that leaves the directory is skipped with a note
(its target never reaches a report or an archive); a symlink named on the command line is read as given."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bounded import assert_one_line_error, hangdoc
from hangdoc.bundle import Bundle
from hangdoc.errors import InputError
from hangdoc.importers import load_inputs
from hangdoc.schema import table_from_rows

SEED001 = Path(__file__).resolve().parents[2] / "fixtures" / "seed001-tp4-dp2"
HANG = ("(Worker_TP1 pid=12) WARNING 10-22 17:38:02 [shm_broadcast.py:1] No available shared memory broadcast "
        "block found in 60 seconds. {marker}\n")


def _report(r) -> dict:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout)


def _seed_bundle(tmp_path: Path, name: str = "b") -> Path:
    return load_inputs([SEED001]).write(tmp_path / name)


# --- FIFOs -----------------------------------------------------------------------------------------


def test_fifo_table_in_a_bundle_is_skipped_not_waited_on(tmp_path: Path) -> None:
    path = _seed_bundle(tmp_path)
    os.mkfifo(path / "log_events.parquet")
    report = _report(hangdoc("analyze", path, "--format", "json", timeout=60))
    assert report["verdict"]["culprit_ranks"]  # the collectives are still read
    assert any("log_events.parquet: skipped, a FIFO; table log_events left out" in n for n in report["notes"])


def test_fifo_manifest_is_one_line(tmp_path: Path) -> None:
    path = _seed_bundle(tmp_path)
    (path / "manifest.json").unlink()
    os.mkfifo(path / "manifest.json")
    # no manifest file: not taken for a bundle; the directory's Parquet files are not something importers read
    assert_one_line_error(hangdoc("analyze", path), "holds nothing hangdoc reads")
    assert_one_line_error(hangdoc("inspect", path), "not a hangdoc bundle", "a FIFO")


def test_fifo_in_a_dump_directory_is_skipped_with_a_note(tmp_path: Path) -> None:
    dumps = shutil.copytree(SEED001, tmp_path / "dumps")
    os.mkfifo(dumps / "nccl_trace_rank_9")
    report = _report(hangdoc("analyze", dumps, "--format", "json"))
    assert report["verdict"]["culprit_ranks"]
    assert any("nccl_trace_rank_9: skipped, a FIFO" in n for n in report["notes"])


def test_fifo_or_socket_named_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "rank0.log")
    assert_one_line_error(hangdoc("analyze", tmp_path / "rank0.log"), "not a regular file or directory (a FIFO)")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s"))
        for path, kind in ((tmp_path / "s", "a socket"), (Path("/dev/zero"), "a character device")):
            with pytest.raises(InputError, match=f"not a regular file or directory \\({kind}\\)"):
                load_inputs([path])
    finally:
        sock.close()


def test_fifo_in_a_log_directory_is_skipped(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "rank0.log").write_text(HANG.format(marker="m"))
    os.mkfifo(logs / "rank1.log")
    report = _report(hangdoc("analyze", logs, "--format", "json"))
    assert report["findings"] and any("rank1.log: skipped, a FIFO" in n for n in report["notes"])


# --- symlinks ----------------------------------------------------------------------------------------


def test_log_symlink_leaving_the_directory_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "private" / "secret.log"
    outside.parent.mkdir()
    outside.write_text(HANG.format(marker="OUTSIDE-MARKER"))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "rank0.log").write_text(HANG.format(marker="INSIDE-MARKER"))
    (logs / "rank1.log").symlink_to(outside)
    (logs / "also-rank0.log").symlink_to("rank0.log")  # stays inside: read
    r = hangdoc("analyze", logs, "--format", "json")
    report = _report(r)
    assert "OUTSIDE-MARKER" not in r.stdout and "INSIDE-MARKER" in r.stdout
    assert any(f"rank1.log: skipped, a symlink to {outside}, outside {logs}" in n for n in report["notes"])
    assert not any("also-rank0.log" in n and "skipped" in n for n in report["notes"])
    # the same file named on the command line is read as given
    assert "OUTSIDE-MARKER" in hangdoc("analyze", logs / "rank1.log", "--format", "json").stdout


def test_symlinked_directory_leaving_a_dump_directory_is_not_walked(tmp_path: Path) -> None:
    dumps = shutil.copytree(SEED001, tmp_path / "dumps")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "rank5.log").write_text(HANG.format(marker="OUTSIDE-MARKER"))
    (dumps / "more").symlink_to(elsewhere)
    r = hangdoc("analyze", dumps, "--format", "json")
    assert "OUTSIDE-MARKER" not in r.stdout
    assert any("more: skipped, a symlink to" in n for n in _report(r)["notes"])


def test_bundle_table_symlinked_elsewhere_is_not_packed_into_the_archive(tmp_path: Path) -> None:
    stranger = Bundle()
    stranger.add("log_events", table_from_rows("log_events", [
        {"host": "other", "file": "x.log", "line_no": 1, "signature": "vllm_shm_broadcast_timeout",
         "severity": "warning", "text": "STRANGER-ROW"}]))
    elsewhere = stranger.write(tmp_path / "elsewhere")
    path = _seed_bundle(tmp_path)
    (path / "log_events.parquet").symlink_to(elsewhere / "log_events.parquet")
    out = tmp_path / "r.tar.gz"
    r = hangdoc("report", path, "-o", out)
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as tar:
        names = [m.name for m in tar.getmembers()]
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert not any(n.endswith("log_events.parquet") for n in names)
    for name, data in blobs.items():
        text = json.dumps(pq.read_table(io.BytesIO(data)).to_pylist()) if name.endswith(".parquet") else data.decode()
        assert "STRANGER-ROW" not in text, name
    assert "log_events.parquet: skipped, a symlink to" in blobs[next(n for n in names if n.endswith("report.json"))].decode()


def test_capture_logs_skip_fifos_and_symlinks_that_leave_a_directory(tmp_path: Path) -> None:
    from hangdoc.capture.logs import scan_logs

    outside = tmp_path / "outside.log"
    outside.write_text(HANG.format(marker="OUTSIDE-MARKER"))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ok.log").write_text(HANG.format(marker="INSIDE-MARKER"))
    (logs / "link.log").symlink_to(outside)
    os.mkfifo(logs / "pipe.log")
    os.mkfifo(tmp_path / "named.fifo")
    scan = scan_logs([str(logs), str(tmp_path / "named.fifo")], [], "h", file_timeout=5.0)
    texts = scan.output.tables["log_events"].column("text").to_pylist()
    assert any("INSIDE-MARKER" in t for t in texts) and not any("OUTSIDE-MARKER" in t for t in texts)
    notes = "\n".join(scan.output.notes)
    assert f"link.log: skipped, a symlink to {outside}, outside {logs}" in notes
    assert "pipe.log: skipped, a FIFO" in notes
    assert "named.fifo: not read: not a regular file (a FIFO)" in notes
