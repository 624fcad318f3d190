"""The genotype: validation, serialisation round-trips and arch_id stability."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from nas import ArchConfig, HeadConfig, StageConfig, StemConfig, get_config, list_models
from nas.config import parse_activation
from nas.sampling import random_config

HARD = StageConfig(block="hard", depth=4, growth_rate=8, transition=32)
RES = StageConfig(block="basic", depth=2, width=16)


@pytest.mark.parametrize(
    ("make", "field", "value"),
    [
        (lambda: StemConfig(type="vgg"), "stem.type", "'vgg'"),
        (lambda: StemConfig(type="resnet", channels=(32, 64)), "stem.channels", "[32, 64]"),
        (lambda: StemConfig(channels=(32, 0)), "stem.channels[1]", "0"),
        (lambda: StemConfig(type="resnet", channels=(64,), depthwise=True), "stem.depthwise", "True"),
        (lambda: StemConfig(activation="swish"), "activation", "'swish'"),
        (lambda: StageConfig(block="dense"), "block", "'dense'"),
        (lambda: dataclasses.replace(HARD, depth=0), "depth", "0"),
        (lambda: dataclasses.replace(HARD, growth_rate=0), "growth_rate", "0"),
        (lambda: dataclasses.replace(HARD, weight_factor=-1.0), "weight_factor", "-1.0"),
        (lambda: dataclasses.replace(HARD, weight_factor=float("nan")), "weight_factor", "nan"),
        (lambda: dataclasses.replace(HARD, link_rule="random"), "link_rule", "'random'"),
        (lambda: dataclasses.replace(HARD, keep_base=1), "keep_base", "1"),
        (lambda: dataclasses.replace(HARD, downsample="strided"), "downsample", "'strided'"),
        (lambda: dataclasses.replace(HARD, se="mid"), "se", "'mid'"),
        (lambda: dataclasses.replace(HARD, transition=0, se="transition"), "se", "'transition'"),
        (lambda: dataclasses.replace(HARD, width=16), "width", "16"),
        (lambda: dataclasses.replace(HARD, transition_dropout=1.0), "transition_dropout", "1.0"),
        (lambda: dataclasses.replace(HARD, activation="leaky_relu:2"), "activation", "'leaky_relu:2'"),
        (lambda: dataclasses.replace(HARD, activation="relu:0.1"), "activation", "'relu:0.1'"),
        (lambda: dataclasses.replace(RES, width=0), "width", "0"),
        (lambda: dataclasses.replace(RES, downsample="maxpool"), "downsample", "'maxpool'"),
        (lambda: dataclasses.replace(RES, growth_rate=8), "growth_rate", "8"),
        (lambda: dataclasses.replace(RES, shortcut="identity"), "shortcut", "'identity'"),
        (lambda: dataclasses.replace(RES, post_activation="tanh"), "post_activation", "'tanh'"),
        (lambda: dataclasses.replace(RES, se_reduction=0), "se_reduction", "0"),
        (lambda: HeadConfig(num_classes=0), "head.num_classes", "0"),
        (lambda: HeadConfig(dropout=-0.1), "head.dropout", "-0.1"),
        (lambda: ArchConfig(stages=()), "stages", "()"),
        (lambda: ArchConfig(stages=(HARD,), in_channels=0), "in_channels", "0"),
    ],
)
def test_bad_values_name_field_value_and_allowed(make, field, value):
    with pytest.raises(ValueError) as err:
        make()
    msg = str(err.value)
    assert msg.startswith(f"{field}:") or f" {field}:" in msg or f".{field}:" in msg, msg
    assert value in msg and "expected" in msg, msg
    assert "\n" not in msg


def test_from_dict_names_unknown_and_nested_keys():
    good = get_config("hardnet68").to_dict()
    bad = json.loads(json.dumps(good))
    bad["stages"][2]["growth"] = 3
    with pytest.raises(ValueError, match=r"stages\[2\]\.growth: 3 is not allowed; expected no such key; known keys: .*growth_rate"):
        ArchConfig.from_dict(bad)
    bad = json.loads(json.dumps(good))
    bad["stages"][1]["weight_factor"] = 0
    with pytest.raises(ValueError, match=r"stages\[1\]\.weight_factor: 0\.0 is not allowed"):
        ArchConfig.from_dict(bad)
    with pytest.raises(ValueError, match=r"^colour: 'red'"):
        ArchConfig.from_dict({**good, "colour": "red"})
    with pytest.raises(ValueError, match="not valid JSON"):
        ArchConfig.from_json("{")


def test_activation_specs():
    assert parse_activation("leaky_relu") == ("leaky_relu", 0.01)
    assert parse_activation("leaky_relu:0.001") == ("leaky_relu", 0.001)
    assert parse_activation("relu6") == ("relu6", None)


@pytest.mark.parametrize("name", list_models())
def test_canonical_round_trips(name, tmp_path):
    cfg = get_config(name)
    assert ArchConfig.from_dict(cfg.to_dict()) == cfg
    assert ArchConfig.from_json(cfg.to_json()) == cfg
    assert ArchConfig.from_yaml(cfg.to_yaml()) == cfg
    for suffix in (".json", ".yaml"):
        assert ArchConfig.load(cfg.save(tmp_path / f"c{suffix}")) == cfg


@pytest.mark.parametrize("seed", range(50))
def test_random_configs_round_trip_with_same_id(seed):
    cfg = random_config(seed)
    again = ArchConfig.from_json(cfg.to_json())
    assert again == cfg and again.arch_id == cfg.arch_id


def test_arch_id_is_pinned_for_canonical_models():
    # arch_id keys caches and studies across runs: it must not drift between releases
    assert get_config("hardnet68").arch_id == "8b5e70783171"
    assert get_config("resnet50").arch_id == "abf71ca6c5a7"


def test_arch_id_ignores_name_and_int_float_spelling():
    cfg = get_config("hardnet68")
    assert cfg.replace(name="mine").arch_id == cfg.arch_id
    stages = list(cfg.stages)
    stages[0] = dataclasses.replace(stages[0], weight_factor=2)
    as_int = cfg.replace(stages=tuple(stages))
    stages[0] = dataclasses.replace(stages[0], weight_factor=2.0)
    assert as_int.arch_id == cfg.replace(stages=tuple(stages)).arch_id


def _mutations(cfg: ArchConfig) -> list[ArchConfig]:
    """One-field changes to every stage field, the stem and the head."""
    out = [cfg.replace(head=HeadConfig(cfg.head.num_classes + 1, cfg.head.dropout)),
           cfg.replace(head=HeadConfig(cfg.head.num_classes, 0.3)),
           cfg.replace(stem=dataclasses.replace(cfg.stem, channels=tuple(c + 8 for c in cfg.stem.channels))),
           cfg.replace(in_channels=1)]
    s = cfg.stages[0]
    changes = {"depth": s.depth + 1, "activation": "silu" if s.activation != "silu" else "gelu"}
    if s.se != "none":
        changes.update(se_reduction=s.se_reduction + 1, se_min_channels=s.se_min_channels + 1)
    if s.block != "hard":
        changes.update(post_activation="gelu" if s.post_activation != "gelu" else "silu")
    if s.block == "hard":
        changes.update(growth_rate=s.growth_rate + 2, weight_factor=s.weight_factor + 0.05,
                       link_rule="dense" if s.link_rule != "dense" else "chain", keep_base=not s.keep_base,
                       depthwise=not s.depthwise, transition=s.transition + 8, transition_dropout=0.25)
    else:
        changes.update(width=s.width + 8, shortcut="conv" if s.shortcut == "avgpool" else "avgpool")
    for key, value in changes.items():
        out.append(cfg.replace(stages=(dataclasses.replace(s, **{key: value}),) + cfg.stages[1:]))
    return out


@pytest.mark.parametrize("seed", range(10))
def test_any_change_gives_another_arch_id(seed):
    cfg = random_config(seed)
    ids = [m.arch_id for m in _mutations(cfg)]
    assert cfg.arch_id not in ids
    assert len(set(ids)) == len(ids)


def test_reduction_and_resolution_check():
    cfg = get_config("hardnet68")
    assert cfg.reduction == 32 and cfg.stage_reductions() == [4, 8, 8, 16, 32]
    assert cfg.check_resolution(224) == (224, 224) and cfg.check_resolution(100) == (100, 100)
    assert cfg.check_resolution("1080x1920") == (1080, 1920) == cfg.check_resolution((1080, 1920))
    for bad in (31, "31x100", 0, -32, 2.5, True, "big"):
        with pytest.raises(ValueError, match="resolution"):
            cfg.check_resolution(bad)


def test_random_configs_are_diverse():
    rng = random.Random(0)
    cfgs = [random_config(rng) for _ in range(200)]
    assert {c.stem.type for c in cfgs} == {"hardnet", "resnet", "deep", "space_to_depth"}
    stages = [s for c in cfgs for s in c.stages]
    assert {s.block for s in stages} == {"hard", "basic", "bottleneck"}
    assert {s.link_rule for s in stages if s.block == "hard"} == {"harmonic", "log", "dense", "chain"}
    assert {s.downsample for s in stages} == {"none", "maxpool", "avgpool", "dwconv", "conv", "blur"}
    assert {s.se for s in stages} == {"none", "output", "transition", "mid"}


def test_fields_a_network_ignores_do_not_change_its_id():
    hard = StageConfig(block="hard", depth=4, growth_rate=8)
    assert dataclasses.replace(hard, post_activation="gelu", shortcut="avgpool") == hard
    assert dataclasses.replace(hard, se_reduction=16, se_min_channels=3) == hard  # no SE
    res = StageConfig(block="bottleneck", depth=2, width=16)
    assert dataclasses.replace(res, weight_factor=1.3, link_rule="dense") == res
    with_se = dataclasses.replace(res, se="mid")
    assert dataclasses.replace(with_se, se_reduction=16) != with_se


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_binary_garbage_names_the_file(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(bytes([0xF9, 0x13, 0x00, 0xC3]) * 64)
    with pytest.raises(ValueError) as err:
        ArchConfig.load(path)
    assert str(err.value) == (f"config {str(path)!r}: not UTF-8 text (byte 0xf9 at offset 0); "
                              "expected a JSON or YAML config file")
    with pytest.raises(ValueError, match=f"config: {str(tmp_path)!r} does not exist or is not a file"):
        ArchConfig.load(tmp_path)
