"""Calibrated probabilities and the "uncertain" thresholds (``python -m train trust``): a temperature
and a top-probability map per task, and the lowest top probability whose answers are still right as
often as issue 14 asks, all fitted on val and measured by cross-fitting its two halves."""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import softmax

from artattr.output import recalibrate


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

    from .loss import fit_temperature

    keep = targets >= 0
    temp = fit_temperature(torch.from_numpy(logits), torch.from_numpy(targets))
    p = softmax(logits[keep] / temp, axis=1)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p.max(1), p.argmax(1) == targets[keep])
    xs = np.linspace(0.0, 1.0, round(1 / CURVE_STEP) + 1)
    return temp, [xs.tolist(), iso.predict(xs).tolist()]


def calibrated(logits: np.ndarray, temp: float, curve: list[list[float]]) -> np.ndarray:
    return recalibrate(softmax(logits / temp, axis=1), curve)


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
