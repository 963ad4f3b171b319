"""`hangdoc run --trace-dir DIR -- CMD...`: exec CMD with HANGDOC_TRACE_DIR set.

Exec rather than spawn: the command keeps hangdoc's pid, signals and exit status, so wrapping a launcher
(torchrun, vllm serve, a Slurm step) changes nothing but the environment its processes start with.
"""
from __future__ import annotations

import os
import site
import sys
from pathlib import Path

from hangdoc.errors import InputError, OutputError, UsageError
from hangdoc.tracer.activate import ENV_DIR

PTH_NAME = "hangdoc-trace.pth"


def hook_installed() -> bool:
    """Is the start-up hook in one of this interpreter's site directories?"""
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    dirs += [user] if isinstance(user, str) else []
    return any((Path(d) / PTH_NAME).is_file() for d in dirs)


def exec_traced(trace_dir: str | os.PathLike[str], command: list[str]) -> None:
    """Replace this process by `command`, traced into trace_dir. Returns only by raising."""
    if not command:
        raise UsageError("no command given: hangdoc run --trace-dir DIR -- CMD [ARGS...]")
    target = Path(trace_dir).expanduser().resolve()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{target}: cannot create trace directory: {exc.strerror or exc}") from None
    if not hook_installed():
        print(f"hangdoc: warning: {PTH_NAME} is not installed beside this Python ({sys.prefix}); processes "
              f"of this Python will not be traced (reinstall hangdoc with pip)", file=sys.stderr)
    env = dict(os.environ)
    env[ENV_DIR] = str(target)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        raise InputError(f"{command[0]}: cannot run: {exc.strerror or exc}") from None
