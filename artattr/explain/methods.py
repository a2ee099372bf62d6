"""The three explanation methods, each a thin wrapper around its Captum implementation.

Captum is imported inside each method: it takes seconds to import and the app should start
before anyone asks for a heatmap.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn as nn

from .base import Progress, Target, baseline_for, fast_dtype, register_method, reporting


class _TokenGrid(nn.Module):
    """Shows Captum a token layer's output as a (B, C, H, W) grid without changing the network.

    Grad-CAM needs channels and a spatial grid; transformers give (B, tokens, C). The grid is
    written back into the tokens through the same view, so the network computes exactly what it
    did before while gradients now pass through this module, where Captum's hook reads them.
    """

    def __init__(self, reshape: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.reshape = reshape

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.reshape(tokens)

    def hook(self, module: nn.Module, inputs, tokens: torch.Tensor) -> torch.Tensor:
        out = tokens.clone()
        view = self.reshape(out)
        if view.untyped_storage().data_ptr() != out.untyped_storage().data_ptr():
            raise ValueError("cam_reshape must return a view of the tokens (slicing, reshape, permute) for Grad-CAM.")
        view.copy_(self(tokens))
        return out


@contextmanager
def _cam_layer(model: nn.Module) -> Iterator[nn.Module]:
    """The module Grad-CAM hooks: the model's declared layer, or a grid view of it for token backbones."""
    if model.cam_reshape is None:
        yield model.cam_layer
        return
    grid = _TokenGrid(model.cam_reshape)
    handle = model.cam_layer.register_forward_hook(grid.hook)
    try:
        yield grid
    finally:
        handle.remove()


@register_method("gradcam")
def gradcam(target: Target, x: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
    """Grad-CAM on the model's declared layer: one forward, a short backward, coarse regions."""
    from captum.attr import LayerAttribution, LayerGradCam

    with _cam_layer(target.model) as layer:
        cam = LayerGradCam(target.logits, layer).attribute(x, target=target.index, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[0, 0]


#: occlusion's precision -> autocast dtype (None: plain float32); "auto" asks :func:`fast_dtype`
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


@register_method("occlusion")
def occlusion(target: Target, x: torch.Tensor, progress: Progress | None = None, window: int = 32,
              stride: int = 16, baseline: str = "blur", batch: int = 16, precision: str = "auto") -> torch.Tensor:
    """How much the probability drops when each ``window``-pixel square is replaced by ``baseline``.

    Model-agnostic and directly faithful (it *is* the model's response), at the cost of one
    forward per window position, evaluated ``batch`` at a time. ``precision`` "auto" runs those
    forwards in bfloat16 where the hardware does it natively (:func:`fast_dtype`); "float32" or
    "bfloat16" force one.
    """
    from captum.attr import Occlusion

    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; use auto, {', '.join(PRECISIONS)}.")
    dtype = fast_dtype(x.device) if precision == "auto" else PRECISIONS[precision]

    window = min(window, *x.shape[-2:])
    stride = max(1, min(stride, window))
    # Captum's count of window positions per axis, to report progress per batch.
    positions = math.prod(math.ceil((side - window) / stride) + 1 for side in x.shape[-2:])
    forward = reporting(target.probs, progress, 1 + math.ceil(positions / batch), "Occlusion")
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        attr = Occlusion(forward).attribute(
            x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride),
            baselines=baseline_for(x, baseline), target=target.index, perturbations_per_eval=batch,
        )
    return attr[0].float().mean(0)


@register_method("ig")
def integrated_gradients(target: Target, x: torch.Tensor, progress: Progress | None = None, steps: int = 32,
                         baseline: str = "blur", batch: int = 16) -> torch.Tensor:
    """Integrated Gradients from a blurred copy: pixel-level evidence that sums to the logit change.

    Chosen over Guided Grad-CAM because it needs no backward hooks on activations (so no
    trouble with timm's in-place ReLU6) and satisfies completeness, so it cannot show
    structure the model does not use.
    """
    from captum.attr import IntegratedGradients

    forward = reporting(target.logits, progress, math.ceil(steps / batch), "Integrated Gradients")
    attr = IntegratedGradients(forward).attribute(
        x, baselines=baseline_for(x, baseline), target=target.index, n_steps=steps, internal_batch_size=batch,
    )
    return attr[0].sum(0)
