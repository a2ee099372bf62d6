"""``python -m train soup A B --weight W --out C``: one checkpoint whose weights are ``(1 - W) A + W B``.

Two fine-tunes of the same pretrained network, one on clean scans and light photos, one on harder photos,
trade clean accuracy for robustness; averaging their weights (Wortsman et al., "Robust fine-tuning of
zero-shot models", WiSE-FT, and "Model soups", 2022) keeps most of both instead of choosing. It works for
runs that started from the same weights (the cached recipe's ImageNet blocks and seeded heads), not for
unrelated ones. The embedded default is made this way (``train/configs/default.yaml``). The result keeps
B's config; run ``train trust`` on it afterwards, as the artwork head, temperatures and thresholds of
neither run fit the averaged features.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn

from artattr.checkpoint import CARD_FILE, load_checkpoint, save_checkpoint
from artattr.config import CheckpointError

from .display_names import card_description


def soup(a: nn.Module, b: nn.Module, weight: float) -> nn.Module:
    """``b`` with every floating-point tensor replaced by ``(1 - weight) a + weight b`` (``a`` may carry more
    tensors, e.g. a fitted artwork head: those are left out); counters stay ``b``'s."""
    ours, theirs = b.state_dict(), a.state_dict()
    mixed = {}
    for key, tensor in ours.items():
        if tensor.is_floating_point():
            if key not in theirs or theirs[key].shape != tensor.shape:
                raise CheckpointError(f"{key}: not in the first checkpoint with shape {tuple(tensor.shape)}; "
                                      f"a soup needs two runs of the same architecture and labels")
            tensor = torch.lerp(theirs[key].float(), tensor.float(), weight)
        mixed[key] = tensor
    b.load_state_dict(mixed)
    return b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train soup", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="checkpoint folder (weight 1 - W)")
    parser.add_argument("b", help="checkpoint folder (weight W); its config is kept")
    parser.add_argument("--weight", type=float, required=True, help="W, from 0 (A) to 1 (B)")
    parser.add_argument("--out", required=True, help="the averaged checkpoint's folder")
    args = parser.parse_args(argv)
    if not 0 <= args.weight <= 1:
        parser.error(f"--weight: from 0 to 1, not {args.weight}")
    (a, config_a), (b, config) = load_checkpoint(args.a), load_checkpoint(args.b)
    if (config_a.architecture, config_a.tasks, config_a.input_size) != (config.architecture, config.tasks, config.input_size):
        parser.error("the two checkpoints differ in architecture, labels or input size")
    said = [card_description(card.read_text()) if card.is_file() else Path(card.parent).name
            for card in (Path(args.a) / CARD_FILE, Path(args.b) / CARD_FILE)]
    description = (f"Weights {1 - args.weight:.2f} x A + {args.weight:.2f} x B (`python -m train soup`). "
                   f"A: {said[0]} B: {said[1]}")
    out = save_checkpoint(soup(a, b, args.weight), config, args.out, description, half=True)
    print(f"{out}: {1 - args.weight:.2f} x {args.a} + {args.weight:.2f} x {args.b}")
    return 0
