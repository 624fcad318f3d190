"""Latency measurement, BN folding, the measurement cache, prediction and calibration."""

from __future__ import annotations

import copy
import json
import logging
import random
import sqlite3
import subprocess
import sys

import pytest
import torch
from torch import nn

import forked
import nas
from nas.fuse import fuse_model
from nas.latency import InterferencePolicy, LatencyCache, calibrate, cpu_profile, list_profiles, measure, predict, predict_ms, resolve_profile
from nas.latency.measure import _median_ci
from nas.latency.profiles import PROFILES
from nas.latency.result import LatencyResult
from nas.sampling import random_config

TINY = random_config(3)  # a small network: fast to time
FAST = dict(max_seconds=0.3, min_runs=3, warmup=1)
# cache mechanics must not depend on how busy the test machine is: a guard that never calls a run
# disturbed (still guarded, so its figures are cacheable)
CALM = dict(FAST, interference=InterferencePolicy(threshold=float("inf"), foreign_cores=float("inf"),
                                                 spread_factor=float("inf")))


def test_measure_cpu_reports_spread_and_context():
    r = measure(TINY, device="cpu", resolution=TINY.reduction * 2, threads=1, **FAST)
    assert r.ok and r.source == "measured" and r.device == "cpu"
    assert r.runs >= 3 and r.p10_ms <= r.median_ms <= r.p90_ms and r.iqr_ms >= 0
    ctx = r.context
    assert ctx["threads"] == 1 and ctx["precision"] == "fp32" and ctx["batch"] == 1
    assert ctx["torch"] == torch.__version__ and ctx["fingerprint"].startswith("cpu|")
    assert r.arch_id == TINY.arch_id and "measured median" in r.describe()
    assert r.ci_low_ms <= r.median_ms <= r.ci_high_ms and r.rel_ci >= 0 and "median 95% CI" in r.describe()
    assert LatencyResult.from_dict(r.to_dict()) == r
    before = torch.get_num_threads()
    measure(TINY, device="cpu", resolution=TINY.reduction * 2, threads=1, **FAST)
    assert torch.get_num_threads() == before


def test_median_confidence_interval_covers_the_true_median():
    rng = random.Random(0)
    for n in (5, 12, 40):
        trials = 2000
        covered = 0
        for _ in range(trials):
            runs = [rng.lognormvariate(0.0, 0.4) for _ in range(n)]  # skewed like timing noise; median 1.0
            lo, hi = _median_ci(runs)
            covered += lo <= 1.0 <= hi
        assert 0.92 <= covered / trials <= 0.995, (n, covered / trials)
    assert _median_ci([3.0]) == (3.0, 3.0)
    lo, hi = _median_ci([float(i) for i in range(100)])
    assert (lo, hi) == (40.0, 59.0)


def test_time_cap_is_reported():
    r = measure(TINY, device="cpu", resolution=TINY.reduction * 2, target_rel_iqr=0.0, max_seconds=0.05, min_runs=3,
                warmup=0)
    assert r.ok and r.capped and "time cap hit" in r.describe()


def test_measure_a_plain_module_and_bf16():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    r = measure(model, device="cpu", resolution=16, **FAST)
    assert r.ok and r.arch_id is None
    r = measure(TINY, device="cpu", resolution=TINY.reduction * 2, precision="bf16", **FAST)
    assert r.ok and r.context["precision"] == "bf16"


class _Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("shape mismatch in candidate\nsecond line")


def test_failing_candidate_becomes_an_error_result():
    r = measure(_Broken(), device="cpu", resolution=8, **FAST)
    assert not r.ok and r.median_ms is None
    assert r.error == "RuntimeError: shape mismatch in candidate"
    assert "failed" in r.describe()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(device="tpu"), "device: 'tpu' is not allowed; expected auto, cpu, cuda or cuda:N"),
        (dict(device="cpu", precision="fp8"), "precision: 'fp8' is not allowed; expected one of fp32, fp16, bf16"),
        (dict(device="cpu", precision="fp16"), "precision: 'fp16' is not allowed on cpu"),
        (dict(device="cpu", batch=0), "batch: 0 is not allowed"),
        (dict(device="cpu", resolution=16), "resolution: 16 is not allowed; expected each side at least the network's stride"),
        (dict(device="cpu", resolution="64x"), "resolution: '64x' is not allowed; expected a positive integer or HxW"),
        (dict(device="cpu", runtime="tvm"), "runtime: 'tvm' is not allowed; expected one of eager, compile, onnxruntime"),
    ],
)
def test_bad_arguments_raise_one_line(kwargs, message):
    with pytest.raises(ValueError) as err:
        measure(nas.get_config("hardnet39ds"), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_usage_error():
    with pytest.raises(ValueError, match="no CUDA GPU is available here"):
        measure(TINY, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on CI)")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_measure_cuda(precision):
    r = measure(nas.get_config("hardnet68"), device="cuda", precision=precision, max_seconds=1.0)
    assert r.ok and r.context["channels_last"] and r.device.startswith("cuda")


def _randomise_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            # non-trivial statistics, tame enough that 100 layers of them keep fp32 well conditioned
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize("cfg", [nas.get_config(n) for n in nas.list_models()] + [random_config(s) for s in range(10)],
                         ids=nas.list_models() + [f"random{s}" for s in range(10)])
def test_deploy_folding_keeps_outputs(cfg):
    # in float64 folding is exact up to rounding; in float32 a 100-layer random network amplifies
    # rounding differences, so the tight check runs in double and fp32 gets a looser one
    torch.manual_seed(0)  # the weights must not depend on what ran before in this process
    model = _randomise_bn(nas.build_model(cfg)).double()
    fused = fuse_model(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(2, cfg.in_channels, 2 * cfg.reduction, 2 * cfg.reduction, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), fused(x)
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9 * float(a.abs().max()))
        truth = model.forward_features(x)
        model32 = copy.deepcopy(model).float()
        plain32 = model32.forward_features(x.float()).double()
        fused32 = fuse_model(model32).forward_features(x.float()).double()
    # fp32 rounding in a deep random network can be amplified a lot (tresnet_xl's last stage loses
    # ~1 % against fp64), so an absolute fp32 tolerance is machine-dependent; what folding must
    # guarantee is that the fused fp32 model is no further from the fp64 truth than the unfused one
    err_plain = float((plain32 - truth).norm() / truth.norm())
    err_fused = float((fused32 - truth).norm() / truth.norm())
    assert err_fused <= 10 * err_plain + 1e-6, (err_fused, err_plain)


def test_measure_deploy_runs_the_folded_model():
    r = measure(TINY, device="cpu", resolution=TINY.reduction * 2, deploy=True, **FAST)
    assert r.ok and r.context["deploy"] is True


def test_cache_reuses_and_keys_on_context(tmp_path):
    cache = LatencyCache(tmp_path / "latency.db")
    res = TINY.reduction * 2
    first = measure(TINY, device="cpu", resolution=res, cache=cache, **CALM)
    again = measure(TINY, device="cpu", resolution=res, cache=cache, **CALM)
    assert not first.context["cached"] and again.context["cached"]
    assert again.median_ms == first.median_ms and len(cache) == 1
    measure(TINY, device="cpu", resolution=res, deploy=True, cache=cache, **CALM)
    measure(TINY, device="cpu", resolution=res, threads=torch.get_num_threads() + 1, cache=cache, **CALM)
    measure(TINY, device="cpu", resolution=res, batch=2, cache=cache, **CALM)
    assert len(cache) == 4
    # a failed measurement is never cached
    measure(nas.build_model(TINY), device="cpu", resolution=res, **CALM)
    cache.close()
    assert len(LatencyCache(tmp_path / "latency.db")) == 4  # persisted


def test_corrupt_cache_file_is_reported_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "latency.db"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="nas.latency"):
        cache = LatencyCache(path)
    assert cache.rebuilt and "corrupt" in caplog.text
    assert len(cache) == 0 and list(tmp_path.glob("latency.db.corrupt-*"))
    r = measure(TINY, device="cpu", resolution=TINY.reduction * 2, cache=cache, **CALM)
    assert r.ok and len(cache) == 1


def test_tampered_row_is_detected(tmp_path, caplog):
    cache = LatencyCache(tmp_path / "latency.db")
    res = TINY.reduction * 2
    measure(TINY, device="cpu", resolution=res, cache=cache, **CALM)
    cache.close()
    with sqlite3.connect(tmp_path / "latency.db") as conn:
        conn.execute("UPDATE measurements SET payload = replace(payload, 'measured', 'predicted')")
    cache = LatencyCache(tmp_path / "latency.db")
    with caplog.at_level(logging.WARNING, logger="nas.latency"):
        r = measure(TINY, device="cpu", resolution=res, cache=cache, **CALM)
    assert not r.context["cached"] and cache.rebuilt and "checksum mismatch" in caplog.text
    assert r.source == "measured"


def test_predict_is_labelled_and_behaves_like_a_roofline():
    cfg = nas.get_config("hardnet68")
    r = predict(cfg, "gtx1080ti", 1024)
    assert r.source == "predicted" and r.device == "gtx1080ti" and "not measured" in r.describe()
    assert r.context["profile_source"].startswith("published spec")
    p = resolve_profile("1080ti")
    assert predict_ms(cfg, p, 512) < predict_ms(cfg, p, 1024)
    assert predict_ms(cfg, p, 1024, deploy=True) < predict_ms(cfg, p, 1024)
    assert predict_ms(cfg, p, 1024, batch=4) > 3 * predict_ms(cfg, p, 1024)
    assert predict_ms(cfg, resolve_profile("h100"), 1024) < predict_ms(cfg, p, 1024)
    assert predict_ms(cfg, resolve_profile("jetson_nano"), 320) > predict_ms(cfg, p, 320)
    assert set(PROFILES) <= set(list_profiles()) and "cpu" in list_profiles()
    with pytest.raises(ValueError, match="device profile: 'tpu' is not known; known: cpu, gtx1080"):
        predict(cfg, "tpu")
    with pytest.raises(ValueError, match="resolution: 16 is not allowed"):
        predict(cfg, "v100", 16)
    assert predict_ms(cfg, p, "1024x2048") == pytest.approx(predict_ms(cfg, p, (2048, 1024)))
    assert predict_ms(cfg, p, 1024) < predict_ms(cfg, p, "1024x2048") < 2.2 * predict_ms(cfg, p, 1024)


def test_cpu_profile_is_profiled_once_and_cached(_isolated_runs, quiet_cpu):
    p = cpu_profile()
    assert p.peak_gflops["fp32"] > 0 and p.bandwidth_gbs > 0 and p.overhead_us > 0
    assert (_isolated_runs / "device_profiles.json").exists()
    assert cpu_profile() == p  # read back, not re-measured
    assert predict(nas.get_config("resnet50"), "cpu").context["profile_source"].startswith("profiled here")


def test_cpu_profile_taken_while_busy_is_used_but_never_saved(_isolated_runs, busy_cpu):
    from nas.latency.profiles import _UNSAVED, load_cpu_profile

    _UNSAVED.clear()
    first = load_cpu_profile()
    assert first.profile.provenance["disturbed"] and "not saved" in first.warning and "1.50 cores" in first.warning
    assert not (_isolated_runs / "device_profiles.json").exists()
    assert load_cpu_profile().profile is first.profile  # not profiled again in this process
    _UNSAVED.clear()


def test_calibration_recovers_a_known_device():
    import dataclasses

    truth = dataclasses.replace(PROFILES["v100"], conv3x3_eff=0.31, conv1x1_eff=0.25, dwconv_eff=0.02,
                            memory_eff=0.45, overhead_us=23.0)
    cfgs = [random_config(s, max_width=128, max_depth=12) for s in range(40)] + [nas.get_config("hardnet39ds")]
    measured = [predict_ms(c, truth) for c in cfgs]
    base_err = max(abs(predict_ms(c, PROFILES["v100"]) / m - 1) for c, m in zip(cfgs, measured))
    cal = calibrate(cfgs[:30], measured[:30], "v100")
    assert cal.accepted and cal.profile is cal.fitted and "accepted" in str(cal)
    fitted = cal.profile
    test_err = max(abs(predict_ms(c, fitted) / m - 1) for c, m in zip(cfgs[30:], measured[30:]))
    assert base_err > 0.2 and test_err < 0.02
    assert fitted.source.startswith("calibrated on 22 measured configs") and cal.held_out == 8
    with pytest.raises(ValueError, match="at least 4"):
        calibrate(cfgs[:2], measured[:2], "v100")


def test_calibrate_save_makes_cpu_predictions_use_it(_isolated_runs):
    cfgs = [random_config(s) for s in range(6)]
    cal = calibrate(cfgs, [predict_ms(c, cpu_profile()) * 2 for c in cfgs], "cpu", save=True)
    assert cal.accepted and cal.saved, cal.reason
    assert resolve_profile("cpu").source == cal.profile.source


def _cli(*args: str, fork: bool = False):
    if fork:  # a usage error: `forked` spares the start-up cost
        return forked.run([sys.executable, "-m", "nas.latency", *args])
    return subprocess.run([sys.executable, "-m", "nas.latency", *args], capture_output=True, text=True)


def test_cli_measure_predict_and_errors():
    out = _cli("hardnet39ds", "--device", "cpu", "--max-seconds", "0.3", "--json", "--no-cache")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["source"] == "measured" and data["median_ms"] > 0
    out = _cli("hardnet68", "--predict", "1080ti", "--resolution", "1024")
    assert out.returncode == 0 and "predicted for gtx1080ti" in out.stdout
    for args, msg in [(("hardnet68", "--precision", "fp16", "--device", "cpu"), "precision: 'fp16' is not allowed on cpu"),
                      (("hardnet68", "--device", "tpu"), "device: 'tpu' is not allowed"),
                      (("hardnet68", "--batch", "0"), "batch: 0 is not allowed"),
                      (("hardnet68", "--resolution", "16"), "resolution: 16 is not allowed"),
                      (("hardnet68", "--predict", "tpu"), "device profile: 'tpu' is not known")]:
        out = _cli(*args, fork=True)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and msg in out.stderr, (args, out.stderr)
