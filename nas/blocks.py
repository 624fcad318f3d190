"""Stages: the config -> recipe mapping of harmonic and residual stages.

Each stage type maps a `StageConfig` and its input channels to the recipe of a `Stage` (the
module classes of `nas.modules` with their plain arguments) and its output channels, once; the
recipe builds the stage, costs it and renders it for export. Stage parts run in this order:
``down`` (hard stages only) -> ``block``/``blocks`` -> ``se`` (placement ``output``) ->
``drop`` -> ``transition`` -> ``se`` (placement ``transition``).

Downsamplers and SE placements are registries too (`DOWNSAMPLER_OPS`, `SE_PLACEMENT_OPS`, keyed
by block type and then by the names in `config.DOWNSAMPLERS` / `config.SE_PLACEMENTS`), so a new
choice is one entry in one place.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

from torch import nn

from .config import BLOCKS, DOWNSAMPLERS, SE_PLACEMENTS, StageConfig
from .layers import se_hidden
from .links import BlockPlan, block_plan
from .modules import BasicBlock, BlurPool2d, Bottleneck, ConvNormAct, HarDBlock, SqueezeExcite, Stage
from .recipe import Recipe
from .tracer import Shape, Tracer

__all__ = [
    "DOWNSAMPLER_OPS",
    "HARD_DOWNSAMPLERS",
    "RESIDUAL_BLOCKS",
    "RESIDUAL_DOWNSAMPLERS",
    "SE_PLACEMENT_OPS",
    "STAGE_BUILDERS",
    "STAGE_COSTS",
    "STAGE_RECIPES",
    "HardDown",
    "ReducingConv",
    "SEPlacement",
    "build_stage",
    "plan_for",
    "stage_cost",
    "stage_out_channels",
    "stage_recipe",
]


# --- downsamplers and SE placements ---------------------------------------------------------


class HardDown(NamedTuple):
    """A hard stage's standalone 2x downsampling op, run before its block as part ``down``."""

    recipe: Callable[[int, str], Recipe | None]  # (channels, activation) -> recipe; None: no op

    def build(self, channels: int, act: str) -> nn.Module | None:
        r = self.recipe(channels, act)
        return None if r is None else r.build()

    def cost(self, t: Tracer, name: str, x: Shape, act: str) -> Shape:
        r = self.recipe(x[1], act)
        return x if r is None else r.cost(t, name, x)


class ReducingConv(NamedTuple):
    """How a residual block's reducing conv (BasicBlock.conv1, Bottleneck.conv2) applies its
    stride: ``blur`` runs it at stride 1 and a blur pool reduces after it (TResNet)."""

    blur: bool

    def recipe(self, cin: int, cout: int, kernel: int, stride: int, act: str) -> Recipe:
        aa = self.blur and stride == 2  # as in BasicBlock / Bottleneck
        return Recipe(ConvNormAct, cin, cout, kernel, stride=1 if aa else stride, act=act, aa=aa)

    def build(self, cin: int, cout: int, kernel: int, stride: int, act: str) -> nn.Module:
        return self.recipe(cin, cout, kernel, stride, act).build()

    def cost(self, t: Tracer, name: str, x: Shape, cout: int, kernel: int, stride: int, act: str) -> Shape:
        return self.recipe(x[1], cout, kernel, stride, act).cost(t, name, x)


#: hard-stage downsampler name -> recipe of the ``down`` part
HARD_DOWNSAMPLERS: dict[str, HardDown] = {
    "none": HardDown(lambda ch, act: None),
    "maxpool": HardDown(lambda ch, act: Recipe(nn.MaxPool2d, 2, 2)),
    "avgpool": HardDown(lambda ch, act: Recipe(nn.AvgPool2d, 2, 2)),
    "dwconv": HardDown(lambda ch, act: Recipe(ConvNormAct, ch, ch, 3, stride=2, groups=ch)),
    "conv": HardDown(lambda ch, act: Recipe(ConvNormAct, ch, ch, 3, stride=2, act=act)),
    "blur": HardDown(lambda ch, act: Recipe(BlurPool2d, ch)),
}
#: residual-stage downsampler name -> how the reducing conv applies the stride (``none``: it is always 1)
RESIDUAL_DOWNSAMPLERS: dict[str, ReducingConv] = {
    "none": ReducingConv(blur=False),
    "conv": ReducingConv(blur=False),
    "blur": ReducingConv(blur=True),
}
#: block type -> downsampler name -> entry; the names are exactly those of `config.DOWNSAMPLERS`
DOWNSAMPLER_OPS: dict[str, Mapping[str, HardDown | ReducingConv]] = {
    "hard": HARD_DOWNSAMPLERS,
    "basic": RESIDUAL_DOWNSAMPLERS,
    "bottleneck": RESIDUAL_DOWNSAMPLERS,
}
assert {b: set(ops) for b, ops in DOWNSAMPLER_OPS.items()} == {b: set(n) for b, n in DOWNSAMPLERS.items()}, \
    "downsampler registries must agree with config.DOWNSAMPLERS"


class SEPlacement(NamedTuple):
    """Where a stage's squeeze-and-excitation sits: right after the part or conv named ``site``
    (None: no SE); for a residual block, the block argument that receives its hidden width."""

    site: str | None
    arg: str | None = None

    def build(self, channels: int, hidden: int) -> nn.Module:
        return SqueezeExcite(channels, hidden)

    def cost(self, t: Tracer, name: str, x: Shape, hidden: int) -> Shape:
        return SqueezeExcite.cost(t, name, x, x[1], hidden)


#: block type -> SE placement name (as in `config.SE_PLACEMENTS`) -> the site it follows
SE_PLACEMENT_OPS: dict[str, dict[str, SEPlacement]] = {
    "hard": {"none": SEPlacement(None), "output": SEPlacement("block"), "transition": SEPlacement("transition")},
    "basic": {"none": SEPlacement(None), "output": SEPlacement("conv2", "se")},
    "bottleneck": {"none": SEPlacement(None), "mid": SEPlacement("conv2", "se_mid"),
                   "output": SEPlacement("conv3", "se")},
}
assert {b: set(ops) for b, ops in SE_PLACEMENT_OPS.items()} == {b: set(n) for b, n in SE_PLACEMENTS.items()}, \
    "SE placement registries must agree with config.SE_PLACEMENTS"


def _se_hidden(cfg: StageConfig, ref_channels: int) -> int:
    return se_hidden(ref_channels, cfg.se_reduction, cfg.se_min_channels)


# --- harmonic stages --------------------------------------------------------------------------


def plan_for(cfg: StageConfig, in_channels: int) -> BlockPlan:
    return block_plan(cfg.link_rule, cfg.depth, cfg.growth_rate, cfg.weight_factor, in_channels, cfg.keep_base)


def _hard_stage(cfg: StageConfig, cin: int) -> tuple[Recipe, int]:
    parts: dict[str, Recipe] = {}
    down = HARD_DOWNSAMPLERS[cfg.downsample].recipe(cin, cfg.activation)
    if down is not None:
        parts["down"] = down
    plan = plan_for(cfg, cin)
    parts["block"] = Recipe(HarDBlock, cin, links=[list(lk) for lk in plan.links], widths=list(plan.layer_out),
                            outputs=list(plan.outputs), act=cfg.activation, depthwise=cfg.depthwise)
    ch = plan.out_channels
    se = SE_PLACEMENT_OPS["hard"][cfg.se].site
    if se == "block":
        parts["se"] = Recipe(SqueezeExcite, ch, _se_hidden(cfg, ch))
    if cfg.transition_dropout:
        parts["drop"] = Recipe(nn.Dropout, cfg.transition_dropout)
    if cfg.transition:
        parts["transition"] = Recipe(ConvNormAct, ch, cfg.transition, 1, act=cfg.activation)
        ch = cfg.transition
    if se == "transition":
        parts["se"] = Recipe(SqueezeExcite, ch, _se_hidden(cfg, ch))
    return Recipe(Stage, **parts), ch


# --- residual stages --------------------------------------------------------------------------

#: residual block type -> module class (its ``expansion`` gives the output width)
RESIDUAL_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _residual_stage(cfg: StageConfig, cin: int) -> tuple[Recipe, int]:
    cls = RESIDUAL_BLOCKS[cfg.block]
    out = cfg.width * cls.expansion
    kwargs = dict(act=cfg.activation, post_act=cfg.post_activation, blur=RESIDUAL_DOWNSAMPLERS[cfg.downsample].blur,
                  shortcut=cfg.shortcut)
    se = SE_PLACEMENT_OPS[cfg.block][cfg.se].arg
    if se is not None:  # a bottleneck sizes both of its placements from the block output
        kwargs[se] = _se_hidden(cfg, out)
    blocks = []
    for i in range(cfg.depth):
        blocks.append(Recipe(cls, cin, cfg.width, stride=2 if (i == 0 and cfg.reduces) else 1, **kwargs))
        cin = out
    return Recipe(Stage, blocks=Recipe(nn.Sequential, *blocks)), out


# --- registries -------------------------------------------------------------------------------

#: block type -> (config, input channels) -> (recipe of the `Stage`, output channels)
STAGE_RECIPES: dict[str, Callable[[StageConfig, int], tuple[Recipe, int]]] = {
    "hard": _hard_stage,
    "basic": _residual_stage,
    "bottleneck": _residual_stage,
}
assert set(STAGE_RECIPES) == set(BLOCKS), "the stage registry must agree with config.BLOCKS"


def stage_recipe(cfg: StageConfig, in_channels: int) -> tuple[Recipe, int]:
    """The stage's recipe and its output channel count."""
    return STAGE_RECIPES[cfg.block](cfg, in_channels)


def build_stage(cfg: StageConfig, in_channels: int) -> tuple[nn.Sequential, int]:
    """The stage module and its output channel count."""
    recipe, out = stage_recipe(cfg, in_channels)
    return recipe.build(), out


def stage_cost(t: Tracer, name: str, cfg: StageConfig, x: Shape) -> Shape:
    return stage_recipe(cfg, x[1])[0].cost(t, name, x)


def stage_out_channels(cfg: StageConfig, in_channels: int) -> int:
    """Output channels of a stage, from the config alone."""
    if cfg.block == "hard":
        return cfg.transition or plan_for(cfg, in_channels).out_channels
    return cfg.width * RESIDUAL_BLOCKS[cfg.block].expansion


#: views of `STAGE_RECIPES` by what they do (module builder, cost twin), for code written against them
STAGE_BUILDERS: dict[str, Callable[[StageConfig, int], tuple[nn.Sequential, int]]] = {b: build_stage for b in BLOCKS}
STAGE_COSTS: dict[str, Callable[[Tracer, str, StageConfig, Shape], Shape]] = {b: stage_cost for b in BLOCKS}
