"""Reading inputs without trusting them: regular files only, opened without blocking, and directory inputs
that keep to themselves.

A FIFO, socket or device among the inputs would block a reader forever (or read a stranger's stream), so
every input file is checked with fstat on a descriptor opened O_NONBLOCK before a byte is read. A symlink
inside a directory input that points outside it is skipped with a note: whoever could write into that
directory must not be able to pull another file into a report. A file named on the command line is read as
given, symlink or not.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink"}


def kind(mode: int) -> str:
    """'a FIFO', 'a socket', ... for a file mode that is not a regular file's."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """open(path, "rb") that refuses anything but a regular file, without ever blocking in open (a FIFO with
    no writer blocks a plain open). Raises OSError: "not a regular file (a FIFO)"."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file ({kind(mode)})", os.fspath(path))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def leaves(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str | None:
    """Where a symlink inside a directory input points when that is outside the directory, else None."""
    p = os.fspath(path)
    if not os.path.islink(p):
        return None
    target, top = os.path.realpath(p), os.path.realpath(root)
    return None if target == top or target.startswith(top.rstrip(os.sep) + os.sep) else target


def member_problem(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str | None:
    """Why a file found inside a directory input must not be read, or None: a symlink that leaves the
    directory, or not a regular file."""
    target = leaves(root, path)
    if target is not None:
        return f"skipped, a symlink to {target}, outside {os.fspath(root)}"
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"skipped, unreadable ({exc.strerror or exc})"
    return None if stat.S_ISREG(mode) else f"skipped, {kind(mode)}"


def files_in(root: str | os.PathLike[str], *, recursive: bool = True, hidden: bool = True) -> tuple[list[Path], list[str]]:
    """The regular files of a directory input (sorted) and notes on what was skipped. Symlinked directories
    are not followed (one inside `root` is walked anyway); symlinked files that stay inside `root` are kept;
    `hidden=False` leaves out files whose name starts with a dot."""
    base = Path(root)
    files: list[Path] = []
    notes: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for d in dirnames:
            target = leaves(base, os.path.join(dirpath, d))
            if target is not None:
                notes.append(f"{os.path.join(dirpath, d)}: skipped, a symlink to {target}, outside {base}")
        if not recursive:
            dirnames.clear()
        for name in filenames:
            if not hidden and name.startswith("."):
                continue
            path = Path(dirpath) / name
            problem = member_problem(base, path)
            if problem is None:
                files.append(path)
            else:
                notes.append(f"{path}: {problem}")
    return sorted(files), notes
