"""vLLM / SGLang wrappers against stand-ins with vLLM's method names and signatures (vLLM itself needs a
build that matches this torch; tests/integration/test_tracer_vllm.py runs the real classes when present).

The stand-ins do what vLLM's do at the level the tracer sees: GroupCoordinator methods call a device
communicator, which calls PyNcclCommunicator; pynccl does nothing while `disabled`."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

torch = pytest.importorskip("torch")

from hangdoc.importers import hangdoc_trace  # noqa: E402
from hangdoc.tracer import activate, coordinators  # noqa: E402


class FakeNccl:
    """The layer under pynccl: remembers what reached the wire."""

    def __init__(self) -> None:
        self.calls: list[str] = []


class PyNcclCommunicator:  # vLLM 0.32 signatures
    def __init__(self, group, rank: int, world_size: int, wire: FakeNccl) -> None:
        self.group, self.rank, self.world_size, self.wire, self.disabled = group, rank, world_size, wire, False

    def all_reduce(self, in_tensor, out_tensor=None, op=None, stream=None):
        if self.disabled:
            return None
        self.wire.calls.append("all_reduce")
        return in_tensor.clone()

    def all_gatherv(self, output_tensor, input_tensor, sizes, stream=None):
        if self.disabled:
            return None
        self.wire.calls.append("all_gatherv")

    def send(self, tensor, dst, stream=None):
        if not self.disabled:
            self.wire.calls.append(f"send->{dst}")

    def recv(self, tensor, src, stream=None):
        if not self.disabled:
            self.wire.calls.append(f"recv<-{src}")


class GroupCoordinator:  # the methods of vLLM 0.32's GroupCoordinator the tracer wraps
    def __init__(self, ranks, rank, unique_name, comm) -> None:
        self.ranks, self.rank, self.unique_name = list(ranks), rank, unique_name
        self.world_size, self.rank_in_group = len(ranks), list(ranks).index(rank)
        self.local_rank = rank % 4
        self.cpu_group = comm.group if comm is not None else object()  # pynccl works on the cpu group
        self.device_group = object()
        self.comm = comm

    def _all_reduce_out_place(self, input_):
        return self.comm.all_reduce(input_)

    def _all_gather_out_place(self, input_, dim):
        return torch.cat([input_] * self.world_size, dim)

    def _reduce_scatter_out_place(self, input_, dim):
        return input_.chunk(self.world_size, dim)[self.rank_in_group]

    def all_gatherv(self, input_, dim=0, sizes=None):
        out = torch.empty(sum(sizes), *input_.shape[1:])
        self.comm.all_gatherv(out, input_, sizes)
        return out

    def reduce_scatterv(self, input_, dim=-1, sizes=None):
        return input_

    def broadcast(self, input_, src=0):
        return input_

    def send(self, tensor, dst=None):
        self.comm.send(tensor, (self.rank_in_group + 1) % self.world_size if dst is None else dst)

    def recv(self, size, dtype, src=None):
        t = torch.empty(size, dtype=dtype)
        self.comm.recv(t, (self.rank_in_group - 1) % self.world_size if src is None else src)
        return t

    def dispatch(self, hidden_states, topk_weights, topk_ids, is_sequence_parallel=False, extra_tensors=None):
        return hidden_states, topk_weights, topk_ids

    def combine(self, hidden_states, is_sequence_parallel=False):
        return hidden_states


@pytest.fixture()
def traced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(coordinators, "_torch_ranks", lambda group, size: tuple(range(4, 4 + size)))
    activate.start(tmp_path)
    coordinators.wrap_class(GroupCoordinator, coordinators.VLLM_COORDINATOR, coordinators._coordinator_entry("vllm"))
    coordinators.wrap_class(PyNcclCommunicator, coordinators.PYNCCL, coordinators._communicator_entry("vllm", "pynccl"))
    try:
        yield tmp_path
    finally:
        activate.stop()
    assert not hasattr(GroupCoordinator._all_reduce_out_place, "__hangdoc_wrapped__")


def _rows(path: Path) -> list[dict]:
    return hangdoc_trace.read(sorted(path.glob("*.hdtrace"))).table("collectives").to_pylist()


def test_seed001_style_calls_on_the_tp_group(traced: Path) -> None:
    wire = FakeNccl()
    comm = PyNcclCommunicator(object(), rank=2, world_size=4, wire=wire)
    tp = GroupCoordinator([4, 5, 6, 7], 6, "tp:0", comm)
    dp = GroupCoordinator([2, 6], 6, "dp:0", PyNcclCommunicator(object(), 1, 2, wire))
    hidden = torch.ones(15, 8, dtype=torch.bfloat16)
    dp._all_reduce_out_place(torch.ones(4, 2, dtype=torch.int32))
    tp._all_reduce_out_place(hidden)
    tp.all_gatherv(torch.ones(14, 256, dtype=torch.int32), 0, [14, 14, 14, 14])
    tp._all_gather_out_place(hidden, 0)
    tp.broadcast(hidden, src=1)
    tp.dispatch(hidden, torch.ones(15, 2), torch.ones(15, 2, dtype=torch.int64))
    tp.combine(hidden)
    comm.all_reduce(hidden)  # pynccl used directly (as vLLM's all2all managers do): named after its owner
    assert wire.calls == ["all_reduce", "all_reduce", "all_gatherv", "all_reduce"]  # reached the communicator
    rows = _rows(traced)
    assert [(r["group"], r["seq"], r["op"]) for r in rows] == [
        ("dp:2", 1, "all_reduce"), ("tp:1", 1, "all_reduce"), ("tp:1", 2, "all_gatherv"),
        ("tp:1", 3, "all_gather"), ("tp:1", 4, "broadcast"), ("tp:1", 5, "dispatch"), ("tp:1", 6, "combine"),
        ("tp:1/pynccl", 1, "all_reduce")]
    # one record per call although pynccl (also wrapped) did the work underneath
    assert all(r["rank"] == 6 for r in rows)
    ar, gv, ag, bc = rows[1], rows[2], rows[3], rows[4]
    assert (ar["reduce_op"], ar["dtype"], ar["in_shapes"], ar["group_ranks"], ar["rank_in_group"]) == (
        "SUM", "bfloat16", [[15, 8]], [4, 5, 6, 7], 2)
    assert (gv["dtype"], gv["in_shapes"], gv["reduce_op"]) == ("int32", [[14, 256]], None)
    assert ag["out_numel"] == 4 * 15 * 8 and bc["peer"] == 5
    assert rows[0]["group_ranks"] == [2, 6] and rows[0]["group_desc"] == "dp:0"
    assert {r["state"] for r in rows} == {"completed"}


def test_p2p_gets_a_channel_and_recv_without_a_tensor(traced: Path) -> None:
    wire = FakeNccl()
    pp = GroupCoordinator([2, 6], 6, "pp:0", PyNcclCommunicator(object(), 1, 2, wire))
    pp.send(torch.ones(3))
    got = pp.recv(torch.Size([2, 5]), torch.float16)
    assert got.shape == (2, 5) and wire.calls == ["send->0", "recv<-0"]
    rows = _rows(traced)
    assert [(r["group"], r["seq"], r["op"], r["peer"]) for r in rows] == [
        ("pp:2/p2p:2-6", 1, "send", 2), ("pp:2/p2p:2-6", 2, "recv", 2)]
    assert rows[1]["in_shapes"] == [[2, 5]] and rows[1]["dtype"] == "float16" and rows[1]["in_numel"] == 10


def test_direct_pynccl_calls_and_disabled_communicator(traced: Path) -> None:
    wire = FakeNccl()
    comm = PyNcclCommunicator(object(), rank=1, world_size=2, wire=wire)
    comm.all_reduce(torch.ones(4), None, torch.distributed.ReduceOp.MAX)
    comm.disabled = True
    comm.all_reduce(torch.ones(4))  # does nothing: nothing recorded
    rows = _rows(traced)
    assert [(r["group"], r["op"], r["reduce_op"], r["group_ranks"]) for r in rows] == [
        ("pynccl:2", "all_reduce", "MAX", [4, 5])]


def test_group_of_one_is_not_recorded_and_exceptions_are_marked(traced: Path) -> None:
    solo = GroupCoordinator([3], 3, "tp:0", None)
    solo.broadcast(torch.ones(2))

    broken = GroupCoordinator([0, 1], 0, "ep:0", None)  # no communicator: the call raises
    with pytest.raises(AttributeError):
        broken._all_reduce_out_place(torch.ones(2))
    rows = _rows(traced)
    assert [(r["group"], r["state"]) for r in rows] == [("ep:0", "issued")]


@pytest.mark.parametrize("name,ranks,label", [
    ("tp:0", (0, 1, 2, 3), "tp:0"), ("tp:0", (4, 5, 6, 7), "tp:1"), ("dp:0", (3, 7), "dp:3"),
    ("pp:0", (5, 7), "pp:3"), ("dp:0", (0, 4, 8, 12), "dp:0"), ("ep:1", (0, 1), "ep1:0"),
    ("odd", (1, 2, 7), "odd:1"),
])
def test_group_labels_are_the_same_on_every_member_and_distinct(name: str, ranks: tuple, label: str) -> None:
    assert coordinators.group_label(name, ranks) == label


def test_labels_of_a_family_are_dense_and_distinct() -> None:
    tp, dp, pp = 2, 4, 2  # vLLM's layout: rank = ((dp * pp) + p) * tp + t
    world = tp * dp * pp
    tps = [tuple(range(i, i + tp)) for i in range(0, world, tp)]
    dps = [tuple(range(i, world, tp * pp)) for i in range(tp * pp)]
    for groups in (tps, dps):
        labels = [coordinators.partition_index(g) for g in groups]
        assert sorted(labels) == list(range(len(groups)))


def test_no_trace_file_means_calls_go_through_unrecorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace directory that cannot be made (here: under a regular file): the library wrappers call through,
    record nothing and say nothing per call; tracing off was said once."""
    (tmp_path / "file").write_text("")
    activate.start(tmp_path / "file" / "trace")
    coordinators.wrap_class(GroupCoordinator, coordinators.VLLM_COORDINATOR, coordinators._coordinator_entry("vllm"))
    try:
        wire = FakeNccl()
        tp = GroupCoordinator([0, 1], 0, "tp:0", PyNcclCommunicator(object(), 0, 2, wire))
        for _ in range(3):
            assert tp._all_reduce_out_place(torch.ones(2)).tolist() == [1.0, 1.0]
        assert wire.calls == ["all_reduce"] * 3
    finally:
        activate.stop()
    err = capsys.readouterr().err
    assert err.count("hangdoc: tracing off in process") == 1 and "skipped" not in err, err
