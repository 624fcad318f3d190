"""Choices that stick: a widget's value survives the runs in which the widget is not drawn.

Streamlit forgets a keyed widget's value at the end of any run that does not draw it (another
view, an early return), and a widget whose options change falls back to its default. The app
calls `restore` before drawing a widget (it puts the kept value back, or the default when that
value is no longer allowed) and `keep` after. ``scope`` keeps one value per context, e.g. the
studies picked per storage URL, so switching storages and back restores each one's picks.
Works on any mutable mapping (``st.session_state`` in the app, a dict in the tests).
"""

from __future__ import annotations

from typing import Any, Callable, MutableMapping, Sequence

__all__ = ["KEPT", "keep", "restore"]

KEPT = "_kept"  # session-state key of the kept values: {"<widget key>@<scope>": value}


def _slot(key: str, scope: Any) -> str:
    return f"{key}@{scope}"


def _allowed(value: Any, options: Sequence[Any] | None, valid: Callable[[Any], bool] | None) -> Any:
    """``value`` if allowed; a list keeps its allowed items (None when none is left); None when not allowed."""
    if isinstance(value, (list, tuple)):
        items = [v for v in value if (options is None or v in options) and (valid is None or valid(v))]
        return items or None
    if value is None or (options is not None and value not in options) or (valid is not None and not valid(value)):
        return None
    return value


def restore(state: MutableMapping[str, Any], key: str, default: Any, options: Sequence[Any] | None = None,
            valid: Callable[[Any], bool] | None = None, scope: Any = "") -> Any:
    """Set widget ``key``'s value before it is drawn: its current value if still in this ``scope``, else the
    value kept for the scope, else ``default``; a value outside ``options`` or failing ``valid`` gives the default."""
    kept = state.setdefault(KEPT, {})
    same_scope = state.get(f"{KEPT}:{key}") == str(scope)
    value = state.get(key) if same_scope and key in state else kept.get(_slot(key, scope))
    value = _allowed(value, options, valid)
    if value is None:
        value = default
    state[key] = value
    state[f"{KEPT}:{key}"] = str(scope)
    kept[_slot(key, scope)] = value
    return value


def keep(state: MutableMapping[str, Any], key: str, scope: Any = "") -> None:
    """Remember widget ``key``'s value (call after drawing it)."""
    if key in state:
        state.setdefault(KEPT, {})[_slot(key, scope)] = state[key]
