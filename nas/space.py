"""Declarative search spaces: YAML files of parameter domains that expand into `ArchConfig`s.

A space file (see ``search_spaces/*.yaml``) has:

* ``layouts`` — which stages start with a 2x reduction, one string per allowed layout
  (``".R.RR"``: five stages, the 2nd, 4th and 5th reduce). It fixes the number of stages.
* ``shared`` — domains sampled once per architecture and used wherever a field says ``shared``.
* ``stem``, ``head`` — domains of `StemConfig` / `HeadConfig` fields. A stem field may map stem
  types to domains (``channels: {hardnet: [[32, 64]], resnet: [[64]]}``).
* ``stages`` — one entry per stage index (the last one repeats): ``block`` (the block types
  allowed) and, per block type, the domains of its `StageConfig` fields.

A domain is a value (fixed), a list (categorical choice), ``{low, high, step?, log?}`` (an int
or float range) or the string ``shared``. Fields a space leaves out keep their defaults.
Fields a network ignores (``downsample`` of a stage that does not reduce, SE sizes without SE)
are not sampled. Every problem in a space file is a one-line `ValueError` naming the key: each
choice and range end is checked at load by the config dataclasses' own validation, and each
``shared`` key must be referred to by some field.

`SearchSpace.sample(trial)` draws a config through an Optuna trial (any sampler, including
random search); `SearchSpace.params_of(config)` is the inverse, so a config that is a point of
the space (the canonical seeds) can be enqueued as a trial and shown as a baseline.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from .config import BLOCKS, STAGE_DEFAULTS, STEM_DEFAULTS, STEMS, ArchConfig, HeadConfig, StageConfig, StemConfig
from .errors import check_size, fail, parse_reason, read_text

__all__ = ["SPACE_NAMES", "InvalidCandidate", "SearchSpace", "list_spaces", "load_space"]

_SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
SPACE_NAMES: tuple[str, ...] = ("hardnet", "tresnet", "hybrid")
_STAGE_FIELDS = {f.name for f in dataclasses.fields(StageConfig)} - {"block"}
_STEM_FIELDS = {f.name for f in dataclasses.fields(StemConfig)}
_HEAD_FIELDS = {"dropout"}


class InvalidCandidate(ValueError):
    """A sampled combination that is not a valid network (recorded as a failed trial)."""


def _fail(key: str, value: Any, allowed: str) -> None:
    fail(f"space {key}", value, allowed)


@dataclass(frozen=True)
class Domain:
    """One parameter's values: fixed, a choice, an int/float range, or a reference to ``shared``."""

    kind: str  # fixed | choice | int | float | shared
    values: tuple = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False

    @classmethod
    def parse(cls, key: str, raw: Any) -> "Domain":
        if raw == "shared":
            return cls("shared")
        if isinstance(raw, list):
            if not raw:
                _fail(key, raw, "a non-empty list of choices")
            return cls("choice", tuple(_freeze(v) for v in raw))
        if isinstance(raw, Mapping):
            unknown = set(raw) - {"low", "high", "step", "log"}
            if unknown or "low" not in raw or "high" not in raw:
                _fail(key, dict(raw), "a list of choices, a value, 'shared' or {low, high, step?, log?}")
            low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
            nums = [v for v in (low, high, step) if v is not None]
            if any(isinstance(v, bool) or not isinstance(v, (int, float))
                   or (isinstance(v, float) and not math.isfinite(v)) for v in nums) \
                    or not low <= high:
                _fail(key, dict(raw), "finite numbers with low <= high")
            if step is not None and step <= 0:
                _fail(f"{key}.step", step, "a positive number")
            if not isinstance(log, bool):
                _fail(f"{key}.log", log, "true or false")
            is_int = all(isinstance(v, int) for v in nums)
            if log and step not in (None, 1):
                _fail(key, dict(raw), "either log or step, not both")
            if log and low <= 0:
                _fail(f"{key}.low", low, "a number > 0 with log: true (a log range cannot reach 0)")
            return cls("int" if is_int else "float", (), low, high, step, log)
        return cls("fixed", (_freeze(raw),))

    def contains(self, value: Any) -> bool:
        if self.kind in ("fixed", "choice"):
            return _freeze(value) in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low - 1e-9 <= value <= self.high + 1e-9:
            return False
        if self.step:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-6
        return self.kind == "float" or float(value).is_integer()

    def describe(self) -> str:
        if self.kind in ("fixed", "choice"):
            return "one of " + ", ".join(json.dumps(_thaw(v)) for v in self.values)
        step = f" step {self.step}" if self.step else ""
        return f"a value in [{self.low}, {self.high}]{step}"


# the smallest valid stage of each block type: one field at a time is swapped in and validated by StageConfig
_STAGE_BASE: dict[str, dict[str, Any]] = {"hard": {"growth_rate": 1, "transition": 16}}
_RESIDUAL_BASE = {"width": 1}


def _try(key: str, value: Any, check: Callable[[Any], object]) -> None:
    try:
        check(value)
    except (ValueError, TypeError) as err:
        msg = str(err)
        _fail(key, value, msg.split("; expected ", 1)[1] if "; expected " in msg else msg)


def _check_domain(key: str, d: Domain, check: Callable[[Any], object]) -> None:
    """Each value of a choice, or both ends of a range (as the type the sampler draws), must pass ``check``."""
    if d.kind in ("fixed", "choice"):
        for v in d.values:
            _try(key, _thaw(v), check)
    elif d.kind in ("int", "float"):
        cast = int if d.kind == "int" else float
        _try(f"{key}.low", cast(d.low), check)
        _try(f"{key}.high", cast(d.high), check)


def _stem_check(field: str, types: tuple[str, ...]) -> Callable[[Any], object]:
    """A check that passes when some stem type of ``types`` accepts ``value`` for ``field``."""
    def check(value: Any) -> object:
        first: Exception | None = None
        for t in ((value,) if field == "type" else types):
            channels = (16,) * STEMS[t] if isinstance(t, str) and t in STEMS else ()
            try:
                return StemConfig(**{"type": t, "channels": channels, **({} if field == "type" else {field: value})})
            except (ValueError, TypeError) as err:
                first = first or err
        raise first  # type: ignore[misc]
    return check


def _stage_check(block: str, field: str) -> Callable[[Any], object]:
    base = {"block": block, **_STAGE_BASE.get(block, _RESIDUAL_BASE)}
    return lambda value: StageConfig(**{**base, field: value})


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, list) else v


def _thaw(v: Any) -> Any:
    return [_thaw(x) for x in v] if isinstance(v, tuple) else v


def _encode(v: Any) -> Any:
    """Optuna categorical choices must be primitives: lists travel as JSON strings."""
    return json.dumps(_thaw(v)) if isinstance(v, tuple) else v


def _decode(v: Any) -> Any:
    return _freeze(json.loads(v)) if isinstance(v, str) and v.startswith("[") else v


def _round(x: float, step: float | None) -> float:
    if not step:
        return x
    decimals = max(0, -int(math.floor(math.log10(step))) + 2)
    return round(x, decimals)


class SearchSpace:
    """A parsed, validated space file."""

    def __init__(self, data: Mapping[str, Any], source: str = "<dict>") -> None:
        self.source = source
        if not isinstance(data, Mapping):
            _fail("file", type(data).__name__, "a mapping with name, layouts, stem, stages")
        known = {"name", "description", "layouts", "shared", "stem", "head", "stages"}
        for key in data:
            if key not in known:
                _fail(key, data[key], f"no such key; known keys: {', '.join(sorted(known))}")
        self.name = str(data.get("name") or Path(source).stem)
        self.description = str(data.get("description", ""))
        layouts = data.get("layouts")
        if not isinstance(layouts, list) or not layouts:
            _fail("layouts", layouts, "a non-empty list such as ['.RRR', '.R.RR']")
        for lay in layouts:
            if not isinstance(lay, str) or not lay or set(lay) - {".", "R"}:
                _fail("layouts", lay, "strings of '.' (keep resolution) and 'R' (reduce 2x), e.g. '.R.RR'")
        self.layouts: tuple[str, ...] = tuple(layouts)
        raw_shared = data.get("shared") or {}
        if not isinstance(raw_shared, Mapping):
            _fail("shared", raw_shared, "a mapping of field names to domains")
        self.shared = {k: Domain.parse(f"shared.{k}", v) for k, v in raw_shared.items()}
        for k, d in self.shared.items():
            if d.kind == "shared":
                _fail(f"shared.{k}", "shared", "a domain (a shared value cannot refer to shared)")
        self.stem = self._parse_fields("stem", data.get("stem") or {}, _STEM_FIELDS, keyed_by="type")
        self.head = self._parse_fields("head", data.get("head") or {}, _HEAD_FIELDS)
        stages = data.get("stages")
        if not isinstance(stages, list) or not stages:
            _fail("stages", stages, "a non-empty list of stage entries")
        self.stages: list[tuple[Domain, dict[str, dict[str, Domain]]]] = []
        for i, entry in enumerate(stages):
            key = f"stages[{i}]"
            if not isinstance(entry, Mapping) or "block" not in entry:
                _fail(key, entry, "a mapping with 'block' and one field mapping per block type")
            block = Domain.parse(f"{key}.block", entry["block"])
            if block.kind not in ("fixed", "choice") or any(b not in BLOCKS for b in block.values):
                _fail(f"{key}.block", entry["block"], "block types among " + ", ".join(BLOCKS))
            per_block = {}
            for b in block.values:
                per_block[b] = self._parse_fields(f"{key}.{b}", entry.get(b) or {}, _STAGE_FIELDS)
            extra = set(entry) - {"block"} - set(block.values)
            if extra:
                _fail(f"{key}.{sorted(extra)[0]}", entry[sorted(extra)[0]],
                      f"field mappings only for the stage's block types ({', '.join(block.values)})")
            self.stages.append((block, per_block))
        # every layout/stem/stage combination must name only shared keys that exist
        for d in self._all_domains():
            if d[1].kind == "shared" and d[0].rsplit(".", 1)[-1] not in self.shared:
                _fail(d[0], "shared", f"a key of 'shared' (it has: {', '.join(self.shared) or 'none'})")
        self._check_values(raw_shared)

    def _checks(self) -> list[tuple[str, Domain, Callable[[Any], object]]]:
        """Every domain of the space with the config constructor that must accept its values."""
        type_domain = self.stem.get("type")
        searched = isinstance(type_domain, Domain) and type_domain.kind in ("fixed", "choice")
        types = tuple(_thaw(v) for v in type_domain.values) if searched else tuple(STEMS)
        found: list[tuple[str, Domain, Callable[[Any], object]]] = []
        for field, d in self.stem.items():
            if isinstance(d, dict):
                for t, sub in d.items():
                    _try(f"stem.{field}.{t}", t, _stem_check("type", (t,)))
                    found.append((f"stem.{field}.{t}", sub, _stem_check(field, (t,))))
            else:
                found.append((f"stem.{field}", d, _stem_check(field, types)))
        found += [(f"head.{k}", d, lambda v, k=k: HeadConfig(**{k: v})) for k, d in self.head.items()]
        for i, (_, per_block) in enumerate(self.stages):
            for b, fields in per_block.items():
                found += [(f"stages[{i}].{b}.{k}", d, _stage_check(b, k)) for k, d in fields.items()]
        return found

    def _check_values(self, raw_shared: Mapping[str, Any]) -> None:
        """Each choice and range end must be a value its config field accepts; each shared key must be used."""
        used: dict[str, list[Callable[[Any], object]]] = {}
        for key, d, check in self._checks():
            if d.kind == "shared":
                used.setdefault(key.rsplit(".", 1)[-1], []).append(check)
            else:
                _check_domain(key, d, check)
        for k, d in self.shared.items():
            if k not in used:
                _fail(f"shared.{k}", raw_shared[k], "a key that some field refers to with 'shared' (used: "
                      f"{', '.join(sorted(used)) or 'none'})")
            for check in used[k]:
                _check_domain(f"shared.{k}", d, check)

    def _parse_fields(self, prefix: str, raw: Any, allowed: set[str], keyed_by: str | None = None) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            _fail(prefix, raw, "a mapping of field names to domains")
        out: dict[str, Any] = {}
        for field, value in raw.items():
            if field not in allowed:
                _fail(f"{prefix}.{field}", value, f"no such field; known fields: {', '.join(sorted(allowed))}")
            if keyed_by and field != keyed_by and isinstance(value, Mapping) and "low" not in value:
                out[field] = {k: Domain.parse(f"{prefix}.{field}.{k}", v) for k, v in value.items()}
            else:
                out[field] = Domain.parse(f"{prefix}.{field}", value)
        return out

    def _all_domains(self) -> list[tuple[str, Domain]]:
        found = []
        for k, d in self.stem.items():
            found += [(f"stem.{k}", x) for x in (d.values() if isinstance(d, dict) else [d])]
        for i, (_, per_block) in enumerate(self.stages):
            for b, fields in per_block.items():
                found += [(f"stages[{i}].{b}.{k}", d) for k, d in fields.items()]
        return found

    def stage_entry(self, i: int) -> tuple[Domain, dict[str, dict[str, Domain]]]:
        return self.stages[min(i, len(self.stages) - 1)]

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, trial: Any) -> ArchConfig:
        """Draw one architecture through an Optuna trial (or anything with ``suggest_*``)."""
        shared: dict[str, Any] = {}

        def draw(name: str, d: Domain) -> Any:
            if d.kind == "shared":
                key = name.rsplit(".", 1)[-1]
                if key not in shared:
                    shared[key] = draw(f"shared.{key}", self.shared[key])
                return shared[key]
            if d.kind == "fixed":
                return _thaw(d.values[0])
            if d.kind == "choice":
                if len(d.values) == 1:
                    return _thaw(d.values[0])
                return _thaw(_decode(trial.suggest_categorical(name, [_encode(v) for v in d.values])))
            if d.kind == "int":
                return trial.suggest_int(name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
            return _round(trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log), d.step)

        layout = draw("layout", Domain("choice", self.layouts))
        stem_type = draw("stem.type", self.stem["type"]) if "type" in self.stem else STEM_DEFAULTS["type"]
        stem_kwargs = {"type": stem_type}
        for field, d in self.stem.items():
            if field == "type":
                continue
            if isinstance(d, dict):
                if stem_type not in d:
                    continue
                d = d[stem_type]
            stem_kwargs[field] = draw(f"stem.{stem_type}.{field}" if isinstance(self.stem[field], dict) else f"stem.{field}", d)
        head_kwargs = {k: draw(f"head.{k}", d) for k, d in self.head.items()}
        stages = []
        for i, mark in enumerate(layout):
            block_dom, per_block = self.stage_entry(i)
            block = draw(f"s{i}.block", block_dom)
            kwargs: dict[str, Any] = {"block": block}
            fields = per_block[block]
            for field, d in fields.items():
                if field == "downsample" and mark != "R":
                    continue
                if field in ("se_reduction", "se_min_channels") and kwargs.get("se", self._fixed(fields, "se")) == "none":
                    continue
                kwargs[field] = draw(f"s{i}.{block}.{field}", d)
            if mark == "R" and "downsample" not in kwargs:
                raise ValueError(f"space stages[{i}].{block}.downsample: missing; a reducing stage needs a downsample domain")
            if mark != "R":
                kwargs["downsample"] = "none"
            stages.append(kwargs)
        try:
            return ArchConfig(
                stem=StemConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in stem_kwargs.items()}),
                stages=tuple(StageConfig(**s) for s in stages),
                head=HeadConfig(1000, **head_kwargs),
            )
        except (ValueError, TypeError) as err:
            raise InvalidCandidate(f"invalid combination: {err}") from None

    @staticmethod
    def _fixed(fields: dict[str, Domain], name: str) -> Any:
        d = fields.get(name)
        return _thaw(d.values[0]) if d is not None and d.kind == "fixed" else STAGE_DEFAULTS.get(name)

    # -- membership ------------------------------------------------------------------------------

    def params_of(self, config: ArchConfig) -> tuple[dict[str, Any] | None, str]:
        """The trial parameters that `sample` would need to produce ``config``, or None and why not."""
        params: dict[str, Any] = {}
        shared: dict[str, Any] = {}

        def take(name: str, d: Domain, value: Any) -> str | None:
            value = _freeze(list(value) if isinstance(value, tuple) else value)
            if d.kind == "shared":
                key = name.rsplit(".", 1)[-1]
                if key in shared and shared[key] != value:
                    return f"{name}={_thaw(value)!r} differs from the shared value {_thaw(shared[key])!r}"
                shared[key] = value
                if not self.shared[key].contains(value):
                    return f"shared.{key}={_thaw(value)!r} is outside the space ({self.shared[key].describe()})"
                return None
            if not d.contains(value):
                return f"{name}={_thaw(value)!r} is outside the space ({d.describe()})"
            if d.kind == "choice" and len(d.values) > 1:
                params[name] = _encode(value)
            elif d.kind in ("int", "float"):
                params[name] = value
            return None

        layout = "".join("R" if s.reduces else "." for s in config.stages)
        if layout not in self.layouts:
            return None, f"layout {layout!r} is not one of {', '.join(self.layouts)}"
        if len(self.layouts) > 1:
            params["layout"] = layout
        errors: list[str] = []
        if config.in_channels != 3 or config.head.num_classes != 1000:
            errors.append("in_channels/num_classes differ from the space's 3/1000")
        stem = config.stem
        if "type" in self.stem:
            errors.append(take("stem.type", self.stem["type"], stem.type) or "")
        elif stem.type != STEM_DEFAULTS["type"]:
            errors.append(f"stem.type={stem.type!r} is not searched here")
        for field in ("channels", "depthwise", "activation"):
            d = self.stem.get(field)
            value = getattr(stem, field)
            if isinstance(d, dict):
                d = d.get(stem.type)
                name = f"stem.{stem.type}.{field}"
            else:
                name = f"stem.{field}"
            if d is None:
                default = STEM_DEFAULTS[field]
                if _freeze(list(value) if isinstance(value, tuple) else value) != _freeze(
                        list(default) if isinstance(default, tuple) else default):
                    errors.append(f"{name}={value!r} is not searched here (fixed at {default!r})")
                continue
            errors.append(take(name, d, value) or "")
        for field in _HEAD_FIELDS:
            d = self.head.get(field)
            value = getattr(config.head, field)
            if d is None:
                if value != getattr(HeadConfig(), field):
                    errors.append(f"head.{field}={value!r} is not searched here")
                continue
            errors.append(take(f"head.{field}", d, value) or "")
        for i, s in enumerate(config.stages):
            block_dom, per_block = self.stage_entry(i)
            errors.append(take(f"s{i}.block", block_dom, s.block) or "")
            if s.block not in per_block:
                continue
            fields = per_block[s.block]
            for field in sorted(_STAGE_FIELDS):
                value = getattr(s, field)
                ignored = (field == "downsample" and not s.reduces) or (
                    field in ("se_reduction", "se_min_channels") and s.se == "none")
                if ignored:
                    continue
                d = fields.get(field)
                if d is None:
                    if value != STAGE_DEFAULTS[field]:
                        errors.append(f"s{i}.{field}={value!r} is not searched here (fixed at {STAGE_DEFAULTS[field]!r})")
                    continue
                errors.append(take(f"s{i}.{s.block}.{field}", d, value) or "")
        errors = [e for e in errors if e]
        if errors:
            return None, errors[0]
        # sample() draws shared values under their own names
        for key, value in shared.items():
            d = self.shared[key]
            if d.kind == "choice" and len(d.values) > 1:
                params[f"shared.{key}"] = _encode(value)
            elif d.kind in ("int", "float"):
                params[f"shared.{key}"] = _thaw(value)
        return params, ""

    def contains(self, config: ArchConfig) -> bool:
        return self.params_of(config)[0] is not None

    def seeds(self) -> dict[str, ArchConfig]:
        """The canonical configs that are points of this space (enqueued first, shown as baselines)."""
        from .registry import get_config, list_models

        return {n: get_config(n) for n in list_models() if self.contains(get_config(n))}


def list_spaces() -> list[str]:
    return sorted(p.stem for p in _SPACES_DIR.glob("*.yaml"))


def load_space(spec: str | Path) -> SearchSpace:
    """A built-in space by name (``hardnet``, ``tresnet``, ``hybrid``) or a YAML file path."""
    path = Path(spec)
    if str(spec) in list_spaces():
        path = _SPACES_DIR / f"{spec}.yaml"
    elif not path.exists():
        raise ValueError(f"space: {str(spec)!r} is neither a built-in space ({', '.join(list_spaces())}) "
                         "nor an existing file")
    elif not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a pipe, socket or device)"
        raise ValueError(f"space: {str(spec)!r} is {kind}; expected a built-in space ({', '.join(list_spaces())}) "
                         "or a YAML space file")
    try:
        data = yaml.safe_load(read_text(path, "space", "a YAML space file"))
    except (yaml.YAMLError, RecursionError, ValueError) as err:  # ValueError: a 5000-digit int, a bad date
        if isinstance(err, ValueError) and str(err).startswith("space "):
            raise  # read_text's own line
        raise ValueError(f"space {path}: not valid YAML ({parse_reason(err)}); expected a YAML space file") from None
    check_size(data, f"space {path}", "a YAML space file (a few hundred values)")
    try:
        return SearchSpace(data, str(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
