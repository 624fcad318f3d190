"""Deploy-time BatchNorm folding: conv -> BN becomes one conv with a bias.

The HarDNet authors point users to BN fusion for inference; every ConvNormAct in our models
is folded, so a deployed model runs one kernel per conv instead of two.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layers import ConvNormAct

__all__ = ["fold_bn", "fuse_model"]


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` in eval mode (`torch.nn.utils.fusion.fuse_conv_bn_eval`)."""
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


def fuse_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every ConvNormAct's BatchNorm folded into its conv."""
    fused = copy.deepcopy(model).eval()
    for m in fused.modules():
        if isinstance(m, ConvNormAct) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fold_bn(m.conv, m.bn)
            m.bn = nn.Identity()
    return fused
