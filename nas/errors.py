"""One-line descriptions of exceptions, for failure reasons stored in results and shown to users."""

from __future__ import annotations

__all__ = ["first_line", "failure_reason"]


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of ``err``'s message (its type name when the message is empty), at most ``limit`` chars."""
    text = str(err).strip()
    return (text.splitlines()[0].strip() if text else type(err).__name__)[:limit]


def failure_reason(err: BaseException, limit: int = 300) -> str:
    """``"Type: first line"`` — what a failed candidate records as its reason."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0].strip() if text else ''}"[:limit]
