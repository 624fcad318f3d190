"""One-line descriptions of exceptions, for failure reasons stored in results and shown to users."""

from __future__ import annotations

__all__ = ["first_line", "failure_reason"]


def _message(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else ""


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of ``err``'s message (its type name when the message is empty), at most ``limit`` chars."""
    return (_message(err) or type(err).__name__)[:limit]


def failure_reason(err: BaseException, limit: int = 300) -> str:
    """``"Type: first line"`` — what a failed candidate records as its reason."""
    return f"{type(err).__name__}: {_message(err)}"[:limit]
