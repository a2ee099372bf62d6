"""ArtAttr: who painted it, in which movement, what genre — and why the model thinks so.

``import artattr`` imports no torch: configs, image loading, outputs and overlays are plain
numpy/PIL, so the app's UI process starts without torch and timm (~3.5 s on 2 cores) while its
model process imports them (``artattr/worker.py``). The names that build or run models load their
modules on first use. Explanations live in ``artattr.explain`` and the explorer in ``artattr.embed``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .config import CheckpointError, ModelConfig, read_config  # noqa: E402
from .images import load_image  # noqa: E402
from .output import Output, flags, top_k  # noqa: E402

#: name -> the module (importing torch) that defines it
_TORCH_NAMES = {"Predictor": "predictor", "load": "predictor", "load_checkpoint": "checkpoint",
                "save_checkpoint": "checkpoint", "create_model": "registry", "list_models": "registry",
                "register_model": "registry"}
#: submodules reachable as ``artattr.hub.resolve(...)`` after a plain ``import artattr``, imported on first use
_SUBMODULES = {"checkpoint", "config", "embed", "explain", "hub", "images", "models", "output", "overlay", "predictor",
               "registry", "worker"}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module(f".{_TORCH_NAMES[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckpointError", "ModelConfig", "Output", "Predictor", "create_model", "flags", "list_models", "load",
    "load_checkpoint", "load_image", "read_config", "register_model", "save_checkpoint", "top_k", "__version__",
]
