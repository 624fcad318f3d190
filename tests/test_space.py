"""Declarative spaces: canonical seeds are points, sampling round-trips, bad files are one-line errors."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

import nas
from nas.space import SearchSpace, list_spaces, load_space

TINY = Path(__file__).parent / "data" / "tiny_space.yaml"
optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_built_in_spaces_and_their_seeds():
    assert list_spaces() == ["hardnet", "hybrid", "tresnet"]
    assert sorted(load_space("hardnet").seeds()) == ["hardnet39ds", "hardnet68", "hardnet68ds", "hardnet85"]
    assert sorted(load_space("tresnet").seeds()) == ["resnet50", "tresnet_l", "tresnet_m", "tresnet_xl"]
    assert sorted(load_space("hybrid").seeds()) == nas.list_models()


@pytest.mark.parametrize("name", ["hardnet", "tresnet", "hybrid"])
def test_every_seed_enqueues_and_samples_back_to_itself(name):
    space = load_space(name)
    study = optuna.create_study(directions=["maximize"])
    for seed_name, cfg in space.seeds().items():
        params, why = space.params_of(cfg)
        assert params is not None, why
        study.enqueue_trial(params)
        trial = study.ask()
        assert space.sample(trial).arch_id == cfg.arch_id, seed_name
        study.tell(trial, 0.0)


@pytest.mark.parametrize("name", ["hardnet", "tresnet", "hybrid"])
def test_samples_are_valid_points_of_their_space(name):
    space = load_space(name)
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        cfg = space.sample(trial)
        nas.analyze(cfg)  # buildable shapes at 224
        params, why = space.params_of(cfg)
        assert params is not None, why
        study.tell(trial, 0.0)


def test_points_outside_say_why():
    params, why = load_space("hardnet").params_of(nas.get_config("resnet50"))
    assert params is None and "stem.type='resnet' is outside the space" in why
    params, why = load_space("tresnet").params_of(nas.get_config("hardnet68"))
    assert params is None and "layout '.R.RR' is not one of .RRR" in why


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(colour="red"), "space colour: 'red' is not allowed; expected no such key"),
        (lambda d: d.update(layouts=[]), "space layouts: [] is not allowed"),
        (lambda d: d.update(layouts=[".X"]), "space layouts: '.X' is not allowed"),
        (lambda d: d["stages"][0]["hard"].update(growth=3), "space stages[0].hard.growth: 3 is not allowed; expected no such field"),
        (lambda d: d["stages"][0]["hard"].update(depth={"low": 5, "high": 2}), "space stages[0].hard.depth"),
        (lambda d: d["stages"][0].update(block=["dense"]), "space stages[0].block"),
        (lambda d: d["stages"][0]["hard"].update(keep_base="shared"), "space stages[0].hard.keep_base: 'shared' is not allowed; expected a key of 'shared'"),
        (lambda d: d["stem"].update(kernel=7), "space stem.kernel: 7 is not allowed; expected no such field"),
    ],
)
def test_bad_space_files_are_one_line(tmp_path, mutate, message):
    data = yaml.safe_load(TINY.read_text())
    mutate(data)
    path = _write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(ValueError) as err:
        load_space(path)
    assert message in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ValueError, match="space: 'nope' is neither a built-in space"):
        load_space("nope")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_space(_write(tmp_path, "a: [1,"))


def test_tiny_space_samples_small_networks():
    space = load_space(TINY)
    assert isinstance(space, SearchSpace) and space.seeds() == {}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        t = study.ask()
        cfg = space.sample(t)
        assert cfg.reduction in (8, 16) and nas.analyze(cfg, 64).params < 200_000
        study.tell(t, 0.0)
