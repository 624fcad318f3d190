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
        # every value of a domain must be one its config field accepts (the config's own validation)
        (lambda d: d["stages"][0]["hard"].update(growth_rate={"low": -8, "high": 12}),
         "space stages[0].hard.growth_rate.low: -8 is not allowed; expected an integer in [1, 4096]"),
        (lambda d: d["stages"][0]["hard"].update(depth=[2, 600]),
         "space stages[0].hard.depth: 600 is not allowed; expected an integer in [1, 512]"),
        (lambda d: d["stages"][0]["hard"].update(weight_factor={"low": 0.0, "high": 1.8}),
         "space stages[0].hard.weight_factor.low: 0.0 is not allowed; expected a number in (0.0, 4.0]"),
        (lambda d: d["stages"][0]["hard"].update(growth_rate={"low": 4, "high": 12.5}),
         "space stages[0].hard.growth_rate.low: 4.0 is not allowed; expected an integer in [1, 4096]"),
        (lambda d: d["stages"][0]["hard"].update(downsample=["maxpool", "conv3"]),
         "space stages[0].hard.downsample: 'conv3' is not allowed; expected one of none, maxpool"),
        (lambda d: d["stages"][0]["hard"].update(width=[8]),
         "space stages[0].hard.width: 8 is not allowed; expected 0 for a 'hard' block"),
        (lambda d: d["stages"][0]["basic"].update(se=["none", "transition"]),
         "space stages[0].basic.se: 'transition' is not allowed; expected one of none, output"),
        (lambda d: d["stages"][0]["basic"].update(activation="swish"),
         "space stages[0].basic.activation: 'swish' is not allowed; expected one of relu"),
        (lambda d: d["stem"].update(type=["hardnet", "vgg"]), "space stem.type: 'vgg' is not allowed; expected one of"),
        (lambda d: d["stem"]["channels"].update(resnet=[[16, 32]]),
         "space stem.channels.resnet: [16, 32] is not allowed; expected 1 channel count(s) for a 'resnet' stem"),
        (lambda d: d["stem"]["channels"].update(vgg=[[16]]), "space stem.channels.vgg: 'vgg' is not allowed"),
        (lambda d: d.update(head={"dropout": [0.0, 1.5]}),
         "space head.dropout: 1.5 is not allowed; expected a number in [0.0, 1.0)"),
        (lambda d: d["shared"].update(link_rule=["harmonic", "random"]),
         "space shared.link_rule: 'random' is not allowed; expected one of harmonic, log, dense, chain"),
        (lambda d: d["shared"].update(colour=["red"]),
         "space shared.colour: ['red'] is not allowed; expected a key that some field refers to with 'shared' "
         "(used: link_rule)"),
        (lambda d: d.update(shared=["link_rule"]), "space shared: ['link_rule'] is not allowed; expected a mapping"),
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


def test_a_folder_and_binary_garbage_name_the_path(tmp_path):
    with pytest.raises(ValueError) as err:
        load_space(tmp_path)
    assert str(err.value) == (f"space: {str(tmp_path)!r} is a folder; expected a built-in space (hardnet, hybrid, "
                              "tresnet) or a YAML space file")
    garbage = tmp_path / "space.yaml"
    garbage.write_bytes(bytes([0xF9, 0x00, 0xFF]) * 100)
    with pytest.raises(ValueError) as err:
        load_space(garbage)
    assert str(err.value) == (f"space {str(garbage)!r}: not UTF-8 text (byte 0xf9 at offset 0); "
                              "expected a YAML space file")
    control = tmp_path / "control.yaml"
    control.write_bytes(b"name: x\x01\x02")
    with pytest.raises(ValueError, match=f"space {control}: not valid YAML"):
        load_space(control)


def test_tiny_space_samples_small_networks():
    space = load_space(TINY)
    assert isinstance(space, SearchSpace) and space.seeds() == {}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        t = study.ask()
        cfg = space.sample(t)
        assert cfg.reduction in (8, 16) and nas.analyze(cfg, 64).params < 200_000
        study.tell(t, 0.0)
