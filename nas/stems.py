"""Stem registry: every stem reduces the input 4x; each entry maps a `StemConfig` to the recipe
of a `Stem` (its named parts with their plain arguments), which builds, costs and exports it."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .config import STEMS, StemConfig
from .modules import ConvNormAct, SpaceToDepth, Stem
from .recipe import Recipe
from .tracer import Shape, Tracer

__all__ = ["STEM_BUILDERS", "STEM_COSTS", "STEM_RECIPES", "build_stem", "stem_cost", "stem_recipe"]


def _hardnet(cfg: StemConfig, cin: int) -> Recipe:
    c0, c1 = cfg.channels
    parts = dict(conv1=Recipe(ConvNormAct, cin, c0, 3, stride=2, act=cfg.activation),
                 conv2=Recipe(ConvNormAct, c0, c1, 1 if cfg.depthwise else 3, act=cfg.activation))
    if cfg.depthwise:
        parts["down"] = Recipe(ConvNormAct, c1, c1, 3, stride=2, groups=c1)
    else:
        parts["pool"] = Recipe(nn.MaxPool2d, 3, 2, 1)
    return Recipe(Stem, **parts)


def _resnet(cfg: StemConfig, cin: int) -> Recipe:
    return Recipe(Stem, conv1=Recipe(ConvNormAct, cin, cfg.channels[0], 7, stride=2, act=cfg.activation),
                  pool=Recipe(nn.MaxPool2d, 3, 2, 1))


def _deep(cfg: StemConfig, cin: int) -> Recipe:
    c0, c1, c2 = cfg.channels
    return Recipe(Stem,
                  conv1=Recipe(ConvNormAct, cin, c0, 3, stride=2, act=cfg.activation),
                  conv2=Recipe(ConvNormAct, c0, c1, 3, act=cfg.activation),
                  conv3=Recipe(ConvNormAct, c1, c2, 3, act=cfg.activation),
                  pool=Recipe(nn.MaxPool2d, 3, 2, 1))


def _space_to_depth(cfg: StemConfig, cin: int) -> Recipe:
    return Recipe(Stem, s2d=Recipe(SpaceToDepth, 4),
                  conv1=Recipe(ConvNormAct, cin * 16, cfg.channels[0], 3, act=cfg.activation))


#: stem type -> (config, input channels) -> recipe of the `Stem`
STEM_RECIPES: dict[str, Callable[[StemConfig, int], Recipe]] = {
    "hardnet": _hardnet,
    "resnet": _resnet,
    "deep": _deep,
    "space_to_depth": _space_to_depth,
}
assert set(STEM_RECIPES) == set(STEMS), "the stem registry must agree with config.STEMS"


def stem_recipe(cfg: StemConfig, in_channels: int) -> Recipe:
    return STEM_RECIPES[cfg.type](cfg, in_channels)


def build_stem(cfg: StemConfig, in_channels: int) -> nn.Sequential:
    return stem_recipe(cfg, in_channels).build()


def stem_cost(t: Tracer, cfg: StemConfig, x: Shape) -> Shape:
    return stem_recipe(cfg, x[1]).cost(t, "stem", x)


#: views of `STEM_RECIPES` by what they do (module builder, cost twin), for code written against them
STEM_BUILDERS: dict[str, Callable[[StemConfig, int], nn.Sequential]] = {
    name: (lambda cfg, cin, _f=f: _f(cfg, cin).build()) for name, f in STEM_RECIPES.items()}
STEM_COSTS: dict[str, Callable[[Tracer, StemConfig, Shape], Shape]] = {
    name: (lambda t, cfg, x, _f=f: _f(cfg, x[1]).cost(t, "stem", x)) for name, f in STEM_RECIPES.items()}
