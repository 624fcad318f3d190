"""``python -m nas.describe NAME|CONFIG.json [...]``: params, MACs, CIO and MoC per stage and in total.

Several models can be given to compare them side by side, e.g.
``python -m nas.describe hardnet68 resnet50 --resolution 1080x1920`` (height x width; 1024 is square).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from .cli import ArgumentParser, resolve_config, run
from .cost import CostReport, analyze
from .resolution import resolution_arg

__all__ = ["cli", "format_report", "main"]


def _m(x: float) -> str:
    return f"{x / 1e6:,.2f}M"


def _g(x: float) -> str:
    return f"{x / 1e9:,.3f}G"


def format_report(name: str, report: CostReport, layers: bool = False) -> str:
    """A human-readable per-stage (or per-layer) table with totals."""
    h, w = report.input_hw
    head = f"{name}  arch_id={report.arch_id}  input {report.batch}x{h}x{w} (batch x height x width)"
    lines = [head, f"{'part':<28}{'params':>12}{'MACs':>12}{'CIO':>12}{'MoC':>8}  output"]
    rows: list[Any] = report.layers if layers else report.by_stage()
    for r in rows:
        if layers and not (r.params or r.macs or r.cio):
            continue
        shape = "x".join(str(d) for d in r.out_shape[1:])
        lines.append(f"{r.name:<28}{_m(r.params):>12}{_g(r.macs):>12}{_m(r.cio):>12}{r.moc:>8.1f}  {shape}")
    lines.append(f"{'total':<28}{_m(report.params):>12}{_g(report.macs):>12}{_m(report.cio):>12}{report.moc:>8.1f}")
    lines.append(
        f"MACs: {_g(report.macs)} conv+linear, {_g(report.thop_macs)} as thop counts (+BatchNorm, pooling); "
        f"CIO {report.cio:,} elements = {report.cio_bytes / 2**20:,.1f} MiB at {report.bytes_per_element} B/element"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m nas.describe", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="NAME|CONFIG", help="canonical model name or JSON/YAML config file")
    p.add_argument("--resolution", type=resolution_arg, default=224,
                   help="input size: 224 (square) or HxW, height x width, e.g. 1080x1920 (default 224)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--layers", action="store_true", help="one row per layer instead of per stage")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = p.parse_args(argv)
    reports = []
    for spec in args.models:
        cfg = resolve_config(spec)
        reports.append((cfg.name or spec, analyze(cfg, args.resolution, args.batch)))
    if args.json:
        out = []
        for name, r in reports:
            d = {"name": name, **r.summary(), "stages": [
                {"name": s.name, "params": s.params, "macs": s.macs, "cio": s.cio, "moc": s.moc,
                 "out_shape": list(s.out_shape)} for s in r.by_stage()]}
            if args.layers:
                d["layers"] = [{"name": x.name, "op": x.op, "in_shape": list(x.in_shape), "out_shape": list(x.out_shape),
                                "params": x.params, "macs": x.macs, "cio": x.cio, "cio_bytes": x.cio_bytes, "moc": x.moc}
                               for x in r.layers]
            out.append(d)
        print(json.dumps(out if len(out) > 1 else out[0], indent=2))
        return 0
    print("\n\n".join(format_report(name, r, args.layers) for name, r in reports))
    if len(reports) > 1:
        base_name, base = reports[-1]
        print(f"\n{'model':<16}{'params':>10}{'GMACs':>9}{'CIO':>10}{'MoC':>7}   ratios vs {base_name} (params/MACs/CIO)")
        for name, r in reports:
            print(f"{name:<16}{_m(r.params):>10}{r.macs / 1e9:>9.3f}{_m(r.cio):>10}{r.moc:>7.1f}   "
                  f"{r.params / base.params:.2f} / {r.macs / base.macs:.2f} / {r.cio / base.cio:.2f}")
    return 0


def cli() -> None:
    """Console-script entry point."""
    run(main, "nas.describe")


if __name__ == "__main__":
    cli()
