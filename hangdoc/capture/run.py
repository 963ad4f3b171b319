"""The capture orchestrator: find the job, run every collector isolated and bounded, write one bundle.

Order: check the output, probe NVML, pick targets, read the processes, then run threads / GPUs /
Python stacks / traces / logs side by side in daemon threads, each with a time budget. A collector that
raises or overruns becomes a manifest entry and a note; whatever it finished (thread and GPU samples
are kept as they come) stays. Ctrl-C or SIGTERM stops collection and writes what was collected.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from hangdoc.bundle import Bundle
from hangdoc.capture import gpu, logs, procfs, processes, targets, versions
from hangdoc.capture.base import CollectorOutput
from hangdoc.capture.timeouts import spawn
from hangdoc.errors import CaptureError, OutputError, UsageError
from hangdoc.redact import redact_bundle, secret_values
from hangdoc.schema import table_from_rows

PYSPY_TIMEOUT_S = 5.0  # per target; py-spy runs on all targets at once
_PYTHON_EXE = re.compile(r"^(?:python|pypy)", re.IGNORECASE)


@dataclass
class CaptureOptions:
    output: Path
    pids: list[int] = field(default_factory=list)
    match: str | None = None
    trees: list[int] = field(default_factory=list)
    samples: int = 3
    interval: float = 0.5
    logs: list[str] = field(default_factory=list)
    traces: list[Path] = field(default_factory=list)
    pyspy: bool = True
    native: bool = False  # py-spy --native: native frames, each target paused while it is unwound
    pyspy_timeout: float = PYSPY_TIMEOUT_S
    host: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.traces = [Path(t) for t in self.traces]

    @property
    def auto(self) -> bool:
        return not self.pids and not self.trees and self.match is None


class Progress(Protocol):
    """What the orchestrator reports while it works (the rich display implements it; tests may too)."""

    def start(self, name: str, what: str) -> None: ...

    def update(self, name: str, text: str) -> None: ...

    def finish(self, name: str, ok: bool, text: str) -> None: ...


class QuietProgress:
    def start(self, name: str, what: str) -> None:
        pass

    def update(self, name: str, text: str) -> None:
        pass

    def finish(self, name: str, ok: bool, text: str) -> None:
        pass


@dataclass
class _Job:
    name: str
    future: Future
    started: float
    budget: float
    partial: CollectorOutput


@dataclass
class CaptureResult:
    path: Path | None
    bundle: Bundle
    interrupted: bool = False


def check_output(path: Path) -> None:
    """Fail before touching the job when the bundle could not be written anyway."""
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise OutputError(f"{path}: already exists; choose a new --output")
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write here ({probe} is not writable)")


def is_python(row: dict[str, Any]) -> bool:
    """Worth pointing py-spy at: a Python interpreter, or a process whose binary we could not see."""
    exe = row.get("exe")
    if exe is None:
        return row.get("status") not in ("gone", "zombie")
    cmd0 = (row.get("cmdline") or [""])[0]
    return bool(_PYTHON_EXE.match(os.path.basename(exe)) or _PYTHON_EXE.match(os.path.basename(cmd0)))


def _pystacks(pids: Sequence[int], host: str, timeout_s: float, native: bool) -> CollectorOutput:
    try:
        from hangdoc.capture.pystacks import collect_py_stacks
    except ImportError as exc:
        if exc.name != "hangdoc.capture.pystacks":
            raise
        return CollectorOutput(notes=["Python stacks not available in this build (no py-spy collector)"])
    return collect_py_stacks(pids, host, native=native, timeout_s=timeout_s)


def _traces(pids: Sequence[int], dirs: Sequence[Path], host: str) -> CollectorOutput:
    try:
        from hangdoc.capture.traces import collect_traces
    except ImportError as exc:
        if exc.name != "hangdoc.capture.traces":
            raise
        return CollectorOutput(notes=["trace and dump collection not available in this build"])
    return collect_traces(pids, dirs, host)


class _Recorder:
    """Puts each collector's outcome into the bundle the same way."""

    def __init__(self, bundle: Bundle, progress: Progress) -> None:
        self.bundle, self.progress = bundle, progress

    def ok(self, name: str, out: CollectorOutput, seconds: float, summary: str = "") -> None:
        for table_name, table in out.tables.items():
            self.bundle.add(table_name, table)
        self._notes(name, out.notes)
        self.bundle.record_collector(name, ran=True, seconds=seconds, notes=out.notes)
        self.progress.finish(name, True, summary or "done")

    def failed(self, name: str, error: str, seconds: float, partial: CollectorOutput | None = None) -> None:
        notes = list(partial.notes) if partial else []
        if partial is not None:
            for table_name, table in partial.tables.items():
                self.bundle.add(table_name, table)
            if any(t.num_rows for t in partial.tables.values()):
                notes.append("kept the rows collected before it stopped")
        self._notes(name, [f"failed: {error}", *notes])
        self.bundle.record_collector(name, ran=False, seconds=seconds, error=error, notes=notes)
        self.progress.finish(name, False, error)

    def skipped(self, name: str, why: str) -> None:
        self.bundle.record_collector(name, ran=False, seconds=0.0, notes=[f"skipped: {why}"])
        self.progress.finish(name, True, f"skipped ({why})")

    def _notes(self, name: str, notes: Sequence[str]) -> None:
        for note in notes:
            self.bundle.note(f"{name}: {note}")


def _summary_of(name: str, out: CollectorOutput) -> str:
    rows = {k: t.num_rows for k, t in out.tables.items()}
    if name == "threads":
        return f"{rows.get('thread_samples', 0)} thread samples, {rows.get('kernel_stacks', 0)} kernel stacks"
    if name == "gpus":
        return f"{rows.get('gpu_samples', 0)} GPU samples" if rows.get("gpu_samples") else "no GPUs"
    return ", ".join(f"{n} {k}" for k, n in rows.items()) or "nothing found"


@dataclass
class _State:
    """What collection has produced so far; survives a Ctrl-C at any point."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[_Job] = field(default_factory=list)
    log_titles: dict[int, str] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)  # values of the targets' secret variables


def capture(opts: CaptureOptions, progress: Progress | None = None) -> CaptureResult:
    """Run a capture and write the bundle. Raises CaptureError when there is nothing to capture. On Ctrl-C,
    writes what was collected and returns with interrupted=True (the CLI exits 130)."""
    progress = progress or QuietProgress()
    check_output(opts.output)
    if opts.samples < 1:
        raise UsageError("--samples must be at least 1")
    if opts.interval < 0:
        raise UsageError("--interval must not be negative")
    if opts.match is not None:
        try:
            re.compile(opts.match)
        except re.error as exc:
            raise UsageError(f"--match {opts.match!r}: bad regular expression: {exc}") from None
    bundle = Bundle()
    bundle.manifest["host"] = opts.host
    bundle.manifest["capture"] = {
        "samples": opts.samples,
        "interval": opts.interval,
        "pyspy": opts.pyspy,
        "native": opts.native,
        "selectors": {"pid": opts.pids, "match": opts.match, "tree": opts.trees, "auto": opts.auto},
        "logs": list(opts.logs),
        "traces": [str(p) for p in opts.traces],
        "interrupted": False,
    }
    rec = _Recorder(bundle, progress)
    stop = threading.Event()
    state = _State()
    interrupted = False
    with _StopSignals() as signals:
        try:
            _collect(opts, bundle, rec, progress, stop, state)
        except KeyboardInterrupt:
            interrupted = True
            signals.writing = True
            how = "SIGTERM" if signals.caught == "SIGTERM" else "Ctrl-C"
            stop.set()
            _drain(state.jobs, rec, grace=1.0, reason=f"interrupted ({how})")
            bundle.note(f"capture interrupted ({how}): the bundle holds only what was collected before")
            bundle.manifest["capture"]["interrupted"] = True
        signals.writing = True
        if state.rows:
            _finish_processes(bundle, state.rows, state.log_titles)
        # A bundle gets copied around as it is: no secret goes into it (log lines, argv, titles, notes, manifest),
        # nor any value of a secret variable of the targets or of this process, wherever it shows up.
        redacted = redact_bundle(bundle, state.secrets | secret_values([dict(os.environ)]))
        bundle.manifest["capture"]["redacted"] = dict(sorted(redacted.items()))
        path = bundle.write(opts.output)
    return CaptureResult(path, bundle, interrupted)


class _StopSignals:
    """SIGINT and SIGTERM stop collection (KeyboardInterrupt in the main thread) whatever disposition capture
    inherited: started as a background job of a script (some CI runners, nohup) it starts with SIGINT
    ignored, and Ctrl-C would do nothing. Once the bundle is being written they wait for the write, so what
    was collected is never lost. The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.caught: str | None = None
        self.writing = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.caught = self.caught or signal.Signals(signum).name
        if not self.writing:
            raise KeyboardInterrupt

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _collect(
    opts: CaptureOptions, bundle: Bundle, rec: _Recorder, progress: Progress, stop: threading.Event, state: _State
) -> None:
    # 1. GPUs first: who holds one is how the job is found, and which GPU each process uses.
    progress.start("targets", "finding the job")
    t0 = time.monotonic()
    recording, nvml_note = gpu.probe()
    bundle.manifest["capture"]["nvidia_driver"] = (recording or {}).get("driver_version")
    gpu_map = gpu.gpu_process_map(recording)
    table, scan_notes = targets.scan_processes(want_env=opts.auto or bool(opts.pids))  # ranks under a --pid
    selection = targets.select_targets(
        table, os.getpid(), pids=opts.pids, match=opts.match, trees=opts.trees, gpu_pids=gpu_map
    )
    if not selection.pids:
        how = "matching --match" if opts.match else "for the given --pid/--tree" if not opts.auto else (
            "holding a GPU or looking like a vLLM / SGLang / TensorRT-LLM / torchrun job"
        )
        extra = f" ({'; '.join(selection.notes)})" if selection.notes else ""
        raise CaptureError(f"no target processes found {how}{extra}")
    out = CollectorOutput(notes=[*scan_notes, *selection.notes])
    if nvml_note and opts.auto:
        out.notes.append(f"GPU holders not used for discovery: {nvml_note}")
    bundle.manifest["capture"]["targets"] = [{"pid": p, "reason": selection.reasons[p]} for p in selection.pids]
    rec.ok("targets", out, time.monotonic() - t0, f"{len(selection.pids)} processes")

    # 2. Processes (ranks, roles, tree).
    progress.start("processes", "reading processes and ranks")
    t0 = time.monotonic()
    infos, read_notes = processes.read_processes(selection.pids)
    state.secrets.update(secret_values(i.env for i in infos if i.env))
    state.rows, row_notes = processes.process_rows(infos, opts.host, gpu_map)
    bundle.record_collector("processes", ran=True, seconds=time.monotonic() - t0, notes=[*read_notes, *row_notes])
    for note in (*read_notes, *row_notes):
        bundle.note(f"processes: {note}")
    ranked = [r for r in state.rows if r["global_rank"] is not None]
    progress.finish("processes", True, f"{len(state.rows)} processes, {len(ranked)} with a rank")
    rows = state.rows
    pids = [r["pid"] for r in rows if r["status"] != "gone"]
    try:  # torch / NCCL / vLLM versions for the report's environment block: a few file reads, never fatal
        bundle.manifest["capture"]["versions"] = versions.package_versions(pids)
    except Exception as exc:
        bundle.note(f"versions: not read ({type(exc).__name__}: {exc})")

    # 3. Everything else side by side, each in a daemon thread with a budget.
    def launch(name: str, what: str, budget: float, call: Callable[[], CollectorOutput], partial: CollectorOutput | None = None) -> None:
        progress.start(name, what)
        state.jobs.append(_Job(name, spawn(call, name=f"hangdoc-{name}"), time.monotonic(), budget, partial or CollectorOutput()))

    sampling = opts.samples * opts.interval
    threads_out = CollectorOutput()
    launch(
        "threads", "sampling threads", sampling + 2.0 * opts.samples + 5.0,
        lambda: procfs.collect_threads(
            pids, opts.host, samples=opts.samples, interval=opts.interval, stop=stop, partial=threads_out,
            on_sample=lambda k: progress.update("threads", f"sample {k + 1}/{opts.samples}"),
        ),
        threads_out,
    )
    if recording is not None:
        gpus_out = CollectorOutput()
        launch(
            "gpus", "sampling GPUs", sampling + 15.0,
            lambda: gpu.collect_gpus(opts.host, samples=opts.samples, interval=opts.interval, stop=stop, partial=gpus_out),
            gpus_out,
        )
    else:
        empty = {name: table_from_rows(name, []) for name in ("gpu_samples", "gpu_processes")}
        rec.ok("gpus", CollectorOutput(tables=empty, notes=[f"no GPU data: {nvml_note}"]), 0.0, "no NVML")
    if opts.pyspy:
        py_pids = [r["pid"] for r in rows if r["status"] != "gone" and is_python(r)]
        how = "py-spy --native, pausing each process briefly" if opts.native else "py-spy, non-blocking"
        launch("pystacks", f"Python stacks ({how})", opts.pyspy_timeout + 10.0,
               lambda: _pystacks(py_pids, opts.host, opts.pyspy_timeout, opts.native))
    else:
        rec.skipped("pystacks", "--no-pyspy")
    launch("traces", "traces and dumps", 60.0, lambda: _traces(pids, list(opts.traces), opts.host))

    def scan_logs() -> CollectorOutput:
        scan = logs.scan_logs(list(opts.logs), rows, opts.host)
        state.log_titles.update(scan.titles)
        return scan.output

    launch("logs", "scanning logs", 60.0, scan_logs)
    _drain(state.jobs, rec, grace=None, reason=None)


def _drain(jobs: list[_Job], rec: _Recorder, *, grace: float | None, reason: str | None) -> None:
    """Wait for the jobs (each until its budget; with `grace`, at most that long) and record each outcome."""
    until = time.monotonic() + grace if grace is not None else None
    while jobs:
        now = time.monotonic()
        for job in list(jobs):
            elapsed = now - job.started
            if job.future.done():
                jobs.remove(job)
                exc = job.future.exception()
                if exc is not None:
                    rec.failed(job.name, f"{type(exc).__name__}: {exc}", elapsed, job.partial)
                else:
                    out = job.future.result()
                    rec.ok(job.name, out, elapsed, _summary_of(job.name, out))
            elif until is not None and now >= until:
                jobs.remove(job)
                rec.failed(job.name, reason or "stopped", elapsed, job.partial)
            elif elapsed > job.budget:
                jobs.remove(job)
                rec.failed(job.name, f"did not finish within {job.budget:.0f} s; abandoned", elapsed, job.partial)
        if jobs:
            wait_futures([j.future for j in jobs], timeout=0.1, return_when=FIRST_COMPLETED)


def _finish_processes(bundle: Bundle, rows: list[dict[str, Any]], log_titles: dict[int, str]) -> None:
    """Ranks from later sources (log prefixes, traces), liveness at the end, then the processes table."""
    if log_titles:
        processes.apply_log_titles(rows, log_titles)
    for note in processes.apply_trace_ranks(rows, bundle.table("collectives")):
        bundle.note(f"processes: {note}")
    for pid in processes.mark_gone(rows):
        bundle.note(f"processes: pid {pid} exited during capture; recorded as gone")
    bundle.tables.pop("processes", None)
    bundle.add("processes", table_from_rows("processes", rows))
