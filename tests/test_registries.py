"""The module registries and the config vocabulary agree, and each registry entry's cost twin
matches the module its builder makes (output shape and parameter count)."""

from __future__ import annotations

import pytest
import torch

from nas import config
from nas.blocks import (
    DOWNSAMPLER_OPS,
    HARD_DOWNSAMPLERS,
    RESIDUAL_DOWNSAMPLERS,
    SE_PLACEMENT_OPS,
    STAGE_BUILDERS,
    STAGE_COSTS,
)
from nas.layers import ACTIVATION_FACTORIES
from nas.stems import STEM_BUILDERS, STEM_COSTS
from nas.tracer import Tracer


def test_registries_agree_with_config():
    assert set(ACTIVATION_FACTORIES) == set(config.ACTIVATIONS)
    assert set(STEM_BUILDERS) == set(STEM_COSTS) == set(config.STEMS)
    assert set(STAGE_BUILDERS) == set(STAGE_COSTS) == set(config.BLOCKS)
    assert set(DOWNSAMPLER_OPS) == set(SE_PLACEMENT_OPS) == set(config.BLOCKS)
    for block in config.BLOCKS:
        assert set(DOWNSAMPLER_OPS[block]) == set(config.DOWNSAMPLERS[block]), block
        assert set(SE_PLACEMENT_OPS[block]) == set(config.SE_PLACEMENTS[block]), block


def _params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("kind", sorted(HARD_DOWNSAMPLERS))
def test_hard_downsampler_cost_matches_module(kind):
    x = (1, 8, 16, 16)
    op, t = HARD_DOWNSAMPLERS[kind], Tracer()
    module = op.build(8, "relu")
    y = op.cost(t, "down", x, "relu")
    got = tuple(module.eval()(torch.zeros(x)).shape) if module is not None else x
    assert y == got == (x if kind == "none" else (1, 8, 8, 8))
    assert sum(r.params for r in t.layers) == _params(module)


@pytest.mark.parametrize("kind", sorted(RESIDUAL_DOWNSAMPLERS))
@pytest.mark.parametrize("stride", [1, 2])
def test_residual_downsampler_cost_matches_module(kind, stride):
    x = (1, 8, 16, 16)
    op, t = RESIDUAL_DOWNSAMPLERS[kind], Tracer()
    module = op.build(8, 12, 3, stride, "relu")
    y = op.cost(t, "conv", x, 12, 3, stride, "relu")
    assert y == tuple(module.eval()(torch.zeros(x)).shape) == (1, 12, 16 // stride, 16 // stride)
    assert sum(r.params for r in t.layers) == _params(module)


@pytest.mark.parametrize(("block", "name"), [(b, n) for b, ops in SE_PLACEMENT_OPS.items() for n in ops])
def test_se_placement_cost_matches_module(block, name):
    se, t, x = SE_PLACEMENT_OPS[block][name], Tracer(), (1, 16, 4, 4)
    assert (se.site is None) == (name == "none")
    assert se.cost(t, "se", x, 4) == x
    assert sum(r.params for r in t.layers) == _params(se.build(16, 4))
