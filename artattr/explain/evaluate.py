"""Are the heatmaps faithful? Deletion/insertion AUC and the model-randomisation sanity check.

    python -m artattr.explain.evaluate CKPT --data DIR -n 200

Deletion: remove the pixels a heatmap ranks most important first (fill them with the blurred
image) and track the probability of the explained class; the faster it falls, the lower the
area under that curve and the more faithful the map. Insertion is the mirror image (start from
the blur, restore the important pixels first; higher is better). Every method is compared with
two maps that know nothing about the model: smooth random blobs and a centre-bias Gaussian
(paintings put their subject in the middle, so "the centre matters" is a strong cheat).

Sanity check (Adebayo et al. 2018): a heatmap that barely changes when the model's weights are
randomised explains the image, not the model. We compare maps of the trained model with maps of
copies whose task heads ("head") or all layers ("all") are re-initialised.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import METHODS, Method, Progress, Target, attribute, blurred

#: Heatmaps whose rank correlation with the randomised model's maps reaches this fail the check.
SANITY_THRESHOLD = 0.5


def random_map(target: Target, x: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
    """Random blobs at Grad-CAM's granularity: the "no information" reference."""
    return F.interpolate(torch.rand(1, 1, 7, 7), size=tuple(x.shape[-2:]), mode="bilinear")[0, 0]


def centre_map(target: Target, x: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
    """A Gaussian on the centre (sigma = a quarter of the side): the composition prior."""
    h, w = x.shape[-2:]
    ys, xs = torch.meshgrid(torch.linspace(-2, 2, h), torch.linspace(-2, 2, w), indexing="ij")
    return torch.exp(-(xs ** 2 + ys ** 2) / 2)


BASELINES: dict[str, Method] = {"random": random_map, "centre": centre_map}


def curve(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, heat: np.ndarray, steps: int = 20,
          insertion: bool = False, seed: int = 0) -> np.ndarray:
    """Target score after removing (deletion) or restoring (insertion) the top 0, 1/steps, ..., 100 % pixels.

    Ties (flat regions, constant maps) are broken at random, so a constant map scores like a
    random one instead of like a raster scan.
    """
    h, w = heat.shape
    n = h * w
    order = np.lexsort((np.random.default_rng(seed).random(n), -heat.ravel()))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    top = torch.from_numpy(rank[None, :] < np.round(fractions[:, None] * n)).view(steps + 1, 1, h, w)
    removed = blurred(x)
    batch = torch.where(top, x, removed) if insertion else torch.where(top, removed, x)
    with torch.inference_mode():
        return score(batch).float().numpy()


def auc(values: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions of [0, 1]."""
    return float(np.trapezoid(values, dx=1.0 / (len(values) - 1)))


def similarity(a: np.ndarray, b: np.ndarray, grid: int = 32) -> float:
    """Spearman rank correlation of two heatmaps pooled to ``grid``×``grid``.

    A flat map has no ranking; two flat maps count as identical (1) and a flat map against a
    structured one as unrelated (0), so a constant-map "method" cannot pass the sanity check.
    """
    from scipy.stats import spearmanr

    pooled = [F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(m))[None, None], grid).ravel().numpy()
              for m in (a, b)]
    flat = [np.ptp(p) < 1e-8 for p in pooled]
    if any(flat):
        return 1.0 if all(flat) else 0.0
    return float(spearmanr(*pooled).statistic)


def randomise(model: nn.Module, level: str = "all", seed: int = 0) -> nn.Module:
    """A copy of ``model`` with its task heads ("head") or every resettable layer ("all") re-initialised."""
    torch.manual_seed(seed)
    clone = copy.deepcopy(model).eval()
    if level not in ("head", "all"):
        raise ValueError(f"Unknown randomisation level {level!r}; use 'head' or 'all'.")
    for module in (clone.heads if level == "head" else clone).modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return clone


@dataclass
class Sanity:
    similarity: float  # mean rank correlation between trained and randomised maps
    passed: bool


def sanity_check(method: str | Method, model: nn.Module, randomised: nn.Module, inputs: Sequence[torch.Tensor],
                 task: str, temperature: float = 1.0, threshold: float = SANITY_THRESHOLD,
                 calibration: list[list[float]] | None = None) -> Sanity:
    """Do ``method``'s maps of the trained model differ from those of its randomised copy?

    Both models explain the same class (the trained model's top prediction) on the same inputs.
    """
    scores = []
    for x in inputs:
        with torch.inference_mode():
            index = int(model(x)[task][0].argmax())
        trained = attribute(model, x, task, index, method, temperature, calibration=calibration)
        scores.append(similarity(trained, attribute(randomised, x, task, index, method, temperature, calibration=calibration)))
    mean = float(np.mean(scores))
    return Sanity(mean, mean < threshold)


def _image_paths(data: Path, split: str, n: int, seed: int) -> list[Path]:
    meta = data / "metadata.csv"
    if meta.is_file():
        with meta.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("split", split) == split]
        paths = [data / r["path"] for r in rows]
    else:
        paths = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    np.random.default_rng(seed).shuffle(paths)
    return paths[:n]


def evaluate(predictor, paths: Sequence[Path], task: str = "style", methods: Sequence[str] = tuple(METHODS),
             steps: int = 20, sanity_images: int = 20, log: Callable[[str], None] = print) -> dict:
    """Deletion/insertion AUC per method and baseline, and the sanity check, as a JSON-able dict."""
    model, temperature = predictor.model, predictor.config.temperature.get(task, 1.0)
    calibration = predictor.config.calibration.get(task)  # perturbation methods and the score read the shown probability
    candidates: dict[str, str | Method] = {**{m: m for m in methods}, **BASELINES}
    runs = {name: {"deletion": [], "insertion": [], "seconds": []} for name in candidates}
    inputs = []
    for i, path in enumerate(paths):
        x = predictor.to_tensor(path)[None]
        inputs.append(x)
        with torch.inference_mode():
            index = int(model(x)[task][0].argmax())
        target = Target(model, task, index, temperature, calibration)
        score = lambda batch: target.probs(batch)[:, index]  # noqa: E731
        for name, method in candidates.items():
            start = time.perf_counter()
            heat = attribute(model, x, task, index, method, temperature, calibration=calibration)
            runs[name]["seconds"].append(time.perf_counter() - start)
            runs[name]["deletion"].append(auc(curve(score, x, heat, steps, seed=i)))
            runs[name]["insertion"].append(auc(curve(score, x, heat, steps, insertion=True, seed=i)))
        if (i + 1) % 10 == 0 or i + 1 == len(paths):
            log(f"  {i + 1}/{len(paths)} images")

    report: dict = {"task": task, "images": len(paths), "steps": steps, "methods": {}, "sanity": {}}
    for name, run in runs.items():
        dele, ins = np.array(run["deletion"]), np.array(run["insertion"])
        report["methods"][name] = {
            "deletion_auc": float(dele.mean()), "deletion_sem": float(dele.std(ddof=1) / np.sqrt(len(dele))) if len(dele) > 1 else 0.0,
            "insertion_auc": float(ins.mean()),
            "beats_random": float(np.mean(dele < np.array(runs["random"]["deletion"]))),
            "beats_centre": float(np.mean(dele < np.array(runs["centre"]["deletion"]))),
            "seconds": float(np.mean(run["seconds"])),
        }
    for level in ("head", "all"):
        randomised = randomise(model, level)
        for name, method in candidates.items():
            result = sanity_check(method, model, randomised, inputs[:sanity_images], task, temperature,
                                  calibration=calibration)
            report["sanity"].setdefault(name, {})[level] = {"similarity": result.similarity, "passed": result.passed}
    return report


def format_report(report: dict) -> str:
    lines = [
        f"Faithfulness on {report['images']} images, task {report['task']!r}, explaining the top prediction",
        "", "method      deletion AUC (lower better)   insertion AUC   beats random   beats centre   s/image",
    ]
    for name, m in report["methods"].items():
        lines.append(f"{name:<10}  {m['deletion_auc']:.3f} ± {m['deletion_sem']:.3f}{'':<15}{m['insertion_auc']:.3f}"
                     f"{'':<10}{m['beats_random']:>5.0%}{'':<10}{m['beats_centre']:>5.0%}{'':<6}{m['seconds']:.2f}")
    lines += ["", f"Model-randomisation sanity check: rank correlation with maps of a randomised model (pass < {SANITY_THRESHOLD})",
              "method      head re-initialised   all layers re-initialised"]
    for name, levels in report["sanity"].items():
        cells = [f"{levels[lv]['similarity']:+.2f} {'pass' if levels[lv]['passed'] else 'FAIL'}" for lv in ("head", "all")]
        lines.append(f"{name:<10}  {cells[0]:<22}{cells[1]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m artattr.explain.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="model id: 'default', a checkpoint folder or hf-hub:ORG/NAME")
    parser.add_argument("--data", type=Path, required=True, help="folder with metadata.csv (path, split columns) or images")
    parser.add_argument("-n", type=int, default=200, help="number of images")
    parser.add_argument("--split", default="val")
    parser.add_argument("--task", default="style")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--steps", type=int, default=20, help="points on each deletion/insertion curve")
    parser.add_argument("--sanity-images", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    import artattr

    try:
        predictor = artattr.load(args.checkpoint)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"Unknown method(s) {unknown}; choose from {', '.join(METHODS)}.")
        if args.task not in predictor.labels:
            raise ValueError(f"Unknown task {args.task!r}; the model predicts {', '.join(predictor.labels)}.")
        paths = _image_paths(args.data, args.split, args.n, args.seed)
        if not paths:
            raise ValueError(f"No {args.split!r} images found under {args.data}.")
    except (ValueError, OSError) as err:
        parser.exit(2, f"error: {err}\n")
    torch.manual_seed(args.seed)
    print(f"Evaluating {', '.join(methods)} on {len(paths)} images from {args.data}", file=sys.stderr)
    report = evaluate(predictor, paths, args.task, methods, args.steps, args.sanity_images,
                      log=lambda msg: print(msg, file=sys.stderr))
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
