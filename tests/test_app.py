"""``streamlit run app.py``: the page driven by streamlit's AppTest, and once in a real headless browser.

Fixture studies are written directly with Optuna (`test_explore.make_study`); the empty-state
test runs the one real (tiny) search, through the page's demo button. The page in a real browser is
`test_app_browser.py`.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from nas.config import ArchConfig
from nas.registry import get_config
from test_explore import FRONT, PLAN, make_measured_study, make_runtime_study, make_study, small_configs, _attrs

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """The app reads ``--storage`` from sys.argv; pytest's own arguments must not leak in."""
    monkeypatch.setattr(sys, "argv", ["app.py"])
    monkeypatch.delenv("NAS_STORAGE", raising=False)
    streamlit.cache_data.clear()


@pytest.fixture
def url(tmp_path, monkeypatch) -> str:
    u = f"sqlite:///{tmp_path / 'nas.db'}"
    make_study(u)
    monkeypatch.setenv("NAS_STORAGE", u)
    return u


def run_app(timeout: float = 60) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    return at


def app_on(write, tmp_path, monkeypatch, name: str) -> AppTest:
    """The app, rendered cleanly, on a storage ``tmp_path/name`` that ``write(url)`` filled."""
    u = f"sqlite:///{tmp_path / name}"
    write(u)
    monkeypatch.setenv("NAS_STORAGE", u)
    at = run_app()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def chart(at: AppTest, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def traces(at: AppTest) -> dict[str, dict]:
    return {t["name"]: t for t in chart(at)["data"]}


def references(at: AppTest) -> dict:
    """The trace of the canonical models' reference lines (its name says which profile predicted them)."""
    refs = [t for name, t in traces(at).items() if name.startswith("canonical")]
    assert len(refs) == 1, list(traces(at))
    return refs[0]


def reference_labels(at: AppTest) -> list[str]:
    """The visible labels of the reference lines (annotations named ``reference``), left to right."""
    return [a["text"] for a in chart(at)["layout"].get("annotations", []) if a.get("name") == "reference"]


def test_empty_state_shows_the_command_and_the_demo_fills_the_storage(_isolated_runs, tmp_path):
    at = run_app(timeout=180)
    assert_clean(at)
    db = _isolated_runs / "nas.db"
    assert "No storage file at" in at.info[0].value and str(db) in at.info[0].value
    assert at.code[0].value == "python -m nas.search --budget 30ms"
    assert not db.exists()  # looking does not create the database
    # the demo into another storage writes next to it, nothing into the runs folder of the app
    (tmp_path / "elsewhere").mkdir()
    other = tmp_path / "elsewhere" / "nas.db"
    at.text_input(key="storage").set_value(f"sqlite:///{other}").run()
    assert str(tmp_path / "elsewhere") in " ".join(md.value for md in at.markdown)
    before = sorted(p.name for p in _isolated_runs.iterdir())
    at.button(key="demo").click().run()
    assert_clean(at)
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{other}")
    done = [t for t in study.trials if t.user_attrs.get("status") != "rejected"]
    assert len(done) >= 8
    assert sorted(p.name for p in _isolated_runs.iterdir()) == before
    assert (tmp_path / "elsewhere" / "demo_space.yaml").exists() and (tmp_path / "elsewhere" / "demo").is_dir()
    m = metrics(at)
    assert int(m["trials"]) == len(study.trials) and int(m["completed"]) >= 1
    assert not at.warning, [w.value for w in at.warning]  # one proxy, whatever the rejected trials recorded
    assert chart(at)["layout"]["yaxis"]["title"]["text"] == "score (zero-cost:naswot)"
    names = traces(at)
    assert "Pareto front" in names and references(at)["name"] == "canonical, predicted for v100 (spec sheet, not calibrated)"


def test_a_missing_folder_or_a_relative_path_says_where_it_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_STORAGE", f"sqlite:///{tmp_path / 'nope' / 'nas.db'}")
    at = run_app()
    assert not at.exception and len(at.error) == 1 and [b.key for b in at.button if b.key == "demo"] == []
    msg = at.error[0].value
    assert f"the folder {tmp_path / 'nope'} does not exist" in msg and "\n" not in msg
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAS_STORAGE", "sqlite:///typo.db")
    at = run_app()
    assert_clean(at)
    assert f"No storage file at {tmp_path / 'typo.db'} (relative to {tmp_path}" in at.info[0].value
    assert not (tmp_path / "typo.db").exists()


def test_an_interrupted_demo_or_a_users_demo_study_still_offers_the_demo(tmp_path, monkeypatch):
    u = f"sqlite:///{tmp_path / 'nas.db'}"
    mine = optuna.create_study(study_name="demo", storage=u)  # the user's own study called demo, nothing finished
    mine.set_user_attr("settings", {"space": "mine.yaml"})
    mine.ask()
    monkeypatch.setenv("NAS_STORAGE", u)
    at = run_app()
    assert_clean(at)
    assert at.button(key="demo") and "as study `demo-2`" in " ".join(md.value for md in at.markdown)


def test_empty_state_names_a_custom_storage(tmp_path, monkeypatch):
    target = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setattr(sys, "argv", ["app.py", "--storage", target])
    at = run_app()
    assert at.text_input(key="storage").value == target
    assert at.code[0].value == f"python -m nas.search --budget 30ms --storage '{target}'"


def test_a_study_with_trials(url):
    at = run_app()
    assert_clean(at)
    m = metrics(at)
    assert (m["trials"], m["completed"], m["running"], m["pruned / rejected"], m["failed"]) == (
        str(len(PLAN)), "7", "0", "1", "1")
    assert m["feasible under budget"] == "7"
    assert at.slider[0].value == pytest.approx(0.5)  # the study's budget
    t = traces(at)
    assert {c[0] for c in t["Pareto front"]["customdata"]} == {f"fixture#{i}" for i in FRONT}
    assert t["baselines"]["text"] == ["hardnet39ds"]
    refs = [x.split(" ")[0] for x in reference_labels(at)]
    assert sorted(refs) == ["hardnet68", "resnet50", "tresnet_m"]  # hardnet68 is in the study but has no accuracy
    assert t["baselines without accuracy"]["text"] == ["hardnet68"]
    assert t["selected"]["customdata"][0][0] == "fixture#2"  # the fastest front point by default
    assert at.selectbox(key="selected").value == "fixture#2"


def test_cpu_latency_is_predicted_with_a_calibrated_profile_and_says_so(tmp_path, monkeypatch, steady_cpu):
    at = app_on(make_measured_study, tmp_path, monkeypatch, "cpu.db")
    assert at.radio(key="lat_mode").value == "measured"
    refs = references(at)
    assert refs["name"].startswith("canonical, predicted for cpu (calibrated here on ")
    measured = {c[0]: c[6] for name, t in traces(at).items() if not name.startswith(("canonical", "selected", "Pareto"))
                for c in t.get("customdata", [])}
    at.radio(key="lat_mode").set_value("predicted").run()
    at.selectbox(key="device").set_value("cpu").run()
    assert_clean(at)
    assert any("calibrated here on" in c.value and "held-out error" in c.value for c in at.sidebar.caption)
    predicted = {c[0]: c[6] for name, t in traces(at).items() if not name.startswith(("canonical", "selected", "Pareto"))
                 for c in t.get("customdata", [])}
    assert set(predicted) == set(measured) and len(measured) == 16
    ratios = sorted(predicted[k] / measured[k] for k in measured)
    assert 0.7 < ratios[len(ratios) // 2] < 1.4  # not the micro-benchmark's ~5x optimistic figures
    assert chart(at)["layout"]["xaxis"]["title"]["text"].startswith("latency (ms, predicted for cpu, calibrated here on ")


def test_a_non_square_study_under_onnxruntime_shows_its_input_size_and_runtime(tmp_path, monkeypatch):
    from nas.explore import analysis as A
    from nas.explore import profiles as P

    at = app_on(make_runtime_study, tmp_path, monkeypatch, "hd.db")
    assert at.radio(key="lat_mode").value == "measured"
    captions = " ".join(c.value for c in at.caption)
    assert "hd: input 1080x1920, batch 1, fp32; latency measured on cpu under onnxruntime 1.17.3" in captions
    assert chart(at)["layout"]["xaxis"]["title"]["text"] == "latency (ms, measured under onnxruntime 1.17.3)"
    hovers = {c[10] for name, t in traces(at).items() if not name.startswith("canonical") for c in t.get("customdata", [])}
    assert hovers == {"measured on cpu under onnxruntime 1.17.3"}
    # the cpu profile models eager PyTorch: no eager reference lines beside onnxruntime figures
    assert not reference_labels(at) and "measured under onnxruntime, which the cpu profile" in captions
    # the trial detail: its input size, runtime and per-stage shapes at 1080x1920
    key = at.selectbox(key="selected").value
    assert any("input 1080x1920" in md.value for md in at.markdown)
    assert any("**Per stage** (at 1080x1920" in md.value for md in at.markdown)
    assert "measured on cpu under onnxruntime 1.17.3 at 1080x1920." in captions
    metric = next(m for m in at.metric if m.label == "latency (ms)")
    assert metric.proto.help == "measured on cpu under onnxruntime 1.17.3"
    study = optuna.load_study(study_name="hd", storage=f"sqlite:///{tmp_path / 'hd.db'}")
    config = ArchConfig.from_json(study.trials[int(key.split("#")[1])].user_attrs["config"])
    expected = [r["output"] for r in A.stage_rows(config, "1080x1920")]
    assert list(at.table[0].value["output"]) == expected
    _, h, w = map(int, expected[0].split("x"))
    assert (h, w) in {(1080 // s, 1920 // s) for s in (1, 2, 4, 8)}  # not square: the study's own HxW
    # predicted: the canonical models' lines at the study's own 1080x1920
    at.radio(key="lat_mode").set_value("predicted").run()
    at.selectbox(key="device").set_value("v100").run()
    assert_clean(at)
    labels = reference_labels(at)
    assert len(labels) == 3, labels
    ms = P.predict_one(get_config("resnet50").to_json(indent=None), P.predictor("v100"), "1080x1920")
    assert any(x.startswith("resnet50 (predicted)") and f"{ms:.3g} ms" in x for x in labels), labels


def test_a_zero_cost_study_has_no_proxy_warning(tmp_path, monkeypatch):
    at = app_on(lambda u: make_study(u, zero_cost=True), tmp_path, monkeypatch, "zc.db")
    assert not at.warning, [w.value for w in at.warning]
    assert chart(at)["layout"]["yaxis"]["title"]["text"] == "score (zero-cost:naswot)"


def test_budget_slider_greys_out_infeasible_points(url):
    at = run_app()
    at.slider[0].set_value(0.3).run()
    assert_clean(at)
    assert metrics(at)["feasible under budget"] == "4"
    t = traces(at)
    assert sorted(c[0] for c in t["infeasible"]["customdata"]) == ["fixture#0", "fixture#5", "fixture#6"]
    assert {c[0] for c in t["Pareto front"]["customdata"]} == {"fixture#2", "fixture#3"}


def test_selection_shows_the_architecture(url):
    at = run_app()
    at.selectbox(key="selected").set_value("fixture#0").run()
    assert_clean(at)
    cfg = get_config("hardnet39ds")
    assert any(cfg.arch_id in md.value and "hardnet39ds" in md.value for md in at.markdown)
    assert traces(at)["selected"]["customdata"][0][0] == "fixture#0"
    stage_table = at.table[0].value
    assert list(stage_table.index) == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]
    assert list(stage_table.columns) == ["block", "depth", "SE", "output", "params", "MACs", "CIO", "MoC"]
    assert stage_table.loc["stem", "SE"] == "–" and stage_table.loc["head", "depth"] == "–"  # not "None"
    assert all(v.endswith(("\u00a0k", "\u00a0M", "\u00a0G")) or v.replace(".", "").isdigit() for v in stage_table["MACs"])
    block = at.selectbox(key="block-fixture#0")
    assert len(block.options) == 4
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    links = [c for c in charts if c["data"] and c["data"][0].get("name") == "links"]
    assert links and len(links[0]["data"][1]["x"]) == cfg.stages[0].depth + 1
    assert any(c["data"] and c["data"][0].get("name") == cfg.arch_id for c in charts)  # the proxy curve


def test_a_rejected_baseline_can_be_selected_and_compared(url):
    at = run_app()
    assert any("hardnet68" in o and "rejected" in o for o in at.selectbox(key="selected").options)
    at.selectbox(key="selected").set_value("fixture#1").run()
    assert_clean(at)
    assert any("hardnet68 (baseline)" in md.value and "rejected: over budget" in md.value for md in at.markdown)
    assert traces(at)["selected"]["customdata"][0][0] == "fixture#1"
    at.radio(key="view").set_value("Compare").run()
    assert_clean(at)
    assert at.selectbox(key="cmp_a").value == "fixture#1"


def test_choices_survive_switching_views_and_storages(url, tmp_path):
    make_study(url, name="second", budget=0.3)
    at = run_app()
    at.selectbox(key="selected").set_value("fixture#5").run()
    at.radio(key="view").set_value("Trade-offs").run()
    at.selectbox(key="edf_choice").set_value("family").run()
    at.radio(key="view").set_value("Pareto front").run()
    assert_clean(at)
    assert at.selectbox(key="selected").value == "fixture#5"
    at.radio(key="view").set_value("Compare").run()
    assert at.selectbox(key="cmp_a").value == "fixture#5"
    at.selectbox(key="cmp_b").set_value("fixture#3").run()
    at.radio(key="view").set_value("Trade-offs").run()
    assert at.selectbox(key="edf_choice").value == "family"
    at.radio(key="view").set_value("Compare").run()
    assert_clean(at)
    assert (at.selectbox(key="cmp_a").value, at.selectbox(key="cmp_b").value) == ("fixture#5", "fixture#3")
    at.selectbox(key="cmp_a").set_value("fixture#6").run()
    at.radio(key="view").set_value("Pareto front").run()
    assert at.selectbox(key="selected").value == "fixture#6"  # Compare's A is the selection
    # another storage and back: each keeps its own study picks
    at.multiselect(key="studies").set_value(["fixture", "second"]).run()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    make_study(other, name="elsewhere")
    at.text_input(key="storage").set_value(other).run()
    assert_clean(at)
    assert at.multiselect(key="studies").value == ["elsewhere"]
    at.text_input(key="storage").set_value(url).run()
    assert_clean(at)
    assert at.multiselect(key="studies").value == ["fixture", "second"]


def test_export_downloads_carry_the_selected_architecture(url, monkeypatch):
    calls = []
    real = streamlit.download_button

    def spy(label, data, *args, **kwargs):
        calls.append((label, data, kwargs.get("file_name")))
        return real(label, data, *args, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", spy)
    at = run_app()
    assert_clean(at)
    got = {name.rsplit(".", 1)[1]: data for _, data, name in calls}
    assert set(got) == {"py", "json", "onnx", "pt"}
    cfg = small_configs(6)[0]  # trial 2, selected by default
    assert ArchConfig.from_json(got["json"].decode()) == cfg
    assert callable(got["py"]) and callable(got["onnx"]) and callable(got["pt"])  # made only when clicked
    assert "import torch" in got["py"]().decode() and "BatchNorm2d" in got["py"]().decode()
    assert all(name.startswith("fixture-trial2.") for _, _, name in calls)
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(got["onnx"]())
    props = {p.key: p.value for p in model.metadata_props}
    assert props.get("hardnas_arch_id") == cfg.arch_id
    import io

    import torch

    scripted = torch.jit.load(io.BytesIO(got["pt"]()))
    assert scripted(torch.randn(1, 3, 64, 64)).shape == (1, cfg.head.num_classes)
    calls.clear()
    at.toggle(key="deploy").set_value(True).run()  # BatchNorm folded, as the export command's --deploy
    assert_clean(at)
    deploy = {name: data for _, data, name in calls}
    assert set(deploy) == {"fixture-trial2-deploy.py", "fixture-trial2.json", "fixture-trial2-deploy.onnx",
                           "fixture-trial2-deploy.pt"}
    assert "BatchNorm2d" not in deploy["fixture-trial2-deploy.py"]().decode()
    labels = [b.proto.label for b in at.get("download_button")]
    assert "⬇ pareto.csv" in labels and "⬇ pareto.json" in labels  # the front shown, as the search writes it


def test_the_trials_view_lists_every_trial_with_its_outcome(url):
    study = optuna.load_study(study_name="fixture", storage=url)
    study.ask()  # a trial still running
    at = run_app()
    assert metrics(at)["running"] == "1"
    at.radio(key="view").set_value("Trials").run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert len(table) == len(PLAN) + 1 and list(table["trial"])[:2] == [len(PLAN), len(PLAN) - 1]  # newest first
    outcome = dict(zip(table["trial"], table["outcome"]))
    assert outcome[1] == "rejected: over budget: predicted 0.9 ms > 0.5 ms" and outcome[len(PLAN)] == "running"
    assert outcome[7] == "failed: proxy training: loss is NaN"
    at.multiselect(key="trial_states").set_value(["PRUNED", "FAIL"]).run()
    assert sorted(at.dataframe[0].value["trial"]) == [1, 7]
    at.text_input(key="trial_filter").set_value("NaN").run()
    assert list(at.dataframe[0].value["trial"]) == [7]
    at.radio(key="view").set_value("Pareto front").run()
    at.radio(key="view").set_value("Trials").run()
    assert list(at.dataframe[0].value["trial"]) == [7]  # the filters stick


def test_the_front_can_also_minimise_cio_as_the_searchs_pareto_csv(url):
    at = run_app()
    assert "accuracy and latency" in " ".join(c.value for c in at.caption)
    two = {c[0] for c in traces(at)["Pareto front"]["customdata"]}
    at.radio(key="front_objectives").set_value("accuracy, latency and CIO (as the search's pareto.csv)").run()
    assert_clean(at)
    t = traces(at)["Pareto front"]
    three = {c[0] for c in t["customdata"]}
    assert two <= three and t["mode"] == "markers"  # more points, no staircase
    assert any("accuracy, latency and CIO" in c.value for c in at.caption)


def test_corrupted_storage_is_one_error_line(tmp_path, monkeypatch):
    path = tmp_path / "nas.db"
    path.write_bytes(b"garbage, not sqlite\n" * 100)
    monkeypatch.setenv("NAS_STORAGE", f"sqlite:///{path}")
    at = run_app()
    assert not at.exception
    assert len(at.error) == 1
    msg = at.error[0].value
    assert msg.startswith(f"storage sqlite:///{path}: ") and "\n" not in msg and "not a database" in msg


def test_refresh_shows_trials_written_meanwhile(url):
    at = run_app()
    assert metrics(at)["trials"] == str(len(PLAN))
    study = optuna.load_study(study_name="fixture", storage=url)
    cfg = small_configs(7)[6]
    attrs = _attrs(cfg, 0.9, 0.15)
    study.add_trial(optuna.trial.create_trial(values=[0.9, 0.15, float(attrs["cio"])], user_attrs=attrs))
    at.sidebar.button[0].click().run()
    assert_clean(at)
    assert metrics(at)["trials"] == str(len(PLAN) + 1)
    assert f"fixture#{len(PLAN)}" in {c[0] for c in traces(at)["Pareto front"]["customdata"]}


def test_a_rerun_reads_the_trials_again_only_when_the_storage_changed(url, monkeypatch):
    from nas.explore import data as D

    reads = []
    real = D.load_records
    monkeypatch.setattr(D, "load_records", lambda *a, **k: reads.append(a) or real(*a, **k))
    at = run_app()
    assert len(reads) == 1
    time.sleep(5.5)  # longer than the former time-to-live
    at.run()
    at.radio(key="view").set_value("Trials").run()
    assert len(reads) == 1
    study = optuna.load_study(study_name="fixture", storage=url)
    cfg = small_configs(7)[6]
    attrs = _attrs(cfg, 0.9, 0.15)
    study.add_trial(optuna.trial.create_trial(values=[0.9, 0.15, float(attrs["cio"])], user_attrs=attrs))
    at.run()  # no refresh button: the next interaction shows it
    assert_clean(at)
    assert len(reads) == 2 and metrics(at)["trials"] == str(len(PLAN) + 1)


def test_overlaid_studies_other_device_and_views(url):
    make_study(url, name="second", budget=0.3)
    at = run_app()
    at.multiselect(key="studies").set_value(["fixture", "second"]).run()
    assert_clean(at)
    fronts = [n for n in traces(at) if n.startswith("Pareto front")]
    assert fronts == ["Pareto front: fixture", "Pareto front: second"]
    assert metrics(at)["trials"] == str(2 * len(PLAN))
    before = at.slider[0].max
    at.selectbox(key="device").set_value("jetson_nano").run()
    assert_clean(at)
    assert at.slider[0].max > 10 * before  # a Jetson Nano is much slower than a V100
    at.radio(key="lat_mode").set_value("measured").run()
    assert not at.exception and "switch to predicted" in at.warning[0].value
    at.radio(key="lat_mode").set_value("predicted").run()
    at.radio(key="view").set_value("Trade-offs").run()
    assert_clean(at)
    kinds = [json.loads(c.proto.spec)["data"][0]["type"] for c in at.get("plotly_chart")]
    assert kinds == ["parcoords", "scattergl", "scattergl", "scatter", "bar", "bar"]  # importances last: the slowest
    assert sum("Kendall τ" in md.value and "Spearman ρ" in md.value for md in at.markdown) == 2
    assert not any("need at least" in i.value for i in at.info)  # 14 completed trials: importances shown
    at.selectbox(key="edf_choice").set_value("family").run()
    assert_clean(at)
    at.radio(key="view").set_value("Compare").run()
    assert_clean(at)
    a, b = at.selectbox(key="cmp_a").value, at.selectbox(key="cmp_b").value
    assert a != b and len(at.table) == 3  # the figures side by side, then each one's stages
    figures = at.table[0].value
    assert list(figures.columns) == ["A", "B", "B / A"] and "MoC (MACs / CIO)" in figures.index


def _overlay(url: str, picks: list[str]) -> AppTest:
    at = run_app()
    at.multiselect(key="studies").set_value(picks).run()
    assert_clean(at)
    return at


def test_overlays_take_budgets_set_for_the_latency_shown_whatever_the_click_order(url, tmp_path):
    make_measured_study(url, name="cpu", budget=40.0)
    make_study(url, name="tight", budget=0.3)
    one = _overlay(url, ["fixture", "cpu"])
    two = _overlay(url, ["cpu", "fixture"])
    assert one.slider(key="budget").value == two.slider(key="budget").value == pytest.approx(40.0)  # measured
    for at in (one, two):
        at.radio(key="lat_mode").set_value("predicted").run()
        at.selectbox(key="device").set_value("v100").run()
        assert_clean(at)
    assert one.slider(key="budget").value == two.slider(key="budget").value == pytest.approx(0.5)  # not cpu's 40 ms
    note = " ".join(c.value for c in one.sidebar.caption)
    assert "cpu: 40 ms (measured), another axis" in note and "fixture: 0.5 ms (predicted:v100)" in note
    three = _overlay(url, ["tight", "fixture"])
    assert three.slider(key="budget").value == pytest.approx(0.3)  # the smallest of those for this latency
    three.multiselect(key="studies").set_value(["fixture", "tight"]).run()
    assert three.slider(key="budget").value == pytest.approx(0.3)


def test_overlays_never_share_an_axis_between_proxies_or_resolutions(url, tmp_path):
    make_study(url, name="zc", zero_cost=True)
    make_study(url, name="big", resolution=128)
    at = _overlay(url, ["fixture", "zc"])
    assert any("different accuracy proxies" in i.value and "not shown: zc" in i.value for i in at.info)
    assert chart(at)["layout"]["yaxis"]["title"]["text"] == "proxy accuracy"
    assert {c[2] for t in chart(at)["data"] for c in t.get("customdata", []) if c} == {"fixture"}
    at.radio(key="proxy_group").set_value("zero-cost:naswot").run()
    assert_clean(at)
    assert chart(at)["layout"]["yaxis"]["title"]["text"] == "score (zero-cost:naswot)"
    at = _overlay(url, ["fixture", "big"])
    labels = reference_labels(at)
    assert len(labels) == 6, labels
    assert any(x.startswith("resnet50 @64x64 (predicted)") for x in labels)
    assert any(x.startswith("resnet50 @128x128 (predicted)") for x in labels)


def test_too_few_trials_for_importances_is_a_message(url):
    at = run_app()
    at.radio(key="view").set_value("Trade-offs").run()
    assert_clean(at)
    assert any("need at least 8 completed trials" in i.value for i in at.info)


# -- the server's binding -----------------------------------------------------------------------------


def _listening(port: int) -> set[ipaddress._BaseAddress]:
    """Local addresses with a TCP socket in LISTEN state on ``port``, read from /proc/net (Linux)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state != "0A" or int(hexport, 16) != port or len(addr) != width:
                continue
            raw = bytes.fromhex(addr)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(ipaddress.ip_address(words))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc/net")
def test_streamlit_run_from_the_repo_listens_on_localhost_only(tmp_path):
    """The README's ``streamlit run app.py`` from the repository root picks up .streamlit/config.toml."""
    port = _free_port()
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.headless", "true"], stdout=log, stderr=subprocess.STDOUT,
                              cwd=Path(APP).parent)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port) and time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "streamlit.log").read_text()
            time.sleep(0.2)
        time.sleep(0.5)  # a second socket (IPv6) may follow the first
        addresses = _listening(port)
        assert addresses, (tmp_path / "streamlit.log").read_text()
        assert all(a.is_loopback for a in addresses), addresses
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
