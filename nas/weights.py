"""Load official pretrained checkpoints (Pytorch-HarDNet, TResNet, torchvision ResNet-50) into our models.

Our canonical models are the official networks layer for layer, and every block registers its
parametrised parts in the official order, so the two state dicts list the same tensors in the
same order under different names. The official key names of every canonical model ship as data
(``search_spaces/official_keys.json.gz``, recorded from the official code), which gives a name
map, module by module (a conv, a norm, a linear layer: the keys sharing a prefix): tensors are
looked up by their official name, so the checkpoint's key order does not matter (safetensors
files store keys sorted), and a tensor that is absent is reported under both names. A
checkpoint of one of our own models (``nas`` layout) is matched by name directly. Only an
official checkpoint for a config that is not canonical falls back to pairing the modules in
the checkpoint's order, and the report says so.

TResNet checkpoints hold inplace-ABN parameters: in eval mode that is a BatchNorm whose scale is
``|gamma| + eps`` (not ``gamma``) followed by the activation, so the loader converts gamma.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import torch
from torch import nn

__all__ = ["SOURCES", "LoadReport", "detect_source", "load_reference_weights", "unwrap_checkpoint"]

#: checkpoint layouts the loader understands
SOURCES: tuple[str, ...] = ("nas", "hardnet", "tresnet", "torchvision")

_IABN_EPS = 1e-5
# not learnable and not part of our state dicts: BN step counters and fixed blur filters
_SKIP_SUFFIXES = ("num_batches_tracked", "filt")


@dataclass
class LoadReport:
    """What `load_reference_weights` did: which source, how many tensors, what did not pair."""

    source: str
    loaded: int = 0
    converted_iabn: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    #: how tensors were matched: "by name" (ours), "by official name map (<model>)" or "by position"
    pairing: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"{self.loaded} tensors loaded from a {self.source} checkpoint"
                 + (f", matched {self.pairing}" if self.pairing else "")]
        if self.converted_iabn:
            parts.append(f"{self.converted_iabn} inplace-ABN scales converted to |gamma|+eps")
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("mismatched", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        return "; ".join(parts)


def unwrap_checkpoint(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The flat tensor dict inside a checkpoint: ``{"state_dict"|"model"|...: ...}`` and DataParallel's ``module.``."""
    for key in ("state_dict", "model", "model_state_dict"):
        inner = state_dict.get(key) if isinstance(state_dict, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            state_dict = inner
            break
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError("state_dict: expected a mapping of tensor names to tensors (optionally under 'state_dict' or 'model')")
    out = dict(state_dict)
    if out and all(k.startswith("module.") for k in out):  # saved from DataParallel / DDP
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def detect_source(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Guess the checkpoint layout from its key names."""
    keys = list(state_dict)
    if any(k.startswith("stem.") for k in keys) and any(k.startswith("stages.") for k in keys):
        return "nas"
    if any(k.startswith("base.") for k in keys):
        return "hardnet"
    if any(k.startswith("body.") for k in keys):
        return "tresnet"
    if "conv1.weight" in keys and "bn1.weight" in keys:
        return "torchvision"
    raise ValueError(f"state_dict: layout not recognised (first keys: {', '.join(keys[:3])}); known sources: {', '.join(SOURCES)}")


def _groups(sd: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Entries grouped by owning module, in state-dict order, skipping non-learned buffers."""
    groups: dict[str, dict[str, Any]] = {}
    for key, value in sd.items():
        prefix, _, suffix = key.rpartition(".")
        if suffix in _SKIP_SUFFIXES:
            continue
        groups.setdefault(prefix, {})[suffix] = value
    return list(groups.items())


def _join(prefix: str, suffix: str) -> str:
    return f"{prefix}.{suffix}" if prefix else suffix


@lru_cache(maxsize=1)
def _official_keys() -> dict[str, dict[str, Any]]:
    data = resources.files("search_spaces").joinpath("official_keys.json.gz").read_bytes()
    return json.loads(gzip.decompress(data))


def _canonical_name(model: nn.Module, source: str) -> str | None:
    """The canonical model whose official layout ``model`` has (head size aside), if any."""
    from .config import ArchConfig
    from .registry import get_config, list_models

    config = getattr(model, "config", None)
    if not isinstance(config, ArchConfig):
        return None
    for name in list_models():
        ref = get_config(name)
        if (ref.stem, ref.stages, ref.in_channels) == (config.stem, config.stages, config.in_channels):
            entry = _official_keys().get(name)
            return name if entry is not None and entry["source"] == source else None
    return None


def _pairs(ours_g: list[tuple[str, dict[str, torch.Tensor]]], theirs: dict[str, torch.Tensor], source: str,
           model: nn.Module, report: LoadReport) -> list[tuple[str, dict[str, str]]]:
    """For each of our modules, its prefix and {suffix: their key}; fills missing/unexpected."""
    if source == "nas":
        report.pairing = "by name"
        pairs = [(p, {s: _join(p, s) for s in ts}) for p, ts in ours_g]
    else:
        name = _canonical_name(model, source)
        if name is not None:
            report.pairing = f"by official name map ({name})"
            ref_keys = {k: None for k in _official_keys()[name]["keys"]}
            ref_g = _groups(ref_keys)
        else:  # a config with no recorded official layout: trust the checkpoint's order
            report.pairing = "by position (no official key list for this config)"
            ref_g = _groups(theirs)
        pairs = [(o, {s: _join(t, s) for s in t_suffixes}) for (o, _), (t, t_suffixes) in zip(ours_g, ref_g)]
        report.missing += [_join(p, s) for p, ts in ours_g[len(ref_g):] for s in ts]
    # whatever no module of ours asked for, including any modules past the end of ours
    used = {k for _, keys in pairs for k in keys.values()}
    report.unexpected += [k for k in theirs if k not in used and k.rpartition(".")[2] not in _SKIP_SUFFIXES]
    return pairs


def load_reference_weights(model: nn.Module, state_dict: Mapping[str, Any], source: str | None = None,
                           strict: bool = True) -> LoadReport:
    """Copy an official checkpoint's tensors into ``model`` (one of ours, built from the same config).

    ``source`` is one of `SOURCES`, detected from the keys when None. With ``strict`` a checkpoint
    that does not fit completely raises `ValueError` naming the first keys that failed, and the
    model is left unchanged; otherwise what fits is loaded and the rest is reported.
    """
    theirs = unwrap_checkpoint(state_dict)
    source = source or detect_source(theirs)
    if source not in SOURCES:
        raise ValueError(f"source: {source!r} is not allowed; expected one of {', '.join(SOURCES)}")
    ours = model.state_dict()
    report = LoadReport(source)
    ours_g = _groups(ours)
    by_prefix = dict(ours_g)
    new_values: dict[str, torch.Tensor] = {}
    for o_prefix, keys in _pairs(ours_g, theirs, source, model, report):
        o_tensors = by_prefix[o_prefix]
        absent = [s for s in o_tensors if s not in keys or keys[s] not in theirs]
        if absent:
            report.missing += [_join(o_prefix, s) + ("" if source == "nas" or s not in keys else f" ({keys[s]})")
                               for s in absent]
            continue
        extra = [keys[s] for s in keys if s not in o_tensors]
        wrong = [s for s in o_tensors if theirs[keys[s]].shape != o_tensors[s].shape]
        if extra or wrong:
            t_desc = ", ".join(f"{keys[s]}: {tuple(theirs[keys[s]].shape)}" for s in keys if keys[s] in theirs)
            report.mismatched.append(f"{o_prefix} {{{_describe(o_tensors)}}} vs {{{t_desc}}}")
            continue
        is_norm = "running_var" in o_tensors
        for suffix, their_key in keys.items():
            value = theirs[their_key].detach().to(o_tensors[suffix].dtype)
            if source == "tresnet" and is_norm and suffix == "weight":
                value = value.abs() + _IABN_EPS
                report.converted_iabn += 1
            new_values[_join(o_prefix, suffix)] = value
            report.loaded += 1
    if strict and not report.ok:
        raise ValueError(f"load_reference_weights: checkpoint does not fit this model: {report}")
    with torch.no_grad():
        for key, value in new_values.items():
            ours[key].copy_(value)
    return report


def _describe(tensors: Mapping[str, torch.Tensor]) -> str:
    return ", ".join(f"{k}: {tuple(v.shape)}" for k, v in tensors.items())
