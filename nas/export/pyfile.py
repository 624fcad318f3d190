"""The code generator: an `ArchConfig` as one readable PyTorch file that imports nothing but torch.

The file is the source of the module classes the network uses, copied from `nas.modules` with
`inspect.getsource` (their ``cost`` classmethods left out), then the network's construction spelled
out with literal numbers (channel counts, strides, each harmonic block's link lists): the recipes
of `nas.stems` and `nas.blocks` rendered as calls, so the exporter decides nothing the package does
not. It is formatted with black. Module names follow `nas.build_model` exactly, so the state dict
of the generated ``Net`` has the same keys, in the same order, as the in-package model: weights
move between the two with ``load_state_dict``.

A ``deploy`` file is the BatchNorm-folded network of `nas.fuse.fuse_model`: `ConvAct` (a conv
with a bias, no BatchNorm) stands in for every `ConvNormAct`, for inference.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
from typing import Any, Mapping

import torch
import yaml
from torch import nn

from .. import modules
from ..blocks import stage_recipe
from ..config import STAGE_DEFAULTS, ArchConfig, StageConfig
from ..cost import CostReport, analyze
from ..recipe import Recipe
from ..resolution import Resolution, canonical_resolution, format_resolution
from ..stems import stem_recipe

__all__ = ["compact_config", "export_resolution", "render_py"]



# --- the module classes, copied ----------------------------------------------------------------


def _qualify(cls: type) -> str:
    """How the file names a class: torch's layers as ``nn.X``, ours by their name."""
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.") else cls.__name__


def _without_cost(obj: Any) -> str:
    """The source of a class of `nas.modules` without its classmethods (its analytic cost)."""
    src = inspect.getsource(obj)
    cls = ast.parse(src).body[0]
    drop: set[int] = set()
    for node in getattr(cls, "body", []):
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Name) and d.id == "classmethod" for d in node.decorator_list):
            first = min(d.lineno for d in node.decorator_list)
            drop.update(range(first - 1, node.end_lineno))
    lines = src.splitlines()
    return "\n".join(ln for i, ln in enumerate(lines) if i not in drop).rstrip() + "\n"


def _activations_src(names: set[str]) -> str:
    """`nas.modules.ACTIVATIONS` with the entries the network uses, and `make_act`."""
    entries = "".join(inspect.getsource(modules.ACTIVATIONS[n]) for n in modules.ACTIVATIONS if n in names)
    return f"ACTIVATIONS = {{\n{entries}}}\n\n\n" + inspect.getsource(modules.make_act)


def _classes_in_use(recipes: list[Recipe]) -> set[type]:
    """Every class of `nas.modules` the built network contains, with its bases (built on the meta device)."""
    used: set[type] = set()
    with torch.device("meta"):
        for r in recipes:
            for m in r.build().modules():
                used.update(c for c in type(m).__mro__ if c.__module__ == modules.__name__)
    return used


def _modules_src(recipes: list[Recipe], acts: set[str], deploy: bool) -> str:
    used = _classes_in_use(recipes) | {modules.ClassifierHead}
    parts = [_activations_src(acts)]
    for obj in vars(modules).values():  # in source order: bases before the classes built on them
        if not isinstance(obj, type) or obj.__module__ != modules.__name__ or obj is modules.ConvAct:
            continue
        if obj in used:
            if deploy and obj is modules.ConvNormAct:
                parts.append(_without_cost(modules.ConvAct))
                parts.append("#: deploy: every conv of the blocks is a ConvAct, its BatchNorm folded into its bias\n"
                             "ConvNormAct = ConvAct\n")
            else:
                parts.append(_without_cost(obj))
    parts.append(inspect.getsource(modules.init_weights))
    return "\n\n".join(parts)


_STEM_DOCS = {
    "hardnet": "HarDNet stem: 3x3 conv stride 2, 3x3 conv, 3x3 max-pool stride 2 (output stride 4).",
    "hardnet_ds": "HarDNet-DS stem: 3x3 conv stride 2, 1x1 conv, depthwise 3x3 conv stride 2 (output stride 4).",
    "resnet": "ResNet stem: 7x7 conv stride 2, 3x3 max-pool stride 2 (output stride 4).",
    "deep": "Deep stem: three 3x3 convs (the first with stride 2), 3x3 max-pool stride 2 (output stride 4).",
    "space_to_depth": "TResNet stem: 4x4 space-to-depth, 3x3 conv (output stride 4).",
}


def _stage_comment(i: int, cfg: StageConfig, cin: int, cout: int, stride: int) -> str:
    if cfg.block == "hard":
        what = f"harmonic block of {cfg.depth} layers ({cfg.link_rule} links, k={cfg.growth_rate}, m={cfg.weight_factor:g})"
    else:
        what = f"{cfg.depth} {cfg.block} block{'s' if cfg.depth > 1 else ''} of width {cfg.width}"
    down = f"{cfg.downsample} 2x downsampling, then " if cfg.reduces else ""
    return f"# stage {i}: {cin} -> {cout} channels, output stride {stride}\n# {down}{what}"


# --- the docstring ---------------------------------------------------------------------------------


def compact_config(config: ArchConfig) -> dict[str, Any]:
    """The config as a dict without the stage fields that sit at their defaults.

    `ArchConfig.from_dict` fills omitted stage fields with their defaults, so this reads back to
    the same architecture (same `arch_id`) while staying short enough for a docstring.
    """
    full = config.to_dict()
    out: dict[str, Any] = {"name": full["name"]} if full["name"] else {}
    if full["in_channels"] != 3:
        out["in_channels"] = full["in_channels"]
    out["stem"] = full["stem"]
    out["stages"] = [{k: v for k, v in s.items() if k == "block" or v != STAGE_DEFAULTS[k]} for s in full["stages"]]
    out["head"] = full["head"]
    return out


def export_resolution(config: ArchConfig, resolution: Resolution | None = None) -> int | str:
    """The input size figures refer to (canonical: 224 or "HxW"): ``resolution`` if given, else 224
    rounded up to the stride."""
    if resolution is not None:
        config.check_resolution(resolution)
        return canonical_resolution(resolution)
    return int(math.ceil(224 / config.reduction) * config.reduction)


def _m(x: float) -> str:
    return f"{x / 1e6:,.2f} M"


def _g(x: float) -> str:
    return f"{x / 1e9:,.3f} G"


def _cost_lines(report: CostReport, deploy: bool, in_channels: int) -> list[str]:
    bn_params = sum(r.params for r in report.layers if r.op == "bn")
    params = report.params - bn_params // 2 if deploy else report.params
    h, w = report.input_hw
    lines = [f"Cost at {report.batch}x{in_channels}x{h}x{w} (batch x channels x height x width; hardnas' "
             "analytic cost model):",
             f"    params  {params:,}" + ("  (BatchNorm folded into conv biases)" if deploy else ""),
             f"    MACs    {_g(report.macs)} conv + linear ({_g(report.thop_macs)} as thop counts)",
             f"    CIO     {_m(report.cio)} elements ({report.cio_bytes / 2 ** 20:,.1f} MiB at "
             f"{report.bytes_per_element} B/element), MoC {report.moc:.1f}",
             "",
             f"    {'part':<10}{'params':>12}{'MACs':>12}{'CIO':>12}  output"]
    for s in report.by_stage():
        p = s.params
        if deploy:
            p -= sum(r.params for r in report.layers if r.op == "bn" and r.stage == s.name) // 2
        shape = "x".join(str(d) for d in s.out_shape[1:])
        lines.append(f"    {s.name:<10}{_m(p):>12}{_g(s.macs):>12}{_m(s.cio):>12}  {shape}")
    return lines


def _latency_line(meta: Mapping[str, Any]) -> str:
    ms = meta.get("latency_ms")
    if ms is None:
        note = meta.get("latency_note") or "not given (export with a measured or predicted latency to record one)"
        return f"Latency: {note}"
    source = meta.get("latency_source") or "unlabelled"
    device = meta.get("device") or meta.get("latency_device") or "unknown device"
    where = "for" if source == "predicted" else "on"
    details = [str(meta["precision"])] if meta.get("precision") else []
    details += [f"batch {meta['batch']}"] if meta.get("batch") is not None else []
    if meta.get("latency_resolution"):
        details.append(format_resolution(meta["latency_resolution"]))
    if meta.get("latency_runtime") and meta["latency_runtime"] not in ("eager", "pytorch"):
        details.append(str(meta["latency_runtime"]))
    if meta.get("latency_deploy"):
        details.append("BN folded")
    extra = f"; {', '.join(details)}" if details else ""
    kind = " (roofline model, not measured)" if source == "predicted" else ""
    if meta.get("latency_disturbed"):
        slowdown = meta.get("latency_slowdown")
        busy = f", reference workload {float(slowdown):.2f}x slower" if slowdown else ""
        kind += (f" (DISTURBED: other work ran while measuring{busy}; "
                 f"{'the measurement was replaced by this prediction' if source == 'predicted' else 'not a quiet figure'})")
    return "\n    ".join(textwrap.wrap(f"Latency: {float(ms):.2f} ms {source} {where} {device}{extra}{kind}", 96))


_META_SHOWN = {"latency_ms", "latency_source", "device", "latency_device", "latency_note", "precision", "batch",
               "latency_disturbed", "latency_slowdown",
               "latency_resolution", "latency_deploy", "latency_runtime", "resolution", "accuracy", "proxy",
               # stated by the docstring already, from the config and the cost model
               "arch_id", "name", "params", "macs", "thop_macs", "cio", "moc", "config"}
_META_LABELS = {"budget_ms": "Latency budget (ms)", "study": "Study", "trial": "Trial"}


def _docstring(config: ArchConfig, deploy: bool, meta: Mapping[str, Any], report: CostReport) -> str:
    from .. import __version__

    name = config.name or f"arch-{config.arch_id}"
    kind = "deploy (BatchNorm folded) " if deploy else ""
    nc = config.head.num_classes
    hardnas_model = "nas.fuse.fuse_model(nas.build_model(config))" if deploy else "nas.build_model(config)"
    intro = (f"Needs Python >= 3.10 and torch, nothing else. ``build(num_classes=...)`` returns the network. "
             f"Its state_dict keys are those of hardnas' ``{hardnas_model}``, so weights move between the two "
             "with ``load_state_dict``, e.g. from the .safetensors file exported next to this one: "
             "``model.load_state_dict(safetensors.torch.load_file(path))``.")
    lines = [f"{name}: a standalone {kind}PyTorch model definition, exported by hardnas {__version__}.", ""]
    lines += textwrap.wrap(intro, 96)
    if deploy:
        lines += [""] + textwrap.wrap("Deploy export: every BatchNorm is folded into the conv before it (convs "
                                      "with a bias, no BatchNorm), for inference. Train with the ordinary export.", 96)
    lines += ["", f"arch_id {config.arch_id}; input {config.in_channels} channels; output stride "
                  f"{config.reduction}; {nc} classes.", ""]
    lines += _cost_lines(report, deploy, config.in_channels)
    lines += ["", _latency_line(meta)]
    if meta.get("accuracy") is not None:
        acc = meta["accuracy"]
        proxy = f" (proxy: {meta['proxy']})" if meta.get("proxy") else ""
        lines.append(f"Accuracy: {acc:.4f}{proxy}" if isinstance(acc, float) else f"Accuracy: {acc}{proxy}")
    others = [(k, v) for k, v in meta.items() if k not in _META_SHOWN and isinstance(v, (str, int, float, bool))]
    for k, v in others:
        label = _META_LABELS.get(k) or k.replace("_", " ").capitalize()
        lines.append(f"{label}: {v:.4g}" if isinstance(v, float) else f"{label}: {v}")
    cfg_yaml = yaml.safe_dump(compact_config(config), sort_keys=False, default_flow_style=None, width=92)
    lines += ["", "Config (a hardnas ArchConfig; stage fields at their defaults are left out, so",
              "``nas.ArchConfig.from_dict(yaml.safe_load(...))`` reads it back as the same architecture):", ""]
    lines += ["    " + ln if ln else "" for ln in cfg_yaml.rstrip("\n").splitlines()]
    return _doc_safe("\n".join(lines))


def _doc_safe(text: str) -> str:
    """Text that can sit inside a triple-quoted docstring as it reads."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')




# --- the file --------------------------------------------------------------------------------------


def _activations(config: ArchConfig) -> set[str]:
    specs = [config.stem.activation] + [s.activation for s in config.stages]
    specs += [s.post_activation for s in config.stages if s.block != "hard"]
    return {spec.partition(":")[0] for spec in specs if spec is not None}


def render_py(config: ArchConfig, *, deploy: bool = False, metadata: Mapping[str, Any] | None = None) -> str:
    """The standalone .py source for ``config`` (formatted with black).

    ``metadata`` holds figures for the docstring that the config does not determine: a latency
    (``latency_ms``, ``latency_source`` measured/predicted, ``device``), ``accuracy``, ``resolution``
    (the input size the cost figures refer to, 224 or "HxW"; default 224 rounded up to the network's stride) and
    any other scalars, listed as they are.
    """
    if not isinstance(config, ArchConfig):
        raise ValueError(f"config: {type(config).__name__} is not allowed; expected an ArchConfig")
    meta = dict(metadata or {})
    res = export_resolution(config, meta.get("resolution"))
    report = analyze(config, res)
    h, w = report.input_hw

    stem = stem_recipe(config.stem, config.in_channels)
    recipes = [stem]
    ch, stride = config.stem.out_channels, 4
    stage_lines = []
    for i, s in enumerate(config.stages):
        cin = ch
        recipe, ch = stage_recipe(s, ch)
        recipes.append(recipe)
        stride *= 2 if s.reduces else 1
        stage_lines.extend(_stage_comment(i, s, cin, ch, stride).splitlines())
        stage_lines.append(recipe.render(_qualify) + ",")
    stem_kind = "hardnet_ds" if config.stem.type == "hardnet" and config.stem.depthwise else config.stem.type

    n_stages = len(config.stages)
    stages_src = "\n            ".join(stage_lines)
    nc, in_ch = config.head.num_classes, config.in_channels
    build_note = ("\n\n    Deploy: the weights are in channels_last memory format, so every conv runs NHWC (faster with\n"
                  "    oneDNN on CPU and with tensor cores; the same outputs).") if deploy else ""
    build_tail = ".to(memory_format=torch.channels_last)" if deploy else ""
    net_src = f'''
class Net(nn.Module):
    """{_doc_safe(" ".join((config.name or config.arch_id).split()))}: stem -> {n_stages} stage{"s" if n_stages > 1 else ""} -> classifier head ({ch} features)."""

    def __init__(self, num_classes: int = {nc}) -> None:
        super().__init__()
        # {_STEM_DOCS[stem_kind]}
        self.stem = {stem.render(_qualify)}
        self.stages = nn.Sequential(
            {stages_src}
        )
        self.num_features = {ch}
        self.head = ClassifierHead({ch}, num_classes, dropout={config.head.dropout!r})
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build(num_classes: int = {nc}) -> Net:
    """The network, freshly initialised, with a classifier for ``num_classes`` outputs.{build_note}"""
    return Net(num_classes){build_tail}


if __name__ == "__main__":
    model = build().eval()
    with torch.no_grad():
        out = model(torch.randn(1, {in_ch}, {h}, {w}))
    print(f"{{sum(p.numel() for p in model.parameters()):,}} parameters, output {{tuple(out.shape)}}")
'''
    body = _modules_src(recipes, _activations(config), deploy)
    header = (f'"""{_docstring(config, deploy, meta, report)}\n"""\n\n'
              "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
              f'ARCH_ID = "{config.arch_id}"\n\n\n')
    if "F." not in body:
        header = header.replace("import torch.nn.functional as F\n", "")
    import black  # only when a file is written: `import nas.export` does not need it

    return black.format_str(header + body + "\n" + net_src, mode=black.Mode(line_length=100))
