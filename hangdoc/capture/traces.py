"""Collective traces and stack dumps the job already left on disk, plus a live Flight Recorder pull.

Sources, all read through the importers so a captured bundle holds the same rows `hangdoc analyze
DIR` would produce from the files:
- directories the user names (--traces);
- Flight Recorder dumps at the targets' TORCH_FR_DUMP_TEMP_FILE / TORCH_NCCL_DEBUG_INFO_TEMP_FILE
  prefixes (default /tmp/nccl_trace_rank_<rank>), only files written since the job started;
- this project's tracer files under the targets' HANGDOC_TRACE_DIR;
- vLLM watchdog stack dumps (VLLM_STACK_DUMP_for_<name>_<pid>.log) found in those directories;
- a live dump from PyTorch's worker server (TORCH_WORKER_SERVER_SOCKET, an HTTP server on a unix
  socket started by torch.distributed.elastic.control_plane.worker_main): POST /handler/fr_trace_json.
Nothing here writes to the job; a FIFO is never opened (reading one blocks), every socket has a timeout.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from hangdoc.bundle import Bundle
from hangdoc.capture.base import CollectorOutput
from hangdoc.importers import vllm_watchdog
from hangdoc.schema import table_from_rows

FR_PREFIX_VARS = ("TORCH_FR_DUMP_TEMP_FILE", "TORCH_NCCL_DEBUG_INFO_TEMP_FILE")
FR_DEFAULT_PREFIX = "/tmp/nccl_trace_rank_"
TRACE_DIR_VAR = "HANGDOC_TRACE_DIR"
WORKER_SOCKET_VAR = "TORCH_WORKER_SERVER_SOCKET"
RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID")
# Worker-server handlers that return a Flight Recorder dump as JSON: the CPU/gloo recorder, and the
# NCCL one (registered only by CUDA builds; a CPU build answers that it has no such handler).
FR_HANDLERS = ("fr_trace_json", "dump_nccl_trace_json?onlyactive=true")
_PROC_TIMEOUT_S = 2.0
_SOCKET_TIMEOUT_S = 5.0
_MAX_DUMP_BYTES = 256 << 20
_MTIME_SLACK_S = 5.0


def _bounded(fn: Callable[[], Any], timeout: float) -> Any:
    """fn() in a daemon thread, so a read that blocks (a /proc file of a D-state target, a stalled
    socket) is abandoned instead of hanging the capture. Raises TimeoutError; re-raises fn's error."""
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:  # handed back to the caller
            box.append((False, exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if not box:
        raise TimeoutError(f"no answer in {timeout:g} s")
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _environ(pid: int) -> dict[str, str] | None:
    def read() -> dict[str, str] | None:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return None
        env = {}
        for item in raw.split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep:
                env[key.decode(errors="replace")] = value.decode(errors="replace")
        return env

    try:
        return _bounded(read, _PROC_TIMEOUT_S)
    except TimeoutError:
        return None


def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # gone, or not permitted: no lower bound from this one
        return None


def _resolve(pid: int, path: str) -> Path:
    """A path as the target sees it: relative to its cwd, inside its mount namespace when ours differs."""
    p = Path(path)
    if not p.is_absolute():
        try:
            p = Path(os.readlink(f"/proc/{pid}/cwd")) / p
        except OSError:
            return p
    if not p.parent.exists():
        inside = Path(f"/proc/{pid}/root") / p.relative_to("/")
        if inside.parent.exists():
            return inside
    return p


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def fr_dump_files(prefixes: set[Path], since: float | None) -> tuple[list[Path], int]:
    """Files named <prefix><rank>, regular (never a FIFO), not older than the job; and how many were stale."""
    found, stale = [], 0
    for prefix in sorted(prefixes):
        try:
            entries = list(prefix.parent.iterdir())
        except OSError:
            continue
        for f in entries:
            rest = f.name[len(prefix.name):]
            if not f.name.startswith(prefix.name) or not rest.isdigit() or not _regular(f):
                continue
            if since is not None and f.stat().st_mtime < since - _MTIME_SLACK_S:
                stale += 1
                continue
            found.append(f)
    return sorted(set(found)), stale


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def worker_server_request(socket_path: str | Path, handler: str, timeout: float | None = None) -> tuple[int, bytes]:
    """POST /handler/<handler> to a torch worker server; (status, body)."""
    conn = _UnixHTTPConnection(str(socket_path), timeout or _SOCKET_TIMEOUT_S)
    try:
        conn.request("POST", f"/handler/{handler}", body=b"", headers={"Content-Length": "0"})
        resp = conn.getresponse()
        body = resp.read(_MAX_DUMP_BYTES + 1)
        if len(body) > _MAX_DUMP_BYTES:
            raise OSError(f"answer larger than {_MAX_DUMP_BYTES >> 20} MiB")
        return resp.status, body
    finally:
        conn.close()


def _rank_from_env(env: dict[str, str] | None) -> int | None:
    for var in RANK_VARS:
        value = (env or {}).get(var, "")
        if value.strip().isdigit():
            return int(value)
    return None


def _fill_host(table: pa.Table, host: str) -> pa.Table:
    if "host" not in table.column_names or table.num_rows == 0:
        return table
    col = table.column("host")
    if col.null_count == 0:
        return table
    filled = pa.chunked_array([pc.fill_null(chunk, host) for chunk in col.chunks], type=col.type)
    return table.set_column(table.column_names.index("host"), "host", filled)


def _fill_pids(table: pa.Table, pid_of_rank: dict[int, int]) -> pa.Table:
    """A live pull knows which process answered for which rank; FR rows do not carry the pid."""
    pids = table.column("pid").to_pylist()
    ranks = table.column("rank").to_pylist()
    filled = [p if p is not None else pid_of_rank.get(r) for p, r in zip(pids, ranks)]
    return table.set_column(table.column_names.index("pid"), "pid", pa.array(filled, pa.int64()))


class _Gather:
    """Accumulates imported bundles and notes; every source is isolated from the others."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.out = CollectorOutput()
        self.seen: set[Path] = set()

    def note(self, text: str) -> None:
        self.out.notes.append(text)

    def add_bundle(self, bundle: Bundle, origin: str, pid_of_rank: dict[int, int] | None = None) -> None:
        for name, table in bundle.tables.items():
            if table.num_rows == 0:
                continue
            table = _fill_host(table, self.host)
            if name == "collectives" and pid_of_rank:
                table = _fill_pids(table, pid_of_rank)
            prior = self.out.tables.get(name)
            self.out.tables[name] = table if prior is None else pa.concat_tables([prior, table])
        self.out.notes.extend(f"{origin}: {n}" for n in bundle.notes)

    def load(
        self, path: Path, origin: str, *, quiet_if_empty: bool = False, pid_of_rank: dict[int, int] | None = None
    ) -> bool:
        """Import one directory or file through the importers; a failure is a note."""
        from hangdoc.importers import load_path  # the importer set is read at call time

        try:
            bundle = load_path(path)
        except Exception as exc:  # an importer missing or failing must not stop the capture
            message = str(exc) or type(exc).__name__
            if not (quiet_if_empty and "holds no" in message):
                self.note(f"{origin}: not imported ({type(exc).__name__}: {message})")
            return False
        self.add_bundle(bundle, origin, pid_of_rank)
        return True

    def load_vllm_dumps(self, root: Path, origin: str) -> int:
        """vLLM watchdog dumps under `root`, unless the importer set already reads them."""
        from hangdoc.importers import IMPORTER_MODULES

        if "hangdoc.importers.vllm_watchdog" in IMPORTER_MODULES:
            return 0
        files = [root] if root.is_file() else sorted(p for p in root.rglob("VLLM_STACK_DUMP_for_*") if _regular(p))
        rows: list[dict[str, Any]] = []
        for f in files:
            if not vllm_watchdog.is_dump_name(f):
                continue
            try:
                found = vllm_watchdog.read_file(f, host=self.host)
            except Exception as exc:
                self.note(f"{origin}: {f.name}: unreadable ({exc})")
                continue
            if not found:
                self.note(f"{origin}: {f.name}: no Python stack found in it")
            rows.extend(found)
        if rows:
            bundle = Bundle()
            bundle.add("py_frames", table_from_rows("py_frames", rows))
            self.add_bundle(bundle, origin)
        return len(files)


def _load_dir(g: _Gather, d: Path, label: str) -> None:
    """A named directory: vLLM stack dumps in it, then whatever the importers read (once per directory)."""
    g.seen.add(d.resolve())
    vllm = g.load_vllm_dumps(d, label)
    g.load(d, label, quiet_if_empty=vllm > 0)


def collect_traces(pids: Sequence[int], dirs: Sequence[Path], host: str) -> CollectorOutput:
    """Import every collective dump/trace and stack dump the targets left, plus live FR dumps."""
    g = _Gather(host)
    pids = list(dict.fromkeys(int(p) for p in pids))
    envs = {pid: _environ(pid) for pid in pids}
    unreadable = [pid for pid, env in envs.items() if env is None]
    if unreadable:
        g.note(
            f"environment of pid(s) {', '.join(map(str, unreadable))} unreadable (not permitted, or gone): "
            "their FR dump prefix, trace dir and worker socket are unknown; default locations only"
        )
    starts = [s for s in (_start_time(p) for p in pids) if s is not None]
    since = min(starts) if starts else None

    # 1. Directories the user named.
    for d in dirs:
        d = Path(d)
        if not d.exists():
            g.note(f"--traces {d}: no such file or directory")
            continue
        _load_dir(g, d, f"--traces {d}")

    # 2. Flight Recorder dumps at the configured (or default) prefixes.
    prefixes = {Path(FR_DEFAULT_PREFIX)}
    for pid, env in envs.items():
        for var in FR_PREFIX_VARS:
            if env and env.get(var):
                prefixes.add(_resolve(pid, env[var]))
    files, stale = fr_dump_files(prefixes, since)
    files = [f for f in files if not any(f.resolve().is_relative_to(s) for s in g.seen)]
    if stale:
        g.note(f"{stale} Flight Recorder dump file(s) older than the job skipped")
    if files:
        _load_copies(g, files, "Flight Recorder dumps " + ", ".join(sorted({str(p) for p in prefixes})))

    # 3. This project's tracer files.
    trace_dirs = {_resolve(pid, env[TRACE_DIR_VAR]) for pid, env in envs.items() if env and env.get(TRACE_DIR_VAR)}
    for d in sorted(trace_dirs):
        if d.resolve() in g.seen or not d.is_dir():
            if not d.is_dir():
                g.note(f"{TRACE_DIR_VAR}={d}: no such directory")
            continue
        _load_dir(g, d, f"{TRACE_DIR_VAR} {d}")

    # 4. Live Flight Recorder dumps from PyTorch worker servers.
    _pull_live_fr(g, envs)
    return g.out


def _load_copies(g: _Gather, files: list[Path], origin: str) -> None:
    """Import files from a shared directory (/tmp) through a private copy, so no stranger is read."""
    tmp = Path(tempfile.mkdtemp(prefix="hangdoc-traces-"))
    try:
        for f in files:
            try:
                shutil.copyfile(f, tmp / f.name)
            except OSError as exc:
                g.note(f"{f}: not copied ({exc.strerror or exc})")
        if any(tmp.iterdir()):
            g.load(tmp, origin)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pull_live_fr(g: _Gather, envs: dict[int, dict[str, str] | None]) -> None:
    sockets: dict[Path, int] = {}
    for pid, env in envs.items():
        if env and env.get(WORKER_SOCKET_VAR):
            sockets.setdefault(_resolve(pid, env[WORKER_SOCKET_VAR]), pid)
    if not sockets:
        return
    tmp = Path(tempfile.mkdtemp(prefix="hangdoc-fr-live-"))
    pid_of_rank: dict[int, int] = {}
    try:
        for path, pid in sockets.items():
            rank = _rank_from_env(envs[pid])
            if rank is not None:
                pid_of_rank.setdefault(rank, pid)
            for handler in FR_HANDLERS:
                kind = handler.split("?")[0]
                try:
                    status, body = _bounded(lambda p=path, h=handler: worker_server_request(p, h), _SOCKET_TIMEOUT_S + 1)
                except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
                    g.note(f"pid {pid}: worker server {path}: no answer ({getattr(exc, 'strerror', None) or exc})")
                    break
                if status != 200:
                    continue  # a handler this build does not register
                try:
                    entries = json.loads(body).get("entries") or []
                except (ValueError, AttributeError):
                    g.note(f"pid {pid}: worker server {kind}: answer is not a Flight Recorder JSON dump")
                    continue
                if not entries:
                    continue
                if rank is None:
                    g.note(f"pid {pid}: live Flight Recorder dump ({len(entries)} entries) skipped: rank unknown")
                    continue
                out = tmp / kind / f"nccl_trace_rank_{rank}"
                out.parent.mkdir(exist_ok=True)
                out.write_bytes(body)
        for sub in sorted(p for p in tmp.iterdir() if p.is_dir()):
            g.load(sub, f"live Flight Recorder ({sub.name}) from worker servers", pid_of_rank=pid_of_rank)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
