"""What one forward pass answers, as plain numpy: it crosses from the model process to the app's UI
process (``artattr/worker.py``), which reads it without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ModelConfig

#: Top probability below which an answer is "not sure" when a checkpoint has no fitted threshold.
DEFAULT_UNCERTAIN = 0.5


@dataclass
class Output:
    """Everything one forward pass gives for one image; the app caches this per upload."""

    probs: dict[str, np.ndarray]        # task -> calibrated probabilities over that task's labels
    embedding: np.ndarray | None        # unit-norm retrieval embedding
    sphere: np.ndarray | None           # unit-norm 3-D ArcFace coordinates
    #: where the painting was found in the upload (artattr.locate): corners TL, TR, BR, BL as (4, 2)
    #: fractions of its width and height; None when the whole image was used
    crop: np.ndarray | None = None
    artwork_score: float | None = None  # P(painting) from the artwork head; None when the model has none
    #: the crop is a frame-shaped quad the locator found, or a cut-out the artwork head confirmed: evidence of
    #: a painting of its own (:func:`flags`)
    framed: bool = False


#: A maybe quad (:data:`artattr.locate.MAYBE`) is the painting when the model's artwork head gives its
#: cut-out at least this score, with odds at least ``exp(CONFIRM_GAIN)`` (~7x) those of the whole photo. A
#: busy wall is a photo round a painting: cut off, what is left looks far more like one. A clean scan's
#: inner rectangle looks no more a painting than the scan, and a window cut out of an everyday photo
#: rarely scores 0.9 (none of photos500's did). Chosen on 1,040 wall photos (style top-1 +0.9 points, "not
#: a painting" 5.4 -> 4.1 %); on bench_locate's 300 (seed 18) 0.793 -> 0.820 and 7.3 -> 5.3 %; on clean val
#: scans 0.03 % more cropped, the same answers right.
CONFIRM_ARTWORK = 0.9
CONFIRM_GAIN = 2.0
#: A painting the locator found in the upload by its frame (``Output.framed``) is called "not a painting" only when the
#: artwork head's odds are this many nats below its threshold's (0.307 -> 0.057 for the default). A
#: frame-shaped quad clearing the locator's threshold is evidence of its own, which the head never sees:
#: 2 of photos500's 500 everyday photos get one (both scoring far above the threshold), ~93 % of wall
#: photos of paintings do. The head alone, on the cut-out, flags 2.5 % of those: realistic paintings,
#: glare, dim light. "Not a painting" on 1,040 wall photos 3.8 -> 1.7 %, on bench_locate's 300 (seed 18)
#: 5.0 -> 1.7 %; of photos500 and its 2,000 cropped/recoloured variants 3 of 2,500 are no longer flagged.
FRAMED_GAIN = 2.0


def pick(outputs: list[Output], views: list) -> Output:
    """One upload's answer from those for its views (:class:`artattr.locate.View`, from
    :func:`artattr.locate.locate_views`): the only one, or the first maybe's the model confirms is the
    painting (a cut-out scoring at least CONFIRM_ARTWORK, with the view's gain in log-odds over the whole
    image, by default CONFIRM_GAIN), else the fallback's answers with the whole image's artwork score (whether
    the upload is a painting at all is judged as if nothing were found), else the whole image's."""
    for output, view in zip(outputs, views):
        output.crop = view.corners
    whole = outputs[0]
    whole.framed = whole.crop is not None  # one view: the quad the locator found, or the whole image
    if len(outputs) == 1 or whole.artwork_score is None:
        return whole
    for crop, view in zip(outputs[1:], views[1:]):
        need = CONFIRM_GAIN if view.gain is None else view.gain
        if (crop.artwork_score is not None and crop.artwork_score >= CONFIRM_ARTWORK
                and _logit(crop.artwork_score) - _logit(whole.artwork_score) >= need):
            crop.framed = True
            return crop
    for crop, view in zip(outputs[1:], views[1:]):
        if view.fallback:
            crop.artwork_score = whole.artwork_score
            return crop
    return whole


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def top_k(output: Output, labels: dict[str, list[str]], k: int = 5) -> dict[str, list[tuple[str, float]]]:
    """``{task: [(label, probability), ...]}``, most likely first."""
    result = {}
    for task, p in output.probs.items():
        order = np.argsort(-p)[:k]
        result[task] = [(labels[task][i], float(p[i])) for i in order]
    return result


def recalibrate(probs: np.ndarray, curve: list[list[float]]) -> np.ndarray:
    """Map each row's top probability through the monotone ``curve`` (``[xs, ys]``, fitted by isotonic
    regression on held-out paintings) and rescale the others to sum to one. A temperature alone cannot
    calibrate the artist head: it is over-confident at the top and under-confident below (the
    heterogeneous "other" class). The top answer stays on top, so accuracy does not change."""
    p = np.atleast_2d(probs)
    if p.shape[1] < 2:  # a one-class task: its class holds all the probability, whatever the map says
        return probs
    rows, best = np.arange(len(p)), p.argmax(1)
    top = p[rows, best]
    second = np.partition(p, -2, axis=1)[:, -2]
    # the top keeps at least the second's share and 1/n (the even share the others get below when they
    # are all 0, a float32 softmax of a far-ahead logit); otherwise they keep their proportions
    new_top = np.maximum.reduce([np.interp(top, *curve), second / np.maximum(1.0 - top + second, 1e-12),
                                 np.full_like(top, 1.0 / p.shape[1])])
    rest = 1.0 - top
    out = np.where(rest[:, None] > 0, p * ((1.0 - new_top) / np.maximum(rest, 1e-12))[:, None],
                   ((1.0 - new_top) / (p.shape[1] - 1))[:, None])
    out[rows, best] = new_top
    return out.astype(p.dtype).reshape(probs.shape)


def unknown_score(output: Output, config: ModelConfig, task: str = "artist") -> float | None:
    """How unlikely a known artist is: the mean of the unknown label's probability ("other", painters
    outside the known list) and 1 - the largest known-artist probability (spread over many known
    artists, as paintings by never-seen painters are). On val paintings by artists outside the list
    this beats either alone, max-softmax and energy (AUROC 0.870 / 0.874 / 0.856 / 0.62), and on
    painters no artist head saw (held-out artist folds) it is as good as the better one
    (``train/trust.py`` measures it)."""
    unknown = config.unknown_label.get(task)
    if task not in output.probs or unknown not in config.tasks[task]:
        return None
    return float(unknown_scores(output.probs[task][None], config.tasks[task].index(unknown))[0])


def unknown_scores(probs: np.ndarray, unknown_index: int) -> np.ndarray:
    """:func:`unknown_score` of many rows of probabilities."""
    return (probs[:, unknown_index] + 1.0 - np.delete(probs, unknown_index, axis=1).max(1)) / 2


def flags(output: Output, config: ModelConfig) -> dict:
    """What may be trusted in ``output``, as the CLI's JSON and the app state it:

    ``not_artwork`` (the artwork score is below ``thresholds["artwork"]``, or ``FRAMED_GAIN`` lower in log
    odds when the painting was found in the upload by its frame: ``Output.framed``), ``artwork_score``,
    ``unknown_artist`` (with its ``unknown_artist_score``) and ``uncertain``, the tasks whose top
    probability is below that task's threshold. A checkpoint without fitted thresholds never says
    "not a painting", calls the artist unknown when "other" is the top answer, and is "not sure"
    below ``DEFAULT_UNCERTAIN``."""
    th = config.thresholds
    score = output.artwork_score
    not_artwork = False
    if score is not None and "artwork" in th:
        cut = _sigmoid(_logit(th["artwork"]) - FRAMED_GAIN) if output.framed else float(th["artwork"])
        not_artwork = score < cut
    unknown = unknown_score(output, config)
    if unknown is None:
        unknown_artist = False
    elif "unknown_artist" in th:
        unknown_artist = unknown > th["unknown_artist"]
    else:
        labels = config.tasks["artist"]
        unknown_artist = labels[int(output.probs["artist"].argmax())] == config.unknown_label["artist"]
    return {
        "not_artwork": bool(not_artwork),
        "artwork_score": None if score is None else float(score),
        "unknown_artist": bool(unknown_artist),
        "unknown_artist_score": unknown,
        "uncertain": [t for t, p in output.probs.items()
                      if float(p.max()) < th.get("uncertain", {}).get(t, DEFAULT_UNCERTAIN)],
    }
