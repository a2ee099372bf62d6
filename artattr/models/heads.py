"""The part every architecture shares: pooled features -> task heads and embeddings."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Keys of :meth:`MultiTaskModel.forward` that are embeddings, not task logits.
EMBEDDING_KEYS = ("embedding", "sphere")
#: Key of :meth:`MultiTaskModel.forward`'s "is this a painting?" logit (models built with ``artwork_head=True``).
ARTWORK_KEY = "artwork"
#: Prefix of the multilabel outputs (``"multilabel/tags"``): independent sigmoid logits, trained
#: with BCE, kept apart from the softmax tasks so code that reads ``model.tasks`` never sees them.
MULTILABEL_PREFIX = "multilabel/"


class ArcMargin(nn.Module):
    """Additive angular margin (ArcFace) logits: cos(theta + m) for the true class, scaled by s.

    The margin pulls each class into a tight cap on the sphere, so cosine distance between
    embeddings means "same movement"; that is what makes the 3-D sphere map readable.
    """

    def __init__(self, dim: int, n_classes: int, scale: float = 16.0, margin: float = 0.2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # float32 even under bf16 autocast: bf16 rounds the clamp to exactly 1, where acos' gradient is
        # infinite (NaN weights after one GPU step, seen on the 3-D sphere head)
        with torch.autocast(emb.device.type, enabled=False):
            cos = F.linear(F.normalize(emb.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))
        cos = cos.clamp(-1 + 1e-6, 1 - 1e-6)
        if labels is None:
            return cos * self.scale
        theta = torch.acos(cos)
        target = torch.cos(torch.clamp(theta + self.margin, max=math.pi))
        valid = labels >= 0
        onehot = F.one_hot(labels.clamp(min=0), cos.shape[1]).bool() & valid[:, None]
        return torch.where(onehot, target, cos) * self.scale


class MultiTaskModel(nn.Module):
    """``backbone(x)`` gives pooled features; one linear head per task plus normalised embeddings.

    ``forward`` returns ``{task: logits, "embedding": (B, embed_dim), "sphere": (B, 3)}`` in a
    single pass so the app gets answers and explorer coordinates from one forward.
    ``multilabel`` ({name: n or [labels]}, e.g. tags and media) adds sigmoid heads whose logits
    come out under ``MULTILABEL_PREFIX + name``.
    ``artwork_head`` adds one linear unit on the pooled features whose logit (under ``ARTWORK_KEY``)
    says whether the input is a painting at all; it is fitted after training (``train/trust.py``).
    ``cam_layer`` names the module Grad-CAM reads; ``cam_reshape`` turns its output into
    (B, C, H, W) for token-based backbones.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        tasks: dict[str, int],
        cam_layer: str,
        cam_reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
        embed_dim: int = 128,
        sphere: bool = True,
        arcface_task: str | None = None,
        arcface_scale: float = 16.0,
        arcface_margin: float = 0.2,
        dropout: float = 0.2,
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
        multilabel: dict[str, int | list[str]] | None = None,
        artwork_head: bool = False,
    ):
        super().__init__()
        self.mean, self.std = list(mean), list(std)  # the normalisation the backbone was pretrained with
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.tasks = dict(tasks)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({t: nn.Linear(feat_dim, n) for t, n in self.tasks.items()})
        # Label names may be given (and so kept in the checkpoint's model_args); the head needs the count.
        self.multilabel_sizes = {k: len(v) if isinstance(v, (list, tuple)) else int(v) for k, v in (multilabel or {}).items()}
        if set(self.multilabel_sizes) & set(self.tasks):
            raise ValueError(f"multilabel names {sorted(self.multilabel_sizes)} must differ from the tasks {sorted(self.tasks)}")
        self.multilabel = nn.ModuleDict({k: nn.Linear(feat_dim, n) for k, n in self.multilabel_sizes.items()})
        self.embedding = nn.Linear(feat_dim, embed_dim) if embed_dim else None
        self.sphere = nn.Linear(feat_dim, 3) if sphere else None
        self.artwork = nn.Linear(feat_dim, 1) if artwork_head else None
        self.arcface = nn.ModuleDict()
        if arcface_task:
            if arcface_task not in self.tasks:
                raise ValueError(f"arcface_task {arcface_task!r} is not one of the tasks {list(self.tasks)}")
            n = self.tasks[arcface_task]
            if self.embedding is not None:
                self.arcface["embedding"] = ArcMargin(embed_dim, n, arcface_scale, arcface_margin)
            if self.sphere is not None:
                # 3-D caps must be wider than 128-D ones: a smaller scale keeps the loss trainable.
                self.arcface["sphere"] = ArcMargin(3, n, min(arcface_scale, 10.0), arcface_margin)
        self.arcface_task = arcface_task
        self.cam_layer_name = cam_layer
        self.cam_reshape = cam_reshape

    @property
    def cam_layer(self) -> nn.Module:
        return self.get_submodule(self.cam_layer_name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        dropped = self.dropout(feats)
        out = {t: head(dropped) for t, head in self.heads.items()}
        out.update({MULTILABEL_PREFIX + k: head(dropped) for k, head in self.multilabel.items()})
        out.update(self.embed(feats))
        if self.artwork is not None:
            out[ARTWORK_KEY] = self.artwork(feats)[:, 0]
        return out

    def embed(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unit-norm explorer embeddings of pooled features (architectures with per-task branches reuse it)."""
        out = {}
        if self.embedding is not None:
            out["embedding"] = F.normalize(self.embedding(feats), dim=-1)
        if self.sphere is not None:
            out["sphere"] = F.normalize(self.sphere(feats), dim=-1)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x))
