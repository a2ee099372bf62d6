"""The part every explanation method shares: which score to explain, model hygiene, [0, 1] maps.

A method is a function ``(target, x, progress, **options) -> Tensor (S, S)`` of raw evidence
on the model input ``x`` (1, 3, S, S); :func:`attribute` runs it on a model that leaves exactly
as it came and turns the evidence into a heatmap in [0, 1].
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn as nn

from ..output import recalibrate

#: ``progress(fraction, description)``; the app passes a wrapper around ``gr.Progress``.
Progress = Callable[[float, str], None]


@dataclass
class Target:
    """One score to explain: class ``index`` of head ``task``."""

    model: nn.Module
    task: str
    index: int
    temperature: float = 1.0
    calibration: list[list[float]] | None = None  # the checkpoint's top-probability map (``artattr.output.recalibrate``)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Gradient methods read logits: softmax saturates and would flatten their gradients."""
        return self.model(x)[self.task]

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Perturbation methods read the calibrated probability the user is shown: temperature, then
        the checkpoint's top-probability map, as ``Predictor`` computes it (in float32 even when the
        network ran in bfloat16, so small probability changes are not rounded away)."""
        probs = torch.softmax(self.logits(x).float() / self.temperature, dim=-1)
        if self.calibration is None:
            return probs
        return torch.from_numpy(recalibrate(probs.detach().numpy(), self.calibration))


class Method(Protocol):
    def __call__(self, target: Target, x: torch.Tensor, progress: Progress | None = None, **options) -> torch.Tensor: ...


#: name -> method, in the order the app's dropdown lists them
METHODS: dict[str, Method] = {}


def register_method(name: str) -> Callable[[Method], Method]:
    def add(fn: Method) -> Method:
        METHODS[name] = fn
        return fn
    return add


# One explanation at a time: hooks and requires_grad flags live on the shared model for the
# duration of a call, so two overlapping calls would restore each other's flags wrongly.
_LOCK = threading.RLock()


@contextmanager
def attribution_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Gradients reach inputs and activations but never the weights; everything is restored after.

    Frozen weights also make backward cheap (no weight gradients), which keeps Grad-CAM close
    to the cost of one forward pass. Eval mode is forced so dropout and batch norm behave as
    in prediction.
    """
    with _LOCK:
        flags = [(p, p.requires_grad) for p in model.parameters()]
        was_training = model.training
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            model.eval()
            yield model
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            model.train(was_training)


def blurred(x: torch.Tensor) -> torch.Tensor:
    """The "removed" version of an image: colours and layout stay, brushwork and detail go.

    Occlusion and Integrated Gradients use it as their baseline and the deletion metric as the
    thing it fills removed pixels with; a blur stays closer to real paintings than grey boxes.
    """
    from torchvision.transforms.functional import gaussian_blur

    sigma = max(1.0, 0.05 * min(x.shape[-2:]))
    kernel = 2 * math.ceil(2 * sigma) + 1
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def baseline_for(x: torch.Tensor, baseline: str) -> torch.Tensor:
    if baseline == "blur":
        return blurred(x)
    if baseline == "mean":
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).contiguous()
    raise ValueError(f"Unknown baseline {baseline!r}; use 'blur' or 'mean'.")


def fast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where the hardware computes it natively (AMX / AVX512-BF16 CPUs, bf16 GPUs), else None.

    Perturbation methods run hundreds of forwards whose *differences* make the map; bfloat16
    roughly halves their cost on such CPUs and keeps the maps (rank correlation 0.97-0.98 with
    float32 on WikiArt-11 val, same deletion AUC). Elsewhere bfloat16 is emulated and slower.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        native = [getattr(torch.cpu, name, lambda: False)() for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
        return torch.bfloat16 if any(native) else None
    return None


def reporting(forward: Callable, progress: Progress | None, calls: int, desc: str) -> Callable:
    """Wrap ``forward`` so each of its ``calls`` expected calls advances ``progress``."""
    if progress is None:
        return forward
    done = 0

    def wrapped(*args, **kwargs):
        nonlocal done
        out = forward(*args, **kwargs)
        done += 1
        progress(min(done / calls, 1.0), desc)
        return out

    return wrapped


def normalise(evidence: torch.Tensor) -> np.ndarray:
    """Positive evidence scaled to [0, 1]; a map with no positive evidence stays all zero."""
    heat = torch.nan_to_num(evidence.detach().float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)
    top = heat.max()
    return (heat / top if top > 0 else heat).numpy().astype(np.float32)


def attribute(model: nn.Module, x: torch.Tensor, task: str, index: int, method: str | Method = "gradcam",
              temperature: float = 1.0, progress: Progress | None = None,
              calibration: list[list[float]] | None = None, **options) -> np.ndarray:
    """Heatmap (S, S) in [0, 1] of class ``index`` of ``task`` on the model input ``x`` (1, 3, S, S);
    ``temperature`` and ``calibration`` make the probability perturbation methods read the one shown."""
    fn = METHODS.get(method) if isinstance(method, str) else method
    if fn is None:
        raise ValueError(f"Unknown explanation method {method!r}; choose one of {', '.join(METHODS)}.")
    with attribution_mode(model):
        evidence = fn(Target(model, task, index, temperature, calibration), x, progress, **options)
    return normalise(evidence)
