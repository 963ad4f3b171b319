"""A traced world of one gloo rank, for the in-process torch.distributed wrapper tests."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch.distributed as dist

from hangdoc.tracer import activate


@pytest.fixture()
def traced(tmp_path: Path) -> Iterator[Path]:
    """Tracing on and a one-rank gloo group; afterwards stop() must have put every wrapped function back."""
    originals = {n: getattr(dist, n) for n in ("all_reduce", "broadcast", "barrier", "all_gather_single")}
    trace_dir = tmp_path / "trace"
    activate.start(trace_dir)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield trace_dir
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        activate.stop()
        for name, fn in originals.items():
            assert getattr(dist, name) is fn, f"stop() did not restore {name}"
