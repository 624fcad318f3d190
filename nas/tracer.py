"""Shape-propagating cost tracer: the analytic twin of a forward pass.

Each module in `nas.layers`, `nas.stems` and `nas.blocks` has a ``*_cost`` function that mirrors
its ``__init__`` line by line and reports every op to a `Tracer`. Names are the qualified module
names of the built model, so a test can match each analytic record against a forward hook on
the real module.

Counting conventions (the HarDNet paper's and thop's, kept apart):

* ``macs``  multiply-accumulates of convolutions (including the fixed blur filter, which is a
  depthwise 3x3 conv) and linear layers; bias adds are not counted (thop does not either).
* ``cio``   for every convolution, input elements + output elements (HarDNet eq. 1). A
  concatenated input counts in full each time it is read. Pools, norms and linear layers add 0.
* ``extra_macs`` what thop additionally counts for other ops: 4 x input size for an affine
  BatchNorm, output size for AvgPool2d, (kernel area + 1) x output size for AdaptiveAvgPool2d.
* ``mem``   elements read + written by the memory-bound ops CIO leaves out (norms, activations,
  concatenations, residual adds, pools, SE gating). CIO assumes they are fused away; an eager
  framework runs each as its own kernel, so the latency predictor needs them.

Each record also carries its kernel ``kind`` (`KINDS`), ``traffic``, the elements the kernel
moves (a conv: CIO + weights; a linear layer: input + output + weights; a memory-bound op:
``mem``), and for a conv its ``kernel`` size and ``stride``, so ``bytes`` and the kernel class
(`nas.latency.kernels`) are known where the op is recorded and the latency predictor classifies
nothing by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

__all__ = ["KINDS", "LayerCost", "Shape", "Tracer"]

Shape = tuple[int, int, int, int]

#: kernel kinds: dense conv, depthwise (grouped) conv, matrix multiply (linear layer), a
#: memory-bound op, a norm (memory-bound; folded into the conv before it when deployed), a
#: pointwise epilogue (activation, residual add: memory-bound in eager PyTorch, fused into the
#: conv before it by a compiler such as TensorRT) and a concatenation copy (eager PyTorch copies
#: every input; TensorRT writes the inputs in place)
KINDS: tuple[str, ...] = ("conv", "depthwise", "matmul", "memory", "norm", "pointwise", "concat")


@dataclass(frozen=True)
class LayerCost:
    """One op of the network as the cost model sees it."""

    name: str
    op: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int
    cio: int
    extra_macs: int = 0
    mem: int = 0
    groups: int = 1
    bytes_per_element: int = 4
    kind: str = "memory"
    traffic: int = 0
    kernel: int = 0  # a conv's kernel size (0 for other ops)
    stride: int = 1

    @property
    def bytes(self) -> int:
        """Bytes the kernel moves: ``traffic`` elements at ``bytes_per_element``."""
        return self.traffic * self.bytes_per_element

    @property
    def cio_bytes(self) -> int:
        return self.cio * self.bytes_per_element

    @property
    def moc(self) -> float:
        """MACs over CIO (computational density); 0 for ops without CIO."""
        return self.macs / self.cio if self.cio else 0.0

    @property
    def stage(self) -> str:
        """``stem``, ``stages.<i>`` or ``head``: the group this op belongs to."""
        parts = self.name.split(".")
        return ".".join(parts[:2]) if parts[0] == "stages" else parts[0]


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


class Tracer:
    """Collects `LayerCost` records while cost functions walk a config."""

    def __init__(self, batch: int = 1, bytes_per_element: int = 4) -> None:
        self.batch = batch
        self.bytes_per_element = bytes_per_element
        self.layers: list[LayerCost] = []

    def _add(self, name: str, op: str, x: tuple[int, ...], y: tuple[int, ...], params: int = 0, macs: int = 0,
             cio: int = 0, extra: int = 0, mem: int = 0, groups: int = 1, kind: str = "memory",
             traffic: int | None = None, kernel: int = 0, stride: int = 1) -> None:
        assert kind in KINDS, kind
        self.record(name, op, x, y, params, macs, cio, extra, mem, groups, kind, mem if traffic is None else traffic,
                    kernel, stride)

    def record(self, name: str, op: str, x: tuple[int, ...], y: tuple[int, ...], params: int, macs: int, cio: int,
               extra: int, mem: int, groups: int, kind: str, traffic: int, kernel: int, stride: int) -> None:
        """Keep one op (a subclass that needs less than a `LayerCost` per op overrides this)."""
        self.layers.append(LayerCost(name, op, tuple(x), tuple(y), params, macs, cio, extra, mem, groups,
                                     self.bytes_per_element, kind, traffic, kernel, stride))

    def conv(self, name: str, x: Shape, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False,
             padding: int | None = None) -> Shape:
        n, c, h, w = x
        p = k // 2 if padding is None else padding
        y = (n, cout, _conv_out(h, k, stride, p), _conv_out(w, k, stride, p))
        params = cout * (c // groups) * k * k + (cout if bias else 0)
        macs = prod(y) * (c // groups) * k * k
        cio = prod(x) + prod(y)
        self._add(name, "conv", x, y, params, macs, cio, groups=groups, kind="depthwise" if groups > 1 else "conv",
                  traffic=cio + params, kernel=k, stride=stride)
        return y

    def bn(self, name: str, x: Shape) -> Shape:
        self._add(name, "bn", x, x, params=2 * x[1], extra=4 * prod(x), mem=2 * prod(x), kind="norm")
        return x

    def maxpool(self, name: str, x: Shape, k: int, stride: int, padding: int = 0) -> Shape:
        n, c, h, w = x
        y = (n, c, _conv_out(h, k, stride, padding), _conv_out(w, k, stride, padding))
        self._add(name, "maxpool", x, y, mem=prod(x) + prod(y))
        return y

    def avgpool(self, name: str, x: Shape, k: int, stride: int, ceil_mode: bool = False) -> Shape:
        n, c, h, w = x

        def out(size: int) -> int:
            if not ceil_mode:
                return (size - k) // stride + 1
            o = -(-(size - k) // stride) + 1
            return o - 1 if (o - 1) * stride >= size else o

        y = (n, c, out(h), out(w))
        self._add(name, "avgpool", x, y, extra=prod(y), mem=prod(x) + prod(y))
        return y

    def blur(self, name: str, x: Shape) -> Shape:
        """Fixed [1,2,1]x[1,2,1]/16 depthwise filter, reflect padding 1, stride 2 (a buffer: no params)."""
        n, c, h, w = x
        y = (n, c, _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1))
        cio = prod(x) + prod(y)
        self._add(name, "blur", x, y, macs=prod(y) * 9, cio=cio, groups=c, kind="depthwise", traffic=cio, kernel=3,
                  stride=2)
        return y

    def space_to_depth(self, name: str, x: Shape, block: int) -> Shape:
        n, c, h, w = x
        y = (n, c * block * block, h // block, w // block)
        self._add(name, "space_to_depth", x, y, mem=2 * prod(x))
        return y

    def global_pool(self, name: str, x: Shape) -> tuple[int, int]:
        n, c, h, w = x
        self._add(name, "global_pool", x, (n, c, 1, 1), extra=(h * w + 1) * n * c, mem=prod(x) + n * c)
        return (n, c)

    def linear(self, name: str, x: tuple[int, int], out: int, bias: bool = True) -> tuple[int, int]:
        n, f = x
        y = (n, out)
        params = f * out + (out if bias else 0)
        self._add(name, "linear", x, y, params=params, macs=n * f * out, kind="matmul",
                  traffic=prod(x) + prod(y) + params)
        return y

    def concat(self, name: str, shapes: list[Shape]) -> Shape:
        """Channel concatenation; a single input is passed through without a copy."""
        n, _, h, w = shapes[0]
        y = (n, sum(s[1] for s in shapes), h, w)
        if len(shapes) > 1:
            self._add(name, "concat", y, y, mem=2 * prod(y), kind="concat")
        return y

    def eltwise(self, name: str, op: str, x: Shape, passes: int, kind: str = "memory") -> Shape:
        """A memory-bound op touching ``passes`` tensors of ``x``'s size (an add: 2 reads + 1 write);
        ``kind="pointwise"`` for one a compiler fuses into the conv that produced ``x``."""
        self._add(name, op, x, x, mem=passes * prod(x), kind=kind)
        return x

    def activation(self, name: str, x: Shape, spec: str | None) -> Shape:
        if spec is not None and not spec.startswith("identity"):
            self._add(name, "act", x, x, mem=2 * prod(x), kind="pointwise")
        return x
