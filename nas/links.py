"""Harmonic link rules and the channel plan of a harmonic densely connected block.

Layer 0 is the block input; layers 1..L are conv layers. A link rule says which earlier layers a
layer reads (their outputs are concatenated as its input). All functions here are pure and
cached: the builder and the cost model ask for the same plans thousands of times in a search,
and the plan never changes for the same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

__all__ = ["LINK_RULE_FUNCTIONS", "BlockPlan", "block_plan", "layer_channels", "links", "register_link_rule"]


def _harmonic(layer: int) -> tuple[int, ...]:
    """HarDNet: layer k reads layer k - 2^n for every n with 2^n dividing k (nearest first)."""
    out, step = [], 1
    while step <= layer:
        if layer % step == 0:
            out.append(layer - step)
        step *= 2
    return tuple(out)


def _log(layer: int) -> tuple[int, ...]:
    """LogDenseNet: layer k reads every k - 2^n that exists, whatever divides k."""
    out, step = [], 1
    while step <= layer:
        out.append(layer - step)
        step *= 2
    return tuple(out)


def _dense(layer: int) -> tuple[int, ...]:
    """DenseNet: every earlier layer, nearest first."""
    return tuple(range(layer - 1, -1, -1))


def _chain(layer: int) -> tuple[int, ...]:
    """A plain chain: only the previous layer."""
    return (layer - 1,)


#: rule name -> pure function layer index (>= 1) -> tuple of linked earlier layer indices
LINK_RULE_FUNCTIONS: dict[str, Callable[[int], tuple[int, ...]]] = {
    "harmonic": _harmonic,
    "log": _log,
    "dense": _dense,
    "chain": _chain,
}


def register_link_rule(name: str, fn: Callable[[int], tuple[int, ...]]) -> None:
    """Add a link rule. It must return, for layer k >= 1, a non-empty tuple of indices in [0, k)."""
    from . import config

    if name in LINK_RULE_FUNCTIONS:
        raise ValueError(f"link rule {name!r} already exists")
    LINK_RULE_FUNCTIONS[name] = fn
    config.LINK_RULES = tuple(LINK_RULE_FUNCTIONS)
    links.cache_clear()
    block_plan.cache_clear()


@lru_cache(maxsize=None)
def links(rule: str, layer: int) -> tuple[int, ...]:
    """The earlier layers that ``layer`` (>= 1) reads under ``rule``."""
    try:
        fn = LINK_RULE_FUNCTIONS[rule]
    except KeyError:
        raise ValueError(f"link_rule: {rule!r} is not allowed; expected one of {', '.join(LINK_RULE_FUNCTIONS)}") from None
    if layer < 1:
        raise ValueError(f"layer: {layer!r} is not allowed; expected an integer >= 1")
    result = tuple(fn(layer))
    if not result or any(not 0 <= i < layer for i in result):
        raise ValueError(f"link rule {rule!r} returned {result!r} for layer {layer}; expected indices in [0, {layer})")
    return result


def layer_channels(layer: int, growth_rate: int, weight_factor: float) -> int:
    """Output channels of conv layer ``layer``: k * m^n, n the largest with 2^n dividing the layer.

    Reproduces the reference rounding exactly: m is applied by repeated multiplication (the
    float rounding of k*m*m differs from k*m**2 at a few boundaries), then the result is rounded
    to an even count with ``int(int(x + 1) / 2) * 2``.
    """
    out = float(growth_rate)
    step = 2
    while layer % step == 0:
        out *= weight_factor
        step *= 2
    return int(int(out + 1) / 2) * 2


@dataclass(frozen=True)
class BlockPlan:
    """Channel plan of one harmonic block: everything the builder and the cost model need."""

    in_channels: int
    links: tuple[tuple[int, ...], ...]  # per conv layer 1..L
    layer_in: tuple[int, ...]  # input channels per conv layer (sum of the linked layers)
    layer_out: tuple[int, ...]  # output channels per conv layer
    outputs: tuple[int, ...]  # indices in 0..L concatenated into the block output
    out_channels: int

    @property
    def depth(self) -> int:
        return len(self.layer_out)

    def channels(self, index: int) -> int:
        """Channels of layer ``index`` (0 is the block input)."""
        return self.in_channels if index == 0 else self.layer_out[index - 1]


@lru_cache(maxsize=4096)
def block_plan(rule: str, depth: int, growth_rate: int, weight_factor: float, in_channels: int, keep_base: bool) -> BlockPlan:
    """The channel plan of a block; the output is the odd layers + the last (+ the input if keep_base)."""
    widths = [in_channels]
    all_links, layer_in = [], []
    for layer in range(1, depth + 1):
        lk = links(rule, layer)
        all_links.append(lk)
        layer_in.append(sum(widths[i] for i in lk))
        widths.append(layer_channels(layer, growth_rate, weight_factor))
    outputs = tuple(i for i in range(depth + 1) if (i == 0 and keep_base) or i == depth or i % 2 == 1)
    return BlockPlan(
        in_channels=in_channels,
        links=tuple(all_links),
        layer_in=tuple(layer_in),
        layer_out=tuple(widths[1:]),
        outputs=outputs,
        out_channels=sum(widths[i] for i in outputs),
    )
