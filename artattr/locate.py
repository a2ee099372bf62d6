"""Find the painting in a photo of it: the painted surface inside its frame, without wall or frame.

People upload what their phone took — the painting in its frame, some wall, a slight angle — while
the model learnt from tight scans: on such photos style accuracy fell from 86 % to 33 %. This finds
the painted surface and rectifies mild perspective, so the model sees what it was trained on.

How: :func:`candidates` proposes quads from long near-horizontal and near-vertical lines (Canny
edges + Hough transform on a ~320 px copy; not those running through the whole photo, a patterned
wall's; shorter lines and smaller quads when that finds none: a small painting far off) and measures
each (edge support per side, smoothness just outside and inside, colour contrast across the sides,
how the colours inside differ from those outside, how busy with edges it is inside and outside,
area, distance from the border, nesting in or around a frame-like quad; several of these again
against the image's other candidates). A small neural
network fitted on synthetic wall photos against clean scans and everyday photos (``python -m train
locate`` → ``artattr/locate.json``) predicts each quad's overlap with the painted surface; the best
quad is the painted surface if its score clears a threshold set so that ~1.25 % of clean scans it
never saw would be cropped. Nothing convincing — a clean scan, a detail, a fresco wall, an everyday photo —
means the whole image is used: :func:`find_painting` returns ``None``. A quad that clears the threshold
but took in a frame's moulding is narrowed to the painted surface the learned localiser
(:mod:`artattr.surface`) marks inside it (:func:`inside_frame`). A best quad scoring a little under
the threshold is a maybe (:func:`locate_views`), and so are the quad a small learned localiser marks
(:mod:`artattr.surface`) and a region in colours the photo's border (the wall) does not have
(:func:`odd_region`): on a brick or panelled wall a small painting's sides are outvoted by the wall's own
lines. The predictor shows the model both the maybe and the whole image, and takes the maybe only when the
model confirms it is the painting (:func:`artattr.output.pick`).

The corners are fractions of the image's width and height, so one answer serves every copy of the
upload (the model's small decode, the app's display copy, the original file). Everything here is
numpy + OpenCV (imported on first use: the app's UI process imports this module at start-up).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

#: Lines are found on a copy whose longer side is this many pixels (the cost is ~quadratic in it).
WORK_SIZE = 320
#: Decode uploads at least this large when locating: at the model's input size (160 px) a frame is
#: a few pixels wide, and the crop would be smaller than the model's input.
DECODE_SIZE = 384
#: A quad is a candidate when edges run along at least this fraction of each of its sides.
MIN_SUPPORT = 0.35
#: Canny's hysteresis thresholds (gradient magnitude of the blurred RGB copy): low, so that a dark
#: painting in a dark frame or a pale one on a pale mat still shows its edge (the Hough vote keeps
#: clutter from becoming lines).
CANNY = (15, 45)
#: Candidates scored per image, those with the best-supported sides first (bounds the time).
MAX_CANDIDATES = 150
#: A line with edges along half of this share of the image at each of its ends runs through the whole
#: photo: a wall's stripe, seam or mortar joint, never a side of the painted surface.
THROUGH_ENDS = 0.08
#: Lines tilted more than this (degrees) are not a frame seen by someone facing the painting.
MAX_TILT = 8.0
#: How large a painted surface is looked for, as ``(votes, side, area)``: its lines need edge pixels over
#: ``votes`` of the image's width (height), its sides at least ``side`` of it, its area ``area`` of the
#: photo. The second, for a small painting far off (a side from a tenth of the photo), only when the
#: first finds no quad: on 240 wall photos made by a renderer of another hand (dark, wooden, brick
#: walls; paintings down to 4 % of the photo) the whole photo was used on 17 % of them, now on 10 %, and
#: style top-1 rose from 0.667 to 0.696; 6 more of the 4,142 clean val scans are cropped (98.53 %
#: left whole), with the same answers right; photos500 alike (2 cropped); no slower on wall photos.
SIZES = ((0.15, 0.2, 0.05), (0.08, 0.1, 0.02))
#: A best quad scoring from this up to the fitted threshold is a maybe: on a busy wall (wallpaper, a
#: room, a poster wall) the painted surface often scores there; so does the best quad of ~15 % of clean
#: scans, which the model's artwork head then tells apart (:func:`artattr.output.pick`).
MAYBE = 0.1
#: The fitted candidate scorer (``python -m train locate`` writes it).
WEIGHTS_FILE = Path(__file__).with_name("locate.json")


def _cv2():
    import cv2  # 0.1-0.4 s: only when the first image is located

    return cv2


#: The Hough transform's angle step (radians).
ANGLE_STEP = np.pi / 360
#: OpenCV's Hough angles over [0, pi) as it steps them: by repeated float32 addition of the step.
_ANGLES = np.cumsum(np.r_[0, np.full(round(np.pi / ANGLE_STEP) - 1, ANGLE_STEP)].astype(np.float32), dtype=np.float32)


def _vertical_peaks(edges: np.ndarray, threshold: int) -> np.ndarray:
    """``cv2.HoughLines`` peaks ``(rho, theta)`` within MAX_TILT of vertical, exactly as a scan of the
    whole [0, pi) range finds and orders them, for a tenth of its cost.

    Near-vertical lines sit at both ends of that range (theta near 0 and near pi), so two scans of
    the ends do: each over the angles kept plus one more (a peak must beat its neighbouring angle), the
    second starting at the float32 angle the whole scan reaches there (:data:`_ANGLES`), so every vote
    is the same. Peaks come back most votes first, then by angle and rho, as OpenCV sorts them; theta is
    reported as the whole scan reports it (angle index x step in float32). Why exactly: the fitted
    scorer and the training views cached with this locator saw these lines."""
    cv2 = _cv2()
    rows = int(np.ceil(np.deg2rad(MAX_TILT) / ANGLE_STEP)) + 2
    found = []
    for first in (0, len(_ANGLES) - rows):
        start = float(_ANGLES[first])
        peaks = cv2.HoughLinesWithAccumulator(edges, 1, ANGLE_STEP, threshold, min_theta=start,
                                              max_theta=start + (rows - 0.5) * ANGLE_STEP)
        if peaks is not None:
            rho, theta, votes = peaks[:, 0].astype(np.float64).T
            index = first + np.round((theta - start) / ANGLE_STEP)
            found.append(np.stack([rho, index.astype(np.float32) * np.float32(ANGLE_STEP), votes, index], axis=1))
    if not found:
        return np.zeros((0, 2))
    found = np.concatenate(found)
    return found[np.lexsort((found[:, 0], found[:, 3], -found[:, 2])), :2]


def _lines(edges: np.ndarray, horizontal: bool, limit: int = 10, votes: float = SIZES[0][0]) -> np.ndarray:
    """Strongest distinct near-axis lines as ``(offset, slope)``: ``y = offset + slope * x`` for
    horizontal lines, ``x = offset + slope * y`` for vertical ones; without those that run through the
    whole image (edges at both of its ends, :data:`THROUGH_ENDS`): on a striped, panelled or brick
    wall they would outvote the shorter sides of the painting."""
    cv2 = _cv2()
    h, w = edges.shape
    tilt = np.deg2rad(MAX_TILT)
    if horizontal:
        found = cv2.HoughLines(edges, 1, ANGLE_STEP, threshold=int(votes * w), min_theta=np.pi / 2 - tilt,
                               max_theta=np.pi / 2 + tilt)
        found = np.zeros((0, 2)) if found is None else found[:, 0].astype(np.float64)
    else:
        found = _vertical_peaks(edges, int(votes * h))
    rho, theta = found[:, 0], found[:, 1]
    if horizontal:  # x cos t + y sin t = rho
        lines = np.stack([rho / np.sin(theta), -np.cos(theta) / np.sin(theta)], axis=1)
        span = w
    else:
        keep = (theta < tilt) | (theta > np.pi - tilt)
        rho, theta = rho[keep], theta[keep]
        lines = np.stack([rho / np.cos(theta), -np.tan(theta)], axis=1)
        span = h
    start, end = lines[:, 0], lines[:, 0] + lines[:, 1] * span  # where each line enters and leaves the image
    ends = max(2, round(THROUGH_ENDS * span))
    dilated = cv2.dilate(edges, np.ones((3, 1) if horizontal else (1, 3), np.uint8)) > 0
    hit = _hits(lines, dilated, horizontal, np.r_[0:ends, span - ends:span])  # a busy wall has hundreds of lines
    through = (hit[:, :ends].sum(axis=1) >= ends / 2) & (hit[:, ends:].sum(axis=1) >= ends / 2)
    kept, left = [], np.arange(len(lines))
    while len(left) and len(kept) < limit:  # Hough returns the most voted first: keep it, drop its near-duplicates
        k = left[0]
        if not through[k]:
            kept.append(k)
        left = left[np.maximum(np.abs(start[left] - start[k]), np.abs(end[left] - end[k])) > 4]
    return lines[kept].reshape(-1, 2)


def _hits(lines: np.ndarray, edges: np.ndarray, horizontal: bool, along: np.ndarray) -> np.ndarray:
    """(L, len(along)) whether each line runs over an edge pixel at each of the ``along`` columns (horizontal
    lines) or rows (vertical ones)."""
    m = edges.shape[0] if horizontal else edges.shape[1]
    across = np.round(lines[:, :1] + lines[:, 1:] * along).astype(int)  # (L, len(along))
    hit = (across >= 0) & (across < m)
    across = np.clip(across, 0, m - 1)
    return hit & (edges[across, along] if horizontal else edges[along, across])


def _coverage(lines: np.ndarray, edges: np.ndarray, horizontal: bool) -> np.ndarray:
    """(L, n + 1) running count of edge pixels along each line (n: the image's width for horizontal
    lines, its height for vertical ones): a side's support is then two lookups."""
    hit = _hits(lines, edges, horizontal, np.arange(edges.shape[1] if horizontal else edges.shape[0]))
    return np.concatenate([np.zeros((len(lines), 1)), np.cumsum(hit, axis=1)], axis=1)


def _quads(hl: np.ndarray, vl: np.ndarray, edges_h: np.ndarray, edges_v: np.ndarray,
           side: float = SIZES[0][1]) -> tuple[np.ndarray, np.ndarray]:
    """All quads (N, 4, 2) [TL, TR, BR, BL] from a top/bottom pair of horizontal lines and a
    left/right pair of vertical lines, at least ``side`` of the image in each direction, and the
    fraction of each side (top, right, bottom, left) that runs along an edge of its orientation (N, 4)."""
    h, w = edges_h.shape
    ti, bi = np.triu_indices(len(hl), 1)
    li, ri = np.triu_indices(len(vl), 1)
    if not len(ti) or not len(li):
        return np.zeros((0, 4, 2)), np.zeros((0, 4))
    mid_h, mid_v = hl[:, 0] + hl[:, 1] * w / 2, vl[:, 0] + vl[:, 1] * h / 2
    swap = mid_h[ti] > mid_h[bi]
    ti, bi = np.where(swap, bi, ti), np.where(swap, ti, bi)
    swap = mid_v[li] > mid_v[ri]
    li, ri = np.where(swap, ri, li), np.where(swap, li, ri)
    t, b = np.repeat(ti, len(li)), np.repeat(bi, len(li))
    l, r = np.tile(li, len(ti)), np.tile(ri, len(ti))

    def meet(hi, vi):  # y = a + b x and x = c + d y
        a, bb = hl[hi, 0], hl[hi, 1]
        c, d = vl[vi, 0], vl[vi, 1]
        x = (c + d * a) / (1 - d * bb)
        return np.stack([x, a + bb * x], axis=-1)

    size_ok = ((mid_v[r] - mid_v[l]) > side * w) & ((mid_h[b] - mid_h[t]) > side * h)
    t, b, l, r = t[size_ok], b[size_ok], l[size_ok], r[size_ok]
    quads = np.stack([meet(t, l), meet(t, r), meet(b, r), meet(b, l)], axis=1)
    cov_h, cov_v = _coverage(hl, edges_h, True), _coverage(vl, edges_v, False)

    def seen(cov, line, start, end, n):  # share of line ``line`` between coordinates start..end on an edge
        start, end = np.clip(np.round(start).astype(int), 0, n), np.clip(np.round(end).astype(int), 0, n)
        return (cov[line, end] - cov[line, start]) / np.maximum(end - start, 1)

    support = np.stack([seen(cov_h, t, quads[:, 0, 0], quads[:, 1, 0], w), seen(cov_v, r, quads[:, 1, 1], quads[:, 2, 1], h),
                        seen(cov_h, b, quads[:, 3, 0], quads[:, 2, 0], w), seen(cov_v, l, quads[:, 0, 1], quads[:, 3, 1], h)],
                       axis=1)
    return quads, support


def _strips(quads: np.ndarray, offsets: tuple[float, ...], width: int, height: int, samples: int = 24) -> np.ndarray:
    """(K, N, 4, S) flat pixel indices of ``samples`` points along each side of each quad (top, right,
    bottom, left), ``offsets[k]`` px outwards (negative: inwards), in a ``width`` x ``height`` image."""
    t = np.linspace(0.05, 0.95, samples)[:, None]
    along = quads[:, :, None, :] * (1 - t) + np.roll(quads, -1, axis=1)[:, :, None, :] * t  # (N, 4, S, 2)
    offsets = np.array(offsets, np.float64)[:, None, None, None]
    # a side moves across itself: top (up) and bottom (down) in y, right (right) and left (left) in x
    x_tb = np.clip(np.round(along[:, ::2, :, 0]).astype(int), 0, width - 1)
    y_tb = np.clip(np.round(along[None, :, ::2, :, 1] + offsets * np.array([-1.0, 1.0])[:, None]).astype(int), 0, height - 1)
    x_rl = np.clip(np.round(along[None, :, 1::2, :, 0] + offsets * np.array([1.0, -1.0])[:, None]).astype(int), 0, width - 1)
    y_rl = np.clip(np.round(along[:, 1::2, :, 1]).astype(int), 0, height - 1)
    index = np.empty((len(offsets), len(quads), 4, samples), int)
    index[:, :, ::2], index[:, :, 1::2] = y_tb * width + x_tb, y_rl * width + x_rl
    return index


def _area(quads: np.ndarray) -> np.ndarray:
    x, y = quads[..., 0], quads[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y).sum(axis=-1))


def _box_sums(table: np.ndarray, quads: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per quad (pixels of a ``width`` x ``height`` image): the sum over the box through its side
    midpoints read from ``table``, the summed-area table (``cv2.integral``) of a copy of that image at
    any size, and the box's area in that copy's pixels."""
    th, tw = table.shape[0] - 1, table.shape[1] - 1
    mid = (quads + np.roll(quads, -1, axis=1)) / 2
    top, bottom = (np.clip(np.round(mid[:, k, 1] * th / height), 0, th).astype(int) for k in (0, 2))
    left, right = (np.clip(np.round(mid[:, k, 0] * tw / width), 0, tw).astype(int) for k in (3, 1))
    sums = table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]
    return sums, (bottom - top) * (right - left)


def _palettes(pixels: np.ndarray, quads: np.ndarray, side: int = 40, bins: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per quad: how different the colours inside it are from those outside it (total variation
    distance of coarse colour histograms, 0..1), and how varied the outside is (entropy of its
    histogram, bits). A painting hung on a wall differs from the wall around it; a rectangle within a
    painting shares the painting's palette, and what lies outside it is as varied as the rest."""
    cv2 = _cv2()
    h, w = pixels.shape[:2]
    sw, sh = (side, max(1, round(side * h / w))) if w >= h else (max(1, round(side * w / h)), side)
    thumb = cv2.resize(pixels, (sw, sh), interpolation=cv2.INTER_AREA).reshape(-1, 3).astype(int) * bins // 256
    onehot = np.eye(bins ** 3, dtype=np.uint8)[(thumb[:, 0] * bins + thumb[:, 1]) * bins + thumb[:, 2]].reshape(sh, sw, -1)
    table = cv2.integral(onehot, sdepth=cv2.CV_32S)  # summed-area table: a box's histogram is four lookups
    hist_in = _box_sums(table, quads, w, h)[0].astype(np.float64)
    hist_out = table[-1, -1] - hist_in
    hist_in /= np.maximum(hist_in.sum(axis=1, keepdims=True), 1)
    hist_out /= np.maximum(hist_out.sum(axis=1, keepdims=True), 1)
    distance = 0.5 * np.abs(hist_in - hist_out).sum(axis=1)
    entropy = -(hist_out * np.log2(np.where(hist_out > 0, hist_out, 1))).sum(axis=1)
    return distance, entropy


def _edge_density(edges: np.ndarray, quads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per quad: the share of edge pixels inside it and outside it. A painting is busy and the frame
    and wall around it are mostly plain; a rectangle within a scan has as busy a painting outside as in."""
    cv2 = _cv2()
    h, w = edges.shape
    table = cv2.integral((edges > 0).astype(np.uint8), sdepth=cv2.CV_32S)
    inside, area = _box_sums(table, quads, w, h)
    area = np.maximum(area, 1)
    return inside / area, (table[-1, -1] - inside) / np.maximum(w * h - area, 1)


def _frames(quads: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per quad: the best support of a quad around it, and of a quad inside it, whose margins to it are
    those of a frame or mat (all four about equal, at most 30 % of the outer quad's shorter side)."""
    mid = (quads + np.roll(quads, -1, axis=1)) / 2  # side midpoints: top, right, bottom, left
    top, right, bottom, left = mid[:, 0, 1], mid[:, 1, 0], mid[:, 2, 1], mid[:, 3, 0]
    # [outer, inner]: outer quads in rows, inner ones in columns
    margins = (top[None] - top[:, None], right[:, None] - right[None], bottom[:, None] - bottom[None], left[None] - left[:, None])
    short = np.minimum(right - left, bottom - top)[:, None]
    low, high = functools.reduce(np.minimum, margins), functools.reduce(np.maximum, margins)
    frame = (low >= 2) & (high <= 0.3 * short) & (low >= 0.5 * high)  # [outer, inner]
    inside_frame = np.where(frame, support[:, None], 0).max(axis=0)
    is_frame = np.where(frame, support[None, :], 0).max(axis=1)
    return inside_frame, is_frame


#: What :func:`candidates` measures of each quad on its own.
OWN_FEATURES = ("support_min", "support_mean", "rough_out_max", "rough_out_mean", "rough_in_mean", "contrast_min",
                "contrast_mean", "area", "border_margin", "inside_frame", "is_frame", "outside_spread",
                "palette_distance", "outside_entropy", "edges_in", "edges_out")
#: Measurements also taken relative to the image's other candidates — minus the largest of them for
#: the first group, minus the smallest for the second — and how many candidates there are. A quad is
#: judged against its rivals: in a wall photo the painted surface stands out from every other
#: rectangle, in a scan no rectangle does. (Cross-validated on 2,700 wall photos, same scorer size and
#: share of clean scans cropped: crops with IoU >= 0.9 went from 77 % to 80 %, photos left whole from 9 % to 7 %.)
VS_MAX = ("support_min", "support_mean", "contrast_min", "contrast_mean", "palette_distance")
VS_MIN = ("rough_out_max", "rough_out_mean", "rough_in_mean", "edges_in", "edges_out")
#: Every column of :func:`candidates`' features, in order (``artattr/locate.json`` weighs them).
FEATURES = (OWN_FEATURES + tuple(f"{name}_vs_max" for name in VS_MAX) + ("candidates",)
            + tuple(f"{name}_vs_min" for name in VS_MIN))


def _relative(own: np.ndarray) -> np.ndarray:
    """The columns of :data:`FEATURES` after :data:`OWN_FEATURES`, from the image's candidates' own ones."""
    column = {name: own[:, k] for k, name in enumerate(OWN_FEATURES)}
    return np.stack([column[name] - column[name].max() for name in VS_MAX]
                    + [np.full(len(own), len(own) / MAX_CANDIDATES)]
                    + [column[name] - column[name].min() for name in VS_MIN], axis=1)


def candidates(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Quads that could be the painted surface, and what speaks for each: ``(quads, features)`` with
    quads (N, 4, 2) as fractions of the image's width and height and features (N, len(FEATURES)).

    On a ~WORK_SIZE px copy, Canny edges split by orientation feed a Hough transform for long
    near-horizontal and near-vertical lines; every top/bottom + left/right pair is a quad, kept when
    edges run along enough of its sides (looked for again with shorter lines, down to a tenth of the
    image, when none is: :data:`SIZES`). Its features: how much of each side is edge; how smooth the
    picture is just outside it (a frame, mat or wall) and inside it (the painting); how much the
    colour changes across it and how much the colour just outside differs between the four sides (a
    frame, mat or wall is one colour all round); how different the colours inside and outside it are
    and how varied the outside is; the share of edge pixels inside and outside it (a painting is busy, a
    frame and wall plain); its area and distance from the image border; and whether it sits inside
    a frame-like quad or has one inside it (then it is a frame's outer edge, not the painting); and
    several of these again relative to the other candidates (:data:`VS_MAX`, :data:`VS_MIN`).
    """
    cv2 = _cv2()
    scale = min(1.0, WORK_SIZE / max(image.size))
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    none = np.zeros((0, 4, 2)), np.zeros((0, len(FEATURES)))
    if min(w, h) < 32:
        return none
    pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if scale < 1:
        pixels = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA)
    pixels = cv2.GaussianBlur(pixels, (0, 0), 1.0)
    edges = cv2.Canny(pixels, *CANNY, L2gradient=True)
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.absdiff(cv2.Sobel(gray, cv2.CV_32F, 1, 0), 0), cv2.absdiff(cv2.Sobel(gray, cv2.CV_32F, 0, 1), 0)
    edges_h = cv2.bitwise_and(edges, cv2.compare(gy, gx, cv2.CMP_GT))  # edges running left-right
    edges_v = cv2.bitwise_and(edges, cv2.compare(gx, gy, cv2.CMP_GT))
    along_h, along_v = cv2.dilate(edges_h, np.ones((3, 1), np.uint8)) > 0, cv2.dilate(edges_v, np.ones((1, 3), np.uint8)) > 0
    for votes, side, min_area in SIZES:  # a smaller painting only when none of the usual size is found
        quads, support = _quads(_lines(edges_h, True, votes=votes), _lines(edges_v, False, votes=votes), along_h, along_v, side)
        area = _area(quads) / (w * h)
        quads, support = quads[area >= min_area], support[area >= min_area]
        keep = np.argsort(-support.min(axis=1))[:MAX_CANDIDATES]
        keep = keep[support[keep].min(axis=1) >= MIN_SUPPORT]
        quads, support = quads[keep], support[keep]
        if len(quads):
            break
    else:
        return none
    strips = _strips(quads, (3.0, 8.0, -3.0, -8.0), w, h)
    step = np.abs(np.diff(gray.ravel()[strips], axis=-1)).mean(axis=-1)  # (offset, N, 4 sides)
    rough_out, rough_in = np.maximum(step[0], step[1]), (step[2] + step[3]) / 2
    # (N, 4 sides, 3) just outside and inside: a frame, mat or wall is one colour all round
    outside, inside = pixels.reshape(-1, 3)[strips[[0, 2]]].astype(np.float32).mean(axis=3)
    contrast = np.linalg.norm(outside - inside, axis=-1)
    spread = np.linalg.norm(outside.std(axis=1), axis=-1)
    border = np.minimum(np.minimum(quads[..., 0].min(axis=1), w - quads[..., 0].max(axis=1)),
                        np.minimum(quads[..., 1].min(axis=1), h - quads[..., 1].max(axis=1))) / min(w, h)
    inside_frame, is_frame = _frames(quads, support.min(axis=1))
    distance, entropy = _palettes(pixels, quads)
    edges_in, edges_out = _edge_density(edges, quads)
    features = np.stack([support.min(axis=1), support.mean(axis=1), np.log1p(rough_out.max(axis=1)),
                         np.log1p(rough_out.mean(axis=1)), np.log1p(rough_in.mean(axis=1)),
                         np.log1p(contrast.min(axis=1)), np.log1p(contrast.mean(axis=1)),
                         _area(quads) / (w * h), border, inside_frame, is_frame, np.log1p(spread), distance, entropy,
                         edges_in, edges_out], axis=1)
    return quads / np.array([w, h]), np.concatenate([features, _relative(features)], axis=1)


@functools.lru_cache(maxsize=1)
def _scorer() -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """(layers, threshold) of the candidate scorer fitted by ``python -m train locate``: a small
    multilayer perceptron, each layer ``(weights, bias)``, ReLU between them."""
    fitted = json.loads(WEIGHTS_FILE.read_text())
    if tuple(fitted["features"]) != FEATURES:
        raise ValueError(f"{WEIGHTS_FILE} was fitted for other features; refit with python -m train locate")
    layers = [(np.asarray(layer["weights"], np.float64), np.asarray(layer["bias"], np.float64))
              for layer in fitted["layers"]]
    return layers, float(fitted["threshold"])


def score(features: np.ndarray, layers: list | None = None) -> np.ndarray:
    """How much each candidate looks like the painted surface: its predicted IoU with it, to the 4th
    power (fitted on synthetic wall photos vs clean scans and everyday photos). ``layers``: the
    scorer's ``(weights, bias)`` pairs, by default the fitted ones (``train.fit_locate`` passes its own)."""
    layers = _scorer()[0] if layers is None else layers
    x = features
    for i, (weights, bias) in enumerate(layers):
        x = x @ weights + bias
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x[:, 0]


def best_quad(image: Image.Image) -> tuple[np.ndarray | None, float]:
    """The candidate most like the painted surface, as corners (see :func:`find_painting`), and its
    score; ``(None, -inf)`` when there is no candidate. One that clears the threshold is narrowed to
    the painted surface when it took in a frame (:func:`inside_frame`)."""
    quads, features = candidates(image)
    if not len(quads):
        return None, -np.inf
    scores = score(features)
    best = int(np.argmax(scores))
    if scores[best] >= _scorer()[1]:
        return inside_frame(image, quads[best], quads), float(scores[best])
    return quads[best], float(scores[best])


def quad_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two convex quads (same units), e.g. a located crop and the truth."""
    cv2 = _cv2()
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    inter, _ = cv2.intersectConvexConvex(a32, b32)
    union = cv2.contourArea(a32) + cv2.contourArea(b32) - inter
    return float(inter / union) if union > 0 else 0.0


#: The learned localiser's region narrows a line quad that cleared the threshold when its area is this
#: share of the quad's (less: the net missed part of the painting; more: they agree) ...
INNER_AREA = (0.5, 0.92)
#: ... and this share of it lies inside the quad ...
INNER_HELD = 0.97
#: ... to the candidate matching the region at least this well (IoU), if there is one: lines and net agree.
INNER_SNAP = 0.9


def inside_frame(image: Image.Image, corners: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """``corners`` (a quad that cleared the threshold), or the painted surface inside it when the quad is a
    frame's outer edge or one of its mouldings. Gilded and shadow-box frames have several straight edges
    round the painting, which the scorer's measurements do not tell from the canvas edge; the learned
    localiser (:mod:`artattr.surface`) marks painted surface, not frame: when its region lies inside the
    quad, and a candidate matches it, lines and net agree on the painting. Of the quads that cleared, IoU
    >= 0.9 with the painted surface: on 400 renders like ``bench_locate``'s (seed 19) 84.5 -> 86.4 %, on 528
    wall photos from a renderer of another hand 64.2 -> 70.5 % (gilded frames 27 -> 39 %); 80 crops better,
    5 worse. Style top-1 does not move (the model learnt from cut-outs with some frame in them); taking the
    net's quad even when no candidate matches it gains more IoU there but spoils right crops on plain walls.
    The net (~3 ms) runs only when a candidate lies inside the quad at a share of its area such a region
    could match (on 72 % of the wall photos above whose quad cleared)."""
    from .surface import surface_quad

    outer = _area(corners[None])[0]
    share = _area(quads) / outer
    low, high = corners.min(axis=0), corners.max(axis=0)
    slack = 0.05 * (high - low)
    within = ((quads.min(axis=1) >= low - slack) & (quads.max(axis=1) <= high + slack)).all(axis=1)
    inner = quads[within & (share >= INNER_AREA[0] * INNER_SNAP) & (share <= 0.98)]  # 0.98: not the quad itself
    found = surface_quad(image) if len(inner) else None
    if found is None:
        return corners
    area = _area(found[None])[0]
    held = _cv2().intersectConvexConvex(found.astype(np.float32), np.asarray(corners, np.float32))[0]
    if not INNER_AREA[0] <= area / outer <= INNER_AREA[1] or held < INNER_HELD * area:
        return corners
    ious = [quad_iou(quad, found) for quad in inner]
    best = int(np.argmax(ious))
    return inner[best] if ious[best] >= INNER_SNAP else corners


def find_painting(image: Image.Image) -> np.ndarray | None:
    """Corners (4, 2) of the painted surface — top-left, top-right, bottom-right, bottom-left, as
    fractions of the image's width and height — or ``None`` when the whole image should be used."""
    corners, best = best_quad(image)
    return corners if best >= _scorer()[1] else None


def rectify(image: Image.Image, corners: np.ndarray | None, max_side: int | None = None) -> Image.Image:
    """The painted surface as a flat rectangle: ``corners`` (fractions, from :func:`find_painting`)
    warped to a rectangle as large as the quad's sides (at most ``max_side``). ``None`` → the image."""
    if corners is None:
        return image
    cv2 = _cv2()
    quad = (np.asarray(corners, dtype=np.float64) * np.array(image.size)).astype(np.float32)
    width = max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3]))
    height = max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1]))
    if max_side and max(width, height) > max_side:
        width, height = width * max_side / max(width, height), height * max_side / max(width, height)
    width, height = max(1, round(width)), max(1, round(height))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    warp = cv2.getPerspectiveTransform(quad, target)
    flat = cv2.warpPerspective(np.asarray(image.convert("RGB")), warp, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(flat)


#: :func:`odd_region` works on a copy this many pixels on its longer side.
ODD_SIZE = 128
#: ... and calls the outer ring this share of the shorter side wide: the wall, in a photo of a painting.
ODD_RING = 0.06


def odd_region(image: Image.Image) -> np.ndarray | None:
    """Corners (as :func:`find_painting`) of the box around the largest compact region in colours the
    image's border does not have, or ``None``. On a brick, panelled or papered wall a small painting's sides
    are outvoted by the wall's own lines and no quad is found, but the wall is what the photo's border shows
    and the painting is in other colours. Only a maybe (:func:`locate_views`): a detail of a painting or an
    everyday photo can have such a region too, and the model's artwork head decides."""
    cv2 = _cv2()
    scale = ODD_SIZE / max(image.size)
    w, h = max(8, round(image.width * scale)), max(8, round(image.height * scale))
    pixels = cv2.resize(np.asarray(image if image.mode == "RGB" else image.convert("RGB")), (w, h),
                        interpolation=cv2.INTER_AREA)
    colour = (cv2.GaussianBlur(pixels, (0, 0), 1.0) // 16).astype(int) @ np.array([256, 16, 1])  # 16 levels a channel
    ring = max(2, round(ODD_RING * min(w, h)))
    border = np.ones((h, w), bool)
    border[ring:-ring, ring:-ring] = False
    seen = np.zeros((16, 16, 16), bool)
    seen.ravel()[np.unique(colour[border])] = True
    seen = np.pad(seen, 1)  # with the neighbouring colours: light and compression shift a wall's colours a little
    seen = np.logical_or.reduce([seen[1 + i:17 + i, 1 + j:17 + j, 1 + k:17 + k]
                                 for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    odd = cv2.morphologyEx((seen.ravel()[colour] == 0).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    odd = cv2.morphologyEx(odd, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(odd)
    if count < 2:
        return None
    x, y, bw, bh, area = stats[1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])]
    # compact, 2-60 % of the image and each side at least SIZES' smallest (a strip is a stripe or a border, not a painting)
    if area < 0.75 * bw * bh or not 0.02 <= bw * bh / (w * h) <= 0.6 or bw < SIZES[-1][1] * w or bh < SIZES[-1][1] * h:
        return None
    return np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]], float) / np.array([w, h])


class View(NamedTuple):
    """One picture of an upload to show the model: the whole image (``corners`` None) or a cut-out, and for a
    maybe the log-odds ``gain`` over the whole image with which the artwork head must confirm it
    (:func:`artattr.output.pick`; None: its default), and whether it is the ``fallback``, taken unconfirmed
    when no maybe is confirmed."""

    picture: Image.Image | None
    corners: np.ndarray | None
    gain: float | None = None
    fallback: bool = False


#: A quad from the learned localiser (:mod:`artattr.surface`) is confirmed when its cut-out scores as a painting
#: (:data:`artattr.output.CONFIRM_ARTWORK`) at least as much as the whole photo: the net was trained to find
#: nothing in clean scans and everyday photos (it found a quad in 1 of 1,000 val scans and in 4 of the
#: 100 photos500 images it never saw), so it needs less of the model's word than a borderline line quad.
#: Unconfirmed, it is still the fallback (:func:`artattr.output.pick`): the whole photo of a small painting on
#: a brick or panelled wall is answered right 18 % of the time (49 of 700 wall photos from a renderer of
#: another hand), the net's quad far more often. Style top-1 on those 700 0.740 -> 0.761; on
#: ``bench_locate``'s 300 unchanged (0.830); clean scans cropped as before; 8 of photos500's 500 get a crop
#: (2 before), judged "not a painting" as if whole.
SURFACE_GAIN = 0.0


def locate_views(image: Image.Image, maybe: bool = False) -> list[View]:
    """What to show the model: the painted surface when a quad clears the threshold, else the whole image,
    and with ``maybe`` also, for the model to confirm in this order (:func:`artattr.output.pick`), the
    learned localiser's quad (:func:`artattr.surface.surface_quad`; the fallback when none is confirmed) and
    the :func:`odd_region`, or when there is none a best quad scoring from :data:`MAYBE` up. (The second
    maybe, taken only when the model doubts the first, adds 0.3-2 points of style top-1 on wall photos,
    ``bench/bench_locate.py``'s and a renderer of another hand's, and crops no more clean scans or everyday
    photos.)"""
    from .surface import surface_quad

    corners, best = best_quad(image)
    if best >= _scorer()[1]:
        return [View(rectify(image, corners), corners)]
    views = [View(image, None)]
    if not maybe:
        return views
    found = surface_quad(image)
    if found is not None:
        views.append(View(rectify(image, found), found, SURFACE_GAIN, fallback=True))
    odd = odd_region(image)
    corners = odd if odd is not None else corners if best >= MAYBE else None
    if corners is not None:
        views.append(View(rectify(image, corners), corners))
    return views


def locate_painting(image: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """``(painted surface, corners)``, or ``(image, None)`` when no painting stands out from it."""
    return locate_views(image)[0][:2]
