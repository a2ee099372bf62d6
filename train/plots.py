"""The two pictures people look at after a run: learning curves and confusion matrices (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines and CI
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: list[dict], path: str | Path) -> Path:
    """Loss and per-task top-1 / macro-F1 per epoch, train dashed and val solid, one panel each."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    tasks = [t for t in history[0]["val"] if not t.endswith("_known")] if history else []
    panels = [("loss", None)] + [(f"{t}", t) for t in tasks]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, task) in zip(axes[0], panels):
        if task is None:
            ax.plot(epochs, [h["train_ce"] for h in history], "--", color="C0", label="train CE")
            ax.plot(epochs, [h["val_ce"] for h in history], "-", color="C0", label="val CE")
            ax.plot(epochs, [h["train_loss"] for h in history], ":", color="C3", label="objective")
        else:
            for color, metric in (("C0", "top1"), ("C2", "macro_f1")):
                ax.plot(epochs, [h["train"][task][metric] for h in history], "--", color=color, label=f"train {metric}")
                ax.plot(epochs, [h["val"][task][metric] for h in history], "-", color=color, label=f"val {metric}")
            ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def confusion_matrix(cm: np.ndarray, labels: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix that stays readable from 11 to 129 classes: the figure grows
    with the class count, fonts shrink, and cell numbers are printed only while they fit."""
    plt = _pyplot()
    n = len(labels)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = min(max(6.0, 0.2 * n + 3.0), 30.0)
    font = max(3.0, min(9.0, 260.0 / max(n, 1)))
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(n), [_short(s) for s in labels], rotation=90, fontsize=font)
    ax.set_yticks(range(n), [_short(s) for s in labels], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=font,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (rows normalised)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120 if n <= 40 else 160)
    plt.close(fig)
    return Path(path)


def _short(label: str, n: int = 28) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"
