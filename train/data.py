"""Every training and evaluation data source, as rows of labels plus a way to get each row's image.

``--data`` means the same thing to ``fit``, ``evaluate``, ``gallery`` and the probes
(:func:`load_source`):

- a folder with ``metadata.csv`` (``path,style,artist,genre[,split,artist_fold]``, the WikiArt-11 shape),
  or such a CSV file itself (paths relative to the file);
- an ImageFolder: ``ROOT/CLASS/*.jpg`` or ``ROOT/{train,val}/CLASS/*.jpg`` (classes name one task);
- ``hf:NAME[:SPLIT]``: a ``datasets`` image table with ClassLabel columns (``huggan/wikiart``), from the
  Hub or a folder written by ``save_to_disk``; memory-mapped Arrow, so the 81k-painting table is
  never a Python list of images.

Labels live in a :class:`Vocab` built from the training rows only, so a checkpoint's label lists
never depend on validation data. Missing labels (empty genre, rare artist folded into "other" or
dropped) become -1 and are masked out of that task's loss. Images go through
:class:`artattr.preprocess.Preprocess`, the definition the served model uses.
"""

from __future__ import annotations

import csv
import random
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from artattr.config import TASKS
from artattr.images import ImageInput, load_image
from artattr.preprocess import Preprocess

OTHER = "other"
MISSING = -1
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class Row:
    path: str                         # the image file, or ``hf:NAME/SPLIT#INDEX`` for a row of a table
    labels: dict[str, str]
    split: str = ""
    artist_fold: int = -1
    #: the memory-mapped ``datasets`` table holding this row's encoded image (shared by all its rows)
    table: object = field(default=None, repr=False, compare=False)
    index: int = -1


def image_input(row: Row) -> ImageInput:
    """What :func:`artattr.images.load_image` reads for ``row``: its file, or its encoded bytes."""
    if row.table is None:
        return row.path
    image = row.table[row.index]["image"]
    return image["bytes"] if image.get("bytes") else image["path"]


def load_source(data: str, tasks=TASKS, imagefolder_task: str = "style") -> list[Row]:
    """All rows of ``data`` (any source listed in the module docstring)."""
    if data.startswith("hf:"):
        return hf_rows(data[3:], tasks)
    root = Path(data).expanduser()
    if root.is_file() and root.suffix.lower() == ".csv" or (root / "metadata.csv").is_file():
        return read_rows(root)
    if root.is_dir():
        return imagefolder_rows(root, imagefolder_task)
    raise ValueError(f"data {data!r}: not a CSV file, a folder with metadata.csv, an ImageFolder, or 'hf:NAME'")


def read_rows(data: str | Path) -> list[Row]:
    """Rows of ``DATA/metadata.csv`` (or of the CSV file ``DATA``); image paths are made absolute."""
    meta = Path(data)
    meta = meta if meta.is_file() else meta / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: no metadata.csv; expected columns path,style,artist,genre[,split]")
    rows = []
    with meta.open(newline="") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise ValueError(f"{meta}: no 'path' column (columns: {reader.fieldnames})")
        for r in reader:
            rows.append(Row(
                path=str(meta.parent / r["path"]),
                labels={t: (r.get(t) or "").strip() for t in TASKS},
                split=(r.get("split") or "").strip(),
                artist_fold=int(r["artist_fold"]) if (r.get("artist_fold") or "").strip() else -1,
            ))
    return rows


def imagefolder_rows(root: Path, task: str = "style") -> list[Row]:
    """``root/CLASS/*.jpg`` (no split) or ``root/{train,val}/CLASS/*.jpg`` (its own split)."""
    splits = [s for s in ("train", "val") if (root / s).is_dir()]
    rows = []
    for split in splits or [""]:
        for cls in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for f in sorted(cls.rglob("*")):
                if f.suffix.lower() in IMAGE_EXTS:
                    rows.append(Row(path=str(f), labels={t: (cls.name if t == task else "") for t in TASKS}, split=split))
    if not rows:
        raise ValueError(f"{root}: no metadata.csv and no images in class sub-folders "
                         "(expected ROOT/metadata.csv or ROOT/CLASS/image.jpg)")
    return rows


def hf_rows(spec: str, tasks=TASKS) -> list[Row]:
    """Rows of a ``datasets`` image table with ClassLabel columns (``huggan/wikiart``: artist, genre, style).

    ``spec`` is ``NAME[:SPLIT]``: a Hub id or a ``save_to_disk`` folder. Label names come from the
    features; "Unknown Artist"/"Unknown Genre" are missing labels. Without an artist_fold column one
    is derived from the artist name (stable across runs). A table with several splits keeps them
    (``validation`` is called ``val``); with one split the rows have none.
    """
    import datasets

    name, _, split = spec.rpartition(":") if ":" in spec.rsplit("/", 1)[-1] else (spec, "", "")
    local = Path(name).expanduser()
    try:
        if (local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(local))  # written by save_to_disk
        else:
            loaded = datasets.load_dataset(name)
    except ConnectionError as err:
        raise ValueError(f"hf:{name}: cannot download it ({err}); run once with network access (it is then cached "
                         "under ~/.cache/huggingface) and set HF_DATASETS_OFFLINE=1, or pass a local folder.") from None
    except FileNotFoundError as err:
        raise ValueError(f"hf:{name}: no such dataset ({err})") from None
    tables = loaded if isinstance(loaded, datasets.DatasetDict) else {"": loaded}
    if split:
        if split not in tables:
            raise ValueError(f"hf:{name}: no split {split!r} (splits: {sorted(tables)})")
        tables = {split: tables[split]}
    rows = []
    for split_name, ds in tables.items():
        label_cols = [t for t in tasks if t in ds.features]
        if "image" not in ds.features or not label_cols:
            raise ValueError(f"hf:{name}: expected an 'image' column and label columns {list(tasks)}; has {list(ds.features)}")
        names = {t: ds.features[t].names for t in label_cols}
        values = ds.select_columns(label_cols).to_dict()
        table = ds.cast_column("image", datasets.Image(decode=False))
        row_split = "" if len(tables) == 1 else ("val" if split_name == "validation" else split_name)
        for i in range(len(ds)):
            labels = {t: "" for t in TASKS}
            for t in label_cols:
                label = names[t][values[t][i]]
                labels[t] = "" if label.lower().startswith("unknown") else label
            artist = labels["artist"]
            rows.append(Row(path=f"hf:{name}/{split_name or 'all'}#{i}", labels=labels, split=row_split,
                            artist_fold=zlib.crc32(artist.encode()) % 5 if artist else -1, table=table, index=i))
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


class DecodedRows(Dataset):
    """uint8 ``(3, S, S)`` images exactly as :meth:`artattr.Predictor.pixels` makes them; augmentation
    and normalisation happen later, batched on the device. Unreadable files give ``ok=False``.
    ``view(image, i)``, when given, turns row ``i``'s decoded picture into what the model should see
    instead (e.g. :func:`train.cached.wall_photo_view`)."""

    def __init__(self, rows: list[Row], preprocess: Preprocess | int, view: Callable | None = None):
        self.rows, self.view = rows, view
        self.preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess(preprocess)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        try:
            image = image_input(self.rows[i])
            if self.view is not None:
                image = self.view(load_image(image), i)
            return self.preprocess.pixels(image).permute(2, 0, 1), i, True
        except (ValueError, OSError):
            size = self.preprocess.size
            return torch.zeros(3, size, size, dtype=torch.uint8), i, False


class ImageRows(Dataset):
    """Normalised model inputs with their label indices (the frozen-trunk cache and the probes);
    bad files are flagged (``ok=False``, labels missing), not fatal."""

    def __init__(self, rows: list[Row], vocab: Vocab, preprocess: Preprocess | int, mean=None, std=None,
                 view: Callable | None = None):
        if not isinstance(preprocess, Preprocess):  # (rows, vocab, size, mean, std)
            preprocess = Preprocess(preprocess, mean=tuple(mean), std=tuple(std))
        self.decoded, self.preprocess = DecodedRows(rows, preprocess, view), preprocess
        self.targets = vocab.targets(rows)

    def __len__(self) -> int:
        return len(self.decoded)

    def __getitem__(self, i: int):
        x, _, ok = self.decoded[i]
        y = {t: (v[i] if ok else torch.tensor(MISSING)) for t, v in self.targets.items()}
        if not ok:
            return torch.zeros(x.shape), y, ok
        return self.preprocess.normalise(x.permute(1, 2, 0)).contiguous(), y, ok

