"""The WikiArt multi-branch CNN: a small shared conv trunk, then one fully-connected branch per task.

Three conv+BN+ReLU+max-pool blocks are shared; each task (artist, genre, style) gets its own
``Linear -> BN -> ReLU -> Dropout`` branch before its classifier, so tasks share low-level
texture but not decisions. The original flattens the last 28x28x128 map at 224 px straight into
three 1024-unit branches, which is where its ~308 M parameters live (3 x 100,352 x 1,024);
``wikiart_cnn_gap`` global-pools that map instead (~0.9 M parameters), the variant worth training.
Both train from scratch: there are no published weights to load.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..registry import register_model
from .heads import MULTILABEL_PREFIX, MultiTaskModel


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2))


def _branch(feat_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(feat_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))


class MultiBranchModel(MultiTaskModel):
    """Per-task fully-connected branches between the shared features and each head.

    The explorer embeddings are read from all branches together, so they reflect what the
    tasks learned rather than raw trunk activations (and cost 3 x 1,024 inputs, not 100,352).
    Regularisation is the branches' ``branch_dropout``; the shared ``dropout`` argument is unused.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, tasks: dict[str, int], cam_layer: str,
                 hidden: int = 1024, branch_dropout: float = 0.5, **kwargs):
        super().__init__(backbone, hidden, tasks, cam_layer, **kwargs)
        names = list(self.tasks) + list(self.multilabel_sizes)
        self.branches = nn.ModuleDict({name: _branch(feat_dim, hidden, branch_dropout) for name in names})
        joint = hidden * len(names)
        if self.embedding is not None:
            self.embedding = nn.Linear(joint, self.embedding.out_features)
        if self.sphere is not None:
            self.sphere = nn.Linear(joint, 3)

    def forward_head(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = {name: branch(feats) for name, branch in self.branches.items()}
        out = {t: head(hidden[t]) for t, head in self.heads.items()}
        out.update({MULTILABEL_PREFIX + k: head(hidden[k]) for k, head in self.multilabel.items()})
        out.update(self.embed(torch.cat(list(hidden.values()), 1)))
        return out


def no_pretrained_weights(name: str, pretrained: bool) -> None:
    """From-scratch models refuse ``pretrained=True`` rather than silently train from random weights."""
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights; build it with pretrained=False (config: `pretrained: false`).")


def _trunk(pool: nn.Module) -> nn.Sequential:
    return nn.Sequential(_conv_block(3, 32), _conv_block(32, 64), _conv_block(64, 128), pool, nn.Flatten(1))


@register_model
def wikiart_cnn(tasks: dict[str, int], pretrained: bool = False, input_size: int = 224, hidden: int = 1024,
                **kwargs) -> MultiBranchModel:
    """The original: the whole (input_size / 8)^2 x 128 map is flattened into every branch.

    The flatten fixes the input size; other sizes are average-pooled to that grid so the model
    still runs (e.g. on a full-resolution upload), but it was trained on ``input_size``.
    """
    no_pretrained_weights("wikiart_cnn", pretrained)
    grid = input_size // 8
    trunk = _trunk(nn.AdaptiveAvgPool2d(grid))
    return MultiBranchModel(trunk, 128 * grid * grid, tasks, cam_layer="backbone.2", hidden=hidden, **kwargs)


@register_model
def wikiart_cnn_gap(tasks: dict[str, int], pretrained: bool = False, hidden: int = 1024, **kwargs) -> MultiBranchModel:
    """Same trunk and branches, global average pooling instead of the flatten: any input size."""
    no_pretrained_weights("wikiart_cnn_gap", pretrained)
    return MultiBranchModel(_trunk(nn.AdaptiveAvgPool2d(1)), 128, tasks, cam_layer="backbone.2", hidden=hidden, **kwargs)
