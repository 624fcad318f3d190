"""The analytic cost model against the built model: params, MACs, CIO per layer, and thop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nas
from nas.cost import thop_profile
from nas.sampling import random_config

from helpers import hook_counts

CANONICAL = nas.list_models()


def _configs():
    for name in CANONICAL:
        yield pytest.param(nas.get_config(name), id=name)
    for seed in range(50):
        yield pytest.param(random_config(seed), id=f"random{seed}")


@pytest.mark.parametrize("cfg", list(_configs()))
def test_analytic_cost_equals_the_built_model(cfg):
    resolution = 2 * cfg.reduction
    model = nas.build_model(cfg)
    report = nas.analyze(cfg, resolution, batch=2)
    assert report.params == sum(p.numel() for p in model.parameters())

    seen = hook_counts(model, torch.zeros(2, cfg.in_channels, resolution, resolution))
    analytic = {r.name: r for r in report.layers if r.op in ("conv", "blur", "linear")}
    # the same modules, by qualified name, with the same CIO and MACs each
    assert set(seen) == set(analytic)
    for name, counts in seen.items():
        assert (analytic[name].cio, analytic[name].macs) == (counts["cio"], counts["macs"]), name
    assert report.cio == sum(c["cio"] for c in seen.values())
    assert report.macs == sum(c["macs"] for c in seen.values())

    # thop counts conv + linear + what it adds for BatchNorm and pooling: exactly extra_macs
    macs, params = thop_profile(model, resolution, batch=2)
    assert params == report.params
    assert macs == report.thop_macs == report.macs + report.extra_macs
    assert not any(hasattr(m, "total_ops") for m in model.modules())


GOLDEN_224 = {
    # name: (params, conv+linear MACs, thop MACs, CIO)
    "hardnet39ds": (3_488_228, 429_471_474, 445_360_258, 9_818_424),
    "hardnet68ds": (4_180_602, 775_281_526, 801_363_878, 17_324_440),
    "hardnet68": (17_565_348, 4_246_114_304, 4_262_856_472, 11_468_940),
    "hardnet85": (36_670_212, 9_074_081_584, 9_099_417_040, 17_469_284),
    "tresnet_m": (31_389_032, 5_736_545_792, 5_765_273_600, 14_386_176),
    "tresnet_l": (55_989_256, 10_877_566_880, 10_924_551_296, 23_497_360),
    "tresnet_xl": (78_436_244, 15_167_063_432, 15_227_745_728, 30_338_780),
    "resnet50": (25_557_032, 4_089_184_256, 4_133_742_592, 21_776_384),
}


@pytest.mark.parametrize("name", CANONICAL)
def test_golden_costs_at_224(name, reference_layouts):
    r = nas.analyze(nas.get_config(name), 224)
    assert (r.params, r.macs, r.thop_macs, r.cio) == GOLDEN_224[name]
    # conv2d-only CIO equals the official code's forward-hook count (TResNet's blur is an F.conv2d there)
    assert sum(x.cio for x in r.layers if x.op == "conv") == reference_layouts[name]["cio_224_conv2d_only"]


def test_paper_and_readme_figures():
    h68, r50 = nas.analyze(nas.get_config("hardnet68")), nas.analyze(nas.get_config("resnet50"))
    assert round(h68.cio / 1e6, 1) == 11.5  # paper Table 4: 11.5M
    assert round(h68.params / 1e6, 1) == 17.6 and round(h68.macs / 1e9, 1) == 4.2  # paper: 17.6M, 4.3G (thop 4.26)
    ds39 = nas.analyze(nas.get_config("hardnet39ds"))
    assert f"{ds39.thop_macs / 1e9:.2f}" == "0.45" and f"{ds39.macs / 1e9:.2f}" == "0.43"  # README 0.44 (truncated)
    assert round(r50.cio / 1e6, 1) == 21.8  # official code 21,776,384; paper prints 20.7M


def test_per_stage_totals_add_up_and_cio_scales_with_area():
    r = nas.analyze(nas.get_config("hardnet68"), 224)
    stages = r.by_stage()
    assert [s.name for s in stages] == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "stages.4", "head"]
    assert sum(s.params for s in stages) == r.params and sum(s.cio for s in stages) == r.cio
    big = nas.analyze(nas.get_config("hardnet68"), 448)
    assert big.cio == 4 * r.cio and big.params == r.params
    assert nas.analyze(nas.get_config("hardnet68"), 224, batch=3).cio == 3 * r.cio
    assert r.cio_bytes == 4 * r.cio and nas.analyze(nas.get_config("hardnet68"), 224, 1, 2).cio_bytes == 2 * r.cio


def test_layer_records_have_moc_and_shapes():
    r = nas.analyze(nas.get_config("hardnet68"), 224)
    conv = next(x for x in r.layers if x.op == "conv")
    assert conv.name == "stem.conv1.conv" and conv.in_shape == (1, 3, 224, 224) and conv.out_shape == (1, 32, 112, 112)
    assert conv.moc == pytest.approx(conv.macs / conv.cio)
    assert r.moc == pytest.approx(r.macs / r.cio)


def test_bad_inputs():
    cfg = nas.get_config("hardnet68")
    with pytest.raises(ValueError, match="resolution: 16 is not allowed; expected each side at least the network's stride 32"):
        nas.analyze(cfg, 16)
    with pytest.raises(ValueError, match="batch: 0 is not allowed"):
        nas.analyze(cfg, 224, 0)
    with pytest.raises(ValueError, match="expected an ArchConfig"):
        nas.analyze("hardnet68")


def test_unhashable_arguments_are_value_errors_not_cache_type_errors():
    cfg = nas.get_config("hardnet68")
    with pytest.raises(ValueError, match=r"^config: dict is not allowed; expected an ArchConfig \(ArchConfig.from_dict"):
        nas.analyze(cfg.to_dict())
    with pytest.raises(ValueError, match=r"^config: list is not allowed; expected an ArchConfig$"):
        nas.analyze([cfg])
    with pytest.raises(ValueError, match=r"^resolution: \[224\] is not allowed; expected a positive integer"):
        nas.analyze(cfg, [224])
    with pytest.raises(ValueError, match=r"^bytes_per_element: \[4\] is not allowed; expected an integer >= 1"):
        nas.analyze(cfg, 224, 1, [4])
    # still cached, and the cache can still be cleared (benchmarks/bench_cost.py does)
    assert nas.analyze(nas.ArchConfig.from_dict(cfg.to_dict())) is nas.analyze(cfg)
    nas.analyze.cache_clear()
    assert nas.analyze.cache_info().currsize == 0


@pytest.mark.parametrize("seed", range(20))
def test_memory_bound_records_mirror_the_modules(seed):
    from torch import nn

    from nas.layers import ConvNormAct

    cfg = random_config(seed)
    model = nas.build_model(cfg)
    report = nas.analyze(cfg, 2 * cfg.reduction)
    modules = dict(model.named_modules())
    acts = {r.name for r in report.layers if r.op == "act" and r.name.endswith(".act")}
    expected = {f"{n}.act" for n, m in modules.items() if isinstance(m, ConvNormAct) and not isinstance(m.act, nn.Identity)}
    assert acts == expected
    bns = {r.name for r in report.layers if r.op == "bn"}
    assert bns == {n for n, m in modules.items() if isinstance(m, nn.BatchNorm2d)}
    assert all(r.mem > 0 for r in report.layers if r.op in ("bn", "act", "concat", "add", "mul", "maxpool"))


def _odd_sizes(cfg):
    """Sizes that are not multiples of the stride: odd, non-square, the smallest allowed, and 176 x 1920/2."""
    r, m = cfg.reduction, (4 if cfg.stem.type == "space_to_depth" else 1)
    up = lambda v: -(-v // m) * m  # noqa: E731
    return [(up(2 * r + 13), up(3 * r + 7)), (up(r), up(r + 5)), (up(5 * r + 17), up(2 * r + 3)), (176, 960)]


def _meta_hooks(cfg, h, w, batch=1):
    """The forward hooks' counts of the built model, run on the meta device (shapes only, no arithmetic)."""
    with torch.device("meta"):
        model = nas.build_model(cfg)
    return hook_counts(model, torch.zeros(batch, cfg.in_channels, h, w, device="meta"))


def _assert_exact(cfg, h, w, batch=1):
    report = nas.analyze(cfg, f"{h}x{w}", batch=batch)
    seen = _meta_hooks(cfg, h, w, batch)
    analytic = {r.name: r for r in report.layers if r.op in ("conv", "blur", "linear")}
    assert set(seen) == set(analytic)
    for name, counts in seen.items():
        a = analytic[name]
        assert (a.cio, a.macs, a.out_shape) == (counts["cio"], counts["macs"], counts["out_shape"]), (name, h, w)
    assert report.cio == sum(c["cio"] for c in seen.values()) and report.macs == sum(c["macs"] for c in seen.values())


@pytest.mark.parametrize("cfg", list(_configs()))
def test_analytic_cost_is_exact_at_odd_and_non_square_sizes(cfg):
    for h, w in _odd_sizes(cfg):
        _assert_exact(cfg, h, w, batch=2)


@pytest.mark.parametrize("name", CANONICAL)
def test_analytic_cost_is_exact_at_full_hd(name):
    """1080x1920 (a landscape video frame, height x width) and its transpose, against the built model's hooks."""
    cfg = nas.get_config(name)
    for h, w in ((1080, 1920), (1920, 1080)):
        _assert_exact(cfg, h, w)
    # the cost of a transposed input is the same (square kernels, symmetric padding)
    assert nas.analyze(cfg, "1080x1920").macs == nas.analyze(cfg, "1920x1080").macs


@pytest.mark.parametrize("name", ["hardnet68", "tresnet_m", "resnet50"])
def test_odd_size_matches_a_real_forward_pass_and_thop(name):
    """Off the meta device too: a real forward at a size that is not a multiple of the stride, and thop."""
    cfg = nas.get_config(name)
    h, w = (68, 100) if cfg.stem.type == "space_to_depth" else (67, 99)
    model = nas.build_model(cfg)
    report = nas.analyze(cfg, f"{h}x{w}")
    seen = hook_counts(model, torch.zeros(1, cfg.in_channels, h, w))
    assert {n: (c["cio"], c["macs"]) for n, c in seen.items()} == {
        r.name: (r.cio, r.macs) for r in report.layers if r.op in ("conv", "blur", "linear")}
    macs, params = thop_profile(model, (h, w))
    assert macs == report.thop_macs and params == report.params


def test_resolution_forms_and_refusals():
    cfg, s2d = nas.get_config("resnet50"), nas.get_config("tresnet_m")
    assert nas.analyze(cfg, 176).resolution == 176 and nas.analyze(cfg, "176").resolution == 176
    assert nas.analyze(cfg, "176x176") is nas.analyze(cfg, 176)  # one cache entry per shape
    assert nas.analyze(cfg, np.int64(176)) is nas.analyze(cfg, 176)  # a size read from a pandas column
    r = nas.analyze(cfg, (1080, 1920))
    assert r.resolution == "1080x1920" and r.input_hw == (1080, 1920) and r.layers[0].in_shape == (1, 3, 1080, 1920)
    assert r.summary()["resolution"] == "1080x1920"
    with pytest.raises(ValueError, match=r"^resolution: '31x64' is not allowed; expected each side at least the "
                                         r"network's stride 32$"):
        nas.analyze(cfg, "31x64")
    with pytest.raises(ValueError, match=r"^resolution: 226 is not allowed; expected sides that are multiples of 4"):
        nas.analyze(s2d, 226)
    for bad in ("1080x", "x", "0x5", -3, 0, 2.5, (1, 2, 3), True):
        with pytest.raises(ValueError, match=r"^resolution: .* is not allowed; expected a positive integer or HxW"):
            nas.analyze(cfg, bad)
