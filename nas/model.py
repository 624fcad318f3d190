"""`build_model`: the only place that turns an `ArchConfig` into modules.

Every model keeps one contract (timm's): ``forward``, ``forward_features``, ``forward_head``,
``forward_stages`` (one feature map per stage, for detection / segmentation necks),
``reset_classifier``, ``num_features`` and ``feature_info`` (``feature_info_at(resolution)`` adds
each stage's real output size at an input size).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .blocks import build_stage
from .config import ArchConfig
from .errors import check_int
from .modules import ClassifierHead, init_weights
from .resolution import Resolution
from .stems import build_stem

__all__ = ["ClassifierHead", "Net", "build_model"]


class Net(nn.Module):
    """A network of the design space: ``stem`` -> ``stages`` -> ``head``."""

    __jit_unused_properties__ = ["arch_id"]

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = build_stem(config.stem, config.in_channels)
        ch = config.stem.out_channels
        stages, self.feature_info = [], []
        for i, (scfg, reduction) in enumerate(zip(config.stages, config.stage_reductions())):
            stage, ch = build_stage(scfg, ch)
            stages.append(stage)
            self.feature_info.append({"module": f"stages.{i}", "num_chs": ch, "reduction": reduction})
        self.stages = nn.Sequential(*stages)
        self.num_features = ch
        self.head = ClassifierHead(ch, config.head.num_classes, config.head.dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage, matching `feature_info` one to one."""
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def feature_info_at(self, resolution: Resolution) -> list[dict]:
        """`feature_info` with each stage's real output ``size`` (height, width) for an input of
        ``resolution`` (224 or "HxW"), by PyTorch's shape rules (from `nas.analyze`, nothing run)."""
        from .cost import analyze

        stages = [s for s in analyze(self.config, resolution).by_stage() if s.name.startswith("stages.")]
        return [{**info, "size": tuple(s.out_shape[2:])} for info, s in zip(self.feature_info, stages)]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier for ``num_classes`` outputs (0 makes the head return features).

        ``config`` (a frozen dataclass) is replaced by one whose ``head.num_classes`` is the new
        value, so ``arch_id``, `analyze` and exports describe the model as it now is. With 0 it
        keeps the previous value: a `HeadConfig` cannot describe a model without a classifier.
        """
        check_int("num_classes", num_classes, 0)
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            self.config = self.config.replace(head=dataclasses.replace(self.config.head, num_classes=num_classes))

    @property
    def arch_id(self) -> str:
        return self.config.arch_id


def build_model(config: ArchConfig) -> Net:
    """Build the network a config describes."""
    if not isinstance(config, ArchConfig):
        raise ValueError(f"config: {type(config).__name__} is not allowed; expected an ArchConfig")
    return Net(config)
