"""Export of a selected architecture for download, through the export package's one entry point.

`nas.export.export_bytes(config, fmt, *, deploy, metadata, state_dict)` is imported lazily: the
app must start (and show everything else) in a tree or an install without the export package,
and ONNX export takes seconds, so bytes are made only when a download is asked for.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import ArchConfig
from ..errors import failure_reason

__all__ = ["DEPLOYABLE", "FORMATS", "SLOW", "export_available", "export_file", "file_name", "front_files",
           "metadata_of"]

#: format -> (file suffix, MIME type), in the order the buttons are shown
FORMATS: dict[str, tuple[str, str]] = {
    "py": (".py", "text/x-python"),
    "json": (".json", "application/json"),
    "onnx": (".onnx", "application/octet-stream"),
    "torchscript": (".pt", "application/octet-stream"),
}
#: formats that take seconds to make (a model is built and traced): made only when their button is clicked
SLOW: frozenset[str] = frozenset({"onnx", "torchscript"})
#: formats with a deploy variant (BatchNorm folded into the convs), as the export command's --deploy
DEPLOYABLE: frozenset[str] = frozenset({"py", "onnx", "torchscript"})


def export_available() -> str | None:
    """None when `nas.export.export_bytes` can be imported, else a one-line reason."""
    try:
        from ..export import export_bytes  # noqa: F401
    except Exception as err:  # ImportError, or the package failing to import
        return f"export is not available here ({failure_reason(err)})"
    return None


def metadata_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the search knows about a trial, as JSON-friendly metadata for the exported file.

    ``resolution`` (the study's) is also the input size the export package traces ONNX at.
    One function with the export command's: `nas.search.results.trial_metadata`.
    """
    from ..search.results import trial_metadata  # lazily: importing nas.search imports optuna

    return trial_metadata(row)


def file_name(config: ArchConfig, fmt: str, stem: str | None = None, deploy: bool = False) -> str:
    """``<name or arch_id>[-deploy].<suffix>``: a stable name for the downloaded file."""
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not allowed; expected one of {', '.join(FORMATS)}")
    base = (stem or config.name or f"arch_{config.arch_id}") + ("-deploy" if deploy and fmt in DEPLOYABLE else "")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)
    return safe + FORMATS[fmt][0]


def front_files(front: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    """``pareto.csv`` and ``pareto.json`` of a front, byte for byte as the search writes them
    (`nas.search.results.write_front`, into a temporary folder)."""
    from ..search.results import write_front

    with tempfile.TemporaryDirectory(prefix="hardnas-front-") as tmp:
        js, cs = write_front(Path(tmp), [dict(r) for r in front], [dict(r) for r in baselines])
        return {cs.name: cs.read_bytes(), js.name: js.read_bytes()}


def export_file(config: ArchConfig, fmt: str, metadata: Mapping[str, Any] | None = None, deploy: bool = False) -> bytes:
    """The bytes of ``config`` exported as ``fmt`` (``py``, ``json``, ``onnx``, ``torchscript``) by `nas.export`;
    ``deploy`` folds BatchNorm into the convs where the format has a deploy variant (`DEPLOYABLE`)."""
    from ..export import export_bytes

    return export_bytes(config, fmt, deploy=deploy and fmt in DEPLOYABLE, metadata=dict(metadata) if metadata else None)
