"""Error types the CLI maps to exit codes in one place (cli.main)."""
from __future__ import annotations


class HangdocError(Exception):
    """A user-facing failure: printed as one line, never as a traceback."""

    exit_code = 1


class InputError(HangdocError):
    """An input path is missing, empty, corrupt or not something hangdoc reads."""

    exit_code = 2


class BundleError(HangdocError):
    """A bundle is unreadable, of an unknown version, or cannot be written."""

    exit_code = 3


class CaptureError(HangdocError):
    """Capture could not start at all (no targets, output not writable)."""

    exit_code = 4
