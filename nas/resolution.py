"""Input sizes: a square side (``224``) or ``HxW`` (height x width, ``1080x1920`` for a landscape
full-HD frame), parsed once into ``(height, width)``.

`canonical_resolution` is the one stored form: an int for a square input (so every figure, cache
key and JSON record at a square size is what it always was) and the string ``"HxW"`` otherwise.
"""

from __future__ import annotations

import numbers
import re
from typing import Any, Union

from .errors import fail

__all__ = ["Resolution", "canonical_resolution", "format_resolution", "parse_resolution", "resolution_arg"]

#: what every function taking a resolution accepts: 224, "224", "1080x1920", (1080, 1920)
Resolution = Union[int, str, tuple[int, int]]

_EXPECTED = "a positive integer or HxW (height x width, e.g. 1080x1920)"
_HXW = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def _positive(v: Any) -> bool:
    """A positive integer, numpy's included (a pandas column of sizes holds numpy ints)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0


def parse_resolution(value: Any, name: str = "resolution") -> tuple[int, int]:
    """``(height, width)`` of ``value``; anything else is a one-line `ValueError` naming it."""
    if _positive(value):
        return int(value), int(value)
    if isinstance(value, str):
        m = _HXW.match(value)
        if m:
            h, w = int(m.group(1)), int(m.group(2))
        elif value.strip().isdigit():
            h = w = int(value)
        else:
            h = w = 0
        if h > 0 and w > 0:
            return h, w
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_positive(v) for v in value):
        return int(value[0]), int(value[1])
    fail(name, value, _EXPECTED)
    raise AssertionError  # fail always raises


def canonical_resolution(value: Any, name: str = "resolution") -> int | str:
    """The stored form of a resolution: ``224`` for a square input, ``"1080x1920"`` otherwise."""
    h, w = parse_resolution(value, name)
    return h if h == w else f"{h}x{w}"


def format_resolution(value: Any) -> str:
    """``"224x224"`` / ``"1080x1920"``: height x width, for messages and tables."""
    h, w = parse_resolution(value)
    return f"{h}x{w}"


def resolution_arg(text: str) -> int | str:
    """argparse ``type=`` for ``--resolution``: the canonical form, or argparse's usage error (exit 2)."""
    import argparse

    try:
        return canonical_resolution(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("resolution: ")) from None
