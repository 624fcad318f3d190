"""Our canonical models compute what the official implementations compute, not just the same convs.

`tests/data/reference_logits.json.gz` holds logits of the OFFICIAL networks (Pytorch-HarDNet,
Alibaba-MIIL TResNet, torchvision ResNet-50), each loaded with the deterministic state dict
`deterministic_state_dict` builds from its recorded key names and shapes, on the input
`deterministic_input` (see tests/data/README.md and tests/data/record_reference_logits.py, which
imports both functions from here). This pins everything between the convs: activations and their
slopes, where there is none, concatenation order, SpaceToDepth channel order, blur padding,
shortcut pooling, SE placement, inplace-ABN's ``|gamma| + eps`` scale.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from pathlib import Path

import pytest
import torch

import nas

DATA = Path(__file__).parent / "data"
#: input of the recorded forward passes (every model accepts a multiple of its stride 32)
INPUT_SHAPE = (2, 3, 64, 64)
INPUT_SEED = 20240229
#: logits written to the data file per sample (the rest enter through sums and projections)
N_HEAD = 50
N_PROJ = 4
PROJ_SEED = 7
#: tensors not drawn: step counters are 0, fixed blur filters keep the model's own values
_SKIP_SUFFIXES = ("filt",)
#: the last norm of each residual branch (TResNet basic / bottleneck blocks, torchvision bottlenecks)
#: gets a small scale, as both official inits do (zero-init residual), so residual sums stay O(1)
_LAST_NORM_OF_BRANCH = re.compile(r"^body\.layer[12]\.\d+\.conv2\.1\.weight$|\.conv3\.1\.weight$|^layer\d\.\d+\.bn3\.weight$")

#: every canonical model; the largest (tresnet_xl) takes about 2.5 s on one CPU thread, so none is marked slow
MODELS = ["hardnet39ds", "hardnet68ds", "hardnet68", "hardnet85", "tresnet_m", "tresnet_l", "tresnet_xl", "resnet50"]


def _generator(key: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def deterministic_tensor(key: str, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """A reproducible tensor for one state-dict entry, scaled by its role so activations stay O(1)."""
    shape = tuple(shape)
    g = _generator(key)
    suffix = key.rpartition(".")[2]
    if suffix == "num_batches_tracked":
        return torch.tensor(0, dtype=torch.long)
    if suffix == "running_var":
        return torch.rand(shape, generator=g) + 0.5  # U(0.5, 1.5)
    if suffix == "running_mean":
        return (torch.rand(shape, generator=g) - 0.5) * 0.2  # U(-0.1, 0.1)
    if suffix == "bias":
        return (torch.rand(shape, generator=g) - 0.5) * 0.2
    if suffix == "weight" and len(shape) == 1:  # norm scale: |gamma| in U(0.5, 1.5), a fifth negative
        magnitude = torch.rand(shape, generator=g) + 0.5
        if _LAST_NORM_OF_BRANCH.search(key):
            magnitude = magnitude * 0.2  # U(0.1, 0.3)
        sign = torch.where(torch.rand(shape, generator=g) < 0.2, -1.0, 1.0)
        return magnitude * sign
    if suffix == "weight":  # conv (4-D) or linear (2-D): He normal over fan-in
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
    raise ValueError(f"{key}: no rule for a tensor called {suffix!r} of shape {shape}")


def deterministic_state_dict(layout: list[list]) -> dict[str, torch.Tensor]:
    """The state dict for a recorded ``[[key, shape], ...]`` layout, keys in order (blur filters left out)."""
    return {key: deterministic_tensor(key, shape) for key, shape in layout
            if key.rpartition(".")[2] not in _SKIP_SUFFIXES}


def deterministic_input() -> torch.Tensor:
    return torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(INPUT_SEED))


def summarize_logits(logits: torch.Tensor) -> dict[str, list]:
    """What the data file keeps of a ``(batch, classes)`` logit tensor: the first logits, sums, projections."""
    x = logits.detach().double()
    proj = torch.randn(x.shape[1], N_PROJ, generator=torch.Generator().manual_seed(PROJ_SEED), dtype=torch.float64)
    return {
        "head": x[:, :N_HEAD].tolist(),
        "sum": x.sum(1).tolist(),
        "abs_sum": x.abs().sum(1).tolist(),
        "sq_sum": (x * x).sum(1).tolist(),
        "proj": (x @ proj).tolist(),
    }


def checksum(tensors) -> float:
    """Sum of absolute values: detects a change of torch's CPU generator before it reads as a model bug."""
    return float(sum(t.double().abs().sum() for t in tensors))


@pytest.fixture(scope="module")
def reference_logits() -> dict:
    with gzip.open(DATA / "reference_logits.json.gz", "rt") as f:
        return json.load(f)


def test_data_matches_this_generator(reference_logits):
    meta = reference_logits["meta"]
    assert meta["input_shape"] == list(INPUT_SHAPE) and meta["input_seed"] == INPUT_SEED
    assert meta["n_head"] == N_HEAD and meta["n_proj"] == N_PROJ and meta["proj_seed"] == PROJ_SEED
    assert checksum([deterministic_input()]) == pytest.approx(meta["input_checksum"], rel=1e-12), \
        "torch's CPU random generator no longer draws the recorded input: re-record (tests/data/README.md)"
    assert set(reference_logits["models"]) == set(MODELS) == set(nas.list_models())


def check_logits(name: str, reference_logits: dict, reference_layouts: dict) -> None:
    """Load the deterministic weights into our model and compare its logits with the official ones."""
    record = reference_logits["models"][name]
    sd = deterministic_state_dict(reference_layouts[name]["state_dict"])
    assert checksum(sd.values()) == pytest.approx(record["weights_checksum"], rel=1e-9), \
        "the deterministic weights differ from the recorded ones: re-record (tests/data/README.md)"
    model = nas.create_model(name).eval()
    report = nas.load_reference_weights(model, sd)
    assert report.ok, str(report)
    with torch.no_grad():
        ours = summarize_logits(model(deterministic_input()))
    theirs = record["logits"]
    scale = max(abs(v) for row in theirs["head"] for v in row)
    for field in ("head", "sum", "abs_sum", "sq_sum", "proj"):
        # sums over 1000 logits accumulate rounding: their tolerance grows with what they add up
        field_scale = {"head": scale, "sum": theirs["abs_sum"][0], "abs_sum": theirs["abs_sum"][0],
                       "sq_sum": theirs["sq_sum"][0], "proj": math.sqrt(theirs["sq_sum"][0])}[field]
        torch.testing.assert_close(torch.tensor(ours[field], dtype=torch.float64),
                                   torch.tensor(theirs[field], dtype=torch.float64),
                                   rtol=1e-4, atol=1e-4 * field_scale,
                                   msg=lambda m, field=field: f"{name} logits ({field}) differ from the official model's: {m}")


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_official(name, reference_logits, reference_layouts):
    check_logits(name, reference_logits, reference_layouts)
