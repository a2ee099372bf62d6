"""``python -m train surface``: train the learned painting localiser (``artattr/surface.onnx``).

Examples come from train-split paintings and four fifths of photos500 (the tests check the net on the
other fifth, ``photos500[::5]``), rendered on every core: wall photos
(``train.composite``; the wall plain, patterned or a real photo; the painting from small and far off
to filling the frame) whose target is the painted surface; clean scans, all painting; everyday
photos, none. All pass through the upload path at a small size (JPEG, squashed to the net's input),
so the net sees what it will serve on. Loss: binary cross-entropy + soft Dice (a small painting's
few pixels count as much as a large one's). The report gives the mask IoU and how often
:func:`artattr.surface.mask_quad` finds a quad with IoU >= 0.9 on held-out wall photos (val-split
paintings), and how often it finds one at all on held-out clean scans and everyday photos. ~35 min on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
#: Shares of wall photos, clean scans and everyday photos among the examples.
MIX = (0.7, 0.2, 0.1)
#: Walls of the wall photos: plain, patterned (``train.composite.patterned_wall``), a photos500 image.
WALLS = (0.4, 0.35, 0.25)
#: Channels of the net's four encoder stages (each halves the resolution).
WIDTHS = (16, 32, 64, 96)


def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SurfaceNet(nn.Module):
    """A small U-Net: four stride-2 stages, a whole-image context vector at the bottom (a painting is told
    from its wall by comparing the two), a decoder with skip connections; logits at the input's size.

    The decoder upsamples by nearest neighbour (the convolution after it smooths), and only the one-channel
    logits bilinearly: OpenCV's DNN module spent 10 of its 14 ms in bilinear resizes of many channels, and
    runs this graph in ~2.5 ms."""

    def __init__(self):
        super().__init__()
        widths = (3,) + WIDTHS
        self.down = nn.ModuleList(nn.Sequential(block(a, b, 2), block(b, b)) for a, b in zip(widths, widths[1:]))
        self.context = block(2 * WIDTHS[-1], WIDTHS[-1])
        self.up = nn.ModuleList(block(a + b, b) for a, b in zip(WIDTHS[:0:-1], WIDTHS[-2::-1]))
        self.head = nn.Conv2d(WIDTHS[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        x = self.context(torch.cat([x, x.mean((2, 3), keepdim=True).expand_as(x)], 1))
        for stage, skip in zip(self.up, skips[-2::-1]):
            x = stage(torch.cat([nn.functional.interpolate(x, scale_factor=2, mode="nearest"), skip], 1))
        return nn.functional.interpolate(self.head(x), scale_factor=2, mode="bilinear")


def example(kind: str, path: Path, backgrounds: list[Path], seed: list[int], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(input, mask, quad)``: the net's input (3, SIDE, SIDE) uint8, the target mask (SIDE, SIDE) uint8 and
    the painted surface's corners as fractions (zeros when there is none, the whole image for a scan)."""
    import cv2

    from artattr.images import load_image
    from artattr.locate import DECODE_SIZE
    from artattr.surface import SIDE, to_input
    from train.composite import patterned_wall, render_wall_photo

    rng = np.random.default_rng(seed)
    whole = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    if kind == "wall":
        wall = rng.choice(3, p=WALLS)
        background = (None, patterned_wall(rng, size), Image.open(backgrounds[rng.integers(len(backgrounds))]))[wall]
        photo, quad = render_wall_photo(Image.open(path), rng, background, size, cover=(0.15, 0.9))
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=90)
        image, quad = load_image(buf.getvalue(), draft_size=DECODE_SIZE), quad / np.array(photo.size)
    else:
        image, quad = Image.open(path).convert("RGB"), whole if kind == "scan" else np.zeros((4, 2))
    mask = np.zeros((SIDE, SIDE), np.uint8)
    if quad.any():
        cv2.fillConvexPoly(mask, np.round(quad * SIDE * 16).astype(np.int32), 1, cv2.LINE_8, shift=4)
    return to_input(image), mask, quad


def examples(rows: list[tuple[str, Path]], backgrounds: list[Path], seed: int, size: int,
             workers: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        jobs = pool.map(example, *zip(*rows), itertools.repeat(backgrounds), ([seed, k] for k in range(len(rows))),
                        itertools.repeat(size), chunksize=16)
        x, m, q = zip(*tqdm(jobs, total=len(rows), desc="rendering"))
    return np.stack(x), np.stack(m), np.stack(q)


def plan(paintings: list[Path], photos: list[Path], n: int, rng: np.random.Generator) -> list[tuple[str, Path]]:
    """``n`` (kind, path) pairs in the shares of :data:`MIX`."""
    kinds = rng.choice(["wall", "scan", "photo"], size=n, p=MIX)
    return [(k, photos[rng.integers(len(photos))] if k == "photo" else paintings[rng.integers(len(paintings))])
            for k in kinds]


def train(net: SurfaceNet, x: np.ndarray, m: np.ndarray, epochs: int, batch: int, lr: float, seed: int) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    net.train()
    bar = tqdm(total=steps, desc="training")
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for k in range(len(x) // batch):
            idx = order[k * batch:(k + 1) * batch]
            xb = torch.from_numpy(x[idx]).float() / 255
            mb = torch.from_numpy(m[idx]).float()[:, None]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb[flip], mb[flip] = xb[flip].flip(3), mb[flip].flip(3)
            logits = net(xb)
            p = torch.sigmoid(logits)
            dice = 1 - (2 * (p * mb).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + mb.sum((1, 2, 3)) + 1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, mb) + dice.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    net.eval()


def report(net: SurfaceNet, x: np.ndarray, m: np.ndarray, q: np.ndarray) -> dict:
    """Mask IoU on wall photos; quads found right (IoU >= 0.9) on wall photos and found at all elsewhere."""
    from artattr.surface import mask_quad
    from artattr.locate import quad_iou

    with torch.inference_mode():
        p = torch.cat([torch.sigmoid(net(torch.from_numpy(x[k:k + 256]).float() / 255)) for k in range(0, len(x), 256)])
    p = p[:, 0].numpy()
    wall = np.array([qq.any() and not np.allclose(qq, [[0, 0], [1, 0], [1, 1], [0, 1]]) for qq in q])
    inter, union = ((p >= 0.5) & (m > 0)).sum((1, 2)), ((p >= 0.5) | (m > 0)).sum((1, 2))
    quads = [mask_quad(pp) for pp in p]
    right = [found is not None and quad_iou(found, truth) >= 0.9 for found, truth in zip(quads, q)]
    return {"wall_mask_iou": float(np.mean((inter / np.maximum(union, 1))[wall])),
            "wall_quad_iou90": float(np.mean(np.array(right)[wall])),
            "wall_quad_found": float(np.mean([found is not None for found, w in zip(quads, wall) if w])),
            "other_quad_found": float(np.mean([found is not None for found, w in zip(quads, wall) if not w]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train surface", description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "wikiart11")
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos500")
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--held-out", type=int, default=600, help="examples of val-split paintings for the report")
    parser.add_argument("--size", type=int, default=512, help="wall photo size before it is squashed to the input")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--workers", type=int, default=None, help="processes rendering (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "artattr" / "surface.onnx")
    args = parser.parse_args(argv)

    rows = list(csv.DictReader(open(args.data / "metadata.csv")))
    paintings = {split: [args.data / r["path"] for r in rows if r["split"] == split] for split in ("train", "val")}
    photos = sorted((args.photos / "images").glob("*.jpg"))
    photos = {"train": [p for k, p in enumerate(photos) if k % 5], "val": photos[::5]}  # tests check on photos500[::5]
    rng = np.random.default_rng(args.seed)
    x, m, _ = examples(plan(paintings["train"], photos["train"], args.examples, rng), photos["train"], args.seed,
                       args.size, args.workers)
    net = SurfaceNet()
    train(net, x, m, args.epochs, args.batch, args.lr, args.seed)
    held = examples(plan(paintings["val"], photos["val"], args.held_out, rng), photos["val"], args.seed + 1, args.size,
                    args.workers)
    numbers = report(net, *held)
    print(", ".join(f"{k} {v:.1%}" for k, v in numbers.items()) + " (held out: val-split paintings)")
    export(net, args.out, {"examples": args.examples, "size": args.size, "epochs": args.epochs, "seed": args.seed,
                           "held_out": {k: round(v, 4) for k, v in numbers.items()}})
    print(f"wrote {args.out}")
    return 0


def export(net: SurfaceNet, path: Path, fitted_on: dict) -> None:
    """The net as ONNX (OpenCV's DNN module runs it in ``artattr.surface``), with how it was fitted in its metadata."""
    import onnx

    from artattr.surface import SIDE

    net.eval()
    torch.onnx.export(net, torch.zeros(1, 3, SIDE, SIDE), path, dynamo=False, input_names=["image"],
                      output_names=["logits"], opset_version=17)
    model = onnx.load(path)
    onnx.helper.set_model_props(model, {"fitted_on": json.dumps(fitted_on)})
    onnx.save(model, path)


if __name__ == "__main__":
    raise SystemExit(main())
