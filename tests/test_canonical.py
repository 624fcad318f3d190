"""Canonical configs are the official networks layer for layer, and official checkpoints load.

`tests/data/reference_layouts.json.gz` was recorded from the official implementations
(PingoLH/Pytorch-HarDNet ``hardnet.py``, Alibaba-MIIL/TResNet ``tresnet.py`` with inplace-ABN
replaced by an equivalent BatchNorm, torchvision's ResNet-50 layout): parameter count, state-dict
keys and shapes in order, and every ``nn.Conv2d`` call of a 224x224 forward pass in execution
order (in/out channels, kernel, stride, groups, padding, bias, input and output shapes).
"""

from __future__ import annotations

import pytest
import torch
from helpers import official_state_dict
from torch import nn

import nas

EXPECTED_PARAMS = {
    "hardnet39ds": 3_488_228,
    "hardnet68ds": 4_180_602,
    "hardnet68": 17_565_348,
    "hardnet85": 36_670_212,
    "tresnet_m": 31_389_032,
    "tresnet_l": 55_989_256,
    "tresnet_xl": 78_436_244,
    "resnet50": 25_557_032,
}
OFFICIAL_SOURCE = {name: "hardnet" for name in EXPECTED_PARAMS if name.startswith("hardnet")}
OFFICIAL_SOURCE.update({name: "tresnet" for name in EXPECTED_PARAMS if name.startswith("tresnet")}, resnet50="torchvision")

@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_parameter_count_to_the_unit(name, reference_layouts):
    model = nas.create_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert n == EXPECTED_PARAMS[name] == reference_layouts[name]["params"]
    assert nas.analyze(model.config).params == n


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_same_convolutions_in_same_execution_order(name, reference_layouts):
    model = nas.create_model(name).eval()
    calls = []

    def hook(m, inp, out):
        calls.append([m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups, m.padding[0],
                      m.bias is not None, list(inp[0].shape), list(out.shape)])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    expected = reference_layouts[name]["convs_224"]
    assert len(calls) == len(expected)
    for i, (ours, theirs) in enumerate(zip(calls, expected)):
        assert ours == theirs, f"conv #{i}: ours {ours} vs official {theirs}"


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_official_checkpoint_layout_loads(name, reference_layouts):
    sd = official_state_dict(reference_layouts[name])
    model = nas.create_model(name)
    report = nas.load_reference_weights(model, sd)
    assert report.ok, str(report)
    ours = model.state_dict()
    source = report.source
    assert source == OFFICIAL_SOURCE[name]
    # the first conv and the classifier land where they belong
    first_key = reference_layouts[name]["state_dict"][0][0]
    torch.testing.assert_close(ours["stem.conv1.conv.weight"], sd[first_key])
    fc_w = [k for k, _ in reference_layouts[name]["state_dict"] if k.endswith("weight")][-1]
    torch.testing.assert_close(ours["head.fc.weight"], sd[fc_w])
    if source == "tresnet":
        # inplace-ABN scale |gamma| + eps becomes our BatchNorm gamma
        torch.testing.assert_close(ours["stem.conv1.bn.weight"], sd["body.conv1.1.weight"].abs() + 1e-5)
        torch.testing.assert_close(ours["stages.1.blocks.0.shortcut.proj.conv.weight"],
                                   sd["body.layer2.0.downsample.1.0.weight"])
        torch.testing.assert_close(ours["stages.2.blocks.0.se_mid.fc1.weight"], sd["body.layer3.0.se.fc1.weight"])
    else:
        torch.testing.assert_close(ours["stem.conv1.bn.weight"], sd[first_key.replace("conv.weight", "norm.weight")
                                                                     if source == "hardnet" else "bn1.weight"])


def test_wrapped_and_dataparallel_checkpoints(reference_layouts):
    sd = official_state_dict(reference_layouts["hardnet39ds"])
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    report = nas.load_reference_weights(nas.create_model("hardnet39ds"), wrapped)
    assert report.ok and report.source == "hardnet"


def test_mismatched_checkpoint_is_reported_and_model_untouched(reference_layouts):
    sd = official_state_dict(reference_layouts["hardnet68"])
    model = nas.create_model("hardnet85")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"checkpoint does not fit this model: .*mismatched: stem\.conv1\.conv"):
        nas.load_reference_weights(model, sd)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    report = nas.load_reference_weights(model, sd, strict=False)
    assert not report.ok and report.mismatched and report.loaded > 0


def test_truncated_and_extended_checkpoints(reference_layouts):
    layout = reference_layouts["resnet50"]
    sd = official_state_dict(layout)
    del sd["fc.weight"], sd["fc.bias"]
    report = nas.load_reference_weights(nas.create_model("resnet50"), sd, strict=False)
    assert report.missing == ["head.fc.weight (fc.weight)", "head.fc.bias (fc.bias)"]
    sd = official_state_dict(layout)
    sd["extra.weight"] = torch.zeros(3)
    report = nas.load_reference_weights(nas.create_model("resnet50"), sd, strict=False)
    assert report.unexpected == ["extra.weight"]


def test_unknown_layout_and_source():
    model = nas.create_model("hardnet39ds")
    with pytest.raises(ValueError, match="layout not recognised .* known sources: nas, hardnet, tresnet, torchvision"):
        nas.load_reference_weights(model, {"foo.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="source: 'keras' is not allowed"):
        nas.load_reference_weights(model, model.state_dict(), source="keras")
    with pytest.raises(ValueError, match="expected a mapping of tensor names to tensors"):
        nas.load_reference_weights(model, {"a": 1})


def test_own_state_dict_round_trips():
    a, b = nas.create_model("tresnet_m"), nas.create_model("tresnet_m")
    report = nas.load_reference_weights(b, a.state_dict())
    assert report.source == "nas" and report.ok
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))
