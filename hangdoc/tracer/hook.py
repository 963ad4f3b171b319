"""Run a callback right after a module finishes importing, whenever that happens.

Why: the tracer must wrap torch.distributed, vLLM and SGLang without the application importing hangdoc,
and without importing those (heavy) libraries itself. A finder at the front of sys.meta_path watches for
a handful of module names; for any other import it returns None after one dict lookup, so a library that
is never imported costs nothing.
"""
from __future__ import annotations

import importlib.abc
import sys
from types import ModuleType
from typing import Any, Callable

Callback = Callable[[ModuleType], None]


def _report(name: str, exc: BaseException) -> None:
    print(f"hangdoc: tracer could not wrap {name}: {type(exc).__name__}: {exc}", file=sys.stderr)


def run_callbacks(module: ModuleType, callbacks: list[Callback]) -> None:
    """Callbacks never break the application's import: a failure is one line on stderr."""
    for cb in callbacks:
        try:
            cb(module)
        except Exception as exc:
            _report(module.__name__, exc)


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader, then runs the callbacks on the executed module."""

    def __init__(self, loader: Any, callbacks: list[Callback]) -> None:
        self._loader = loader
        self._callbacks = callbacks

    def __getattr__(self, name: str) -> Any:  # get_code, get_filename, is_package, resource readers...
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Put the real loader back first, so that nothing after this import ever sees the wrapper.
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        run_callbacks(module, self._callbacks)


class PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of watched modules."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callback]] = {}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        callbacks = self.callbacks.get(fullname)
        if callbacks is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader, callbacks)
        return spec


_finder: PostImportFinder | None = None


def when_imported(name: str, callback: Callback) -> None:
    """Call `callback(module)` once `name` is imported: now if it already is, otherwise right after."""
    global _finder
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__spec__", None) is not None:
        initializing = getattr(module.__spec__, "_initializing", False)
        if not initializing:
            run_callbacks(module, [callback])
            return
    if _finder is None:
        _finder = PostImportFinder()
        sys.meta_path.insert(0, _finder)
    _finder.callbacks.setdefault(name, []).append(callback)


def remove() -> None:
    """Stop watching (tests, tracer.stop())."""
    global _finder
    if _finder is not None and _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    _finder = None
