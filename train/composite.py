"""Synthetic phone photos of paintings: a painting in a frame on a wall, slightly off-axis.

Uploads are rarely clean scans: people photograph a painting in its frame with some wall around it,
at a slight angle, under uneven light. WikiArt holds only tightly cropped scans, so this module
renders such photos from them with a known truth — the four corners of the painted surface in the
photo — for three uses: to measure and tune the painting locator (``artattr.locate``,
``bench/bench_locate.py``, ``tests/test_locate.py``), as training positives for the "is this a
painting" signal, and as augmentation for a classifier that should survive imperfect crops.

The one entry point is :func:`render_wall_photo` (:func:`patterned_wall` makes a wallpapered,
panelled or brick wall to hang it on); its signature and the meaning of the returned corners are a
stable interface other modules build on.

    from train.composite import render_wall_photo
    photo, quad = render_wall_photo(Image.open(path), np.random.default_rng(0), size=1024)
    # quad: (4, 2) float array, corners TL, TR, BR, BL of the painted surface in photo pixels
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from artattr.locate import DECODE_SIZE

#: Frame looks, drawn with equal probability.
FRAME_STYLES = ("flat", "bevel", "gilded", "mat", "none")
#: Largest corner shift of the perspective warp, as a fraction of the photo's size ("mild": a phone
#: held roughly square to the wall).
MAX_PERSPECTIVE = 0.06
#: How far (a fraction of its side) a located quad's corner may miss the painted surface's in
#: :func:`photo_view`: on wall photos the locator's quads are mostly within a few per cent.
QUAD_ERROR = 0.04
_FRAME_COLOURS = np.array([(20, 18, 16), (235, 232, 225), (176, 140, 60), (200, 165, 80), (110, 70, 40),
                           (70, 45, 25), (160, 160, 165), (60, 60, 62), (140, 100, 60)], dtype=np.float32)
_WALL_COLOURS = np.array([(235, 232, 224), (210, 205, 195), (120, 30, 35), (40, 60, 90), (70, 90, 70),
                          (190, 185, 175), (150, 150, 150), (60, 60, 60), (215, 200, 170), (95, 110, 130)],
                         dtype=np.float32)


def corners_to_box(quad: np.ndarray) -> tuple[int, int, int, int]:
    """Axis-aligned ``(left, top, right, bottom)`` pixel box around a quad (PIL's crop convention)."""
    quad = np.asarray(quad, dtype=np.float64)
    return (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] (uneven light, plaster, wood grain), upsampled from a coarse grid."""
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def _wall(rng: np.random.Generator, h: int, w: int, background: Image.Image | None) -> np.ndarray:
    """Float RGB wall: a real photo (cover-resized) when given, else a plain wall with texture and light falloff."""
    if background is not None:
        bg = background.convert("RGB")
        scale = max(w / bg.width, h / bg.height)
        bg = bg.resize((max(w, round(bg.width * scale)), max(h, round(bg.height * scale))), Image.BILINEAR)
        left, top = int(rng.integers(0, bg.width - w + 1)), int(rng.integers(0, bg.height - h + 1))
        return np.asarray(bg.crop((left, top, left + w, top + h)), dtype=np.float32)
    colour = _WALL_COLOURS[rng.integers(len(_WALL_COLOURS))] * rng.uniform(0.85, 1.1)
    wall = np.broadcast_to(colour, (h, w, 3)).astype(np.float32)
    wall = wall * (1 + 0.08 * _smooth_noise(rng, h, w, 4)[..., None])           # uneven light
    wall = wall + rng.normal(0, rng.uniform(1, 6), (h, w, 1)).astype(np.float32)  # plaster grain
    return wall


#: Looks of :func:`patterned_wall`, drawn with equal probability.
WALL_PATTERNS = ("stripes", "wallpaper", "planks", "bricks", "plaster")


def patterned_wall(rng: np.random.Generator, size: int = 1024) -> Image.Image:
    """A ``size``-px square wall with a pattern — striped or printed wallpaper, wood panelling, brick or
    tiles, rough plaster or fabric — to pass as ``background`` to :func:`render_wall_photo`. Period
    rooms and galleries are not all painted plain, and every seam, plank or stripe is a long straight
    line a locator may take for a frame's edge (``bench/bench_locate.py`` measures how often it does)."""
    pattern = WALL_PATTERNS[rng.integers(len(WALL_PATTERNS))]
    colour = _WALL_COLOURS[rng.integers(len(_WALL_COLOURS))] * rng.uniform(0.8, 1.15)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if rng.random() < 0.5 and pattern in ("stripes", "planks"):
        x, y = y, x  # horizontal stripes, vertical planks
    period = rng.uniform(0.015, 0.08) * size
    if pattern == "stripes":
        shade = 1 + rng.uniform(0.04, 0.15) * np.sign(np.sin(2 * np.pi * x / period))
    elif pattern == "wallpaper":  # a printed motif repeated on a grid
        tile = _smooth_noise(rng, max(2, round(period)), max(2, round(period)), 4)
        shade = 1 + rng.uniform(0.05, 0.2) * np.tile(tile, (size // len(tile) + 1,) * 2)[:size, :size]
    elif pattern == "planks":  # grain along the planks, a dark seam between them
        grain = cv2.resize(rng.uniform(-1, 1, (8, max(4, size // 4))).astype(np.float32), (size, size))
        shade = (1 + 0.12 * grain) * np.where(x % (3 * period) < 2, 0.55, 1.0)
    elif pattern == "bricks":  # rows of bricks or tiles, every other row shifted, pale mortar joints
        height = period * rng.uniform(0.8, 1.5)
        row = np.floor(y / height)
        joint = (y % height < 0.12 * height) | ((x + (row % 2) * period) % (2 * period) < 0.12 * height)
        shade = np.where(joint, rng.uniform(1.2, 1.6), 1 + 0.1 * rng.uniform(-1, 1, (int(row.max()) + 1, 1))[row.astype(int), 0])
    else:  # plaster or fabric: strong fine-grained texture
        shade = 1 + rng.uniform(0.05, 0.15) * cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.5) * 3
    wall = colour * shade.astype(np.float32)[..., None]
    return Image.fromarray(np.clip(wall, 0, 255).astype(np.uint8))


def _frame(rng: np.random.Generator, ph: int, pw: int, style: str, width: int, mat: int) -> np.ndarray:
    """RGB float image of a ``style`` frame whose moulding is ``width`` px and mat ``mat`` px wide, with
    a ``ph × pw`` hole for the painting; moulding is shaded as if lit from the top-left."""
    inset = width + mat
    h, w = ph + 2 * inset, pw + 2 * inset
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    edges = np.stack([y, x, h - 1 - y, w - 1 - x])
    depth = edges.min(axis=0)  # distance from the outer edge
    light = np.array([1.15, 1.08, 0.78, 0.86], np.float32)[edges.argmin(axis=0)]  # top, left, bottom, right
    colour = _FRAME_COLOURS[rng.integers(len(_FRAME_COLOURS))] * rng.uniform(0.85, 1.1)
    img = np.broadcast_to(colour, (h, w, 3)).astype(np.float32).copy()
    t = np.clip(depth / max(width, 1), 0, 1)  # 0 at the outer edge, 1 at the inner edge of the moulding
    if style == "bevel":
        shade = light * (0.8 + 0.35 * np.sin(np.pi * t))
    elif style == "gilded":
        shade = light * (0.85 + 0.25 * np.abs(np.sin(np.pi * t * rng.integers(2, 5))))
        shade *= 1 + 0.12 * _smooth_noise(rng, h, w, 24)
    else:
        shade = np.sqrt(light)
    img *= shade[..., None]
    if mat:
        in_mat = depth >= width
        mat_colour = np.array((240, 236, 226), np.float32) * rng.uniform(0.85, 1.05)
        img[in_mat] = mat_colour * np.where(depth[in_mat] < width + 2, 0.8, 1.0)[:, None]  # bevel cut
    return img


def render_wall_photo(painting: Image.Image, rng: np.random.Generator, background: Image.Image | None = None,
                      size: int = 1024, cover: tuple[float, float] = (0.4, 0.85)) -> tuple[Image.Image, np.ndarray]:
    """A phone photo of ``painting`` hanging on a wall, and where the painted surface lies in it.

    The painting is stretched to a random aspect ratio (WikiArt files are squashed squares; the
    classifier squashes again, so nothing is lost), framed in one of :data:`FRAME_STYLES` ("none":
    a bare canvas), placed with a wall margin on a plain textured wall or on ``background`` (e.g. a
    photos500 image: real clutter around the frame), then photographed: perspective up to
    :data:`MAX_PERSPECTIVE` of the size per corner, exposure and colour-temperature change, an
    optional glare spot, blur, sensor noise and JPEG compression (quality 60-95). The framed painting
    fills a share drawn from ``cover`` of the photo's tighter dimension. Deterministic for a given
    ``rng`` state.

    Returns ``(photo, quad)``: an RGB image whose longer side is ``size`` (4:3, 3:4 or square) and a
    ``(4, 2)`` float array with the corners of the painted surface (inside frame and mat) in photo
    pixels, ordered top-left, top-right, bottom-right, bottom-left. :func:`corners_to_box` turns it
    into a box.
    """
    aspect_out = (1.0, 4 / 3, 3 / 4)[rng.integers(3)]  # width / height of the photo
    W, H = (size, round(size / aspect_out)) if aspect_out >= 1 else (round(size * aspect_out), size)
    aspect = float(np.exp(rng.uniform(np.log(0.65), np.log(1.5))))  # painting width / height
    style = FRAME_STYLES[rng.integers(len(FRAME_STYLES))]
    width_frac = 0.0 if style == "none" else rng.uniform(0.03, 0.12)  # of the painting's shorter side
    mat_frac = rng.uniform(0.04, 0.12) if style == "mat" else 0.0
    # in units of the painting's shorter side: painting (aw, ah), framed (aw + 2 f, ah + 2 f)
    aw, ah = (aspect, 1.0) if aspect >= 1 else (1.0, 1 / aspect)
    f = width_frac + mat_frac
    cover = rng.uniform(*cover)  # the framed painting fills this much of the tighter dimension
    short = cover / max((aw + 2 * f) / W, (ah + 2 * f) / H)
    width, mat = (max(2, round(width_frac * short)) if style != "none" else 0), round(mat_frac * short)
    pw, ph = round(aw * short), round(ah * short)
    frame = _frame(rng, ph, pw, style, width, mat)
    return _photograph(painting, rng, background, W, H, frame, width + mat, pw, ph)


def _photograph(painting: Image.Image, rng: np.random.Generator, background: Image.Image | None, W: int, H: int,
                frame: np.ndarray, inset: int, pw: int, ph: int) -> tuple[Image.Image, np.ndarray]:
    fh, fw = frame.shape[:2]
    frame[inset:inset + ph, inset:inset + pw] = np.asarray(painting.convert("RGB").resize((pw, ph), Image.BICUBIC),
                                                           dtype=np.float32)
    wall = _wall(rng, H, W, background)
    # a margin keeps the painting inside the photo after the perspective warp
    margin = MAX_PERSPECTIVE * max(W, H)
    mx, my = min(margin, (W - fw) / 2), min(margin, (H - fh) / 2)
    left, top = round(rng.uniform(mx, W - fw - mx)), round(rng.uniform(my, H - fh - my))
    # soft shadow of the frame on the wall, cast down and right
    shadow = np.zeros((H, W), np.float32)
    off = max(1, round(0.01 * max(fw, fh) * rng.uniform(0.3, 1.5)))
    sy, sx = min(H, top + off + fh), min(W, left + off + fw)
    shadow[top + off:sy, left + off:sx] = rng.uniform(0.2, 0.5)
    shadow = cv2.GaussianBlur(shadow, (0, 0), off + 1)
    wall *= (1 - shadow)[..., None]
    wall[top:top + fh, left:left + fw] = frame
    flat_quad = np.array([[left + inset, top + inset], [left + inset + pw, top + inset],
                          [left + inset + pw, top + inset + ph], [left + inset, top + inset + ph]], np.float32)
    # perspective: move each photo corner by up to MAX_PERSPECTIVE of the size
    src = np.array([[0, 0], [W, 0], [W, H], [0, H]], np.float32)
    dst = src + rng.uniform(-MAX_PERSPECTIVE, MAX_PERSPECTIVE, (4, 2)).astype(np.float32) * max(W, H) * rng.uniform(0, 1)
    M = cv2.getPerspectiveTransform(src, dst)
    photo = cv2.warpPerspective(wall, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    quad = cv2.perspectiveTransform(flat_quad[None], M)[0].astype(np.float64)
    return _camera(photo, rng, max(W, H)), quad


def _camera(photo: np.ndarray, rng: np.random.Generator, size: float) -> Image.Image:
    """What the phone does to the float ``photo`` (H, W, 3): exposure, colour temperature, uneven light, an
    optional glare spot, blur, sensor noise and JPEG compression (quality 60-95). ``size``: the longer side
    of the whole photo in pixels, which blur and glare scale with (``photo`` may be a part of it)."""
    H, W = photo.shape[:2]
    photo *= rng.uniform(0.6, 1.3) * np.array([1 + rng.uniform(-0.08, 0.08), 1, 1 + rng.uniform(-0.08, 0.08)],
                                               np.float32)
    photo *= (1 + 0.15 * _smooth_noise(rng, H, W, 3))[..., None]
    if rng.random() < 0.5:
        y, x = np.ogrid[0:H, 0:W]
        cy, cx = rng.uniform(0.2, 0.8) * H, rng.uniform(0.2, 0.8) * W
        radius = rng.uniform(0.05, 0.2) * size
        photo += (rng.uniform(40, 120) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius ** 2)))[..., None]
    sigma = rng.uniform(0, 1.5) * size / 1024
    if sigma > 0.3:
        photo = cv2.GaussianBlur(photo, (0, 0), sigma)
    photo += rng.normal(0, rng.uniform(0, 4), photo.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(60, 96)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def photo_view(painting: Image.Image, rng: np.random.Generator, decode: int = DECODE_SIZE) -> Image.Image:
    """The painting as the model gets it from a phone photo once the painting is found and cut out, without
    rendering the photo (~30 ms, half the cost of rendering and locating one: cheap enough for every training
    step): the painted surface ``150``-``700`` px on a side in a 1024 px photo, cut along a quad whose corners
    miss the true ones by up to :data:`QUAD_ERROR` of its side (a strip of frame in, or an edge of the painting
    off), lit and compressed like :func:`render_wall_photo`'s photos, and decoded at ``decode`` px per 1024 as
    :mod:`artattr.preprocess` decodes uploads for the locator. Deterministic for a given ``rng`` state."""
    side = int(rng.uniform(150, 700))
    frame = _FRAME_COLOURS[rng.integers(len(_FRAME_COLOURS))]
    painted = np.asarray(painting.convert("RGB").resize((side, side), Image.BICUBIC), dtype=np.float32)
    square = np.array([[0, 0], [side, 0], [side, side], [0, side]], np.float32)
    cut = square + rng.uniform(-QUAD_ERROR, QUAD_ERROR, (4, 2)).astype(np.float32) * side
    view = cv2.warpPerspective(painted, cv2.getPerspectiveTransform(cut, square), (side, side), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(map(float, frame)))
    small = max(1, round(side * decode / 1024))
    return _camera(view, rng, 1024).resize((small, small), Image.BILINEAR, reducing_gap=3.0)


def _frame_shadow(rng: np.random.Generator, quad: np.ndarray, W: int, H: int) -> np.ndarray:
    """How much light (0-1) the frame takes from each pixel of a ``W`` x ``H`` photo: a soft-edged band along
    the top of the painted surface ``quad`` and a narrower one along its left or right side."""
    n = 128
    v = (np.arange(n, dtype=np.float32) + 0.5) / n
    top = rng.uniform(0.02, 0.3)
    side = rng.uniform(0, 0.6) * top
    band = lambda depth, t: np.clip((depth - t) / (0.4 * depth + 1e-3) + 0.5, 0, 1)  # noqa: E731
    cols = band(side, v if rng.random() < 0.5 else v[::-1])
    shade = rng.uniform(0.25, 0.65) * np.maximum(band(top, v)[:, None], cols[None, :])
    square = np.array([[0, 0], [n, 0], [n, n], [0, n]], np.float32)
    return cv2.warpPerspective(shade, cv2.getPerspectiveTransform(square, quad), (W, H), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def relight(photo: Image.Image, rng: np.random.Generator, quad: np.ndarray | None = None) -> Image.Image:
    """``photo`` taken again under harder conditions than :func:`render_wall_photo`'s camera draws: light from
    above that leaves a band of the frame's shadow along the top and one side of the painted surface
    (``quad``, photo pixels as :func:`render_wall_photo` returns it; up to 30 % of its height under a deep
    frame), a gallery's dim or tungsten light that the phone's white balance half corrects (up to ~20 % warm or cool, a slight
    green or magenta tint), an exposure one stop under to half a stop over, light falling off across the
    wall (a picture light, a window) and towards the corners, veiling glare from glass or varnish that lifts
    the shadows, a lens that is a little soft or a hand that shook, the phone's sharpening, more noise where
    it is darker, and a second JPEG. Each alone costs the classifier little; together, on the same painting,
    they are how a photo of it differs most from its scan. Deterministic for a given ``rng`` state."""
    img = np.asarray(photo.convert("RGB"), dtype=np.float32) / 255
    H, W = img.shape[:2]
    size = max(H, W)
    if quad is not None and rng.random() < 0.7:
        img = img * (1 - _frame_shadow(rng, np.asarray(quad, np.float32), W, H))[..., None]
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    y, x = y / H - 0.5, x / W - 0.5
    light = 1 + rng.uniform(-0.3, 0.3) * x + rng.uniform(-0.4, 0.3) * y
    if rng.random() < 0.5:  # a lamp or window off to one side
        cy, cx, r = rng.uniform(-0.7, 0.3), rng.uniform(-0.6, 0.6), rng.uniform(0.2, 0.6)
        light = light + rng.uniform(0.1, 0.4) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    light = light * (1 - rng.uniform(0, 0.4) * (x * x + y * y) * 2)  # vignetting: corners 0-40 % darker
    warm = rng.uniform(-1, 1)
    gains = np.array([1 + 0.18 * warm, 1 + rng.uniform(-0.04, 0.04), 1 - 0.22 * warm], np.float32)
    img = img * (light[..., None] * gains * np.exp2(rng.uniform(-1, 0.5)))
    haze = rng.uniform(0, 0.15)
    img = img * (1 - haze) + haze * img.mean((0, 1))
    k = rng.random()
    if k < 0.15:  # camera shake: a short line in any direction
        n = max(3, int(rng.uniform(0.002, 0.008) * size)) | 1
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2] = 1
        kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(0, 180), 1), (n, n))
        img = cv2.filter2D(img, -1, kernel / kernel.sum())
    elif k < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 2.5) * size / 1024)
    if rng.random() < 0.5:
        img = img + rng.uniform(0.2, 0.8) * (img - cv2.GaussianBlur(img, (0, 0), 1.2))
    img = img + rng.uniform(0.002, 0.02) * np.sqrt(np.clip(img, 0, 1)) * rng.standard_normal(img.shape).astype(np.float32)
    img = np.where(img > 0.8, 0.8 + 0.2 * (1 - np.exp(-(img - 0.8) / 0.2)), img)  # highlights roll off, not clip
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(50, 91)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
