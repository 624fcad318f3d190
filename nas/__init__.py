"""hardnas: a design-space explorer and architecture search for GPU-efficient CNNs.

The public face: configs (`ArchConfig` and its parts), the one builder (`build_model`), the
canonical models (`create_model`, `get_config`, `list_models`), the analytic cost model
(`analyze`) and the loader for official pretrained weights (`load_reference_weights`).
"""

from .config import ArchConfig, HeadConfig, StageConfig, StemConfig
from .cost import CostReport, analyze
from .model import Net, build_model
from .registry import create_model, get_config, list_models
from .weights import LoadReport, load_reference_weights

__all__ = [
    "ArchConfig",
    "CostReport",
    "HeadConfig",
    "LoadReport",
    "Net",
    "StageConfig",
    "StemConfig",
    "analyze",
    "build_model",
    "create_model",
    "get_config",
    "list_models",
    "load_reference_weights",
]
__version__ = "0.1.0"
