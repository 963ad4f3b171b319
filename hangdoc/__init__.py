"""hangdoc: diagnose hung distributed GPU jobs after the fact."""
from __future__ import annotations

__version__ = "0.1.0"
