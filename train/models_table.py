"""``python -m train models [--size 160] [--models a,b]``: every registered architecture with its
parameter count and forward FLOPs at one input size.

Models are built on the ``meta`` device, so even the 308 M-parameter ``wikiart_cnn`` costs no
memory and no time; FLOPs come from ``torch.utils.flop_counter`` (2 per multiply-add, the
convention papers use for "GFLOPs").
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import artattr

#: WikiArt-11 head sizes: 11 styles, 10 genres, 108 artists with >= 50 training images + "other"
WIKIART11_TASKS = {"style": 11, "genre": 10, "artist": 109}
#: models whose weights depend on the input size (a flatten) are built for the size measured
SIZED_MODELS = {"wikiart_cnn"}


def build(name: str, size: int, tasks: dict[str, int] = WIKIART11_TASKS, device: str | torch.device = "cpu",
          **model_args) -> nn.Module:
    """``create_model`` as the comparison uses it: WikiArt-11 heads, random init, sized for ``size``."""
    if name in SIZED_MODELS:
        model_args.setdefault("input_size", size)
    with torch.device(device):
        return artattr.create_model(name, tasks=tasks, **model_args).eval()


def count_params(model: nn.Module) -> int:
    """Parameters used at inference (the ArcFace margin heads exist only for training)."""
    skip = {id(p) for p in model.arcface.parameters()} if hasattr(model, "arcface") else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def count_flops(model: nn.Module, size: int) -> int:
    """Forward FLOPs of one image; runs on the model's device (``meta`` costs nothing)."""
    x = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def table(names: list[str], size: int) -> list[dict]:
    rows = []
    for name in names:
        model = build(name, size, device="meta")
        rows.append({"model": name, "params": count_params(model), "flops": count_flops(model, size),
                     "cam_layer": model.cam_layer_name})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=160, help="input size in pixels (default 160, WikiArt-11's)")
    parser.add_argument("--models", default="", help="comma-separated names (default: every registered model)")
    args = parser.parse_args(argv)
    registered = artattr.list_models()
    names = [n.strip() for n in args.models.split(",") if n.strip()] or registered
    unknown = [n for n in names if n not in registered]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; registered: {', '.join(registered)}")
    print(f"{'model':<26} {'params (M)':>11} {f'GFLOPs @{args.size}px':>14}  Grad-CAM layer")
    for row in table(names, args.size):
        print(f"{row['model']:<26} {row['params'] / 1e6:>11.2f} {row['flops'] / 1e9:>14.2f}  {row['cam_layer']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
