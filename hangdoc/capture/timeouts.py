"""Bounded calls for capture: nothing hangdoc does on a hung node may hang hangdoc.

Reads that can block in the kernel (a /proc file that takes the target's mmap lock, a log on a dead NFS
mount, an NVML call into a wedged driver) run in daemon threads with a deadline. Daemon threads, not
concurrent.futures pools: a thread stuck in uninterruptible sleep can never be cancelled, and a
ThreadPoolExecutor joins its workers at interpreter exit, so one stuck read would hang hangdoc's exit.
A daemon thread is abandoned instead, and the pool starts a replacement.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")

# One name for "a bounded call did not answer in time", whatever the Python version.
Timeout = FutureTimeout


def _run_into(fut: Future, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if not fut.set_running_or_notify_cancel():
        return
    try:
        fut.set_result(fn(*args))
    except BaseException as exc:  # handed to the caller through the future
        fut.set_exception(exc)


def spawn(fn: Callable[..., T], *args: Any, name: str = "hangdoc-bounded") -> "Future[T]":
    """Start fn(*args) in a daemon thread; the future is the only handle (a stuck call is abandoned)."""
    fut: Future = Future()
    threading.Thread(target=_run_into, args=(fut, fn, args), name=name, daemon=True).start()
    return fut


def run_bounded(fn: Callable[..., T], *args: Any, timeout: float, name: str = "hangdoc-bounded") -> T:
    """fn(*args) in a daemon thread; raises Timeout when it has not returned within `timeout` seconds."""
    return spawn(fn, *args, name=name).result(timeout)


class DaemonPool:
    """A few daemon worker threads behind a queue; workers stuck past a deadline are written off and replaced."""

    def __init__(self, workers: int = 4, name: str = "hangdoc-io") -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._name = name
        self._started = 0
        for _ in range(max(1, workers)):
            self._spawn()

    def _spawn(self) -> None:
        self._started += 1
        threading.Thread(target=self._loop, name=f"{self._name}-{self._started}", daemon=True).start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn, args = item
            _run_into(fut, fn, args)

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        fut: Future = Future()
        self._queue.put((fut, fn, args))
        return fut

    def wait(self, futures: Iterable[Future], deadline: float) -> list[Future]:
        """Wait until `deadline` (time.monotonic()); return the futures still unfinished, replacing their workers."""
        pending = []
        for fut in futures:
            left = deadline - time.monotonic()
            try:
                fut.exception(timeout=max(0.0, left))
            except FutureTimeout:
                pending.append(fut)
        for fut in pending:
            if not fut.cancel():  # already running: its worker is stuck, start another in its place
                self._spawn()
        return pending

    def close(self) -> None:
        """Let idle workers exit; stuck ones stay abandoned (they are daemons)."""
        for _ in range(self._started):
            self._queue.put(None)


def read_bytes(path: str, limit: int = 1 << 20) -> bytes:
    """Read up to `limit` bytes with raw os calls: /proc files are generated per read, no buffering needed."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(65536, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
