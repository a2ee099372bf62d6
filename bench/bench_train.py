"""Is the data pipeline the bottleneck? Training throughput from every ``--data`` source vs in-memory tensors.

Runs the same training step (forward, masked multi-task loss, backward, AdamW) of a full
fine-tune fed by :func:`train.feeds.image_feed` (decoding in DataLoader workers, batched
augmentation) from each source :func:`train.data.load_source` reads — the WikiArt-11
``metadata.csv`` folder, the CSV file itself, an ImageFolder and a ``datasets`` table saved with
``save_to_disk`` (read as ``hf:DIR``), all of the same paintings — plus the uint8 memmap, and once
on random tensors already in memory. Target: every source >= 0.8 x synthetic on 2 CPU cores.

    python bench/bench_train.py [--size 160] [--batch 32] [--steps 12] [--workers 1]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import tempfile
import time
from pathlib import Path

import torch

from common import DATA  # noqa: E402  (also puts the repo on sys.path)

import artattr  # noqa: E402
from artattr.config import TASKS  # noqa: E402
from train.data import Vocab, load_source  # noqa: E402
from train.feeds import image_feed  # noqa: E402
from train.fit import TaskLoss, autocast, make_args, pick_device, preprocessing  # noqa: E402


def make_sources(n: int, tmp: Path) -> dict[str, str]:
    """The first ``n`` train paintings of WikiArt-11 as every kind of source."""
    with (DATA / "metadata.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"][:n]
    with (tmp / "rows.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([dict(r, path=str(DATA / r["path"])) for r in rows])
    folder = tmp / "imagefolder"
    for i, r in enumerate(rows):
        target = folder / "train" / r["style"] / f"{i}{Path(r['path']).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(DATA / r["path"])
    import datasets

    names = {t: sorted({r[t] for r in rows} | {"Unknown"}) for t in TASKS}
    features = datasets.Features({"image": datasets.Image(), **{t: datasets.ClassLabel(names=v) for t, v in names.items()}})
    table = datasets.Dataset.from_dict(
        {"image": [str(DATA / r["path"]) for r in rows],
         **{t: [names[t].index(r[t] or "Unknown") for r in rows] for t in names}}, features=features)
    table.save_to_disk(str(tmp / "hf"))
    return {"metadata.csv folder": str(DATA), "CSV file": str(tmp / "rows.csv"), "ImageFolder": str(folder),
            "hf: (save_to_disk)": f"hf:{tmp / 'hf'}", "uint8 memmap": str(tmp / "rows.csv")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=1)
    opts = parser.parse_args()
    n = opts.batch * (opts.steps + 4)  # just enough rows for the timed steps
    device = pick_device("auto")

    with tempfile.TemporaryDirectory() as tmp:
        sources = make_sources(n, Path(tmp))
        model = criterion = opt = targets = None
        results = {}
        for name, data in sources.items():
            args = make_args({"data": data, "architecture": opts.arch, "input_size": opts.size, "batch_size": opts.batch,
                              "workers": opts.workers, "pretrained": False, "u8_cache": name == "uint8 memmap",
                              "cache_dir": tmp})
            rows = [r for r in load_source(args.data, args.tasks) if r.split in ("train", "")][:n]
            if model is None:  # one model and label vocabulary for every source
                vocab = Vocab.build(rows, args.tasks, min_artist_images=2)
                model = artattr.create_model(args.architecture, tasks=vocab.labels, embed_dim=args.embed_dim,
                                             arcface_task=args.arcface_task, dropout=args.dropout)
                model.to(device).to(memory_format=torch.channels_last).train()  # as train.fit does
                criterion = TaskLoss(args, vocab, vocab.targets(rows)).to(device)
                opt = torch.optim.AdamW(list(model.parameters()) + list(criterion.parameters()), lr=1e-4)
            targets = vocab.targets(rows)  # an ImageFolder has style labels only: the other tasks are masked
            feed = image_feed(args, rows, rows[:8], preprocessing(args, model), device)

            def step(x: torch.Tensor, idx: torch.Tensor) -> None:
                with autocast(device):  # bf16 on CUDA, as train.fit does
                    loss, _ = criterion(model(x), {t: y[idx].to(device) for t, y in targets.items()}, model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            def timed(batches) -> float:
                batches = iter(batches)
                for x, idx, _ in itertools.islice(batches, 2):  # warm-up: allocator, workers, first decode
                    step(x, idx)
                t0, seen = time.perf_counter(), 0
                for x, idx, _ in itertools.islice(batches, opts.steps):
                    step(x, idx)
                    seen += len(idx)
                if device.type == "cuda":
                    torch.cuda.synchronize()  # the GPU runs behind the Python loop
                return seen / (time.perf_counter() - t0)

            if not results:
                synthetic = [(torch.randn(opts.batch, 3, opts.size, opts.size, device=device)
                              .contiguous(memory_format=torch.channels_last), torch.arange(i * opts.batch, (i + 1) * opts.batch), None)
                             for i in range(4)]
                results["synthetic in-memory"] = timed(itertools.cycle(synthetic))
                print(f"synthetic in-memory   : {results['synthetic in-memory']:7.1f} img/s", flush=True)
            results[name] = timed(feed.batches(0, True))
            print(f"{name:<22}: {results[name]:7.1f} img/s", flush=True)

    print(f"{opts.arch} {opts.size}px batch {opts.batch}, {torch.get_num_threads()} torch threads, "
          f"{opts.workers} decode worker(s) on {device}")
    fake = results["synthetic in-memory"]
    for name, rate in results.items():
        print(f"{name:<22}: {rate:7.1f} img/s  ratio {rate / fake:.2f}" + ("" if name.startswith("synthetic") else
                                                                            "  (target >= 0.8)"))


if __name__ == "__main__":
    main()
