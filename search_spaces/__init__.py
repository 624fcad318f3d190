"""Declarative search spaces and the canonical configs (HarDNet, TResNet, ResNet-50) as data."""

from .canonical import CANONICAL

__all__ = ["CANONICAL"]
