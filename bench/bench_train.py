"""Is the data pipeline the bottleneck? Training throughput on real images vs in-memory tensors.

Runs the same training step (forward, masked multi-task loss, backward, AdamW) of a full
fine-tune twice: once fed by :func:`train.fit.image_feed` (JPEG decoding in DataLoader workers,
batched augmentation) over real WikiArt-11 paintings, once on random tensors already in memory.
Target: real >= 0.8 x synthetic on 2 CPU cores.

    python bench/bench_train.py [--size 160] [--batch 32] [--steps 12] [--workers 1] [--u8-cache]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from common import DATA  # noqa: E402  (also puts the repo on sys.path)

import artattr  # noqa: E402
from train.data import Vocab, split_rows  # noqa: E402
from train.fit import TaskLoss, image_feed, load_rows, make_args, pick_device  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--u8-cache", action="store_true", help="feed from the decoded uint8 memmap instead of JPEGs")
    opts = parser.parse_args()

    args = make_args({"data": opts.data, "architecture": opts.arch, "input_size": opts.size, "batch_size": opts.batch,
                      "workers": opts.workers, "u8_cache": opts.u8_cache, "pretrained": False})
    device = pick_device(args.device)
    rows, read = load_rows(args)
    train_rows, val_rows = split_rows(rows, args.split)
    train_rows = train_rows[: opts.batch * (opts.steps + 4)]  # just enough rows for the timed steps
    vocab = Vocab.build(train_rows, args.tasks, min_artist_images=2)
    targets = vocab.targets(train_rows)
    model = artattr.create_model(args.architecture, tasks=vocab.labels, embed_dim=args.embed_dim,
                                 arcface_task=args.arcface_task, dropout=args.dropout)
    model.to(device).to(memory_format=torch.channels_last)  # as train.fit.run does
    feed = image_feed(args, train_rows, val_rows[:8], read, model.mean, model.std, device)
    criterion = TaskLoss(args, vocab, targets).to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(criterion.parameters()), lr=1e-4)
    model.train()

    def step(x: torch.Tensor, idx: torch.Tensor) -> None:
        out = feed.forward(model, x)
        loss, _ = criterion(out, {t: y[idx].to(device) for t, y in targets.items()}, model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(batches) -> float:
        batches = iter(batches)
        for x, idx, _ in itertools.islice(batches, 2):  # warm-up: allocator, workers, first decode
            step(x, idx)
        t0, n = time.perf_counter(), 0
        for x, idx, _ in itertools.islice(batches, opts.steps):
            step(x, idx)
            n += len(idx)
        return n / (time.perf_counter() - t0)

    synthetic = [(torch.randn(opts.batch, 3, opts.size, opts.size, device=device).contiguous(memory_format=torch.channels_last),
                  torch.arange(i * opts.batch, (i + 1) * opts.batch), None) for i in range(4)]
    fake = timed(itertools.cycle(synthetic))
    real = timed(feed.batches(0, True))
    print(f"{args.architecture} {opts.size}px batch {opts.batch}, {torch.get_num_threads()} torch threads, "
          f"{opts.workers} decode worker(s){', uint8 memmap' if opts.u8_cache else ''} on {device}")
    print(f"synthetic in-memory: {fake:7.1f} img/s")
    print(f"real images        : {real:7.1f} img/s")
    print(f"ratio real/synthetic: {real / fake:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
