"""Latency under a runtime (eager, torch.compile, ONNX Runtime) and at any input size HxW."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import nas
from nas.fuse import fuse_model
from nas.latency import InterferencePolicy, LatencyCache, measure
from nas.latency.cache import cache_key
from nas.latency.runtimes import MEASURE_RUNTIMES, prepare, runtime_version
from nas.sampling import random_config

ort = pytest.importorskip("onnxruntime")

TINY = random_config(3)
FAST = dict(max_seconds=0.3, min_runs=3, warmup=1)
CALM = dict(FAST, interference=InterferencePolicy(threshold=float("inf"), foreign_cores=float("inf"),
                                                 spread_factor=float("inf")))


def _odd(cfg):
    r, m = cfg.reduction, (4 if cfg.stem.type == "space_to_depth" else 1)
    return -(-(2 * r + 5) // m) * m, -(-(3 * r + 3) // m) * m


def test_runtimes_are_named_once():
    assert tuple(MEASURE_RUNTIMES) == ("eager", "compile", "onnxruntime")
    assert runtime_version("eager") == runtime_version("compile") == torch.__version__
    assert runtime_version("onnxruntime") == ort.__version__


@pytest.mark.parametrize("deploy", [False, True])
def test_onnxruntime_runs_the_same_function_at_a_non_square_size(deploy):
    h, w = _odd(TINY)
    model = nas.build_model(TINY).eval()
    model = fuse_model(model) if deploy else model
    x = torch.randn(2, TINY.in_channels, h, w)
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(prepare("onnxruntime", model, x, 1, "fp32")(x)[0])
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4 * max(1.0, float(want.abs().max())), rtol=1e-4)


def test_measure_under_onnxruntime_records_runtime_and_version():
    h, w = _odd(TINY)
    r = measure(TINY, device="cpu", resolution=(h, w), runtime="onnxruntime", threads=1, deploy=True, **FAST)
    assert r.ok, r.error
    ctx = r.context
    assert ctx["runtime"] == "onnxruntime" and ctx["runtime_version"] == ort.__version__
    assert ctx["resolution"] == f"{h}x{w}" and ctx["channels_last"] is False
    assert f"1x{h}x{w}" in r.describe() and f"onnxruntime {ort.__version__}" in r.describe()


def test_eager_keys_are_unchanged_and_runtimes_key_apart(tmp_path):
    base = {"fingerprint": "cpu|x", "precision": "fp32", "resolution": 64, "batch": 1, "channels_last": False,
            "deploy": False, "torch": "2.x"}
    eager = {**base, "runtime": "eager", "runtime_version": "2.x"}
    assert cache_key("a", eager) == cache_key("a", base)  # caches written before runtimes stay valid
    keys = {cache_key("a", {**base, "runtime": rt, "runtime_version": v})
            for rt, v in (("eager", "2.x"), ("onnxruntime", "1.18"), ("onnxruntime", "1.19"), ("compile", "2.x"))}
    assert len(keys) == 4
    cache = LatencyCache(tmp_path / "latency.db")
    res = TINY.reduction * 2
    a = measure(TINY, device="cpu", resolution=res, cache=cache, **CALM)
    b = measure(TINY, device="cpu", resolution=res, cache=cache, runtime="onnxruntime", **CALM)
    c = measure(TINY, device="cpu", resolution=res, cache=cache, runtime="onnxruntime", **CALM)
    assert a.ok and b.ok and not b.context["cached"] and c.context["cached"] and len(cache) == 2
    d = measure(TINY, device="cpu", resolution=f"{res}x{res + 8}", cache=cache, **CALM)
    assert not d.context["cached"] and len(cache) == 3


def test_a_runtime_that_cannot_run_is_a_failed_measurement(monkeypatch):
    r = measure(TINY, device="cpu", resolution=TINY.reduction * 2, runtime="onnxruntime", precision="bf16", **FAST)
    assert not r.ok and r.error == "RuntimeError: onnxruntime runs the fp32 graph here, not bf16"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = measure(TINY, device="cpu", resolution=TINY.reduction * 2, runtime="onnxruntime", **FAST)
    assert not r.ok and "onnxruntime is not installed; pip install 'hardnas[onnx]'" in r.error
    assert r.context["runtime_version"] is None and "\n" not in r.describe()


@pytest.mark.slow
def test_compile_runs_the_same_function_and_is_measured():
    """torch.compile (inductor) needs a C++ compiler and minutes on a busy 2-core machine: slow."""
    h, w = _odd(TINY)
    model = nas.build_model(TINY).eval()
    x = torch.randn(1, TINY.in_channels, h, w)
    with torch.inference_mode():
        want = model(x)
        got = prepare("compile", model, x, 2, "fp32")(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    r = measure(TINY, device="cpu", resolution=(h, w), runtime="compile", **FAST)
    assert r.ok and r.context["runtime"] == "compile", r.error


def test_cli_measures_under_a_runtime_at_hxw(tmp_path):
    env = {**__import__("os").environ, "HARDNAS_RUNS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "nas.latency", "hardnet39ds", "--runtime", "onnxruntime",
                          "--resolution", "64x96", "--device", "cpu", "--max-seconds", "0.2", "--no-guard", "--json"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    import json

    ctx = json.loads(out.stdout)["context"]
    assert ctx["runtime"] == "onnxruntime" and ctx["resolution"] == "64x96"
    out = subprocess.run([sys.executable, "-m", "nas.latency", "hardnet39ds", "--resolution", "1080 by 1920"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "'1080 by 1920' is not allowed; expected a positive integer or HxW" in out.stderr


def test_search_settings_take_hxw_and_a_runtime():
    from nas.search.settings import SearchSettings

    s = SearchSettings(resolution="1080x1920", runtime="onnxruntime")
    assert s.resolution == "1080x1920" and s.identity()["runtime"] == "onnxruntime"
    assert SearchSettings(resolution="224x224").resolution == 224
    assert "runtime" not in SearchSettings().identity()  # studies from before runtimes still resume
    with pytest.raises(ValueError, match=r"^runtime: 'tvm' is not allowed; expected one of eager, compile"):
        SearchSettings(runtime="tvm")
    with pytest.raises(ValueError, match=r"^runtime: 'compile' is not allowed with --latency predicted:v100"):
        SearchSettings(runtime="compile", latency="predicted:v100")
    with pytest.raises(ValueError, match=r"^resolution: '1080x' is not allowed"):
        SearchSettings(resolution="1080x")


def test_export_records_the_runtime_of_its_measured_latency(tmp_path, monkeypatch):
    import ast

    from nas.export import export

    monkeypatch.setenv("HARDNAS_RUNS", str(tmp_path / "runs"))
    h, w = _odd(TINY)
    out = export(TINY, "py", tmp_path / "m.py", resolution=(h, w), deploy=True, latency="measured",
                 runtime="onnxruntime")
    doc = " ".join(ast.get_docstring(ast.parse(out.read_text())).split())
    latency = doc.split("Latency:")[1]
    assert f"{h}x{w}" in latency and f"onnxruntime {ort.__version__}" in latency and "BN folded" in latency
    with pytest.raises(ValueError, match=r"^runtime: 'tvm' is not allowed; expected one of eager"):
        export(TINY, "py", tmp_path / "n.py", runtime="tvm")


def test_square_sizes_predict_bit_identically_in_every_form():
    from nas.latency import predict, predict_ms, resolve_profile
    from nas.latency.kernels import kernels_of

    cfg, p = nas.get_config("hardnet68"), resolve_profile("v100")
    ms = predict_ms(cfg, p, 224)
    assert predict_ms(cfg, p, "224") == ms and predict_ms(cfg, p, "224x224") == ms and predict_ms(cfg, p, (224, 224)) == ms
    assert kernels_of(cfg, "224x224") == kernels_of(cfg, 224)
    assert predict(cfg, "v100", "224x224").context["resolution"] == 224
    assert predict(cfg, "v100", "1080x1920").context["resolution"] == "1080x1920"


def test_a_search_trial_records_the_runtime_its_latency_ran_under(_isolated_runs):
    from nas.search.evaluate import evaluate
    from nas.search.settings import SearchSettings

    s = SearchSettings(latency="measured", runtime="onnxruntime", proxy="zero-cost", budget_ms=1e6, device="cpu",
                       resolution=f"{TINY.reduction * 2}x{TINY.reduction * 3}")
    m = evaluate(TINY, s)
    assert m["latency_source"] in ("measured", "predicted"), m.get("reason")  # predicted: a disturbed figure
    assert (m["latency_runtime"], m["latency_runtime_version"]) == ("onnxruntime", ort.__version__)


def test_onnxruntime_worker_threads_sleep_when_idle():
    """Spinning ORT threads took the cores from the next forward timed beside the session (the canary)."""
    pytest.importorskip("onnxruntime")
    from nas.latency.runtimes import session_options

    opts = session_options(2)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
