"""Capture on real processes: a spinner, a blocked reader, vLLM-titled workers, an orphan, a process that dies
mid-capture, Ctrl-C, and a capture run as an unprivileged user. Every process is killed by pid in finally."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest

from hangdoc.bundle import Bundle
from hangdoc.redact import REDACTED
from hangdoc.capture.run import CaptureOptions, capture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc"),
]

# Every child parks a second thread on a futex, says ready, then spins / blocks on a pipe / sleeps.
# It exits by itself after 120 s in case the test runner dies before its finally.
CHILD = textwrap.dedent(
    """
    import ctypes, os, sys, threading, time
    threading.Timer(120, os._exit, (0,)).start()
    if len(sys.argv) > 2:
        ctypes.CDLL(None).prctl(15, sys.argv[2].encode()[:15], 0, 0, 0)  # PR_SET_NAME, as setproctitle does
    lock = threading.Lock()
    lock.acquire()
    threading.Thread(target=lock.acquire, daemon=True).start()
    print("ready", flush=True)
    mode = sys.argv[1]
    if mode == "spin":
        while True:
            pass
    elif mode == "pipe":
        sys.stdin.buffer.read()
    else:
        time.sleep(120)
    """
)
# Starts a worker (RANK env) and exits at once: the worker is orphaned.
LAUNCHER = textwrap.dedent(
    """
    import os, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], "sleep"], stdout=subprocess.PIPE,
                             env=dict(os.environ, RANK="7", WORLD_SIZE="8"))
    assert child.stdout.readline().strip() == b"ready"
    print(child.pid, flush=True)
    """
)
SECRET = "hf_" + "Zq7" * 10


class Procs:
    """Processes this test started, each in its own process group; killed by pid/group in stop()."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen] = []
        self.extra: list[int] = []

    def start(self, mode: str, *, env: dict[str, str] | None = None, title: str | None = None) -> subprocess.Popen:
        args = [title or sys.executable, "-c", CHILD, mode] + ([title] if title else [])
        p = subprocess.Popen(
            args, executable=sys.executable, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=dict(os.environ, **(env or {})), start_new_session=True,
        )
        self.popens.append(p)
        assert p.stdout.readline().strip() == b"ready"
        return p

    def orphan(self) -> tuple[int, int]:
        """(launcher pid, orphaned worker pid)."""
        p = subprocess.Popen([sys.executable, "-c", LAUNCHER, CHILD], stdout=subprocess.PIPE, start_new_session=True)
        self.popens.append(p)
        child = int(p.stdout.readline())
        self.extra.append(child)
        p.wait(timeout=30)
        return p.pid, child

    def stop(self) -> None:
        for p in self.popens:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait(timeout=10)
        for pid in self.extra:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.stop()


def _rows(bundle: Bundle, table: str, pid: int) -> list[dict]:
    return [r for r in bundle.table(table).to_pylist() if r["pid"] == pid]


def _main_thread(bundle: Bundle, pid: int) -> list[dict]:
    return sorted((r for r in _rows(bundle, "thread_samples", pid) if r["tid"] == pid), key=lambda r: r["sample"])


def test_capture_distinguishes_spinning_from_blocked_and_finds_ranks(procs, tmp_path):
    spinner = procs.start("spin", env={"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0",
                                       "VLLM_API_KEY": "not-a-real-key", "NCCL_DEBUG": "INFO"})
    blocked = procs.start("pipe", env={"RANK": "1", "WORLD_SIZE": "4", "VLLM_HOST_TOKENISH": SECRET,
                                       "HF_TOKEN": SECRET})
    w0 = procs.start("sleep", title="VLLM::Worker_DP1_TP0")
    w1 = procs.start("sleep", title="VLLM::Worker_DP1_TP1")
    launcher, orphan = procs.orphan()

    pids = [spinner.pid, blocked.pid, w0.pid, w1.pid, orphan]
    result = capture(CaptureOptions(output=tmp_path / "b", pids=pids, samples=3, interval=0.3, pyspy=False))
    b = Bundle.open(result.path)
    assert not result.interrupted
    assert b.manifest["collectors"]["threads"]["ran"] and b.manifest["collectors"]["pystacks"]["ran"] is False

    # Spinner: running, no wait channel, CPU time growing. Blocked reader: sleeping in read, CPU time flat.
    spin = _main_thread(b, spinner.pid)
    assert [r["sample"] for r in spin] == [0, 1, 2]
    assert all(r["state"] == "R" and r["wchan"] == "0" for r in spin), spin
    assert spin[-1]["utime"] + spin[-1]["stime"] > spin[0]["utime"] + spin[0]["stime"]
    assert all(r["syscall"] in ("running", "-1") for r in spin)
    blk = _main_thread(b, blocked.pid)
    assert all(r["state"] == "S" and "pipe" in r["wchan"] and r["syscall"] == "read" for r in blk), blk
    assert blk[-1]["utime"] == blk[0]["utime"] and blk[-1]["voluntary_ctxt_switches"] == blk[0]["voluntary_ctxt_switches"]
    # The second thread of each child waits on a futex.
    futex = [r for r in _rows(b, "thread_samples", blocked.pid) if r["tid"] != blocked.pid and r["comm"] == "python"]
    assert any(r["syscall"] == "futex" and "futex" in r["wchan"] for r in futex)
    stacks = {r["tid"]: r["frames"] for r in _rows(b, "kernel_stacks", blocked.pid)}
    if os.geteuid() == 0:
        assert any("pipe" in f or "read" in f for f in stacks[blocked.pid])

    procs_by_pid = {r["pid"]: r for r in b.table("processes").to_pylist()}
    assert set(pids) == set(procs_by_pid)
    s, k = procs_by_pid[spinner.pid], procs_by_pid[blocked.pid]
    assert (s["global_rank"], s["local_rank"], s["world_size"], s["rank_source"], s["role"]) == (0, 0, 4, "env", "worker")
    assert (k["global_rank"], k["rank_source"]) == (1, "env")
    # Titles: DP1 x TP size 2 (two sibling workers) -> global ranks 2 and 3.
    t0, t1 = procs_by_pid[w0.pid], procs_by_pid[w1.pid]
    assert (t0["title"], t0["global_rank"], t0["dp_rank"], t0["tp_rank"], t0["rank_source"]) == (
        "VLLM::Worker_DP1_TP0", 2, 1, 0, "title")
    assert (t1["global_rank"], t1["rank_source"]) == (3, "title")
    assert _main_thread(b, w0.pid)[0]["comm"] == "VLLM::Worker_DP"  # prctl name, 15 characters
    # Env: allow-list only, secrets redacted by name and by value.
    senv, kenv = dict(s["env"]), dict(k["env"])
    assert senv["VLLM_API_KEY"] == REDACTED and senv["NCCL_DEBUG"] == "INFO" and senv["RANK"] == "0"
    assert kenv["VLLM_HOST_TOKENISH"] == REDACTED and "HF_TOKEN" not in kenv and "PATH" not in kenv
    # Orphan: its launcher exited, it was re-parented.
    o = procs_by_pid[orphan]
    assert o["parent_alive"] is False and o["ppid"] != launcher
    assert (o["global_rank"], o["rank_source"]) == (7, "env")
    assert all(r["status"] != "gone" for r in procs_by_pid.values())


class KillOnSample:
    """Progress that kills a victim once the first thread sample is taken."""

    def __init__(self, victim: subprocess.Popen) -> None:
        self.victim = victim

    def start(self, name, what):
        pass

    def finish(self, name, ok, text):
        pass

    def update(self, name, text):
        if name == "threads" and text.startswith("sample 1/"):
            os.killpg(self.victim.pid, signal.SIGKILL)
            self.victim.wait(timeout=10)  # reaped: gone, not a zombie


def test_process_killed_mid_capture_is_recorded_as_gone(procs, tmp_path):
    victim = procs.start("sleep", env={"RANK": "2"})
    alive = procs.start("pipe")
    result = capture(
        CaptureOptions(output=tmp_path / "b", pids=[victim.pid, alive.pid], samples=3, interval=0.3, pyspy=False),
        KillOnSample(victim),
    )
    b = Bundle.open(result.path)
    by_sample = {}
    for r in _rows(b, "thread_samples", victim.pid):
        by_sample.setdefault(r["sample"], set()).add(r["state"])
    assert by_sample[0] == {"S"} and by_sample[1] == {"gone"} and 2 not in by_sample
    assert len(_rows(b, "thread_samples", alive.pid)) >= 3 * 2  # the live one kept being sampled
    rows = {r["pid"]: r for r in b.table("processes").to_pylist()}
    assert rows[victim.pid]["status"] == "gone" and rows[victim.pid]["global_rank"] == 2
    assert rows[alive.pid]["status"] != "gone"
    assert b.manifest["collectors"]["threads"]["ran"] is True
    assert any(f"pid {victim.pid}" in n and "gone" in n for n in b.notes)


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, CI="true")
    return subprocess.Popen([sys.executable, "-m", "hangdoc.cli", "capture", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_capture_redacts_the_bundle_it_writes(procs, tmp_path):
    """Log lines, titles, argv, env and notes in the bundle itself: it gets copied around as it is."""
    password = "correct-horse-battery"  # no token shape: known only as the value of DB_PASSWORD
    secrets = {"bearer": "Zm9vYmFyYmF6cXV4MTIzNDU2", "url": "p4ssw0rd-in-url", "sk": "sk-proj-" + "aB3d" * 6,
               "hf": "hf_" + "Zq8x" * 8, "short": "hf_Q1", "password": password}
    target = procs.start("sleep", env={"RANK": "0", "DB_PASSWORD": password, "NCCL_SOCKET_IFNAME": "eth0",
                                       "VLLM_SHORT_CRED": secrets["short"], "NCCL_COPY": f"x{password}"},
                         title=f"VLLM::Worker_TP0 {password}")
    log = tmp_path / "server.log"
    log.write_text(  # a line's context is what the same process wrote before it
        f"(Worker_TP0 pid=12) Authorization: Bearer {secrets['bearer']}\n"
        f"(Worker_TP0 pid=12) fetching https://user:{secrets['url']}@hub.example.com/model\n"
        f"(Worker_TP0 pid=12) OPENAI_API_KEY={secrets['sk']} token {secrets['hf']} login {password}\n"
        "(Worker_TP0 pid=12) WARNING 10-22 17:38:02 [shm_broadcast.py:1] No available shared memory broadcast "
        f"block found in 60 seconds. db={password}\n"
    )
    result = capture(CaptureOptions(output=tmp_path / "b", pids=[target.pid], samples=1, interval=0.0,
                                    pyspy=False, logs=[str(log)]))
    b = Bundle.open(result.path)
    events = [e for e in b.table("log_events").to_pylist() if e["event"] != "seen"]
    assert events and len(events[0]["context"]) == 3
    stored = "\n".join(
        [(result.path / "manifest.json").read_text()]
        + [json.dumps(pq.read_table(f).to_pylist(), default=str) for f in result.path.glob("*.parquet")]
    )
    for name, value in secrets.items():
        assert value not in stored, name
    proc = _rows(b, "processes", target.pid)[0]
    assert dict(proc["env"])["NCCL_SOCKET_IFNAME"] == "eth0" and dict(proc["env"])["NCCL_COPY"] == f"x{REDACTED}"
    assert REDACTED in proc["title"] and "shared memory broadcast" in events[0]["text"]
    assert b.manifest["capture"]["redacted"]["log_events.context"] == 1


def test_cli_finds_the_job_without_a_selector(procs, tmp_path):
    worker = procs.start("sleep", title="VLLM::Worker_TP0")
    ranked = procs.start("sleep", env={"RANK": "0", "WORLD_SIZE": "1"})
    p = _cli("-o", str(tmp_path / "auto"), "--samples", "1", "--interval", "0", "--no-pyspy")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.strip() == str(tmp_path / "auto")
    assert "capture summary" in err and "threads" in err
    b = Bundle.open(tmp_path / "auto")
    reasons = {t["pid"]: t["reason"] for t in b.manifest["capture"]["targets"]}
    assert reasons[worker.pid] == "title/command line" and reasons[ranked.pid] == "rank environment"
    assert os.getpid() not in reasons and p.pid not in reasons  # never itself or the test runner


def test_cli_nothing_found_is_one_line_and_nonzero(tmp_path):
    p = _cli("-o", str(tmp_path / "none"), "--match", "^no-such-process-title-xyz$", "--no-pyspy")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 4
    assert err.strip().count("\n") == 0 and err.startswith("hangdoc: error: no target processes found")
    assert not (tmp_path / "none").exists()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a non-interactive shell starts


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# However pytest itself was started (a terminal, a background job of a script, nohup), each case sets the
# disposition capture starts with: default, or SIGINT ignored as `cmd &` in a script leaves it; SIGTERM too.
@pytest.mark.parametrize("start, sig", [(_default_sigint, signal.SIGINT), (_ignore_sigint, signal.SIGINT),
                                        (_ignore_sigint, signal.SIGTERM)], ids=["sigint", "sigint-ignored", "sigterm"])
def test_ctrl_c_keeps_what_was_collected(procs, tmp_path, start, sig):
    blocked = procs.start("pipe")
    p = _cli("-o", str(tmp_path / "int"), "--pid", str(blocked.pid), "--samples", "40", "--interval", "0.25",
             "--no-pyspy", preexec_fn=start)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            if "processes: ok" in line or not line:
                break
        time.sleep(0.8)  # a few thread samples
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 130, err
    b = Bundle.open(tmp_path / "int")
    assert b.manifest["capture"]["interrupted"] is True
    assert "capture interrupted" in err
    samples = {r["sample"] for r in _rows(b, "thread_samples", blocked.pid)}
    assert samples and max(samples) < 39
    threads = b.manifest["collectors"]["threads"]
    # the sampler saw the stop and returned in time (its samples kept), or was cut off at the grace period
    assert any(f"{len(samples)} of 40 samples" in n for n in threads["notes"]) or "interrupted" in (threads["error"] or "")
    assert b.rows("processes") == 1
    assert not [d for d in tmp_path.iterdir() if d.name.startswith(".int.")]  # no half-written temp dir left


NON_ROOT = textwrap.dedent(
    """
    import json, os, sys
    from hangdoc.capture import procfs, processes
    target = int(sys.argv[1])
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)  # nobody: everything below runs unprivileged
    out = procfs.collect_threads([target], "h", samples=2, interval=0.05)
    infos, read_notes = processes.read_processes([target])
    rows, row_notes = processes.process_rows(infos, "h")
    threads = out.tables["thread_samples"].to_pylist()
    print(json.dumps({
        "uid": os.getuid(), "threads": len(threads), "states": sorted({r["state"] for r in threads}),
        "syscalls": sorted({str(r["syscall"]) for r in threads}), "stacks": out.tables["kernel_stacks"].num_rows,
        "notes": out.notes, "env": rows[0]["env"], "row_notes": row_notes, "role": rows[0]["role"],
    }))
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_unprivileged_capture_degrades_with_notes(procs):
    target = procs.start("pipe", env={"RANK": "4"})
    p = subprocess.run([sys.executable, "-c", NON_ROOT, str(target.pid)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["uid"] == 65534
    assert got["threads"] >= 2 * 3 and got["states"] == ["S"]  # stat stays world-readable
    assert got["stacks"] == 0 and got["syscalls"] == ["None"]
    notes = "\n".join(got["notes"])
    assert "kernel stacks need root" in notes and "syscall" in notes
    assert got["env"] is None and any("environment unreadable" in n for n in got["row_notes"])
