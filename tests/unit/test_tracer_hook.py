"""The post-import hook: callbacks run after the module executed, never on other imports, never break one."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from hangdoc.tracer import hook


@pytest.fixture()
def pkgdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "hd_probe_pkg").mkdir()
    (tmp_path / "hd_probe_pkg" / "__init__.py").write_text("VALUE = 1\n")
    (tmp_path / "hd_probe_pkg" / "mod.py").write_text(textwrap.dedent("""
        def f():
            return "original"
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("hd_probe_pkg")]:
            del sys.modules[name]
        hook.remove()


def test_callback_runs_after_import_and_loader_is_restored(pkgdir: Path) -> None:
    seen = []

    def patch(module) -> None:
        seen.append(module.__name__)
        module.f = lambda: "patched"

    hook.when_imported("hd_probe_pkg.mod", patch)
    assert seen == []
    import hd_probe_pkg  # noqa: F401  (the package itself is not watched)

    assert seen == []
    from hd_probe_pkg import mod

    assert seen == ["hd_probe_pkg.mod"] and mod.f() == "patched"
    assert type(mod.__loader__).__name__ != "_Loader" and type(mod.__spec__.loader).__name__ != "_Loader"


def test_already_imported_module_is_patched_at_once(pkgdir: Path) -> None:
    import hd_probe_pkg.mod  # noqa: F401

    seen = []
    hook.when_imported("hd_probe_pkg.mod", lambda m: seen.append(m.__name__))
    assert seen == ["hd_probe_pkg.mod"]


def test_failing_callback_does_not_break_the_import(pkgdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(module) -> None:
        raise RuntimeError("boom")

    hook.when_imported("hd_probe_pkg.mod", broken)
    from hd_probe_pkg import mod

    assert mod.f() == "original"
    assert "could not wrap hd_probe_pkg.mod: RuntimeError: boom" in capsys.readouterr().err


def test_unwatched_imports_pass_straight_through(pkgdir: Path) -> None:
    hook.when_imported("hd_probe_pkg.never", lambda m: None)
    finder = sys.meta_path[0]
    assert isinstance(finder, hook.PostImportFinder)
    assert finder.find_spec("hd_probe_pkg.mod", None) is None
    assert finder.find_spec("json", None) is None
