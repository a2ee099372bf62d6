"""CPU recipe (``recipe: cached`` in :mod:`train.fit`): freeze the early blocks, cache their
activations once, train the top blocks and heads.

On 2 CPU cores a full fine-tune of EfficientNet-Lite0 costs ~20 min an epoch; with the first
blocks frozen their output is the same every epoch, so we compute it once (for each image and
its mirror image, the only augmentation that keeps brushwork intact) and train the rest in minutes.
This is how the embedded default checkpoint is made::

    python -m train fit --config train/configs/default.yaml
    python -m train.cached --config train/configs/default.yaml   # the same, recipe forced to cached
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data import ImageRows


def lite_parts(model: nn.Module, k: int) -> tuple[nn.Module, nn.Module]:
    """(frozen trunk: stem + blocks[:k], trainable top: blocks[k:] + head + pooling) of an EfficientNet-Lite."""
    net = model.backbone
    trunk = nn.Sequential(net.conv_stem, net.bn1, *net.blocks[:k])
    top = nn.Sequential(*net.blocks[k:], net.conv_head, net.bn2, net.global_pool)
    return trunk, top


@torch.inference_mode()
def cache_features(trunk: nn.Module, ds: ImageRows, path: Path, flip: bool, desc: str) -> dict:
    """Trunk activations (float16) of every row, and of its mirror image when ``flip``; unreadable
    rows are flagged in ``ok`` so training can leave them out. Written once, atomically."""
    if path.is_file():
        data = torch.load(path)
        if "ok" not in data and data["bad"] == 0:  # caches written before readable flags were stored
            data["ok"] = torch.ones(len(data["feats"]), dtype=torch.bool)
        if "ok" in data:
            return data
    loader = DataLoader(ds, batch_size=64, num_workers=1, collate_fn=_collate)
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


if __name__ == "__main__":
    import sys

    from .fit import main

    sys.exit(main(sys.argv[1:] + ["--recipe", "cached"]))
