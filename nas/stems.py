"""Stem registry: every stem reduces the input 4x; each has a module builder and a cost twin."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from torch import nn

from .config import STEMS, StemConfig
from .layers import ConvNormAct, SpaceToDepth, conv_norm_act_cost
from .tracer import Shape, Tracer

__all__ = ["STEM_BUILDERS", "STEM_COSTS", "build_stem", "stem_cost"]


def _hardnet(cfg: StemConfig, cin: int) -> OrderedDict[str, nn.Module]:
    c0, c1 = cfg.channels
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    mods["conv1"] = ConvNormAct(cin, c0, 3, 2, act=cfg.activation)
    mods["conv2"] = ConvNormAct(c0, c1, 1 if cfg.depthwise else 3, act=cfg.activation)
    if cfg.depthwise:
        mods["down"] = ConvNormAct(c1, c1, 3, 2, groups=c1, act=None)
    else:
        mods["pool"] = nn.MaxPool2d(3, 2, 1)
    return mods


def _hardnet_cost(t: Tracer, cfg: StemConfig, x: Shape) -> Shape:
    c0, c1 = cfg.channels
    x = conv_norm_act_cost(t, "stem.conv1", x, c0, 3, 2, act=cfg.activation)
    x = conv_norm_act_cost(t, "stem.conv2", x, c1, 1 if cfg.depthwise else 3, act=cfg.activation)
    if cfg.depthwise:
        return conv_norm_act_cost(t, "stem.down", x, c1, 3, 2, groups=c1, act=None)
    return t.maxpool("stem.pool", x, 3, 2, 1)


def _resnet(cfg: StemConfig, cin: int) -> OrderedDict[str, nn.Module]:
    return OrderedDict(conv1=ConvNormAct(cin, cfg.channels[0], 7, 2, act=cfg.activation), pool=nn.MaxPool2d(3, 2, 1))


def _resnet_cost(t: Tracer, cfg: StemConfig, x: Shape) -> Shape:
    x = conv_norm_act_cost(t, "stem.conv1", x, cfg.channels[0], 7, 2, act=cfg.activation)
    return t.maxpool("stem.pool", x, 3, 2, 1)


def _deep(cfg: StemConfig, cin: int) -> OrderedDict[str, nn.Module]:
    c0, c1, c2 = cfg.channels
    return OrderedDict(
        conv1=ConvNormAct(cin, c0, 3, 2, act=cfg.activation),
        conv2=ConvNormAct(c0, c1, 3, act=cfg.activation),
        conv3=ConvNormAct(c1, c2, 3, act=cfg.activation),
        pool=nn.MaxPool2d(3, 2, 1),
    )


def _deep_cost(t: Tracer, cfg: StemConfig, x: Shape) -> Shape:
    c0, c1, c2 = cfg.channels
    x = conv_norm_act_cost(t, "stem.conv1", x, c0, 3, 2, act=cfg.activation)
    x = conv_norm_act_cost(t, "stem.conv2", x, c1, 3, act=cfg.activation)
    x = conv_norm_act_cost(t, "stem.conv3", x, c2, 3, act=cfg.activation)
    return t.maxpool("stem.pool", x, 3, 2, 1)


def _space_to_depth(cfg: StemConfig, cin: int) -> OrderedDict[str, nn.Module]:
    return OrderedDict(s2d=SpaceToDepth(4), conv1=ConvNormAct(cin * 16, cfg.channels[0], 3, act=cfg.activation))


def _space_to_depth_cost(t: Tracer, cfg: StemConfig, x: Shape) -> Shape:
    x = t.space_to_depth("stem.s2d", x, 4)
    return conv_norm_act_cost(t, "stem.conv1", x, cfg.channels[0], 3, act=cfg.activation)


STEM_BUILDERS: dict[str, Callable[[StemConfig, int], OrderedDict[str, nn.Module]]] = {
    "hardnet": _hardnet,
    "resnet": _resnet,
    "deep": _deep,
    "space_to_depth": _space_to_depth,
}
STEM_COSTS: dict[str, Callable[[Tracer, StemConfig, Shape], Shape]] = {
    "hardnet": _hardnet_cost,
    "resnet": _resnet_cost,
    "deep": _deep_cost,
    "space_to_depth": _space_to_depth_cost,
}
assert set(STEM_BUILDERS) == set(STEMS) == set(STEM_COSTS), "stem registries must agree with config.STEMS"


def build_stem(cfg: StemConfig, in_channels: int) -> nn.Sequential:
    return nn.Sequential(STEM_BUILDERS[cfg.type](cfg, in_channels))


def stem_cost(t: Tracer, cfg: StemConfig, x: Shape) -> Shape:
    return STEM_COSTS[cfg.type](t, cfg, x)
