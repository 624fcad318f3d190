"""One-line descriptions of exceptions (failure reasons stored in results and shown to users), and text
files read with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

#: the most values (and nesting levels) a space or config file may hold once YAML aliases are expanded:
#: far beyond any real file, far below a "billion laughs" file (a few lines of aliases that expand to 10^9)
MAX_VALUES = 100_000
MAX_DEPTH = 64

__all__ = ["MAX_DEPTH", "MAX_VALUES", "check_choice", "check_int", "check_size", "fail", "first_line", "failure_reason",
           "parse_reason", "read_text"]


def fail(name: str, value: Any, allowed: str) -> None:
    """Raise the one-line `ValueError` every argument check uses: ``name: value is not allowed; expected allowed``."""
    raise ValueError(f"{name}: {value!r} is not allowed; expected {allowed}")


def check_int(name: str, value: Any, lo: int = 1, hi: int | None = None, *, expected: str | None = None) -> int:
    """``value`` if it is an int (not a bool) in [``lo``, ``hi``]; else `fail` with ``expected`` (default:
    ``an integer >= lo`` or ``an integer in [lo, hi]``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        fail(name, value, expected or (f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"))
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices`` (names, or a registry's keys); else `fail` listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        fail(name, value, "one of " + ", ".join(choices))
    return value


def _message(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else ""


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of ``err``'s message (its type name when the message is empty), at most ``limit`` chars."""
    return (_message(err) or type(err).__name__)[:limit]


def failure_reason(err: BaseException, limit: int = 300) -> str:
    """``"Type: first line"`` — what a failed candidate records as its reason."""
    return f"{type(err).__name__}: {_message(err)}"[:limit]


def read_text(path: Path, what: str, expected: str) -> str:
    """``path``'s text as UTF-8; unreadable or binary files are a one-line `ValueError` naming ``what`` and the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {str(path)!r}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                         f"{err.start}); expected {expected}") from None
    except OSError as err:
        raise ValueError(f"{what} {str(path)!r}: cannot be read ({err.strerror or first_line(err)}); "
                         f"expected {expected}") from None


def parse_reason(err: BaseException) -> str:
    """One line on why JSON/YAML text could not be parsed: nesting too deep for the parser, a number
    too long for Python, or the parser's own first line."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    text = first_line(err)
    if "integer string conversion" in text:
        return "an integer has more than 4300 digits"
    return text


_SCALARS = frozenset({str, int, float, bool, type(None)})


def check_size(data: Any, what: str, expected: str) -> Any:
    """``data`` if, walked as a reader expands it, it holds at most `MAX_VALUES` values nested at most
    `MAX_DEPTH` deep; else a one-line `ValueError`. YAML aliases repeat a node by reference, so a few
    lines can stand for billions of values (or a node can contain itself) and any walk over them
    (validation, ``repr`` in an error) would hang. The walk stops at the limit: it costs at most that."""
    count, stack = 0, [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES or depth > MAX_DEPTH:
            raise ValueError(f"{what}: holds more than {MAX_VALUES:,} values or {MAX_DEPTH} levels of nesting once "
                             f"its YAML anchors/aliases are expanded; expected {expected}")
        kind = type(node)
        if kind in _SCALARS:  # the exact types first: isinstance against Mapping is slow
            continue
        if kind is dict or isinstance(node, Mapping):
            stack.extend((child, depth + 1) for item in node.items() for child in item)
        elif kind is list or isinstance(node, (list, tuple)):
            stack.extend((child, depth + 1) for child in node)
    return data
