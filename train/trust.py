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
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import artattr
from artattr.config import ModelConfig
from artattr.output import unknown_scores

from .calibration import calibrate, calibrated, fit_calibration
from .data import Vocab, read_rows
from .trust_report import plot_scores, held_out_section, trust_report
from .trust_views import Views, build_views, photo_groups

# ------------------------------------------------------------------------------------- not a painting

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


# ------------------------------------------------------------------------- task heads on cached features

def head_logits(model: torch.nn.Module, feats: np.ndarray) -> dict[str, np.ndarray]:
    """Each task head's logits from cached features (what ``forward_head`` gives in eval mode)."""
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(feats[:, :model.feat_dim]))
        return {t: model.heads[t](x).numpy() for t in model.tasks}


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
    an artist head is fitted on every training painting of the *other* folds' artists
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
        tr = [k for k, i in enumerate(v.train_all_rows) if rows[i].artist_fold != f]
        classes = sorted({artist(v.train_all_rows[k]) for k in tr} | {other})
        remap = {c: j for j, c in enumerate(classes)}
        head = _linear_head(np.ascontiguousarray(v.train_all[tr, :feat_dim]),
                            np.array([remap[artist(v.train_all_rows[k])] for k in tr]), len(classes))
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
    plot_scores({"val paintings": artwork.val_scores, "val museum photos": artwork.val_museum_scores,
                  "val degraded scans": artwork.val_scan_scores, "photos (classes held out)": artwork.cv_photo_scores},
                 artwork.threshold, "artwork score (P painting)", Path(out) / "artwork_score.png")
    plot_scores({"known artists": folds["known"], "painters never seen (held-out folds)": folds["unseen"]}, fold_cut,
                 "unknown-artist score", Path(out) / "unknown_artist_folds.png")
    with (Path(out) / "trust.md").open("a") as f:
        f.write(held_out_section(trust, new) + "\n")
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
