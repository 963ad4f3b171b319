"""Load untrusted pickles that may only hold plain data (dicts, lists, tuples, strings, numbers, bools, None).

Why: a pickle can name any importable callable and have the loader call it (os.system, eval, ...).
Flight Recorder dumps come off machines we do not control, so nothing a pickle names is ever looked
up: every GLOBAL / STACK_GLOBAL / INST / OBJ / EXT opcode ends in find_class, which refuses, and
persistent ids are refused because no persistent_load exists. REDUCE and BUILD then have nothing to
call. The C unpickler is kept (subclassed) for speed.
"""
from __future__ import annotations

import io
import pickle


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for an object other than plain data; nothing it named was loaded or run."""


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        raise UnsafePickleError(f"refused to load {module}.{name}: only plain data is accepted from a pickle")


def loads(data: bytes) -> object:
    """The plain-data object held by `data`; UnsafePickleError when it names any class or function."""
    # BufferedReader: the C unpickler reads it through peek() in big chunks, BytesIO byte by byte (3x slower)
    return _PlainDataUnpickler(io.BufferedReader(io.BytesIO(data), buffer_size=1 << 16)).load()
