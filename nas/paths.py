"""Where hardnas writes: ``runs/`` under the working directory, or ``$HARDNAS_RUNS``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["runs_dir"]


def runs_dir(create: bool = True) -> Path:
    """The output folder for studies, caches, fronts and exports (created on first use; a reader
    passes ``create=False``)."""
    path = Path(os.environ.get("HARDNAS_RUNS", "runs"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
