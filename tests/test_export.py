"""Export: standalone .py files against the package (in a process where `nas` cannot be imported),
ONNX and TorchScript numerics, configs, weights, study sources, atomic writes and CLI errors."""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import black
import pytest
import torch
import yaml
from helpers import official_state_dict

import nas
from nas.export import ExportError, config_from_study, export, export_bytes, render_py, weights_bytes
from nas.export import files as export_files
from nas.export.__main__ import main as export_main
from nas.fuse import fuse_model
from nas.sampling import random_config

ROOT = Path(__file__).resolve().parent.parent
TINY = str(Path(__file__).parent / "data" / "tiny_space.yaml")
RANDOM_SEEDS = list(range(24))

# Runs in `python -I -S`: no site-packages processing (so no editable-install finder for `nas`), no
# current folder on sys.path; only the folder torch lives in is added. Loads every exported file,
# the in-package state dict, and compares with the outputs the package computed.
CHILD = r"""
import importlib.util, json, sys
sys.path.append(sys.argv[2])
assert importlib.util.find_spec("nas") is None, "nas is importable in the clean process"
try:
    import nas  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("import nas succeeded")
import torch

torch.manual_seed(0)
torch.set_num_threads(1)  # the machine is shared: two OpenMP threads against busy neighbours crawl
results = []
for job in json.load(open(sys.argv[1])):
    data = torch.load(job["data"], weights_only=True)
    res = {"id": job["id"]}
    if job["kind"] == "py":
        spec = importlib.util.spec_from_file_location(f"exported_{len(results)}", job["file"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.build(num_classes=job["num_classes"])
        res["keys"] = list(model.state_dict()) == list(data["state"])
        res["params"] = sum(p.numel() for p in model.parameters())
        model.load_state_dict(data["state"], strict=True)
    else:
        model = torch.jit.load(job["file"], map_location="cpu")
    model.eval()
    with torch.no_grad():
        out = model(data["x"])
    res["err"] = float((out - data["y"]).abs().max())
    res["scale"] = float(data["y"].abs().max())
    results.append(res)
results.append({"nas_loaded": "nas" in sys.modules or "search_spaces" in sys.modules})
print(json.dumps(results))
"""


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP threads that wait on busy
    neighbours make every forward pass many times slower; results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so that folding and loading are really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)


def _reference(config: nas.ArchConfig, deploy: bool, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = nas.build_model(config).eval()
    _randomise_norms(model, seed)
    if deploy:
        model = fuse_model(model)
    res = 2 * config.reduction
    x = torch.randn(2, config.in_channels, res, res, generator=torch.Generator().manual_seed(seed))
    return model, x


def _run_clean(jobs: list[dict], tmp: Path) -> list[dict]:
    manifest = tmp / "jobs.json"
    manifest.write_text(json.dumps(jobs))
    torch_dir = str(Path(torch.__file__).resolve().parent.parent)
    assert Path(torch_dir) != ROOT and not (Path(torch_dir) / "nas" / "__init__.py").exists(), \
        "nas is installed next to torch: the clean process could import it"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", CHILD, str(manifest), torch_dir],
                          capture_output=True, text=True, cwd=tmp, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.pop() == {"nas_loaded": False}
    return results


def _standalone_jobs(configs: dict[str, nas.ArchConfig], deploy_too: set[str], tmp: Path) -> tuple[list, dict]:
    jobs, expected = [], {}
    for label, cfg in configs.items():
        for deploy in (False, True) if label in deploy_too else (False,):
            job_id = f"{label}{'-deploy' if deploy else ''}"
            model, x = _reference(cfg, deploy, seed=len(jobs))
            with torch.no_grad():
                y = model(x)
            src = render_py(cfg, deploy=deploy)
            (tmp / f"{job_id}.py").write_text(src)
            state = model.state_dict()
            torch.save({"state": state, "x": x, "y": y}, tmp / f"{job_id}.data")
            jobs.append({"id": job_id, "kind": "py", "file": str(tmp / f"{job_id}.py"),
                         "data": str(tmp / f"{job_id}.data"), "num_classes": cfg.head.num_classes})
            expected[job_id] = sum(p.numel() for p in model.parameters())
            del model, state
    return jobs, expected


def _check_results(results: list[dict], expected_params: dict[str, int]) -> None:
    assert [r["id"] for r in results] == list(expected_params)
    for r in results:
        assert r["keys"], f"{r['id']}: state_dict keys differ from the package's"
        assert r["params"] == expected_params[r["id"]], r
        # a deploy file folds BatchNorm and runs channels_last: other summation orders (docs/export.md: 1e-4)
        tol = 1e-4 if r["id"].endswith("-deploy") else 1e-5
        assert r["err"] <= tol * max(1.0, r["scale"]), r


def _torchscript_jobs(configs: dict[str, tuple[nas.ArchConfig, bool]], tmp: Path) -> list[dict]:
    """TorchScript exports, each checked in-process here and again in the clean process."""
    jobs = []
    for job_id, (cfg, deploy) in configs.items():
        model, x = _reference(cfg, deploy=False, seed=len(jobs))
        data = export_bytes(cfg, "torchscript", deploy=deploy, state_dict=model.state_dict())
        ref = fuse_model(model) if deploy else model
        with torch.no_grad():
            y = ref(x)
            loaded = torch.jit.load(io.BytesIO(data)).eval()
            assert float((loaded(x) - y).abs().max()) <= 1e-5 * max(1.0, float(y.abs().max())), job_id
        (tmp / f"{job_id}.pt").write_bytes(data)
        torch.save({"x": x, "y": y}, tmp / f"{job_id}.data")
        jobs.append({"id": job_id, "kind": "torchscript", "file": str(tmp / f"{job_id}.pt"),
                     "data": str(tmp / f"{job_id}.data")})
    return jobs


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> dict:
    """One clean subprocess for the default suite: 20 random configs (every fifth also as a deploy
    export), the two small canonical models, and three TorchScript exports."""
    tmp = tmp_path_factory.mktemp("clean")
    configs = {f"random{s}": random_config(s) for s in RANDOM_SEEDS[:20]}
    configs |= {n: nas.get_config(n) for n in ("hardnet39ds", "hardnet68ds")}
    deploy = {f"random{s}" for s in RANDOM_SEEDS[:20:5]} | {"hardnet39ds"}
    jobs, expected = _standalone_jobs(configs, deploy, tmp)
    ts = {"ts-hardnet39ds": (nas.get_config("hardnet39ds"), False), "ts-random2-deploy": (random_config(2), True),
          "ts-random5": (random_config(5), False)}
    jobs += _torchscript_jobs(ts, tmp)
    results = {r["id"]: r for r in _run_clean(jobs, tmp)}
    assert list(results) == [j["id"] for j in jobs]
    return {"results": results, "params": expected, "tmp": tmp}


def test_random_configs_run_standalone_without_nas(clean_run):
    ids = [k for k in clean_run["params"] if k.startswith("random")]
    assert len({i.removesuffix("-deploy") for i in ids}) == 20 and sum(i.endswith("-deploy") for i in ids) == 4
    _check_results([clean_run["results"][i] for i in ids], {i: clean_run["params"][i] for i in ids})


def test_small_canonical_models_run_standalone_without_nas(clean_run):
    ids = ["hardnet39ds", "hardnet39ds-deploy", "hardnet68ds"]
    _check_results([clean_run["results"][i] for i in ids], {i: clean_run["params"][i] for i in ids})


def test_torchscript_loads_and_matches_without_nas(clean_run):
    ts = {k: v for k, v in clean_run["results"].items() if k.startswith("ts-")}
    assert len(ts) == 3
    for r in ts.values():
        assert r["err"] <= 1e-5 * max(1.0, r["scale"]), r
    extra = {"hardnas/hardnas_config": ""}
    torch.jit.load(str(clean_run["tmp"] / "ts-hardnet39ds.pt"), _extra_files=extra)
    assert nas.ArchConfig.from_json(extra["hardnas/hardnas_config"]) == nas.get_config("hardnet39ds")


@pytest.mark.slow
def test_every_canonical_model_runs_standalone_without_nas(tmp_path):
    """All canonical models (and their deploy exports) in one clean subprocess."""
    configs = {n: nas.get_config(n) for n in nas.list_models()}
    jobs, expected = _standalone_jobs(configs, set(configs), tmp_path)
    _check_results(_run_clean(jobs, tmp_path), expected)


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    out = {n: render_py(nas.get_config(n)) for n in nas.list_models()}
    out["hardnet68-deploy"] = render_py(nas.get_config("hardnet68"), deploy=True)
    out["tresnet_m-deploy"] = render_py(nas.get_config("tresnet_m"), deploy=True)
    return out


def _imports(src: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def _classes(src: str) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ClassDef)}


def test_files_import_only_torch_and_are_black_formatted(sources):
    for name, src in sources.items():
        assert _imports(src) <= {"torch", "torch.nn.functional"} | {"torch"}, (name, _imports(src))
        assert all(i.split(".")[0] == "torch" for i in _imports(src)), name
        assert black.format_str(src, mode=black.Mode(line_length=100)) == src, name
        assert "def build(num_classes: int = 1000) -> Net:" in src


def test_only_the_parts_an_architecture_uses_are_generated(sources):
    assert _classes(sources["hardnet68"]) == {"ConvNormAct", "HarDBlock", "Stage", "Stem", "ClassifierHead", "Net"}
    assert _classes(sources["hardnet39ds"]) == {"ConvNormAct", "SeparableLayer", "HarDBlock", "Stage", "Stem",
                                                 "ClassifierHead", "Net"}
    assert _classes(sources["resnet50"]) == {"ConvNormAct", "Shortcut", "Residual", "Bottleneck", "Stage", "Stem",
                                              "ClassifierHead", "Net"}
    assert _classes(sources["tresnet_m"]) == {"BlurPool2d", "SpaceToDepth", "ConvNormAct", "SqueezeExcite",
                                               "Shortcut", "Residual", "BasicBlock", "Bottleneck", "Stage", "Stem",
                                               "ClassifierHead", "Net"}
    # only the activations in use; the classes are nas.modules' own source, cost methods left out
    assert '"relu6": lambda p: nn.ReLU6(inplace=True)' in sources["hardnet68"]
    assert "LeakyReLU" not in sources["hardnet68"] and "nn.ReLU6" not in sources["resnet50"]
    assert "nn.LeakyReLU" in sources["tresnet_m"] and 'act="leaky_relu:0.001"' in sources["tresnet_m"]
    assert all("def cost" not in src and "tracer" not in src for src in sources.values())
    # HarDBlock with its link lists as literal data (HarDNet68's first block)
    assert "links=[[0], [1, 0], [2], [3, 2, 0], [4], [5, 4], [6], [7, 6, 4, 0]]" in sources["hardnet68"]
    assert "widths=[14, 24, 14, 40, 14, 24, 14, 68]" in sources["hardnet68"]


def test_deploy_files_have_biased_convs_and_no_batchnorm(sources):
    for name in ("hardnet68-deploy", "tresnet_m-deploy"):
        src = sources[name]
        assert "BatchNorm" in src.split('"""')[1]  # the docstring says so
        code = src.split('"""', 2)[2]
        assert "nn.BatchNorm2d" not in code and "bias=True" in code and "class ConvAct" in code
    assert "nn.BatchNorm2d(cout)" in sources["hardnet68"]


def test_docstring_holds_config_cost_and_latency():
    cfg = nas.get_config("hardnet68")
    meta = {"latency_ms": 12.345, "latency_source": "predicted", "device": "v100", "accuracy": 0.8123,
            "proxy": "zero-cost:naswot", "study": "s1"}
    src = render_py(cfg, metadata=meta)
    doc = ast.get_docstring(ast.parse(src))
    report = nas.analyze(cfg, 224)
    assert f"params  {report.params:,}" in doc
    assert f"{report.macs / 1e9:,.3f} G conv + linear" in doc and f"{report.cio / 1e6:,.2f} M elements" in doc
    assert "Latency: 12.35 ms predicted for v100 (roofline model, not measured)" in doc
    assert "Accuracy: 0.8123 (proxy: zero-cost:naswot)" in doc and "Study: s1" in doc
    assert "arch_id 8b5e70783171" in doc
    config_yaml = doc.split("reads it back as the same architecture):", 1)[1]
    back = nas.ArchConfig.from_dict(yaml.safe_load(config_yaml))
    assert back.arch_id == cfg.arch_id and back == cfg
    for seed in RANDOM_SEEDS[:6]:
        rc = random_config(seed)
        d = ast.get_docstring(ast.parse(render_py(rc)))
        assert nas.ArchConfig.from_dict(yaml.safe_load(d.split("architecture):", 1)[1])).arch_id == rc.arch_id
    deploy_doc = ast.get_docstring(ast.parse(render_py(cfg, deploy=True)))
    bn = sum(r.params for r in report.layers if r.op == "bn") // 2
    assert f"params  {report.params - bn:,}  (BatchNorm folded" in deploy_doc


def test_names_that_need_escaping_stay_valid_python():
    cfg = nas.get_config("resnet50").replace(name='my """net""" \\ with\nnewline')
    src = render_py(cfg)
    ast.parse(src)
    assert ast.get_docstring(ast.parse(src)).startswith('my """net""" \\ with')


def test_json_and_yaml_round_trip():
    for cfg in (nas.get_config("tresnet_m"), random_config(3)):
        for fmt, load in (("json", nas.ArchConfig.from_json), ("yaml", nas.ArchConfig.from_yaml)):
            back = load(export_bytes(cfg, fmt).decode())
            assert back == cfg and back.arch_id == cfg.arch_id
            nas.build_model(back)


def _ort(data: bytes, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize(("seed", "deploy"), [(1, False), (4, True), (7, False)])
def test_onnx_matches_pytorch(seed, deploy):
    cfg = random_config(seed)
    model, _ = _reference(cfg, deploy=False, seed=seed)
    data = export_bytes(cfg, "onnx", deploy=deploy, state_dict=model.state_dict())
    ref = fuse_model(model) if deploy else model
    # another batch size and resolution than the traced example: the axes are dynamic
    x = torch.randn(3, cfg.in_channels, 4 * cfg.reduction, 4 * cfg.reduction)
    with torch.no_grad():
        want = ref(x)
    got = _ort(data, x)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))
    import onnx

    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert props["hardnas_arch_id"] == cfg.arch_id and nas.ArchConfig.from_json(props["hardnas_config"]) == cfg


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hardnet68", "tresnet_m"])
def test_onnx_matches_pytorch_for_canonical_models(name):
    cfg = nas.get_config(name)
    model, _ = _reference(cfg, deploy=False)
    data = export_bytes(cfg, "onnx", deploy=True, state_dict=model.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = fuse_model(model)(x)
    assert float((_ort(data, x) - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))


def test_missing_onnx_packages_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError) as err:
        export_bytes(random_config(1), "onnx")
    msg = str(err.value)
    assert "onnxruntime" in msg and "pip install 'hardnas[onnx]'" in msg and "\n" not in msg


def test_a_wrong_export_is_refused(monkeypatch):
    """The ONNX check is real: a graph that computes something else never leaves."""
    import nas.export.formats as F

    real = F._close
    monkeypatch.setattr(F, "_close", lambda got, want, tol: real(got + 1.0, want, tol))
    with pytest.raises(ExportError, match="onnxruntime output differs"):
        export_bytes(random_config(1), "onnx")
    with pytest.raises(ExportError, match="torchscript"):
        export_bytes(random_config(1), "torchscript")


def test_bad_arguments_are_one_line_value_errors():
    cfg = random_config(1)
    with pytest.raises(ValueError, match="format: 'pdf' is not allowed; expected one of py, json, yaml, onnx"):
        export_bytes(cfg, "pdf")
    with pytest.raises(ValueError, match="deploy: not allowed with format 'yaml'"):
        export_bytes(cfg, "yaml", deploy=True)
    with pytest.raises(ValueError, match="state_dict: does not fit architecture"):
        export_bytes(cfg, "py", state_dict={"x": torch.zeros(1)})


# --- files: weights, overwriting, atomic writes ----------------------------------------------------


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"m_{path.stem.replace('-', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("deploy", [False, True])
def test_weights_ship_as_safetensors_next_to_the_py(tmp_path, deploy):
    from safetensors.torch import load_file

    cfg = random_config(6)
    model, x = _reference(cfg, deploy=False, seed=6)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    out = export(cfg, "py", tmp_path / "net.py", deploy=deploy, weights=ckpt, latency="none")
    shipped = load_file(str(tmp_path / "net.safetensors"))
    exported = _load_module(out).build(cfg.head.num_classes).eval()
    exported.load_state_dict(shipped)
    ref = fuse_model(model) if deploy else model
    with torch.no_grad():
        assert torch.allclose(exported(x), ref(x), atol=1e-5, rtol=0)
    assert set(shipped) == set(ref.state_dict())


def test_weights_must_be_tensors_only_and_fit(tmp_path):
    cfg = random_config(6)
    model = nas.build_model(cfg)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": model.state_dict(), "hook": Path("x")}, evil)  # a pickled object, not a tensor
    with pytest.raises(ValueError, match="could not be read as tensors only"):
        export(cfg, "py", tmp_path / "a.py", weights=evil, latency="none")
    other = tmp_path / "other.pt"
    torch.save(nas.build_model(random_config(7)).state_dict(), other)
    with pytest.raises(ValueError, match="does not fit architecture"):
        export(cfg, "py", tmp_path / "a.py", weights=other, latency="none")
    assert not list(tmp_path.glob("a.*"))
    sd = weights_bytes(cfg, model.state_dict())
    from safetensors import safe_open

    (tmp_path / "w.safetensors").write_bytes(sd)
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert f.metadata()["arch_id"] == cfg.arch_id


def test_existing_files_are_refused_without_force(tmp_path, capsys):
    out = tmp_path / "hardnet39ds.json"
    out.write_text("precious")
    with pytest.raises(SystemExit) as e:
        from nas.cli import run

        run(export_main, "nas.export", ["hardnet39ds", "--format", "json", "-o", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists; pass --force" in err[0] and str(out) in err[0]
    assert out.read_text() == "precious"
    assert export_main(["hardnet39ds", "--format", "json", "-o", str(out), "--force"]) == 0
    assert nas.ArchConfig.load(out) == nas.get_config("hardnet39ds")


def test_write_is_atomic_when_the_writer_fails_midway(tmp_path):
    target = tmp_path / "model.py"

    def failing():
        yield b"half of a file\n"
        raise OSError("disk full")

    with pytest.raises(ValueError, match=r"out: .*model\.py' could not be written \(disk full\); nothing was written"):
        export_files.write_atomic(target, failing())
    assert not target.exists() and list(tmp_path.iterdir()) == []
    target.write_text("old content")
    with pytest.raises(ValueError, match="disk full"):
        export_files.write_atomic(target, failing(), force=True)
    assert target.read_text() == "old content" and list(tmp_path.iterdir()) == [target]
    export_files.write_atomic(target, b"new", force=True)
    assert target.read_bytes() == b"new" and oct(target.stat().st_mode & 0o777) != oct(0o600)


def test_export_leaves_nothing_when_a_crash_hits_midway(tmp_path, monkeypatch):
    """The real export path, with the disk failing after the first chunk of the file."""
    real = export_files._chunks

    def crash_after_first(data):
        for i, chunk in enumerate(real(data)):
            if i == 1:
                raise OSError("simulated crash")
            yield chunk

    monkeypatch.setattr(export_files, "_CHUNK", 1024)
    monkeypatch.setattr(export_files, "_chunks", crash_after_first)
    existing = tmp_path / "hardnet68.py"
    existing.write_text("# the old export\n")
    with pytest.raises(ValueError, match="simulated crash"):
        export("hardnet68", "py", existing, force=True, latency="none")
    assert existing.read_text() == "# the old export\n"
    with pytest.raises(ValueError, match="simulated crash"):
        export("hardnet68", "py", tmp_path / "fresh.py", latency="none")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hardnet68.py"]


def test_out_folder_and_suffix_checks(tmp_path):
    path = export("hardnet39ds", "yaml", tmp_path, latency="none")
    assert path == tmp_path / "hardnet39ds.yaml"
    cfg = random_config(2)
    assert export(cfg, "py", tmp_path, deploy=True, latency="none").name == f"arch-{cfg.arch_id}-deploy.py"
    with pytest.raises(ValueError, match=r"out: .*x\.txt' is not allowed for format 'onnx'; expected a file ending in \.onnx"):
        export("hardnet39ds", "onnx", tmp_path / "x.txt")
    with pytest.raises(ValueError, match="latency: 'sometimes' is not allowed"):
        export("hardnet39ds", "py", tmp_path / "y.py", latency="sometimes")


# --- studies -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """A real (tiny) search: zero-cost proxy, latency predicted for a V100, five evaluated trials."""
    from nas.search.__main__ import main as search_main

    runs = tmp_path_factory.mktemp("study_runs")
    storage = f"sqlite:///{runs / 'nas.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARDNAS_RUNS", str(runs))
        args = ["--space", TINY, "--resolution", "64", "--latency", "predicted:v100", "--budget", "1ms",
                "--proxy", "zero-cost", "--trials", "5", "--no-progress", "--storage", storage]
        assert search_main([*args, "--study-name", "tiny1"]) == 0
    import optuna

    optuna.create_study(study_name="tiny2", storage=storage)  # a second study, so names must be given

    trials = optuna.load_study(study_name="tiny1", storage=storage).trials
    return {"storage": storage, "runs": runs, "trials": trials}


def test_config_from_study_by_number_and_best(study):
    storage, trials = study["storage"], study["trials"]
    t = next(t for t in trials if t.state.name == "COMPLETE")
    cfg, rec = config_from_study(storage, "tiny1", trial=t.number)
    assert cfg.arch_id == t.user_attrs["arch_id"] == rec["arch_id"]
    assert cfg.name == f"tiny1-trial{t.number}" and rec["latency_source"] == "predicted"
    best, brec = config_from_study(storage, "tiny1", best=True, budget_ms=1e9)
    done = [x for x in trials if x.state.name == "COMPLETE"]
    top = max(x.user_attrs["accuracy"] for x in done)
    assert brec["accuracy"] == top and brec["state"] == "COMPLETE"
    fastest = min(x.user_attrs["latency_ms"] for x in done)
    with pytest.raises(ValueError, match=rf"best: no completed trial of study 'tiny1' is within the 1e-09 ms budget "
                                         rf"\(\d+ completed of \d+ trials; the fastest takes {fastest:.2f} ms\)"):
        config_from_study(storage, "tiny1", best=True, budget_ms=1e-9)


def test_study_lookups_name_what_exists(study, tmp_path):
    storage = study["storage"]
    n = len(study["trials"])
    with pytest.raises(ValueError, match=rf"trial: 999 is not in study 'tiny1'; trials there: 0-{n - 1}$"):
        config_from_study(storage, "tiny1", trial=999)
    with pytest.raises(ValueError, match="study-name: 'nope' is not in .*; studies there: tiny1, tiny2$"):
        config_from_study(storage, "nope", trial=0)
    with pytest.raises(ValueError, match=r"study-name: none given .* \(it holds tiny1, tiny2\); pass --study-name"):
        config_from_study(storage, None, trial=0)
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(ValueError, match="storage: .* does not exist"):
        config_from_study(missing, "tiny1", trial=0)
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(ValueError, match="trial: none given; expected --trial N"):
        config_from_study(storage, "tiny1")


def test_cli_exports_the_best_trial_with_its_figures(study, tmp_path, capsys):
    out = tmp_path / "best.py"
    assert export_main(["--storage", study["storage"], "--study-name", "tiny1", "--best", "--budget", "1ms",
                        "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    doc = ast.get_docstring(ast.parse(out.read_text()))
    _, rec = config_from_study(study["storage"], "tiny1", best=True, budget_ms=1.0)
    assert f"Latency: {rec['latency_ms']:.2f} ms predicted for v100" in doc
    assert f"Accuracy: {rec['accuracy']:.4f}" in doc and f"Trial: {rec['number']}" in doc
    assert f"arch_id {rec['arch_id']}" in doc


def _cli(args: list[str], cwd: Path, runs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARDNAS_RUNS": str(runs)}
    return subprocess.run([sys.executable, "-m", "nas.export", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_cli_unknown_names_are_one_line_exit_2(study, tmp_path, capsys):
    """A bad name, study and trial each give one line and exit code 2 (the name through the real
    entry point, the study lookups through the same `run` wrapper in this process)."""
    from nas.cli import run

    proc = _cli(["hardnet1000"], tmp_path, study["runs"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("nas.export: error: model: 'hardnet1000' is not known; known models: hardnet39ds, ")
    storage = study["storage"]
    cases = [
        (["--storage", storage, "--study-name", "tiny3", "--trial", "0"], "studies there: tiny1, tiny2"),
        (["--storage", storage, "--study-name", "tiny1", "--trial", "4242"], "trial: 4242 is not in study 'tiny1'"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as e:
            run(export_main, "nas.export", args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1 and message in lines[0], lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["hardnet68", "--format", "pdf"], "format: 'pdf' is not allowed; expected one of py, json, yaml, onnx, torchscript"),
    (["hardnet68", "--format", "json", "--deploy"], "deploy: not allowed with format 'json'"),
    (["hardnet68", "--trial", "3"], "source: 'hardnet68' is not allowed together with a study"),
    ([], "source: none given"),
    (["--trial", "1", "--best"], "not allowed together with best"),
    (["--storage", "nonsense", "--trial", "1"], "storage: 'nonsense' is not allowed"),
    (["hardnet68", "--budget", "30"], "budget: '30' is not allowed"),
    (["hardnet68", "--latency", "predicted:tpu"], "device profile: 'tpu' is not known"),
    (["hardnet68", "--resolution", "16x300"], "resolution: '16x300' is not allowed; expected each side at least the network's stride 32"),
    (["hardnet68", "--resolution", "1080x"], "argument --resolution: '1080x' is not allowed; expected a positive integer or HxW"),
    (["hardnet68", "--weights", "/no/such.pt"], "weights: '/no/such.pt' does not exist"),
])
def test_cli_usage_errors(args, message, tmp_path, capsys, monkeypatch):
    from nas.cli import run

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run(export_main, "nas.export", args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["hardnas-export"] == "nas.export.__main__:cli"


def test_official_checkpoint_layout_ships_in_hardnas_layout(tmp_path, reference_layouts):
    """A Pytorch-HarDNet-layout checkpoint (keys and shapes recorded from the official code) goes
    through `nas.load_reference_weights` and leaves in the exported file's layout."""
    from safetensors.torch import load_file

    official = official_state_dict(reference_layouts["hardnet39ds"])
    assert not any(k.startswith("stem.") for k in official)
    ckpt = tmp_path / "hardnet39ds_official.pth"
    torch.save(official, ckpt)
    out = export("hardnet39ds", "py", tmp_path / "h39.py", weights=ckpt, latency="none")
    shipped = load_file(str(tmp_path / "h39.safetensors"))
    model = nas.build_model(nas.get_config("hardnet39ds"))
    nas.load_reference_weights(model, official)
    assert set(shipped) == set(model.state_dict())
    assert all(torch.equal(shipped[k], v) for k, v in model.state_dict().items())
    _load_module(out).build().load_state_dict(shipped)


def test_latency_is_measured_or_predicted_and_labelled(tmp_path):
    cfg = random_config(1)
    res = 2 * cfg.reduction
    measured = export(cfg, "py", tmp_path / "m.py", resolution=res)  # auto: measured here for a config
    doc = ast.get_docstring(ast.parse(measured.read_text()))
    assert f"Cost at 1x{cfg.in_channels}x{res}x{res}" in doc
    assert " ms measured on cpu" in doc and f"{res}x{res}" in doc.split("Latency:")[1]
    predicted = export(cfg, "py", tmp_path / "p.py", resolution=res, latency="predicted:v100", deploy=True)
    doc = " ".join(ast.get_docstring(ast.parse(predicted.read_text())).split())
    assert "ms predicted for v100" in doc and "BN folded" in doc and "roofline model, not measured" in doc
    given = export(cfg, "py", tmp_path / "g.py", metadata={"latency_ms": 1.5, "latency_source": "measured",
                                                           "device": "cuda:0 (A100)"})
    assert "Latency: 1.50 ms measured on cuda:0 (A100)" in ast.get_docstring(ast.parse(given.read_text()))


def _huge() -> nas.ArchConfig:
    """Valid, and about 10 G parameters: building it would need about 40 GB before any check."""
    stages = tuple(nas.StageConfig(block="bottleneck", width=4096, depth=8, downsample="conv" if i else "none")
                   for i in range(4))
    return nas.ArchConfig(stem=nas.StemConfig("resnet", (64,)), stages=stages, name="huge")


def test_memory_estimate_follows_the_cost_model_and_refuses_before_building(tmp_path, monkeypatch):
    from nas.export import formats

    small = nas.get_config("hardnet39ds")
    report = nas.analyze(small, 224)
    est = formats.memory_estimate(small, "torchscript", 224)
    assert est > 4 * 4 * report.params and est < 4 * 4 * report.params + 4 * 10 * report.cio
    assert formats.memory_estimate(small, "onnx", 224) > est > formats.memory_estimate(small, "py", 224)
    monkeypatch.setattr(formats, "available_memory", lambda: 8 * 2**30)
    monkeypatch.setattr(formats, "build_for_export", lambda *a, **k: pytest.fail("built the model"))
    with pytest.raises(ValueError) as err:
        export(_huge(), "torchscript", tmp_path / "huge.pt", latency="none")
    msg = str(err.value)
    assert msg.startswith("config: huge needs about ") and "GiB of memory to export as torchscript (9,884 M " in msg
    assert "over the limit of 4.0 GiB (half of the 8.0 GiB available)" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="to export as onnx"):
        export_bytes(_huge(), "onnx")
    assert list(tmp_path.iterdir()) == []
    assert export(_huge(), "json", tmp_path / "huge.json", latency="none").exists()  # builds no model
    formats.check_memory(nas.get_config("tresnet_xl"), "onnx", 224)  # the largest canonical model fits in 8 GiB


def test_available_memory_is_a_positive_byte_count():
    from nas.export.formats import available_memory

    got = available_memory()
    assert got is None or got > 2**20


def test_an_unwritable_folder_is_found_before_any_work(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(export_files.tempfile, "mkstemp", refuse)
    with pytest.raises(ValueError) as err:
        export("hardnet39ds", "py", tmp_path / "a.py", latency="none")
    assert str(err.value) == (f"out: {str(tmp_path)!r} is not writable (Permission denied); expected a folder this "
                              "user may write to")


def test_export_at_hxw_traces_that_shape_and_states_it(tmp_path):
    """A non-square size that is not a multiple of the stride: the cost figures, the latency line and
    the traced ONNX example all use it; the ONNX graph still takes other sizes."""
    cfg = random_config(4)
    r, m = cfg.reduction, (4 if cfg.stem.type == "space_to_depth" else 1)
    h, w = -(-(2 * r + 5) // m) * m, -(-(3 * r + 3) // m) * m
    py = export(cfg, "py", tmp_path / "m.py", resolution=f"{h}x{w}", latency="predicted:v100")
    doc = " ".join(ast.get_docstring(ast.parse(py.read_text())).split())
    assert f"Cost at 1x{cfg.in_channels}x{h}x{w}" in doc and f"{h}x{w}" in doc.split("Latency:")[1]
    import onnx

    model = nas.build_model(cfg).eval()
    data = export_bytes(cfg, "onnx", metadata={"resolution": f"{h}x{w}"}, state_dict=model.state_dict())
    meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert json.loads(meta["hardnas_metadata"])["resolution"] == f"{h}x{w}"
    x = torch.randn(1, cfg.in_channels, w, h)  # the transpose: the axes stay dynamic
    with torch.no_grad():
        want = model(x)
    assert float((_ort(data, x) - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))
