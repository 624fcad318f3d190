"""`Recipe`: a module class and its plain arguments, the one shape every architecture decision takes.

`nas.stems` and `nas.blocks` turn a config into recipes once (timm byobnet's ``block_kwargs``
idea); a recipe then serves all three consumers with the same arguments:

* ``build()``: the module, ``cls(*args, **kwargs)`` (recipes among the arguments built first);
* ``cost(tracer, name, x)``: the analytic cost, ``cls.cost(tracer, name, x, *args, **kwargs)``
  for the classes of `nas.modules`, a small table for the torch layers used as they are, and for
  containers (`nn.Sequential` and its subclasses) the parts in order under their names;
* ``render()``: the construction as Python source, for the standalone export (arguments left at
  the constructor's default are left out).
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Callable

from torch import nn

from .tracer import Shape, Tracer

__all__ = ["Recipe", "TORCH_COSTS"]

#: torch layers used as they are -> cost with the constructor's arguments
TORCH_COSTS: dict[type, Callable[..., Shape]] = {
    nn.MaxPool2d: lambda t, name, x, kernel, stride, padding=0: t.maxpool(name, x, kernel, stride, padding),
    nn.AvgPool2d: lambda t, name, x, kernel, stride: t.avgpool(name, x, kernel, stride),
    nn.Dropout: lambda t, name, x, p=0.5: x,
    nn.Identity: lambda t, name, x: x,
}


class Recipe:
    """``cls(*args, **kwargs)``, not yet built."""

    __slots__ = ("cls", "args", "kwargs")

    def __init__(self, cls: type, *args: Any, **kwargs: Any) -> None:
        self.cls, self.args, self.kwargs = cls, args, kwargs

    def __repr__(self) -> str:
        return f"Recipe({self.render()})"

    def build(self) -> nn.Module:
        args = [a.build() if isinstance(a, Recipe) else a for a in self.args]
        kwargs = {k: v.build() if isinstance(v, Recipe) else v for k, v in self.kwargs.items()}
        return self.cls(*args, **kwargs)

    def parts(self) -> list[tuple[str, Recipe]]:
        """A container's parts as (name, recipe), in order: positional ones by index, then named ones."""
        return [(str(i), a) for i, a in enumerate(self.args)] + list(self.kwargs.items())

    def cost(self, t: Tracer, name: str, x: Shape) -> Shape:
        if issubclass(self.cls, nn.Sequential):
            for part, recipe in self.parts():
                x = recipe.cost(t, f"{name}.{part}", x)
            return x
        cost = TORCH_COSTS.get(self.cls) or self.cls.cost
        return cost(t, name, x, *self.args, **self.kwargs)

    def classes(self) -> list[type]:
        """Every class this recipe constructs, itself first."""
        out = [self.cls]
        for v in (*self.args, *self.kwargs.values()):
            if isinstance(v, Recipe):
                out += v.classes()
        return out

    def render(self, qualify: Callable[[type], str] = lambda c: c.__name__) -> str:
        """The construction as source, e.g. ``ConvNormAct(3, 32, 3, stride=2, act="relu6")``."""
        defaults = _defaults(self.cls)
        args = [_literal(a, qualify) for a in self.args]
        args += [f"{k}={_literal(v, qualify)}" for k, v in self.kwargs.items()
                 if not (k in defaults and type(defaults[k]) is type(v) and defaults[k] == v)]
        return f"{qualify(self.cls)}({', '.join(args)})"


@lru_cache(maxsize=None)
def _defaults(cls: type) -> dict[str, Any]:
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _literal(value: Any, qualify: Callable[[type], str]) -> str:
    if isinstance(value, Recipe):
        return value.render(qualify)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v, qualify) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
