"""Turn whatever a user uploads into one RGB PIL image, or a ValueError a person can read.

Uploads come from phones, scanners and museum archives: EXIF-rotated JPEGs, CMYK TIFFs,
16-bit PNGs, palette GIFs with transparency, animated GIFs, half-downloaded files. Every
caller (predictor, app, CLI, trainer) goes through :func:`load_image` so they all agree
on what a picture is.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

ImageInput = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]

#: Refuse images above this many pixels before decoding them (decompression-bomb guard).
#: 100 MP covers any real photograph of a painting; gigapixel scans must be downsized first.
MAX_PIXELS = 100_000_000
#: Reject absurd aspect ratios (a 1×100000 strip is no painting and breaks the heatmaps).
MAX_ASPECT = 20.0
#: The only decoders an upload can reach: photo formats. Pillow's other plugins (EPS via Ghostscript,
#: PSD, FITS, ...) are attack surface a painting photo never needs.
FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "TIFF", "GIF", "BMP")
#: Modes ``Image.reduce`` cannot average (palette indices, bits, 16-bit) and what they become first.
_REDUCE_AS = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}
#: EXIF orientation -> the transpose that makes the picture upright (as ``ImageOps.exif_transpose``).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparency on white: a transparent background is paper, not black paint."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    # a colour key (a PNG's tRNS chunk: one grey level or colour that is see-through) is transparency too
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        return _flatten_alpha(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: scale the real range to 8 bits rather than clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _from_array(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"Expected an H×W, H×W×3 or H×W×4 image array, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError("The image array is empty.")
    if arr.dtype != np.uint8:
        arr = np.nan_to_num(arr.astype(np.float64))
        if arr.max() <= 1.0 and arr.min() >= 0.0:
            arr = arr * 255.0  # float images in [0, 1]
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _open(source: ImageInput) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = "the uploaded data"
    elif not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"Expected an image file path, bytes, a PIL image or an array, got {type(source).__name__}.")
    else:
        path = Path(source)
        name = f"'{path.name}'"
        if not path.is_file():
            raise ValueError(f"No such image file: {path}")
        data = path.read_bytes()
    if not data:
        raise ValueError(f"{name} is empty (0 bytes): please upload an image file.")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ValueError(f"{name} is not an image file ArtAttr can open ({', '.join(FORMATS)}).") from None
    except Image.DecompressionBombError:  # over twice Pillow's limit: refused before any pixel is read
        raise ValueError(f"{name} has far too many pixels to open safely (over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                         "megapixels). Please upload a downsized copy.") from None
    except (OSError, SyntaxError):  # a header cut short: "Truncated File Read" from the format plugin
        raise ValueError(f"{name} is truncated or corrupt (it may not have finished uploading).") from None
    return img


def _check_size(img: Image.Image, max_pixels: int) -> None:
    """Our own limit, compared per call: Pillow's bomb check reads a process-wide setting."""
    w, h = img.size
    if w < 1 or h < 1:
        raise ValueError("The image has no pixels.")
    if w * h > max_pixels:
        raise ValueError(
            f"The image is {w}×{h} = {w * h / 1e6:.0f} megapixels; the limit is {max_pixels / 1e6:.0f} MP. "
            "Please upload a downsized copy."
        )
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise ValueError(f"The image is {w}×{h}: an aspect ratio above {MAX_ASPECT:.0f}:1 is not a painting photo.")


def _reduce(img: Image.Image, size: int) -> Image.Image:
    """Shrink by the largest whole factor that keeps the short side at least ``size`` (box averaging),
    right after decoding: a 100 MP upload then costs one full-size copy for a moment, not one per step."""
    factor = min(img.size) // size
    if factor < 2:
        return img
    if img.mode in _REDUCE_AS:
        img = img.convert(_REDUCE_AS[img.mode])
    return img.reduce(factor)


def load_image(source: ImageInput, max_pixels: int = MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode ``source`` into an upright RGB image.

    ``draft_size`` says the caller needs only that many pixels on the short side: JPEGs skip the
    detail while decoding (libjpeg DCT scaling: a 4000 px photo decodes ~8× faster when the model
    wants 160 px) and every image is reduced right after decoding, before any other copy is made.
    Safe to call from many threads at once: it touches no process-wide state (warning filters,
    ``Image.MAX_IMAGE_PIXELS``). Raises ``ValueError`` with a message fit for an end user on anything unusable.
    """
    img = _open(source)
    _check_size(img, max_pixels)
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated GIF/WebP/APNG: the first frame stands for the work
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation)
        if draft_size and img.format == "JPEG" and img.mode in ("RGB", "L"):
            img.draft(img.mode, (draft_size, draft_size))
        img.load()
        _check_size(img, max_pixels)  # a GIF frame or TIFF page may be larger than the header said
        if draft_size:
            img = _reduce(img, draft_size)
        img = _to_rgb(img)
        if orientation in _UPRIGHT:
            img = img.transpose(_UPRIGHT[orientation])
            img.info = {}  # upright now: its EXIF/XMP orientation must not turn it again when reloaded
            return img
        return img.copy() if img is source else img  # callers may draw on what they get
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        reason = str(err) or type(err).__name__
        if "truncated" in reason or "broken" in reason.lower() or "premature" in reason.lower():
            raise ValueError("The image file is truncated or corrupt (it may not have finished uploading).") from None
        raise ValueError(f"The image could not be decoded: {reason}") from None
