"""Export architectures so that they leave the tool clean.

* ``py``: one readable, standalone PyTorch file that imports only torch (`pyfile`), with the
  same state-dict keys as the in-package model so weights move between the two;
* ``json`` / ``yaml``: the config, for `nas.build_model` on another machine;
* ``onnx`` / ``torchscript``: checked against PyTorch (onnxruntime / reloading) before writing;
* ``deploy``: BatchNorm folded into the convs (py, onnx, torchscript);
* weights next to a py/json/yaml file as safetensors, never as pickled code.

Sources: a canonical name, a config file, or a trial of a study the search wrote
(`config_from_study`). Files are never overwritten unless asked and are written atomically.
``python -m nas.export`` is the command line.
"""

from .api import default_filename, export, resolve_source
from .formats import FORMATS, SUFFIXES, ExportError, export_bytes, weights_bytes
from .pyfile import render_py
from .source import config_from_study

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "ExportError",
    "config_from_study",
    "default_filename",
    "export",
    "export_bytes",
    "render_py",
    "resolve_source",
    "weights_bytes",
]
