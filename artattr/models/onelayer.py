"""The one-conv-layer CNN baseline: the floor every real architecture has to beat.

One convolution (``neurons`` filters) + ReLU + max-pool on the image shrunk to ``resize`` pixels,
flattened into the heads. Colour and coarse layout are all it can see, which is exactly what it
measures: how much of style/genre/artist is guessable from palette and composition alone.
The resize happens inside the model, so it reads the same 160 px inputs as every other model.
There are no pretrained weights to load.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import register_model
from .heads import MultiTaskModel
from .wikiart_cnn import no_pretrained_weights


class OneLayer(nn.Module):
    def __init__(self, resize: int = 64, neurons: int = 32, kernel: int = 5, pool: int = 4):
        super().__init__()
        self.resize = resize
        self.conv = nn.Conv2d(3, neurons, kernel, padding=kernel // 2)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool2d(resize // pool)
        self.num_features = neurons * (resize // pool) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", antialias=True, align_corners=False)
        return self.pool(self.act(self.conv(x))).flatten(1)


@register_model
def onelayer_cnn(tasks: dict[str, int], pretrained: bool = False, resize: int = 64, neurons: int = 32,
                 kernel: int = 5, pool: int = 4, **kwargs) -> MultiTaskModel:
    no_pretrained_weights("onelayer_cnn", pretrained)
    trunk = OneLayer(resize, neurons, kernel, pool)
    return MultiTaskModel(trunk, trunk.num_features, tasks, cam_layer="backbone.act", **kwargs)
