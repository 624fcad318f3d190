"""Uniform random architectures over the whole genotype vocabulary.

Every stem type, block type, link rule, downsampler, SE placement and activation can come
out, so tests and benchmarks that sweep "random valid configs" exercise every code path. The
search itself samples declarative spaces (``search_spaces``); this is the unconstrained sampler.
"""

from __future__ import annotations

import random

from .config import (
    ACTIVATIONS,
    DOWNSAMPLERS,
    LINK_RULES,
    SE_PLACEMENTS,
    SHORTCUTS,
    STEMS,
    ArchConfig,
    HeadConfig,
    StageConfig,
    StemConfig,
)

__all__ = ["random_config"]


def _activation(rng: random.Random) -> str:
    name = rng.choice(list(ACTIVATIONS))
    return f"leaky_relu:{rng.choice([0.01, 0.001])}" if name == "leaky_relu" else name


def random_config(seed: int | random.Random, *, max_stages: int = 4, max_width: int = 64, max_depth: int = 8,
                  num_classes: int = 10) -> ArchConfig:
    """A random valid `ArchConfig`; the size caps keep CPU tests fast."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    stem_type = rng.choice(list(STEMS))
    depthwise_stem = stem_type == "hardnet" and rng.random() < 0.3
    stem = StemConfig(stem_type, tuple(rng.choice([8, 16, 24, 32]) for _ in range(STEMS[stem_type])),
                      depthwise=depthwise_stem, activation=_activation(rng))
    stages = []
    for i in range(rng.randint(1, max_stages)):
        block = rng.choice(list(DOWNSAMPLERS))
        downsample = "none" if i == 0 and rng.random() < 0.5 else rng.choice(DOWNSAMPLERS[block])
        common = dict(block=block, downsample=downsample, activation=_activation(rng),
                      se_reduction=rng.choice([2, 4, 8]), se_min_channels=rng.choice([4, 8, 16]))
        if block == "hard":
            transition = rng.choice([0, rng.randrange(8, max_width + 1, 8)])
            se_choices = [s for s in SE_PLACEMENTS[block] if transition or s != "transition"]
            stages.append(StageConfig(
                depth=rng.randint(1, max_depth), growth_rate=rng.randint(2, 16),
                weight_factor=round(rng.uniform(1.2, 2.0), 2), link_rule=rng.choice(LINK_RULES),
                keep_base=rng.random() < 0.3, depthwise=rng.random() < 0.3, transition=transition,
                transition_dropout=rng.choice([0.0, 0.1]), se=rng.choice(se_choices), **common))
        else:
            stages.append(StageConfig(
                depth=rng.randint(1, max(1, max_depth // 3)), width=rng.randrange(8, max_width + 1, 8),
                shortcut=rng.choice(SHORTCUTS), post_activation=_activation(rng),
                se=rng.choice(SE_PLACEMENTS[block]), **common))
    return ArchConfig(stem=stem, stages=tuple(stages), head=HeadConfig(num_classes, rng.choice([0.0, 0.1])))
