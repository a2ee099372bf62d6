"""Find the painting in a photo of it: the painted surface inside its frame, without wall or frame.

People upload what their phone took — the painting in its frame, some wall, a slight angle — while
the model learnt from tight scans: on such photos style accuracy fell from 86 % to 33 %. This finds
the painted surface and rectifies mild perspective, so the model sees what it was trained on.

How: on a ~320 px copy, Canny edges and a Hough transform give the long near-horizontal and
near-vertical lines; every pair of top/bottom and left/right lines is a candidate quadrilateral,
kept when edges run along all four of its sides. The outermost such quad is the frame's outer edge
(or a bare canvas); a quad nested inside it with roughly equal margins on all four sides (a frame
band, a mat) is the painted surface. Nothing convincing — a clean scan, a detail, a fresco wall, an
everyday photo — means the whole image is used: :func:`find_painting` returns ``None``.

The corners are fractions of the image's width and height, so one answer serves every copy of the
upload (the model's small decode, the app's display copy, the original file). Everything here is
numpy + OpenCV (imported on first use: the app's UI process imports this module at start-up).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Lines are found on a copy whose longer side is this many pixels (the cost is ~quadratic in it).
WORK_SIZE = 320
#: Decode uploads at least this large when locating: at the model's input size (160 px) a frame is
#: a few pixels wide, and the crop would be smaller than the model's input.
DECODE_SIZE = 512
#: A quad side counts as seen when edges cover this fraction of it; inside a frame, where equal
#: margins on all four sides are evidence too, a lower fraction will do.
MIN_SUPPORT, MIN_INNER_SUPPORT = 0.75, 0.5
#: Lines tilted more than this (degrees) are not a frame seen by someone facing the painting.
MAX_TILT = 8.0
#: The painted surface covers at least MIN_AREA of the photo, and the frame (or bare canvas) at most
#: MAX_AREA: a wall photo shows wall, while a quad filling most of the image is a scan's paper margin
#: or a rectangle painted in it.
MIN_AREA, MAX_AREA = 0.08, 0.72
#: Just outside the painted surface lies a frame, mat or wall: along each side, neighbouring pixels
#: there differ by at most this many grey levels on average (painted content differs more).
MAX_ROUGH = 6.0


def _cv2():
    import cv2  # 0.1-0.4 s: only when the first image is located

    return cv2


def _lines(edges: np.ndarray, horizontal: bool, limit: int = 10) -> np.ndarray:
    """Strongest distinct near-axis lines as ``(offset, slope)``: ``y = offset + slope * x`` for
    horizontal lines, ``x = offset + slope * y`` for vertical ones."""
    cv2 = _cv2()
    h, w = edges.shape
    tilt = np.deg2rad(MAX_TILT)
    centre = np.pi / 2 if horizontal else 0.0
    found = cv2.HoughLines(edges, 1, np.pi / 360, threshold=int(0.15 * (w if horizontal else h)),
                           min_theta=centre - tilt if horizontal else 0.0,
                           max_theta=centre + tilt if horizontal else np.pi)
    if found is None:
        return np.zeros((0, 2))
    rho, theta = found[:, 0, 0].astype(np.float64), found[:, 0, 1].astype(np.float64)
    if horizontal:  # x cos t + y sin t = rho
        lines = np.stack([rho / np.sin(theta), -np.cos(theta) / np.sin(theta)], axis=1)
        span = w
    else:
        keep = (theta < tilt) | (theta > np.pi - tilt)
        rho, theta = rho[keep], theta[keep]
        lines = np.stack([rho / np.cos(theta), -np.tan(theta)], axis=1)
        span = h
    kept: list[np.ndarray] = []
    for line in lines:  # Hough returns the most voted first; drop near-duplicates of a kept line
        ends = line[0] + line[1] * np.array([0, span])
        if all(np.abs(ends - (k[0] + k[1] * np.array([0, span]))).max() > 4 for k in kept):
            kept.append(line)
            if len(kept) == limit:
                break
    return np.array(kept).reshape(-1, 2)


def _quads(hl: np.ndarray, vl: np.ndarray, w: int, h: int) -> np.ndarray:
    """All quads (N, 4, 2) [TL, TR, BR, BL] from a top/bottom pair of horizontal lines and a
    left/right pair of vertical lines, at least a fifth of the image in each direction."""
    ti, bi = np.triu_indices(len(hl), 1)
    li, ri = np.triu_indices(len(vl), 1)
    if not len(ti) or not len(li):
        return np.zeros((0, 4, 2))
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

    quads = np.stack([meet(t, l), meet(t, r), meet(b, r), meet(b, l)], axis=1)
    size_ok = ((mid_v[r] - mid_v[l]) > 0.2 * w) & ((mid_h[b] - mid_h[t]) > 0.2 * h)
    return quads[size_ok]


def _sample(quads: np.ndarray, offset: float, samples: int) -> np.ndarray:
    """(N, 4, S, 2) points along each side (top, right, bottom, left), moved ``offset`` px outwards."""
    t = np.linspace(0.05, 0.95, samples)[:, None]
    pts = quads[:, :, None, :] * (1 - t) + np.roll(quads, -1, axis=1)[:, :, None, :] * t
    return pts + offset * np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], np.float64)[None, :, None, :]


def _at(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return image[np.clip(np.round(pts[..., 1]).astype(int), 0, h - 1), np.clip(np.round(pts[..., 0]).astype(int), 0, w - 1)]


def _support(quads: np.ndarray, edges_h: np.ndarray, edges_v: np.ndarray, samples: int = 32) -> np.ndarray:
    """Per side (N, 4): the fraction of the side that runs along an edge of its orientation."""
    pts = _sample(quads, 0.0, samples)
    return np.stack([_at(edges_h, pts[:, 0]), _at(edges_v, pts[:, 1]), _at(edges_h, pts[:, 2]),
                     _at(edges_v, pts[:, 3])], axis=1).mean(axis=2)


def _roughness(quads: np.ndarray, gray: np.ndarray, samples: int = 48) -> np.ndarray:
    """Per side (N, 4): how much the picture varies along strips just outside it (3 and 8 px out) (mean step between neighbouring samples;
    a frame, mat or wall is smooth there, the painting's own content is not)."""
    rough = [np.abs(np.diff(_at(gray, _sample(quads, offset, samples)), axis=2)).mean(axis=2) for offset in (3.0, 8.0)]
    return np.maximum(*rough)


def _area(quads: np.ndarray) -> np.ndarray:
    x, y = quads[..., 0], quads[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y).sum(axis=-1))


def _margins(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(N, 4) distances from each inner quad's sides to the outer quad's (top, right, bottom, left),
    measured at the side midpoints; negative where the inner quad sticks out."""
    mid_o = (outer + np.roll(outer, -1, axis=0)) / 2
    mid_i = (inner + np.roll(inner, -1, axis=1)) / 2
    return np.stack([mid_i[:, 0, 1] - mid_o[0, 1], mid_o[1, 0] - mid_i[:, 1, 0],
                     mid_o[2, 1] - mid_i[:, 2, 1], mid_i[:, 3, 0] - mid_o[3, 0]], axis=1)


def find_painting(image: Image.Image) -> np.ndarray | None:
    """Corners (4, 2) of the painted surface — top-left, top-right, bottom-right, bottom-left, as
    fractions of the image's width and height — or ``None`` when the whole image should be used."""
    cv2 = _cv2()
    scale = min(1.0, WORK_SIZE / max(image.size))
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    if min(w, h) < 32:
        return None
    pixels = np.asarray(image.convert("RGB"))
    if scale < 1:
        pixels = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA)
    pixels = cv2.GaussianBlur(pixels, (0, 0), 1.0)
    edges = cv2.Canny(pixels, 30, 90, L2gradient=True)
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)), np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    edges_h = np.where(gy > gx, edges, 0).astype(np.uint8)  # edges running left-right
    edges_v = np.where(gx > gy, edges, 0).astype(np.uint8)
    quads = _quads(_lines(edges_h, True), _lines(edges_v, False), w, h)
    if not len(quads):
        return None
    area = _area(quads) / (w * h)
    quads, area = quads[area >= MIN_AREA], area[area >= MIN_AREA]
    support = _support(quads, cv2.dilate(edges_h, np.ones((3, 1), np.uint8)) > 0,
                       cv2.dilate(edges_v, np.ones((1, 3), np.uint8)) > 0).min(axis=1)
    quads, area, support = quads[support >= MIN_INNER_SUPPORT], area[support >= MIN_INNER_SUPPORT], support[support >= MIN_INNER_SUPPORT]
    wall = support >= MIN_SUPPORT
    wall[wall] = _roughness(quads[wall], gray).max(axis=1) <= MAX_ROUGH
    if not wall.any():
        return None
    outer = quads[wall][np.argmax(area[wall])]  # the frame's outer edge (or a bare canvas) on a wall
    margins = _margins(outer, quads)
    short = min(np.linalg.norm(outer[1] - outer[0]), np.linalg.norm(outer[3] - outer[0]))
    frame_like = ((margins.min(axis=1) >= 2) & (margins.max(axis=1) <= 0.3 * short)
                  & (margins.min(axis=1) >= 0.5 * margins.max(axis=1)))
    best = quads[frame_like][np.argmin(area[frame_like])] if frame_like.any() else outer
    if _area(outer[None])[0] / (w * h) > MAX_AREA:
        return None
    return best / np.array([w, h])


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


def locate_painting(image: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """``(painted surface, corners)``, or ``(image, None)`` when no painting stands out from it."""
    corners = find_painting(image)
    return rectify(image, corners), corners
