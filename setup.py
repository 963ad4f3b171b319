"""Ships the tracer's start-up hook, `hangdoc-trace.pth`, at the top of site-packages.

pyproject.toml holds all the metadata. This file exists only because a .pth file must sit directly in a
site directory, and no declarative setuptools option puts one there for editable installs too. The hook
costs an interpreter one environment lookup at start-up; it imports hangdoc only when HANGDOC_TRACE_DIR
is set.
"""
from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "hangdoc-trace.pth"
PTH_LINE = (
    'import os; os.environ.get("HANGDOC_TRACE_DIR") and '
    '__import__("hangdoc.tracer.activate", fromlist=["_"]).start_from_env()\n'
)


class BuildPyWithPth(build_py):
    """Writes the .pth beside the packages: the wheel's root, or the editable wheel's root."""

    def run(self) -> None:
        super().run()
        root = self.build_lib
        if getattr(self, "editable_mode", False):
            # Editable wheels are assembled from the install command's target, not from build_lib.
            root = self.get_finalized_command("install").install_lib
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, PTH_NAME), "w", encoding="utf-8") as fh:
            fh.write(PTH_LINE)


setup(cmdclass={"build_py": BuildPyWithPth})
