"""Predictor v2 (issue 14): kernel records, the per-class model, profiles as data, the family fit."""

from __future__ import annotations

import dataclasses
import importlib
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

import nas
from nas.latency import (KERNEL_CLASSES, PROFILES, DeviceProfile, check_profile, conv_kernel, fit_profile,
                         kernels_ms, kernels_of, linear_kernel, list_profiles, memory_kernel, predict, predict_many,
                         predict_ms, resolve_profile, warm_tables)
from nas.latency import families as F
from nas.latency.profiles import DATA, DEFAULT_EFFICIENCIES, FITTABLE
from nas.stats import kendall_tau

# --- kernel records --------------------------------------------------------------------------------


def test_many_predictions_at_once_equal_one_at_a_time_and_reuse_warm_tables(monkeypatch):
    import random

    predict_module = importlib.import_module("nas.latency.predict")
    from nas.sampling import random_config

    rng = random.Random(5)
    configs = [random_config(rng) for _ in range(12)] + [nas.get_config("resnet50")]
    for device, size, precision in (("v100", 64, "fp16"), ("a100", "48x80", "fp32"), ("cpu", 64, "fp32")):
        profile = resolve_profile(device)
        many = predict_many(configs, profile, size, 2, precision)
        one = [predict_ms(c, profile, size, 2, precision) for c in configs]
        assert many == pytest.approx(one, rel=1e-9)
    # an input too small for one network: NaN for it, the others predicted
    tiny = predict_many([nas.get_config("resnet50"), configs[0]], resolve_profile("t4"), 8)
    assert math.isnan(tiny[0]) and tiny[1] > 0
    assert predict_many([], resolve_profile("t4")).shape == (0,)
    with pytest.raises(ValueError, match="precision"):
        predict_many(configs, resolve_profile("t4"), precision="fp8")
    # once warmed, a prediction for another device builds nothing: no cost trace is run
    assert warm_tables(configs, "40x72") == len(configs)
    monkeypatch.setattr(predict_module, "kernel_rows", lambda *a, **k: pytest.fail("a kernel table was rebuilt"))
    assert np.isfinite(predict_many(configs, resolve_profile("l4"), "40x72")).all()
    with pytest.raises(pytest.fail.Exception, match="rebuilt"):  # the patch above is where tables are built
        predict_many(configs, resolve_profile("l4"), "40x80")


def _sample_configs() -> list:
    """The canonical configs, four random ones from each search space and four from the whole vocabulary."""
    import random

    import optuna

    from nas.sampling import random_config
    from nas.space import list_spaces, load_space

    configs = [nas.get_config(m) for m in nas.list_models()]
    for name in list_spaces():
        space, got = load_space(name), 0
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
        while got < 4:
            trial = study.ask()
            try:
                configs.append(space.sample(trial))
                got += 1
            except ValueError:  # a candidate the space rejects
                pass
            study.tell(trial, 0.0)
    rng = random.Random(11)
    return configs + [random_config(rng) for _ in range(4)]


def test_kernel_rows_traced_straight_from_the_tracer_predict_bit_identically():
    """`kernel_rows` (the fast path `predict` and `predict_many` take) make exactly the table of `kernels_of`'s
    Kernel objects, so every prediction is the number `kernels_ms` gives for those kernels, to the last bit."""
    from nas.latency.kernels import kernel_rows, rows_table, table

    configs = _sample_configs()
    assert len({c.arch_id for c in configs}) == len(configs) > 20
    profiles = [resolve_profile(d) for d in ("t4", "a100")]
    for size in (224, "1080x1920"):
        for precision, deploy, runtime in (("fp32", False, "pytorch"), ("fp16", True, "tensorrt"), ("bf16", True, "pytorch")):
            shape = (size, 1, precision, deploy, runtime)
            fast = rows_table([kernel_rows(c, *shape) for c in configs], precision, runtime)
            slow = table([kernels_of(c, *shape) for c in configs])
            for f in dataclasses.fields(fast):
                a, b = getattr(fast, f.name), getattr(slow, f.name)
                assert a.dtype == b.dtype and np.array_equal(a, b), (shape, f.name)
            for profile in profiles:
                reference = [kernels_ms(kernels_of(c, *shape), profile) for c in configs]
                assert [predict_ms(c, profile, *shape) for c in configs] == reference
                assert predict_many(configs, profile, *shape) == pytest.approx(reference, rel=1e-12, abs=0)


def test_kernels_come_from_the_cost_tracer_and_runtimes_drop_what_they_fuse():
    cfg = nas.get_config("hardnet68")
    report = nas.analyze(cfg, 224)
    eager = kernels_of(cfg)
    assert len(eager) == len(report.layers) and {k.kernel_class for k in eager} <= set(KERNEL_CLASSES)
    by_kind = {kind: sum(r.kind == kind for r in report.layers) for kind in ("norm", "pointwise", "concat")}
    assert all(by_kind.values())
    assert len(kernels_of(cfg, deploy=True)) == len(eager) - by_kind["norm"]
    assert len(kernels_of(cfg, runtime="tensorrt")) == len(eager) - sum(by_kind.values())
    convs = [k for k in eager if k.kernel_class.startswith("conv")]
    assert {k.kernel_class for k in convs} == {"conv3x3", "conv1x1", "conv_strided"}
    assert all(k.kernel == 3 for k in convs if k.kernel_class == "conv3x3")
    ds = {k.kernel_class for k in kernels_of(nas.get_config("hardnet39ds"))}
    assert "dwconv" in ds and "linear" in ds and "memory" in ds


def test_a_standalone_conv_is_the_record_the_network_has():
    cfg = nas.get_config("resnet50")
    report = {r.name: r for r in nas.analyze(cfg, 224, 2).layers}
    for k in kernels_of(cfg, 224, 2):
        if not k.kernel_class.startswith(("conv", "dw")):
            continue
        r = report[k.name]
        n, cin, h, w = r.in_shape
        alone = conv_kernel(cin, r.out_shape[1], r.kernel, r.stride, r.groups, h, w, n)
        assert dataclasses.replace(alone, name=k.name) == k
    fc = next(k for k in kernels_of(cfg, 224, 2) if k.kernel_class == "linear")
    assert dataclasses.replace(linear_kernel(2048, 1000, 2), name=fc.name) == fc
    assert memory_kernel(300).bytes == 1200 and memory_kernel(300, "fp16").bytes == 600
    with pytest.raises(ValueError, match="groups: 3 is not allowed"):
        conv_kernel(64, 64, 3, 1, 3, 8, 8)
    with pytest.raises(ValueError, match="runtime: 'onnx' is not allowed; expected one of pytorch, tensorrt"):
        memory_kernel(10, runtime="onnx")


def test_kernels_ms_is_the_predictor():
    cfg = nas.get_config("tresnet_m")
    v100 = resolve_profile("v100")
    for prec, runtime in (("fp32", "pytorch"), ("fp16", "tensorrt")):
        ks = kernels_of(cfg, 224, 4, prec, runtime=runtime)
        assert kernels_ms(ks, v100, prec) == pytest.approx(predict_ms(cfg, v100, 224, 4, prec, runtime=runtime))
    with pytest.raises(ValueError, match="precision: 'fp16' does not match the kernels' fp32"):
        kernels_ms(kernels_of(cfg), v100, "fp16")


# --- the model ---------------------------------------------------------------------------------------


def test_small_layers_at_batch_1_do_not_fill_a_big_gpu():
    h100 = resolve_profile("h100")
    conv = [conv_kernel(256, 256, 3, 1, 1, 7, 7, b, "fp16") for b in (1, 64)]
    per_image = [kernels_ms([k], h100) / b for k, b in zip(conv, (1, 64))]
    assert per_image[0] > 8 * per_image[1]  # waves: 49 output pixels fill one tile, not 132 SMs
    cfg = nas.get_config("hardnet68")
    times = [predict_ms(cfg, h100, 224, b, "fp16") for b in (1, 2, 4, 8, 16, 32, 64)]
    assert all(b >= a for a, b in zip(times, times[1:]))  # a bigger batch never takes less time
    assert times[0] / 1 > 4 * times[-1] / 64
    big = conv_kernel(256, 256, 3, 1, 1, 256, 256, 8, "fp16")  # the same layer filling the GPU: near the roofline
    flops_bound = big.flops / (h100.peak("fp16") * 1e9 * h100.conv3x3_eff * h100.tensor_eff) * 1e3
    assert kernels_ms([big], h100) == pytest.approx(flops_bound + h100.overhead_us * 1e-3, rel=0.1)


def test_tensor_cores_pad_channels_and_pascal_has_none():
    v100, gtx = resolve_profile("v100"), resolve_profile("gtx1080")
    assert v100.tensor_cores and not gtx.tensor_cores
    t = [kernels_ms([conv_kernel(c, 64, 3, 1, 1, 64, 64, 8, "fp16")], v100) for c in (60, 64)]
    assert t[0] == pytest.approx(t[1], rel=1e-9)  # 60 input channels compute as 64 on tensor cores
    t32 = [kernels_ms([conv_kernel(c, 64, 3, 1, 1, 64, 64, 8, "fp32")], gtx) for c in (60, 64)]
    assert t32[0] == pytest.approx(t32[1] * 60 / 64, rel=0.02)  # CUDA cores compute what is there
    # fp16 on Pascal GeForce computes at the fp32 rate (storage halved); V100's tensor cores are much faster
    big = conv_kernel(512, 512, 3, 1, 1, 64, 64, 8)
    assert kernels_ms([conv_kernel(512, 512, 3, 1, 1, 64, 64, 8, "fp16")], v100) < 0.5 * kernels_ms([big], v100)


def test_tensorrt_runs_fewer_kernels_and_is_faster():
    cfg = nas.get_config("hardnet68")
    eager = predict(cfg, "v100", 224, 1)
    engine = predict(cfg, "v100", 224, 1, runtime="tensorrt")
    assert engine.median_ms < eager.median_ms and engine.context["runtime"] == "tensorrt"
    assert "tensorrt engine" in engine.describe() and "not measured" in engine.describe()
    with pytest.raises(ValueError, match="runtime: 'tvm' is not allowed"):
        predict(cfg, "v100", runtime="tvm")


# --- profiles as data ----------------------------------------------------------------------------------

ISSUE_GPUS = ("t4", "l4", "a10", "a10g", "l40s", "rtx3090", "rtx4090", "a100_80gb", "h100_pcie", "h200",
              "jetson_agx_orin", "jetson_orin_nano", "gtx1080", "gtx1080ti", "titanv", "v100", "a100", "h100",
              "jetson_nano", "b200")


@pytest.mark.parametrize("name", ISSUE_GPUS)
def test_every_gpu_has_a_plausible_profile_with_provenance(name):
    p = resolve_profile(name)
    assert not check_profile(p), check_profile(p)
    assert p.sm_count > 0 and p.family and p.provenance["spec"] and p.source.startswith("published spec (")
    assert p.provenance["efficiencies_from"] in ("pascal", "volta", "maxwell")  # fitted, or borrowed from one
    if p.provenance["efficiencies_from"] != p.family:
        assert p.provenance["borrowed"].startswith(f"{p.family} has no fitting data; borrows")
        assert "borrows" in p.source
    assert p.peak("fp32") > 0 and p.bandwidth_gbs > 0
    assert predict(nas.get_config("hardnet68"), name).context["profile_provenance"] == p.provenance


def test_the_data_files_are_consistent():
    devices = yaml.safe_load((DATA / "devices.yaml").read_text())
    for name, spec in devices["devices"].items():
        assert spec["family"] in devices["families"] and spec["source"], name
        peaks = spec["peak_tflops"]
        assert peaks.get("fp16", peaks["fp32"]) >= peaks["fp32"] and peaks.get("tf32", peaks["fp32"]) >= peaks["fp32"]
    assert set(PROFILES) == set(devices["devices"])
    assert list_profiles()[:2] == ["cpu", "gtx1080"]
    assert resolve_profile("A10G") is PROFILES["a10"] and resolve_profile("1080ti") is PROFILES["gtx1080ti"]


def test_the_shipped_family_efficiencies_equal_a_fresh_fit():
    shipped = yaml.safe_load((DATA / "families.yaml").read_text())["families"]
    fresh = F.fit_families(F.published_figures())
    assert set(shipped) == set(fresh)
    for family, entry in fresh.items():
        for k in FITTABLE:
            assert shipped[family][k] == pytest.approx(entry[k], rel=2e-3), (family, k)


def test_published_figures_are_the_reference_tables():
    figs = F.published_figures()
    canonical = F.published_figures(canonical_only=True)
    assert len(canonical) == 25 and len(figs) == 29
    got = {(f.device, f.model, f.batch): f for f in figs}
    assert got["gtx1080", "hardnet68", 1].ms == 32.6 and got["gtx1080", "resnet50", 1].ms == 46.5
    assert got["gtx1080ti", "hardnet85", 1].ms == 38.0 and got["jetson_nano", "hardnet68ds", 1].ms == 52.6
    assert got["v100", "hardnet85", 8].ms == 20.57 and got["v100", "hardnet39ds", 4].runtime == "tensorrt"
    assert got["v100", "tresnet_xl", 216].ms == pytest.approx(216 / 1060 * 1e3)
    assert all(f.assumptions for f in figs)
    # the ResNets added by override are torchvision's (parameter counts)
    for model, params in (("resnet18", 11_689_512), ("resnet101", 44_549_160), ("resnet152", 60_192_808)):
        assert nas.analyze(F.figure_config(model)).params == params


def test_held_out_devices_meet_the_issue_targets():
    """The issue's targets on devices left out of the fit (a regression test of the model)."""
    held = F.leave_one_device_out()
    pub = [f.ms for f, _, _ in held]
    pred = [p for _, p, _ in held]
    ratios = np.array(pred) / np.array(pub)
    assert np.mean(np.abs(ratios - 1) <= 0.25) >= 0.8 and kendall_tau(pub, pred) >= 0.9
    for device, published in (("gtx1080", 32.6 / 46.5), ("gtx1080ti", 22.5 / 31.0)):
        pick = {f.model: p for f, p, _ in held if f.device == device}
        assert abs(pick["hardnet68"] / pick["resnet50"] - published) <= 0.08
        shipped = predict_ms(nas.get_config("hardnet68"), PROFILES[device], 1024) / predict_ms(
            nas.get_config("resnet50"), PROFILES[device], 1024)
        assert abs(shipped - published) <= 0.08


# --- fit_profile ---------------------------------------------------------------------------------------

MICRO = [conv_kernel(c, c, k, s, 1, h, h, b) for c, k, s, h, b in
         [(64, 3, 1, 56, 1), (256, 3, 1, 14, 8), (128, 1, 1, 28, 4), (512, 1, 1, 7, 1), (64, 3, 2, 56, 2),
          (256, 1, 2, 28, 1), (32, 3, 1, 112, 1)]]
MICRO += [conv_kernel(c, c, 3, 1, c, h, h, 1) for c, h in ((64, 112), (512, 14))]
MICRO += [linear_kernel(1024, 1000, b) for b in (1, 32)]
MICRO += [memory_kernel(n) for n in (3 * 2**20, 3 * 2**14, 3)]


def test_fit_profile_recovers_a_device_from_single_op_samples():
    base = PROFILES["gtx1080ti"]
    truth = dataclasses.replace(base, conv3x3_eff=1.7, conv1x1_eff=0.7, conv_strided_eff=0.4, dwconv_eff=0.05,
                                linear_eff=0.2, memory_eff=0.8, overhead_us=7.0)
    samples = [([k], kernels_ms([k], truth)) for k in MICRO]
    fitted = fit_profile(dataclasses.replace(base, **DEFAULT_EFFICIENCIES), samples, "fp32")
    assert set(fitted.calibration["fitted"]) == set(FITTABLE) - {"tensor_eff", "engine_overhead_us"}
    for k in ("conv3x3_eff", "conv1x1_eff", "conv_strided_eff", "dwconv_eff", "memory_eff", "overhead_us"):
        assert getattr(fitted, k) == pytest.approx(getattr(truth, k), rel=0.05), k
    assert fitted.tensor_eff == DEFAULT_EFFICIENCIES["tensor_eff"]  # nothing ran on tensor cores: left alone
    assert fitted.calibration["median_abs_rel_error"] < 0.01 and not check_profile(fitted)


def test_fit_profile_stays_bounded_and_says_what_is_wrong():
    base = PROFILES["v100"]
    wild = [([k], 1e4 * kernels_ms([k], base)) for k in MICRO]
    assert not check_profile(fit_profile(base, wild))
    with pytest.raises(ValueError, match="measured -1 ms is not allowed"):
        fit_profile(base, [(MICRO[:1], -1)])
    with pytest.raises(ValueError, match="parameter 'peak' is not allowed"):
        fit_profile(base, [(MICRO[:1], 1.0)], fitted=["peak"])
    with pytest.raises(ValueError, match="2 devices for 1 samples"):
        fit_profile(base, [(MICRO[:1], 1.0)], devices=[base, base])


def test_a_profile_saved_before_v2_reads_with_its_one_dense_efficiency():
    old = {"name": "cpu", "description": "x", "peak_gflops": {"fp32": 100.0}, "bandwidth_gbs": 10.0,
           "overhead_us": 5.0, "conv_eff": 0.4, "dwconv_eff": 0.1, "memory_eff": 0.9, "channel_block": 8}
    p = DeviceProfile.from_dict(old)
    assert p.conv3x3_eff == p.conv1x1_eff == p.conv_strided_eff == p.linear_eff == 0.4 and not check_profile(p)


# --- user profiles in runs/profiles ----------------------------------------------------------------

MY_GPU = {"description": "my workstation GPU", "family": "ampere", "sm_count": 84,
          "peak_tflops": {"fp32": 40.0, "tf32": 80.0, "fp16": 160.0, "bf16": 160.0}, "bandwidth_gbs": 760,
          "source": "vendor datasheet, boost clock"}


def _write(folder, name, data):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_a_user_profile_file_is_listed_and_accepted_everywhere(_isolated_runs):
    _write(_isolated_runs / "profiles", "my_gpu", {**MY_GPU, "overhead_us": 6.0})
    assert "my_gpu" in list_profiles()
    p = resolve_profile("my_gpu")
    assert p.family == "ampere" and p.tensor_cores and p.overhead_us == 6.0 and p.sm_count == 84
    assert p.source.startswith("user profile my_gpu.yaml (vendor datasheet") and "overhead_us given" in p.source
    assert p.conv3x3_eff == resolve_profile("a100").conv3x3_eff  # the family's efficiencies
    from nas.search.settings import SearchSettings

    assert SearchSettings(latency="predicted:my_gpu").latency_device == "my_gpu"
    out = subprocess.run([sys.executable, "-m", "nas.latency", "hardnet68", "--predict", "my_gpu"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "predicted for my_gpu" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "nas.latency", "--list"], capture_output=True, text=True)
    assert "my_gpu" in out.stdout and "h200" in out.stdout


BAD = [
    ({**MY_GPU, "peak_tflops": {"fp32": -3}}, "peak_tflops.fp32 -3 is not allowed; expected a number in"),
    ({**MY_GPU, "clock": 2}, "key 'clock' is not allowed; expected one of"),
    ({k: v for k, v in MY_GPU.items() if k != "source"}, "source is missing"),
    ({**MY_GPU, "family": "kepler"}, "family 'kepler' is not allowed; expected one of maxwell, pascal"),
    ({**MY_GPU, "family": ["ampere"]}, "family ['ampere'] is not allowed"),
    ({**MY_GPU, "peak_tflops": {"fp32": 9, "fp8": 1000}}, "peak_tflops key 'fp8' is not allowed; expected one of fp32, tf32"),
    ("", "the file 'NoneType' is not allowed"),
    ({**MY_GPU, "conv3x3_eff": 9.0}, "conv3x3_eff 9.0 is not allowed; expected a number in [0.01, 3]"),
    ({**MY_GPU, "sm_count": 1.5}, "sm_count 1.5 is not allowed"),
    ({**MY_GPU, "name": "other"}, "name 'other' is not allowed; expected the file's stem 'my_gpu'"),
    ("!!python/object/apply:os.system ['echo hacked']", "not valid YAML"),
    ("peak_tflops: [1, 2", "not valid YAML"),
    ("- a list", "the file 'list' is not allowed"),
]


@pytest.mark.parametrize("data,message", BAD)
def test_a_bad_user_profile_is_one_line_naming_the_problem(_isolated_runs, data, message):
    path = _write(_isolated_runs / "profiles", "my_gpu", data)
    with pytest.raises(ValueError) as err:
        resolve_profile("my_gpu")
    text = str(err.value)
    assert message in text and "\n" not in text and str(path) in text
    assert "my_gpu" in list_profiles()  # listing never fails on a bad file


def test_a_user_profile_cannot_shadow_a_packaged_one_and_the_cli_exits_2(_isolated_runs):
    _write(_isolated_runs / "profiles", "v100x", MY_GPU)
    _write(_isolated_runs / "profiles", "orin", MY_GPU)  # an alias of jetson_agx_orin
    assert resolve_profile("orin") is PROFILES["jetson_agx_orin"]
    with pytest.raises(ValueError, match="name 'orin' is not allowed"):
        from nas.latency.profiles import _load_user

        _load_user("orin", _isolated_runs / "profiles" / "orin.yaml")
    _write(_isolated_runs / "profiles", "broken", {**MY_GPU, "bandwidth_gbs": 0})
    out = subprocess.run([sys.executable, "-m", "nas.latency", "hardnet68", "--predict", "broken"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "bandwidth_gbs 0 is not allowed" in out.stderr
    out = subprocess.run([sys.executable, "-m", "nas.latency", "hardnet68", "--runtime", "tensorrt"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "'tensorrt' is not allowed for a measurement; expected one of eager" in out.stderr


def test_listing_reads_nothing_into_existence(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDNAS_RUNS", str(tmp_path / "runs"))
    assert "h200" in list_profiles() and not (tmp_path / "runs").exists()


def test_the_cpu_path_is_profile_device(_isolated_runs):
    p = resolve_profile("cpu")
    assert p.sm_count == 0 and p.channel_block in (8, 16) and not check_profile(p)
    assert p.source.startswith("profiled here") and p.provenance["samples"]
    assert math.isfinite(predict_ms(nas.get_config("hardnet39ds"), p, 64))
