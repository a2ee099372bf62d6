"""Issue 16 number: `artattr predict` on a collection versus the model's bare batched forward.

Run: ./run bench  (or .venv/bin/python bench/bench_cli.py [N]). Target on 2 CPU cores: the CLI on
2,000 WikiArt images, start-up (imports, model load) and decoding included, reaches >= 0.7x the
images/s of bare batched forward passes of the same model on the same images already decoded,
measured in the same run (bare before and after the CLI, averaged, as a busy host drifts).
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time

import torch

from common import DATA, ROOT  # noqa: E402  (also puts the repo on sys.path)

BATCH = 32


def bare_images_per_s(predictor, x: torch.Tensor) -> float:
    with torch.inference_mode():
        predictor.model(x[:BATCH])  # warm-up
        t = time.perf_counter()
        for i in range(0, len(x), BATCH):
            predictor.model(x[i:i + BATCH])
        return len(x) / (time.perf_counter() - t)


def main(n: int = 2000) -> None:
    import artattr

    with (DATA / "metadata.csv").open(newline="") as f:
        paths = [str(DATA / r["path"]) for r in csv.DictReader(f) if r["split"] == "val"][:n]
    predictor = artattr.load("default")
    x = torch.stack([predictor.to_tensor(p) for p in paths]).contiguous(memory_format=torch.channels_last)
    before = bare_images_per_s(predictor, x)

    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "artattr", "predict", *paths, "--csv", "-"], cwd=ROOT,
                         capture_output=True, text=True)
    cli = len(paths) / (time.perf_counter() - t)
    rows = run.stdout.count("\n") - 1
    assert run.returncode == 0 and rows == len(paths), (run.returncode, rows, run.stderr[-500:])

    after = bare_images_per_s(predictor, x)
    bare = (before + after) / 2
    print(f"bare batched forward ({BATCH}/batch, {torch.get_num_threads()} threads): {before:.0f} and {after:.0f} img/s | "
          f"artattr predict on {len(paths)} images, start-up included: {cli:.0f} img/s | "
          f"ratio {cli / bare:.2f} (target >= 0.7)")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
