"""Turning tracing on: the env var, the per-process recorder, fork handling, and which modules get wrapped.

The `.pth` start-up hook calls start() only when HANGDOC_TRACE_DIR is set. start() imports nothing heavy:
it registers import hooks, and the wrappers are installed when torch.distributed, vLLM or SGLang load.
The trace file is created lazily, on the first recorded call, so the many Python processes a job starts
that never run a collective (launchers, compile workers, tokenizers) leave no file behind.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable

from hangdoc.tracer import hook
from hangdoc.tracer.ring import OFF_HOT, Recorder, capacity_from_env, trace_path

ENV_DIR = "HANGDOC_TRACE_DIR"

REC: Recorder | None = None
HOT: tuple | None = None  # REC.hot, read by the wrappers on every call (see hot()); the generated ones keep a copy
# HOT when the trace file could not be made: its group cache answers SKIP for every group, so wrappers
# call the original and record nothing.
OFF = OFF_HOT
# Called whenever HOT changes (a new recorder, tracing off, a forked child, stop()): copies of HOT and caches
# that belong to one recorder register a reset here.
ON_HOT_CHANGE: list[Callable[[], None]] = []
_trace_dir: str | None = None
_lock = threading.Lock()
_fork_hook_installed = False
_patches: list[tuple[Any, str, Any]] = []  # (owner, attribute, original) for stop()

# module name -> installer(module); the installers live beside the wrappers and import lazily.
WATCHED: dict[str, str] = {
    # After torch itself, not torch.distributed: torch imports torch.distributed half-way through its own
    # import, before torch.compiler (which the wrappers need) exists.
    "torch": "hangdoc.tracer.torch_dist:install_after_torch",
    "vllm.distributed.parallel_state": "hangdoc.tracer.coordinators:install_vllm_coordinator",
    "vllm.distributed.device_communicators.pynccl": "hangdoc.tracer.coordinators:install_vllm_pynccl",
    "vllm.distributed.device_communicators.custom_all_reduce": "hangdoc.tracer.coordinators:install_vllm_custom_ar",
    "sglang.srt.distributed.parallel_state": "hangdoc.tracer.coordinators:install_sglang_coordinator",
    "sglang.srt.distributed.device_communicators.pynccl": "hangdoc.tracer.coordinators:install_sglang_pynccl",
    "sglang.srt.distributed.device_communicators.custom_all_reduce":
        "hangdoc.tracer.coordinators:install_sglang_custom_ar",
}


def _env_rank(name: str) -> int:
    try:
        return int(os.environ.get(name, "-1"))
    except ValueError:
        return -1


def recorder() -> Recorder | None:
    """This process's recorder, created on first use (the slow path of every wrapper); None when its file
    could not be made (full disk, quota, file size limit...): then this process traces nothing, said once."""
    global REC, HOT
    with _lock:
        if REC is None and HOT is not OFF:
            if _trace_dir is None:
                raise RuntimeError("hangdoc tracing is not started")
            path = trace_path(_trace_dir)
            try:
                os.makedirs(_trace_dir, exist_ok=True)
                REC = Recorder(path, capacity_from_env(), rank=_env_rank("RANK"),
                               world_size=_env_rank("WORLD_SIZE"), local_rank=_env_rank("LOCAL_RANK"))
            except OSError as exc:
                HOT = OFF
                _hot_changed()
                print(f"hangdoc: tracing off in process {os.getpid()}: cannot create {path}: "
                      f"{exc.strerror or exc}", file=sys.stderr, flush=True)
                return None
            HOT = REC.hot
            _hot_changed()
        return REC


def _hot_changed() -> None:
    for reset in ON_HOT_CHANGE:
        reset()


def hot() -> tuple:
    """What the torch.distributed wrappers need of the recorder (created on first use): Recorder.hot, or
    OFF when this process traces nothing."""
    rec = recorder()
    return OFF if rec is None else rec.hot


def _after_fork_in_child() -> None:
    """A forked child writes its own file (and tries again where the parent could not): drop the parent's
    mapping and caches, keep the wrappers."""
    global REC, HOT, _lock
    _lock = threading.Lock()
    old, REC, HOT = REC, None, None
    _hot_changed()
    if old is not None:
        old.close()


def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> bool:
    """Replace owner.name by make(original), once; remembered so that stop() can undo it."""
    original = getattr(owner, name, None)
    if original is None or getattr(original, "__hangdoc_wrapped__", False):
        return False
    wrapper = make(original)
    wrapper.__hangdoc_wrapped__ = True
    wrapper.__wrapped__ = original
    setattr(owner, name, wrapper)
    _patches.append((owner, name, original))
    return True


def _installer(spec: str) -> Callable[[Any], None]:
    def run(module: Any) -> None:
        import importlib

        mod_name, _, func = spec.partition(":")
        getattr(importlib.import_module(mod_name), func)(module)

    return run


def start(trace_dir: str | os.PathLike[str] | None = None) -> bool:
    """Trace this process (and its forked/spawned children) into trace_dir or $HANGDOC_TRACE_DIR."""
    global _trace_dir, _fork_hook_installed
    trace_dir = trace_dir or os.environ.get(ENV_DIR)
    if not trace_dir:
        return False
    if _trace_dir is not None:
        return True
    _trace_dir = os.path.abspath(os.fspath(trace_dir))
    os.environ[ENV_DIR] = _trace_dir  # spawned children (multiprocessing spawn, subprocess) follow
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True
    for module_name, spec in WATCHED.items():
        hook.when_imported(module_name, _installer(spec))
    return True


def stop() -> None:
    """Undo every wrapper and close the file (tests; a process that wants tracing off again)."""
    global REC, HOT, _trace_dir
    hook.remove()
    while _patches:
        owner, name, original = _patches.pop()
        setattr(owner, name, original)
    with _lock:
        if REC is not None:
            REC.close()
        REC = HOT = None
        _hot_changed()
        _trace_dir = None


def start_from_env() -> None:
    """Entry point of the .pth hook: never let tracing stop an interpreter from starting."""
    try:
        start()
    except Exception as exc:  # pragma: no cover - defensive
        print(f"hangdoc: tracing not started: {type(exc).__name__}: {exc}", file=sys.stderr)
