"""Where a process's rank comes from, in order of trust: trace, env, title, log, argv.

A trace header (the rank a collective recorder wrote) beats everything; torchrun/MPI/Slurm env comes
next; then vLLM / SGLang process titles (`VLLM::Worker_DP1_TP2`, `sglang::scheduler_DP0_TP3`), which
matter because those frameworks call setproctitle, and setproctitle blanks /proc/PID/environ; then the
same names in log prefixes (`(Worker_DP1_TP2 pid=123)`); argv (`--rank 3`) last. Pure functions only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

SOURCES = ("trace", "env", "title", "log", "argv")  # most trusted first

# (global rank, local rank, world size) variables of each launcher, most specific first. RANK is set per
# worker by torchrun; the others name an MPI/Slurm task, which is the rank only where tasks are the workers.
ENV_RANK_VARS = (
    ("RANK", "LOCAL_RANK", "WORLD_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
)

_TITLE = re.compile(r"^(?P<prefix>[A-Za-z][\w.-]*)::(?P<name>[A-Za-z][A-Za-z0-9_]*)")
# Parallelism indices in titles and log prefixes: Worker_DP1_PP0_TP2_EP5, "DP0 TP3".
_INDEX = re.compile(r"(?:^|[_\s\[(])(DP|PP|PCP|TP|DCP|EP)(\d+)(?=$|[_\s\])])")
_LOG_TITLE = re.compile(r"\((?P<name>[A-Za-z]+(?:_(?:DP|PP|PCP|TP|DCP|EP)\d+)+) pid=(?P<pid>\d+)\)")

_SIZE_FLAGS = {
    "tp": ("--tensor-parallel-size", "-tp", "--tp-size", "--tp"),
    "pp": ("--pipeline-parallel-size", "-pp", "--pp-size", "--pp"),
    "pcp": ("--prefill-context-parallel-size", "-pcp"),
}
_ARGV_FLAGS = {
    "global_rank": ("--rank", "--global-rank", "--global_rank"),
    "local_rank": ("--local-rank", "--local_rank"),
    "world_size": ("--world-size", "--world_size"),
    "dp_rank": ("--data-parallel-rank", "-dpr"),
}


@dataclass
class Ranks:
    global_rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    tp_rank: int | None = None
    dp_rank: int | None = None
    pp_rank: int | None = None
    ep_rank: int | None = None
    source: str | None = None  # where global_rank came from (one of SOURCES)

    def merged(self, other: "Ranks | None") -> "Ranks":
        """Fill this one's unknown fields from a less trusted reading."""
        if other is None:
            return self
        out = replace(self)
        for name in ("global_rank", "local_rank", "world_size", "tp_rank", "dp_rank", "pp_rank", "ep_rank"):
            if getattr(out, name) is None and getattr(other, name) is not None:
                setattr(out, name, getattr(other, name))
                if name == "global_rank":
                    out.source = other.source
        return out


@dataclass(frozen=True)
class Title:
    """A framework process title: `VLLM::Worker_DP1_TP2` -> framework 'vllm', name 'Worker', indices."""

    framework: str
    name: str
    indices: Mapping[str, int] = field(default_factory=dict)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def from_env(env: Mapping[str, str], *, launcher_vars: bool = True) -> Ranks | None:
    """torchrun / MPI / Slurm ranks. launcher_vars=False ignores MPI/Slurm task ids (a launcher's own env)."""
    for rank_var, local_var, size_var in ENV_RANK_VARS if launcher_vars else ENV_RANK_VARS[:1]:
        rank = _int(env.get(rank_var))
        if rank is not None:
            return Ranks(rank, _int(env.get(local_var)), _int(env.get(size_var)), source="env")
    return None


def parse_indices(text: str) -> dict[str, int]:
    """{'dp': 1, 'tp': 2} from 'Worker_DP1_TP2' or 'DP1 TP2'."""
    return {kind.lower(): int(n) for kind, n in _INDEX.findall(text)}


def parse_title(text: str | None) -> Title | None:
    """`VLLM::Worker_DP1_TP2`, `VLLM::EngineCore_DP0`, `sglang::scheduler_DP0_TP3` (any `PREFIX::name`)."""
    if not text:
        return None
    m = _TITLE.match(text.strip())
    if not m:
        return None
    prefix, full = m.group("prefix"), m.group("name")
    framework = {"vllm": "vllm", "sglang": "sglang"}.get(prefix.lower(), prefix.lower())
    base = re.split(r"_(?:DP|PP|PCP|TP|DCP|EP)?\d", full, maxsplit=1)[0]
    return Title(framework, base, parse_indices(full))


def sizes_from_argv(argv: Sequence[str]) -> dict[str, int]:
    """Parallel sizes a launcher was given: `vllm serve -tp 4 -pp 2` -> {'tp': 4, 'pp': 2}."""
    out: dict[str, int] = {}
    for kind, flags in _SIZE_FLAGS.items():
        value = _flag_value(argv, flags)
        if value is not None and value > 0:
            out[kind] = value
    return out


def parallel_sizes(index_sets: Sequence[Mapping[str, int]], argvs: Sequence[Sequence[str]]) -> dict[str, int]:
    """TP/PP/PCP sizes: from launcher argv when given, else one more than the largest index seen."""
    sizes: dict[str, int] = {}
    for argv in argvs:
        for kind, n in sizes_from_argv(argv).items():
            sizes.setdefault(kind, n)
    for kind in ("tp", "pp", "pcp"):
        seen = [ix[kind] for ix in index_sets if kind in ix]
        if kind not in sizes and seen:
            sizes[kind] = max(seen) + 1
    return sizes


def global_from_indices(indices: Mapping[str, int], sizes: Mapping[str, int]) -> int | None:
    """vLLM's world layout (TP fastest, then PCP, PP, DP): rank = ((dp*PP + pp)*PCP + pcp)*TP + tp.

    An index absent from the title means that dimension has size 1 (vLLM omits size-1 dimensions);
    an index present whose size is unknown makes the global rank unknown.
    """
    if not any(k in indices for k in ("dp", "pp", "pcp", "tp")):
        return None
    size = {}
    for kind in ("tp", "pcp", "pp"):
        if kind in indices:
            if kind not in sizes:
                return None
            size[kind] = sizes[kind]
        else:
            size[kind] = 1
    dp, pp, pcp, tp = (indices.get(k, 0) for k in ("dp", "pp", "pcp", "tp"))
    return ((dp * size["pp"] + pp) * size["pcp"] + pcp) * size["tp"] + tp


def from_indices(indices: Mapping[str, int], sizes: Mapping[str, int], source: str) -> Ranks:
    return Ranks(
        global_rank=global_from_indices(indices, sizes),
        tp_rank=indices.get("tp"),
        dp_rank=indices.get("dp"),
        pp_rank=indices.get("pp"),
        ep_rank=indices.get("ep"),
        source=source,
    )


def _flag_value(argv: Sequence[str], flags: Sequence[str]) -> int | None:
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in flags:
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) else ""
            return _int(value)
    return None


def from_argv(argv: Sequence[str]) -> Ranks | None:
    """`--rank 3 --local-rank 1 --world-size 8` style arguments."""
    values = {name: _flag_value(argv, flags) for name, flags in _ARGV_FLAGS.items()}
    if all(v is None for v in values.values()):
        return None
    return Ranks(source="argv", **values)


def holds_rank(name: str) -> bool:
    """Whether a title/prefix name is a process that owns a rank (a worker), not an engine or front end."""
    return re.split(r"_", name, maxsplit=1)[0].lower() in ("worker", "scheduler")


def log_titles(text: str) -> dict[int, str]:
    """pid -> worker name from vLLM log prefixes: '(Worker_DP1_TP2 pid=123) INFO ...'."""
    return {int(m.group("pid")): m.group("name") for m in _LOG_TITLE.finditer(text)}
