"""How the app writes numbers and names: one format per quantity, the same in tables, metrics and hovers."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

__all__ = ["CIO_HELP", "MOC_HELP", "comparison_rows", "num", "runtime", "si", "stage_table"]

CIO_HELP = ("CIO (HarDNet's memory-traffic measure): the feature-map elements every convolution reads and writes, "
            "a concatenated input counted each time it is read; bytes = elements x 4 in fp32")
MOC_HELP = "MoC = MACs / CIO: compute per element of feature-map traffic (higher means more compute-bound)"


def _missing(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def num(v: Any, digits: int = 3, unit: str = "") -> str:
    """``v`` to ``digits`` significant digits (``–`` when missing)."""
    return "–" if _missing(v) else f"{float(v):.{digits}g}{unit}"


def runtime(name: Any, version: Any = "") -> str:
    """``onnxruntime 1.17.3``, ``eager 2.3.0``: what a measured latency ran under ("" when it was not measured)."""
    return "" if _missing(name) else f"{name} {'' if _missing(version) else version}".strip()


def si(v: Any) -> str:
    """12.3 k, 4.25 M, 1.2 G: counts of any size in a few characters (``–`` when missing; the space does not
    break, so a table cell never splits a number from its unit)."""
    if _missing(v):
        return "–"
    v = float(v)
    for scale, unit in ((1e9, "\u00a0G"), (1e6, "\u00a0M"), (1e3, "\u00a0k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def stage_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """`nas.explore.analysis.stage_rows` for display: counts in SI units, ``–`` where a column does not apply."""
    return [{"stage": str(r["stage"]), "block": str(r["block"]), "depth": "–" if _missing(r["depth"]) else str(r["depth"]),
             "SE": "–" if _missing(r["se"]) else str(r["se"]), "output": str(r["output"]), "params": si(r["params"]),
             "MACs": si(r["MACs"]), "CIO": si(r["CIO"]), "MoC": num(r["MoC"])} for r in rows]


def comparison_rows(a: Mapping[str, Any], b: Mapping[str, Any], accuracy_label: str, lat_a: float,
                    lat_b: float) -> list[dict[str, str]]:
    """Two trials' figures side by side with B / A, for the Compare view (a table never truncates a value)."""
    def ratio(x: Any, y: Any) -> str:
        return "–" if _missing(x) or _missing(y) or float(x) == 0 else f"{float(y) / float(x):.2f}x"

    items = [(accuracy_label, a.get("accuracy"), b.get("accuracy"), lambda v: num(v, 4)),
             ("latency (ms)", lat_a, lat_b, lambda v: num(v, 4)),
             ("CIO (elements)", a.get("cio"), b.get("cio"), si),
             ("MACs", a.get("macs"), b.get("macs"), si),
             ("params", a.get("params"), b.get("params"), si),
             ("MoC (MACs / CIO)", a.get("moc"), b.get("moc"), num)]
    return [{"": name, "A": fmt(x), "B": fmt(y), "B / A": ratio(x, y)} for name, x, y, fmt in items]
