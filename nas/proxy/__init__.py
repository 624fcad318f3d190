"""Proxy accuracy: short seeded training (`train_eval`) and zero-cost proxies (`zero_cost`)."""

from .cache import ProxyCache
from .curve import extrapolate_accuracy
from .train import ProxyBudget, ProxyResult, proxy_config, scale_width, train_eval
from .zero_cost import ZERO_COST_PROXIES, zero_cost

__all__ = ["ZERO_COST_PROXIES", "ProxyBudget", "ProxyCache", "ProxyResult", "extrapolate_accuracy", "proxy_config",
           "scale_width", "train_eval", "zero_cost"]
