"""The generated torch.distributed wrappers (world of 1, gloo): their signatures, call sites, threads, the
ring wrapping during a call, and torch.compile seeing the original."""
from __future__ import annotations

import inspect
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from hangdoc.importers import hangdoc_trace  # noqa: E402
from hangdoc.tracer import activate, reader, torch_dist  # noqa: E402
from hangdoc.tracer import format as F  # noqa: E402
from tracer_world import traced  # noqa: E402,F401


def _rows(trace_dir: Path) -> list[dict]:
    files = sorted(trace_dir.glob("*.hdtrace"))
    assert len(files) == 1
    return hangdoc_trace.read(files).table("collectives").to_pylist()


def _noop(tensor: Any, op: Any = None, group: Any = None, async_op: bool = False) -> None:
    return None


def test_wrappers_have_the_original_parameters(traced: Path) -> None:
    for name in torch_dist.OPS:
        fn = getattr(dist.distributed_c10d, name, None)
        if fn is None or not getattr(fn, "__hangdoc_wrapped__", False):
            continue
        ours = inspect.signature(fn, follow_wrapped=False).parameters
        theirs = inspect.signature(fn.__wrapped__).parameters
        assert [(p.name, p.kind) for p in ours.values()] == [(p.name, p.kind) for p in theirs.values()], name
        assert all(ours[k].default is theirs[k].default for k in ours), name
    t = torch.ones(2)
    dist.all_reduce(tensor=t, op=dist.ReduceOp.MAX)  # keywords reach the original as such
    dist.broadcast(t, 0)
    with pytest.raises(TypeError):
        dist.all_reduce(t, nonsense=1)
    rows = _rows(traced)
    assert [(r["op"], r["reduce_op"], r["peer"]) for r in rows] == [("all_reduce", "MAX", None), ("broadcast", None, 0)]


def test_any_parameter_kind_is_passed_on(traced: Path) -> None:
    got = []

    def odd(tensor: Any, /, op: Any = None, *, group: Any = None, async_op: bool = False, **extra: Any) -> str:
        got.append((tensor, op, group, async_op, extra))
        return "result"

    wrapper = torch_dist.make_wrapper(odd, "all_reduce")
    def shape_of(fn: Any) -> list[tuple]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn, follow_wrapped=False).parameters.values()]

    assert shape_of(wrapper) == shape_of(odd)
    t = torch.ones(5)
    assert wrapper(t, dist.ReduceOp.MIN, async_op=False, tag=3) == "result"
    assert got == [(t, dist.ReduceOp.MIN, None, False, {"tag": 3})]
    with pytest.raises(TypeError):
        wrapper(tensor=t)  # positional-only, as in the original
    rows = _rows(traced)
    assert [(r["op"], r["reduce_op"], r["in_numel"], r["state"]) for r in rows] == [
        ("all_reduce", "MIN", 5, "completed")]


def test_call_sites_follow_the_caller_and_a_new_recorder(traced: Path) -> None:
    t = torch.ones(3)
    for _ in range(3):
        dist.all_reduce(t)  # line A
        dist.all_reduce(t)  # line B
    here = inspect.currentframe().f_lineno  # type: ignore[union-attr]
    line_a, line_b = here - 2, here - 1
    sites = [r["call_site"] for r in _rows(traced)]
    assert [int(s.split(" ")[0].rsplit(":", 1)[1]) for s in sites] == [line_a, line_b] * 3
    # A forked child starts a file, and a call-site table, of its own: a remembered site must not leak into it.
    def one_place() -> None:
        dist.all_reduce(t)

    one_place()
    activate._after_fork_in_child()
    one_place()
    rows = _rows(traced)
    assert len(rows) == 1 and rows[0]["call_site"] is not None
    assert rows[0]["call_site"].endswith("test_call_sites_follow_the_caller_and_a_new_recorder.<locals>.one_place")


def test_threads_share_one_wrapper(traced: Path) -> None:
    traced_noop = torch_dist.make_wrapper(_noop, "all_reduce")
    t = torch.ones(4, 2)

    def work() -> None:
        for i in range(1500):
            if i % 2:
                traced_noop(t)
            else:
                traced_noop(t, async_op=False)

    threads = [threading.Thread(target=work) for _ in range(4)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old)
    tf = reader.read(next(traced.glob("*.hdtrace")))
    assert tf.notes == [] and len(tf.records) == 6000
    assert sorted(tf.records["seq"].tolist()) == list(range(1, 6001))
    assert set(tf.records["state"].tolist()) == {F.COMPLETED}
    functions = {tf.sites[s].split(" ")[1] for s in tf.records["site"].tolist()}
    assert functions == {"test_threads_share_one_wrapper.<locals>.work"}
    assert len(set(tf.records["site"].tolist())) == 2  # the two calls in work()


def test_a_slot_reused_during_a_call_is_left_alone(traced: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that outlives a whole lap of the ring must not mark the record now in its slot."""
    monkeypatch.setenv("HANGDOC_TRACE_RECORDS", "16")
    activate._after_fork_in_child()  # the next call opens a recorder of 16 slots

    def failing(tensor: Any, op: Any = None, group: Any = None, async_op: bool = False) -> None:
        raise RuntimeError("peer went away")

    inner_ok = torch_dist.make_wrapper(_noop, "all_reduce")
    inner_bad = torch_dist.make_wrapper(failing, "all_reduce")

    def long_call(tensor: Any, op: Any = None, group: Any = None, async_op: bool = False) -> None:
        for _ in range(15):
            inner_ok(tensor)
        with pytest.raises(RuntimeError):
            inner_bad(tensor)  # the 16th record after ours: it takes our slot, and stays "issued"

    outer = torch_dist.make_wrapper(long_call, "all_reduce")
    outer(torch.ones(1))
    tf = reader.read(next(traced.glob("*.hdtrace")))
    assert len(tf.records) == 16 and tf.records["seq"].tolist() == list(range(2, 18))
    last = tf.records[-1]
    assert last["state"] == F.ISSUED and last["flags"] & F.F_RAISED
    assert set(tf.records["state"][:-1].tolist()) == {F.COMPLETED}


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace")
def test_torch_compile_sees_the_original(traced: Path) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()

    @torch.compile(backend="eager", fullgraph=True)
    def step(x: Any) -> Any:
        y = x * 2
        dist.all_reduce(y)
        dist.all_reduce(y, op=dist.ReduceOp.SUM)  # the default, passed explicitly
        return y + 1

    @torch.compile(backend="eager")
    def step_with_break(x: Any) -> Any:
        y = x * 2
        dist.broadcast(y, src=0)  # torch.compile cannot trace c10d's broadcast: the graph breaks in our frame
        return y + 1

    try:
        for fn in (step, step_with_break):
            assert fn(torch.ones(4)).tolist() == [3.0] * 4
            compiled = counters["frames"]["total"]
            for _ in range(3):
                assert fn(torch.ones(4)).tolist() == [3.0] * 4
            assert counters["frames"]["total"] == compiled, "compiled again on later calls"
        assert list(traced.glob("*.hdtrace")) == []  # nothing recorded while compiled
        dist.all_reduce(torch.ones(1))
        assert [r["op"] for r in _rows(traced)] == ["all_reduce"]
    finally:
        torch._dynamo.reset()
