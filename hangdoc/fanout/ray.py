"""`hangdoc capture --ray`: one capture per node of a live Ray cluster, gathered into one directory.

Ray does the fan-out, not hangdoc: a task pinned to each alive node (NodeAffinitySchedulingStrategy, not
soft) runs the capture library there and returns the bundle as bytes. The task asks for no CPU, so a cluster
whose CPUs the hung job holds still runs it. hangdoc must be installed on every node (it is imported there by
name). Each node's bundle lands in OUTPUT/<host>; what each node did is in OUTPUT/.ray-capture.json, a
dot file so that `hangdoc analyze OUTPUT/*` sees only bundles.
"""
from __future__ import annotations

import io
import json
import re
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hangdoc.errors import CaptureError, HangdocError, OutputError

TIMEOUT_S = 300.0  # for the whole fan-out; a node whose capture is not back by then is listed as such
SUMMARY = ".ray-capture.json"


@dataclass
class NodeResult:
    node_id: str
    address: str
    host: str | None = None
    bundle: Path | None = None
    error: str | None = None
    seconds: float | None = None


@dataclass
class RayCaptureResult:
    output: Path
    nodes: list[NodeResult] = field(default_factory=list)

    @property
    def bundles(self) -> list[Path]:
        return [n.bundle for n in self.nodes if n.bundle is not None]


def capture_on_node(options: dict[str, Any]) -> dict[str, Any]:
    """Runs on a node as a Ray task: capture there, return the bundle as a .tar.gz in bytes (or the error)."""
    from hangdoc.capture.run import CaptureOptions, capture

    host = socket.gethostname()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hangdoc-ray-") as tmp:
        try:
            result = capture(CaptureOptions(output=Path(tmp) / "bundle", host=host, **options))
        except HangdocError as exc:
            return {"host": host, "error": str(exc), "seconds": time.monotonic() - start}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(result.path, arcname="bundle")
    return {"host": host, "bundle": buf.getvalue(), "error": None, "seconds": time.monotonic() - start}


def _unpack(data: bytes, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=".hangdoc-", dir=target.parent) as tmp:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name == "bundle" or m.name.startswith("bundle/")]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # Python before the extraction filters; the archive is our own capture's
                tar.extractall(tmp, members=members)
        Path(tmp, "bundle").rename(target)


def _reason(exc: BaseException) -> str:
    """The innermost cause's first line: Ray wraps 'token missing' in 'Failed to connect to Ray cluster'."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _name(host: str | None, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", host or "node") or "node"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name)
    return name


def capture_ray(output: Path, options: dict[str, Any], address: str | None = None, timeout: float = TIMEOUT_S,
                on_node: Callable[[NodeResult], None] | None = None) -> RayCaptureResult:
    """Capture every alive node of the Ray cluster at `address` (default: the one this machine belongs to)."""
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise CaptureError("--ray needs Ray on this machine and on every node: pip install 'hangdoc[ray]'") from None
    output = Path(output)
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise OutputError(f"{output}: already exists; choose a new --output")
    connected_here = not ray.is_initialized()
    if connected_here:
        try:
            ray.init(address=address or "auto", logging_level="ERROR", log_to_driver=False)
        except Exception as exc:  # no cluster, wrong address, no auth token: one line, not Ray's traceback
            raise CaptureError(f"cannot connect to the Ray cluster at {address or 'auto'}: {_reason(exc)}") from None
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if not nodes:
            raise CaptureError("the Ray cluster has no alive nodes")
        task = ray.remote(num_cpus=0, max_retries=0)(capture_on_node)
        pending: dict[Any, NodeResult] = {}
        for n in nodes:
            ref = task.options(
                name="hangdoc-capture",
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False),
            ).remote(options)
            pending[ref] = NodeResult(node_id=n["NodeID"], address=str(n.get("NodeManagerAddress", "?")))
        output.mkdir(parents=True, exist_ok=True)
        result = RayCaptureResult(output)
        taken: set[str] = set()
        deadline = time.monotonic() + timeout
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(deadline - time.monotonic(), 0))
            if not ready:
                break
            node = pending.pop(ready[0])
            try:
                got = ray.get(ready[0])
            except Exception as exc:  # the task failed on that node (hangdoc missing there, node died...)
                node.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
            else:
                node.host, node.error, node.seconds = got.get("host"), got.get("error"), got.get("seconds")
                if got.get("bundle"):
                    target = output / _name(node.host, taken)
                    _unpack(got["bundle"], target)
                    node.bundle = target
            result.nodes.append(node)
            if on_node is not None:
                on_node(node)
        for ref, node in pending.items():
            ray.cancel(ref, force=True)
            node.error = f"no answer within {timeout:g} s; cancelled"
            result.nodes.append(node)
            if on_node is not None:
                on_node(node)
    finally:
        if connected_here:
            ray.shutdown()  # disconnects this driver; the cluster and its jobs stay as they were
    summary = [{"node_id": n.node_id, "address": n.address, "host": n.host, "bundle": n.bundle.name if n.bundle else None,
                "error": n.error, "seconds": None if n.seconds is None else round(n.seconds, 2)} for n in result.nodes]
    (output / SUMMARY).write_text(json.dumps({"nodes": summary}, indent=2))
    if not result.bundles:
        errors = "; ".join(f"{n.host or n.address}: {n.error}" for n in result.nodes)
        raise CaptureError(f"no node of the Ray cluster produced a bundle ({errors})")
    return result
