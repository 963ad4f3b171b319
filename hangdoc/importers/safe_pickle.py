"""Load untrusted pickles that may only hold plain data (dicts, lists, tuples, strings, numbers, bools, None).

Why: a pickle can name any importable callable and have the loader call it (os.system, eval, ...).
Flight Recorder dumps come off machines we do not control, so nothing a pickle names is ever looked
up: every GLOBAL / STACK_GLOBAL / INST / OBJ / EXT opcode ends in find_class, which refuses, and
persistent ids are refused because no persistent_load exists. REDUCE and BUILD then have nothing to
call. The C unpickler is kept (subclassed) for speed.

Plain data can still be a bomb: a list of 10 references to the list below it, 40 levels deep, is a 2 KB
pickle that anything walking it (repr, a conversion, a loop per element) expands to 10^40 elements. The
unpickler itself builds only what the bytes spell out; `check_bounds` bounds what a reader will walk.
"""
from __future__ import annotations

import io
import pickle
from itertools import chain, compress
from typing import Any, Sequence


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for an object other than plain data; nothing it named was loaded or run."""


class BoundsError(ValueError):
    """Plain data past a bound: nested too deep, too many elements once shared references are followed, or
    one container longer than its field allows."""


CONTAINERS = frozenset({list, tuple, dict, set, frozenset})


def element_budget(n_bytes: int) -> int:
    """Elements a reader may reach in a pickle of n_bytes (shared references counted each time): far above
    what a real dump reaches per byte, far below a bomb's expansion."""
    return 1_000_000 + 64 * n_bytes


def check_bounds(obj: Any, *, max_depth: int, max_items: int, max_lens: Sequence[int] = ()) -> set[type]:
    """The types of the leaves of `obj` (a non-container is a leaf); BoundsError when containers nest more
    than `max_depth` deep, hold more than `max_items` elements in all (a shared container counted each
    time it is reached), or a container at depth d holds more than max_lens[d].

    Level by level, each level counted before it is expanded: a bomb is refused after a few steps, and
    the work is bounded by `max_items`. Only C-level iteration per element (map, chain, compress)."""
    level: list[Any] = [obj]
    total = 0
    leaves: set[type] = set()
    for depth in range(max_depth + 1):
        kinds = set(map(type, level))
        leaves |= kinds - CONTAINERS
        if not kinds & CONTAINERS:
            return leaves
        if depth == max_depth:
            raise BoundsError(f"nested more than {max_depth} levels deep")
        conts = level if kinds <= CONTAINERS else list(compress(level, map(CONTAINERS.__contains__, map(type, level))))
        sizes = list(map(len, conts))
        total += sum(sizes)
        if total > max_items:
            raise BoundsError(f"more than {max_items:,} elements once shared references are followed")
        if depth < len(max_lens) and max(sizes) > max_lens[depth]:
            raise BoundsError(f"a container of {max(sizes):,} elements where at most {max_lens[depth]:,} belong")
        if dict in kinds:
            dicts = [c for c in conts if type(c) is dict]
            rest = [c for c in conts if type(c) is not dict]
            level = list(chain(chain.from_iterable(rest), chain.from_iterable(dicts),
                               chain.from_iterable(map(dict.values, dicts))))
        else:
            level = list(chain.from_iterable(conts))
    return leaves


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        raise UnsafePickleError(f"refused to load {module}.{name}: only plain data is accepted from a pickle")


def loads(data: bytes) -> object:
    """The plain-data object held by `data`; UnsafePickleError when it names any class or function."""
    # BufferedReader: the C unpickler reads it through peek() in big chunks, BytesIO byte by byte (3x slower)
    return _PlainDataUnpickler(io.BufferedReader(io.BytesIO(data), buffer_size=1 << 16)).load()
