"""Training data in the WikiArt-11 shape: a ``metadata.csv`` with ``path,style,artist,genre[,split,artist_fold]``.

Labels live in a :class:`Vocab` built from the training rows only, so a checkpoint's label
lists never depend on validation data. Missing labels (empty genre, rare artist folded into
"other" or dropped) become -1 and are masked out of that task's loss.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from artattr.images import load_image

TASKS = ("style", "genre", "artist")
OTHER = "other"
MISSING = -1


@dataclass
class Row:
    path: str
    labels: dict[str, str]
    split: str = ""
    artist_fold: int = -1


def read_rows(data_dir: str | Path) -> list[Row]:
    """Rows of ``DATA_DIR/metadata.csv``; image paths are made absolute."""
    root = Path(data_dir)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: no metadata.csv; expected columns path,style,artist,genre[,split]")
    rows = []
    with meta.open(newline="") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise ValueError(f"{meta}: no 'path' column (columns: {reader.fieldnames})")
        for r in reader:
            rows.append(Row(
                path=str(root / r["path"]),
                labels={t: (r.get(t) or "").strip() for t in TASKS},
                split=(r.get("split") or "").strip(),
                artist_fold=int(r["artist_fold"]) if (r.get("artist_fold") or "").strip() else -1,
            ))
    return rows


def split_rows(rows: list[Row], mode: str = "csv", val_fold: int = 0, val_fraction: float = 0.15,
               seed: int = 0) -> tuple[list[Row], list[Row]]:
    """Train/val split: the CSV's ``split`` column, a seeded random split stratified by style,
    or artist-disjoint (``artist_fold == val_fold`` is val) so style/genre scores cannot come from
    recognising the painter."""
    if mode == "csv":
        return [r for r in rows if r.split == "train"], [r for r in rows if r.split == "val"]
    if mode == "artist":
        return [r for r in rows if r.artist_fold != val_fold], [r for r in rows if r.artist_fold == val_fold]
    if mode == "random":
        rng = random.Random(seed)
        by_style: dict[str, list[Row]] = {}
        for r in rows:
            by_style.setdefault(r.labels["style"], []).append(r)
        train, val = [], []
        for group in by_style.values():
            rng.shuffle(group)
            n_val = round(len(group) * val_fraction)
            val += group[:n_val]
            train += group[n_val:]
        return train, val
    raise ValueError(f"split mode must be 'csv', 'random' or 'artist', not {mode!r}")


@dataclass
class Vocab:
    """Ordered label names per task; index i of a head is ``labels[task][i]``."""

    labels: dict[str, list[str]]
    unknown: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, train_rows: list[Row], tasks=TASKS, min_artist_images: int = 50) -> "Vocab":
        labels, unknown = {}, {}
        for task in tasks:
            counts = Counter(r.labels[task] for r in train_rows if r.labels[task])
            if task == "artist":
                names = sorted(a for a, n in counts.items() if n >= min_artist_images)
                labels[task] = names + [OTHER]
                unknown[task] = OTHER
            else:
                labels[task] = sorted(counts)
        return cls(labels, unknown)

    def encode(self, row: Row) -> dict[str, int]:
        out = {}
        for task, names in self.labels.items():
            value = row.labels.get(task, "")
            if not value:
                out[task] = MISSING
            elif value in self._index[task]:
                out[task] = self._index[task][value]
            else:
                out[task] = self._index[task].get(self.unknown.get(task, ""), MISSING)
        return out

    @property
    def _index(self) -> dict[str, dict[str, int]]:
        if not hasattr(self, "_cache"):
            self._cache = {t: {n: i for i, n in enumerate(v)} for t, v in self.labels.items()}
        return self._cache

    def targets(self, rows: list[Row]) -> dict[str, torch.Tensor]:
        enc = [self.encode(r) for r in rows]
        return {t: torch.tensor([e[t] for e in enc], dtype=torch.long) for t in self.labels}


class ImageRows(Dataset):
    """Decoded, squashed, normalised images with their label indices; bad files are reported, not fatal."""

    def __init__(self, rows: list[Row], vocab: Vocab, size: int, mean, std, transform=None):
        self.rows, self.vocab, self.size, self.transform = rows, vocab, size, transform
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.targets = vocab.targets(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        try:
            img = load_image(self.rows[i].path, draft_size=self.size * 2)
            ok = True
        except ValueError:
            img, ok = None, False
        if img is None:
            x = torch.zeros(3, self.size, self.size)
        else:
            if img.size != (self.size, self.size):
                img = img.resize((self.size, self.size))
            x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
            if self.transform is not None:
                x = self.transform(x)
            x = (x.float() / 255.0 - self.mean) / self.std
        y = {t: (v[i] if ok else torch.tensor(MISSING)) for t, v in self.targets.items()}
        return x, y, ok
