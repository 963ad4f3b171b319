"""Error types and the one exit-code map every verb shares (cli.main applies it; docs/cli.md lists it).

An error's class says what went wrong in the user's terms, whichever verb raised it, so a script can
tell "fix the command line" from "this input is bad" from "there was nothing to capture".
"""
from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """hangdoc's exit statuses; each error class below carries one."""

    OK = 0
    FAILED = 1
    USAGE = 2
    INPUT = 3
    NOTHING_TO_CAPTURE = 4
    INTERRUPTED = 130


# code -> meaning, in the words docs/cli.md shows (a test keeps that table equal to this one)
EXIT_MEANINGS: dict[int, str] = {
    Exit.OK: "done: the report, bundle or archive was written (whatever the verdict)",
    Exit.FAILED: "the output already exists or cannot be written, or another failure stated in one line; "
    "with a traceback: a bug in hangdoc",
    Exit.USAGE: "the command line is wrong: unknown option, missing or bad value, options that do not go together",
    Exit.INPUT: "an input is missing, unreadable, corrupt or not something hangdoc reads (including a bundle)",
    Exit.NOTHING_TO_CAPTURE: "capture could not reach the job: no target process found, or no Ray cluster or node "
    "answered",
    Exit.INTERRUPTED: "interrupted (Ctrl-C); capture still writes what it had collected",
}


class HangdocError(Exception):
    """A user-facing failure: printed as one line, never as a traceback."""

    exit_code: int = Exit.FAILED


class OutputError(HangdocError):
    """The output already exists or cannot be written."""

    exit_code = Exit.FAILED


class UsageError(HangdocError):
    """An option value is bad, or options do not go together (click reports the rest with the same code)."""

    exit_code = Exit.USAGE


class InputError(HangdocError):
    """An input path is missing, empty, corrupt or not something hangdoc reads."""

    exit_code = Exit.INPUT


class BundleError(InputError):
    """A bundle is unreadable or of an unknown version."""


class CaptureError(HangdocError):
    """Capture could not reach the job (no target process found, no Ray cluster or node answered)."""

    exit_code = Exit.NOTHING_TO_CAPTURE
