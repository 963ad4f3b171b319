"""Multi-node merging: bundles from several hosts align by global rank and per-communicator sequence number
(never wall time), and captures that overlap are counted once."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from hangdoc.analysis.pipeline import diagnose
from hangdoc.bundle import Bundle
from hangdoc.importers import load_inputs
from hangdoc.report import to_dict
from hangdoc.schema import table_from_rows

SEED001 = Path(__file__).resolve().parents[2] / "fixtures" / "seed001-tp4-dp2"


@pytest.fixture(scope="module")
def seed001() -> Bundle:
    return load_inputs([SEED001])


def _node(calls: pa.Table, host: str, ranks: set[int], created: float, skew: float) -> Bundle:
    """One node's capture: its ranks' calls, its host name, its clock `skew` seconds off (and running backwards
    within the node, so any ordering by time would come out wrong), and a process per rank whose pids repeat
    on every node."""
    mine = calls.filter(pc.is_in(calls.column("rank"), pa.array(sorted(ranks), pa.int64())))
    t = pc.add(pc.negate(mine.column("t_issue")), pa.scalar(skew, pa.float64()))
    mine = mine.set_column(mine.column_names.index("t_issue"), "t_issue", t)
    mine = mine.set_column(mine.column_names.index("host"), "host",
                           pa.array([host] * mine.num_rows).dictionary_encode())
    b = Bundle()
    b.manifest.update(host=host, created=created, inputs=[f"{host}.bundle"])
    b.add("collectives", mine)
    b.add("processes", table_from_rows("processes", [
        {"host": host, "pid": 1000 + r % 4, "ppid": 999, "parent_alive": True, "status": "sleeping", "global_rank": r, "world_size": 8,
         "rank_source": "env"} for r in sorted(ranks)]))
    return b


def _story(report: dict) -> tuple:
    return (report["verdict"]["kind"], report["verdict"]["culprit_ranks"], report["verdict"]["group"],
            [(f["kind"], f["ranks"], f["group"], f["seq"], f["op"], f["swap"]) for f in report["findings"]])


def test_nodes_with_skewed_clocks_merge_by_rank_and_sequence(seed001: Bundle) -> None:
    whole = _story(to_dict(diagnose(seed001)))
    calls = seed001.table("collectives")
    # node2's clock is 3 hours behind node1's and both run backwards: wall time says nothing usable
    node1 = _node(calls, "node1", {0, 1, 2, 3}, created=2_000.0, skew=5_000.0)
    node2 = _node(calls, "node2", {4, 5, 6, 7}, created=1_000.0, skew=5_000.0 - 3 * 3600)
    for order in ([node1, node2], [node2, node1]):
        merged = Bundle.merge(order)
        assert merged.rows("collectives") == calls.num_rows
        assert merged.rows("processes") == 8  # pid 1000 on node1 and pid 1000 on node2 are two processes
        report = to_dict(diagnose(merged))
        assert _story(report) == whole
        assert report["verdict"]["culprit_ranks"] == [6] and report["verdict"]["group"] == "tp:1"
        assert not any("counted once" in n for n in report["notes"])


def test_the_same_bundle_twice_is_counted_once(seed001: Bundle, tmp_path: Path) -> None:
    path = seed001.write(tmp_path / "node.bundle")
    once = Bundle.open(path)
    twice = Bundle.merge([Bundle.open(path), Bundle.open(path)])
    assert twice.rows("collectives") == once.rows("collectives")
    assert any("the same capture" in n for n in twice.notes)
    assert to_dict(diagnose(twice))["findings"] == to_dict(diagnose(once))["findings"]


def _capture(created: float, *, state5: str, calls: int, wchan: str, frames: list[str], status: str,
             rank: int = 0) -> Bundle:
    """One capture of host n1: a rank's calls on tp:0, one process, a thread sampled three times, one Python
    stack, two log lines (the same file both captures scanned)."""
    b = Bundle()
    b.manifest.update(host="n1", created=created)
    b.add("collectives", table_from_rows("collectives", [
        {"host": "n1", "rank": rank, "pid": 7, "group": "tp:0", "group_ranks": [0, 1], "seq": s, "op": "all_reduce",
         "state": state5 if s == 5 else "started" if s == calls else "completed"} for s in range(1, calls + 1)]))
    b.add("processes", table_from_rows("processes", [
        {"host": "n1", "pid": 7, "ppid": 1, "create_time": 50.0, "status": status, "global_rank": rank}]))
    b.add("thread_samples", table_from_rows("thread_samples", [
        {"host": "n1", "pid": 7, "tid": 7, "sample": k, "t": created + k, "state": "S", "wchan": wchan}
        for k in range(3)]))
    b.add("py_frames", table_from_rows("py_frames", [
        {"host": "n1", "pid": 7, "tid": 7, "sample": 0, "depth": d, "function": f, "file": "x.py", "line": d}
        for d, f in enumerate(frames)]))
    b.add("log_events", table_from_rows("log_events", [
        {"host": "n1", "file": "job.log", "line_no": i, "signature": "vllm_shm_broadcast_timeout", "severity": "warning",
         "text": "No available shared memory broadcast block found in 60 seconds."} for i in (10, 20)]))
    return b


def test_two_captures_of_one_host_merge_without_double_counting() -> None:
    early = _capture(100.0, state5="started", calls=5, wchan="futex_wait_queue", frames=["wait", "step"],
                     status="sleeping")
    late = _capture(160.0, state5="completed", calls=6, wchan="do_epoll_wait", frames=["poll", "loop", "main"],
                    status="zombie")
    other = _capture(130.0, state5="started", calls=5, wchan="x", frames=["a"], status="sleeping", rank=1)
    for t in other.tables:  # rank 1 on another host, with the same pid: nothing of it is a duplicate
        other.tables[t] = other.tables[t].set_column(other.tables[t].column_names.index("host"), "host",
                                                     pa.array(["n2"] * other.tables[t].num_rows).cast(
                                                         other.tables[t].schema.field("host").type))
    other.manifest["host"] = "n2"
    merged = Bundle.merge([late, other, early])

    calls = merged.table("collectives").filter(pc.equal(merged.table("collectives").column("host").cast(pa.string()), "n1"))
    seqs = sorted(zip(calls.column("seq").to_pylist(), calls.column("state").cast(pa.string()).to_pylist()))
    # each call once, seq 5 as the capture that saw it furthest along saw it
    assert seqs == [(1, "completed"), (2, "completed"), (3, "completed"), (4, "completed"), (5, "completed"),
                    (6, "started")]
    procs = merged.table("processes").to_pylist()
    assert sorted((p["host"], p["status"]) for p in procs) == [("n1", "zombie"), ("n2", "sleeping")]
    logs = merged.table("log_events").to_pylist()
    assert sorted((e["host"], e["line_no"]) for e in logs) == [("n1", 10), ("n1", 20), ("n2", 10), ("n2", 20)]

    samples = [r for r in merged.table("thread_samples").to_pylist() if r["host"] == "n1"]
    by_sample = {r["sample"]: (r["t"], r["wchan"]) for r in samples}
    assert len(samples) == 6 and sorted(by_sample) == list(range(6))
    # the later capture's samples come after the earlier one's
    assert [by_sample[k][1] for k in range(6)] == ["futex_wait_queue"] * 3 + ["do_epoll_wait"] * 3
    frames = [r for r in merged.table("py_frames").to_pylist() if r["host"] == "n1"]
    stacks: dict[int, list[str]] = {}
    for r in sorted(frames, key=lambda r: (r["sample"], r["depth"])):
        stacks.setdefault(r["sample"], []).append(r["function"])
    assert stacks == {0: ["wait", "step"], 1: ["poll", "loop", "main"]}  # two stacks, not one of five frames
    assert any("counted once" in n and "collectives 5" in n and "log_events 2" in n for n in merged.notes)

    d = to_dict(diagnose(merged))
    log_counts = [f["count"] for f in d["findings"] if f["kind"] == "log_signature"]
    single = [f["count"] for f in to_dict(diagnose(Bundle.merge([late, other])))["findings"]
              if f["kind"] == "log_signature"]
    assert log_counts == single


def test_a_directory_of_node_bundles_reads_as_those_bundles(seed001: Bundle, tmp_path: Path) -> None:
    """`hangdoc capture --ray` writes one bundle per node into a directory: that directory is one input."""
    calls = seed001.table("collectives")
    out = tmp_path / "ray-bundles"
    paths = [_node(calls, f"node{i + 1}", set(range(4 * i, 4 * i + 4)), created=1_000.0 * i, skew=0.0)
             .write(out / f"node{i + 1}") for i in range(2)]
    (out / ".ray-capture.json").write_text('{"nodes": []}')  # the per-node summary beside them is not a bundle
    whole = load_inputs([out])
    listed = load_inputs(paths)
    assert whole.rows("collectives") == listed.rows("collectives") == calls.num_rows
    assert {p["host"] for p in whole.manifest["parts"]} == {"node1", "node2"}
    assert _story(to_dict(diagnose(whole))) == _story(to_dict(diagnose(listed)))
