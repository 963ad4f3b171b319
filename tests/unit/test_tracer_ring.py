"""The recorder's file format read back by the reader and the importer: order, fields, wrap, torn and
truncated files, threads."""
from __future__ import annotations

import itertools
import shutil
import sys
import threading
from pathlib import Path

import pytest

from hangdoc.errors import InputError
from hangdoc.importers import hangdoc_trace, load_path
from hangdoc.tracer import format as F
from hangdoc.tracer import reader
from hangdoc.tracer.ring import Recorder, seq_counter

OP = F.OP_CODE
DT = F.DTYPE_CODE
RD = F.REDUCE_CODE


def _rec(tmp_path: Path, capacity: int = 64, rank: int = 6) -> Recorder:
    return Recorder(str(tmp_path / "node-15-4242.hdtrace"), capacity, rank=rank, world_size=8, local_rank=2)


def test_round_trip_through_importer(tmp_path: Path) -> None:
    rec = _rec(tmp_path)
    tp = rec.group("vllm", "tp:1", "tp:0", (4, 5, 6, 7), 2)
    dp = rec.group("vllm", "dp:2", "dp:0", (2, 6), 1)
    site = rec.site(sys._getframe())
    s1 = rec.write(dp, OP["all_reduce"], RD["SUM"], DT["int32"], 8, 8, (4, 2), -1, site, 0)
    rec.complete(s1)
    s2 = rec.write(tp, OP["all_reduce"], RD["SUM"], DT["bfloat16"], 15 * 3072, 15 * 3072, (15, 3072), -1, site, 0)
    rec.complete(s2)
    rec.write(tp, OP["all_gatherv"], 0, DT["int32"], 14 * 256, 4 * 14 * 256, (14, 256), -1, 0, 0)
    rec.write(tp, OP["broadcast"], 0, DT["float32"], 720, 720, (2, 3, 4, 5, 6), 5, 0, 0)
    rec.write(tp, OP["barrier"], 0, 0, 0, 0, (), -1, 0, 0)
    rec.close()

    bundle = hangdoc_trace.read([Path(rec.path)])
    rows = bundle.table("collectives").to_pylist()
    assert [r["op"] for r in rows] == ["all_reduce", "all_reduce", "all_gatherv", "broadcast", "barrier"]
    assert {r["rank"] for r in rows} == {6} and {r["pid"] for r in rows} == {rows[0]["pid"]}
    assert [(r["group"], r["seq"]) for r in rows] == [("dp:2", 1), ("tp:1", 1), ("tp:1", 2), ("tp:1", 3), ("tp:1", 4)]
    first, second, gatherv, bcast, barrier = rows
    assert first["group_ranks"] == [2, 6] and first["rank_in_group"] == 1 and first["group_size"] == 2
    assert second["group_ranks"] == [4, 5, 6, 7] and second["rank_in_group"] == 2
    # members are listed once per group (the collectives contract), not repeated on every row
    assert gatherv["group_ranks"] is None and bcast["group_ranks"] is None and barrier["group_ranks"] is None
    assert gatherv["rank_in_group"] == 2 and barrier["group_size"] == 4
    assert second["group_desc"] == "tp:0" and second["source"] == "hangdoc-trace"
    assert (second["reduce_op"], second["dtype"], second["in_shapes"]) == ("SUM", "bfloat16", [[15, 3072]])
    assert (first["state"], second["state"], gatherv["state"]) == ("completed", "completed", "issued")
    assert gatherv["reduce_op"] is None and gatherv["out_numel"] == 4 * 14 * 256
    assert bcast["peer"] == 5 and bcast["in_shapes"] is None and bcast["in_numel"] == 720  # 5 dims: no shape
    assert barrier["dtype"] is None and barrier["in_shapes"] is None
    assert second["call_site"].endswith("test_round_trip_through_importer")
    assert "test_tracer_ring.py:" in second["call_site"] and gatherv["call_site"] is None
    assert [r["record_id"] for r in rows] == [0, 1, 2, 3, 4]
    assert second["t_issue"] >= first["t_issue"] > 1.6e9
    assert bundle.notes == []


def test_header_fields_and_rank_set_later(tmp_path: Path) -> None:
    rec = _rec(tmp_path, rank=-1)
    g = rec.group("torch", "0", "default_pg", (0, 1), 1)
    rec.write(g, OP["all_reduce"], RD["MAX"], DT["float32"], 1, 1, (1,), -1, 0, 0)
    rec.set_rank(1, 2, 1)
    tf = reader.read(rec.path)
    assert (tf.rank, tf.world_size, tf.local_rank) == (1, 2, 1)
    assert tf.groups[0].ranks == (0, 1) and tf.groups[0].kind == "torch"
    assert "pytest" in tf.command or tf.command


def test_ring_wraps_and_keeps_the_newest(tmp_path: Path) -> None:
    rec = _rec(tmp_path, capacity=16)
    g = rec.group("torch", "0", "", (0, 1, 2, 3, 4, 5, 6, 7), 6)
    for i in range(40):
        rec.write(g, OP["all_reduce"], RD["SUM"], DT["float32"], i, i, (i,), -1, 0, 0)
    bundle = hangdoc_trace.read([Path(rec.path)])
    rows = bundle.table("collectives").to_pylist()
    assert [r["seq"] for r in rows] == list(range(25, 41))
    assert [r["in_numel"] for r in rows] == list(range(24, 40))
    assert any("ring wrapped" in n and "24" in n for n in bundle.notes)
    for i in range(40, 1500):
        rec.write(g, OP["all_reduce"], RD["SUM"], DT["float32"], i, i, (i,), -1, 0, 0)
    assert reader.read(rec.path).cursor == 1024


def test_torn_record_is_skipped_with_a_note(tmp_path: Path) -> None:
    rec = _rec(tmp_path, capacity=8)
    g = rec.group("torch", "0", "", (0, 1), 0)
    for i in range(10):
        rec.write(g, OP["all_reduce"], RD["SUM"], DT["float32"], i, i, (i,), -1, 0, 0)
    # A write cut short: the next record's head stamp landed in slot 2, its body and tail did not.
    off = rec.records_offset + 2 * F.RECORD_BYTES
    F.STAMP.pack_into(rec.mm, off, 11)
    rec.close()
    bundle = hangdoc_trace.read([Path(rec.path)])
    seqs = [r["seq"] for r in bundle.table("collectives").to_pylist()]
    assert seqs == [4, 5, 6, 7, 8, 9, 10]  # slot 2 held seq 3 (overwritten by seq 11 half-way): gone
    assert any("1 torn record" in n for n in bundle.notes)


def test_truncated_copy_reads_what_is_there(tmp_path: Path) -> None:
    rec = _rec(tmp_path, capacity=32)
    g = rec.group("torch", "0", "", (0, 1), 0)
    for i in range(20):
        rec.write(g, OP["broadcast"], 0, DT["uint8"], i, i, (i,), 0, 0, 0)
    rec.close()
    cut = tmp_path / "cut" / "node-15-4242.hdtrace"
    cut.parent.mkdir()
    data = Path(rec.path).read_bytes()
    cut.write_bytes(data[: rec.records_offset + 10 * F.RECORD_BYTES + 40])  # ends inside record 11
    bundle = load_path(cut.parent)
    rows = bundle.table("collectives").to_pylist()
    assert [r["seq"] for r in rows] == list(range(1, 11))
    assert any("truncated" in n for n in bundle.notes)


def test_garbage_and_future_versions_are_notes_not_crashes(tmp_path: Path) -> None:
    rec = _rec(tmp_path, capacity=8)
    g = rec.group("torch", "0", "", (0, 1), 0)
    rec.write(g, OP["all_reduce"], RD["SUM"], DT["float32"], 1, 1, (1,), -1, 0, 0)
    rec.close()
    (tmp_path / "junk.hdtrace").write_bytes(b"not a trace at all")
    future = tmp_path / "node-1-1.hdtrace"
    shutil.copy(rec.path, future)
    raw = bytearray(future.read_bytes())
    raw[8:12] = (F.VERSION + 1).to_bytes(4, "little")
    future.write_bytes(bytes(raw))
    bundle = load_path(tmp_path)
    assert bundle.table("collectives").num_rows == 1
    notes = " ".join(bundle.notes)
    assert "junk.hdtrace: skipped" in notes and "newer than this hangdoc reads" in notes


def test_directory_of_only_broken_traces_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(InputError):
        load_path(tmp_path)


def test_threads_never_share_a_slot_or_a_seq(tmp_path: Path) -> None:
    rec = _rec(tmp_path, capacity=20000)
    g = rec.group("torch", "0", "", (0, 1), 0)

    def work(k: int) -> None:
        for i in range(2000):
            stamp = rec.write(g, OP["all_reduce"], RD["SUM"], DT["float32"], k, k, (k, i), -1, 0, 0)
            rec.complete(stamp)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    tf = reader.read(rec.path)
    assert len(tf.records) == 8000 and tf.notes == []
    assert sorted(tf.records["seq"].tolist()) == list(range(1, 8001))
    assert set(tf.records["state"].tolist()) == {F.COMPLETED}
    per_thread = {k: sorted(r["dims"][1] for r in tf.records if r["numel"] == k) for k in range(4)}
    assert all(v == list(range(2000)) for v in per_thread.values())


def test_seq_wraps_at_32_bits_alike_everywhere(tmp_path: Path) -> None:
    assert list(itertools.islice(seq_counter(4), 8)) == [1, 2, 3, 1, 2, 3, 1, 2]
    assert next(seq_counter()) == 1
    rec = _rec(tmp_path)
    g = rec.group("torch", "0", "", (0, 1), 0)
    rec.write(g, OP["all_reduce"], RD["SUM"], DT["float32"], 1, 1, (1,), -1, 0, 0, seq=(1 << 32) + 5)
    assert reader.read(rec.path).records["seq"].tolist() == [5]


@pytest.mark.parametrize("ranks", [[0, 1, 2, 3], [0, 4], [1, 5, 9, 13], [0, 1, 5, 6, 7, 9], [3], list(range(0, 64, 2))])
def test_compact_ranks_round_trip(ranks: list[int]) -> None:
    text = F.compact_ranks(ranks)
    assert F.expand_ranks(text) == ranks
    assert len(text) <= len(",".join(map(str, ranks)))


def test_trace_file_is_reserved_read_only_and_replaced_on_pid_reuse(tmp_path: Path) -> None:
    """Blocks reserved up front (a store can never find a hole), read-only against a mistaken truncation by
    another user, and a later process with the same pid starts a new file rather than write into the old."""
    first = _rec(tmp_path, capacity=64)
    g = first.group("torch", "0", "", (0, 1), 0)
    first.write(g, OP["all_reduce"], RD["SUM"], DT["float32"], 1, 1, (1,), -1, 0, 0)
    st = Path(first.path).stat()
    assert st.st_mode & 0o777 == 0o444
    assert st.st_blocks * 512 >= st.st_size  # allocated, not sparse
    second = _rec(tmp_path, capacity=64)
    assert Path(second.path).stat().st_ino != st.st_ino
    assert reader.read(first.path).records.size == 0  # the new file holds nothing of the old one
    assert first.heads[first.records_offset >> 3] == 1  # and the old mapping still works for its owner
    first.close()
    second.close()
