"""``python -m train locate``: fit the painting locator's candidate scorer (``artattr/locate.json``).

``artattr.locate.candidates`` proposes quads with a few measurements each; which quad is the
painted surface — and whether any is — is a small multilayer perceptron on those measurements, fitted here
on synthetic wall photos of train-split paintings (``train.composite``: a candidate is right when its
IoU with the true painted surface is >= 0.9) against clean train-split scans and photos500 (every
candidate wrong: the whole image is the answer). Wall photos reach the locator as uploads do (JPEG
bytes decoded at ``artattr.locate.DECODE_SIZE``), so the scorer sees the resolution it will serve at.
The crop threshold is set so that at most ``--clean-cropped`` of the clean scans get cropped. Plain
numbers in JSON, no pickle: the app's model process reads them with numpy.
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
from PIL import Image
from tqdm import tqdm

from artattr.locate import score

ROOT = Path(__file__).resolve().parent.parent


def wall_example(path: Path, backgrounds: list[Path], seed: list[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(features, IoU with the truth)`` of every candidate in one wall photo of the painting at
    ``path`` (30 % on a real photo as the wall), passed through the upload path: JPEG bytes decoded at
    DECODE_SIZE. Its own ``seed``, so the photos do not depend on how many processes render them."""
    from artattr.images import load_image
    from artattr.locate import DECODE_SIZE, candidates, quad_iou
    from train.composite import render_wall_photo

    rng = np.random.default_rng(seed)
    background = Image.open(backgrounds[rng.integers(len(backgrounds))]) if rng.random() < 0.3 else None
    photo, truth = render_wall_photo(Image.open(path), rng, background, size)
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=92)
    upload = load_image(buf.getvalue(), draft_size=DECODE_SIZE)
    quads, features = candidates(upload)
    scale = np.array(upload.size)
    truth = truth * scale / np.array(photo.size)
    return features, np.array([quad_iou(q * scale, truth) for q in quads])


def wall_examples(paths: list[Path], backgrounds: list[Path], seed: int, size: int = 1024,
                  workers: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`wall_example` of each painting, rendered on every core (2,500 photos at 1024 px: ~4 min on 2 cores)."""
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        jobs = pool.map(wall_example, paths, itertools.repeat(backgrounds), ([seed, k] for k in range(len(paths))),
                        itertools.repeat(size), chunksize=8)
        return list(tqdm(jobs, total=len(paths), desc="wall photos"))


def fit_scorer(walls: list[tuple[np.ndarray, np.ndarray]], negatives: list[np.ndarray], calibration: list[np.ndarray],
               hidden: int = 64, clean_cropped: float = 0.0125, seed: int = 0) -> tuple[list, float]:
    """``(layers, threshold)``: an MLP that predicts each candidate's IoU with the painted surface
    (raised to the 4th power: a near miss scores well below a hit) — 0 for every candidate in
    ``negatives`` — with its standardisation folded into the first layer; and the score the best
    candidate of at most ``clean_cropped`` of the ``calibration`` scans reaches. Those are clean scans
    the MLP never saw: on its own training scans it is overconfident and the threshold would be too low."""
    from sklearn.neural_network import MLPRegressor

    X = np.concatenate([f for f, _ in walls] + list(negatives))
    y = np.concatenate([ious ** 4 for _, ious in walls] + [np.zeros(len(f)) for f in negatives])
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-9
    model = MLPRegressor(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=200, early_stopping=True,
                         random_state=seed)
    model.fit((X - mean) / std, y)
    layers = [(model.coefs_[0] / std[:, None], model.intercepts_[0] - (mean / std) @ model.coefs_[0]),
              *zip(model.coefs_[1:], model.intercepts_[1:])]
    threshold = float(np.quantile([best_score(layers, f) for f in calibration], 1 - clean_cropped))
    return layers, threshold


def best_score(layers: list, features: np.ndarray) -> float:
    return float(score(features, layers).max()) if len(features) else -np.inf


def report(layers: list, threshold: float, walls: list[tuple[np.ndarray, np.ndarray]],
           clean: list[np.ndarray], photos: list[np.ndarray]) -> dict:
    """Share of wall photos cropped right (IoU >= 0.9), of clean scans and photos500 cropped at all."""
    right = [len(f) > 0 and best_score(layers, f) >= threshold and ious[int(np.argmax(score(f, layers)))] >= 0.9
             for f, ious in walls]
    return {"walls_right": float(np.mean(right)),
            "walls_reachable": float(np.mean([len(ious) > 0 and ious.max() >= 0.9 for _, ious in walls])),
            "clean_cropped": float(np.mean([best_score(layers, f) >= threshold for f in clean])),
            "photos500_cropped": float(np.mean([best_score(layers, f) >= threshold for f in photos]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train locate", description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "wikiart11")
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos500")
    parser.add_argument("--walls", type=int, default=2500, help="synthetic wall photos (positives)")
    parser.add_argument("--clean", type=int, default=2000, help="clean train scans (negatives)")
    parser.add_argument("--calibrate", type=int, default=8000, help="other clean train scans (set the threshold)")
    parser.add_argument("--size", type=int, default=1024, help="wall photo size before the upload decode")
    parser.add_argument("--clean-cropped", type=float, default=0.0125, help="largest share of clean scans cropped")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units of the scorer")
    parser.add_argument("--workers", type=int, default=None, help="processes rendering wall photos (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "artattr" / "locate.json")
    args = parser.parse_args(argv)

    from artattr.locate import FEATURES, candidates

    rows = [r for r in csv.DictReader(open(args.data / "metadata.csv")) if r["split"] == "train"]
    backgrounds = sorted((args.photos / "images").glob("*.jpg"))
    rng = np.random.default_rng(args.seed)
    walls = wall_examples([args.data / rows[i]["path"] for i in rng.choice(len(rows), args.walls, replace=False)],
                          backgrounds, args.seed, args.size, args.workers)
    scans = [args.data / rows[i]["path"] for i in rng.choice(len(rows), args.clean + args.calibrate, replace=False)]
    clean = [candidates(Image.open(p).convert("RGB"))[1] for p in tqdm(scans, desc="clean scans")]
    photos = [candidates(Image.open(p).convert("RGB"))[1] for p in tqdm(backgrounds, desc="photos500")]
    layers, threshold = fit_scorer(walls, clean[:args.clean] + photos, clean[args.clean:], args.hidden,
                                   args.clean_cropped, args.seed)
    numbers = report(layers, threshold, walls, clean[args.clean:], photos)
    print(", ".join(f"{k} {v:.1%}" for k, v in numbers.items()) + " (walls and photos500: fitted on them)")
    args.out.write_text(json.dumps({
        "features": list(FEATURES),
        "layers": [{"weights": np.round(w, 6).tolist(), "bias": np.round(b, 6).tolist()} for w, b in layers],
        "threshold": round(threshold, 6),
        "fitted_on": {"split": "train", "walls": args.walls, "wall_size": args.size, "clean": args.clean,
                      "calibrate": args.calibrate,
                      "photos500": len(backgrounds), "hidden": args.hidden, "seed": args.seed,
                      "clean_cropped": args.clean_cropped,
                      "note": "wall photos of train-split paintings (train.composite) decoded as uploads; clean "
                              "train-split scans and every photos500 image as negatives; threshold from "
                              "other clean train-split scans",
                      "on_fitting_data": {k: round(v, 4) for k, v in numbers.items()}},
    }, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
