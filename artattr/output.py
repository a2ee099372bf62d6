"""What one forward pass answers, as plain numpy: it crosses from the model process to the app's UI
process (``artattr/worker.py``), which reads it without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Output:
    """Everything one forward pass gives for one image; the app caches this per upload."""

    probs: dict[str, np.ndarray]        # task -> calibrated probabilities over that task's labels
    embedding: np.ndarray | None        # unit-norm retrieval embedding
    sphere: np.ndarray | None           # unit-norm 3-D ArcFace coordinates
    #: where the painting was found in the upload (artattr.locate): corners TL, TR, BR, BL as (4, 2)
    #: fractions of its width and height; None when the whole image was used
    crop: np.ndarray | None = None


def top_k(output: Output, labels: dict[str, list[str]], k: int = 5) -> dict[str, list[tuple[str, float]]]:
    """``{task: [(label, probability), ...]}``, most likely first."""
    result = {}
    for task, p in output.probs.items():
        order = np.argsort(-p)[:k]
        result[task] = [(labels[task][i], float(p[i])) for i in order]
    return result
