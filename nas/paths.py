"""Where hardnas writes: ``runs/`` under the working directory, or ``$HARDNAS_RUNS``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["runs_dir"]


def runs_dir() -> Path:
    """The output folder for studies, caches, fronts and exports (created on first use)."""
    path = Path(os.environ.get("HARDNAS_RUNS", "runs"))
    path.mkdir(parents=True, exist_ok=True)
    return path
