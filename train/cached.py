"""CPU recipe: freeze the early blocks, cache their activations once, train the top blocks and heads.

On 2 CPU cores a full fine-tune of EfficientNet-Lite0 costs ~20 min an epoch; with the first
blocks frozen their output is the same every epoch, so we compute it once (for each image and
its mirror image, the only augmentation that keeps brushwork intact) and train the rest in minutes.
This is how the embedded default checkpoint is made.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

import artattr
from artattr.checkpoint import ModelConfig, save_checkpoint

from .data import ImageRows, Vocab, read_rows, split_rows
from .metrics import all_metrics, mean_macro_f1


@dataclass
class CachedArgs:
    data: str = "../shared/data/wikiart11"
    out: str = "runs/default"
    architecture: str = "efficientnet_lite0"
    input_size: int = 160
    tasks: list[str] = field(default_factory=lambda: ["style", "genre", "artist"])
    split: str = "csv"
    min_artist_images: int = 50
    frozen_blocks: int = 5           # blocks[:frozen_blocks] are frozen and cached
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    head_lr: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5  # weight = (n_max / n_c) ** power: 0 = none, 1 = inverse frequency
    arcface_task: str = "style"
    arcface_weight: float = 0.5
    embed_dim: int = 128
    dropout: float = 0.3
    cache_dir: str = "~/.cache/artattr"
    limit: int = 0                   # use only the first N train/val rows (smoke tests)
    seed: int = 0
    half: bool = True


def _lite_parts(model: nn.Module, k: int) -> tuple[nn.Module, nn.Module]:
    net = model.backbone
    trunk = nn.Sequential(net.conv_stem, net.bn1, *net.blocks[:k])
    top = nn.Sequential(*net.blocks[k:], net.conv_head, net.bn2, net.global_pool)
    return trunk, top


@torch.inference_mode()
def cache_features(trunk: nn.Module, ds: ImageRows, path: Path, flip: bool, desc: str) -> dict:
    if path.is_file():
        return torch.load(path)
    loader = DataLoader(ds, batch_size=64, num_workers=1, collate_fn=_collate)
    feats, flips, bad = [], [], 0
    for x, _, ok in tqdm(loader, desc=f"caching {desc}", unit="batch"):
        feats.append(trunk(x).half())
        if flip:
            flips.append(trunk(x.flip(-1)).half())
        bad += int((~ok).sum())
    data = {"feats": torch.cat(feats), "flips": torch.cat(flips) if flip else None, "bad": bad}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return data


def _collate(batch):
    xs, ys, oks = zip(*batch)
    return torch.stack(xs), {t: torch.stack([y[t] for y in ys]) for t in ys[0]}, torch.tensor(oks)


def _class_weights(targets: torch.Tensor, n: int, power: float) -> torch.Tensor:
    counts = torch.bincount(targets[targets >= 0], minlength=n).float().clamp(min=1)
    w = (counts.max() / counts) ** power
    return w / (w * counts).sum() * counts.sum()


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """One scalar T minimising validation NLL (Guo et al. 2017): probabilities that mean what they say."""
    keep = targets >= 0
    logits, targets = logits[keep].float(), targets[keep]
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.exp().clamp(0.05, 20.0))


def run(args: CachedArgs) -> Path:
    torch.manual_seed(args.seed)
    rows = read_rows(args.data)
    train_rows, val_rows = split_rows(rows, args.split, seed=args.seed)
    if args.limit:
        train_rows, val_rows = train_rows[: args.limit], val_rows[: max(args.limit // 4, 8)]
    vocab = Vocab.build(train_rows, args.tasks, args.min_artist_images)
    model = artattr.create_model(args.architecture, tasks=vocab.labels, pretrained=True, embed_dim=args.embed_dim,
                                 arcface_task=args.arcface_task, dropout=args.dropout)
    trunk, top = _lite_parts(model, args.frozen_blocks)
    trunk.eval().requires_grad_(False)
    mean, std = model.mean, model.std

    key = hashlib.sha1(json.dumps([args.data, args.architecture, args.input_size, args.frozen_blocks, args.split,
                                   args.limit, len(train_rows)]).encode()).hexdigest()[:12]
    cache = Path(args.cache_dir).expanduser() / key
    tr = cache_features(trunk, ImageRows(train_rows, vocab, args.input_size, mean, std), cache / "train.pt", True, "train")
    va = cache_features(trunk, ImageRows(val_rows, vocab, args.input_size, mean, std), cache / "val.pt", False, "val")
    y_tr, y_va = vocab.targets(train_rows), vocab.targets(val_rows)
    print(f"train {len(train_rows)} (unreadable {tr['bad']}), val {len(val_rows)} (unreadable {va['bad']})")

    weights = {t: _class_weights(y_tr[t], len(vocab.labels[t]), args.class_weight_power) for t in vocab.labels}
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.AdamW([
        {"params": list(top.parameters()), "lr": args.lr},
        {"params": head_params, "lr": args.head_lr},
    ], weight_decay=args.weight_decay)
    n = len(train_rows)
    steps = args.epochs * math.ceil(n / args.batch_size)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))

    def forward(f: torch.Tensor) -> dict[str, torch.Tensor]:
        return model.forward_head(top(f.float()))

    best, history = (-1.0, None, None), []
    for epoch in range(args.epochs):
        model.train()
        trunk.eval()
        perm = torch.randperm(n)
        bar = tqdm(range(0, n, args.batch_size), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        t0, seen, total = time.time(), 0, 0.0
        for i in bar:
            idx = perm[i: i + args.batch_size]
            use_flip = torch.rand(len(idx)) < 0.5
            f = torch.where(use_flip[:, None, None, None], tr["flips"][idx], tr["feats"][idx])
            out = forward(f)
            loss = sum(F.cross_entropy(out[t], y_tr[t][idx], weight=weights[t], ignore_index=-1,
                                       label_smoothing=args.label_smoothing)
                       for t in vocab.labels if (y_tr[t][idx] >= 0).any())
            for key_, head in model.arcface.items():
                y = y_tr[args.arcface_task][idx]
                loss = loss + args.arcface_weight * F.cross_entropy(head(out[key_], y), y, ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            seen += len(idx)
            total += loss.item() * len(idx)
            bar.set_postfix(loss=f"{total / seen:.3f}", img_s=f"{seen / (time.time() - t0):.0f}")
        logits = evaluate_logits(forward, model, va["feats"])
        metrics = all_metrics({t: torch.softmax(logits[t], -1).numpy() for t in vocab.labels},
                              {t: y_va[t].numpy() for t in vocab.labels}, vocab.labels, vocab.unknown)
        score = mean_macro_f1(metrics)
        history.append({"epoch": epoch + 1, "train_loss": total / seen, "val": metrics, "mean_macro_f1": score})
        print(json.dumps({k: {m: round(v, 4) for m, v in d.items()} for k, d in metrics.items()}))
        if score > best[0]:
            best = (score, {k: v.clone() for k, v in model.state_dict().items()}, metrics)

    model.load_state_dict(best[1])
    logits = evaluate_logits(forward, model, va["feats"])
    temps = {t: fit_temperature(logits[t], y_va[t]) for t in vocab.labels}
    config = ModelConfig(
        architecture=args.architecture, tasks=vocab.labels, input_size=args.input_size, resize="squash",
        mean=mean, std=std, temperature=temps, unknown_label=vocab.unknown,
        model_args={"embed_dim": args.embed_dim, "arcface_task": args.arcface_task, "dropout": args.dropout},
        metrics=best[2],
    )
    out = save_checkpoint(model.eval(), config, args.out, half=args.half, description=(
        f"EfficientNet-Lite0 (ImageNet) fine-tuned on WikiArt-11 `{args.split}` split: blocks "
        f"{args.frozen_blocks}+ and heads trained for {args.epochs} epochs on CPU (frozen-trunk cache, "
        f"mirror augmentation), label smoothing {args.label_smoothing}, class weights power "
        f"{args.class_weight_power}, ArcFace ({args.arcface_task}) embeddings. Metrics are on the val split; "
        "`artist_known` counts only val paintings by the artists the model knows (≥ "
        f"{args.min_artist_images} training images); the rest are labelled `other`."))
    (out / "history.json").write_text(json.dumps({"args": asdict(args), "history": history}, indent=1))
    return out


@torch.inference_mode()
def evaluate_logits(forward, model: nn.Module, feats: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    model.eval()
    chunks = [forward(feats[i: i + batch_size]) for i in range(0, len(feats), batch_size)]
    return {t: torch.cat([c[t] for c in chunks]) for t in model.tasks}


if __name__ == "__main__":
    import sys

    import yaml

    cfg = {}
    argv = sys.argv[1:]
    if argv[:1] == ["--config"]:
        cfg = yaml.safe_load(Path(argv[1]).read_text()) or {}
        argv = argv[2:]
    for k, v in zip(argv[::2], argv[1::2]):
        cfg[k.lstrip("-").replace("-", "_")] = yaml.safe_load(v)
    print(run(CachedArgs(**cfg)))
