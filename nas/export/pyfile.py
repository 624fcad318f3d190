"""The code generator: an `ArchConfig` as one readable PyTorch file that imports nothing but torch.

The file is written the way a person would write the network by hand: a class for each kind of
part the architecture uses (and only those), the network's construction spelled out with literal
numbers (channel counts, strides, each harmonic block's link lists), named modules, docstrings,
then formatted with black. Module names follow `nas.build_model` exactly, so the state dict of
the generated ``Net`` has the same keys, in the same order, as the in-package model: weights move
between the two with ``load_state_dict``.

The generator walks the config the way `nas.blocks` and `nas.stems` do (the same channel plans,
the same decisions on shortcuts, blur pools and SE widths); the tests hold the two together by
loading the in-package state dict into the generated module and comparing outputs, for every
canonical model and a sweep of random configs.

A ``deploy`` file is the BatchNorm-folded network of `nas.fuse.fuse_model`: convs with a bias and
no BatchNorm, for inference.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import fields
from typing import Any, Mapping

import yaml

from ..blocks import plan_for
from ..config import ArchConfig, StageConfig, StemConfig, parse_activation
from ..cost import CostReport, analyze
from ..layers import se_hidden

__all__ = ["compact_config", "export_resolution", "render_py"]

_STAGE_DEFAULTS = {f.name: f.default for f in fields(StageConfig)}
_STEM_DEFAULTS = {f.name: f.default for f in fields(StemConfig)}


# --- what the architecture uses ----------------------------------------------------------------


class _Program:
    """Collects, while the network's construction code is written, which parts it needs."""

    def __init__(self, deploy: bool) -> None:
        self.deploy = deploy
        self.conv_cls = "ConvAct" if deploy else "ConvNormAct"
        self.used: set[str] = set()
        self.acts: dict[str, str] = {}  # activation name as the file spells it -> module expression
        self.hard_layers: set[bool] = set()  # depthwise flags of the harmonic blocks
        self.residual_order: set[bool] = set()  # shortcut-first flags of the residual blocks
        self.block_options: dict[str, set[str]] = {"BasicBlock": set(), "Bottleneck": set()}

    def act(self, spec: str) -> str:
        name, param = parse_activation(spec)
        if name == "leaky_relu":
            key = f"leaky_relu:{param:g}"
            self.acts[key] = f"nn.LeakyReLU({param!r}, inplace=True)"
        else:
            key = name
            self.acts[key] = {
                "relu": "nn.ReLU(inplace=True)",
                "relu6": "nn.ReLU6(inplace=True)",
                "hardswish": "nn.Hardswish(inplace=True)",
                "silu": "nn.SiLU(inplace=True)",
                "gelu": "nn.GELU()",
                "identity": "nn.Identity()",
            }[name]
        return key

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = None,
             aa: bool = False) -> str:
        """A conv -> BN -> activation [-> blur pool] (conv with bias -> activation when deploying)."""
        args = [str(cin), str(cout), str(kernel)]
        if stride != 1:
            args.append(f"stride={stride}")
        if groups != 1:
            self.used.add("groups")
            args.append(f"groups={groups}")
        if act is not None:
            args.append(f'act="{self.act(act)}"')
        if aa:
            self.used.update(("aa", "BlurPool2d"))
            args.append("aa=True")
        return f"{self.conv_cls}({', '.join(args)})"

    def se(self, channels: int, hidden: int) -> str:
        self.used.add("SqueezeExcite")
        return f"SqueezeExcite({channels}, {hidden})"


# --- the network's construction -----------------------------------------------------------------


_STEM_DOCS = {
    "hardnet": "HarDNet stem: 3x3 conv stride 2, 3x3 conv, 3x3 max-pool stride 2 (output stride 4).",
    "hardnet_ds": "HarDNet-DS stem: 3x3 conv stride 2, 1x1 conv, depthwise 3x3 conv stride 2 (output stride 4).",
    "resnet": "ResNet stem: 7x7 conv stride 2, 3x3 max-pool stride 2 (output stride 4).",
    "deep": "Deep stem: three 3x3 convs (the first with stride 2), 3x3 max-pool stride 2 (output stride 4).",
    "space_to_depth": "TResNet stem: 4x4 space-to-depth, 3x3 conv (output stride 4).",
}


def _stem_parts(p: _Program, cfg: StemConfig, cin: int) -> tuple[str, list[tuple[str, str]]]:
    """(docstring, [(attribute, expression)]) of the stem, mirroring `nas.stems`."""
    act = cfg.activation
    if cfg.type == "hardnet":
        c0, c1 = cfg.channels
        parts = [("conv1", p.conv(cin, c0, 3, 2, act=act)),
                 ("conv2", p.conv(c0, c1, 1 if cfg.depthwise else 3, act=act))]
        if cfg.depthwise:
            parts.append(("down", p.conv(c1, c1, 3, 2, groups=c1)))
            return _STEM_DOCS["hardnet_ds"], parts
        return _STEM_DOCS["hardnet"], parts + [("pool", "nn.MaxPool2d(3, 2, 1)")]
    if cfg.type == "resnet":
        return _STEM_DOCS["resnet"], [("conv1", p.conv(cin, cfg.channels[0], 7, 2, act=act)),
                                      ("pool", "nn.MaxPool2d(3, 2, 1)")]
    if cfg.type == "deep":
        c0, c1, c2 = cfg.channels
        return _STEM_DOCS["deep"], [("conv1", p.conv(cin, c0, 3, 2, act=act)), ("conv2", p.conv(c0, c1, 3, act=act)),
                                    ("conv3", p.conv(c1, c2, 3, act=act)), ("pool", "nn.MaxPool2d(3, 2, 1)")]
    if cfg.type == "space_to_depth":
        p.used.add("SpaceToDepth")
        return _STEM_DOCS["space_to_depth"], [("s2d", "SpaceToDepth(4)"),
                                              ("conv1", p.conv(cin * 16, cfg.channels[0], 3, act=act))]
    raise ValueError(f"stem.type: {cfg.type!r} is not allowed; the exporter knows hardnet, resnet, deep, space_to_depth")


def _list(values: Any) -> str:
    return "[" + ", ".join(_list(v) if isinstance(v, (list, tuple)) else str(v) for v in values) + "]"


def _hard_stage(p: _Program, cfg: StageConfig, cin: int) -> tuple[str, int]:
    """A harmonic stage, mirroring `nas.blocks._build_hard_stage`."""
    parts: list[tuple[str, str]] = []
    ch = cin
    if cfg.reduces:
        if cfg.downsample == "maxpool":
            down = "nn.MaxPool2d(2, 2)"
        elif cfg.downsample == "avgpool":
            down = "nn.AvgPool2d(2, 2)"
        elif cfg.downsample == "dwconv":
            down = p.conv(ch, ch, 3, 2, groups=ch)
        elif cfg.downsample == "conv":
            down = p.conv(ch, ch, 3, 2, act=cfg.activation)
        else:
            p.used.add("BlurPool2d")
            down = f"BlurPool2d({ch})"
        parts.append(("down", down))
    plan = plan_for(cfg, ch)
    p.used.add("HarDBlock")
    p.hard_layers.add(cfg.depthwise)
    block_args = [str(ch), f"links={_list(plan.links)}", f"widths={_list(plan.layer_out)}",
                  f"outputs={_list(plan.outputs)}", f'act="{p.act(cfg.activation)}"']
    if cfg.depthwise:
        p.used.add("groups")  # the depthwise conv of `SeparableLayer`
        block_args.append("depthwise=True")
    parts.append(("block", f"HarDBlock({', '.join(block_args)})"))
    ch = plan.out_channels
    if cfg.se == "output":
        parts.append(("se", p.se(ch, se_hidden(ch, cfg.se_reduction, cfg.se_min_channels))))
    if cfg.transition_dropout:
        parts.append(("drop", f"nn.Dropout({cfg.transition_dropout!r})"))
    if cfg.transition:
        parts.append(("transition", p.conv(ch, cfg.transition, 1, act=cfg.activation)))
        ch = cfg.transition
    if cfg.se == "transition":
        parts.append(("se", p.se(ch, se_hidden(ch, cfg.se_reduction, cfg.se_min_channels))))
    return "Stage(" + ", ".join(f"{name}={expr}" for name, expr in parts) + ")", ch


def _residual_block(p: _Program, cfg: StageConfig, cin: int, stride: int) -> tuple[str, int]:
    """One BasicBlock / Bottleneck, mirroring `nas.blocks.BasicBlock` and `Bottleneck`."""
    cls = "BasicBlock" if cfg.block == "basic" else "Bottleneck"
    p.used.add(cls)
    opts = p.block_options[cls]
    cout = cfg.width * (1 if cfg.block == "basic" else 4)
    args = [str(cin), str(cfg.width)]
    if stride != 1:
        args.append(f"stride={stride}")
    args += [f'act="{p.act(cfg.activation)}"', f'post_act="{p.act(cfg.post_activation)}"']
    if stride == 2 and cfg.downsample == "blur":
        p.used.update(("BlurPool2d", "aa"))
        opts.add("blur")
        args.append("blur=True")
    if not (stride == 1 and cin == cout):
        p.used.add("Shortcut")
        pool = cfg.shortcut == "avgpool" and stride == 2
        sc = [str(cin), str(cout)]
        if pool:
            p.used.add("shortcut_pool")
            sc.append("pool=True")
        elif stride != 1:
            sc.append(f"stride={stride}")
        args.append(f"shortcut=Shortcut({', '.join(sc)})")
    p.residual_order.add(cfg.shortcut == "avgpool")
    if cfg.shortcut == "avgpool":
        args.append("shortcut_first=True")
    hidden = se_hidden(cout, cfg.se_reduction, cfg.se_min_channels)
    if cfg.se == "output":
        opts.add("se")
        args.append(f"se={hidden}")
        p.used.add("SqueezeExcite")
    elif cfg.se == "mid":
        opts.add("se_mid")
        args.append(f"se_mid={hidden}")
        p.used.add("SqueezeExcite")
    return f"{cls}({', '.join(args)})", cout


def _residual_stage(p: _Program, cfg: StageConfig, cin: int) -> tuple[str, int]:
    blocks = []
    for i in range(cfg.depth):
        expr, cin = _residual_block(p, cfg, cin, 2 if (i == 0 and cfg.reduces) else 1)
        blocks.append(expr)
    return f"Stage(blocks=nn.Sequential({', '.join(blocks)}))", cin


def _stage_comment(i: int, cfg: StageConfig, cin: int, cout: int, stride: int) -> str:
    if cfg.block == "hard":
        what = f"harmonic block of {cfg.depth} layers ({cfg.link_rule} links, k={cfg.growth_rate}, m={cfg.weight_factor:g})"
    else:
        what = f"{cfg.depth} {cfg.block} block{'s' if cfg.depth > 1 else ''} of width {cfg.width}"
    down = f"{cfg.downsample} 2x downsampling, then " if cfg.reduces else ""
    return f"# stage {i}: {cin} -> {cout} channels, output stride {stride}\n# {down}{what}"


# --- class definitions, emitted only for the parts in use ----------------------------------------


def _wrapped_doc(text: str) -> str:
    """A class docstring, wrapped to the file's width (indented for a class body)."""
    lines = textwrap.wrap(text, 92)
    if len(lines) == 1:
        return f'"""{lines[0]}"""'
    return '"""' + "\n    ".join(lines) + '\n    """'


def _activations_src(p: _Program) -> str:
    entries = "\n".join(f'    "{key}": lambda: {expr},' for key, expr in sorted(p.acts.items()))
    return f'''
#: the activations this network uses, by the names its layers give them
ACTIVATIONS = {{
{entries}
}}


def make_act(name: str | None) -> nn.Module:
    """A fresh activation module; ``None`` means no activation."""
    return nn.Identity() if name is None else ACTIVATIONS[name]()
'''


_BLUR_SRC = '''
class BlurPool2d(nn.Module):
    """Anti-aliased 2x downsampling: a fixed binomial [1, 2, 1] x [1, 2, 1] / 16 depthwise filter.

    The filter is a non-persistent buffer: it never trains and is not part of the state dict.
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
'''

_S2D_SRC = '''
class SpaceToDepth(nn.Module):
    """Each ``block x block`` patch into channels: (N, C, H, W) -> (N, C * b * b, H / b, W / b).

    Channel order is (row offset, column offset, input channel), TResNet's.
    """

    def __init__(self, block: int = 4) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        b = self.block
        x = x.view(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return x.reshape(n, c * b * b, h // b, w // b)
'''

_SE_SRC = '''
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
'''


def _conv_src(p: _Program) -> str:
    groups = "groups" in p.used
    aa = "aa" in p.used
    sig = "cin: int, cout: int, kernel: int, stride: int = 1"
    sig += ", groups: int = 1" if groups else ""
    sig += ", act: str | None = None"
    sig += ", aa: bool = False" if aa else ""
    conv_groups = ", groups=groups" if groups else ""
    tail = " -> 2x anti-aliased blur pool when ``aa``" if aa else ""
    aa_init = "\n        self.aa = BlurPool2d(cout) if aa else nn.Identity()" if aa else ""
    if p.deploy:
        body = "self.act(self.conv(x))"
        doc = (f'"""Conv with bias -> activation{tail}.\n\n    The BatchNorm of training is folded into the '
               'conv\'s weight and bias (deploy export).\n    """')
        layers = f"""self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2{conv_groups}, bias=True)"""
    else:
        body = "self.act(self.bn(self.conv(x)))"
        doc = f'"""Conv (no bias) -> BatchNorm -> activation{tail}."""'
        layers = (f"self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2{conv_groups}, bias=False)\n"
                  "        self.bn = nn.BatchNorm2d(cout)")
    if aa:
        body = f"self.aa({body})"
    return f'''
class {p.conv_cls}(nn.Module):
    {doc}

    def __init__(self, {sig}) -> None:
        super().__init__()
        {layers}
        self.act = make_act(act){aa_init}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return {body}
'''


def _hard_src(p: _Program) -> str:
    conv = p.conv_cls
    out = ""
    if True in p.hard_layers:
        out += f'''
class SeparableLayer(nn.Module):
    """HarDNet-DS layer: 1x1 conv with activation, then a depthwise 3x3 conv without one."""

    def __init__(self, cin: int, cout: int, act: str) -> None:
        super().__init__()
        self.pw = {conv}(cin, cout, 1, act=act)
        self.dw = {conv}(cout, cout, 3, groups=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))
'''
    if p.hard_layers == {True, False}:
        sig, layer = ", depthwise: bool = False", (f"SeparableLayer(cin, cout, act) if depthwise else "
                                                   f"{conv}(cin, cout, 3, act=act)")
    elif p.hard_layers == {True}:
        sig, layer = "", "SeparableLayer(cin, cout, act)"
    else:
        sig, layer = "", f"{conv}(cin, cout, 3, act=act)"
    return out + f'''
class HarDBlock(nn.Module):
    """Harmonic densely connected block.

    Index 0 is the block input and index i >= 1 the output of layer i; layer i reads the
    concatenation of the indices in ``links[i - 1]`` and outputs ``widths[i - 1]`` channels. The
    block returns the concatenation of the indices in ``outputs``.
    """

    def __init__(self, in_channels: int, links: list[list[int]], widths: list[int], outputs: list[int], act: str{sig}) -> None:
        super().__init__()
        self.links = links
        self.outputs = outputs
        channels = [in_channels] + widths
        self.layers = nn.ModuleList()
        for link, cout in zip(links, widths):
            cin = sum(channels[j] for j in link)
            self.layers.append({layer})
        self.out_channels = sum(channels[j] for j in outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, layer in enumerate(self.layers):
            link = self.links[i]
            inp = torch.cat([feats[j] for j in link], 1) if len(link) > 1 else feats[link[0]]
            feats.append(layer(inp))
        return torch.cat([feats[j] for j in self.outputs], 1)
'''


def _shortcut_src(p: _Program) -> str:
    pool = "shortcut_pool" in p.used
    if pool:
        return f'''
class Shortcut(nn.Module):
    """Projection shortcut: {"1x1 conv" if p.deploy else "1x1 conv + BN"}, strided, or after a 2x2 average pool (TResNet)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, pool: bool = False) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) if pool else nn.Identity()
        self.proj = {p.conv_cls}(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))
'''
    return f'''
class Shortcut(nn.Module):
    """Projection shortcut: a (strided) {"1x1 conv" if p.deploy else "1x1 conv + BN"}."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.proj = {p.conv_cls}(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
'''


def _residual_forward(p: _Program, main: str) -> str:
    if p.residual_order == {True, False}:
        return f'''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut_first:  # TResNet order: the shortcut runs before the main branch
            residual = self.shortcut(x)
            out = {main}
        else:
            out = {main}
            residual = self.shortcut(x)
        return self.post_act(out + residual)
'''
    if p.residual_order == {True}:
        return f'''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x)  # TResNet order: the shortcut runs before the main branch
        out = {main}
        return self.post_act(out + residual)
'''
    return f'''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = {main}
        return self.post_act(out + self.shortcut(x))
'''


def _residual_tail(p: _Program) -> tuple[str, str]:
    """(signature part, __init__ lines) shared by both residual block classes."""
    sig = ", shortcut: nn.Module | None = None"
    lines = ["self.shortcut = nn.Identity() if shortcut is None else shortcut"]
    if p.residual_order == {True, False}:
        sig += ", shortcut_first: bool = False"
        lines.append("self.shortcut_first = shortcut_first")
    lines.append("self.post_act = make_act(post_act)")
    return sig, lines


def _residual_head(p: _Program, opts: set[str], cin: str) -> tuple[str, str, list[str]]:
    """A residual block's ``__init__`` signature, its strided 3x3 conv (reading ``cin`` channels) and tail lines.

    The stride sits on the 3x3 conv, or on an anti-aliased blur pool after it where a block uses one.
    """
    sig = "cin: int, planes: int, stride: int = 1, act: str = \"relu\", post_act: str = \"relu\""
    if "blur" in opts:
        sig += ", blur: bool = False"
        strided = f"{p.conv_cls}({cin}, planes, 3, 1 if blur else stride, act=act, aa=blur)"
    else:
        strided = f"{p.conv_cls}({cin}, planes, 3, stride, act=act)"
    tail_sig, tail = _residual_tail(p)
    return sig + tail_sig, strided, tail


def _basic_src(p: _Program) -> str:
    opts, conv = p.block_options["BasicBlock"], p.conv_cls
    sig, conv1, tail = _residual_head(p, opts, "cin")
    lines = [f"self.conv1 = {conv1}", f"self.conv2 = {conv}(planes, planes, 3)", *tail]
    main = "self.conv2(self.conv1(x))"
    if "se" in opts:
        sig += ", se: int = 0"
        lines.append("self.se = SqueezeExcite(planes, se) if se else nn.Identity()")
        main = f"self.se({main})"
    stride = "the stride, or an anti-aliased blur pool," if "blur" in opts else "the stride"
    doc = f"Two 3x3 convs ({stride} on the first) plus a shortcut"
    doc += "; an SE of ``se`` hidden channels before the residual add." if "se" in opts else "."
    body = "\n        ".join(lines)
    return f'''
class BasicBlock(nn.Module):
    {_wrapped_doc(doc)}

    def __init__(self, {sig}) -> None:
        super().__init__()
        {body}
''' + _residual_forward(p, main)


def _bottleneck_src(p: _Program) -> str:
    opts, conv = p.block_options["Bottleneck"], p.conv_cls
    sig, conv2, tail = _residual_head(p, opts, "planes")
    lines = [f"self.conv1 = {conv}(cin, planes, 1, act=act)", f"self.conv2 = {conv2}",
             f"self.conv3 = {conv}(planes, planes * 4, 1)", *tail]
    main = "self.conv2(self.conv1(x))"
    notes = []
    if "se_mid" in opts:
        sig += ", se_mid: int = 0"
        lines.append("self.se_mid = SqueezeExcite(planes, se_mid) if se_mid else nn.Identity()")
        main = f"self.se_mid({main})"
        notes.append("SE of ``se_mid`` hidden channels after the 3x3 conv")
    main = f"self.conv3({main})"
    if "se" in opts:
        sig += ", se: int = 0"
        lines.append("self.se = SqueezeExcite(planes * 4, se) if se else nn.Identity()")
        main = f"self.se({main})"
        notes.append("SE of ``se`` hidden channels after the last conv")
    stride = "the stride, or an anti-aliased blur pool" if "blur" in opts else "the stride"
    doc = f"1x1 conv, 3x3 conv (with {stride}), 1x1 conv to 4x ``planes``, plus a shortcut"
    doc += "; " + "; ".join(notes) + "." if notes else "."
    body = "\n        ".join(lines)
    return f'''
class Bottleneck(nn.Module):
    {_wrapped_doc(doc)}

    def __init__(self, {sig}) -> None:
        super().__init__()
        {body}
''' + _residual_forward(p, main)


_STAGE_SRC = '''
class Stage(nn.Sequential):
    """One stage: its named parts (down, block, se, drop, transition / blocks), run in order."""

    def __init__(self, **parts: nn.Module) -> None:
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)
'''

_HEAD_SRC = '''
class ClassifierHead(nn.Module):
    """Global average pool -> dropout -> linear."""

    def __init__(self, num_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.pool(x), 1)))
'''


def _init_src(p: _Program) -> str:
    zero = []
    if not p.deploy:
        if "BasicBlock" in p.used:
            zero.append("if isinstance(m, BasicBlock):\n            nn.init.zeros_(m.conv2.bn.weight)")
        if "Bottleneck" in p.used:
            kw = "elif" if zero else "if"
            zero.append(f"{kw} isinstance(m, Bottleneck):\n            nn.init.zeros_(m.conv3.bn.weight)")
    bn = ("" if p.deploy else
          "\n        elif isinstance(m, nn.BatchNorm2d):\n            nn.init.ones_(m.weight)\n            nn.init.zeros_(m.bias)")
    tail = ""
    doc = "hardnas' initialisation: Kaiming-normal convs, zero biases, small linear weights"
    if zero:
        tail = "\n    for m in model.modules():\n        " + "\n        ".join(zero)
        doc += (",\n    and the last BatchNorm of each residual branch at zero, so that every block starts as\n"
                "    an identity.\n    ")
    else:
        doc += "."
    return f'''
def init_weights(model: nn.Module) -> None:
    """{doc}"""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias){bn}
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias){tail}
'''


# --- the docstring ---------------------------------------------------------------------------------


def compact_config(config: ArchConfig) -> dict[str, Any]:
    """The config as a dict without the stage fields that sit at their defaults.

    `ArchConfig.from_dict` fills omitted stage fields with their defaults, so this reads back to
    the same architecture (same `arch_id`) while staying short enough for a docstring.
    """
    full = config.to_dict()
    out: dict[str, Any] = {"name": full["name"]} if full["name"] else {}
    if full["in_channels"] != 3:
        out["in_channels"] = full["in_channels"]
    out["stem"] = full["stem"]
    out["stages"] = [{k: v for k, v in s.items() if k == "block" or v != _STAGE_DEFAULTS[k]} for s in full["stages"]]
    out["head"] = full["head"]
    return out


def export_resolution(config: ArchConfig, resolution: int | None = None) -> int:
    """The input size figures refer to: ``resolution`` if given, else 224 rounded up to the stride."""
    if resolution is not None:
        config.check_resolution(resolution)
        return resolution
    return int(math.ceil(224 / config.reduction) * config.reduction)


def _m(x: float) -> str:
    return f"{x / 1e6:,.2f} M"


def _g(x: float) -> str:
    return f"{x / 1e9:,.3f} G"


def _cost_lines(report: CostReport, deploy: bool, in_channels: int) -> list[str]:
    bn_params = sum(r.params for r in report.layers if r.op == "bn")
    params = report.params - bn_params // 2 if deploy else report.params
    res = report.resolution
    lines = [f"Cost at {report.batch}x{in_channels}x{res}x{res} (hardnas' analytic cost model):",
             f"    params  {params:,}" + ("  (BatchNorm folded into conv biases)" if deploy else ""),
             f"    MACs    {_g(report.macs)} conv + linear ({_g(report.thop_macs)} as thop counts)",
             f"    CIO     {_m(report.cio)} elements ({report.cio_bytes / 2 ** 20:,.1f} MiB at "
             f"{report.bytes_per_element} B/element), MoC {report.moc:.1f}",
             "",
             f"    {'part':<10}{'params':>12}{'MACs':>12}{'CIO':>12}  output"]
    for s in report.by_stage():
        p = s.params
        if deploy:
            p -= sum(r.params for r in report.layers if r.op == "bn" and r.stage == s.name) // 2
        shape = "x".join(str(d) for d in s.out_shape[1:])
        lines.append(f"    {s.name:<10}{_m(p):>12}{_g(s.macs):>12}{_m(s.cio):>12}  {shape}")
    return lines


def _latency_line(meta: Mapping[str, Any]) -> str:
    ms = meta.get("latency_ms")
    if ms is None:
        note = meta.get("latency_note") or "not given (export with a measured or predicted latency to record one)"
        return f"Latency: {note}"
    source = meta.get("latency_source") or "unlabelled"
    device = meta.get("device") or meta.get("latency_device") or "unknown device"
    where = "for" if source == "predicted" else "on"
    details = [str(meta["precision"])] if meta.get("precision") else []
    details += [f"batch {meta['batch']}"] if meta.get("batch") is not None else []
    if meta.get("latency_resolution"):
        details.append(f"{meta['latency_resolution']}x{meta['latency_resolution']}")
    if meta.get("latency_deploy"):
        details.append("BN folded")
    extra = f"; {', '.join(details)}" if details else ""
    kind = " (roofline model, not measured)" if source == "predicted" else ""
    if meta.get("latency_disturbed"):
        slowdown = meta.get("latency_slowdown")
        kind += (f" (DISTURBED: other work slowed the reference workload {float(slowdown):.2f}x while measuring)"
                 if slowdown else " (DISTURBED: other work ran while measuring)")
    return "\n    ".join(textwrap.wrap(f"Latency: {float(ms):.2f} ms {source} {where} {device}{extra}{kind}", 96))


_META_SHOWN = {"latency_ms", "latency_source", "device", "latency_device", "latency_note", "precision", "batch",
               "latency_disturbed", "latency_slowdown",
               "latency_resolution", "latency_deploy", "resolution", "accuracy", "proxy",
               # stated by the docstring already, from the config and the cost model
               "arch_id", "name", "params", "macs", "thop_macs", "cio", "moc", "config"}
_META_LABELS = {"budget_ms": "Latency budget (ms)", "study": "Study", "trial": "Trial"}


def _docstring(config: ArchConfig, deploy: bool, meta: Mapping[str, Any], report: CostReport) -> str:
    from .. import __version__

    name = config.name or f"arch-{config.arch_id}"
    kind = "deploy (BatchNorm folded) " if deploy else ""
    nc = config.head.num_classes
    hardnas_model = "nas.fuse.fuse_model(nas.build_model(config))" if deploy else "nas.build_model(config)"
    intro = (f"Needs Python >= 3.10 and torch, nothing else. ``build(num_classes=...)`` returns the network. "
             f"Its state_dict keys are those of hardnas' ``{hardnas_model}``, so weights move between the two "
             "with ``load_state_dict``, e.g. from the .safetensors file exported next to this one: "
             "``model.load_state_dict(safetensors.torch.load_file(path))``.")
    lines = [f"{name}: a standalone {kind}PyTorch model definition, exported by hardnas {__version__}.", ""]
    lines += textwrap.wrap(intro, 96)
    if deploy:
        lines += [""] + textwrap.wrap("Deploy export: every BatchNorm is folded into the conv before it (convs "
                                      "with a bias, no BatchNorm), for inference. Train with the ordinary export.", 96)
    lines += ["", f"arch_id {config.arch_id}; input {config.in_channels} channels; output stride "
                  f"{config.reduction}; {nc} classes.", ""]
    lines += _cost_lines(report, deploy, config.in_channels)
    lines += ["", _latency_line(meta)]
    if meta.get("accuracy") is not None:
        acc = meta["accuracy"]
        proxy = f" (proxy: {meta['proxy']})" if meta.get("proxy") else ""
        lines.append(f"Accuracy: {acc:.4f}{proxy}" if isinstance(acc, float) else f"Accuracy: {acc}{proxy}")
    others = [(k, v) for k, v in meta.items() if k not in _META_SHOWN and isinstance(v, (str, int, float, bool))]
    for k, v in others:
        label = _META_LABELS.get(k) or k.replace("_", " ").capitalize()
        lines.append(f"{label}: {v:.4g}" if isinstance(v, float) else f"{label}: {v}")
    cfg_yaml = yaml.safe_dump(compact_config(config), sort_keys=False, default_flow_style=None, width=92)
    lines += ["", "Config (a hardnas ArchConfig; stage fields at their defaults are left out, so",
              "``nas.ArchConfig.from_dict(yaml.safe_load(...))`` reads it back as the same architecture):", ""]
    lines += ["    " + ln if ln else "" for ln in cfg_yaml.rstrip("\n").splitlines()]
    return _doc_safe("\n".join(lines))


def _doc_safe(text: str) -> str:
    """Text that can sit inside a triple-quoted docstring as it reads."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


# --- the file --------------------------------------------------------------------------------------


def render_py(config: ArchConfig, *, deploy: bool = False, metadata: Mapping[str, Any] | None = None) -> str:
    """The standalone .py source for ``config`` (formatted with black).

    ``metadata`` holds figures for the docstring that the config does not determine: a latency
    (``latency_ms``, ``latency_source`` measured/predicted, ``device``), ``accuracy``, ``resolution``
    (the input size the cost figures refer to; default 224 rounded up to the network's stride) and
    any other scalars, listed as they are.
    """
    if not isinstance(config, ArchConfig):
        raise ValueError(f"config: {type(config).__name__} is not allowed; expected an ArchConfig")
    meta = dict(metadata or {})
    res = export_resolution(config, meta.get("resolution"))
    report = analyze(config, res)
    p = _Program(deploy)

    stem_doc, stem_parts = _stem_parts(p, config.stem, config.in_channels)
    ch, stride = config.stem.out_channels, 4
    stage_lines = []
    for i, s in enumerate(config.stages):
        cin = ch
        expr, ch = _hard_stage(p, s, ch) if s.block == "hard" else _residual_stage(p, s, ch)
        stride *= 2 if s.reduces else 1
        stage_lines.extend(_stage_comment(i, s, cin, ch, stride).splitlines())
        stage_lines.append(expr + ",")
    # a flag every instance sets the same way is not a parameter: drop it from the calls
    if p.residual_order != {True, False}:
        stage_lines = [ln.replace(", shortcut_first=True", "") for ln in stage_lines]
    if p.hard_layers != {True, False}:
        stage_lines = [ln.replace(", depthwise=True", "") for ln in stage_lines]

    stem_init = "\n        ".join(f"self.{n} = {e}" for n, e in stem_parts)
    stem_fwd = "\n        ".join(f"x = self.{n}(x)" for n, _ in stem_parts[:-1])
    stem_src = f'''
class Stem(nn.Module):
    """{stem_doc}"""

    def __init__(self) -> None:
        super().__init__()
        {stem_init}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        {stem_fwd}
        return self.{stem_parts[-1][0]}(x)
'''
    n_stages = len(config.stages)
    stages_src = "\n            ".join(stage_lines)
    nc, in_ch = config.head.num_classes, config.in_channels
    net_src = f'''
class Net(nn.Module):
    """{_doc_safe(" ".join((config.name or config.arch_id).split()))}: stem -> {n_stages} stage{"s" if n_stages > 1 else ""} -> classifier head ({ch} features)."""

    def __init__(self, num_classes: int = {nc}) -> None:
        super().__init__()
        self.stem = Stem()
        self.stages = nn.Sequential(
            {stages_src}
        )
        self.num_features = {ch}
        self.head = ClassifierHead({ch}, num_classes, dropout={config.head.dropout!r})
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build(num_classes: int = {nc}) -> Net:
    """The network, freshly initialised, with a classifier for ``num_classes`` outputs."""
    return Net(num_classes)


if __name__ == "__main__":
    model = build().eval()
    with torch.no_grad():
        out = model(torch.randn(1, {in_ch}, {res}, {res}))
    print(f"{{sum(p.numel() for p in model.parameters()):,}} parameters, output {{tuple(out.shape)}}")
'''
    # every part's definition after the parts it uses
    parts = [_activations_src(p)]
    if "BlurPool2d" in p.used:
        parts.append(_BLUR_SRC)
    if "SpaceToDepth" in p.used:
        parts.append(_S2D_SRC)
    parts.append(_conv_src(p))
    if "SqueezeExcite" in p.used:
        parts.append(_SE_SRC)
    if "HarDBlock" in p.used:
        parts.append(_hard_src(p))
    if "Shortcut" in p.used:
        parts.append(_shortcut_src(p))
    if "BasicBlock" in p.used:
        parts.append(_basic_src(p))
    if "Bottleneck" in p.used:
        parts.append(_bottleneck_src(p))
    parts += [_STAGE_SRC, stem_src, _HEAD_SRC, _init_src(p), net_src]
    header = (f'"""{_docstring(config, deploy, meta, report)}\n"""\n\n'
              "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
              f'ARCH_ID = "{config.arch_id}"\n')
    if "BlurPool2d" not in p.used:
        header = header.replace("import torch.nn.functional as F\n", "")
    source = header + "\n".join(parts)
    import black  # only when a file is written: `import nas.export` does not need it

    return black.format_str(source, mode=black.Mode(line_length=100))
