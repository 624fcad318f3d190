"""Blocks and stages: harmonic dense blocks, basic and bottleneck residual blocks.

Each stage type has a builder (config -> `nn.Sequential` of named parts) and a cost twin that
walks the same parts in the same order and names. Stage parts run in this order:
``down`` (hard stages only) -> ``block``/``blocks`` -> ``se`` (placement ``output``) ->
``drop`` -> ``transition`` -> ``se`` (placement ``transition``).

Downsamplers and SE placements are registries too (`DOWNSAMPLER_OPS`, `SE_PLACEMENT_OPS`, keyed
by block type and then by the names in `config.DOWNSAMPLERS` / `config.SE_PLACEMENTS`); each
entry holds a module builder and its cost twin, so a new choice is one entry in one place.
"""


from collections import OrderedDict
from typing import Callable, List, Mapping, NamedTuple

import torch
from torch import nn

from .config import BLOCKS, DOWNSAMPLERS, SE_PLACEMENTS, StageConfig
from .layers import (
    BlurPool2d,
    ConvNormAct,
    SqueezeExcite,
    conv_norm_act_cost,
    make_activation,
    se_hidden,
    squeeze_excite_cost,
)
from .links import BlockPlan, block_plan
from .tracer import Shape, Tracer

__all__ = [
    "DOWNSAMPLER_OPS",
    "HARD_DOWNSAMPLERS",
    "RESIDUAL_DOWNSAMPLERS",
    "SE_PLACEMENT_OPS",
    "STAGE_BUILDERS",
    "STAGE_COSTS",
    "BasicBlock",
    "Bottleneck",
    "HarDBlock",
    "HardDown",
    "ReducingConv",
    "SEPlacement",
    "build_stage",
    "plan_for",
    "stage_cost",
    "stage_out_channels",
]


# --- downsamplers and SE placements ---------------------------------------------------------


class HardDown(NamedTuple):
    """A hard stage's standalone 2x downsampling op, run before its block as part ``down``."""

    build: Callable[[int, str], nn.Module | None]  # (channels, activation) -> module; None: no op
    cost: Callable[[Tracer, str, Shape, str], Shape]  # (tracer, name, x, activation) -> output shape


class ReducingConv(NamedTuple):
    """How a residual block's reducing conv (BasicBlock.conv1, Bottleneck.conv2) applies its stride.

    Residual stages downsample inside their first block, so the choice is how that conv is built.
    """

    build: Callable[[int, int, int, int, str], nn.Module]  # (cin, cout, kernel, stride, activation)
    cost: Callable[[Tracer, str, Shape, int, int, int, str], Shape]  # (tracer, name, x, cout, kernel, stride, act)


def _strided_conv(cin: int, cout: int, kernel: int, stride: int, act: str) -> nn.Module:
    return ConvNormAct(cin, cout, kernel, stride, act=act)


def _strided_conv_cost(t: Tracer, name: str, x: Shape, cout: int, kernel: int, stride: int, act: str) -> Shape:
    return conv_norm_act_cost(t, name, x, cout, kernel, stride, act=act)


def _blur_conv(cin: int, cout: int, kernel: int, stride: int, act: str) -> nn.Module:
    # TResNet anti-aliasing: at stride 2 the conv runs at stride 1 and a blur pool reduces after it
    aa = stride == 2
    return ConvNormAct(cin, cout, kernel, 1 if aa else stride, act=act, aa=aa)


def _blur_conv_cost(t: Tracer, name: str, x: Shape, cout: int, kernel: int, stride: int, act: str) -> Shape:
    aa = stride == 2
    return conv_norm_act_cost(t, name, x, cout, kernel, 1 if aa else stride, act=act, aa=aa)


#: hard-stage downsampler name -> builder and cost twin
HARD_DOWNSAMPLERS: dict[str, HardDown] = {
    "none": HardDown(lambda ch, act: None, lambda t, name, x, act: x),
    "maxpool": HardDown(lambda ch, act: nn.MaxPool2d(2, 2), lambda t, name, x, act: t.maxpool(name, x, 2, 2)),
    "avgpool": HardDown(lambda ch, act: nn.AvgPool2d(2, 2), lambda t, name, x, act: t.avgpool(name, x, 2, 2)),
    "dwconv": HardDown(lambda ch, act: ConvNormAct(ch, ch, 3, 2, groups=ch, act=None),
                       lambda t, name, x, act: conv_norm_act_cost(t, name, x, x[1], 3, 2, groups=x[1], act=None)),
    "conv": HardDown(lambda ch, act: ConvNormAct(ch, ch, 3, 2, act=act),
                     lambda t, name, x, act: conv_norm_act_cost(t, name, x, x[1], 3, 2, act=act)),
    "blur": HardDown(lambda ch, act: BlurPool2d(ch), lambda t, name, x, act: t.blur(name, x)),
}
#: residual-stage downsampler name -> how the reducing conv is built (``none``: the stride is always 1)
RESIDUAL_DOWNSAMPLERS: dict[str, ReducingConv] = {
    "none": ReducingConv(_strided_conv, _strided_conv_cost),
    "conv": ReducingConv(_strided_conv, _strided_conv_cost),
    "blur": ReducingConv(_blur_conv, _blur_conv_cost),
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
    (None: no SE), built by ``build(channels, hidden)`` and costed by ``cost(t, name, x, hidden)``."""

    site: str | None
    build: Callable[[int, int], nn.Module] = SqueezeExcite
    cost: Callable[[Tracer, str, Shape, int], Shape] = squeeze_excite_cost


#: block type -> SE placement name (as in `config.SE_PLACEMENTS`) -> the site it follows
SE_PLACEMENT_OPS: dict[str, dict[str, SEPlacement]] = {
    "hard": {"none": SEPlacement(None), "output": SEPlacement("block"), "transition": SEPlacement("transition")},
    "basic": {"none": SEPlacement(None), "output": SEPlacement("conv2")},
    "bottleneck": {"none": SEPlacement(None), "mid": SEPlacement("conv2"), "output": SEPlacement("conv3")},
}
assert {b: set(ops) for b, ops in SE_PLACEMENT_OPS.items()} == {b: set(n) for b, n in SE_PLACEMENTS.items()}, \
    "SE placement registries must agree with config.SE_PLACEMENTS"


def _se_after(cfg: StageConfig, site: str, channels: int, ref_channels: int) -> nn.Module | None:
    """The SE module that follows ``site`` under the stage's placement, or None if it sits elsewhere.

    Its hidden width is ``se_hidden(ref_channels, ...)``: a bottleneck sizes both of its
    placements from the block output, not from the channels the SE sees.
    """
    se = SE_PLACEMENT_OPS[cfg.block][cfg.se]
    if se.site != site:
        return None
    return se.build(channels, se_hidden(ref_channels, cfg.se_reduction, cfg.se_min_channels))


def _se_after_cost(t: Tracer, name: str, cfg: StageConfig, site: str, x: Shape, ref_channels: int) -> Shape:
    """Cost twin of `_se_after`: records the SE that follows ``site``, if any; SE keeps the shape."""
    se = SE_PLACEMENT_OPS[cfg.block][cfg.se]
    if se.site == site:
        se.cost(t, name, x, se_hidden(ref_channels, cfg.se_reduction, cfg.se_min_channels))
    return x


def _se_or_identity(cfg: StageConfig, site: str, channels: int, ref_channels: int) -> nn.Module:
    """`_se_after` for a residual block attribute, which is an `nn.Identity` when there is no SE."""
    se = _se_after(cfg, site, channels, ref_channels)
    return nn.Identity() if se is None else se


# --- harmonic dense block -------------------------------------------------------------------


def plan_for(cfg: StageConfig, in_channels: int) -> BlockPlan:
    return block_plan(cfg.link_rule, cfg.depth, cfg.growth_rate, cfg.weight_factor, in_channels, cfg.keep_base)


def _hard_layer(cin: int, cout: int, depthwise: bool, act: str) -> nn.Module:
    if depthwise:
        # pointwise first, then depthwise (HarDNet Fig. 3b); the depthwise conv has no activation
        return nn.Sequential(OrderedDict(pw=ConvNormAct(cin, cout, 1, act=act),
                                         dw=ConvNormAct(cout, cout, 3, groups=cout, act=None)))
    return ConvNormAct(cin, cout, 3, act=act)


def _hard_layer_cost(t: Tracer, name: str, x: Shape, cout: int, depthwise: bool, act: str) -> Shape:
    if depthwise:
        y = conv_norm_act_cost(t, f"{name}.pw", x, cout, 1, act=act)
        return conv_norm_act_cost(t, f"{name}.dw", y, cout, 3, groups=cout, act=None)
    return conv_norm_act_cost(t, name, x, cout, 3, act=act)


class HarDBlock(nn.Module):
    """Harmonic densely connected block: layer k reads the concatenation of its linked layers.

    The link pattern comes precomputed from the cached `BlockPlan`; forward only indexes it.
    """

    # typing.List and no postponed annotations in this module: TorchScript resolves these at run time
    links: List[List[int]]
    outputs: List[int]

    def __init__(self, plan: BlockPlan, depthwise: bool = False, act: str = "relu6") -> None:
        super().__init__()
        self.links = [list(lk) for lk in plan.links]
        self.outputs = list(plan.outputs)
        self.out_channels = plan.out_channels
        self.layers = nn.ModuleList(
            _hard_layer(cin, cout, depthwise, act) for cin, cout in zip(plan.layer_in, plan.layer_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, layer in enumerate(self.layers):
            link = self.links[i]
            inp = torch.cat([feats[j] for j in link], 1) if len(link) > 1 else feats[link[0]]
            feats.append(layer(inp))
        return torch.cat([feats[j] for j in self.outputs], 1)


def _hard_block_cost(t: Tracer, name: str, x: Shape, plan: BlockPlan, depthwise: bool, act: str) -> Shape:
    feats = [x]
    for i, (link, cout) in enumerate(zip(plan.links, plan.layer_out)):
        inp = t.concat(f"{name}.layers.{i}.cat", [feats[j] for j in link])
        feats.append(_hard_layer_cost(t, f"{name}.layers.{i}", inp, cout, depthwise, act))
    return t.concat(f"{name}.cat", [feats[j] for j in plan.outputs])


def _build_hard_stage(cfg: StageConfig, cin: int) -> tuple[OrderedDict[str, nn.Module], int]:
    parts: OrderedDict[str, nn.Module] = OrderedDict()

    def add(part: str, module: nn.Module | None) -> None:
        if module is not None:
            parts[part] = module

    add("down", HARD_DOWNSAMPLERS[cfg.downsample].build(cin, cfg.activation))
    plan = plan_for(cfg, cin)
    parts["block"] = HarDBlock(plan, cfg.depthwise, cfg.activation)
    ch = plan.out_channels
    add("se", _se_after(cfg, "block", ch, ch))
    if cfg.transition_dropout:
        parts["drop"] = nn.Dropout(cfg.transition_dropout)
    if cfg.transition:
        parts["transition"] = ConvNormAct(ch, cfg.transition, 1, act=cfg.activation)
        ch = cfg.transition
    add("se", _se_after(cfg, "transition", ch, ch))
    return parts, ch


def _hard_stage_cost(t: Tracer, name: str, cfg: StageConfig, x: Shape) -> Shape:
    x = HARD_DOWNSAMPLERS[cfg.downsample].cost(t, f"{name}.down", x, cfg.activation)
    plan = plan_for(cfg, x[1])
    x = _hard_block_cost(t, f"{name}.block", x, plan, cfg.depthwise, cfg.activation)
    x = _se_after_cost(t, f"{name}.se", cfg, "block", x, x[1])
    if cfg.transition:
        x = conv_norm_act_cost(t, f"{name}.transition", x, cfg.transition, 1, act=cfg.activation)
    return _se_after_cost(t, f"{name}.se", cfg, "transition", x, x[1])


# --- residual blocks ------------------------------------------------------------------------


def _shortcut(cin: int, cout: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    if kind == "avgpool" and stride == 2:
        parts["pool"] = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
        stride = 1
    parts["proj"] = ConvNormAct(cin, cout, 1, stride, act=None)
    return nn.Sequential(parts)


def _shortcut_cost(t: Tracer, name: str, x: Shape, cout: int, stride: int, kind: str) -> Shape:
    if stride == 1 and x[1] == cout:
        return x
    if kind == "avgpool" and stride == 2:
        x = t.avgpool(f"{name}.pool", x, 2, 2, ceil_mode=True)
        stride = 1
    return conv_norm_act_cost(t, f"{name}.proj", x, cout, 1, stride, act=None)


class _Residual(nn.Module):
    """Shared forward of residual blocks: main branch + shortcut, then the post-add activation.

    With an ``avgpool`` shortcut (TResNet) the shortcut runs before the main branch, with a
    ``conv`` shortcut (ResNet) after it, as in the reference implementations.
    """

    shortcut_first: bool

    def _setup_tail(self, cin: int, cout: int, stride: int, cfg: StageConfig) -> None:
        self.shortcut = _shortcut(cin, cout, stride, cfg.shortcut)
        self.shortcut_first = cfg.shortcut == "avgpool"
        self.post_act = make_activation(cfg.post_activation)

    def main(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut_first:
            residual = self.shortcut(x)
            out = self.main(x)
        else:
            out = self.main(x)
            residual = self.shortcut(x)
        return self.post_act(out + residual)

    def zero_init_last(self) -> None:
        """Start as identity: zero the scale of the last BatchNorm of the main branch."""
        raise NotImplementedError


class BasicBlock(_Residual):
    """Two 3x3 convs; stride (or anti-aliased blur) on the first; SE before the residual add."""

    expansion = 1

    def __init__(self, cin: int, cfg: StageConfig, stride: int) -> None:
        super().__init__()
        planes = cfg.width
        self.conv1 = RESIDUAL_DOWNSAMPLERS[cfg.downsample].build(cin, planes, 3, stride, cfg.activation)
        self.conv2 = ConvNormAct(planes, planes, 3, act=None)
        self._setup_tail(cin, planes, stride, cfg)
        self.se = _se_or_identity(cfg, "conv2", planes, planes)

    def main(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv2(self.conv1(x)))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)


class Bottleneck(_Residual):
    """1x1 -> 3x3 (stride or blur) -> 1x1 (x4); SE after the 3x3 (``mid``) or after conv3 (``output``)."""

    expansion = 4

    def __init__(self, cin: int, cfg: StageConfig, stride: int) -> None:
        super().__init__()
        planes, out = cfg.width, cfg.width * 4
        self.conv1 = ConvNormAct(cin, planes, 1, act=cfg.activation)
        self.conv2 = RESIDUAL_DOWNSAMPLERS[cfg.downsample].build(planes, planes, 3, stride, cfg.activation)
        self.conv3 = ConvNormAct(planes, out, 1, act=None)
        self._setup_tail(cin, out, stride, cfg)
        self.se_mid = _se_or_identity(cfg, "conv2", planes, out)
        self.se = _se_or_identity(cfg, "conv3", out, out)

    def main(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv3(self.se_mid(self.conv2(self.conv1(x)))))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.bn.weight)


def _basic_cost(t: Tracer, name: str, x: Shape, cfg: StageConfig, stride: int) -> Shape:
    planes = cfg.width
    # the avgpool shortcut runs first (see _Residual); recording order follows execution order
    if cfg.shortcut == "avgpool":
        _shortcut_cost(t, f"{name}.shortcut", x, planes, stride, cfg.shortcut)
    y = RESIDUAL_DOWNSAMPLERS[cfg.downsample].cost(t, f"{name}.conv1", x, planes, 3, stride, cfg.activation)
    y = conv_norm_act_cost(t, f"{name}.conv2", y, planes, 3, act=None)
    y = _se_after_cost(t, f"{name}.se", cfg, "conv2", y, planes)
    if cfg.shortcut == "conv":
        _shortcut_cost(t, f"{name}.shortcut", x, planes, stride, cfg.shortcut)
    return _residual_add_cost(t, name, y, cfg)


def _bottleneck_cost(t: Tracer, name: str, x: Shape, cfg: StageConfig, stride: int) -> Shape:
    planes, out = cfg.width, cfg.width * 4
    if cfg.shortcut == "avgpool":
        _shortcut_cost(t, f"{name}.shortcut", x, out, stride, cfg.shortcut)
    y = conv_norm_act_cost(t, f"{name}.conv1", x, planes, 1, act=cfg.activation)
    y = RESIDUAL_DOWNSAMPLERS[cfg.downsample].cost(t, f"{name}.conv2", y, planes, 3, stride, cfg.activation)
    y = _se_after_cost(t, f"{name}.se_mid", cfg, "conv2", y, out)
    y = conv_norm_act_cost(t, f"{name}.conv3", y, out, 1, act=None)
    y = _se_after_cost(t, f"{name}.se", cfg, "conv3", y, out)
    if cfg.shortcut == "conv":
        _shortcut_cost(t, f"{name}.shortcut", x, out, stride, cfg.shortcut)
    return _residual_add_cost(t, name, y, cfg)


def _residual_add_cost(t: Tracer, name: str, y: Shape, cfg: StageConfig) -> Shape:
    t.eltwise(f"{name}.add", "add", y, 3)
    return t.activation(f"{name}.post_act", y, cfg.post_activation)


_RESIDUAL: dict[str, tuple[type[_Residual], Callable[..., Shape]]] = {
    "basic": (BasicBlock, _basic_cost),
    "bottleneck": (Bottleneck, _bottleneck_cost),
}


def _build_residual_stage(cfg: StageConfig, cin: int) -> tuple[OrderedDict[str, nn.Module], int]:
    block_cls, _ = _RESIDUAL[cfg.block]
    blocks = []
    for i in range(cfg.depth):
        blocks.append(block_cls(cin, cfg, 2 if (i == 0 and cfg.reduces) else 1))
        cin = cfg.width * block_cls.expansion
    return OrderedDict(blocks=nn.Sequential(*blocks)), cin


def _residual_stage_cost(t: Tracer, name: str, cfg: StageConfig, x: Shape) -> Shape:
    _, cost = _RESIDUAL[cfg.block]
    for i in range(cfg.depth):
        x = cost(t, f"{name}.blocks.{i}", x, cfg, 2 if (i == 0 and cfg.reduces) else 1)
    return x


# --- registries -------------------------------------------------------------------------------

STAGE_BUILDERS: dict[str, Callable[[StageConfig, int], tuple[OrderedDict[str, nn.Module], int]]] = {
    "hard": _build_hard_stage,
    "basic": _build_residual_stage,
    "bottleneck": _build_residual_stage,
}
STAGE_COSTS: dict[str, Callable[[Tracer, str, StageConfig, Shape], Shape]] = {
    "hard": _hard_stage_cost,
    "basic": _residual_stage_cost,
    "bottleneck": _residual_stage_cost,
}
assert set(STAGE_BUILDERS) == set(BLOCKS) == set(STAGE_COSTS), "stage registries must agree with config.BLOCKS"


def build_stage(cfg: StageConfig, in_channels: int) -> tuple[nn.Sequential, int]:
    """The stage module and its output channel count."""
    parts, out = STAGE_BUILDERS[cfg.block](cfg, in_channels)
    return nn.Sequential(parts), out


def stage_cost(t: Tracer, name: str, cfg: StageConfig, x: Shape) -> Shape:
    return STAGE_COSTS[cfg.block](t, name, cfg, x)


def stage_out_channels(cfg: StageConfig, in_channels: int) -> int:
    """Output channels of a stage, from the config alone."""
    if cfg.block == "hard":
        return cfg.transition or plan_for(cfg, in_channels).out_channels
    return cfg.width * _RESIDUAL[cfg.block][0].expansion
