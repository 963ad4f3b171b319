"""Marking records completed when the operation really finished, not when the call returned.

CPU (gloo) calls that block are completed by the wrapper when they return. Async calls hand back a work
handle, and GPU calls return as soon as the kernel is queued; for those a daemon thread polls the handle
(Work.is_completed()) or a CUDA event recorded right after the call (Event.query()) and marks the record.
So the last op on each rank shows as issued (the rank is still inside it) or completed.

The GPU path cannot be exercised without a GPU; it is kept to a few guarded lines.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from hangdoc.tracer import format as F
from hangdoc.tracer.ring import Recorder

POLL_SECONDS = 0.01
MAX_PENDING = 65536  # past this the oldest stay "issued" rather than grow memory without bound


class Poller:
    """Owns one daemon thread per recorder; started lazily, gone after fork (a child gets a new one)."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.incoming: deque[tuple[int, Any]] = deque()  # appended by any thread, drained by the poller
        self.wake = threading.Event()
        self.idle = False  # the poller waits on `wake` (nothing pending); otherwise it drains `incoming` itself
        self.thread = threading.Thread(target=self._run, name="hangdoc-trace-completion", daemon=True)
        self.thread.start()

    def add(self, stamp: int, handle: Any) -> None:
        """Queue a handle. The poller is woken only from idle: a wake-up costs the caller a lock and a
        futex call, and the poller a GIL hand-off, so a busy poller picks new handles up on its next round.
        (Under the GIL, `idle` is set before the poller's last look at `incoming`: no handle is missed.)"""
        self.incoming.append((stamp, handle))
        if self.idle:
            self.idle = False
            self.wake.set()

    @staticmethod
    def _done(handle: Any) -> bool:
        query = getattr(handle, "query", None)  # torch.cuda.Event
        if query is not None:
            return bool(query())
        return bool(handle.is_completed())  # c10d Work

    def _run(self) -> None:
        mine: list[tuple[int, Any]] = []
        while True:
            if not mine:
                self.idle = True
                if not self.incoming:
                    self.wake.wait()
                self.wake.clear()
                self.idle = False
            while self.incoming:
                mine.append(self.incoming.popleft())
            if len(mine) > MAX_PENDING:
                del mine[: len(mine) - MAX_PENDING]
            still = []
            for stamp, handle in mine:
                try:
                    done = self._done(handle)
                except Exception:
                    continue  # a handle that cannot be asked any more: leave the record as it is
                if done:
                    self.rec.complete(stamp)
                else:
                    still.append((stamp, handle))
            mine = still
            if mine:
                time.sleep(POLL_SECONDS)


def watch(rec: Recorder, stamp: int, handle: Any) -> None:
    """Mark the record completed once `handle` (a Work or a CUDA event) says so."""
    poller = rec.pending
    if poller is None:
        poller = rec.pending = Poller(rec)
    poller.add(stamp, handle)


def watch_cuda(rec: Recorder, stamp: int, stream: Any = None) -> None:
    """Record a CUDA event after a GPU call and watch it. Needs a GPU (not exercised by the test suite)."""
    import torch

    if torch.cuda.is_current_stream_capturing():
        # An event here would become part of the graph; graph replays are not traced at all.
        rec.complete(stamp, F.ISSUED, F.F_CAPTURING)
        return
    event = torch.cuda.Event()
    if stream is not None:
        event.record(stream)
    else:
        event.record()
    watch(rec, stamp, event)
