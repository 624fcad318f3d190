"""``python -m nas.export NAME|CONFIG [--format py]``: export an architecture so it leaves the tool clean.

Examples::

    python -m nas.export hardnet68                                  # ./hardnet68.py, imports only torch
    python -m nas.export hardnet68 --format onnx --deploy -o out/   # BN folded, checked with onnxruntime
    python -m nas.export my_config.yaml --format torchscript --weights ckpt.pt
    python -m nas.export --study-name hardnet-30ms-measured-train-digits --best --format py
    python -m nas.export --storage sqlite:///runs/nas.db --study-name S --trial 41 --format json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ..cli import ArgumentParser, run
from ..resolution import resolution_arg
from .formats import FORMATS, SUFFIXES, ExportError


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m nas.export", description=__doc__.splitlines()[0])
    p.add_argument("source", nargs="?", metavar="NAME|CONFIG", help="canonical model name or JSON/YAML config file")
    p.add_argument("--format", default=None,
                   help=f"one of {', '.join(FORMATS)} (default: from the --out suffix, else py)")
    p.add_argument("-o", "--out", default=None,
                   help="output file, or an existing folder (default: <name>[-deploy].<suffix> in the current folder)")
    p.add_argument("--deploy", action="store_true", help="fold BatchNorm into the convs (py, onnx, torchscript)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--weights", default=None, metavar="CKPT",
                   help="checkpoint to ship (.safetensors or a torch.save state dict, read with weights_only=True); "
                        "embedded in onnx/torchscript, written next to py/json/yaml as .safetensors")
    p.add_argument("--latency", default="auto",
                   help="latency in the docstring: auto (a trial's own figure, else measured), measured, "
                        "predicted:<device> (python -m nas.latency --list; your own: runs/profiles/<device>.yaml) or none")
    p.add_argument("--resolution", type=resolution_arg, default=None,
                   help="input size of the cost figures, the latency and the traced example: 224 or HxW "
                        "(height x width, e.g. 1080x1920; default 224)")
    p.add_argument("--runtime", default="eager",
                   help="runtime a measured latency runs under: eager, compile or onnxruntime (default eager)")
    g = p.add_argument_group("a trial of a study (instead of NAME|CONFIG)")
    g.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/nas.db) or journal:PATH")
    g.add_argument("--study-name", default=None, help="the study (may be left out when the storage holds one)")
    g.add_argument("--trial", type=int, default=None, help="trial number")
    g.add_argument("--best", action="store_true", help="the most accurate completed trial within the budget")
    g.add_argument("--budget", default=None, help="latency budget for --best, e.g. 30ms (default: the study's)")
    return p


def _format(requested: str | None, out: str | None) -> str:
    if requested is not None:
        if requested not in FORMATS:
            raise ValueError(f"format: {requested!r} is not allowed; expected one of {', '.join(FORMATS)}")
        return requested
    suffix = Path(out).suffix.lower() if out else ""
    for fmt, suffixes in SUFFIXES.items():
        if suffix in suffixes:
            return fmt
    return "py"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..search.settings import parse_budget
    from .api import export

    fmt = _format(args.format, args.out)
    budget_ms = parse_budget(args.budget) if args.budget is not None else None
    try:
        path = export(args.source, fmt, args.out, deploy=args.deploy, force=args.force, weights=args.weights,
                      latency=args.latency, resolution=args.resolution, storage=args.storage,
                      study_name=args.study_name, trial=args.trial, best=args.best, budget_ms=budget_ms,
                      runtime=args.runtime)
    except ExportError as err:
        print(f"nas.export: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size:,} bytes, {fmt}{', BatchNorm folded' if args.deploy else ''})")
    weights = path.with_suffix(".safetensors")
    if args.weights and fmt not in ("onnx", "torchscript") and weights.exists():
        print(f"wrote {weights} ({weights.stat().st_size:,} bytes, the weights for it)")
    return 0


def cli() -> None:
    """Console-script entry point."""
    run(main, "nas.export")


if __name__ == "__main__":
    cli()
