"""Named models: the canonical configs, looked up by name (unknown names list the known ones)."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

from torch import nn

from .config import ArchConfig, HeadConfig

__all__ = ["create_model", "get_config", "list_models"]


def _canonical() -> dict[str, ArchConfig]:
    from search_spaces.canonical import CANONICAL

    return CANONICAL


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the canonical models matching a shell-style ``pattern`` (``"hardnet*"``)."""
    return sorted(n for n in _canonical() if fnmatch.fnmatchcase(n, pattern))


def get_config(name: str) -> ArchConfig:
    """The canonical config called ``name``."""
    models = _canonical()
    if name not in models:
        raise ValueError(f"model: {name!r} is not known; known models: {', '.join(sorted(models))}")
    return models[name]


_HEAD_FIELDS = {f.name for f in dataclasses.fields(HeadConfig)}
_ARCH_FIELDS = {f.name for f in dataclasses.fields(ArchConfig)}


def with_overrides(config: ArchConfig, **overrides: Any) -> ArchConfig:
    """Replace top-level fields (``stem``, ``stages``, ``in_channels``...) or head fields
    (``num_classes``, ``dropout``) of a config; unknown keys list the allowed ones."""
    head_changes = {k: overrides.pop(k) for k in list(overrides) if k in _HEAD_FIELDS}
    for key in overrides:
        if key not in _ARCH_FIELDS:
            allowed = ", ".join(sorted(_ARCH_FIELDS | _HEAD_FIELDS))
            raise ValueError(f"override {key!r} is not allowed; allowed: {allowed}")
    if head_changes:
        overrides["head"] = dataclasses.replace(overrides.get("head", config.head), **head_changes)
    return dataclasses.replace(config, **overrides) if overrides else config


def create_model(name: str, num_classes: int = 1000, **overrides: Any) -> nn.Module:
    """Build a canonical model, e.g. ``create_model("hardnet68", num_classes=10, dropout=0.0)``."""
    from .model import build_model

    return build_model(with_overrides(get_config(name), num_classes=num_classes, **overrides))
