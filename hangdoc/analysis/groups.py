"""Communicators: who is in them, which family they belong to, and the readable ids people use for them.

A communicator is its member set, not its name: vLLM names every process's TP group "tp:0" (a per-process
counter), so ranks 0-3 and 4-7 report the same name for two different communicators. Readable ids are
therefore re-derived here ("tp:1" = the tp communicator with the second-smallest first member), and families
come from descriptions ("tp:0", "TP", "tp_group") or, when those say nothing, from structure (equal-sized
communicators that partition the ranks).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

WORLD = "world"

# Words that carry no family information (FR's default description, empty names, bare numbers).
_UNINFORMATIVE = {"", "undefined", "none", "null", "unknown", "group", "pg", "process_group", "nccl", "gloo"}
_WORLD_WORDS = {"default_pg", "default", "world", "global", "defaultpg", "world_group"}
_ALIASES = {
    "tensor": "tp",
    "tensor_parallel": "tp",
    "tensor_model_parallel": "tp",
    "data": "dp",
    "data_parallel": "dp",
    "pipeline": "pp",
    "pipeline_parallel": "pp",
    "pipeline_model_parallel": "pp",
    "expert": "ep",
    "expert_parallel": "ep",
    "expert_model_parallel": "ep",
    "context": "cp",
    "context_parallel": "cp",
    "sequence": "sp",
    "sequence_parallel": "sp",
}
_SUFFIXES = ("_group", "group", "_pg", "pg", "_comm", "comm")


def family_from_text(text: str | None) -> str | None:
    """'tp:0' -> 'tp', 'TP' -> 'tp', 'tp_group' -> 'tp', 'default_pg' -> 'world'; None when it says nothing."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in _WORLD_WORDS:
        return WORLD
    t = re.split(r"[:/]", t, maxsplit=1)[0]
    t = re.sub(r"[\d\s_\-.]+$", "", t)
    for suffix in _SUFFIXES:
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)].rstrip("_-. ")
            break
    if t in _WORLD_WORDS:
        return WORLD
    if t in _UNINFORMATIVE or not re.match(r"^[a-z][a-z0-9_\-]*$", t):
        return None
    return _ALIASES.get(t, t)


@dataclass(frozen=True)
class Comm:
    """One communicator. `members` are global ranks; `members_known` is False when only the ranks that
    reported it are known (no group_ranks in the trace)."""

    index: int
    id: str
    name: str
    desc: str | None
    family: str
    members: tuple[int, ...]
    members_known: bool
    size: int
    p2p: bool = False  # the send/recv channel of a communicator (its own seq counter): id "pp:0/p2p"


@dataclass(frozen=True)
class CommSpec:
    """What the traces say about a communicator before it gets a family and id."""

    name: str
    desc: str | None
    members: tuple[int, ...]
    members_known: bool
    size: int
    p2p: bool = False


def _partitions(member_sets: list[tuple[int, ...]]) -> list[list[int]]:
    """Split equal-sized communicators into families whose members are disjoint (greedy, by first member)."""
    order = sorted(range(len(member_sets)), key=lambda i: member_sets[i])
    parts: list[tuple[set[int], list[int]]] = []
    for i in order:
        ms = set(member_sets[i])
        for used, idx in parts:
            if used.isdisjoint(ms):
                used |= ms
                idx.append(i)
                break
        else:
            parts.append((set(ms), [i]))
    return [idx for _, idx in parts]


def assign_families(specs: Sequence[CommSpec], world_size: int) -> list[str]:
    """A family name per communicator: from its description or name, else from structure."""
    families: list[str | None] = []
    for s in specs:
        fam = family_from_text(s.desc)
        if fam is None:
            fam = family_from_text(s.name)
        families.append(fam)
    named: dict[tuple[int, ...], str] = {}
    for s, fam in zip(specs, families):
        if fam is not None and fam != WORLD:
            named.setdefault(s.members, fam)
    unnamed = [i for i, f in enumerate(families) if f is None]
    by_size: dict[int, list[int]] = {}
    for i in unnamed:
        s = specs[i]
        if world_size > 1 and len(s.members) == world_size and s.members == tuple(range(world_size)):
            families[i] = WORLD
        else:
            by_size.setdefault(len(s.members), []).append(i)
    for size, idx in sorted(by_size.items()):
        parts = _partitions([specs[i].members for i in idx])
        for n, part in enumerate(parts):
            members = [specs[idx[j]].members for j in part]
            # The same member sets as a named family (a gloo twin of an NCCL group): adopt that name.
            adopted = {named.get(m) for m in members}
            if len(adopted) == 1 and None not in adopted:
                fam = adopted.pop()
            else:
                fam = f"g{size}" + ("" if n == 0 else chr(ord("a") + n))
            for j in part:
                families[idx[j]] = fam
    return [f or "group" for f in families]


def _number(specs: Sequence[CommSpec], families: Sequence[str]) -> list[str]:
    """'fam:n', n counting the family's communicators by smallest member; a lone world group is 'world'."""
    ids: list[str] = [""] * len(specs)
    by_family: dict[str, list[int]] = {}
    for i, fam in enumerate(families):
        by_family.setdefault(fam, []).append(i)
    for fam, idx in by_family.items():
        idx.sort(key=lambda i: (specs[i].members[:1] or (1 << 62,), specs[i].members, specs[i].name))
        if fam == WORLD and len(idx) == 1:
            ids[idx[0]] = WORLD
            continue
        for n, i in enumerate(idx):
            ids[i] = f"{fam}:{n}"
    return ids


def build_comms(specs: Sequence[CommSpec], world_size: int) -> list[Comm]:
    """Comms in input order, each with its family and a readable id numbered by smallest member.
    A p2p channel takes its communicator's id and family with '/p2p' appended."""
    main = [i for i, s in enumerate(specs) if not s.p2p]
    side = [i for i, s in enumerate(specs) if s.p2p]
    families: list[str] = [""] * len(specs)
    ids: list[str] = [""] * len(specs)
    fam_main = assign_families([specs[i] for i in main], world_size)
    for i, f, cid in zip(main, fam_main, _number([specs[i] for i in main], fam_main)):
        families[i], ids[i] = f, cid
    twin = {(specs[i].name, specs[i].members): i for i in main}
    alone = [i for i in side if (specs[i].name, specs[i].members) not in twin]
    fam_alone = assign_families([specs[i] for i in alone], world_size)
    for i, f, cid in zip(alone, fam_alone, _number([specs[i] for i in alone], fam_alone)):
        families[i], ids[i] = f, cid
    for i in side:
        t = twin.get((specs[i].name, specs[i].members))
        if t is not None:
            families[i], ids[i] = families[t], ids[t]
        families[i], ids[i] = families[i] + "/p2p", ids[i] + "/p2p"
    return [
        Comm(i, ids[i], s.name, s.desc, families[i], s.members, s.members_known, s.size, s.p2p)
        for i, s in enumerate(specs)
    ]


_PARALLEL = {"tp", "dp", "pp", "ep", "cp", "sp", "mp", "etp", "edp"}


def _display(family: str) -> str:
    """'tp' -> 'TP' as people write it; structural names ('g8') stay as they are."""
    return family.upper() if family in _PARALLEL else family


def rank_labels(comms: Iterable[Comm]) -> dict[int, str]:
    """'DP 1, TP rank 2': each rank's index in its communicator of every family, outermost family first.

    A family counts when each rank is in at most one of its communicators and they have 2+ members;
    the family whose members are farthest apart (largest stride) is the outermost coordinate.
    """
    by_family: dict[str, list[Comm]] = {}
    for c in comms:
        if c.family != WORLD and len(c.members) > 1 and not c.p2p:
            by_family.setdefault(c.family, []).append(c)
    coords: list[tuple[int, str, dict[int, int]]] = []
    for fam, cs in by_family.items():
        if len(cs) == 1 and fam not in _PARALLEL:
            continue  # one group of its kind (a CPU twin of the world, say) is no coordinate
        where: dict[int, int] = {}
        ok = True
        stride = 1 << 62
        for c in cs:
            for k, r in enumerate(c.members):
                if r in where:
                    ok = False
                    break
                where[r] = k
            if not ok:
                break
            stride = min([stride] + [b - a for a, b in zip(c.members, c.members[1:])])
        if ok:
            coords.append((stride, fam, where))
    coords.sort(key=lambda t: (-t[0], t[1]))
    ranks = sorted({r for _, _, w in coords for r in w})
    labels: dict[int, str] = {}
    for r in ranks:
        parts = [(fam, w[r]) for _, fam, w in coords if r in w]
        if not parts:
            continue
        words = [f"{_display(f)} {k}" for f, k in parts[:-1]]
        f, k = parts[-1]
        words.append(f"{_display(f)} rank {k}")
        labels[r] = ", ".join(words)
    return labels
