"""Where training batches come from and how they enter the model, for the ``full`` recipe.

Images are decoded to uint8 in DataLoader workers (:class:`train.data.DecodedRows`, the served
model's preprocessing) and augmented in batches on the device, so two CPU cores keep a model fed;
``u8_cache: true`` decodes once into a memory-mapped uint8 array for GPUs that outrun JPEG decoding.
Under torchrun each process reads its own shard (``DistributedSampler``) and augments with its own
random numbers. The frozen-trunk feed of the ``cached`` recipe is in :mod:`train.cached`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from artattr.preprocess import Preprocess

from .composite import photo_view
from .data import DecodedRows, Row
from .dist import Dist


@dataclass
class Feed:
    """``batches(epoch, train)`` yields ``(x, idx, ok)``: this process's model input on the device
    (augmented when ``train``), the row indices and the readable flags (CPU). ``module(model)`` is
    what maps such an ``x`` to the model's outputs (the module DDP wraps)."""

    batches: Callable[[int, bool], Iterator]
    module: Callable[[nn.Module], nn.Module]
    steps: int                                     # training batches per epoch and process
    backbone: Callable[[nn.Module], list]          # parameters trained at `lr` (the rest at `head_lr`)
    set_mode: Callable[[nn.Module, int], None]     # train/eval flags for an epoch


def epoch_gen(seed: int, epoch: int, stream: int = 0, rank: int = 0) -> torch.Generator:
    """Random numbers that depend only on (seed, epoch, stream, rank): a resumed run draws the same."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 8 + stream) * 4099 + rank)


def shard(n: int, d: Dist, seed: int, epoch: int, train: bool) -> DistributedSampler:
    """This process's rows of an epoch: shuffled (seed + epoch) and equal in number on every process
    when training; every row once (padded to equal length with repeats) when evaluating."""
    sampler = DistributedSampler(range(n), num_replicas=d.world, rank=d.rank, shuffle=train, seed=seed,
                                 drop_last=train and n >= d.world)
    sampler.set_epoch(epoch)
    return sampler


def augment(x: torch.Tensor, gen: torch.Generator, crop_scale: float, hflip: bool, jitter: float) -> torch.Tensor:
    """Per-image random resized crop (area >= crop_scale, aspect 3/4..4/3), mirror and colour jitter
    for a float batch in [0, 1], as one ``grid_sample`` on the batch's device."""
    b = x.shape[0]
    u = torch.rand(b, 6, generator=gen)
    area = crop_scale + (1 - crop_scale) * u[:, 0]
    ratio = torch.exp((u[:, 1] * 2 - 1) * math.log(4 / 3))
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (u[:, 2] * 2 - 1) * (1 - w)
    cy = (u[:, 3] * 2 - 1) * (1 - h)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if jitter:
        f = 1 + (torch.rand(b, 3, 1, 1, 1, generator=gen) * 2 - 1).to(x.device, x.dtype) * jitter
        x = x * f[:, 0]                                               # brightness
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * f[:, 1] + mean                               # contrast
        gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - gray) * f[:, 2] + gray                               # saturation
        x = x.clamp(0, 1)
    return x


def photo_sample(image: Image.Image, i: int, share: float, seed: int, epoch: int) -> Image.Image:
    """Row ``i``'s picture in ``epoch``: with probability ``share`` the painting as cut out of a phone
    photo of it (:func:`train.composite.photo_view`), a new one each epoch, the same when resumed."""
    rng = np.random.default_rng((seed, epoch, i))
    return photo_view(image, rng) if rng.random() < share else image


def u8_cache(rows: list[Row], preprocess: Preprocess, workers: int, cache_dir: str, desc: str,
             d: Dist = Dist()) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``rows`` once into ``(N, 3, S, S)`` uint8 memmap plus readable flags, reused across runs
    (under torchrun rank 0 decodes, the others wait and map the same files)."""
    key = hashlib.sha1(json.dumps([[r.path for r in rows], repr(preprocess)]).encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() / f"u8-{key}"
    if d.main and not (folder / "ok.npy").is_file():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        size = preprocess.size
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(rows), 3, size, size))
        ok = np.zeros(len(rows), dtype=bool)
        loader = DataLoader(DecodedRows(rows, preprocess), batch_size=256, num_workers=workers)
        for x, idx, good in tqdm(loader, desc=f"decoding {desc} to uint8", unit="batch"):
            images[idx.numpy()] = x.numpy()
            ok[idx.numpy()] = good.numpy()
        images.flush()
        np.save(tmp / "ok.npy", ok)
        del images
        try:
            tmp.rename(folder)
        except OSError:  # another run finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    d.barrier()
    return np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "ok.npy")


def image_feed(args, train_rows: list[Row], val_rows: list[Row], preprocess: Preprocess, device: torch.device,
               d: Dist = Dist()) -> Feed:
    """The ``full`` recipe: whole images through the whole model (``args``: :class:`train.args.FitArgs`)."""
    bs = args.batch_size
    per_rank = len(train_rows) // d.world if len(train_rows) >= d.world else len(train_rows)
    drop_last = per_rank > bs  # BatchNorm cannot train on a last batch of one
    caches = {}
    if args.u8_cache:
        caches = {True: u8_cache(train_rows, preprocess, args.workers, args.cache_dir, "train", d),
                  False: u8_cache(val_rows, preprocess, args.workers, args.cache_dir, "val", d)}

    def uint8_batches(rows: list[Row], train: bool, epoch: int):
        sampler = shard(len(rows), d, args.seed, epoch, train)
        if caches:
            images, ok = caches[train]
            order = torch.tensor(list(sampler), dtype=torch.long)
            stop = len(order) - (len(order) % bs if train and drop_last else 0)
            for i in range(0, stop, bs):
                idx = order[i: i + bs].sort().values  # sorted: sequential reads from the memmap
                yield torch.from_numpy(images[idx.numpy()]), idx, torch.from_numpy(ok[idx.numpy()])
        else:
            view = (functools.partial(photo_sample, share=args.photo_views, seed=args.seed, epoch=epoch)
                    if train and args.photo_views else None)
            yield from DataLoader(DecodedRows(rows, preprocess, view), batch_size=bs, sampler=sampler,
                                  generator=epoch_gen(args.seed, epoch, 2, d.rank), num_workers=args.workers,
                                  drop_last=train and drop_last, pin_memory=device.type == "cuda",
                                  prefetch_factor=4 if args.workers else None)

    def batches(epoch: int, train: bool):
        aug = epoch_gen(args.seed, epoch, 1, d.rank)
        for x, idx, ok in uint8_batches(train_rows if train else val_rows, train, epoch):
            x = x.to(device, non_blocking=True).float().div_(255)
            if train and (args.crop_scale < 1 or args.hflip or args.color_jitter):
                x = augment(x, aug, args.crop_scale, args.hflip, args.color_jitter)
            yield preprocess.standardise(x).contiguous(memory_format=torch.channels_last), idx, ok

    def set_mode(net: nn.Module, epoch: int) -> None:
        frozen = epoch < args.freeze_epochs
        net.train()
        net.backbone.requires_grad_(not frozen)
        if frozen:
            net.backbone.eval()  # keep the pretrained BatchNorm statistics while only the heads learn
        elif args.init:  # a trained checkpoint's statistics: small (CPU) batches would only blur them
            for module in net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    return Feed(batches, lambda model: model, per_rank // bs if drop_last else 1,
                lambda net: list(net.backbone.parameters()), set_mode)
