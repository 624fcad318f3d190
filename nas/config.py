"""The genotype: frozen, typed dataclasses that describe any network of the design space.

An architecture is data. `ArchConfig` (a stem, a tuple of stages and a head) is what the search
samples, what the cost model reads, what `nas.build_model` turns into modules and what leaves the
tool as JSON/YAML. Every field is validated on construction; a bad value raises `ValueError`
naming the field, the value and what is allowed, so a typo in a config file or a search space
never becomes a silent architecture change.

The module deliberately imports no torch: configs are cheap enough to create by the thousand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .errors import check_choice, check_int, check_size, fail, parse_reason, read_text
from .resolution import parse_resolution

__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "DOWNSAMPLERS",
    "LINK_RULES",
    "SE_PLACEMENTS",
    "SHORTCUTS",
    "STAGE_DEFAULTS",
    "STEM_DEFAULTS",
    "STEMS",
    "ArchConfig",
    "HeadConfig",
    "StageConfig",
    "StemConfig",
    "parse_activation",
]

# --- the vocabulary of the space ------------------------------------------------------------
# Names only; the modules behind them live in registries in `nas.layers`, `nas.blocks` and
# `nas.stems`, and a test checks that both sides list the same names.

#: activation name -> default parameter (negative slope for leaky_relu), or None if it takes none
ACTIVATIONS: dict[str, float | None] = {
    "relu": None,
    "relu6": None,
    "leaky_relu": 0.01,
    "hardswish": None,
    "silu": None,
    "gelu": None,
    "identity": None,
}

#: stem type -> number of entries its `channels` tuple takes
STEMS: dict[str, int] = {
    "hardnet": 2,  # 3x3 s2 conv, 3x3 conv (1x1 when depthwise), 3x3 s2 max-pool (DW 3x3 s2 when depthwise)
    "resnet": 1,  # 7x7 s2 conv, 3x3 s2 max-pool
    "deep": 3,  # three 3x3 convs (the first with stride 2), 3x3 s2 max-pool
    "space_to_depth": 1,  # TResNet: 4x4 space-to-depth, 3x3 conv
}

#: block type -> the downsampling types a stage of that block may start with
DOWNSAMPLERS: dict[str, tuple[str, ...]] = {
    # hard stages reduce between blocks with a standalone op
    "hard": ("none", "maxpool", "avgpool", "dwconv", "conv", "blur"),
    # residual stages reduce inside their first block: strided conv, or conv + blur (TResNet AA)
    "basic": ("none", "conv", "blur"),
    "bottleneck": ("none", "conv", "blur"),
}
BLOCKS: tuple[str, ...] = tuple(DOWNSAMPLERS)

#: block type -> where a squeeze-and-excitation module may sit
SE_PLACEMENTS: dict[str, tuple[str, ...]] = {
    "hard": ("none", "output", "transition"),  # on the concatenated block output / the transition output
    "basic": ("none", "output"),  # after the last conv, before the residual add (TResNet)
    "bottleneck": ("none", "mid", "output"),  # after the 3x3 conv (TResNet) / after conv3 (SENet)
}

#: residual shortcut types. `conv`: a strided 1x1 conv, evaluated after the main branch (ResNet);
#: `avgpool`: 2x2 average pool then a 1x1 conv, evaluated before the main branch (TResNet).
SHORTCUTS: tuple[str, ...] = ("conv", "avgpool")

#: harmonic link rules (the functions are in `nas.links`)
LINK_RULES: tuple[str, ...] = ("harmonic", "log", "dense", "chain")

_MAX_BLOCK_DEPTH = 512  # the reference link search looks at 2^0 .. 2^9


# --- validation helpers ---------------------------------------------------------------------


def _check_float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        fail(name, value, f"a number in {left}{lo}, {hi}{right}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(name, value, "true or false")


def parse_activation(spec: str) -> tuple[str, float | None]:
    """Split an activation spec such as ``"leaky_relu:0.001"`` into ``("leaky_relu", 0.001)``.

    A bare ``"leaky_relu"`` takes the default slope 0.01. Raises `ValueError` for unknown names
    or a parameter given to an activation that takes none.
    """
    if not isinstance(spec, str):
        fail("activation", spec, "a string such as 'relu' or 'leaky_relu:0.001'")
    name, _, param = spec.partition(":")
    if name not in ACTIVATIONS:
        fail("activation", spec, "one of " + ", ".join(ACTIVATIONS) + " (leaky_relu may take ':slope')")
    default = ACTIVATIONS[name]
    if not param:
        return name, default
    if default is None:
        fail("activation", spec, f"'{name}' without a parameter")
    try:
        value = float(param)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        fail("activation", spec, "a leaky_relu slope in [0, 1), e.g. 'leaky_relu:0.001'")
    return name, value


def _prefixed(prefix: str, err: ValueError) -> ValueError:
    return ValueError(f"{prefix}{err}")


# --- the dataclasses --------------------------------------------------------------------------


@dataclass(frozen=True)
class StemConfig:
    """The input stem: everything before the first stage, always at output stride 4."""

    type: str = "hardnet"
    channels: tuple[int, ...] = (32, 64)
    depthwise: bool = False
    activation: str = "relu6"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", _as_int_tuple(self.channels))
        check_choice("stem.type", self.type, STEMS)
        want = STEMS[self.type]
        if len(self.channels) != want:
            fail("stem.channels", list(self.channels), f"{want} channel count(s) for a '{self.type}' stem")
        for i, c in enumerate(self.channels):
            check_int(f"stem.channels[{i}]", c, 1, 8192)
        _check_bool("stem.depthwise", self.depthwise)
        if self.depthwise and self.type != "hardnet":
            fail("stem.depthwise", self.depthwise, "false unless stem.type is 'hardnet'")
        try:
            parse_activation(self.activation)
        except ValueError as err:
            raise _prefixed("stem.", err) from None

    @property
    def out_channels(self) -> int:
        return self.channels[-1]


@dataclass(frozen=True)
class StageConfig:
    """One stage: an optional 2x downsampling at its start, then its blocks.

    ``block == "hard"`` means one harmonic densely connected block of ``depth`` conv layers
    (growth rate ``growth_rate`` = k, weighting factor ``weight_factor`` = m, link rule, optional
    depthwise-separable layers) followed by an optional 1x1 transition conv of ``transition``
    channels. ``basic`` / ``bottleneck`` mean ``depth`` residual blocks of ``width`` planes
    (bottleneck output is 4x ``width``).
    """

    block: str = "hard"
    depth: int = 8
    downsample: str = "none"
    activation: str = "relu6"
    # harmonic dense block
    growth_rate: int = 0
    weight_factor: float = 1.7
    link_rule: str = "harmonic"
    keep_base: bool = False
    depthwise: bool = False
    transition: int = 0
    transition_dropout: float = 0.0
    # residual blocks
    width: int = 0
    shortcut: str = "conv"
    post_activation: str = "relu"
    # squeeze-and-excitation: hidden = max(channels_ref // se_reduction, se_min_channels)
    se: str = "none"
    se_reduction: int = 4
    se_min_channels: int = 8

    def __post_init__(self) -> None:
        for name in ("weight_factor", "transition_dropout"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        check_choice("block", self.block, BLOCKS)
        hard = self.block == "hard"
        check_int("depth", self.depth, 1, _MAX_BLOCK_DEPTH if hard else 256)
        check_choice("downsample", self.downsample, DOWNSAMPLERS[self.block])
        for name in ("activation", "post_activation"):
            try:
                parse_activation(getattr(self, name))
            except ValueError as err:
                raise ValueError(str(err).replace("activation:", f"{name}:", 1)) from None
        check_choice("se", self.se, SE_PLACEMENTS[self.block])
        check_int("se_reduction", self.se_reduction, 1, 1024)
        check_int("se_min_channels", self.se_min_channels, 1, 8192)
        _check_bool("keep_base", self.keep_base)
        _check_bool("depthwise", self.depthwise)
        check_choice("shortcut", self.shortcut, SHORTCUTS)
        _check_float("transition_dropout", self.transition_dropout, 0.0, 1.0, hi_open=True)
        if hard:
            check_int("growth_rate", self.growth_rate, 1, 4096)
            _check_float("weight_factor", self.weight_factor, 0.0, 4.0, lo_open=True)
            check_choice("link_rule", self.link_rule, LINK_RULES)
            check_int("transition", self.transition, 0, 16384)
            if self.se == "transition" and self.transition == 0:
                fail("se", self.se, "'output' or 'none' when the stage has no transition conv")
            if self.width:
                fail("width", self.width, "0 for a 'hard' block (its width follows from growth_rate)")
        else:
            check_int("width", self.width, 1, 8192)
            for name, empty in (("growth_rate", 0), ("transition", 0), ("keep_base", False), ("depthwise", False)):
                if getattr(self, name) != empty:
                    fail(name, getattr(self, name), f"{empty!r} for a '{self.block}' block")
            if self.transition_dropout:
                fail("transition_dropout", self.transition_dropout, f"0.0 for a '{self.block}' block")
        self._normalise_unused()

    def _normalise_unused(self) -> None:
        """Reset fields the block type or the SE placement ignores to their defaults.

        They do not change the network, so they must not change `ArchConfig.arch_id` either:
        two spellings of one network are one architecture (and one cache entry, one trial).
        """
        unused = ["se_reduction", "se_min_channels"] if self.se == "none" else []
        unused += ["shortcut", "post_activation"] if self.block == "hard" else ["weight_factor", "link_rule"]
        for name in unused:
            value = getattr(self, name)
            default = STAGE_DEFAULTS[name]
            # only well-formed values are replaced; a malformed one still fails validation below
            if value != default and (isinstance(value, type(default)) or isinstance(default, float)):
                object.__setattr__(self, name, default)

    @property
    def is_residual(self) -> bool:
        return self.block != "hard"

    @property
    def reduces(self) -> bool:
        """Whether this stage halves the spatial resolution."""
        return self.downsample != "none"


STAGE_DEFAULTS: Mapping[str, Any] = MappingProxyType({f.name: f.default for f in fields(StageConfig)})
"""Each `StageConfig` field's default, read-only: what a stage field left out of a config or a space becomes."""
STEM_DEFAULTS: Mapping[str, Any] = MappingProxyType({f.name: f.default for f in fields(StemConfig)})
"""Each `StemConfig` field's default, read-only."""


@dataclass(frozen=True)
class HeadConfig:
    """Classifier head: global average pool, dropout, linear layer."""

    num_classes: int = 1000
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.dropout, int) and not isinstance(self.dropout, bool):
            object.__setattr__(self, "dropout", float(self.dropout))
        check_int("head.num_classes", self.num_classes, 1, 1_000_000)
        _check_float("head.dropout", self.dropout, 0.0, 1.0, hi_open=True)


@dataclass(frozen=True)
class ArchConfig:
    """A whole network: stem, stages, head. ``name`` is a label and not part of `arch_id`."""

    stem: StemConfig = field(default_factory=StemConfig)
    stages: tuple[StageConfig, ...] = ()
    head: HeadConfig = field(default_factory=HeadConfig)
    in_channels: int = 3
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.stem, StemConfig):
            fail("stem", self.stem, "a StemConfig")
        if not isinstance(self.head, HeadConfig):
            fail("head", self.head, "a HeadConfig")
        stages = tuple(self.stages) if isinstance(self.stages, (list, tuple)) else self.stages
        object.__setattr__(self, "stages", stages)
        if not isinstance(stages, tuple) or not stages:
            fail("stages", self.stages, "a non-empty list of stages")
        for i, s in enumerate(stages):
            if not isinstance(s, StageConfig):
                fail(f"stages[{i}]", s, "a StageConfig")
        check_int("in_channels", self.in_channels, 1, 64)
        if not isinstance(self.name, str):
            fail("name", self.name, "a string")
        if self.stem.type == "space_to_depth" and self.in_channels * 16 > 8192:
            fail("in_channels", self.in_channels, "at most 512 with a space_to_depth stem")

    # -- derived facts ----------------------------------------------------------------------

    @property
    def reduction(self) -> int:
        """Total output stride of the network (stem 4x, then 2x per reducing stage)."""
        return 4 * 2 ** sum(s.reduces for s in self.stages)

    def stage_reductions(self) -> list[int]:
        """Output stride after each stage."""
        out, r = [], 4
        for s in self.stages:
            r *= 2 if s.reduces else 1
            out.append(r)
        return out

    def check_resolution(self, resolution: Any) -> tuple[int, int]:
        """``(height, width)`` of ``resolution`` (an int, ``"HxW"`` or a pair) if this network takes it.

        PyTorch's shape rules apply at any size (convs and pools floor, the TResNet shortcut's
        average pool rounds up), so a side need not be a multiple of the stride; it must be at
        least the stride (else a feature map would vanish), and a multiple of 4 with a
        space-to-depth stem (it folds 4x4 patches into channels). Else a one-line `ValueError`.
        """
        h, w = parse_resolution(resolution)
        if min(h, w) < self.reduction:
            fail("resolution", resolution, f"each side at least the network's stride {self.reduction}")
        if self.stem.type == "space_to_depth" and (h % 4 or w % 4):
            fail("resolution", resolution, "sides that are multiples of 4 (the space_to_depth stem folds 4x4 patches)")
        return h, w

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(sorted({s.block for s in self.stages}))

    # -- identity and serialisation -----------------------------------------------------------

    @property
    def arch_id(self) -> str:
        """A stable 12-hex-digit id: equal architectures share it, any change gives another.

        It hashes the canonical JSON of everything but ``name``, so renaming a config keeps its id
        and the same network reached through different routes (enqueued seed, sampled point,
        loaded file) is recognised as one.
        """
        payload = self.to_dict()
        payload.pop("name")
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """A plain-JSON dict (tuples become lists)."""
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "stem": _plain(_fields(self.stem)),
            "stages": [_plain(_fields(s)) for s in self.stages],
            "head": _plain(_fields(self.head)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ArchConfig":
        """Build from `to_dict` output; unknown keys fail with the list of known ones.

        Stage entries may omit fields (defaults apply), which keeps hand-written configs short.
        """
        if not isinstance(data, Mapping):
            fail("config", type(data).__name__, "a mapping with keys stem, stages, head")
        _reject_unknown("", data, _field_names(cls))
        stem = _build(StemConfig, "stem", data.get("stem", {}))
        raw_stages = data.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            fail("stages", raw_stages, "a non-empty list of stages")
        stages = []
        for i, raw in enumerate(raw_stages):
            stages.append(_build(StageConfig, f"stages[{i}]", raw))
        head = _build(HeadConfig, "head", data.get("head", {}))
        kwargs = {k: data[k] for k in ("in_channels", "name") if k in data}
        return cls(stem=stem, stages=tuple(stages), head=head, **kwargs)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "ArchConfig":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError, ValueError) as err:  # ValueError: a 5000-digit int
            raise ValueError(f"config: not valid JSON ({parse_reason(err)})") from None
        return cls.from_dict(check_size(data, "config", "a JSON config (stem, stages, head)"))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "ArchConfig":
        import yaml

        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError, ValueError) as err:  # ValueError: a 5000-digit int, a bad date
            raise ValueError(f"config: not valid YAML ({parse_reason(err)})") from None
        return cls.from_dict(check_size(data, "config", "a YAML config (stem, stages, head)"))

    def save(self, path: str | Path) -> Path:
        """Write as JSON, or YAML when the suffix is .yaml/.yml."""
        path = Path(path)
        text = self.to_yaml() if path.suffix in (".yaml", ".yml") else self.to_json() + "\n"
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ArchConfig":
        """Read a JSON or YAML config file; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config: {str(path)!r} does not exist or is not a file")
        text = read_text(path, "config", "a JSON or YAML config file")
        try:
            if path.suffix in (".yaml", ".yml"):
                return cls.from_yaml(text)
            return cls.from_json(text)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def replace(self, **changes: Any) -> "ArchConfig":
        return dataclasses.replace(self, **changes)


def _as_int_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _fields(part: Any) -> dict[str, Any]:
    """A flat config part's fields (`dataclasses.asdict` without its deep copy: the values are immutable)."""
    return {f.name: getattr(part, f.name) for f in dataclasses.fields(part)}


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def _reject_unknown(prefix: str, data: Mapping[str, Any], known: frozenset[str]) -> None:
    for key in data:
        if key not in known:
            fail(f"{prefix}{key}", data[key], f"no such key; known keys: {', '.join(sorted(known))}")


def _build(cls: type, prefix: str, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        fail(prefix, raw, "a mapping")
    _reject_unknown(f"{prefix}.", raw, _field_names(cls))
    try:
        return cls(**raw)
    except ValueError as err:
        msg = str(err)
        # stem/head errors already carry their prefix; stage errors get their index here
        if prefix.startswith("stages"):
            msg = f"{prefix}.{msg}"
        raise ValueError(msg) from None
    except TypeError as err:  # e.g. a list where a scalar belongs in a nested constructor
        raise ValueError(f"{prefix}: {err}") from None
