"""hangdoc's collective tracer: every rank records its collectives into a memory-mapped ring file.

Turn it on without touching the application: `hangdoc run --trace-dir DIR -- CMD...`, or set
HANGDOC_TRACE_DIR=DIR for every process of the job; the `hangdoc-trace.pth` start-up hook that comes with
the package then calls activate.start_from_env() in each new interpreter. Nothing here imports torch,
vLLM or SGLang: their wrappers are installed when they are imported.
"""
from __future__ import annotations

from hangdoc.tracer.activate import ENV_DIR, start, stop

__all__ = ["ENV_DIR", "start", "stop"]
