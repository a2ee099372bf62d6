"""What ``python -m train trust`` fits on: cached backbone features of the views of each picture that
``Predictor.run`` could be given — clean training paintings, the same as phone photos on a wall
(``train.composite``) and as degraded scans, and everyday photos with augmentation (close-ups too) —
computed once per view and kept in the ``--cache`` folder, since the backbone is the costly part."""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import artattr

from .composite import render_wall_photo
from .data import read_rows


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def wall_photo_and_quad(painting: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """A phone photo of ``painting`` framed on a wall (:func:`train.composite.render_wall_photo`), at
    a size that still holds more detail than the locator's decode, and the painted surface's corners in it."""
    return render_wall_photo(painting, rng, size=int(rng.integers(400, 640)))


def wall_photo(painting: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo of :func:`wall_photo_and_quad`."""
    return wall_photo_and_quad(painting, rng)[0]


def degraded_scan(painting: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A poor reproduction: blurred or resampled, faded or colour-cast, noisy, recompressed."""
    img = painting.convert("RGB")
    if rng.random() < 0.5:
        small = int(rng.integers(48, 120))
        img = img.resize((small, small), Image.BILINEAR).resize(img.size, Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    fade = rng.uniform(0.6, 1.0)
    arr = arr * fade + (1 - fade) * rng.uniform(150, 240) + rng.normal(0, rng.uniform(0, 8), arr.shape)
    arr = arr * rng.uniform(0.85, 1.15, size=3)
    if rng.random() < 0.15:
        arr = arr.mean(-1, keepdims=True).repeat(3, -1)
    return _jpeg(Image.fromarray(arr.clip(0, 255).astype(np.uint8)), int(rng.integers(25, 85)))


def photo_variant(photo: Image.Image, rng: np.random.Generator, zoom: tuple[float, float] = (0.45, 1.0)) -> Image.Image:
    """An everyday photo cropped (to ``zoom`` of its size), flipped, re-exposed and recompressed differently."""
    img = photo.convert("RGB")
    w, h = img.size
    scale = rng.uniform(*zoom)
    cw, ch = max(40, int(w * scale)), max(40, int(h * scale * rng.uniform(0.8, 1.25)))
    cw, ch = min(cw, w), min(ch, h)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.7, 1.25, size=3) + rng.uniform(-20, 20)
    if rng.random() < 0.15:
        arr = arr.mean(-1, keepdims=True).repeat(3, -1)
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return _jpeg(img, int(rng.integers(35, 92)))


#: how each cached view is made from its source image (``None``: the image as it is)
VIEWS = {"clean": None, "museum": wall_photo, "scan": degraded_scan, "photo": photo_variant,
         # a close-up of fur, foliage, gravel or fabric is the kind of photo most like an abstract painting
         "closeup": functools.partial(photo_variant, zoom=(0.2, 0.45))}


class _Views(Dataset):
    """What ``Predictor.run`` feeds the model for ``VIEWS[view](image, rng)``: the picture goes through
    the painting locator (``Predictor.find``), as every upload does. Seeded per item so a cache is
    reproducible."""

    def __init__(self, predictor: artattr.Predictor, items: list[tuple[str, str, int]]):
        self.predictor, self.items = predictor, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        path, view, seed = self.items[i]
        image = path if VIEWS[view] is None else VIEWS[view](Image.open(path).convert("RGB"), np.random.default_rng(seed))
        return self.predictor.pixels(self.predictor.find(image, locate=True)[0])


@torch.inference_mode()
def features(predictor: artattr.Predictor, items: list[tuple[str, str, int]], batch_size: int = 64,
             workers: int = 1, desc: str = "features") -> np.ndarray:
    """The artwork head's input (``MultiTaskModel.artwork_features``: pooled backbone features first)
    of ``(path, view, seed)`` items, float32."""
    loader = DataLoader(_Views(predictor, items), batch_size=batch_size, num_workers=workers,
                        prefetch_factor=4 if workers else None)
    chunks = [predictor.model.artwork_features(predictor.normalise(x)).float().numpy()
              for x in tqdm(loader, desc=desc, unit="batch")]
    return np.concatenate(chunks) if chunks else np.zeros((0, predictor.model.artwork.in_features), np.float32)


def cached_features(predictor: artattr.Predictor, cache: Path, name: str, items: list[tuple[str, str, int]],
                    workers: int = 1) -> np.ndarray:
    """``features`` of ``items``, read from ``cache/name.npz`` when it holds exactly these items."""
    path = cache / f"{name}.npz"
    key = json.dumps(items)
    if path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                return z["feats"].astype(np.float32)
    feats = features(predictor, items, workers=workers, desc=name)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, feats=feats.astype(np.float16), key=np.array(key))
    return feats


@dataclass
class Views:
    """The cached features one ``trust`` run works on (rows index ``read_rows(data)``)."""

    val: np.ndarray               # (n_val, F) every val painting, clean
    val_rows: np.ndarray          # their row indices
    train: np.ndarray             # a sample of training paintings, clean (artwork head positives)
    train_rows: np.ndarray
    train_all: np.ndarray         # every training painting, clean (the artist-fold check)
    train_all_rows: np.ndarray
    train_museum: np.ndarray      # training paintings as museum photos / degraded scans (positives)
    train_scan: np.ndarray
    val_museum: np.ndarray        # val paintings as museum photos / scans: false alarms, never fitted on
    val_scan: np.ndarray
    photos: np.ndarray            # (n_photos, 1 + len(PHOTO_VIEWS), F): each photo as it is, then its variants
    photo_wnids: list[str]


def sample_train(rows: list, known: set[str], per_artist: int = 15, n_other: int = 1000, seed: int = 0) -> np.ndarray:
    """Training rows for the artwork head's positives: ``per_artist`` paintings of each known artist
    and ``n_other`` of everybody else; the clean views use a random 1,400 of them (~8 per known
    artist), the museum photos and degraded scans others. (The artist-fold check uses every training
    painting: its stand-in artist heads need them.)"""
    rng = np.random.default_rng(seed)
    by_artist: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.split == "train":
            by_artist.setdefault(r.labels["artist"] if r.labels["artist"] in known else "", []).append(i)
    picked = [rng.choice(ids, min(per_artist, len(ids)), replace=False) for a, ids in sorted(by_artist.items()) if a]
    other = by_artist.get("", [])
    picked.append(rng.choice(other, min(n_other, len(other)), replace=False))
    return np.sort(np.concatenate(picked))


#: the views of each photo in ``Views.photos``, after the photo as it is
PHOTO_VIEWS = ("photo", "photo", "photo", "closeup")


def view_items(config: artattr.ModelConfig, rows: list, photos: str | Path
               ) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``({name: [(path, view, seed), ...]}, val rows, sampled clean train rows, all train rows, photo
    wnids)``: every cached feature set (the sampled clean rows are read out of ``train_all``)."""
    import csv

    unknown = config.unknown_label.get("artist")
    known = set(config.tasks.get("artist", [])) - {unknown}
    val_rows = np.array([i for i, r in enumerate(rows) if r.split == "val"])
    all_train_rows = np.array([i for i, r in enumerate(rows) if r.split == "train"])
    train_rows = sample_train(rows, known)
    rng = np.random.default_rng(1)
    museum_rows = rng.choice(train_rows, min(1500, len(train_rows)), replace=False)
    scan_rows = rng.choice(train_rows, min(600, len(train_rows)), replace=False)
    vmuseum_rows = rng.choice(val_rows, min(600, len(val_rows)), replace=False)
    vscan_rows = rng.choice(val_rows, min(300, len(val_rows)), replace=False)
    clean_rows = np.sort(rng.choice(train_rows, min(1400, len(train_rows)), replace=False))
    with (Path(photos) / "metadata.csv").open(newline="") as f:
        photo_meta = list(csv.DictReader(f))

    def items(idx, view, salt):
        return [(rows[i].path, view, int(salt + i)) for i in idx]

    return ({"val": items(val_rows, "clean", 0), "train_all": items(all_train_rows, "clean", 0),
            "photos": [(str(Path(photos) / m["path"]), view, 1000 * k + v)
                       for k, m in enumerate(photo_meta) for v, view in enumerate(("clean", *PHOTO_VIEWS))],
            "train_museum": items(museum_rows, "museum", 10 ** 6), "train_scan": items(scan_rows, "scan", 2 * 10 ** 6),
            "val_museum": items(vmuseum_rows, "museum", 3 * 10 ** 6), "val_scan": items(vscan_rows, "scan", 4 * 10 ** 6)},
            val_rows, clean_rows, all_train_rows, [m["wnid"] for m in photo_meta])


def build_views(predictor: artattr.Predictor, data: str | Path, photos: str | Path, cache: str | Path,
                workers: int = 1) -> Views:
    """Compute (or read from ``cache``) every feature set the trust heads and thresholds need."""
    its, val_rows, clean_rows, all_train_rows, wnids = view_items(predictor.config, read_rows(data), photos)
    f = {name: cached_features(predictor, Path(cache), name, items, workers) for name, items in its.items()}
    train = f["train_all"][np.searchsorted(all_train_rows, clean_rows)]  # the sample's rows, sorted, are train rows
    return Views(f["val"], val_rows, train, clean_rows, f["train_all"], all_train_rows, f["train_museum"],
                 f["train_scan"], f["val_museum"], f["val_scan"], f["photos"].reshape(len(wnids), 1 + len(PHOTO_VIEWS), -1),
                 wnids)


def photo_groups(wnids: list[str], n_groups: int = 20) -> np.ndarray:
    """Group id per photo: runs of neighbouring WordNet ids (dogs with dogs, vehicles with vehicles),
    so a held-out group is a family of classes the detector has seen nothing like."""
    order = np.argsort(wnids, kind="stable")
    groups = np.empty(len(wnids), dtype=int)
    groups[order] = np.arange(len(wnids)) * n_groups // len(wnids)
    return groups
