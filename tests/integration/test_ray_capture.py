"""`hangdoc capture --ray` on a real local Ray cluster (head on loopback) with an actor that really hangs.

The test starts the head with `ray start --head --block` in a session of its own, a driver that parks an actor
on a lock it already holds, then runs the CLI against the cluster's address. Every process of that session (and
any that names the cluster's own temp dir) is ended by pid when the test finishes, pass or fail; `ray stop` is
never used because it would stop every Ray cluster on the machine.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.integration

START_TIMEOUT_S = 120
CMD_TIMEOUT_S = 240

DRIVER = textwrap.dedent(
    """
    import os, sys, threading, time
    from pathlib import Path

    import ray

    address, ready = sys.argv[1], Path(sys.argv[2])
    deadline = time.monotonic() + 90
    while True:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


    @ray.remote(num_cpus=0)
    class StuckWorker:
        def wait_for_peer(self, ready):
            lock = threading.Lock()
            lock.acquire()
            Path(ready).write_text(str(os.getpid()))
            lock.acquire()  # never released: the actor is hung here for good


    actor = StuckWorker.remote()
    ref = actor.wait_for_peer.remote(str(ready))
    time.sleep(3600)  # the job stays up while hangdoc looks at it; the test ends it
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    beside = Path(sys.executable).parent / name
    exe = str(beside) if beside.exists() else shutil.which(name)
    if not exe:
        pytest.skip(f"the {name} command is not installed")
    return exe


def _ours(sid: int, marker: str) -> list[psutil.Process]:
    """Processes of the cluster this test started: its session, or naming its temp dir."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid == os.getpid():
                continue
            if os.getsid(p.pid) == sid or marker in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except (psutil.Error, OSError):
            continue
    return out


def _stop(procs: list[subprocess.Popen], sid: int, marker: str) -> None:
    for p in procs:  # the head first: with --block it takes its raylet and GCS down on SIGTERM
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    left = _ours(sid, marker)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=20)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=20)


def test_capture_ray_gathers_one_bundle_per_node_with_the_hung_actor(tmp_path: Path) -> None:
    ray_cli, hangdoc = _exe("ray"), _exe("hangdoc")
    temp_dir = tempfile.mkdtemp(prefix="hdray-")  # short: Ray's socket paths live under it
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # no token authentication for a throwaway loopback cluster (Ray 2.5x+ enables it on `ray start` by default)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    ready = tmp_path / "actor.pid"
    (tmp_path / "driver.py").write_text(DRIVER)
    head_log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp_dir],
        env=env, stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    head_log.close()
    sid = head.pid  # a new session's id is its leader's pid: the raylet, GCS and every Ray worker live in it
    procs = [head]
    try:
        with open(tmp_path / "driver.log", "w") as driver_log:
            driver = subprocess.Popen(
                [sys.executable, str(tmp_path / "driver.py"), address, str(ready)], env=env, cwd=tmp_path,
                stdout=driver_log, stderr=subprocess.STDOUT,
            )
        procs.insert(0, driver)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.exists():
            for p, log in ((head, "head.log"), (driver, "driver.log")):
                if p.poll() is not None:
                    pytest.fail(f"{log} exited {p.returncode}:\n{(tmp_path / log).read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the actor did not start in time:\n" + (tmp_path / "driver.log").read_text()[-3000:])
            time.sleep(0.5)
        time.sleep(1.0)  # from writing the file into the second acquire
        actor_pid = int(ready.read_text())

        out = tmp_path / "ray-bundles"
        t0 = time.monotonic()
        res = subprocess.run(
            [hangdoc, "capture", "--ray", "--ray-address", address, "--match", "StuckWorker", "--samples", "2",
             "--interval", "0.2", "--output", str(out)],
            capture_output=True, text=True, timeout=CMD_TIMEOUT_S, env=env, cwd=tmp_path,
        )
        took = time.monotonic() - t0
        assert res.returncode == 0, f"capture --ray exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        assert psutil.pid_exists(actor_pid) and driver.poll() is None, "capture must not disturb the job"
    finally:
        _stop(procs, sid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)

    # one node, one bundle named after its host, and a summary of what each node did
    summary = json.loads((out / ".ray-capture.json").read_text())
    assert len(summary["nodes"]) == 1 and summary["nodes"][0]["error"] is None, summary
    host = socket.gethostname()
    assert summary["nodes"][0]["host"] == host
    bundle = out / summary["nodes"][0]["bundle"]
    assert res.stdout.strip().splitlines()[-1] == str(out)

    from hangdoc.bundle import Bundle

    b = Bundle.open(bundle)
    assert b.manifest["host"] == host
    procs_rows = b.table("processes").to_pylist()
    actor = [r for r in procs_rows if r["pid"] == actor_pid]
    assert actor, f"the hung actor {actor_pid} is not in the bundle: {[(r['pid'], r['title']) for r in procs_rows]}"
    assert "StuckWorker" in (actor[0]["title"] or " ".join(actor[0]["cmdline"] or []))
    # it was caught blocked: sleeping threads, and (py-spy) the frame that holds it
    states = {r["state"] for r in b.table("thread_samples").to_pylist() if r["pid"] == actor_pid}
    assert states and states <= {"S", "D", "R"} and "S" in states, states
    frames = [r for r in b.table("py_frames").to_pylist() if r["pid"] == actor_pid]
    assert "StuckWorker.wait_for_peer" in {f["function"] for f in frames}, b.manifest["collectors"]
    # inspect reads it back the way a person would
    shown = subprocess.run([hangdoc, "inspect", str(bundle)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and host in shown.stdout and "processes" in shown.stdout
    # the README's next two commands take the directory as it is
    md = subprocess.run([hangdoc, "analyze", str(out), "--format", "markdown"], capture_output=True, text=True,
                        timeout=CMD_TIMEOUT_S)
    assert md.returncode == 0 and md.stdout.startswith("## hangdoc"), md.stderr[-2000:]
    assert f"`1: {host}`" in md.stdout  # the environment block names the node
    archive = tmp_path / "hang-report.tar.gz"
    rep = subprocess.run([hangdoc, "report", str(out), "--output", str(archive)], capture_output=True, text=True,
                         timeout=CMD_TIMEOUT_S)
    assert rep.returncode == 0, rep.stderr[-2000:]
    import tarfile

    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert {"hang-report/report.md", "hang-report/report.html", "hang-report/report.json"} <= set(names)
    assert any(n.endswith("/processes.parquet") for n in names)
    print(f"capture --ray took {took:.1f} s")
