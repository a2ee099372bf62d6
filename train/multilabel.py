"""Multilabel targets (tags, media): a painting can have several, and for many none are known.

A CSV cell holds ``|``-separated names (``"oil|canvas"``); an empty cell means *unknown*, not
*none of them*, so those rows are skipped by the loss instead of teaching the heads "no tag".
The model side is ``create_model(..., multilabel={"tags": [names]})``, whose logits come out
under ``artattr.models.heads.MULTILABEL_PREFIX + name``.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F

SEPARATOR = "|"


def split_names(cell: str) -> list[str]:
    return [v.strip() for v in cell.split(SEPARATOR) if v.strip()]


def build_names(cells: list[str], min_count: int = 1) -> list[str]:
    """Sorted names that occur in at least ``min_count`` training cells."""
    counts = Counter(name for cell in cells for name in set(split_names(cell)))
    return sorted(n for n, c in counts.items() if c >= min_count)


def encode(cells: list[str], names: list[str]) -> torch.Tensor:
    """(N, len(names)) float multi-hot; a row whose cell is empty (or names nothing known) is all -1: unknown."""
    index = {n: i for i, n in enumerate(names)}
    out = torch.zeros(len(cells), len(names))
    for row, cell in enumerate(cells):
        hits = [index[n] for n in split_names(cell) if n in index]
        if hits:
            out[row, hits] = 1.0
        else:
            out[row] = -1.0
    return out


def multilabel_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the rows with known labels; 0 (still differentiable) when there are none."""
    known = targets[:, 0] >= 0
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known].float(), targets[known].float())
