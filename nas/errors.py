"""One-line descriptions of exceptions (failure reasons stored in results and shown to users), and text
files read with one-line errors."""

from __future__ import annotations

from pathlib import Path

__all__ = ["first_line", "failure_reason", "read_text"]


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
