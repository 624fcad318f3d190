"""Zero-cost proxies: accuracy predictors computed from one minibatch at initialisation.

* ``synflow`` (Tanaka et al. 2020): sum |theta * dR/dtheta| on the sign-linearised network
  with a constant input and R the sum of the outputs. Raw values span 1e30-1e60 and beyond and
  overflow float32, so the pass runs in float64 on a rescaled input and the score is log10.
* ``naswot`` (Mellor et al. 2021): log-determinant of the Hamming-similarity kernel of the
  minibatch's binary activation patterns (sign of every activation's output).
* ``grad_norm``: L2 norm of the cross-entropy gradient over all parameters.

All are computed on the proxy network (dataset channels/classes) in well under a second for
the networks of this space at 32x32; the result also carries ``params`` as the baseline every
zero-cost proxy should beat.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ArchConfig
from ..data import Dataset, load_dataset
from ..model import build_model
from .train import _proxy_resolution, proxy_config

__all__ = ["ZERO_COST_PROXIES", "zero_cost"]

ZERO_COST_PROXIES: tuple[str, ...] = ("synflow", "naswot", "grad_norm")
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.SiLU, nn.GELU)
_SYNFLOW_SCALE = 1e-150


def _synflow(model: nn.Module, shape: tuple[int, ...]) -> float:
    """log10 of sum |theta * dR/dtheta| on the sign-linearised network.

    Linearised: weights made positive, activations replaced by identity (ReLU6 and friends
    would otherwise saturate on the all-positive signal), BatchNorm set to identity (so the
    zero-initialised last BN of residual branches does not hide them). With all biases zero the
    network is positively homogeneous, so the input is scaled by 1e-150 to keep every
    intermediate inside float64 and the scale is taken out of the log afterwards.
    """
    m = copy.deepcopy(model).double().eval()
    for name, child in list(m.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, _ACTIVATIONS):
                setattr(child, attr, nn.Identity())
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
        for p in m.parameters():
            p.abs_()
    m.zero_grad()
    out = m(torch.full(shape, _SYNFLOW_SCALE, dtype=torch.float64))
    out.sum().backward()
    total = 0.0
    for p in m.parameters():
        if p.grad is not None:
            total += float((p.detach() * p.grad).abs().sum())
    if not (total > 0 and math.isfinite(total)):
        return float("nan")
    return math.log10(total) - math.log10(_SYNFLOW_SCALE)


def _naswot(model: nn.Module, x: torch.Tensor) -> float:
    codes: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        codes.append((out.detach().flatten(1) > 0).to(torch.float64))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    if not codes:
        return float("nan")
    c = torch.cat(codes, 1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else float("nan")


def _grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model = copy.deepcopy(model).train()  # a copy: train-mode BN would update the caller's statistics
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    sq = sum(float(p.grad.double().pow(2).sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    return math.sqrt(sq)


def zero_cost(config_or_model: ArchConfig | nn.Module, data: Dataset | str | None = None, *, batch_size: int = 64,
              seed: int = 0) -> dict[str, float]:
    """``synflow``, ``naswot``, ``grad_norm`` and ``params`` of a config (or a built model).

    A config is adapted to the data as in `train_eval` (channels, classes, proxy resolution).
    """
    ds = data if isinstance(data, Dataset) else load_dataset(data, seed=seed)
    if isinstance(config_or_model, ArchConfig):
        res = _proxy_resolution(config_or_model, ds, None)
        ds = ds.resized(res)
        torch.manual_seed(seed)
        model = build_model(proxy_config(config_or_model, ds))
    else:
        model = config_or_model
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds.train_y), generator=g)[:batch_size]
    x, y = ds.normalize(ds.train_x[idx]), ds.train_y[idx]
    was_training = model.training
    try:
        scores = {
            "synflow": _synflow(model, (1, *x.shape[1:])),
            "naswot": _naswot(model, x),
            "grad_norm": _grad_norm(model, x, y),
            "params": float(sum(p.numel() for p in model.parameters())),
        }
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return scores
