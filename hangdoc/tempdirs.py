"""Temporary directories that say who owns them, and the removal of those whose owner is gone.

Bundles and report archives are written into a temp directory beside the output, then renamed. A writer
killed with SIGKILL cannot clean up, so each temp directory's name carries the host, the pid namespace and
the pid of its writer; the next writer into the same parent removes the ones whose writer no longer runs
(never a live one, never another host's or another container's, never another user's).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path

MARK = "hangdoc"


def _owner_tag() -> str:
    """host and pid namespace of this process: a pid means something only within both."""
    try:
        ns = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        ns = "0"
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
    return f"{host}-{ns}"


def make(parent: str | os.PathLike[str], name: str) -> Path:
    """A new temp directory in `parent` for writing `name`, after removing stale ones there."""
    sweep(parent)
    return Path(tempfile.mkdtemp(prefix=f".{name}.{MARK}-{_owner_tag()}-{os.getpid()}-", dir=parent))


def _alive(pid: int, since: float) -> bool:
    """Whether process `pid` runs and could have written a directory last changed at `since`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        import psutil

        return psutil.Process(pid).create_time() <= since + 1.0  # a pid reused later is not the writer
    except Exception:
        return True  # cannot tell: keep it


def sweep(parent: str | os.PathLike[str]) -> list[Path]:
    """Remove temp directories in `parent` left by writers of this host and pid namespace that are gone;
    returns what was removed. Best effort: an error leaves the directory where it is."""
    mine = re.compile(rf"^\..+\.{MARK}-{re.escape(_owner_tag())}-(\d+)-[a-z0-9_]+$")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        m = mine.match(entry.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or _alive(int(m.group(1)), st.st_mtime):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed
