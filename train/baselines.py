"""Classical baselines on frozen embeddings: logistic regression and random forest (scikit-learn).

A network is only worth fine-tuning if it beats a linear model on its own frozen features;
these probes are that bar, and the small-data answer when there are a few dozen images a class.

``python -m train.baselines --model default --kind logreg [--limit 2000] [--out DIR]`` embeds the
train and val rows with a checkpoint's frozen trunk, fits one probe per task and writes the
same report ``python -m train evaluate`` does (metrics, classification report, confusion matrices).
"""

from __future__ import annotations

import argparse
import json
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

from artattr.config import TASKS

from .data import Vocab, load_source, split_rows
from .metrics import all_metrics

PROBES = ("logreg", "forest")


@torch.inference_mode()
def frozen_features(model: nn.Module, batches: Iterable[torch.Tensor], key: str = "features") -> np.ndarray:
    """Pooled trunk features (``key="features"``) or one of the model's unit-norm embeddings, float32."""
    model.eval()
    out = []
    for x in batches:
        out.append(model.forward_features(x) if key == "features" else model(x)[key])
    return torch.cat(out).float().numpy()


def fit_probe(kind: str, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, n_classes: int,
              seed: int = 0) -> np.ndarray:
    """Val probabilities (n_val, n_classes) of a probe trained on the rows whose label is known.

    Classes absent from the training rows get probability 0, so the columns always line up with
    the label list, however small the sample.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind not in PROBES:
        raise ValueError(f"probe kind must be one of {PROBES}, not {kind!r}")
    keep = y_train >= 0
    probs = np.zeros((len(x_val), n_classes), dtype=np.float32)
    classes = np.unique(y_train[keep])
    if len(classes) == 0:
        return probs
    if len(classes) == 1:
        probs[:, classes[0]] = 1.0
        return probs
    if kind == "logreg":
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=500, class_weight="balanced"))
    else:
        clf = RandomForestClassifier(n_estimators=300, min_samples_leaf=2, class_weight="balanced_subsample",
                                     n_jobs=2, random_state=seed)
    clf.fit(x_train[keep], y_train[keep])
    probs[:, clf.classes_] = clf.predict_proba(x_val)
    return probs


def probe_tasks(kind: str, x_train: np.ndarray, y_train: dict[str, np.ndarray], x_val: np.ndarray,
                labels: dict[str, list[str]], seed: int = 0) -> dict[str, np.ndarray]:
    """One probe per task on the same features: {task: val probabilities}."""
    return {t: fit_probe(kind, x_train, y_train[t], x_val, len(names), seed) for t, names in labels.items()}


def main(argv: list[str] | None = None) -> int:
    import artattr
    from torch.utils.data import DataLoader

    from .data import ImageRows
    from .evaluate import write_report

    parser = argparse.ArgumentParser(prog="python -m train.baselines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="checkpoint whose frozen trunk embeds the images")
    parser.add_argument("--data", default="../shared/data/wikiart11",
                        help="metadata.csv folder, CSV, ImageFolder or hf:NAME[:SPLIT] (as `train fit --data`)")
    parser.add_argument("--split", default="csv", choices=("csv", "random", "artist"), help="as `train fit --split`")
    parser.add_argument("--kind", choices=PROBES, default="logreg")
    parser.add_argument("--features", default="features", help="features (pooled trunk) | embedding | sphere")
    parser.add_argument("--limit", type=int, default=0, help="first N train rows (and N/4 val rows)")
    parser.add_argument("--out", default="", help="write metrics and reports to this folder")
    args = parser.parse_args(argv)

    predictor = artattr.load(args.model)
    cfg = predictor.config
    train_rows, val_rows = split_rows(load_source(args.data), args.split)
    if args.limit:
        train_rows, val_rows = train_rows[: args.limit], val_rows[: max(args.limit // 4, 8)]
    vocab = Vocab({t: v for t, v in cfg.tasks.items() if t in TASKS}, dict(cfg.unknown_label))

    def embed(rows):
        ds = ImageRows(rows, vocab, predictor.preprocess)
        return frozen_features(predictor.model, (x for x, _, _ in DataLoader(ds, batch_size=64, num_workers=1)), args.features)

    x_train, x_val = embed(train_rows), embed(val_rows)
    y_train = {t: v.numpy() for t, v in vocab.targets(train_rows).items()}
    y_val = {t: v.numpy() for t, v in vocab.targets(val_rows).items()}
    probs = probe_tasks(args.kind, x_train, y_train, x_val, vocab.labels)
    if args.out:
        metrics, _ = write_report(args.out, probs, y_val, vocab.labels, vocab.unknown,
                                  extra={"probe": args.kind, "features": args.features, "model": args.model})
    else:
        metrics = all_metrics(probs, y_val, vocab.labels, vocab.unknown)
    print(json.dumps({t: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
                      for t, m in metrics.items() if isinstance(m, dict)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
