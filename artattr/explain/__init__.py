"""Why the model says "Rembrandt": heatmaps of the regions that carried an attribution.

``explain(predictor, image, method)`` gives an H×W array in [0, 1] at the upload's resolution;
``overlay`` draws it over the upload. Methods: Grad-CAM (fast, coarse), occlusion (slow,
model-agnostic) and Integrated Gradients (pixel-level). ``python -m artattr.explain.evaluate``
measures how faithful each one is.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..images import ImageInput, load_image
from ..predictor import Predictor
from . import methods  # noqa: F401  (registers the methods)
from .base import METHODS, Progress, Target, attribute, register_method
from ..overlay import overlay

__all__ = ["METHODS", "Progress", "Target", "attribute", "explain", "overlay", "register_method"]


def target_index(predictor: Predictor, x: torch.Tensor, task: str, target: int | str | None) -> int:
    """Class index to explain: a label name, an index, or (None) the top prediction."""
    if task not in predictor.labels:
        raise ValueError(f"Unknown task {task!r}; this model predicts {', '.join(predictor.labels)}.")
    labels = predictor.labels[task]
    if target is None:
        with torch.inference_mode():
            return int(predictor.model(x)[task][0].argmax())
    if isinstance(target, str):
        if target not in labels:
            raise ValueError(f"Unknown {task} label {target!r}; known labels include {', '.join(labels[:8])}.")
        return labels.index(target)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and 0 <= target < len(labels):
        return int(target)
    raise ValueError(f"Target must be a {task} label or an index in [0, {len(labels)}), got {target!r}.")


def to_upload(heat: np.ndarray, predictor: Predictor, size: tuple[int, int]) -> np.ndarray:
    """Map a heatmap on the model's input back onto the upload (W, H), undoing the resize."""
    w, h = size
    heat_t = torch.from_numpy(heat)[None, None]
    if predictor.config.resize != "center_crop":  # squash: the input is the whole upload
        return F.interpolate(heat_t, size=(h, w), mode="bilinear")[0, 0].numpy()
    # center_crop: the input saw only the central square of side min(w, h); the rest gets 0.
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    out = np.zeros((h, w), dtype=np.float32)
    out[top:top + side, left:left + side] = F.interpolate(heat_t, size=(side, side), mode="bilinear")[0, 0].numpy()
    return out


def explain(predictor: Predictor, image: ImageInput, method: str = "gradcam", task: str = "style",
            target: int | str | None = None, progress: Progress | None = None, **options) -> np.ndarray:
    """Heatmap H×W in [0, 1] over the upload: where the evidence for ``target`` of ``task`` lies.

    ``target`` is a label name or class index (default: the top prediction). ``options`` go to
    the method (e.g. ``window``/``stride`` for occlusion, ``steps`` for Integrated Gradients).
    Bad images, tasks, targets or methods raise ``ValueError`` with a readable message.
    """
    img = load_image(image)
    x = predictor.to_tensor(img)[None]
    index = target_index(predictor, x, task, target)
    config = predictor.config
    heat = attribute(predictor.model, x, task, index, method, config.temperature.get(task, 1.0), progress,
                     config.calibration.get(task), **options)
    return to_upload(heat, predictor, img.size)
