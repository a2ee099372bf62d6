"""A small learned localiser: which pixels of a photo are the painted surface.

The line-based locator (:mod:`artattr.locate`) finds a painting by the straight sides of its frame. On
a brick, panelled or papered wall the wall's own lines outvote a small painting's sides and the right
quad is never proposed. A tiny U-Net trained on synthetic wall photos (``python -m train surface``:
train-split paintings framed on plain, patterned and photographed walls, against clean scans and
everyday photos) marks the painted surface from what it looks like — busy and varied inside, frame and
wall around — and :func:`surface_quad` turns its mask into corners. The locator offers that quad to
the model as a maybe, taken as the fallback when the model confirms none (:func:`artattr.locate.locate_views`),
and uses it to tell a frame's moulding from the canvas edge (:func:`artattr.locate.inside_frame`). On 500
wall photos from a renderer of another hand, 56 % of its quads have IoU >= 0.9 with the painted surface and
93 % IoU >= 0.7. Neither snapping a maybe quad to a line-based candidate that agrees nor a mirrored second
pass with the quad fitted to a 3x finer mask helped: the second pass lifts IoU >= 0.9 to 62 %, but style
top-1 on those photos and on ``bench/bench_locate.py``'s went down by 0.5-1 point.

The net lives beside this file as ONNX (``surface.onnx``: a graph and its weights, no pickle), run by
OpenCV's DNN module (~2.5 ms on 2 cores), loaded on first use.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
from PIL import Image

#: The net sees the upload squashed to a square this many pixels on a side.
SIDE = 128
#: The net, written by ``python -m train surface`` as ONNX: OpenCV runs it, so locating needs no torch (the
#: CLI decodes and locates in processes without it).
WEIGHTS_FILE = Path(__file__).with_name("surface.onnx")
#: A mask region is a painting only if it covers this share of the image, at least and at most: smaller
#: is a label or a light switch, larger is a clean scan (the whole image is the painting).
AREA = (0.015, 0.9)
#: ... and fills at least this share of its fitted quad (a painting is a rectangle seen nearly square-on).
FILL = 0.85


@functools.lru_cache(maxsize=1)
def _fitted():
    import cv2

    return cv2.dnn.readNetFromONNX(str(WEIGHTS_FILE))


_forward = threading.Lock()  # one OpenCV net per process, and its forward pass is not thread-safe


def to_input(image: Image.Image) -> np.ndarray:
    """The net's input: the image in RGB, squashed to SIDE x SIDE, (3, SIDE, SIDE) uint8."""
    small = image.convert("RGB").resize((SIDE, SIDE), Image.BILINEAR, reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(small).transpose(2, 0, 1))


def surface_mask(image: Image.Image) -> np.ndarray:
    """(SIDE, SIDE) probability that each pixel of the squashed image is the painted surface."""
    blob = to_input(image)[None].astype(np.float32) / 255.0
    with _forward:
        net = _fitted()
        net.setInput(blob)
        logits = net.forward()[0, 0]
    return 1 / (1 + np.exp(-logits))


def mask_quad(mask: np.ndarray) -> np.ndarray | None:
    """Corners (TL, TR, BR, BL, fractions of width and height) of the quad around the mask's largest
    region, or ``None`` when that region is too small, too large or not quad-shaped (:data:`AREA`,
    :data:`FILL`)."""
    import cv2

    h, w = mask.shape
    binary = (mask >= 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary)
    if count < 2:
        return None
    region = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = stats[region, cv2.CC_STAT_AREA]
    if not AREA[0] <= area / (h * w) <= AREA[1]:
        return None
    contour = max(cv2.findContours((labels == region).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0],
                  key=cv2.contourArea)
    hull = cv2.convexHull(contour)
    quad = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)[:, 0].astype(np.float64)
    if len(quad) != 4:
        quad = cv2.boxPoints(cv2.minAreaRect(hull))
    quad = _order(np.asarray(quad, np.float64))
    quad += 0.5 + 0.5 * np.sign(quad - quad.mean(axis=0))  # contour pixels' outer edges: pixels 0..n-1 span 0..n
    if area < FILL * cv2.contourArea(quad.astype(np.float32)):
        return None
    return np.clip(quad / np.array([w, h]), 0, 1)


def _order(quad: np.ndarray) -> np.ndarray:
    """Four points ordered top-left, top-right, bottom-right, bottom-left."""
    s, d = quad.sum(axis=1), quad[:, 0] - quad[:, 1]
    return quad[[np.argmin(s), np.argmax(d), np.argmax(s), np.argmin(d)]]


def surface_quad(image: Image.Image) -> np.ndarray | None:
    """The painted surface's corners as the net sees it (see :func:`mask_quad`), or ``None``."""
    return mask_quad(surface_mask(image))
