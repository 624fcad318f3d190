"""The small standalone layers and the activation registry, under their historical names.

The classes live in `nas.modules` (torch-only, plain arguments, each with its ``cost``
classmethod); this module keeps the names other code and checkpoints' users import.
"""

from __future__ import annotations

from torch import nn

from .config import ACTIVATIONS
from .modules import ACTIVATIONS as ACTIVATION_FACTORIES
from .modules import BlurPool2d, ConvNormAct, SpaceToDepth, SqueezeExcite, make_act

__all__ = [
    "ACTIVATION_FACTORIES",
    "BlurPool2d",
    "ConvNormAct",
    "SpaceToDepth",
    "SqueezeExcite",
    "make_activation",
    "se_hidden",
]

assert set(ACTIVATION_FACTORIES) == set(ACTIVATIONS), "config.ACTIVATIONS and the factories must agree"


def make_activation(spec: str | None) -> nn.Module:
    """Module for an activation spec such as ``"relu6"`` or ``"leaky_relu:0.001"``; None is identity."""
    return make_act(spec)


def se_hidden(channels_ref: int, reduction: int, min_channels: int) -> int:
    """Hidden width of an SE module: ``max(channels_ref // reduction, min_channels)``."""
    return max(channels_ref // reduction, min_channels)
