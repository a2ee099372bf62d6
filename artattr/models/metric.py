"""Small-data metric learner: ResNet embedder -> low-dimensional embedding -> classifier.

With a few hundred paintings per class a 2048-wide softmax overfits; squeezing the trunk into a
batch-normalised ``embed_dim`` space first, and classifying there, makes the embedding itself the
thing that is learned, so nearest neighbours in it are meaningful (and it is what the explorer
shows: ``"embedding"`` is this space, not a separate projection).

``metric_resnet18_arcface`` classifies with cosine heads (class centres on the unit sphere) and
adds the ArcFace margin on ``arcface_task`` (default ``style``) through ``model.arcface``, which
the trainer applies with the labels; at inference its heads are plain scaled cosines.
"""

from __future__ import annotations

import torch.nn as nn
import torchvision

from ..registry import register_model
from .heads import ArcMargin, MultiTaskModel


def _metric(tasks: dict[str, int], pretrained: bool, arcface: bool, embed_dim: int = 128, **kwargs) -> MultiTaskModel:
    # Pretrained ResNet18 weights come from download.pytorch.org (torchvision's cache); offline that raises.
    net = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
    net.fc = nn.Identity()
    backbone = nn.Sequential(net, nn.Linear(512, embed_dim), nn.BatchNorm1d(embed_dim))
    if arcface and tasks:
        kwargs.setdefault("arcface_task", "style" if "style" in tasks else next(iter(tasks)))
    model = MultiTaskModel(backbone, embed_dim, tasks, cam_layer="backbone.0.layer4", embed_dim=embed_dim, **kwargs)
    model.embedding = nn.Identity()  # the learned space is the embedding; normalised in forward_head
    if arcface:
        scale, margin = kwargs.get("arcface_scale", 16.0), kwargs.get("arcface_margin", 0.2)
        model.heads = nn.ModuleDict({t: ArcMargin(embed_dim, n, scale, margin) for t, n in model.tasks.items()})
    return model


@register_model
def metric_resnet18(tasks: dict[str, int], pretrained: bool = False, **kwargs) -> MultiTaskModel:
    """Softmax heads on the ``embed_dim`` (128) embedding."""
    return _metric(tasks, pretrained, arcface=False, **kwargs)


@register_model
def metric_resnet18_arcface(tasks: dict[str, int], pretrained: bool = False, **kwargs) -> MultiTaskModel:
    """Cosine heads plus the ArcFace margin on ``arcface_task``."""
    return _metric(tasks, pretrained, arcface=True, **kwargs)
