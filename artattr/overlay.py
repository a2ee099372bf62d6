"""Draw a heatmap over the upload the way a person can read it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .images import ImageInput, load_image


def overlay(image: ImageInput, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "inferno") -> Image.Image:
    """The upload blended with ``heatmap`` (H×W in [0, 1]) in a colormap, at the upload's size.

    The default ``inferno`` is perceptually uniform and readable in greyscale, so equal steps in
    evidence look like equal steps in colour (``jet`` invents edges). ``alpha`` is the heatmap's
    opacity: 0 shows only the painting, 1 only the heatmap.
    """
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}.")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"Unknown colormap {cmap!r}; try 'inferno', 'magma', 'viridis' or 'cividis'.") from None
    img = load_image(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be a 2-D array, got shape {heat.shape}.")
    if heat.shape != (img.height, img.width):
        heat = np.asarray(Image.fromarray(heat).resize(img.size, Image.BILINEAR))
    colours = colormap(np.clip(np.nan_to_num(heat), 0.0, 1.0))[..., :3] * 255.0
    blend = (1.0 - alpha) * np.asarray(img, dtype=np.float32) + alpha * colours
    return Image.fromarray(np.round(blend).astype(np.uint8), "RGB")
