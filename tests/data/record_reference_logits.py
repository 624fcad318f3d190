"""Record tests/data/reference_logits.json.gz from the OFFICIAL implementations (run once, by hand).

Nothing of the official code is in this repository: the script imports it from the folders given
on the command line (see tests/data/README.md for the commits used and how to lay them out):

    OMP_NUM_THREADS=1 python tests/data/record_reference_logits.py \\
        --hardnet /tmp/official/hardnet            # holds hardnet.py (PingoLH/Pytorch-HarDNet)
        --tresnet /tmp/official/tresnet            # holds src/models/tresnet/ (Alibaba-MIIL/TResNet)
        --torchvision /tmp/official/torchvision_models  # a package folder holding resnet.py (pytorch/vision)
        --shims /tmp/official/shims                # holds inplace_abn/ (eval-mode shim of the CUDA extension)

It first checks every official model against tests/data/reference_layouts.json.gz (parameter
count, state-dict keys and shapes, the nn.Conv2d calls of a 224x224 forward pass and their CIO), then records.
Weights and input come from `tests/test_reference_logits.py` (`deterministic_state_dict`,
`deterministic_input`), so the test rebuilds exactly what was fed to the official networks.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import sys
from pathlib import Path
from typing import Callable

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import test_reference_logits as T  # noqa: E402


def official_builders(args: argparse.Namespace) -> dict[str, Callable[[], torch.nn.Module]]:
    sys.path[:0] = [str(Path(args.shims).resolve()), str(Path(args.hardnet).resolve()), str(Path(args.tresnet).resolve())]
    tv_dir = Path(args.torchvision).resolve()
    sys.path.insert(0, str(tv_dir.parent))
    hardnet = importlib.import_module("hardnet")
    tresnet = importlib.import_module("src.models.tresnet.tresnet")
    resnet = importlib.import_module(f"{tv_dir.name}.resnet")
    params = {"num_classes": 1000, "remove_aa_jit": True}  # the JIT blur is CUDA/half only
    return {
        "hardnet39ds": lambda: hardnet.HarDNet(depth_wise=True, arch=39, pretrained=False),
        "hardnet68ds": lambda: hardnet.HarDNet(depth_wise=True, arch=68, pretrained=False),
        "hardnet68": lambda: hardnet.HarDNet(depth_wise=False, arch=68, pretrained=False),
        "hardnet85": lambda: hardnet.HarDNet(depth_wise=False, arch=85, pretrained=False),
        "tresnet_m": lambda: tresnet.TResnetM(params),
        "tresnet_l": lambda: tresnet.TResnetL(params),
        "tresnet_xl": lambda: tresnet.TResnetXL(params),
        "resnet50": lambda: resnet.resnet50(pretrained=False),
    }


def check_layout(name: str, model: torch.nn.Module, layout: dict) -> None:
    """The official model against reference_layouts.json.gz: params, state dict, 224x224 convs and CIO."""
    assert sum(p.numel() for p in model.parameters()) == layout["params"], f"{name}: parameter count"
    theirs = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert theirs == layout["state_dict"], f"{name}: the official state dict is not the recorded layout"
    calls, cio = [], [0]

    def hook(m, inp, out):
        calls.append([m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups, m.padding[0],
                      m.bias is not None, list(inp[0].shape), list(out.shape)])
        cio[0] += inp[0].numel() + out.numel()  # nn.Conv2d modules only: TResNet's blur is a bare F.conv2d

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    assert calls == layout["convs_224"], f"{name}: convolutions at 224x224"
    assert cio[0] == layout["cio_224_conv2d_only"], f"{name}: conv2d CIO at 224x224"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("hardnet", "tresnet", "torchvision", "shims"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--commits", default="", help="free text stored in the file, e.g. 'hardnet=<sha> tresnet=<sha> ...'")
    p.add_argument("--out", default=str(Path(__file__).parent / "reference_logits.json.gz"))
    args = p.parse_args()
    torch.set_num_threads(1)
    with gzip.open(Path(__file__).parent / "reference_layouts.json.gz", "rt") as f:
        layouts = json.load(f)
    x = T.deterministic_input()
    out = {"meta": {"input_shape": list(T.INPUT_SHAPE), "input_seed": T.INPUT_SEED, "n_head": T.N_HEAD,
                    "n_proj": T.N_PROJ, "proj_seed": T.PROJ_SEED, "input_checksum": T.checksum([x]),
                    "torch": torch.__version__, "official_commits": args.commits},
           "models": {}}
    for name, build in official_builders(args).items():
        model = build().eval()
        check_layout(name, model, layouts[name])
        sd = T.deterministic_state_dict(layouts[name]["state_dict"])
        result = model.load_state_dict(sd, strict=False)
        assert not result.unexpected_keys and all(k.endswith(".filt") for k in result.missing_keys), result
        with torch.no_grad():
            logits = model(x.clone())
        out["models"][name] = {"weights_checksum": T.checksum(sd.values()), "logits": T.summarize_logits(logits)}
        print(f"{name}: logits |max| {logits.abs().max():.3f}, mean {logits.mean():.4f}, std {logits.std():.4f}")
    with open(args.out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(out, separators=(",", ":")).encode())
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
