"""ResNet50 transfer baseline (torchvision), the reference most art-classification papers use."""

from __future__ import annotations

import torch.nn as nn
import torchvision

from ..registry import register_model
from .heads import MultiTaskModel


@register_model
def resnet50(tasks: dict[str, int], pretrained: bool = False, **kwargs) -> MultiTaskModel:
    # Pretrained weights come from download.pytorch.org (torchvision's cache); offline that raises.
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2 if pretrained else None
    trunk = torchvision.models.resnet50(weights=weights)
    trunk.fc = nn.Identity()
    return MultiTaskModel(trunk, 2048, tasks, cam_layer="backbone.layer4", **kwargs)
