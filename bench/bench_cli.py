"""Issue 16 number: `artattr predict` on a collection versus the model's bare batched forward.

Run: ./run bench  (or .venv/bin/python bench/bench_cli.py [--n 2000] [--whole]). Target on 2 CPU
cores: the CLI on 2,000 WikiArt images, start-up (imports, model load) and decoding included, with
the painting located in each image (the default; ``--whole``: the CLI's ``--whole``), reaches
>= 0.7x the images/s of bare batched forward passes of the same model on the same images already
decoded, measured in the same run (bare before and after the CLI, averaged, as a busy host drifts).
Also printed: the ratio to bare passes run side by side, one per core on one thread each (how the
CLI runs them; faster than one pass on all threads for this small model).
CPU time per image is printed for both: on a shared machine it says what the work costs, while the
wall-clock ratio is only meaningful on an otherwise idle one.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from common import DATA, ROOT  # noqa: E402  (also puts the repo on sys.path)

BATCH = 32


def bare_images_per_s(predictor, x: torch.Tensor) -> tuple[float, float]:
    """(images/s, CPU ms per image) of the model alone on decoded, normalised batches."""
    with torch.inference_mode():
        predictor.model(x[:BATCH])  # warm-up
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(x), BATCH):
            predictor.model(x[i:i + BATCH])
        return len(x) / (time.perf_counter() - t), (time.process_time() - cpu) / len(x) * 1e3


def side_by_side_images_per_s(predictor, x: torch.Tensor) -> float:
    """images/s of the CLI's own scheme without decoding: one forward pass per core, each on one
    torch thread (a stricter baseline than the usual one pass on all threads, reported beside it)."""
    @torch.inference_mode()  # per thread: each pool thread needs its own
    def forward(i: int) -> None:
        predictor.model(x[i:i + BATCH])

    threads, cores = torch.get_num_threads(), len(os.sched_getaffinity(0))
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(cores) as pool:
            t = time.perf_counter()
            list(pool.map(forward, range(0, len(x), BATCH)))
            return len(x) / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="WikiArt val images (default 2000)")
    parser.add_argument("--whole", action="store_true", help="run the CLI with --whole (no painting locator)")
    args = parser.parse_args()
    import artattr

    with (DATA / "metadata.csv").open(newline="") as f:
        paths = [str(DATA / r["path"]) for r in csv.DictReader(f) if r["split"] == "val"][:args.n]
    predictor = artattr.load("default")
    x = torch.stack([predictor.to_tensor(p) for p in paths]).contiguous(memory_format=torch.channels_last)
    before, cpu_before = bare_images_per_s(predictor, x)

    t, cpu = time.perf_counter(), children_cpu_s()
    run = subprocess.run([sys.executable, "-m", "artattr", "predict", *paths, "--csv", "-", *(["--whole"] * args.whole)],
                         cwd=ROOT, capture_output=True, text=True)
    cli = len(paths) / (time.perf_counter() - t)
    cli_cpu = (children_cpu_s() - cpu) / len(paths) * 1e3
    rows = run.stdout.count("\n") - 1
    assert run.returncode == 0 and rows == len(paths), (run.returncode, rows, run.stderr[-500:])

    after, cpu_after = bare_images_per_s(predictor, x)
    bare = (before + after) / 2
    strict = side_by_side_images_per_s(predictor, x)
    print(f"bare batched forward ({BATCH}/batch, {torch.get_num_threads()} threads): {before:.0f} and {after:.0f} img/s, "
          f"{(cpu_before + cpu_after) / 2:.1f} ms CPU/img | artattr predict{' --whole' * args.whole} on {len(paths)} "
          f"images, start-up included: {cli:.0f} img/s, {cli_cpu:.1f} ms CPU/img | ratio {cli / bare:.2f} (target >= 0.7) | "
          f"bare passes side by side, one thread each: {strict:.0f} img/s, ratio {cli / strict:.2f}")


if __name__ == "__main__":
    main()
