"""Communicator identity, families, readable ids and rank labels."""
from __future__ import annotations

import pytest

from collrows import call, history, table
from hangdoc.analysis.groups import CommSpec, build_comms, family_from_text, rank_labels
from hangdoc.analysis.view import build


@pytest.mark.parametrize(
    "text, family",
    [
        ("tp:0", "tp"), ("dp:3", "dp"), ("TP", "tp"), ("tp_group", "tp"), ("tensor_model_parallel_group", "tp"),
        ("pipeline_parallel", "pp"), ("ep:1", "ep"), ("default_pg", "world"), ("undefined", None), ("0", None),
        ("", None), (None, None), ("mp_group", "mp"),
    ],
)
def test_family_from_text(text, family):
    assert family_from_text(text) == family


def _spec(name, members, desc=None):
    return CommSpec(name=name, desc=desc, members=tuple(members), members_known=True, size=len(members))


def test_vllm_names_are_renumbered_by_member_set():
    # Every process calls its groups "tp:0" / "dp:0"; ids come from the members instead.
    specs = [_spec("tp:0", [4, 5, 6, 7]), _spec("tp:0", [0, 1, 2, 3])] + [_spec("dp:0", [i, i + 4]) for i in (3, 1, 2, 0)]
    comms = build_comms(specs, world_size=8)
    ids = {c.members: c.id for c in comms}
    assert ids[(0, 1, 2, 3)] == "tp:0" and ids[(4, 5, 6, 7)] == "tp:1"
    assert ids[(2, 6)] == "dp:2" and ids[(0, 4)] == "dp:0"


def test_structural_families_when_descriptions_say_nothing():
    # FR-like: names "0".."5", desc "undefined"; TP=2 x DP=2 gives two overlapping families of size 2.
    members = [[0, 1, 2, 3], [0, 1], [2, 3], [0, 2], [1, 3]]
    specs = [_spec(str(i), m, desc="undefined") for i, m in enumerate(members)]
    comms = build_comms(specs, world_size=4)
    assert comms[0].id == "world" and comms[0].family == "world"
    fam = {c.members: c.family for c in comms[1:]}
    assert fam[(0, 1)] == fam[(2, 3)] != fam[(0, 2)] == fam[(1, 3)]
    assert {c.id for c in comms[1:]} == {"g2:0", "g2:1", "g2b:0", "g2b:1"}


def test_unnamed_twin_of_a_named_group_adopts_its_family():
    specs = [_spec("tp:0", [0, 1]), _spec("tp:0", [2, 3]), _spec("7", [0, 1], desc="undefined"),
             _spec("8", [2, 3], desc="undefined")]
    comms = build_comms(specs, world_size=4)
    assert [c.family for c in comms] == ["tp"] * 4
    assert sorted(c.id for c in comms) == ["tp:0", "tp:1", "tp:2", "tp:3"]


def test_rank_labels_outer_family_first():
    specs = [_spec("tp", [0, 1, 2, 3]), _spec("tp", [4, 5, 6, 7])] + [_spec("dp", [i, i + 4]) for i in range(4)]
    labels = rank_labels(build_comms(specs, world_size=8))
    assert labels[6] == "DP 1, TP rank 2"
    assert labels[0] == "DP 0, TP rank 0"
    only_tp = rank_labels(build_comms([_spec("tp", range(8))], world_size=8))
    assert only_tp[3] == "TP rank 3"


def test_view_keys_communicators_by_members_not_name():
    rows = []
    for r in range(8):
        rows += history(r, "tp:0", 3, ranks=[r // 4 * 4 + i for i in range(4)])
    view = build(table(rows))
    assert len(view.comms) == 2
    assert sorted(c.members for c in view.comms) == [(0, 1, 2, 3), (4, 5, 6, 7)]


def test_rows_without_members_join_the_group_that_lists_their_rank():
    rows = []
    for r in range(4):
        rows += history(r, "0", 2, ranks=[0, 1] if r < 2 else [2, 3])
    rows += [call(1, "0", 3, ranks=None, size=2)]  # same process, same group name, members not recorded
    view = build(table(rows))
    assert sorted(c.members for c in view.comms) == [(0, 1), (2, 3)]
    assert view.n_rows == 9


def test_name_only_groups_use_the_reporting_ranks_and_world_size():
    rows = [call(r, "0", 1, ranks=None, size=4) for r in (0, 1, 2)]  # rank 3 missing; group is world-sized
    view = build(table(rows))
    (comm,) = view.comms
    assert comm.members == (0, 1, 2, 3) and comm.members_known
    assert view.missing_ranks == (3,)


def test_members_listed_only_on_a_later_row_of_a_pair():
    rows = []
    for r in range(4):
        pair_rows = history(r, "7", 3, ranks=[0, 1] if r < 2 else [2, 3])
        pair_rows[0]["group_ranks"] = None  # an importer may list members once, not necessarily first
        rows += pair_rows
    view = build(table(rows))
    assert sorted(c.members for c in view.comms) == [(0, 1), (2, 3)]


def test_members_listed_once_per_communicator():
    """The schema lists a communicator's members on one row; every other row (other ranks, the p2p channel)
    joins the member set of its group name that holds its rank, even where two sets share the name."""
    rows = []
    for r in range(8):
        pair_rows = history(r, "tp:0", 3, ranks=[r // 4 * 4 + i for i in range(4)])
        if r % 4:
            for row in pair_rows:
                row["group_ranks"] = None
        rows += pair_rows
    rows += [call(0, "tp:0", 1, "send", peer=1, ranks=None), call(1, "tp:0", 1, "recv", peer=0, ranks=None)]
    view = build(table(rows))
    main = sorted((c.members, c.members_known) for c in view.comms if not c.p2p)
    assert main == [((0, 1, 2, 3), True), ((4, 5, 6, 7), True)]
    (p2p,) = [c for c in view.comms if c.p2p]
    assert p2p.members == (0, 1, 2, 3) and p2p.id == "tp:0/p2p"
    assert view.missing_ranks == ()


def test_dictionary_encoded_columns_give_the_same_view():
    """Bundles hold string columns dictionary-encoded; a hand-built table of plain strings reads the same."""
    import pyarrow as pa

    rows = []
    for r in range(8):
        rows += history(r, "tp:0", 5, ranks=[r // 4 * 4 + i for i in range(4)], last_state="started")
    rows[3]["op"] = "broadcast"
    encoded = table(rows)
    plain = pa.table({n: (encoded.column(n).cast(pa.string()) if pa.types.is_dictionary(encoded.column(n).type)
                          else encoded.column(n)) for n in encoded.column_names})
    a, b = build(plain), build(encoded)
    assert (a.sig == b.sig).all() and (a.pair == b.pair).all() and (a.done == b.done).all()
    assert [c.id for c in a.comms] == [c.id for c in b.comms]
    assert [c.culprits for c in a.conflicts] == [c.culprits for c in b.conflicts] == [(0,)]


def test_a_lone_group_of_an_unknown_kind_is_no_coordinate():
    labels = rank_labels(build_comms([_spec("cpu", [0, 1]), _spec("0", [0, 1], desc="default_pg")], world_size=2))
    assert labels == {}
    labels = rank_labels(build_comms([_spec("tp", [0, 1])], world_size=2))
    assert labels == {0: "TP rank 0", 1: "TP rank 1"}


def test_signatures_stay_exact_when_call_classes_outgrow_their_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past 2^19 kinds of call (op, reduce op, dtype) the element counts move out of the signature; which
    calls match must not change (forced here by lowering the limit)."""
    from collrows import seed001_rows

    from hangdoc.analysis import view as view_mod

    rows = seed001_rows() + [call(0, "x", 1, op=f"op{i}", dtype=f"t{i % 3}") for i in range(5)]
    normal = build(table(rows))
    monkeypatch.setattr(view_mod, "_CLASSES", 2)
    tight = build(table(rows))
    same = lambda v: v.sig[:, None] == v.sig[None, :]  # noqa: E731
    assert (same(normal) == same(tight)).all()
    assert [(c.comm, c.seq, c.culprits) for c in normal.conflicts] == [(c.comm, c.seq, c.culprits) for c in tight.conflicts]
