"""The command line: parse, call the library, pick a reporter. main() maps errors to hangdoc.errors.Exit."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer

from hangdoc import __version__
from hangdoc.errors import Exit, HangdocError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True)


def _values_not_types() -> None:
    """Newer typer writes each parameter's Python type into --help (`<bool>`, `<list[Path]>`, `{inputs}...`);
    people read what to type instead: an option's metavar (PID, DIR), nothing after a flag, `INPUT...`."""
    core = typer.core
    if not hasattr(core.TyperOption, "display_type_rich"):
        return  # older typer shows click's metavars already

    def option_value(self: Any, ctx: Any) -> str | None:
        return None if self.is_flag or self.count else (self.metavar or self.name.upper())

    def argument_usage(self: Any, ctx: Any) -> list[str]:
        name = (self.metavar or self.name.upper()) + ("..." if self.nargs != 1 else "")
        return [name if self.required else f"[{name}]"]

    core.TyperOption.display_type_rich = option_value
    core.TyperArgument.display_type_rich = lambda self, ctx: None
    core.TyperArgument.get_usage_pieces = argument_usage


_values_not_types()


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"hangdoc {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Diagnose hung distributed GPU jobs: capture a stuck node, analyze bundles and traces."""


class Format(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"
    html = "html"


@app.command()
def analyze(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT", help="Bundles, Flight Recorder dump dirs/files, trace dirs/files."),
    format: Format = typer.Option(Format.text, "--format", "-f", metavar="FORMAT", help="text, markdown, json or html (one self-contained page)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", help="Write the report here instead of stdout."),
) -> None:
    """Name the rank that diverged, the communicator, the mismatched op and the call-count swap."""
    import pyarrow as pa

    from hangdoc.analysis.pipeline import DEFERRED, diagnose
    from hangdoc.importers import load_inputs
    from hangdoc.report import render

    # malloc returns freed blocks at once where Arrow's default pool keeps them: on a 30M-row bundle that is
    # a tenth less peak memory and half the time spent faulting pages in
    pa.set_memory_pool(pa.system_memory_pool())
    bundle = load_inputs(list(inputs), defer=DEFERRED)
    diagnosis = diagnose(bundle)
    render(diagnosis, format.value, output)


@app.command("import")
def import_(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT", help="py-spy dumps, nvidia-smi output, engine logs, traces (files or dirs)."),
    output: Path = typer.Option(..., "--output", "-o", metavar="DIR", help="Bundle directory to write (must not exist yet)."),
) -> None:
    """Read artifacts people already have into one bundle, for `hangdoc analyze` or to attach to a report."""
    from hangdoc.importers import load_inputs
    from hangdoc.redact import redact_bundle

    bundle = load_inputs(list(inputs))
    redact_bundle(bundle)  # a bundle gets copied around as it is: no secret from the logs goes into it
    path = bundle.write(output)
    counts = ", ".join(f"{name} {bundle.rows(name):,}" for name in sorted(bundle.tables) if bundle.rows(name))
    typer.echo(f"bundle: {path} ({counts or 'no rows'})  next: hangdoc analyze {path}")


@app.command()
def capture(
    output: Path = typer.Option(..., "--output", "-o", metavar="DIR", help="Bundle directory to write (must not exist yet)."),
    pid: List[int] = typer.Option([], "--pid", metavar="PID", help="Capture this process (repeatable)."),
    match: Optional[str] = typer.Option(None, "--match", metavar="REGEX", help="Capture processes whose title/cmdline matches REGEX, their launchers and children."),
    tree: List[int] = typer.Option([], "--tree", metavar="PID", help="Capture this process and all its descendants (repeatable)."),
    samples: int = typer.Option(3, "--samples", min=1, metavar="N", help="Thread/GPU samples to take."),
    interval: float = typer.Option(0.5, "--interval", min=0.0, metavar="SECONDS", help="Seconds between samples."),
    logs: List[str] = typer.Option([], "--logs", metavar="GLOB", help="Log file, directory or glob to scan for hang signatures (repeatable)."),
    traces: List[Path] = typer.Option([], "--traces", metavar="DIR", help="Directory of Flight Recorder dumps or trace files (repeatable)."),
    no_pyspy: bool = typer.Option(False, "--no-pyspy", help="Skip Python stacks (py-spy)."),
    native: bool = typer.Option(False, "--native", help="Take native frames too (NCCL, CUDA, libc), which py-spy can only do by pausing each process while it reads the stack (a few to tens of milliseconds). Default: Python frames, read without pausing."),
    ray: bool = typer.Option(False, "--ray", help="Capture every node of a live Ray cluster; --output is then a directory of bundles."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDRESS", help="With --ray: the cluster (default: the one this machine is part of)."),
) -> None:
    """Snapshot a hung node into a bundle without disturbing the job (no selector: find the job)."""
    from rich.console import Console

    if native and no_pyspy:
        raise UsageError("--native asks py-spy for native frames; it does not go with --no-pyspy")
    if ray:
        from hangdoc.fanout.ray import capture_ray

        if pid or tree:
            raise UsageError("--pid and --tree name processes of one node; with --ray use --match or no selector")
        console = Console(stderr=True)
        options = dict(match=match, samples=samples, interval=interval, logs=list(logs), traces=list(traces),
                       pyspy=not no_pyspy, native=native)
        result = capture_ray(output, options, ray_address, on_node=lambda n: console.print(
            f"{n.host or n.address}: " + (f"{n.bundle}" if n.bundle else "no bundle") + (f" ({n.error})" if n.error else ""),
            highlight=False))
        print(result.output)
        return

    from hangdoc.capture.display import ConsoleProgress, print_summary
    from hangdoc.capture.run import CaptureOptions
    from hangdoc.capture.run import capture as run_capture

    opts = CaptureOptions(
        output=output, pids=list(pid), match=match, trees=list(tree), samples=samples, interval=interval,
        logs=list(logs), traces=list(traces), pyspy=not no_pyspy, native=native,
    )
    console = Console(stderr=True)
    with ConsoleProgress(console) as progress:
        result = run_capture(opts, progress)
    print_summary(console, result.bundle, result.path, result.interrupted)
    print(result.path)
    if result.interrupted:
        raise typer.Exit(Exit.INTERRUPTED)


@app.command()
def report(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT", help="Bundles (one per node), or dumps/traces/logs to make a bundle of."),
    output: Path = typer.Option(Path("hang-report.tar.gz"), "--output", "-o", metavar="FILE", help="Archive to write (must not exist)."),
    max_size: float = typer.Option(25.0, "--max-size", metavar="MB", help="Size cap in MB; the biggest tables are sampled down to fit."),
) -> None:
    """One archive for a bug report: bundles, Markdown, HTML and JSON reports, secrets redacted, size capped."""
    from hangdoc.inspect import human_size
    from hangdoc.report.archive import build_archive

    if max_size <= 0:
        raise UsageError("--max-size must be positive")
    result = build_archive(list(inputs), output, max_size)
    m, v = result.manifest, result.diagnosis.verdict
    redacted = sum(r["values"] for r in m["redacted"])
    sampled = ", ".join(f"{d['bundle']}/{d['table']} {d['rows']:,} -> {d['kept']:,} rows" for d in m["dropped"])
    typer.echo(f"archive: {result.path} ({human_size(m['bytes'])})")
    typer.echo(f"verdict: {v.kind}" + (f", culprit ranks {', '.join(map(str, v.culprit_ranks))}" if v.culprit_ranks else ""))
    typer.echo(f"redacted: {redacted} value(s); sampled to fit {max_size:g} MB: {sampled or 'nothing'}")


@app.command()
def inspect(
    bundles: List[Path] = typer.Argument(..., metavar="BUNDLE", help="Bundle directories."),
) -> None:
    """What a bundle holds: tables and rows, hosts, ranks, collector notes (to open its Parquet files yourself)."""
    from hangdoc.inspect import describe

    for i, path in enumerate(bundles):
        typer.echo(("\n" if i else "") + describe(path), nl=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    trace_dir: Path = typer.Option(..., "--trace-dir", metavar="DIR", help="Directory for the trace files (created if needed)."),
    command: Optional[List[str]] = typer.Argument(None, metavar="-- COMMAND", help="The command to run, after --."),
) -> None:
    """Run a command with every collective of every Python process it starts recorded (no code change)."""
    from hangdoc.tracer.run import exec_traced

    exec_traced(trace_dir, list(command or []))


def main() -> None:
    """Console entry point: every HangdocError becomes one line on stderr and its exit code."""
    try:
        code = app(standalone_mode=False)  # typer returns typer.Exit's code (130 on Ctrl-C) instead of exiting
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)
    except HangdocError as exc:
        # one line, whatever the message quotes (Arrow's and the unpickler's can run over several)
        print(f"hangdoc: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("hangdoc: aborted", file=sys.stderr)
        sys.exit(Exit.INTERRUPTED)
    except KeyboardInterrupt:
        print("hangdoc: interrupted", file=sys.stderr)
        sys.exit(Exit.INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Usage errors (click exits 2, Exit.USAGE): typer ships its own copy of click, so match click's
        # exception protocol, not its class.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise

if __name__ == "__main__":
    main()
