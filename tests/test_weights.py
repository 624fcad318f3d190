"""Official checkpoints are matched by name, not by the order of their keys."""

from __future__ import annotations

import gzip
import json
from importlib import resources

import pytest
import torch
from helpers import official_state_dict

import nas
from nas.sampling import random_config


def test_shipped_key_lists_are_the_recorded_official_layouts(reference_layouts):
    shipped = json.loads(gzip.decompress(
        resources.files("search_spaces").joinpath("official_keys.json.gz").read_bytes()))
    assert sorted(shipped) == sorted(reference_layouts) == nas.list_models()
    for name, layout in reference_layouts.items():
        assert shipped[name]["keys"] == [k for k, _ in layout["state_dict"]]


@pytest.mark.parametrize("name", ["hardnet39ds", "tresnet_m", "resnet50"])
def test_key_order_does_not_matter(name, reference_layouts):
    sd = official_state_dict(reference_layouts[name])
    in_order, shuffled = nas.create_model(name), nas.create_model(name)
    nas.load_reference_weights(in_order, sd)
    keys = sorted(sd)  # as a safetensors file stores them
    report = nas.load_reference_weights(shuffled, {k: sd[k] for k in keys})
    assert report.ok and report.pairing == f"by official name map ({name})"
    for key, value in in_order.state_dict().items():
        assert torch.equal(value, shuffled.state_dict()[key]), key


def test_a_gap_in_the_middle_names_the_missing_module(reference_layouts):
    sd = official_state_dict(reference_layouts["resnet50"])
    for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        del sd[f"layer1.0.bn1.{suffix}"]
    model = nas.create_model("resnet50")
    with pytest.raises(ValueError, match=r"4 missing: stages\.0\.blocks\.0\.conv1\.bn\.weight \(layer1\.0\.bn1\.weight\)"):
        nas.load_reference_weights(model, sd)
    report = nas.load_reference_weights(model, sd, strict=False)
    assert len(report.missing) == 4 and all("layer1.0.bn1." in m for m in report.missing)
    assert not report.unexpected and not report.mismatched
    assert report.loaded == sum(1 for k in sd if not k.endswith("num_batches_tracked"))
    torch.testing.assert_close(model.state_dict()["head.fc.weight"], sd["fc.weight"])


def test_override_of_the_head_still_uses_the_name_map(reference_layouts):
    sd = official_state_dict(reference_layouts["hardnet68"])
    model = nas.create_model("hardnet68", num_classes=10)
    report = nas.load_reference_weights(model, sd, strict=False)
    assert report.pairing == "by official name map (hardnet68)"
    assert report.mismatched == [m for m in report.mismatched if m.startswith("head.fc")] and len(report.mismatched) == 1
    assert report.loaded == sum(1 for k in sd if not k.endswith("num_batches_tracked")) - 2


def test_own_checkpoints_match_by_name_in_any_order():
    a = nas.build_model(random_config(3))
    b = nas.build_model(random_config(3))
    sd = a.state_dict()
    report = nas.load_reference_weights(b, dict(reversed(list(sd.items()))))
    assert report.ok and report.pairing == "by name"
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    del sd[next(iter(sd))]
    sd["stem.extra.weight"] = torch.zeros(1)
    report = nas.load_reference_weights(nas.build_model(random_config(3)), sd, strict=False)
    assert report.missing and report.unexpected == ["stem.extra.weight"]


def test_non_canonical_config_falls_back_to_checkpoint_order(reference_layouts):
    sd = official_state_dict(reference_layouts["hardnet39ds"])
    config = nas.get_config("hardnet39ds")
    model = nas.build_model(config.__class__(**{**config.__dict__, "in_channels": 4}))
    report = nas.load_reference_weights(model, sd, strict=False)
    assert report.pairing.startswith("by position")
    assert "matched by position" in str(report)
    assert report.mismatched and report.mismatched[0].startswith("stem.conv1.conv")
