"""``python -m train evaluate CHECKPOINT --data DIR [--split val] --out OUTDIR``: judge any checkpoint on held-out data.

The images go through the checkpoint's own preprocessing (what :meth:`artattr.Predictor.to_tensor`
does), decoded in a DataLoader worker while the model runs batches, so 3,000 paintings take well under a
minute on two cores. Labels the checkpoint does not know are mapped the way the app would see
them: an unknown artist is the checkpoint's ``unknown_label`` ("other"); an unknown style or
genre cannot be right or wrong, so it is excluded and counted in ``report.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import artattr

from .data import MISSING, Row, image_input, load_source, split_rows
from .metrics import all_metrics, task_metrics

log = logging.getLogger("train")


class _Images(Dataset):
    """``Predictor.pixels`` of each row's image; ``Predictor.normalise`` finishes the batch in the main
    process. Unreadable: zeros, ``ok=False``."""

    def __init__(self, predictor: artattr.Predictor, rows: list[Row]):
        self.predictor, self.rows = predictor, rows
        self.size = predictor.config.input_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        try:
            return self.predictor.pixels(image_input(self.rows[i])), True
        except (ValueError, OSError):
            return torch.zeros(self.size, self.size, 3, dtype=torch.uint8), False


def write_report(out_dir: str | Path, probs: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                 labels: dict[str, list[str]], unknown: dict[str, str] | None = None,
                 extra: dict | None = None) -> tuple[dict, list[Path]]:
    """metrics.json ``{task: {top1, top5, macro_f1, balanced_acc, ece, n}}``, report.json (the same plus
    known-class scores and ``extra``), classification_report.txt and a confusion matrix PNG per task.

    Rows whose target is < 0 (missing, excluded or unreadable) are left out of every number.
    """
    from sklearn.metrics import classification_report, confusion_matrix

    from .plots import confusion_matrix as plot_confusion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {t: task_metrics(probs[t], targets[t]) for t in probs}
    files = [out / "metrics.json", out / "report.json", out / "classification_report.txt"]
    files[0].write_text(_json(metrics))
    files[1].write_text(_json({"metrics": all_metrics(probs, targets, labels, unknown), **(extra or {})}))
    text = []
    for task, p in probs.items():
        keep = targets[task] >= 0
        y, pred = targets[task][keep], p[keep].argmax(1)
        if not len(y):
            continue
        shown = np.union1d(np.unique(y), np.unique(pred))  # classes that occur: 129 empty rows help nobody
        names = [labels[task][i] for i in shown]
        text += [f"== {task} (n={len(y)}) ==",
                 classification_report(y, pred, labels=shown, target_names=names, digits=3, zero_division=0)]
        cm = confusion_matrix(y, pred, labels=shown)
        files.append(plot_confusion(cm, names, out / f"confusion_{task}.png",
                                    title=f"{task}: top-1 {metrics[task]['top1']:.3f}, macro-F1 "
                                          f"{metrics[task]['macro_f1']:.3f}, n={len(y)}"))
    files[2].write_text("\n".join(text))
    return metrics, files


def _json(obj) -> str:
    """Strict JSON: a task with no scorable rows has null metrics, not NaN."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return None if isinstance(v, float) and v != v else v
    return json.dumps(clean(obj), indent=1) + "\n"


def evaluate(model_id: str, data: str | Path, out: str | Path, split: str | None = "val", batch_size: int = 64,
             workers: int = 1, imagefolder_task: str = "style", photos: str | Path | None = None) -> dict:
    """Write the report for ``model_id`` on ``data``'s rows of ``split`` (all rows when the data has no
    split or ``split`` is None/"all"); ``data`` is any source :func:`train.data.load_source` reads.
    Returns metrics.json's content. The trust report (``trust.md``) adds the not-a-painting detection
    rate on the pictures in ``photos``."""
    t0 = time.time()
    predictor = artattr.load(model_id)
    config = predictor.config
    rows = load_source(str(data), tuple(config.tasks), imagefolder_task)
    if split and split.startswith("artist:"):  # the held-out artists of `train fit --split artist --val_fold K`
        fold = split.partition(":")[2]
        if not fold.isdigit():
            raise ValueError(f"--split {split!r}: expected artist:K with a fold number K")
        rows = split_rows(rows, "artist", val_fold=int(fold))[1]
    elif split and split != "all" and any(r.split for r in rows):
        available = sorted({r.split for r in rows})
        rows = [r for r in rows if r.split == split]
        if not rows:
            raise ValueError(f"{data}: no rows with split {split!r} (splits: {available}); use --split all")
    if not rows:
        raise ValueError(f"{data}: no rows")
    tasks = [t for t in config.tasks if any(r.labels.get(t) for r in rows)]
    if not tasks:
        raise ValueError(f"{data}: no labels for the checkpoint's tasks {list(config.tasks)}")

    excluded: dict[str, Counter] = {t: Counter() for t in tasks}
    targets = {}
    for t in tasks:
        index = {name: i for i, name in enumerate(config.tasks[t])}
        fallback = index.get(config.unknown_label.get(t, ""))
        y = np.full(len(rows), MISSING)
        for i, r in enumerate(rows):
            label = r.labels.get(t, "")
            if label in index:
                y[i] = index[label]
            elif label and fallback is not None:
                y[i] = fallback
            elif label:
                excluded[t][label] += 1
        targets[t] = y

    loader = DataLoader(_Images(predictor, rows), batch_size=batch_size, num_workers=workers,
                        prefetch_factor=4 if workers else None)
    probs = {t: np.zeros((len(rows), len(config.tasks[t])), dtype=np.float32) for t in tasks}
    ok = np.zeros(len(rows), dtype=bool)
    artwork = np.zeros(len(rows), dtype=np.float32)
    start = 0
    for x, good in tqdm(loader, desc="evaluating", unit="batch", leave=False):
        outputs = predictor.forward_batch(predictor.normalise(x))
        for t in tasks:
            probs[t][start: start + len(x)] = np.stack([o.probs[t] for o in outputs])
        ok[start: start + len(x)] = good.numpy()
        artwork[start: start + len(x)] = [np.nan if o.artwork_score is None else o.artwork_score for o in outputs]
        start += len(x)
    for i in np.flatnonzero(~ok):
        log.warning("skipping unreadable image %s", rows[i].path)
    targets = {t: np.where(ok, y, MISSING) for t, y in targets.items()}
    metrics, _ = write_report(out, probs, targets, {t: config.tasks[t] for t in tasks},
                              {t: u for t, u in config.unknown_label.items() if t in tasks}, extra={
        "checkpoint": str(model_id), "data": str(data), "split": split if (split or "").startswith("artist:") or any(r.split for r in rows) else "all",
        "rows": len(rows), "unreadable": int((~ok).sum()),
        "excluded_unknown_labels": {t: dict(c.most_common()) for t, c in excluded.items() if c},
        "seconds": round(time.time() - t0, 2),
    })
    from .trust_report import evaluate_trust

    evaluate_trust(out, predictor, probs, targets, None if np.isnan(artwork).any() else artwork[ok], photos)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint folder, 'default' or hf-hub:ORG/NAME[@REV]")
    parser.add_argument("--data", required=True, help="folder with metadata.csv (path,style,artist,genre[,split]), "
                        "a CSV, an ImageFolder (ROOT/[train|val/]CLASS/*.jpg) or hf:NAME[:SPLIT]")
    parser.add_argument("--split", default="val", help="rows of this split ('all': every row; 'artist:K': artist fold K, "
                        "as `train fit --split artist --val_fold K`); ignored without a split column")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--imagefolder-task", default="style", help="the task an ImageFolder's class folders name")
    parser.add_argument("--photos", help="folder of pictures that are not paintings (photos500): not-a-painting detection rate")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1,
                        help="decoding processes (one keeps up with the model on 2 cores: decoding is ~10x cheaper)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    try:
        metrics = evaluate(args.checkpoint, args.data, args.out, args.split, args.batch_size, args.workers,
                           args.imagefolder_task, args.photos)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for task, m in metrics.items():
        print(f"{task:>8}: top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}  macro-F1 {m['macro_f1']:.4f}  n={m['n']}")
    print(f"report in {args.out}")
    return 0
