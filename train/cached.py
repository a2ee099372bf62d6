"""CPU recipe (``recipe: cached`` in :mod:`train.fit`): freeze the early blocks, cache their
activations once, train the top blocks and heads.

On 2 CPU cores a full fine-tune of EfficientNet-Lite0 costs ~20 min an epoch; with the first
blocks frozen their output is the same every epoch, so we compute it once (for each image and
its mirror image, the only augmentation that keeps brushwork intact) and train the rest in minutes.
With ``wall_photos`` > 0 each image is also cached as the model sees it in a phone photo of it on a
wall (:func:`wall_photo_view`: framed, off-axis, re-lit, recompressed, then cut out by the painting
locator exactly as an upload is), and that view stands in for the scan in this share of the samples:
the classifier learns to survive imperfect crops, glare and JPEG noise. This is how the embedded
default checkpoint is made::

    python -m train fit --config train/configs/default.yaml

Under torchrun rank 0 computes the cache and every process trains on its shard of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from artattr.locate import locate_painting
from artattr.preprocess import Preprocess

from .args import ConfigError
from .composite import relight
from .data import ImageRows, Row, Vocab
from .dist import Dist
from .feeds import Feed, epoch_gen, shard
from .trust_views import wall_photo_and_quad


def lite_parts(model: nn.Module, k: int) -> tuple[nn.Module, nn.Module]:
    """(frozen trunk: stem + blocks[:k], trainable top: blocks[k:] + head + pooling) of an EfficientNet-Lite."""
    net = model.backbone
    trunk = nn.Sequential(net.conv_stem, net.bn1, *net.blocks[:k])
    top = nn.Sequential(*net.blocks[k:], net.conv_head, net.bn2, net.global_pool)
    return trunk, top


def wall_photo_view(painting: Image.Image, i: int, seed: int = 0, relit: float = 0.0) -> Image.Image:
    """What the model gets from a phone photo of ``painting`` on a wall (row ``i``'s own, reproducible
    one): the painted surface the locator cuts out of it, or the whole photo when it finds none. A ``relit``
    share of the photos is taken under harder light (:func:`train.composite.relight`), drawn from a stream
    of its own so that the photos themselves stay those of ``relit`` 0."""
    photo, quad = wall_photo_and_quad(painting, np.random.default_rng((seed, i)))
    light = np.random.default_rng((seed, i, 1))
    if light.random() < relit:
        photo = relight(photo, light, quad)
    return locate_painting(photo)[0]


@torch.inference_mode()
def cache_features(trunk: nn.Module, ds: ImageRows, path: Path, flip: bool, desc: str, workers: int = 1) -> dict:
    """Trunk activations (float16) of every row, and of its mirror image when ``flip``; unreadable
    rows are flagged in ``ok`` so training can leave them out. Written once, atomically."""
    if path.is_file():
        data = torch.load(path)
        if "ok" not in data and data["bad"] == 0:  # caches written before readable flags were stored
            data["ok"] = torch.ones(len(data["feats"]), dtype=torch.bool)
        if "ok" in data:
            return data
    loader = DataLoader(ds, batch_size=64, num_workers=workers, collate_fn=_collate)
    feats, flips, oks = [], [], []
    for x, _, ok in tqdm(loader, desc=f"caching {desc}", unit="batch"):
        feats.append(trunk(x).half())
        if flip:
            flips.append(trunk(x.flip(-1)).half())
        oks.append(ok)
    ok = torch.cat(oks)
    data = {"feats": torch.cat(feats), "flips": torch.cat(flips) if flip else None, "ok": ok, "bad": int((~ok).sum())}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return data


def _collate(batch):
    xs, ys, oks = zip(*batch)
    return torch.stack(xs), {t: torch.stack([y[t] for y in ys]) for t in ys[0]}, torch.tensor(oks)



class Top(nn.Module):
    """blocks[k:] + head + pooling + the task heads: what trains on cached trunk activations."""

    def __init__(self, model: nn.Module, k: int):
        super().__init__()
        self.model, self.top = model, lite_parts(model, k)[1]

    def forward(self, f: torch.Tensor) -> dict:
        return self.model.forward_head(self.top(f.float().contiguous(memory_format=torch.channels_last)))


def cached_feed(args, train_rows: list[Row], val_rows: list[Row], vocab: Vocab, model: nn.Module,
                preprocess: Preprocess, device: torch.device, d: Dist = Dist()) -> Feed:
    """The CPU recipe: blocks[:frozen_blocks] run once per image (and its mirror image, and its wall
    photo when ``args.wall_photos``), the rest trains."""
    if not args.architecture.startswith("efficientnet_lite"):
        raise ConfigError(f"recipe 'cached' needs an EfficientNet-Lite architecture, not {args.architecture!r}")
    trunk, _ = lite_parts(model, args.frozen_blocks)
    trunk.eval().requires_grad_(False)
    key = hashlib.sha1(json.dumps([args.data, args.architecture, repr(preprocess), args.frozen_blocks, args.split,
                                   args.limit, len(train_rows)]).encode()).hexdigest()[:12]
    cache = Path(args.cache_dir).expanduser() / key
    photos_file = f"wall_photos_{args.seed}" + (f"_relit{args.relit_photos:g}" if args.relit_photos else "") + ".pt"
    if d.main:
        cache_features(trunk, ImageRows(train_rows, vocab, preprocess), cache / "train.pt", True, "train")
        cache_features(trunk, ImageRows(val_rows, vocab, preprocess), cache / "val.pt", False, "val")
        if args.wall_photos:
            view = functools.partial(wall_photo_view, seed=args.seed, relit=args.relit_photos)
            cache_features(trunk, ImageRows(train_rows, vocab, preprocess, view=view), cache / photos_file,
                           False, "train wall photos", workers=max(1, args.workers))
    d.barrier()
    tr, va = torch.load(cache / "train.pt"), torch.load(cache / "val.pt")
    photos = torch.load(cache / photos_file) if args.wall_photos else None
    n, bs = len(train_rows), args.batch_size

    def batches(epoch: int, train: bool):
        order = torch.tensor(list(shard(len(train_rows if train else val_rows), d, args.seed, epoch, train)))
        if not train:
            for i in range(0, len(order), 256):
                idx = order[i: i + 256]
                yield va["feats"][idx].to(device), idx, va["ok"][idx]
            return
        gen = epoch_gen(args.seed, epoch, 0, d.rank)
        for i in range(0, len(order), bs):
            idx = order[i: i + bs]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x, ok = torch.where(flip[:, None, None, None], tr["flips"][idx], tr["feats"][idx]), tr["ok"][idx]
            if photos is not None:
                photo = torch.rand(len(idx), generator=gen) < args.wall_photos
                x = torch.where(photo[:, None, None, None], photos["feats"][idx], x)
                ok = ok & (photos["ok"][idx] | ~photo)
            yield x.to(device), idx, ok

    return Feed(batches, lambda net: Top(net, args.frozen_blocks), math.ceil(n // d.world / bs),
                lambda net: list(lite_parts(net, args.frozen_blocks)[1].parameters()), lambda net, epoch: net.train())
