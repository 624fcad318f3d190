"""The model contract, swept over every canonical model and random configs."""

from __future__ import annotations

import pytest
import torch

import nas
from nas.sampling import random_config

CANONICAL = nas.list_models()
RANDOM = [random_config(s) for s in range(20)]


def _small_input(cfg: nas.ArchConfig, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(batch, cfg.in_channels, 2 * cfg.reduction, 2 * cfg.reduction)


def _models():
    for name in CANONICAL:
        yield pytest.param(nas.get_config(name).replace(head=nas.HeadConfig(10, 0.1)), id=name)
    for i, cfg in enumerate(RANDOM):
        yield pytest.param(cfg, id=f"random{i}")


@pytest.mark.parametrize("cfg", list(_models()))
def test_forward_backward_features(cfg):
    model = nas.build_model(cfg)
    x = _small_input(cfg)
    model.train()
    out = model(x)
    assert out.shape == (2, cfg.head.num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient reached {missing[:5]}"

    model.eval()
    with torch.no_grad():
        feats = model.forward_stages(x)
        assert len(feats) == len(model.feature_info) == len(cfg.stages)
        for f, info in zip(feats, model.feature_info):
            assert f.shape[1] == info["num_chs"]
            assert f.shape[2] == x.shape[2] // info["reduction"]
        last = model.forward_features(x)
        assert last.shape[1] == model.num_features
        torch.testing.assert_close(model.forward_head(last), model(x))
        assert model.forward_head(last, pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize("cfg", list(_models()))
def test_torchscript(cfg):
    model = nas.build_model(cfg).eval()
    x = _small_input(cfg, 1)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def test_reset_classifier():
    model = nas.create_model("hardnet39ds", num_classes=10)
    model.reset_classifier(3)
    x = torch.randn(1, 3, 64, 64)
    assert model.eval()(x).shape == (1, 3)
    assert model.config.head.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features)
    with pytest.raises(ValueError, match="num_classes: -1"):
        model.reset_classifier(-1)


def test_reset_classifier_replaces_the_frozen_config():
    model = nas.create_model("tresnet_m", num_classes=10, dropout=0.2)
    before = model.config
    model.reset_classifier(5)
    assert model.config is not before and before.head.num_classes == 10  # replaced, not mutated
    assert model.config == nas.get_config("tresnet_m").replace(head=nas.HeadConfig(5, 0.2))
    assert model.arch_id == nas.create_model("tresnet_m", num_classes=5, dropout=0.2).arch_id
    assert nas.analyze(model.config).params == sum(p.numel() for p in model.parameters())
    model.reset_classifier(0)  # no HeadConfig for a headless model: the config keeps the last size
    assert model.config.head.num_classes == 5


def test_registry():
    assert nas.list_models() == sorted(
        ["hardnet39ds", "hardnet68ds", "hardnet68", "hardnet85", "tresnet_m", "tresnet_l", "tresnet_xl", "resnet50"])
    assert nas.list_models("tresnet*") == ["tresnet_l", "tresnet_m", "tresnet_xl"]
    with pytest.raises(ValueError, match="'hardnet99' is not known; known models: hardnet39ds, hardnet68,"):
        nas.get_config("hardnet99")
    m = nas.create_model("resnet50", num_classes=7, dropout=0.2, in_channels=1)
    assert m.config.head.num_classes == 7 and m.config.head.dropout == 0.2 and m.config.in_channels == 1
    with pytest.raises(ValueError, match="override 'colour' is not allowed; allowed: "):
        nas.create_model("resnet50", colour="red")


def test_build_model_rejects_non_configs():
    with pytest.raises(ValueError, match="expected an ArchConfig"):
        nas.build_model({"stem": {}})


def test_blur_filter_is_a_buffer_not_a_parameter():
    model = nas.create_model("tresnet_m")
    assert not any("filt" in n for n, _ in model.named_parameters())
    assert not any("filt" in k for k in model.state_dict())
    assert any(n.endswith("filt") for n, _ in model.named_buffers())


@pytest.mark.parametrize("seed", range(8))
def test_feature_info_at_reports_the_real_feature_map_sizes(seed):
    """At a non-square size that is not a multiple of the stride, every stage's size is the forward pass's."""
    cfg = random_config(seed)
    r, m = cfg.reduction, (4 if cfg.stem.type == "space_to_depth" else 1)
    h, w = -(-(2 * r + 9) // m) * m, -(-(3 * r + 5) // m) * m
    model = nas.build_model(cfg).eval()
    with torch.no_grad():
        feats = model.forward_stages(torch.zeros(1, cfg.in_channels, h, w))
    info = model.feature_info_at(f"{h}x{w}")
    assert [i["size"] for i in info] == [tuple(f.shape[2:]) for f in feats]
    assert [i["num_chs"] for i in info] == [f.shape[1] for f in feats]
    assert [{k: v for k, v in i.items() if k != "size"} for i in info] == model.feature_info
