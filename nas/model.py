"""`build_model`: the only place that turns an `ArchConfig` into modules.

Every model keeps one contract (timm's): ``forward``, ``forward_features``, ``forward_head``,
``forward_stages`` (one feature map per stage, for detection / segmentation necks),
``reset_classifier``, ``num_features`` and ``feature_info``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .blocks import _Residual, build_stage
from .config import ArchConfig
from .stems import build_stem

__all__ = ["ClassifierHead", "Net", "build_model"]


class ClassifierHead(nn.Module):
    """Global average pool -> dropout -> linear."""

    def __init__(self, num_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.fc(x)


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
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, _Residual):
                m.zero_init_last()

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
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes: {num_classes!r} is not allowed; expected an integer >= 0")
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
