"""Analytic cost model: params, MACs, CIO and MoC of a config, per layer, with no model built.

CIO is the HarDNet paper's measure of memory traffic: for every convolution, input tensor size
plus output tensor size (a concatenated input counts in full each time it is read). MoC is
MACs / CIO, the computational density that decides whether a layer is memory-bound.

``macs`` counts convolutions and linear layers only. ``thop_macs`` adds what ``thop.profile``
(the counter behind the published HarDNet tables) also counts: 4 x input size per BatchNorm and
the pooling ops. The difference between the two is exactly `CostReport.extra_macs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from .blocks import stage_cost
from .config import ArchConfig
from .errors import check_int
from .modules import ClassifierHead
from .resolution import Resolution, canonical_resolution, parse_resolution
from .stems import stem_cost
from .tracer import LayerCost, Tracer

__all__ = ["CostReport", "StageCost", "analyze", "checked_input", "thop_profile", "trace"]


@dataclass(frozen=True)
class StageCost:
    """Totals of one group of layers (``stem``, ``stages.<i>``, ``head``)."""

    name: str
    params: int
    macs: int
    cio: int
    out_shape: tuple[int, ...]

    @property
    def moc(self) -> float:
        return self.macs / self.cio if self.cio else 0.0


@dataclass(frozen=True)
class CostReport:
    """Per-layer records and totals for one config at one input shape."""

    arch_id: str
    resolution: int | str  # canonical: 224 for a square input, "1080x1920" (height x width) otherwise
    batch: int
    bytes_per_element: int
    layers: tuple[LayerCost, ...]

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def extra_macs(self) -> int:
        return sum(r.extra_macs for r in self.layers)

    @property
    def thop_macs(self) -> int:
        return self.macs + self.extra_macs

    @property
    def cio(self) -> int:
        return sum(r.cio for r in self.layers)

    @property
    def cio_bytes(self) -> int:
        return self.cio * self.bytes_per_element

    @property
    def moc(self) -> float:
        return self.macs / self.cio if self.cio else 0.0

    @property
    def input_hw(self) -> tuple[int, int]:
        """Input height and width."""
        return parse_resolution(self.resolution)

    @property
    def conv_count(self) -> int:
        return sum(r.op == "conv" for r in self.layers)

    def by_stage(self) -> list[StageCost]:
        """Totals per stem / stage / head, in network order."""
        groups: dict[str, list[LayerCost]] = {}
        for r in self.layers:
            groups.setdefault(r.stage, []).append(r)
        return [
            StageCost(name, sum(r.params for r in rs), sum(r.macs for r in rs), sum(r.cio for r in rs), rs[-1].out_shape)
            for name, rs in groups.items()
        ]

    def summary(self) -> dict[str, Any]:
        """Totals as a plain dict (what the search stores and the CLI prints with --json)."""
        return {
            "arch_id": self.arch_id,
            "resolution": self.resolution,
            "batch": self.batch,
            "params": self.params,
            "macs": self.macs,
            "thop_macs": self.thop_macs,
            "cio": self.cio,
            "cio_bytes": self.cio_bytes,
            "moc": self.moc,
        }


def analyze(config: ArchConfig, resolution: Resolution = 224, batch: int = 1, bytes_per_element: int = 4) -> CostReport:
    """Cost of ``config`` for a ``batch x in_channels x H x W`` input (``resolution``: 224 or "HxW").

    Shapes follow PyTorch's rules at any size (see `ArchConfig.check_resolution`). Raises
    `ValueError` if ``config`` is not an `ArchConfig` (a dict, say: build one with
    ``ArchConfig.from_dict``), the network cannot take the resolution, or the
    batch or bytes per element is not a positive integer. Results are cached per arguments
    (``analyze.cache_clear()`` empties the cache).
    """
    return _analyze(config, *checked_input(config, resolution, batch, bytes_per_element), batch, bytes_per_element)


def checked_input(config: ArchConfig, resolution: Resolution, batch: int = 1, bytes_per_element: int = 4) -> tuple[int, int]:
    """The input's ``(height, width)`` if `analyze` (or `trace`) takes these arguments; else a one-line `ValueError`."""
    # validated before any cache: lru_cache would fail on an unhashable argument with a bare TypeError
    if not isinstance(config, ArchConfig):
        hint = " (ArchConfig.from_dict builds one from a dict)" if isinstance(config, Mapping) else ""
        raise ValueError(f"config: {type(config).__name__} is not allowed; expected an ArchConfig{hint}")
    h, w = config.check_resolution(resolution)
    check_int("batch", batch)
    check_int("bytes_per_element", bytes_per_element)
    return h, w


def trace(config: ArchConfig, h: int, w: int, tracer: Tracer) -> Tracer:
    """Report every op of ``config`` on a ``tracer.batch x in_channels x h x w`` input to ``tracer``, in network
    order (``h``, ``w`` as `ArchConfig.check_resolution` returns them); returns ``tracer``."""
    x = (tracer.batch, config.in_channels, h, w)
    x = stem_cost(tracer, config.stem, x)
    for i, stage in enumerate(config.stages):
        x = stage_cost(tracer, f"stages.{i}", stage, x)
    ClassifierHead.cost(tracer, "head", x, x[1], config.head.num_classes, config.head.dropout)
    return tracer


@lru_cache(maxsize=2048)
def _analyze(config: ArchConfig, h: int, w: int, batch: int, bytes_per_element: int) -> CostReport:
    t = trace(config, h, w, Tracer(batch, bytes_per_element))
    return CostReport(config.arch_id, canonical_resolution((h, w)), batch, bytes_per_element, tuple(t.layers))


analyze.cache_clear = _analyze.cache_clear  # type: ignore[attr-defined]
analyze.cache_info = _analyze.cache_info  # type: ignore[attr-defined]


def thop_profile(model: Any, resolution: Resolution = 224, batch: int = 1) -> tuple[int, int]:
    """``(macs, params)`` from ``thop.profile`` on a built model.

    The fixed blur filter is a custom module thop does not know; it is registered as the
    depthwise 3x3 conv it is, so thop and `CostReport.thop_macs` agree exactly.
    """
    import thop
    import torch

    from .modules import BlurPool2d

    def count_blur(m: BlurPool2d, x: tuple[torch.Tensor], y: torch.Tensor) -> None:
        m.total_ops += torch.DoubleTensor([int(y.numel() * 9)])

    was_training = model.training
    model.eval()
    x = torch.zeros(batch, model.config.in_channels, *parse_resolution(resolution))
    try:
        macs, params = thop.profile(model, inputs=(x,), custom_ops={BlurPool2d: count_blur}, verbose=False)
    finally:
        model.train(was_training)
        for m in model.modules():  # thop leaves counters behind as buffers; remove them
            for name in ("total_ops", "total_params"):
                m._buffers.pop(name, None)
    return int(macs), int(params)
