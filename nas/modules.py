"""The network's building blocks: self-contained, torch-only classes with plain arguments.

Every class here takes plain constructor arguments (channels, kernel, links, widths, an
activation name, an SE width, a shortcut kind...), the way torchvision's ``resnet.py`` does;
`nas.stems` and `nas.blocks` map a config to those arguments once. Each class that is not a
plain container carries its analytic cost as a ``cost`` classmethod whose arguments are
``(tracer, name, input shape)`` followed by exactly the constructor's arguments, and which
mirrors ``__init__`` line by line (pycls's ``complexity``): `nas.analyze` needs no model built.

This file is also the source of the standalone .py export: `nas.export.pyfile` copies the
classes a network uses from here with `inspect.getsource` (dropping the ``cost`` methods). So it
imports nothing but torch, refers to nothing outside itself, and is written without postponed
annotations (TorchScript reads the annotations of ``forward`` at run time).
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BasicBlock",
    "BlurPool2d",
    "Bottleneck",
    "ClassifierHead",
    "ConvAct",
    "ConvNormAct",
    "HarDBlock",
    "Residual",
    "SeparableLayer",
    "Shortcut",
    "SpaceToDepth",
    "SqueezeExcite",
    "Stage",
    "Stem",
    "init_weights",
    "make_act",
]

#: activation name -> factory taking the optional parameter (a spec's number after the colon)
ACTIVATIONS = {
    "relu": lambda p: nn.ReLU(inplace=True),
    "relu6": lambda p: nn.ReLU6(inplace=True),
    "leaky_relu": lambda p: nn.LeakyReLU(0.01 if p is None else p, inplace=True),
    "hardswish": lambda p: nn.Hardswish(inplace=True),
    "silu": lambda p: nn.SiLU(inplace=True),
    "gelu": lambda p: nn.GELU(),
    "identity": lambda p: nn.Identity(),
}


def make_act(spec: str | None) -> nn.Module:
    """A fresh activation for a spec such as ``"relu6"`` or ``"leaky_relu:0.001"``; None: no activation."""
    if spec is None:
        return nn.Identity()
    name, _, param = spec.partition(":")
    return ACTIVATIONS[name](float(param) if param else None)


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

    @classmethod
    def cost(cls, t, name, x, channels):
        return t.blur(name, x)


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

    @classmethod
    def cost(cls, t, name, x, block=4):
        return t.space_to_depth(name, x, block)


class ConvNormAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> activation [-> 2x anti-aliased blur pool when ``aa``].

    ``act=None`` leaves the activation out (a block's last conv, a shortcut, a depthwise conv);
    ``aa=True`` appends a stride-2 blur pool, TResNet's replacement for a strided conv.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: str | None = None, aa: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_act(act)
        self.aa = BlurPool2d(cout) if aa else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aa(self.act(self.bn(self.conv(x))))

    def zero_init_output(self) -> None:
        """Start with a zero output: the BatchNorm's scale at zero."""
        nn.init.zeros_(self.bn.weight)

    @classmethod
    def cost(cls, t, name, x, cin, cout, kernel=3, stride=1, groups=1, act=None, aa=False):
        y = t.conv(f"{name}.conv", x, cout, kernel, stride, groups)
        y = t.bn(f"{name}.bn", y)
        y = t.activation(f"{name}.act", y, act)
        return t.blur(f"{name}.aa", y) if aa else y


class ConvAct(nn.Module):
    """Conv with bias -> activation [-> 2x anti-aliased blur pool when ``aa``]: `ConvNormAct` deployed.

    The BatchNorm of training is folded into the conv's weight and bias (`nas.fuse`); the
    arguments and state-dict keys are those of `ConvNormAct` with the BatchNorm gone.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: str | None = None, aa: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=True)
        self.act = make_act(act)
        self.aa = BlurPool2d(cout) if aa else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aa(self.act(self.conv(x)))

    def zero_init_output(self) -> None:
        """Start with a zero output: zero weight (the bias starts at zero)."""
        nn.init.zeros_(self.conv.weight)


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

    @classmethod
    def cost(cls, t, name, x, channels, hidden):
        n, c, _, _ = x
        t.eltwise(f"{name}.mean", "reduce", x, 1)
        s = t.conv(f"{name}.fc1", (n, c, 1, 1), hidden, 1, bias=True)
        t.activation(f"{name}.relu", s, "relu")
        s = t.conv(f"{name}.fc2", s, c, 1, bias=True)
        t.activation(f"{name}.gate", s, "sigmoid")
        t.eltwise(f"{name}.mul", "mul", x, 2)
        return x


class SeparableLayer(nn.Module):
    """HarDNet-DS layer (Fig. 3b): 1x1 conv with activation, then a depthwise 3x3 conv without one."""

    def __init__(self, cin: int, cout: int, act: str) -> None:
        super().__init__()
        self.pw = ConvNormAct(cin, cout, 1, act=act)
        self.dw = ConvNormAct(cout, cout, 3, groups=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))

    @classmethod
    def cost(cls, t, name, x, cin, cout, act):
        y = ConvNormAct.cost(t, f"{name}.pw", x, cin, cout, 1, act=act)
        return ConvNormAct.cost(t, f"{name}.dw", y, cout, cout, 3, groups=cout)


class HarDBlock(nn.Module):
    """Harmonic densely connected block.

    Index 0 is the block input and index i >= 1 the output of layer i; layer i reads the
    concatenation of the indices in ``links[i - 1]`` and outputs ``widths[i - 1]`` channels. The
    block returns the concatenation of the indices in ``outputs``.
    """

    def __init__(self, in_channels: int, links: list[list[int]], widths: list[int], outputs: list[int],
                 act: str = "relu6", depthwise: bool = False) -> None:
        super().__init__()
        self.links = [list(link) for link in links]
        self.outputs = list(outputs)
        channels = [in_channels] + list(widths)
        self.layers = nn.ModuleList()
        for link, cout in zip(links, widths):
            cin = sum(channels[j] for j in link)
            self.layers.append(SeparableLayer(cin, cout, act) if depthwise else ConvNormAct(cin, cout, 3, act=act))
        self.out_channels = sum(channels[j] for j in outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, layer in enumerate(self.layers):
            link = self.links[i]
            inp = torch.cat([feats[j] for j in link], 1) if len(link) > 1 else feats[link[0]]
            feats.append(layer(inp))
        return torch.cat([feats[j] for j in self.outputs], 1)

    @classmethod
    def cost(cls, t, name, x, in_channels, links, widths, outputs, act="relu6", depthwise=False):
        feats = [x]
        for i, (link, cout) in enumerate(zip(links, widths)):
            inp = t.concat(f"{name}.layers.{i}.cat", [feats[j] for j in link])
            if depthwise:
                feats.append(SeparableLayer.cost(t, f"{name}.layers.{i}", inp, inp[1], cout, act))
            else:
                feats.append(ConvNormAct.cost(t, f"{name}.layers.{i}", inp, inp[1], cout, 3, act=act))
        return t.concat(f"{name}.cat", [feats[j] for j in outputs])


class Shortcut(nn.Module):
    """Projection shortcut: a (strided) 1x1 conv, or (``kind="avgpool"``, TResNet) a 2x2 average
    pool that takes the stride, then the 1x1 conv."""

    def __init__(self, cin: int, cout: int, stride: int = 1, kind: str = "conv") -> None:
        super().__init__()
        pool = kind == "avgpool" and stride == 2
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) if pool else nn.Identity()
        self.proj = ConvNormAct(cin, cout, 1, 1 if pool else stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))

    @classmethod
    def cost(cls, t, name, x, cin, cout, stride=1, kind="conv"):
        pool = kind == "avgpool" and stride == 2
        if pool:
            x = t.avgpool(f"{name}.pool", x, 2, 2, ceil_mode=True)
        return ConvNormAct.cost(t, f"{name}.proj", x, cin, cout, 1, 1 if pool else stride)


class Residual(nn.Module):
    """What residual blocks share: the shortcut rule and main branch + shortcut -> post-add activation.

    The shortcut is an identity when the block keeps shape, else a `Shortcut` of the given kind.
    With an ``avgpool`` shortcut (TResNet) it runs before the main branch, with a ``conv``
    shortcut (ResNet) after it, as in the reference implementations.
    """

    def _setup_tail(self, cin: int, cout: int, stride: int, shortcut: str, post_act: str) -> None:
        keeps_shape = stride == 1 and cin == cout
        self.shortcut = nn.Identity() if keeps_shape else Shortcut(cin, cout, stride, shortcut)
        self.shortcut_first = shortcut == "avgpool"
        self.post_act = make_act(post_act)

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

    @classmethod
    def _tail_cost(cls, t, name, x, main, cin, cout, stride, shortcut, post_act):
        keeps_shape = stride == 1 and cin == cout
        if shortcut == "avgpool" and not keeps_shape:  # recording order follows execution order
            Shortcut.cost(t, f"{name}.shortcut", x, cin, cout, stride, shortcut)
        y = main(x)
        if shortcut != "avgpool" and not keeps_shape:
            Shortcut.cost(t, f"{name}.shortcut", x, cin, cout, stride, shortcut)
        t.eltwise(f"{name}.add", "add", y, 3, kind="pointwise")
        return t.activation(f"{name}.post_act", y, post_act)


class BasicBlock(Residual):
    """Two 3x3 convs (the stride, or with ``blur`` an anti-aliased blur pool, on the first) plus a
    shortcut; an SE of ``se`` hidden channels (0: none) before the residual add."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, act: str = "relu", post_act: str = "relu",
                 blur: bool = False, shortcut: str = "conv", se: int = 0) -> None:
        super().__init__()
        aa = blur and stride == 2
        self.conv1 = ConvNormAct(cin, planes, 3, 1 if aa else stride, act=act, aa=aa)
        self.conv2 = ConvNormAct(planes, planes, 3)
        self._setup_tail(cin, planes, stride, shortcut, post_act)
        self.se = SqueezeExcite(planes, se) if se else nn.Identity()

    def main(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv2(self.conv1(x)))

    def zero_init_last(self) -> None:
        """Start as an identity: the main branch's last conv outputs zero."""
        self.conv2.zero_init_output()

    @classmethod
    def cost(cls, t, name, x, cin, planes, stride=1, act="relu", post_act="relu", blur=False, shortcut="conv", se=0):
        aa = blur and stride == 2

        def main(y):
            y = ConvNormAct.cost(t, f"{name}.conv1", y, cin, planes, 3, 1 if aa else stride, act=act, aa=aa)
            y = ConvNormAct.cost(t, f"{name}.conv2", y, planes, planes, 3)
            return SqueezeExcite.cost(t, f"{name}.se", y, planes, se) if se else y

        return cls._tail_cost(t, name, x, main, cin, planes, stride, shortcut, post_act)


class Bottleneck(Residual):
    """1x1 conv, 3x3 conv (the stride, or with ``blur`` an anti-aliased blur pool), 1x1 conv to 4x
    ``planes``, plus a shortcut; SEs of ``se_mid`` hidden channels after the 3x3 conv and of ``se``
    after the last conv (0: none)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, act: str = "relu", post_act: str = "relu",
                 blur: bool = False, shortcut: str = "conv", se: int = 0, se_mid: int = 0) -> None:
        super().__init__()
        aa = blur and stride == 2
        self.conv1 = ConvNormAct(cin, planes, 1, act=act)
        self.conv2 = ConvNormAct(planes, planes, 3, 1 if aa else stride, act=act, aa=aa)
        self.conv3 = ConvNormAct(planes, planes * 4, 1)
        self._setup_tail(cin, planes * 4, stride, shortcut, post_act)
        self.se_mid = SqueezeExcite(planes, se_mid) if se_mid else nn.Identity()
        self.se = SqueezeExcite(planes * 4, se) if se else nn.Identity()

    def main(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv3(self.se_mid(self.conv2(self.conv1(x)))))

    def zero_init_last(self) -> None:
        """Start as an identity: the main branch's last conv outputs zero."""
        self.conv3.zero_init_output()

    @classmethod
    def cost(cls, t, name, x, cin, planes, stride=1, act="relu", post_act="relu", blur=False, shortcut="conv",
             se=0, se_mid=0):
        aa = blur and stride == 2

        def main(y):
            y = ConvNormAct.cost(t, f"{name}.conv1", y, cin, planes, 1, act=act)
            y = ConvNormAct.cost(t, f"{name}.conv2", y, planes, planes, 3, 1 if aa else stride, act=act, aa=aa)
            y = SqueezeExcite.cost(t, f"{name}.se_mid", y, planes, se_mid) if se_mid else y
            y = ConvNormAct.cost(t, f"{name}.conv3", y, planes, planes * 4, 1)
            return SqueezeExcite.cost(t, f"{name}.se", y, planes * 4, se) if se else y

        return cls._tail_cost(t, name, x, main, cin, planes * 4, stride, shortcut, post_act)


class Stage(nn.Sequential):
    """One stage: its named parts (down, block, se, drop, transition / blocks), run in order."""

    def __init__(self, **parts: nn.Module) -> None:
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)


class Stem(Stage):
    """The stem: its named parts, run in order; every stem reduces the input 4x."""


class ClassifierHead(nn.Module):
    """Global average pool -> dropout -> linear."""

    def __init__(self, num_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.fc(x)

    @classmethod
    def cost(cls, t, name, x, num_features, num_classes, dropout=0.0):
        pooled = t.global_pool(f"{name}.pool", x)
        return t.linear(f"{name}.fc", pooled, num_classes)


def init_weights(model: nn.Module) -> None:
    """hardnas' initialisation: Kaiming-normal convs, zero biases, small linear weights (BatchNorms
    keep torch's ones and zeros), and each residual block's last conv at zero output, so that
    every block starts as an identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        zero_init_last = getattr(m, "zero_init_last", None)  # residual blocks
        if zero_init_last is not None:
            zero_init_last()
