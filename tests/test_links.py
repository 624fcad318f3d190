"""Harmonic link rules and block channel plans."""

from __future__ import annotations

import pytest

from nas import links as L
from nas.config import LINK_RULES


def test_harmonic_links_follow_the_paper():
    # layer k links to k - 2^n whenever 2^n divides k
    assert L.links("harmonic", 1) == (0,)
    assert L.links("harmonic", 2) == (1, 0)
    assert L.links("harmonic", 3) == (2,)
    assert L.links("harmonic", 4) == (3, 2, 0)
    assert L.links("harmonic", 6) == (5, 4)
    assert L.links("harmonic", 8) == (7, 6, 4, 0)
    assert L.links("harmonic", 12) == (11, 10, 8)


def test_other_rules():
    assert L.links("log", 7) == (6, 5, 3)
    assert L.links("log", 8) == (7, 6, 4, 0)
    assert L.links("dense", 4) == (3, 2, 1, 0)
    assert L.links("chain", 5) == (4,)
    with pytest.raises(ValueError, match="link_rule: 'nope' is not allowed; expected one of harmonic"):
        L.links("nope", 3)


def test_every_rule_is_registered_in_the_config_vocabulary():
    assert set(L.LINK_RULE_FUNCTIONS) == set(LINK_RULES)


def test_links_and_plans_are_cached():
    assert L.links("harmonic", 16) is L.links("harmonic", 16)
    a = L.block_plan("harmonic", 16, 20, 1.7, 256, False)
    assert a is L.block_plan("harmonic", 16, 20, 1.7, 256, False)


def test_channel_rule_matches_reference_rounding():
    # k * m^n with n the largest power of two dividing the layer; rounded up to even
    assert [L.layer_channels(i, 14, 1.7) for i in range(1, 9)] == [14, 24, 14, 40, 14, 24, 14, 68]
    assert L.layer_channels(4, 16, 1.6) == 40  # 16*1.6*1.6 = 40.96: int(41.96) = 41, halved and doubled -> 40
    assert L.layer_channels(1, 15, 1.7) == 16  # odd k rounds up to even


def test_block_output_is_odd_layers_plus_last():
    plan = L.block_plan("harmonic", 8, 14, 1.7, 64, False)
    assert plan.outputs == (1, 3, 5, 7, 8)
    assert plan.out_channels == 14 * 4 + 68
    # layer 4 reads layers 3, 2 and 0
    assert plan.layer_in[3] == plan.channels(3) + plan.channels(2) + 64
    with_base = L.block_plan("harmonic", 8, 14, 1.7, 64, True)
    assert with_base.outputs == (0, 1, 3, 5, 7, 8) and with_base.out_channels == plan.out_channels + 64
    odd = L.block_plan("harmonic", 5, 8, 1.7, 16, False)
    assert odd.outputs == (1, 3, 5)


def test_register_link_rule():
    name = "skip2_test"
    L.register_link_rule(name, lambda k: (k - 2,) if k >= 2 else (0,))
    try:
        from nas import config

        assert name in config.LINK_RULES
        plan = L.block_plan(name, 4, 8, 1.5, 16, False)
        assert plan.links == ((0,), (0,), (1,), (2,))
        from nas import StageConfig

        StageConfig(block="hard", depth=4, growth_rate=8, link_rule=name)
        with pytest.raises(ValueError, match="already exists"):
            L.register_link_rule(name, lambda k: (0,))
    finally:
        del L.LINK_RULE_FUNCTIONS[name]
        from nas import config

        config.LINK_RULES = tuple(L.LINK_RULE_FUNCTIONS)
