"""Deploy-time BatchNorm folding: conv -> BN becomes one conv with a bias.

The HarDNet authors point users to BN fusion for inference; every ConvNormAct in our models
is folded, so a deployed model runs one kernel per conv instead of two.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import ConvNormAct

__all__ = ["fold_bn", "fuse_model"]


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused = fused.to(device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    return fused


def fuse_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every ConvNormAct's BatchNorm folded into its conv."""
    fused = copy.deepcopy(model).eval()
    for m in fused.modules():
        if isinstance(m, ConvNormAct) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fold_bn(m.conv, m.bn)
            m.bn = nn.Identity()
    return fused
