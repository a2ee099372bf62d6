"""ViT-B/16 (transformers) as in the multi-task WikiArt paper; CLS token feeds the heads."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..registry import register_model
from .heads import MultiTaskModel

HUB_WEIGHTS = "google/vit-base-patch16-224-in21k"


class ViTTrunk(nn.Module):
    def __init__(self, pretrained: bool):
        super().__init__()
        from transformers import ViTConfig, ViTModel

        if pretrained:
            self.vit = ViTModel.from_pretrained(HUB_WEIGHTS, add_pooling_layer=False)
        else:
            self.vit = ViTModel(ViTConfig(), add_pooling_layer=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Interpolated position embeddings let the same weights run at 160 px or on tiny test inputs.
        return self.vit(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 0]


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, 1 + H*W, C) transformer tokens -> (B, C, H, W) map for Grad-CAM, dropping CLS."""
    patches = tokens[:, 1:, :]
    side = int(math.isqrt(patches.shape[1]))
    return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)


@register_model
def vit_base_patch16_224(tasks: dict[str, int], pretrained: bool = False, **kwargs) -> MultiTaskModel:
    trunk = ViTTrunk(pretrained)
    # The last block's pre-attention norm still has spatial tokens that feed the CLS token.
    return MultiTaskModel(
        trunk, trunk.vit.config.hidden_size, tasks,
        cam_layer="backbone.vit.layers.11.layernorm_before", cam_reshape=tokens_to_grid,
        mean=(0.5,) * 3, std=(0.5,) * 3, **kwargs,
    )
