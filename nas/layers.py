"""Small standalone layers and the activation registry, each with its analytic cost twin.

Layer choices are looked up by name in dicts (tests sweep them); unknown names fail with the
list of known ones.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import ACTIVATIONS, parse_activation
from .tracer import Shape, Tracer

__all__ = [
    "ACTIVATION_FACTORIES",
    "BlurPool2d",
    "ConvNormAct",
    "SpaceToDepth",
    "SqueezeExcite",
    "conv_norm_act_cost",
    "make_activation",
    "se_hidden",
    "squeeze_excite_cost",
]

#: activation name -> factory taking the optional parameter
ACTIVATION_FACTORIES: dict[str, Callable[[float | None], nn.Module]] = {
    "relu": lambda _: nn.ReLU(inplace=True),
    "relu6": lambda _: nn.ReLU6(inplace=True),
    "leaky_relu": lambda slope: nn.LeakyReLU(0.01 if slope is None else slope, inplace=True),
    "hardswish": lambda _: nn.Hardswish(inplace=True),
    "silu": lambda _: nn.SiLU(inplace=True),
    "gelu": lambda _: nn.GELU(),
    "identity": lambda _: nn.Identity(),
}
assert set(ACTIVATION_FACTORIES) == set(ACTIVATIONS), "config.ACTIVATIONS and the factories must agree"


def make_activation(spec: str | None) -> nn.Module:
    """Module for an activation spec such as ``"relu6"`` or ``"leaky_relu:0.001"``; None is identity."""
    if spec is None:
        return nn.Identity()
    name, param = parse_activation(spec)
    return ACTIVATION_FACTORIES[name](param)


class ConvNormAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> activation [-> anti-aliasing blur pool].

    ``act=None`` leaves the activation out (a block's last conv, a shortcut, a depthwise conv
    in HarDNet's DS layers). ``aa=True`` appends a stride-2 blur pool, TResNet's anti-aliased
    replacement for a strided conv.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: str | None = "relu", aa: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_activation(act)
        self.aa = BlurPool2d(cout) if aa else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aa(self.act(self.bn(self.conv(x))))


def conv_norm_act_cost(t: Tracer, name: str, x: Shape, cout: int, kernel: int = 3, stride: int = 1,
                       groups: int = 1, act: str | None = "relu", aa: bool = False) -> Shape:
    y = t.conv(f"{name}.conv", x, cout, kernel, stride, groups)
    y = t.bn(f"{name}.bn", y)
    y = t.activation(f"{name}.act", y, act)
    if aa:
        y = t.blur(f"{name}.aa", y)
    return y


class BlurPool2d(nn.Module):
    """Anti-aliased 2x downsampling: a fixed binomial [1,2,1]x[1,2,1]/16 depthwise filter.

    The filter is a non-persistent buffer, not a parameter: it never trains and does not
    appear in state dicts (so weights move freely between this and checkpoints without it).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        kernel = (a[:, None] * a[None, :]) / 16.0
        self.channels = channels
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=2, groups=self.channels)


class SpaceToDepth(nn.Module):
    """Rearrange each ``block x block`` patch into channels: (N, C, H, W) -> (N, C*b*b, H/b, W/b).

    Channel order is (row offset, column offset, input channel), the order TResNet's stem and
    its pretrained weights use.
    """

    def __init__(self, block: int = 4) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        b = self.block
        x = x.view(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return x.reshape(n, c * b * b, h // b, w // b)


def se_hidden(channels_ref: int, reduction: int, min_channels: int) -> int:
    """Hidden width of an SE module: ``max(channels_ref // reduction, min_channels)``."""
    return max(channels_ref // reduction, min_channels)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global mean -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.relu(self.fc1(s)))
        return x * torch.sigmoid(s)


def squeeze_excite_cost(t: Tracer, name: str, x: Shape, hidden: int) -> Shape:
    n, c, _, _ = x
    t.eltwise(f"{name}.mean", "reduce", x, 1)
    s = t.conv(f"{name}.fc1", (n, c, 1, 1), hidden, 1, bias=True)
    t.conv(f"{name}.fc2", s, c, 1, bias=True)
    t.eltwise(f"{name}.mul", "mul", x, 2)
    return x
