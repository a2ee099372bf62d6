"""One registry of architectures, timm-style: every model is defined once and built by name."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make ``fn`` buildable as ``create_model(fn.__name__, ...)``."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"Model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    _import_builtin_models()
    return sorted(_MODELS)


def create_model(name: str, tasks: dict[str, int | list[str]] | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered multi-task model.

    ``tasks`` maps task name to its number of classes (or its ordered label names);
    ``pretrained`` loads the ImageNet (or Hub) weights of the backbone when they exist.
    """
    _import_builtin_models()
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}. Registered models: {', '.join(sorted(_MODELS))}")
    tasks = {t: (len(v) if isinstance(v, (list, tuple)) else int(v)) for t, v in (tasks or {}).items()}
    return _MODELS[name](tasks=tasks, pretrained=pretrained, **kwargs)


def _import_builtin_models() -> None:
    from . import models  # noqa: F401  (registers the built-in architectures)
