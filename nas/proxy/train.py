"""Short proxy training: a cheap accuracy that ranks architectures the way long training does.

The recipe is the HarDNet seed's scaled down: SGD with Nesterov momentum, cosine decay (after a
short linear warm-up, which keeps deep random candidates from diverging on step one), label
smoothing 0.1, weight decay 5e-4 (the seed's 6e-5 suits 150+ ImageNet epochs; short runs on
small data need more regularisation). AMP and channels_last on CUDA. The budget is epochs,
steps or seconds, whichever ends first.

Two knobs make the proxy cheaper, both documented in the result:

* ``resolution`` — the proxy trains at the dataset's native resolution (32 for CIFAR/digits),
  rounded up to a multiple of the network's stride, instead of 224: a ~50x cheaper forward.
* ``width_mult`` — every channel count (stem, growth rates, widths, transitions) scaled; the
  ranking of architectures is far more stable under uniform width scaling than their accuracy.

Everything is seeded (weights, shuffling, augmentation). A candidate whose loss goes NaN/inf, or
that raises (out of memory...), ends with ``status="failed"`` and the reason; the caller goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import ArchConfig, HeadConfig
from ..data import Dataset, augment, load_dataset
from ..errors import check_int, failure_reason
from ..latency.devices import resolve_device
from ..model import build_model
from .curve import extrapolate_accuracy
from .threads import FairThreads

__all__ = ["ProxyBudget", "ProxyResult", "proxy_config", "scale_width", "train_eval"]

EpochCallback = Callable[[int, float], bool | None]


@dataclass(frozen=True)
class ProxyBudget:
    """How long and how a proxy training runs. ``epochs`` may be fractional.

    The default (4 epochs over at most 5,000 training images at half width, ~20k images seen,
    accuracy on a seeded 2,000-image subset of the held-out split) keeps a HarDNet68-size
    candidate around a minute on 2 CPU cores.
    """

    epochs: float | None = 4.0
    steps: int | None = None
    seconds: float | None = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_steps: int = 20
    width_mult: float = 0.5
    resolution: int | None = None
    max_train_samples: int | None = 5000
    max_eval_samples: int | None = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs is None and self.steps is None and self.seconds is None:
            raise ValueError("budget: no limit given; expected epochs, steps or seconds")
        for name in ("epochs", "seconds"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"budget.{name}: {v!r} is not allowed; expected a positive number or None")
        for name in ("steps", "batch_size", "max_train_samples", "max_eval_samples", "resolution"):
            if getattr(self, name) is not None:
                check_int(f"budget.{name}", getattr(self, name), expected="a positive integer or None")
        if not 0 < self.width_mult <= 4:
            raise ValueError(f"budget.width_mult: {self.width_mult!r} is not allowed; expected a number in (0, 4]")
        if not self.lr > 0:
            raise ValueError(f"budget.lr: {self.lr!r} is not allowed; expected a positive number")


@dataclass
class ProxyResult:
    """Outcome of one proxy training."""

    accuracy: float | None  # top-1 on (a seeded subset of) the held-out split after the last epoch
    status: str  # "ok", "pruned" (stopped by the callback) or "failed"
    reason: str | None = None
    epochs_done: float = 0.0
    steps_done: int = 0
    wall_s: float = 0.0
    images_per_s: float = 0.0
    loss_curve: list[float] = field(default_factory=list)  # mean train loss per epoch
    accuracy_curve: list[float] = field(default_factory=list)  # held-out accuracy per epoch
    eval_loss_curve: list[float] = field(default_factory=list)  # held-out cross-entropy per epoch (no smoothing)
    proxy: dict = field(default_factory=dict)  # what was trained: dataset, resolution, width, params
    extrapolated_accuracy: float | None = None  # the curve extrapolated to 10x the epochs (`curve.py`)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _scale(c: int, mult: float, minimum: int = 1) -> int:
    return max(minimum, int(round(c * mult)))


def scale_width(config: ArchConfig, mult: float) -> ArchConfig:
    """Every channel count of ``config`` times ``mult`` (growth rates kept even, as HarDNet rounds)."""
    if mult == 1.0:
        return config
    stem = dataclasses.replace(config.stem, channels=tuple(_scale(c, mult, 4) for c in config.stem.channels))
    stages = []
    for s in config.stages:
        if s.block == "hard":
            stages.append(dataclasses.replace(
                s, growth_rate=max(2, 2 * round(s.growth_rate * mult / 2)),
                transition=_scale(s.transition, mult, 4) if s.transition else 0,
                se_min_channels=_scale(s.se_min_channels, mult)))
        else:
            stages.append(dataclasses.replace(s, width=_scale(s.width, mult, 4),
                                              se_min_channels=_scale(s.se_min_channels, mult)))
    return config.replace(stem=stem, stages=tuple(stages))


def proxy_config(config: ArchConfig, dataset: Dataset, width_mult: float = 1.0) -> ArchConfig:
    """The network the proxy trains: input channels and classes of the dataset, width scaled."""
    head = HeadConfig(dataset.num_classes, config.head.dropout)
    return scale_width(config, width_mult).replace(in_channels=dataset.in_channels, head=head)


def _proxy_resolution(config: ArchConfig, dataset: Dataset, requested: int | None) -> int:
    base = requested or dataset.resolution
    return max(config.reduction, -(-base // config.reduction) * config.reduction)


@torch.no_grad()
def _evaluate(model: torch.nn.Module, ds: Dataset, test_x: torch.Tensor, test_y: torch.Tensor,
              device: torch.device, batch: int, amp: bool, channels_last: bool) -> tuple[float, float]:
    """Held-out accuracy and mean cross-entropy."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(test_y), batch):
        x = ds.normalize(test_x[i:i + batch].to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
        y = test_y[i:i + batch]
        correct += int((logits.argmax(1).cpu() == y).sum())
        loss += float(F.cross_entropy(logits.float().cpu(), y, reduction="sum"))
    return correct / len(test_y), loss / len(test_y)


def train_eval(config: ArchConfig, data: Dataset | str | None = None, budget: ProxyBudget | None = None, *,
               device: str = "auto", callback: EpochCallback | None = None) -> ProxyResult:
    """Train ``config`` briefly on ``data`` and return its held-out accuracy.

    With no arguments: the embedded default data (digits) and the default budget. ``callback``
    is called after every epoch with ``(epoch, accuracy)``; returning True stops the run
    (``status="pruned"``), which is how Optuna pruners and Ray Tune's ASHA stop bad trials.
    """
    budget = budget or ProxyBudget()
    dev = resolve_device(device)
    ds = data if isinstance(data, Dataset) else load_dataset(data, seed=budget.seed)
    start = time.perf_counter()
    res = _proxy_resolution(config, ds, budget.resolution)
    ds = ds.resized(res)
    cfg = proxy_config(config, ds, budget.width_mult)
    info = {"dataset": ds.name, "resolution": res, "width_mult": budget.width_mult, "train_images": len(ds.train_y),
            "test_images": len(ds.test_y), "arch_id": config.arch_id, "proxy_arch_id": cfg.arch_id,
            "device": str(dev)}
    result = ProxyResult(None, "ok", proxy=info)
    try:
        torch.manual_seed(budget.seed)
        model = build_model(cfg)
        info["params"] = sum(p.numel() for p in model.parameters())
        amp = dev.type == "cuda"
        channels_last = dev.type == "cuda"
        model = model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        threads = FairThreads() if dev.type == "cpu" else None  # on a busy CPU: the cores others leave free
        with threads or contextlib.nullcontext():
            _train(model, ds, budget, dev, amp, channels_last, callback, result, start,
                   threads.check if threads else lambda: None)
        if threads:
            info["threads"] = {"set": threads.base, "fewest": threads.fewest}
    except Exception as err:  # a crashing candidate is a recorded failure, never the caller's crash
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        result.status, result.reason = "failed", failure_reason(err)
    if result.ok:
        result.extrapolated_accuracy = extrapolate_accuracy(result.accuracy_curve)
    result.wall_s = time.perf_counter() - start
    return result


def _train(model: torch.nn.Module, ds: Dataset, budget: ProxyBudget, dev: torch.device, amp: bool,
           channels_last: bool, callback: EpochCallback | None, result: ProxyResult, start: float,
           between_steps: Callable[[], None]) -> None:
    gen = torch.Generator().manual_seed(budget.seed)
    n_train = len(ds.train_y) if budget.max_train_samples is None else min(budget.max_train_samples, len(ds.train_y))
    subset = torch.randperm(len(ds.train_y), generator=gen)[:n_train]  # a seeded subset, not the first files
    steps_per_epoch = max(1, n_train // budget.batch_size)
    total = math.inf
    if budget.epochs is not None:
        total = max(1, round(budget.epochs * steps_per_epoch))
    if budget.steps is not None:
        total = min(total, budget.steps)
    # with only a time limit the schedule assumes 1000 steps and is cut by the clock
    schedule_steps = total if math.isfinite(total) else 1000
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": budget.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=budget.lr, momentum=budget.momentum, nesterov=True)
    warm = min(budget.warmup_steps, max(1, int(schedule_steps) // 10))

    def lr_at(step: int) -> float:
        if step < warm:
            return budget.lr * (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, schedule_steps - warm))
        return 0.5 * budget.lr * (1 + math.cos(math.pi * t))

    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    train_x, train_y = ds.train_x[subset], ds.train_y[subset]
    n_eval = len(ds.test_y) if budget.max_eval_samples is None else min(budget.max_eval_samples, len(ds.test_y))
    held_out = torch.randperm(len(ds.test_y), generator=torch.Generator().manual_seed(budget.seed))[:n_eval]
    test_x, test_y = ds.test_x[held_out], ds.test_y[held_out]
    step, epoch, images, train_time = 0, 0, 0, 0.0
    eval_batch = max(256, budget.batch_size)
    while step < total:
        model.train()
        order = torch.randperm(n_train, generator=gen)
        losses = []
        t_epoch = time.perf_counter()
        for b in range(steps_per_epoch):
            if step >= total or (budget.seconds is not None and time.perf_counter() - start > budget.seconds):
                total = step
                break
            idx = order[b * budget.batch_size:(b + 1) * budget.batch_size]
            x = augment(train_x[idx], gen, flip=ds.flip).to(dev, non_blocking=True)
            x = ds.normalize(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = train_y[idx].to(dev, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                loss = F.cross_entropy(model(x), y, label_smoothing=budget.label_smoothing)
            if not torch.isfinite(loss):
                result.status, result.reason = "failed", f"non-finite loss ({float(loss.detach())}) at step {step}"
                result.steps_done, result.epochs_done = step, step / steps_per_epoch
                return
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
            step += 1
            between_steps()
            images += len(idx)
        train_time += time.perf_counter() - t_epoch
        if not losses:
            break
        epoch += 1
        acc, eval_loss = _evaluate(model, ds, test_x, test_y, dev, eval_batch, amp, channels_last)
        result.loss_curve.append(sum(losses) / len(losses))
        result.accuracy_curve.append(acc)
        result.eval_loss_curve.append(eval_loss)
        result.accuracy = acc
        result.steps_done, result.epochs_done = step, step / steps_per_epoch
        result.images_per_s = images / train_time if train_time else 0.0
        if callback is not None and callback(epoch, acc):
            result.status, result.reason = "pruned", f"stopped by the callback after epoch {epoch}"
            return
