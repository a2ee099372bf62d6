"""``python -m train locate``: fit the painting locator's candidate scorer (``artattr/locate.json``).

``artattr.locate.candidates`` proposes quads with a few measurements each; which quad is the
painted surface — and whether any is — is a small multilayer perceptron on those measurements, fitted here
on synthetic wall photos of train-split paintings (``train.composite``: a candidate is right when its
IoU with the true painted surface is >= 0.9) against clean train-split scans and photos500 (every
candidate wrong: the whole image is the answer). The crop threshold is set so that at most
``--clean-cropped`` of the clean scans get cropped. Plain numbers in JSON, no pickle: the app's
model process reads them with numpy.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train locate", description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "wikiart11")
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos500")
    parser.add_argument("--walls", type=int, default=600, help="synthetic wall photos (positives)")
    parser.add_argument("--clean", type=int, default=2000, help="clean train scans (negatives)")
    parser.add_argument("--size", type=int, default=640, help="wall photo size (the locator works at 320 px)")
    parser.add_argument("--clean-cropped", type=float, default=0.01, help="largest share of clean scans cropped")
    parser.add_argument("--hidden", type=int, default=16, help="hidden units of the scorer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "artattr" / "locate.json")
    args = parser.parse_args(argv)

    from sklearn.neural_network import MLPClassifier

    from artattr.locate import FEATURES, candidates
    from train.composite import quad_iou, render_wall_photo

    rows = [r for r in csv.DictReader(open(args.data / "metadata.csv")) if r["split"] == "train"]
    backgrounds = sorted((args.photos / "images").glob("*.jpg"))
    rng = np.random.default_rng(args.seed)
    X, y, best_iou = [], [], []
    for i in tqdm(rng.choice(len(rows), args.walls, replace=False), desc="wall photos"):
        background = Image.open(backgrounds[rng.integers(len(backgrounds))]) if rng.random() < 0.3 else None
        photo, truth = render_wall_photo(Image.open(args.data / rows[i]["path"]), rng, background, args.size)
        quads, features = candidates(photo)
        ious = np.array([quad_iou(q * photo.size, truth) for q in quads])
        X.append(features)
        y.append(ious >= 0.9)
        best_iou.append(ious)
    negatives = [args.data / rows[i]["path"] for i in rng.choice(len(rows), args.clean, replace=False)]
    clean_features = [candidates(Image.open(p).convert("RGB"))[1] for p in tqdm(negatives, desc="clean scans")]
    photo_features = [candidates(Image.open(p).convert("RGB"))[1] for p in tqdm(backgrounds, desc="photos500")]
    for features in clean_features + photo_features:
        X.append(features)
        y.append(np.zeros(len(features), bool))
    X_all, y_all = np.concatenate(X), np.concatenate(y)
    mean, std = X_all.mean(axis=0), X_all.std(axis=0) + 1e-9
    # one or two right candidates per photo among ~100 wrong ones: repeat the right ones
    positives = np.flatnonzero(y_all)
    repeat = max(1, int(0.2 * (~y_all).sum() / max(1, len(positives))))
    X_fit = np.concatenate([X_all, np.repeat(X_all[positives], repeat, axis=0)])
    y_fit = np.concatenate([y_all, np.ones(len(positives) * repeat, bool)])
    model = MLPClassifier((args.hidden,), alpha=1e-3, max_iter=60, random_state=args.seed)
    model.fit((X_fit - mean) / std, y_fit)
    # fold the standardisation into the first layer: the scorer takes raw features
    layers = [[model.coefs_[0] / std[:, None], model.intercepts_[0] - (mean / std) @ model.coefs_[0]],
              *([w, b] for w, b in zip(model.coefs_[1:], model.intercepts_[1:]))]

    def logits(features: np.ndarray) -> np.ndarray:
        x = features
        for i, (w, b) in enumerate(layers):
            x = x @ w + b
            x = np.maximum(x, 0) if i < len(layers) - 1 else x
        return x[:, 0]

    def top(features: np.ndarray) -> float:
        return float(logits(features).max()) if len(features) else -np.inf

    threshold = float(np.quantile([top(f) for f in clean_features], 1 - args.clean_cropped))
    right = [len(f) and top(f) >= threshold and ious[int(np.argmax(logits(f)))] >= 0.9
             for f, ious in zip(X[:args.walls], best_iou)]
    reachable = np.mean([len(ious) and ious.max() >= 0.9 for ious in best_iou])
    print(f"wall photos: right crop (IoU >= 0.9) on {np.mean(right):.1%} (a candidate was right on {reachable:.1%}); "
          f"photos500 cropped: {np.mean([top(f) >= threshold for f in photo_features]):.1%}")
    args.out.write_text(json.dumps({
        "features": list(FEATURES),
        "layers": [{"weights": np.round(w, 6).tolist(), "bias": np.round(b, 6).tolist()} for w, b in layers],
        "threshold": round(threshold, 6),
        "fitted_on": {"walls": args.walls, "clean": args.clean, "photos500": len(backgrounds), "size": args.size,
                      "hidden": args.hidden,
                      "seed": args.seed, "clean_cropped": args.clean_cropped},
    }, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
