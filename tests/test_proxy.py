"""Proxy training and zero-cost proxies."""

from __future__ import annotations

import math

import pytest
import torch

import nas
from nas.data import load_dataset
from nas.proxy import ProxyBudget, proxy_config, scale_width, train_eval, zero_cost
from nas.proxy import train as T
from nas.sampling import random_config

SMALL = random_config(5, max_width=32, max_depth=4)
QUICK = ProxyBudget(epochs=2, batch_size=64, max_train_samples=256)


@pytest.fixture(scope="module")
def digits():
    return load_dataset()


def test_train_eval_reports_everything(digits):
    r = train_eval(SMALL, digits, QUICK, device="cpu")
    assert r.ok and 0.0 <= r.accuracy <= 1.0, r.reason
    assert len(r.loss_curve) == len(r.accuracy_curve) == 2 and r.accuracy == r.accuracy_curve[-1]
    assert r.steps_done == 8 and r.epochs_done == pytest.approx(2.0)
    assert r.images_per_s > 0 and r.wall_s > 0
    assert r.proxy["dataset"] == "digits" and r.proxy["resolution"] % SMALL.reduction == 0
    assert r.proxy["arch_id"] == SMALL.arch_id and r.proxy["params"] > 0


def test_defaults_use_embedded_data():
    r = train_eval(SMALL, budget=ProxyBudget(steps=3, batch_size=32))
    assert r.ok and r.proxy["dataset"] == "digits" and r.steps_done == 3


def test_training_learns_on_digits(digits):
    cfg = scale_width(nas.get_config("hardnet39ds"), 0.5)
    r = train_eval(cfg, digits, ProxyBudget(epochs=3, batch_size=64), device="cpu")
    assert r.ok and r.accuracy > 0.5  # chance is 0.1
    assert r.loss_curve[-1] < r.loss_curve[0]
    # the held-out loss per epoch, unsmoothed: about ln(10) = 2.3 untrained, falling as accuracy rises
    assert len(r.eval_loss_curve) == len(r.accuracy_curve) == 3
    assert 0 < r.eval_loss_curve[-1] < r.eval_loss_curve[0] < 5


def test_reproducible_with_a_seed(digits):
    a = train_eval(SMALL, digits, QUICK, device="cpu")
    b = train_eval(SMALL, digits, QUICK, device="cpu")
    assert a.accuracy == b.accuracy and a.loss_curve == b.loss_curve
    c = train_eval(SMALL, digits, ProxyBudget(epochs=2, batch_size=64, max_train_samples=256, seed=1), device="cpu")
    assert c.loss_curve != a.loss_curve


def test_callback_prunes(digits):
    seen = []

    def cb(epoch, acc):
        seen.append((epoch, acc))
        return epoch >= 1

    r = train_eval(SMALL, digits, QUICK, device="cpu", callback=cb)
    assert r.status == "pruned" and seen == [(1, r.accuracy)] and len(r.accuracy_curve) == 1


def test_nan_loss_is_a_recorded_failure(digits):
    r = train_eval(SMALL, digits, ProxyBudget(steps=30, lr=1e12, warmup_steps=1, batch_size=64), device="cpu")
    assert r.status == "failed" and r.reason.startswith("non-finite loss")


def test_crash_is_a_recorded_failure(digits, monkeypatch):
    def broken(_cfg):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(T, "build_model", broken)
    r = train_eval(SMALL, digits, QUICK, device="cpu")
    assert r.status == "failed" and r.reason == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_time_budget_stops_early(digits):
    r = train_eval(SMALL, digits, ProxyBudget(epochs=None, seconds=0.5, batch_size=64), device="cpu")
    assert r.ok and r.steps_done >= 1 and r.wall_s < 30


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(epochs=None), "no limit given"),
    (dict(epochs=0), "budget.epochs: 0 is not allowed"),
    (dict(steps=-1), "budget.steps: -1 is not allowed"),
    (dict(width_mult=0), "budget.width_mult: 0 is not allowed"),
])
def test_bad_budget(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProxyBudget(**kwargs)


def test_width_scaling_and_proxy_config(digits):
    cfg = nas.get_config("tresnet_m")
    half = scale_width(cfg, 0.5)
    assert half.stem.channels == (32,) and half.stages[0].width == 32 and half.stages[3].width == 256
    h = scale_width(nas.get_config("hardnet68"), 0.5)
    assert h.stages[0].growth_rate == 8 and h.stages[0].transition == 64  # growth rates stay even
    p = proxy_config(cfg, digits, 0.25)
    assert p.in_channels == 1 and p.head.num_classes == 10
    assert nas.analyze(p, 32).params < nas.analyze(cfg, 32).params / 10


@pytest.mark.parametrize("cfg", [scale_width(nas.get_config(n), 0.25) for n in ("hardnet68", "tresnet_xl", "resnet50")]
                         + [random_config(s) for s in range(5)])
def test_zero_cost_proxies_are_finite(cfg, digits):
    scores = zero_cost(cfg, digits, batch_size=32)
    assert set(scores) == {"synflow", "naswot", "grad_norm", "params"}
    assert all(math.isfinite(v) for v in scores.values()), scores
    assert scores["grad_norm"] > 0 and scores["params"] > 0


def test_synflow_is_log_scaled_and_deterministic(digits):
    cfg = nas.get_config("hardnet68")
    a, b = zero_cost(cfg, digits, batch_size=16), zero_cost(cfg, digits, batch_size=16)
    assert a == b
    assert 5 < a["synflow"] < 300  # log10 of a value far outside float32 range
    model = nas.build_model(proxy_config(cfg, digits))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zero_cost(model, digits.resized(32), batch_size=16)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is untouched
