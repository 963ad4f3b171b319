"""The command line: parse, call the library, pick a reporter. Error types map to exit codes in main()."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from hangdoc.errors import HangdocError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Diagnose hung distributed GPU jobs: capture a stuck node, analyze bundles and traces.",
)


class Format(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


@app.command()
def analyze(
    inputs: List[Path] = typer.Argument(..., help="Bundles, Flight Recorder dump dirs/files, trace dirs/files."),
    format: Format = typer.Option(Format.text, "--format", "-f", help="Report format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report here instead of stdout."),
) -> None:
    """Name the rank that diverged, the communicator, the mismatched op and the call-count swap."""
    from hangdoc.analysis.pipeline import diagnose
    from hangdoc.importers import load_inputs
    from hangdoc.report import render

    bundle = load_inputs(list(inputs))
    diagnosis = diagnose(bundle)
    render(diagnosis, format.value, output)


def main() -> None:
    """Console entry point: every HangdocError becomes one line on stderr and its exit code."""
    try:
        app(standalone_mode=False)
    except HangdocError as exc:
        print(f"hangdoc: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("hangdoc: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("hangdoc: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
