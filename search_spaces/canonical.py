"""Canonical architectures as data: HarDNet 39DS / 68DS / 68 / 85, TResNet M / L / XL, ResNet-50.

Each entry is the same network as its official implementation, layer for layer (the same
convolutions in the same execution order and the same parameter count; `tests/test_canonical.py`
checks both against layouts recorded from the official code). Where the official code puts a
downsampling op *after* a stage's transition conv, this space puts it at the *start* of the
next stage; the sequence of ops is identical.

Sources: PingoLH/Pytorch-HarDNet ``hardnet.py``; Alibaba-MIIL/TResNet
``src/models/tresnet/tresnet.py`` (width factors 1.0 / 1.2 / 1.3, planes ``int(64 * w)``);
torchvision ResNet-50 (v1.5: stride on the 3x3 conv).
"""

from __future__ import annotations

from nas.config import ArchConfig, HeadConfig, StageConfig, StemConfig

__all__ = ["CANONICAL"]


def _hardnet(stem: tuple[int, int], k: list[int], depth: list[int], transition: list[int], down: list[str],
             m: float, depthwise: bool, head_dropout: float, last_transition_dropout: float = 0.0) -> ArchConfig:
    stages = tuple(
        StageConfig(block="hard", depth=d, growth_rate=g, weight_factor=m, transition=t, downsample=ds,
                    depthwise=depthwise, activation="relu6",
                    transition_dropout=last_transition_dropout if i == len(k) - 1 else 0.0)
        for i, (g, d, t, ds) in enumerate(zip(k, depth, transition, down))
    )
    return ArchConfig(stem=StemConfig("hardnet", stem, depthwise=depthwise, activation="relu6"), stages=stages,
                      head=HeadConfig(1000, head_dropout))


def _tresnet(depths: list[int], width_factor: float) -> ArchConfig:
    planes = int(64 * width_factor)
    common = dict(activation="leaky_relu:0.001", post_activation="relu", shortcut="avgpool", se_min_channels=64)
    stages = (
        StageConfig(block="basic", depth=depths[0], width=planes, downsample="none", se="output", se_reduction=4, **common),
        StageConfig(block="basic", depth=depths[1], width=planes * 2, downsample="blur", se="output", se_reduction=4, **common),
        StageConfig(block="bottleneck", depth=depths[2], width=planes * 4, downsample="blur", se="mid", se_reduction=8, **common),
        StageConfig(block="bottleneck", depth=depths[3], width=planes * 8, downsample="blur", se="none", se_reduction=8, **common),
    )
    return ArchConfig(stem=StemConfig("space_to_depth", (planes,), activation="leaky_relu:0.01"), stages=stages,
                      head=HeadConfig(1000, 0.0))


def _resnet50() -> ArchConfig:
    stages = tuple(
        StageConfig(block="bottleneck", depth=d, width=w, downsample=ds, activation="relu", post_activation="relu",
                    shortcut="conv")
        for d, w, ds in zip([3, 4, 6, 3], [64, 128, 256, 512], ["none", "conv", "conv", "conv"])
    )
    return ArchConfig(stem=StemConfig("resnet", (64,), activation="relu"), stages=stages, head=HeadConfig(1000, 0.0))


_MP, _DW, _NO = "maxpool", "dwconv", "none"

CANONICAL: dict[str, ArchConfig] = {
    "hardnet39ds": _hardnet((24, 48), [16, 20, 64, 160], [4, 16, 8, 4], [96, 320, 640, 1024],
                            [_NO, _DW, _DW, _DW], 1.6, True, 0.05),
    "hardnet68ds": _hardnet((32, 64), [14, 16, 20, 40, 160], [8, 16, 16, 16, 4], [128, 256, 320, 640, 1024],
                            [_NO, _DW, _NO, _DW, _DW], 1.7, True, 0.05),
    "hardnet68": _hardnet((32, 64), [14, 16, 20, 40, 160], [8, 16, 16, 16, 4], [128, 256, 320, 640, 1024],
                          [_NO, _MP, _NO, _MP, _MP], 1.7, False, 0.1),
    "hardnet85": _hardnet((48, 96), [24, 24, 28, 36, 48, 256], [8, 16, 16, 16, 16, 4],
                          [192, 256, 320, 480, 720, 1280], [_NO, _MP, _NO, _MP, _NO, _MP], 1.7, False, 0.2,
                          last_transition_dropout=0.1),
    "tresnet_m": _tresnet([3, 4, 11, 3], 1.0),
    "tresnet_l": _tresnet([4, 5, 18, 3], 1.2),
    "tresnet_xl": _tresnet([4, 5, 24, 3], 1.3),
    "resnet50": _resnet50(),
}
CANONICAL = {name: cfg.replace(name=name) for name, cfg in CANONICAL.items()}
