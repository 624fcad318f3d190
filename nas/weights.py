"""Load official pretrained checkpoints (Pytorch-HarDNet, TResNet, torchvision ResNet-50) into our models.

Our canonical models are the official networks layer for layer, and every block registers its
parametrised parts in the official order, so the two state dicts list the same tensors in the
same order under different names. The loader pairs them module by module (a conv, a norm, a
linear layer: the keys sharing a prefix), checks every shape, and reports whatever does not
pair as missing / unexpected keys by name.

TResNet checkpoints hold inplace-ABN parameters: in eval mode that is a BatchNorm whose scale is
``|gamma| + eps`` (not ``gamma``) followed by the activation, so the loader converts gamma.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

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

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"{self.loaded} tensors loaded from a {self.source} checkpoint"]
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


def _groups(sd: Mapping[str, torch.Tensor]) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Tensors grouped by owning module, in state-dict order, skipping non-learned buffers."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        prefix, _, suffix = key.rpartition(".")
        if suffix in _SKIP_SUFFIXES:
            continue
        groups.setdefault(prefix, {})[suffix] = value
    return list(groups.items())


def load_reference_weights(model: nn.Module, state_dict: Mapping[str, Any], source: str | None = None,
                           strict: bool = True) -> LoadReport:
    """Copy an official checkpoint's tensors into ``model`` (one of ours, built from the same config).

    ``source`` is one of `SOURCES`, detected from the keys when None. With ``strict`` a checkpoint
    that does not pair completely raises `ValueError` naming the first keys that failed, and the
    model is left unchanged; otherwise what pairs is loaded and the rest is reported.
    """
    theirs = unwrap_checkpoint(state_dict)
    source = source or detect_source(theirs)
    if source not in SOURCES:
        raise ValueError(f"source: {source!r} is not allowed; expected one of {', '.join(SOURCES)}")
    ours = model.state_dict()
    report = LoadReport(source)
    ours_g, theirs_g = _groups(ours), _groups(theirs)
    new_values: dict[str, torch.Tensor] = {}
    for (o_prefix, o_tensors), (t_prefix, t_tensors) in zip(ours_g, theirs_g):
        o_keys, t_keys = set(o_tensors), set(t_tensors)
        shapes_match = o_keys == t_keys and all(o_tensors[k].shape == t_tensors[k].shape for k in o_keys)
        if not shapes_match:
            report.mismatched.append(
                f"{o_prefix} {{{_describe(o_tensors)}}} vs {t_prefix} {{{_describe(t_tensors)}}}"
            )
            continue
        is_norm = "running_var" in o_keys
        for suffix, value in t_tensors.items():
            value = value.detach().to(o_tensors[suffix].dtype)
            if source == "tresnet" and is_norm and suffix == "weight":
                value = value.abs() + _IABN_EPS
                report.converted_iabn += 1
            new_values[f"{o_prefix}.{suffix}" if o_prefix else suffix] = value
            report.loaded += 1
    report.missing = [f"{p}.{s}" for p, ts in ours_g[len(theirs_g):] for s in ts]
    report.unexpected = [f"{p}.{s}" for p, ts in theirs_g[len(ours_g):] for s in ts]
    if strict and not report.ok:
        raise ValueError(f"load_reference_weights: checkpoint does not fit this model: {report}")
    with torch.no_grad():
        for key, value in new_values.items():
            ours[key].copy_(value)
    return report


def _describe(tensors: Mapping[str, torch.Tensor]) -> str:
    return ", ".join(f"{k}: {tuple(v.shape)}" for k, v in tensors.items())
