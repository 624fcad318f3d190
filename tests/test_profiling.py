"""profile_device: the probes, the fit and the save rules, with a synthetic clock and for real on this CPU."""

from __future__ import annotations

import json

import pytest
from helpers import synthetic_clock, synthetic_cpu

from nas.latency import profiles
from nas.latency.kernels import kernels_ms
from nas.latency.profiling import match_published, profile_device


def test_recovers_a_known_device_from_its_timings(quiet_cpu):
    truth = synthetic_cpu()
    p = profile_device("cpu", budget_s=30, save=False, timer=synthetic_clock(truth))
    # peaks are the best the ops showed, so efficiencies are relative to them: compare predicted times
    rows = p.provenance["samples"]
    assert len(rows) >= 20 and sum(r["network"] for r in rows) >= 1
    errors = [abs(r["fitted_ms"] / r["measured_ms"] - 1) for r in rows]
    assert max(errors) < 0.05, rows
    assert p.provenance["disturbed"] is False and p.fingerprint.startswith("cpu|")
    assert "profiled here" in p.source and "networks' median |error|" in p.source


def test_a_wrong_clock_is_not_hidden_by_the_fit(quiet_cpu):
    """Timings no profile can explain (every op 1 ms) leave a large fit error in the source line."""
    p = profile_device("cpu", budget_s=30, save=False, timer=lambda probe, s: 1.0)
    assert p.calibration["median_abs_rel_error"] > 0.2


def test_saves_under_the_fingerprint_and_is_found_again(_isolated_runs, quiet_cpu):
    p = profile_device("cpu", budget_s=30, save=True, timer=synthetic_clock(synthetic_cpu()))
    saved = json.loads((_isolated_runs / "device_profiles.json").read_text())
    assert p.fingerprint in saved
    assert saved[p.fingerprint]["source"] == p.source


def test_bad_budget_is_one_line():
    for bad in (0, -1, 1e9, float("nan"), True, "60"):
        with pytest.raises(ValueError, match=r"budget_s: .* is not allowed; expected seconds in \[1, 600\]"):
            profile_device("cpu", budget_s=bad, save=False)


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16"):
        profile_device("cpu", budget_s=5, save=False, precisions=["fp16"])


def test_cuda_names_match_published_profiles():
    assert match_published("NVIDIA H200").name == "h200"
    assert match_published("NVIDIA GeForce GTX 1080 Ti").name == "gtx1080ti"
    assert match_published("NVIDIA GeForce GTX 1080").name == "gtx1080"
    assert match_published("Tesla T4").name == "t4"
    assert match_published("Some Future Accelerator") is None


def test_real_cpu_profile_within_budget():
    """For real on this CPU, a short budget: every class gets samples, nothing absurd, time kept."""
    import time

    t0 = time.perf_counter()
    p = profile_device("cpu", budget_s=6, save=False, networks=True, resolution=64)
    assert time.perf_counter() - t0 < 6 * 1.5 + 5
    assert not profiles.check_profile(p)
    names = " ".join(r["name"] for r in p.provenance["samples"])
    for what in ("conv3x3", "conv1x1", "linear", "add", "tiny relu"):
        assert what in names
    assert all(r["measured_ms"] > 0 for r in p.provenance["samples"])


def test_cli_list_profile_and_usage_errors(capsys):
    from nas.latency.__main__ import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("cpu", "gtx1080ti", "h200", "t4", "jetson_nano"):
        assert f"\n{name} " in f"\n{out}"
    for argv, message in ((["--profile", "--budget-s", "0"], "budget_s: 0.0 is not allowed"),
                          (["--profile", "--device", "tpu"], "device: 'tpu' is not allowed"),
                          ([], "NAME|CONFIG is required")):
        with pytest.raises(SystemExit) as exc:
            from nas.cli import run
            run(main, "nas.latency", argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_on_a_busy_cpu_the_networks_are_timed_but_left_out_of_the_fit(busy_cpu):
    truth = synthetic_cpu()
    slow_networks = lambda probe, s: kernels_ms(probe.kernels, truth) * (10 if probe.network else 1)  # noqa: E731
    p = profile_device("cpu", budget_s=30, save=True, timer=slow_networks)
    assert p.provenance["disturbed"] and "left out (the CPU was busy)" in p.source
    assert not any(r["network"] for r in p.provenance["samples"])
    from nas.registry import get_config
    from nas.latency import predict_ms

    assert predict_ms(get_config("hardnet39ds"), p, 128) == pytest.approx(predict_ms(get_config("hardnet39ds"), truth, 128), rel=0.15)
