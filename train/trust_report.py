"""``trust.md`` and its pictures: what ``train evaluate`` and ``train trust`` report about a checkpoint's
calibration, its "uncertain" answers, unknown artists and "not a painting" (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import artattr
from artattr.output import DEFAULT_UNCERTAIN, unknown_scores

from .calibration import ANSWER_TARGETS, ece, risk_coverage


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


def plot_scores(groups: dict[str, np.ndarray], threshold: float, xlabel: str, path: Path) -> Path:
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
            plot_scores({"known artist": s[~is_unknown], "unknown artist": s[is_unknown]}, cut,
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
        plot_scores(groups, cut, "artwork score (P painting)", out / "artwork_score.png")
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


def held_out_section(trust: dict, config: artattr.ModelConfig) -> str:
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
