"""Turn whatever a user uploads into one RGB PIL image, or a ValueError a person can read.

Uploads come from phones, scanners and museum archives: EXIF-rotated JPEGs, CMYK TIFFs,
16-bit PNGs, palette GIFs with transparency, animated GIFs, half-downloaded files. Every
caller (predictor, app, CLI, trainer) goes through :func:`load_image` so they all agree
on what a picture is.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]

#: Refuse images above this many pixels before decoding them (decompression-bomb guard).
#: 100 MP covers any real photograph of a painting; gigapixel scans must be downsized first.
MAX_PIXELS = 100_000_000
#: Reject absurd aspect ratios (a 1×100000 strip is no painting and breaks the heatmaps).
MAX_ASPECT = 20.0


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparency on white: a transparent background is paper, not black paint."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return _flatten_alpha(img)
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
    else:
        path = Path(source)
        name = f"'{path.name}'"
        if not path.is_file():
            raise ValueError(f"No such image file: {path}")
        data = path.read_bytes()
    if not data:
        raise ValueError(f"{name} is empty (0 bytes): please upload an image file.")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError(f"{name} is not an image file ArtAttr can open (JPEG, PNG, WebP, TIFF, GIF or BMP).") from None
    except Image.DecompressionBombError as err:
        raise ValueError(f"{name} is too large to process safely: {err}") from None
    except (OSError, SyntaxError):  # a header cut short: "Truncated File Read" from the format plugin
        raise ValueError(f"{name} is truncated or corrupt (it may not have finished uploading).") from None
    return img


def load_image(source: ImageInput, max_pixels: int = MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode ``source`` into an upright RGB image.

    ``draft_size`` lets JPEG decoding skip detail the model never sees (libjpeg DCT
    scaling): a 4000 px photo decodes ~8× faster when the model wants 160 px.
    Raises ``ValueError`` with a message fit for an end user on anything unusable.
    """
    img = _open(source)
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
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated GIF/WebP/APNG: the first frame stands for the work
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if draft_size and img.format == "JPEG" and img.mode in ("RGB", "L"):
                img.draft(img.mode, (draft_size, draft_size))
            img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except (OSError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        reason = str(err) or type(err).__name__
        if "truncated" in reason or "broken" in reason.lower() or "premature" in reason.lower():
            raise ValueError("The image file is truncated or corrupt (it may not have finished uploading).") from None
        raise ValueError(f"The image could not be decoded: {reason}") from None
