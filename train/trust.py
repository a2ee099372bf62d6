"""``python -m train trust CKPT --data WIKIART --photos PHOTOS --cache DIR``: make a checkpoint's answers trustworthy.

Adds to a trained checkpoint, without touching the weights of its task heads:

- an **artwork head** (one linear unit on the pooled backbone features plus the channel mean and std
  of a middle stage, ``artwork_tap``, so it costs nothing noticeable at predict time) saying whether
  the picture is a painting at all. It is fitted on cached features of what ``Predictor.run`` feeds
  the model (the painting locator on): positives are training paintings, also as phone photos on a
  wall (``train.composite.render_wall_photo``) and as degraded scans; negatives are the everyday
  photos with augmentation, close-ups included.
  How well it transfers to *unseen* kinds of photos is estimated by cross-validation that holds out
  whole groups of related ImageNet classes (neighbouring WordNet ids).
- per-task **temperatures** and the ``thresholds`` in ``config.json``: ``artwork`` (score below it is
  "not a painting"), ``unknown_artist`` (score: ``artattr.output.unknown_score``) and
  ``uncertain`` per task (top probability below it is "not sure"). Temperatures and the uncertain
  thresholds are fitted on one half of val and measured on the other (and the other way round);
  the unknown-artist threshold flags 9 % of known-artist val paintings and is measured per artist
  fold with the threshold chosen on the other folds (and with stand-in heads that never saw a fold).

Everything costly (the backbone's features) is computed once and cached in ``--cache``.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import artattr
from artattr.config import ModelConfig
from artattr.output import DEFAULT_UNCERTAIN, recalibrate, unknown_scores

from .composite import render_wall_photo
from .data import Vocab, read_rows

log = logging.getLogger("train")

def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def wall_photo(painting: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A phone photo of ``painting`` framed on a wall (:func:`train.composite.render_wall_photo`), at
    a size that still holds more detail than the locator's decode."""
    return render_wall_photo(painting, rng, size=int(rng.integers(400, 640)))[0]


def degraded_scan(painting: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A poor reproduction: blurred or resampled, faded or colour-cast, noisy, recompressed."""
    img = painting.convert("RGB")
    if rng.random() < 0.5:
        small = int(rng.integers(48, 120))
        img = img.resize((small, small), Image.BILINEAR).resize(img.size, Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    fade = rng.uniform(0.6, 1.0)
    arr = arr * fade + (1 - fade) * rng.uniform(150, 240) + rng.normal(0, rng.uniform(0, 8), arr.shape)
    arr = arr * rng.uniform(0.85, 1.15, size=3)
    if rng.random() < 0.15:
        arr = arr.mean(-1, keepdims=True).repeat(3, -1)
    return _jpeg(Image.fromarray(arr.clip(0, 255).astype(np.uint8)), int(rng.integers(25, 85)))


def photo_variant(photo: Image.Image, rng: np.random.Generator, zoom: tuple[float, float] = (0.45, 1.0)) -> Image.Image:
    """An everyday photo cropped (to ``zoom`` of its size), flipped, re-exposed and recompressed differently."""
    img = photo.convert("RGB")
    w, h = img.size
    scale = rng.uniform(*zoom)
    cw, ch = max(40, int(w * scale)), max(40, int(h * scale * rng.uniform(0.8, 1.25)))
    cw, ch = min(cw, w), min(ch, h)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.7, 1.25, size=3) + rng.uniform(-20, 20)
    if rng.random() < 0.15:
        arr = arr.mean(-1, keepdims=True).repeat(3, -1)
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return _jpeg(img, int(rng.integers(35, 92)))


#: how each cached view is made from its source image (``None``: the image as it is)
VIEWS = {"clean": None, "museum": wall_photo, "scan": degraded_scan, "photo": photo_variant,
         # a close-up of fur, foliage, gravel or fabric is the kind of photo most like an abstract painting
         "closeup": functools.partial(photo_variant, zoom=(0.2, 0.45))}


class _Views(Dataset):
    """What ``Predictor.run`` feeds the model for ``VIEWS[view](image, rng)``: the picture goes through
    the painting locator (``Predictor.find``), as every upload does. Seeded per item so a cache is
    reproducible."""

    def __init__(self, predictor: artattr.Predictor, items: list[tuple[str, str, int]]):
        self.predictor, self.items = predictor, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        path, view, seed = self.items[i]
        image = path if VIEWS[view] is None else VIEWS[view](Image.open(path).convert("RGB"), np.random.default_rng(seed))
        return self.predictor.pixels(self.predictor.find(image, locate=True)[0])


@torch.inference_mode()
def features(predictor: artattr.Predictor, items: list[tuple[str, str, int]], batch_size: int = 64,
             workers: int = 1, desc: str = "features") -> np.ndarray:
    """The artwork head's input (``MultiTaskModel.artwork_features``: pooled backbone features first)
    of ``(path, view, seed)`` items, float32."""
    loader = DataLoader(_Views(predictor, items), batch_size=batch_size, num_workers=workers,
                        prefetch_factor=4 if workers else None)
    chunks = [predictor.model.artwork_features(predictor.normalise(x)).float().numpy()
              for x in tqdm(loader, desc=desc, unit="batch")]
    return np.concatenate(chunks) if chunks else np.zeros((0, predictor.model.artwork.in_features), np.float32)


def cached_features(predictor: artattr.Predictor, cache: Path, name: str, items: list[tuple[str, str, int]],
                    workers: int = 1) -> np.ndarray:
    """``features`` of ``items``, read from ``cache/name.npz`` when it holds exactly these items."""
    path = cache / f"{name}.npz"
    key = json.dumps(items)
    if path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                return z["feats"].astype(np.float32)
    feats = features(predictor, items, workers=workers, desc=name)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, feats=feats.astype(np.float16), key=np.array(key))
    return feats


@dataclass
class Views:
    """The cached features one ``trust`` run works on (rows index ``read_rows(data)``)."""

    val: np.ndarray               # (n_val, F) every val painting, clean
    val_rows: np.ndarray          # their row indices
    train: np.ndarray             # a sample of training paintings, clean
    train_rows: np.ndarray
    train_museum: np.ndarray      # training paintings as museum photos / degraded scans (positives)
    train_scan: np.ndarray
    val_museum: np.ndarray        # val paintings as museum photos / scans: false alarms, never fitted on
    val_scan: np.ndarray
    photos: np.ndarray            # (n_photos, 1 + len(PHOTO_VIEWS), F): each photo as it is, then its variants
    photo_wnids: list[str]


def sample_train(rows: list, known: set[str], per_artist: int = 15, n_other: int = 1000, seed: int = 0) -> np.ndarray:
    """Training rows for the cache: ``per_artist`` paintings of each known artist and ``n_other`` of
    everybody else; the clean views use a random 1,400 of them (~8 per known artist), enough for the
    artist-fold check on two shared CPU cores."""
    rng = np.random.default_rng(seed)
    by_artist: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.split == "train":
            by_artist.setdefault(r.labels["artist"] if r.labels["artist"] in known else "", []).append(i)
    picked = [rng.choice(ids, min(per_artist, len(ids)), replace=False) for a, ids in sorted(by_artist.items()) if a]
    other = by_artist.get("", [])
    picked.append(rng.choice(other, min(n_other, len(other)), replace=False))
    return np.sort(np.concatenate(picked))


#: the views of each photo in ``Views.photos``, after the photo as it is
PHOTO_VIEWS = ("photo", "photo", "photo", "closeup")


def view_items(config: artattr.ModelConfig, rows: list, photos: str | Path) -> tuple[dict, np.ndarray, np.ndarray, list[str]]:
    """``({name: [(path, view, seed), ...]}, val rows, clean train rows, photo wnids)``: every cached feature set."""
    import csv

    unknown = config.unknown_label.get("artist")
    known = set(config.tasks.get("artist", [])) - {unknown}
    val_rows = np.array([i for i, r in enumerate(rows) if r.split == "val"])
    train_rows = sample_train(rows, known)
    rng = np.random.default_rng(1)
    museum_rows = rng.choice(train_rows, min(1500, len(train_rows)), replace=False)
    scan_rows = rng.choice(train_rows, min(600, len(train_rows)), replace=False)
    vmuseum_rows = rng.choice(val_rows, min(600, len(val_rows)), replace=False)
    vscan_rows = rng.choice(val_rows, min(300, len(val_rows)), replace=False)
    clean_rows = np.sort(rng.choice(train_rows, min(1400, len(train_rows)), replace=False))
    with (Path(photos) / "metadata.csv").open(newline="") as f:
        photo_meta = list(csv.DictReader(f))

    def items(idx, view, salt):
        return [(rows[i].path, view, int(salt + i)) for i in idx]

    return ({"val": items(val_rows, "clean", 0), "train": items(clean_rows, "clean", 0),
            "photos": [(str(Path(photos) / m["path"]), view, 1000 * k + v)
                       for k, m in enumerate(photo_meta) for v, view in enumerate(("clean", *PHOTO_VIEWS))],
            "train_museum": items(museum_rows, "museum", 10 ** 6), "train_scan": items(scan_rows, "scan", 2 * 10 ** 6),
            "val_museum": items(vmuseum_rows, "museum", 3 * 10 ** 6), "val_scan": items(vscan_rows, "scan", 4 * 10 ** 6)},
            val_rows, clean_rows, [m["wnid"] for m in photo_meta])


def build_views(predictor: artattr.Predictor, data: str | Path, photos: str | Path, cache: str | Path,
                workers: int = 1) -> Views:
    """Compute (or read from ``cache``) every feature set the trust heads and thresholds need."""
    its, val_rows, clean_rows, wnids = view_items(predictor.config, read_rows(data), photos)
    f = {name: cached_features(predictor, Path(cache), name, items, workers) for name, items in its.items()}
    return Views(f["val"], val_rows, f["train"], clean_rows, f["train_museum"], f["train_scan"], f["val_museum"],
                 f["val_scan"], f["photos"].reshape(len(wnids), 1 + len(PHOTO_VIEWS), -1), wnids)


# ------------------------------------------------------------------------------------- not a painting

def photo_groups(wnids: list[str], n_groups: int = 20) -> np.ndarray:
    """Group id per photo: runs of neighbouring WordNet ids (dogs with dogs, vehicles with vehicles),
    so a held-out group is a family of classes the detector has seen nothing like."""
    order = np.argsort(wnids, kind="stable")
    groups = np.empty(len(wnids), dtype=int)
    groups[order] = np.arange(len(wnids)) * n_groups // len(wnids)
    return groups


def fit_linear(pos: np.ndarray, neg: np.ndarray, c: float = 0.003) -> tuple[np.ndarray, float]:
    """Balanced logistic regression on standardised features, folded back into one linear unit
    ``(w, b)`` on the raw features: the artwork head the checkpoint stores."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([pos, neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit((x - mu) / sd, y)
    w = clf.coef_[0] / sd
    return w.astype(np.float32), float(clf.intercept_[0] - (w * mu).sum())


def score(feats: np.ndarray, head: tuple[np.ndarray, float]) -> np.ndarray:
    """P(painting) of features under a linear head."""
    w, b = head
    return 1.0 / (1.0 + np.exp(-(feats @ w + b)))


def threshold_at(scores: np.ndarray, rate: float) -> float:
    """The score below which ``rate`` of ``scores`` fall (paintings flagged by mistake)."""
    return float(np.quantile(scores, rate))


@dataclass
class ArtworkResult:
    head: tuple[np.ndarray, float]
    threshold: float
    metrics: dict           # rates at the threshold (see :func:`fit_artwork`)
    cv_photo_scores: np.ndarray   # out-of-group score of each photo (as it is)
    val_scores: np.ndarray        # final head on val paintings / museum photos / scans
    val_museum_scores: np.ndarray
    val_scan_scores: np.ndarray


def fit_artwork(v: Views, false_alarm: float = 0.025, c: float = 0.003, folds: int = 5) -> ArtworkResult:
    """Fit the artwork head and its threshold; estimate how it does on photos of unseen classes.

    The threshold flags ``false_alarm`` of the val paintings (the target is at most 3 %); ``c``
    (strong regularisation) was chosen by the held-out-group estimate below. Photo
    detection is measured with whole groups of classes held out (``photo_groups``): each fold's
    head, with its own threshold chosen the same way, scores photos from groups it never saw."""
    from sklearn.model_selection import GroupKFold

    pos = np.concatenate([v.train, v.train_museum, v.train_scan])
    groups = photo_groups(v.photo_wnids)
    oof = np.zeros(len(groups))
    oof_variants = np.zeros(v.photos.shape[:2])
    caught, caught_variants = np.zeros(len(groups), bool), np.zeros(v.photos.shape[:2], bool)
    for tr, te in tqdm(GroupKFold(folds).split(groups, groups=groups), total=folds, desc="artwork CV"):
        head = fit_linear(pos, v.photos[tr].reshape(-1, pos.shape[1]), c)
        t = threshold_at(score(v.val, head), false_alarm)
        oof[te] = score(v.photos[te, 0], head)
        oof_variants[te] = score(v.photos[te].reshape(-1, pos.shape[1]), head).reshape(len(te), -1)
        caught[te], caught_variants[te] = oof[te] < t, oof_variants[te] < t
    head = fit_linear(pos, v.photos.reshape(-1, pos.shape[1]), c)
    val_s, museum_s, scan_s = (score(x, head) for x in (v.val, v.val_museum, v.val_scan))
    t = threshold_at(val_s, false_alarm)
    from sklearn.metrics import roc_auc_score

    metrics = {
        "threshold": t,
        "photos_flagged_unseen_classes": float(caught.mean()),
        "photo_variants_flagged_unseen_classes": float(caught_variants[:, 1:].mean()),
        "auroc_unseen_classes": float(roc_auc_score(np.r_[np.ones(len(val_s)), np.zeros(len(oof))], np.r_[val_s, oof])),
        "val_paintings_flagged": float((val_s < t).mean()),
        "val_museum_photos_flagged": float((museum_s < t).mean()),
        "val_degraded_scans_flagged": float((scan_s < t).mean()),
        "photos_flagged_seen": float((score(v.photos[:, 0], head) < t).mean()),
        "n_val": len(val_s), "n_val_museum": len(museum_s), "n_val_scan": len(scan_s), "n_photos": len(oof),
        "cv": f"{folds}-fold, {groups.max() + 1} groups of neighbouring WordNet ids held out whole",
    }
    return ArtworkResult(head, t, metrics, oof, val_s, museum_s, scan_s)


# ------------------------------------------------------------------------- calibration and uncertainty

def head_logits(model: torch.nn.Module, feats: np.ndarray) -> dict[str, np.ndarray]:
    """Each task head's logits from cached features (what ``forward_head`` gives in eval mode)."""
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(feats[:, :model.feat_dim]))
        return {t: model.heads[t](x).numpy() for t in model.tasks}


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def ece(probs: np.ndarray, targets: np.ndarray) -> float:
    from .metrics import task_metrics

    return task_metrics(probs, targets)["ece"]


#: spacing of the calibration map's points (a slope of at most 1/CURVE_STEP times its largest step)
CURVE_STEP = 0.02


def fit_calibration(logits: np.ndarray, targets: np.ndarray) -> tuple[float, list[list[float]]]:
    """A temperature (minimum NLL, as ``train fit`` does) and then an isotonic map of the top
    probability to how often that answer is right (``artattr.output.recalibrate``), sampled every
    ``CURVE_STEP``: the raw isotonic steps are near-vertical ramps that turn float noise (another
    thread count) into visible probability changes and make occlusion maps jumpy."""
    from sklearn.isotonic import IsotonicRegression

    from .fit import fit_temperature

    keep = targets >= 0
    temp = fit_temperature(torch.from_numpy(logits), torch.from_numpy(targets))
    p = softmax(logits[keep], temp)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p.max(1), p.argmax(1) == targets[keep])
    xs = np.linspace(0.0, 1.0, round(1 / CURVE_STEP) + 1)
    return temp, [xs.tolist(), iso.predict(xs).tolist()]


def calibrated(logits: np.ndarray, temp: float, curve: list[list[float]]) -> np.ndarray:
    return recalibrate(softmax(logits, temp), curve)


def answer_threshold(conf: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest top probability such that the answers at or above it are right at least ``target``
    of the time (most coverage); 1.0 when no such set exists."""
    order = np.argsort(-conf, kind="stable")
    ranked = conf[order]
    acc = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ends = np.r_[ranked[1:] < ranked[:-1], True]  # equal probabilities (the calibration map's steps) pass together
    ok = np.flatnonzero((acc >= target) & ends)
    return float(ranked[ok[-1]]) if len(ok) else 1.0


def risk_coverage(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, error rate of the answers kept) as the threshold on the top probability falls."""
    order = np.argsort(-conf, kind="stable")
    n = np.arange(1, len(order) + 1)
    return n / len(order), 1.0 - np.cumsum(correct[order]) / n


#: answers given without the "uncertain" flag must be right this often (issue 14)
ANSWER_TARGETS = {"style": 0.90, "genre": 0.90, "artist": 0.80}


def calibrate(logits: dict[str, np.ndarray], targets: dict[str, np.ndarray], seed: int = 0, margin: float = 0.01) -> dict:
    """Temperature, top-probability map and "uncertain" threshold per task, fitted on all of val
    for the checkpoint, and measured by a two-way cross-fit: fitted on one random half of val,
    scored on the other, and the other way round (the numbers reported pool the held-out halves).
    Thresholds aim ``margin`` above the target so that the target holds on new paintings."""
    n = len(next(iter(targets.values())))
    half = np.random.default_rng(seed).permutation(n) < n // 2
    result = {}
    for t, z in logits.items():
        y = targets[t]
        target = ANSWER_TARGETS.get(t, 0.9)

        def fit(rows):
            temp, curve = fit_calibration(z[rows], y[rows])
            p, keep = calibrated(z[rows], temp, curve), y[rows] >= 0
            return temp, curve, answer_threshold(p.max(1)[keep], (p.argmax(1) == y[rows])[keep], target + margin)

        held_probs, flagged = np.zeros_like(z), np.zeros(n, bool)
        for rows in (half, ~half):
            temp, curve, th = fit(rows)
            held_probs[~rows] = calibrated(z[~rows], temp, curve)
            flagged[~rows] = held_probs[~rows].max(1) < th
        keep = y >= 0
        answered = keep & ~flagged
        temp, curve, th = fit(np.ones(n, bool))
        result[t] = {"temperature": temp, "curve": curve, "threshold": th, "held_probs": held_probs, "target": target,
                     "ece_crossfit": ece(held_probs, y),
                     "answered_accuracy_crossfit": float((held_probs.argmax(1) == y)[answered].mean()),
                     "coverage_crossfit": float(answered.sum() / keep.sum())}
    return result


# ---------------------------------------------------------------------------------- unknown artists

def _linear_head(x: np.ndarray, y: np.ndarray, n: int, steps: int = 100) -> torch.nn.Linear:
    """A quick softmax head on cached features (full-batch Adam): a stand-in for the real artist head."""
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], n)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    opt = torch.optim.Adam(head.parameters(), lr=3e-2, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(xt), yt).backward()
        opt.step()
    return head.eval()


def artist_folds(v: Views, rows: list, config: artattr.ModelConfig, feat_dim: int, folds: int = 5) -> dict:
    """How unknown-artist scores look for painters an artist head never saw: for each artist fold,
    an artist head is fitted on the cached training paintings of the *other* folds' artists
    (known ones as classes, the rest as "other") and its temperature on their val paintings, then
    every val painting of the held-out fold (known artist or not) is an unknown-artist painting.

    Returns pooled ``{"known": scores, "unseen": scores, "fold_auroc": [...]}``. The backbone itself
    was fine-tuned with all training artists, so this is somewhat optimistic for truly new painters."""
    from sklearn.metrics import roc_auc_score

    labels = config.tasks["artist"]
    other = labels.index(config.unknown_label["artist"])
    index = {a: i for i, a in enumerate(labels)}

    def artist(i):
        return index.get(rows[i].labels["artist"], other)

    known, unseen, aurocs = [], [], []
    for f in tqdm(range(folds), desc="artist folds"):
        tr = [k for k, i in enumerate(v.train_rows) if rows[i].artist_fold != f]
        classes = sorted({artist(v.train_rows[k]) for k in tr} | {other})
        remap = {c: j for j, c in enumerate(classes)}
        head = _linear_head(np.ascontiguousarray(v.train[tr, :feat_dim]),
                            np.array([remap[artist(v.train_rows[k])] for k in tr]), len(classes))
        logits = head(torch.from_numpy(np.ascontiguousarray(v.val[:, :feat_dim]))).detach().numpy()
        seen = np.array([rows[i].artist_fold != f for i in v.val_rows])
        y = np.array([remap.get(artist(i), -1) for i in v.val_rows])
        temp, curve = fit_calibration(logits[seen], y[seen])
        s = unknown_scores(calibrated(logits, temp, curve), remap[other])
        known_mask = seen & (y != remap[other])
        known.append(s[known_mask])
        unseen.append(s[~seen])
        aurocs.append(float(roc_auc_score(np.r_[np.zeros(known_mask.sum()), np.ones((~seen).sum())],
                                          np.r_[s[known_mask], s[~seen]])))
    return {"known": np.concatenate(known), "unseen": np.concatenate(unseen), "fold_auroc": aurocs}


# ------------------------------------------------------------------------------------------ report

def _save(fig, path: Path) -> Path:
    from .plots import _pyplot

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _plot_reliability(probs: dict[str, np.ndarray], targets: dict[str, np.ndarray], path: Path) -> Path:
    """Accuracy against confidence in 15 bins per task (the diagonal is perfect calibration)."""
    from .plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(probs), figsize=(3.6 * len(probs), 3.6), squeeze=False)
    for ax, (t, p) in zip(axes[0], probs.items()):
        keep = targets[t] >= 0
        conf, right = p[keep].max(1), p[keep].argmax(1) == targets[t][keep]
        bins = np.minimum((conf * 15).astype(int), 14)
        used = np.unique(bins)
        acc = np.array([right[bins == b].mean() for b in used])
        mean_conf = np.array([conf[bins == b].mean() for b in used])
        ax.bar((used + 0.5) / 15, acc, width=1 / 15, alpha=0.6, edgecolor="k", label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.plot(mean_conf, acc, "o", color="C3", ms=3, label="mean confidence")
        ax.set_title(f"{t}: ECE {ece(p, targets[t]):.3f} (n={int(keep.sum())})", fontsize=9)
        ax.set_xlabel("top probability")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_risk_coverage(curves: dict[str, tuple], marks: dict[str, tuple[float, float]], path: Path) -> Path:
    """Error of the answers kept against the share kept, per task; a dot at the shipped threshold."""
    from .plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for k, (t, (cov, risk)) in enumerate(curves.items()):
        ax.plot(cov, risk, color=f"C{k}", label=t)
        if t in marks:
            ax.plot(*marks[t], "o", color=f"C{k}")
    ax.set_xlabel("coverage (share of answers given)")
    ax.set_ylabel("error rate of the answers given")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _plot_scores(groups: dict[str, np.ndarray], threshold: float, xlabel: str, path: Path) -> Path:
    """Histograms of one score for several kinds of pictures, with the threshold."""
    from .plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    bins = np.linspace(0, 1, 41)
    for name, s in groups.items():
        if len(s):
            ax.hist(s, bins=bins, alpha=0.5, density=True, label=f"{name} (n={len(s)})")
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return _save(fig, path)


def trust_report(out: str | Path, config: artattr.ModelConfig, probs: dict[str, np.ndarray],
                 targets: dict[str, np.ndarray], artwork_scores: np.ndarray | None = None,
                 photo_scores: np.ndarray | None = None, title: str = "Answers you can trust") -> dict:
    """``trust.md`` plus its pictures in ``out``: per task ECE and reliability diagram, the
    risk-coverage curve and what the checkpoint's "uncertain" thresholds leave, unknown-artist
    AUROC and flag rates, and the not-a-painting false-alarm rate on these paintings (and detection
    rate on ``photo_scores``). Returns the numbers; ``probs`` are calibrated probabilities."""
    from sklearn.metrics import roc_auc_score

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    th = config.thresholds
    numbers: dict = {"tasks": {}}
    lines = [f"# {title}", "", "## Calibration and answers left un-flagged", "",
             "Answers whose top probability is below the checkpoint's threshold are flagged 'uncertain'.", "",
             "| task | ECE | threshold | answered (coverage) | accuracy of answered | accuracy of all | n |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    curves, marks = {}, {}
    for t, p in probs.items():
        keep = targets[t] >= 0
        if not keep.any():
            continue
        conf, right = p[keep].max(1), p[keep].argmax(1) == targets[t][keep]
        cut = th.get("uncertain", {}).get(t, DEFAULT_UNCERTAIN)
        answered = conf >= cut
        row = {"ece": ece(p, targets[t]), "threshold": cut, "coverage": float(answered.mean()),
               "answered_accuracy": float(right[answered].mean()) if answered.any() else float("nan"),
               "accuracy": float(right.mean()), "n": int(keep.sum())}
        numbers["tasks"][t] = row
        curves[t] = risk_coverage(conf, right)
        marks[t] = (row["coverage"], 1 - row["answered_accuracy"])
        lines.append(f"| {t} | {row['ece']:.3f} | {cut:.3f} | {row['coverage']:.1%} | {row['answered_accuracy']:.1%} "
                     f"| {row['accuracy']:.1%} | {row['n']} |")
    _plot_reliability({t: probs[t] for t in numbers["tasks"]}, targets, out / "reliability.png")
    _plot_risk_coverage(curves, marks, out / "risk_coverage.png")
    lines += ["", "![reliability diagrams](reliability.png) ![risk-coverage](risk_coverage.png)", ""]

    unknown = config.unknown_label.get("artist")
    if "artist" in probs and unknown in config.tasks.get("artist", []):
        k = config.tasks["artist"].index(unknown)
        keep = targets["artist"] >= 0
        s, is_unknown = unknown_scores(probs["artist"], k)[keep], targets["artist"][keep] == k
        cut = th.get("unknown_artist")
        row = {"n_known": int((~is_unknown).sum()), "n_unknown": int(is_unknown.sum())}
        if is_unknown.any() and (~is_unknown).any():
            row["auroc"] = float(roc_auc_score(is_unknown, s))
        if cut is not None:
            row.update(threshold=cut, unknown_flagged=float((s[is_unknown] > cut).mean()) if is_unknown.any() else None,
                       known_flagged=float((s[~is_unknown] > cut).mean()) if (~is_unknown).any() else None)
            _plot_scores({"known artist": s[~is_unknown], "unknown artist": s[is_unknown]}, cut,
                         "unknown-artist score (mean of P(other) and 1 - top known-artist P)", out / "unknown_artist.png")
        numbers["unknown_artist"] = row
        lines += ["## Unknown artist", "",
                  f"Paintings whose artist is not one of the {len(config.tasks['artist']) - 1} known ones: "
                  f"{row['n_unknown']}; by known artists: {row['n_known']}. "
                  + (f"AUROC {row['auroc']:.3f}. " if "auroc" in row else "")
                  + (f"At the threshold {cut:.3f}: {row['unknown_flagged']:.1%} of unknown-artist paintings "
                     f"flagged, {row['known_flagged']:.1%} of known-artist paintings flagged.\n\n"
                     "![unknown-artist scores](unknown_artist.png)" if cut is not None and row.get("unknown_flagged") is not None
                     and row.get("known_flagged") is not None else ""), ""]

    if artwork_scores is not None and "artwork" in th:
        cut = th["artwork"]
        row = {"threshold": cut, "paintings_flagged": float((artwork_scores < cut).mean()),
               "n_paintings": int(len(artwork_scores))}
        groups = {"paintings": artwork_scores}
        if photo_scores is not None and len(photo_scores):
            row.update(photos_flagged=float((photo_scores < cut).mean()), n_photos=int(len(photo_scores)))
            groups["photos"] = photo_scores
        _plot_scores(groups, cut, "artwork score (P painting)", out / "artwork_score.png")
        numbers["not_artwork"] = row
        lines += ["## Not a painting", "",
                  f"False alarms: {row['paintings_flagged']:.1%} of {row['n_paintings']} paintings flagged as not a painting"
                  + (f"; detection: {row['photos_flagged']:.1%} of {row['n_photos']} photos flagged" if "photos_flagged" in row else "")
                  + f" (threshold {cut:.3f}).", "", "![artwork scores](artwork_score.png)", ""]
    (out / "trust.md").write_text("\n".join(lines) + "\n")
    (out / "trust.json").write_text(json.dumps(numbers, indent=1) + "\n")
    return numbers


def evaluate_trust(out: str | Path, predictor: artattr.Predictor, probs: dict[str, np.ndarray],
                   targets: dict[str, np.ndarray], artwork_scores: np.ndarray | None,
                   photos: str | Path | None = None) -> dict:
    """``train evaluate``'s trust section: :func:`trust_report` for a checkpoint's own thresholds,
    with the not-a-painting detection rate on every picture under ``photos`` when given."""
    photo_scores = None
    if photos and artwork_scores is not None:
        paths = sorted(p for p in Path(photos).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        photo_scores = np.array([o.artwork_score for o in predictor.run_batch(paths)])
    return trust_report(out, predictor.config, probs, targets, artwork_scores, photo_scores)


# -------------------------------------------------------------------------------------------- main

def unknown_threshold(scores: np.ndarray, unknown: np.ndarray, folds: np.ndarray,
                      max_known: float = 0.09) -> tuple[float, np.ndarray]:
    """The unknown-artist threshold that flags ``max_known`` of the val paintings by known artists (the
    target is at most 10 %), and each painting's flag under a threshold chosen the same way on the
    *other* artist folds: how the threshold transfers to painters it was not chosen on."""
    flagged = np.zeros(len(scores), bool)
    for f in np.unique(folds):
        held = folds == f
        flagged[held] = scores[held] > np.quantile(scores[~held & ~unknown], 1 - max_known)
    return float(np.quantile(scores[~unknown], 1 - max_known)), flagged


def _rates(known: np.ndarray, unseen: np.ndarray, cut: float) -> dict:
    from sklearn.metrics import roc_auc_score

    return {"auroc": float(roc_auc_score(np.r_[np.zeros(len(known)), np.ones(len(unseen))], np.r_[known, unseen])),
            "unknown_flagged": float((unseen > cut).mean()), "known_flagged": float((known > cut).mean()),
            "n_unknown": int(len(unseen)), "n_known": int(len(known))}


def make_trustworthy(model_id: str, data: str | Path, photos: str | Path, cache: str | Path, out: str | Path,
                     save: str | Path | None = None, workers: int = 1) -> dict:
    """Fit the artwork head, temperatures and thresholds for ``model_id``; write the report to
    ``out`` and, with ``save``, the checkpoint with them (task heads and backbone untouched)."""
    from artattr.checkpoint import build_model, save_checkpoint

    from .metrics import all_metrics

    predictor = with_artwork_tap(artattr.load(model_id))
    config = predictor.config
    rows = read_rows(data)
    v = build_views(predictor, data, photos, cache, workers)
    artwork = fit_artwork(v)
    vocab = Vocab(config.tasks, config.unknown_label)
    targets = {t: y.numpy() for t, y in vocab.targets([rows[i] for i in v.val_rows]).items()}
    logits = head_logits(predictor.model, v.val)
    cal = calibrate(logits, targets)
    folds = artist_folds(v, rows, config, predictor.model.feat_dim)
    probs = {t: c["held_probs"] for t, c in cal.items()}  # each val half calibrated on the other
    other = config.tasks["artist"].index(config.unknown_label["artist"])
    s_val, is_unknown = unknown_scores(probs["artist"], other), targets["artist"] == other
    cut, crossfit = unknown_threshold(s_val, is_unknown, np.array([rows[i].artist_fold for i in v.val_rows]))
    fold_cut = float(np.quantile(folds["known"], 1 - 0.09))  # the stand-in heads' scores are on their own scale
    held_metrics = all_metrics(probs, targets, config.tasks, config.unknown_label)
    trust = {
        "answered_accuracy": {t: c["answered_accuracy_crossfit"] for t, c in cal.items()},
        "coverage": {t: c["coverage_crossfit"] for t, c in cal.items()},
        "ece": {t: c["ece_crossfit"] for t, c in cal.items()},
        "not_artwork": {k: x for k, x in artwork.metrics.items() if k != "threshold"},
        "unknown_artist_val": {**_rates(s_val[~is_unknown], s_val[is_unknown], cut),  # flags: threshold from other folds
                               "unknown_flagged": float(crossfit[is_unknown].mean()),
                               "known_flagged": float(crossfit[~is_unknown].mean())},
        "unknown_artist_folds": {**_rates(folds["known"], folds["unseen"], fold_cut), "fold_auroc": folds["fold_auroc"]},
        "how": "val cross-fit (temperatures and thresholds fitted on one half, measured on the other); photos: "
               "classes held out in groups; unknown artists: threshold chosen on the other artist folds",
    }
    new = ModelConfig(**{**asdict(config),
                         "temperature": {t: c["temperature"] for t, c in cal.items()},
                         "calibration": {t: c["curve"] for t, c in cal.items()},
                         "thresholds": {"artwork": artwork.threshold, "unknown_artist": cut,
                                        "uncertain": {t: c["threshold"] for t, c in cal.items()}},
                         # accuracy is what training measured (temperatures and the map keep the top answer); ECE is new
                         "metrics": {**{t: {**m, "ece": held_metrics[t]["ece"]} if isinstance(m, dict) and t in held_metrics
                                        else m for t, m in config.metrics.items() if t != "trust"}, "trust": trust}})
    numbers = trust_report(out, new, probs, targets, artwork.val_scores, artwork.cv_photo_scores,
                           title=f"Answers you can trust: {model_id} on the val split")
    _plot_scores({"val paintings": artwork.val_scores, "val museum photos": artwork.val_museum_scores,
                  "val degraded scans": artwork.val_scan_scores, "photos (classes held out)": artwork.cv_photo_scores},
                 artwork.threshold, "artwork score (P painting)", Path(out) / "artwork_score.png")
    _plot_scores({"known artists": folds["known"], "painters never seen (held-out folds)": folds["unseen"]}, fold_cut,
                 "unknown-artist score", Path(out) / "unknown_artist_folds.png")
    with (Path(out) / "trust.md").open("a") as f:
        f.write(_held_out_section(trust, new) + "\n")
    numbers["trust"] = trust
    (Path(out) / "trust.json").write_text(json.dumps(numbers, indent=1) + "\n")
    if save:
        model = build_model(new)
        state = predictor.model.state_dict()
        state["artwork.weight"] = torch.from_numpy(artwork.head[0])[None]
        state["artwork.bias"] = torch.tensor([artwork.head[1]])
        model.load_state_dict(state)
        save_checkpoint(model, new, save, description=_description(predictor.model_dir), half=_is_half(predictor.model_dir))
    return numbers


def with_artwork_tap(predictor: artattr.Predictor) -> artattr.Predictor:
    """The checkpoint with an (unfitted) artwork head tapping its Grad-CAM layer, a middle stage whose
    texture statistics the head reads (``MultiTaskModel``'s ``artwork_tap``); every other weight kept."""
    from artattr.checkpoint import build_model

    model_args = {**predictor.config.model_args, "artwork_head": True, "artwork_tap": predictor.model.cam_layer_name}
    config = ModelConfig(**{**asdict(predictor.config), "model_args": model_args})
    model = build_model(config)
    state = {k: x for k, x in predictor.model.state_dict().items() if not k.startswith("artwork.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or {k.split(".")[0] for k in missing} - {"artwork"}:
        raise ValueError(f"{predictor.config.architecture}: weights do not fit ({missing + unexpected})")
    return artattr.Predictor(model, config, predictor.model_dir)


def _is_half(model_dir: Path | None) -> bool:
    """Whether a checkpoint's weights are stored in float16 (the embedded default is: 7 MB, not 15)."""
    from safetensors import safe_open

    if model_dir is None:
        return False
    with safe_open(str(Path(model_dir) / artattr.config.WEIGHTS_FILE), "pt") as f:
        return any(f.get_slice(k).get_dtype() == "F16" for k in f.keys())


def _description(model_dir: Path | None) -> str:
    """Keep the card's description paragraph when re-saving a checkpoint."""
    card = Path(model_dir or "") / "README.md"
    if model_dir is None or not card.is_file():
        return ""
    parts = card.read_text().split("\n## ", 1)[0].split("\n\n")
    return parts[-1].strip() if len(parts) > 1 else ""


def _held_out_section(trust: dict, config: artattr.ModelConfig) -> str:
    """The numbers measured on data the fitted parts never saw (what the model card quotes)."""
    na, uv, uf = trust["not_artwork"], trust["unknown_artist_val"], trust["unknown_artist_folds"]
    lines = ["## Measured on held-out data", "", trust["how"] + "; stand-in artist heads fitted without one artist "
             "fold are judged at their own threshold flagging 9 % of known artists.", "",
             "| task | ECE | answered (coverage) | accuracy of answered | target |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {t} | {trust['ece'][t]:.3f} | {trust['coverage'][t]:.1%} | {trust['answered_accuracy'][t]:.1%} | "
              f"≥ {ANSWER_TARGETS.get(t, 0.9):.0%} |" for t in trust["ece"]]
    lines += ["", f"Not a painting (threshold {config.thresholds['artwork']:.3f}): {na['photos_flagged_unseen_classes']:.1%} "
              f"of {na['n_photos']} photos of held-out class groups flagged ({na['photo_variants_flagged_unseen_classes']:.1%} "
              f"of their cropped/recoloured variants), AUROC {na['auroc_unseen_classes']:.3f}; false alarms: "
              f"{na['val_paintings_flagged']:.1%} of val paintings, {na['val_museum_photos_flagged']:.1%} of val paintings "
              f"rendered as museum photos, {na['val_degraded_scans_flagged']:.1%} as degraded scans.", "",
              f"Unknown artist (threshold {config.thresholds['unknown_artist']:.3f}): on val, {uv['unknown_flagged']:.1%} of "
              f"{uv['n_unknown']} paintings by artists outside the known list flagged, {uv['known_flagged']:.1%} of "
              f"{uv['n_known']} by known artists (threshold chosen on the other artist folds; AUROC {uv['auroc']:.3f}); "
              f"with artist folds held out of a stand-in artist head, {uf['unknown_flagged']:.1%} of {uf['n_unknown']} paintings by never-seen painters flagged, "
              f"{uf['known_flagged']:.1%} of known (AUROC {uf['auroc']:.3f}).", "",
              "![artwork scores](artwork_score.png) ![unknown artist, held-out folds](unknown_artist_folds.png)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train trust", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint folder, 'default' or hf-hub:ORG/NAME[@REV]")
    parser.add_argument("--data", required=True, help="WikiArt-11 folder (metadata.csv with split and artist_fold)")
    parser.add_argument("--photos", required=True, help="photos500 folder: everyday photos, the negatives")
    parser.add_argument("--cache", required=True, help="folder for the cached backbone features")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--save", help="write the checkpoint with the artwork head, temperatures and thresholds here")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        make_trustworthy(args.checkpoint, args.data, args.photos, args.cache, args.out, args.save, args.workers)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report in {Path(args.out) / 'trust.md'}")
    return 0
