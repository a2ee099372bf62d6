"""The image loader: every odd but valid upload works, every bad one gives a readable ValueError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from artattr.images import load_image


@pytest.mark.parametrize("name", ["cmyk.jpg", "gray.png", "rgba.png", "palette.gif", "gray16.png", "animated.gif", "big.jpg"])
def test_odd_images_become_rgb(odd_images, name):
    img = load_image(odd_images[name])
    assert img.mode == "RGB" and min(img.size) > 0
    assert np.asarray(img).std() > 5, "the picture content must survive the conversion"


def test_16bit_is_rescaled_not_clipped(odd_images, painting):
    ref = np.asarray(Image.open(painting).convert("L"), dtype=float)
    got = np.asarray(load_image(odd_images["gray16.png"]).convert("L"), dtype=float)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99


def test_exif_orientation_is_applied(odd_images):
    raw = Image.open(odd_images["rotated.jpg"])
    assert raw.width > raw.height
    img = load_image(odd_images["rotated.jpg"])
    assert img.size == (raw.height, raw.width)


def test_animated_gif_uses_first_frame(odd_images, painting):
    base = Image.open(painting).convert("L")
    got = np.asarray(load_image(odd_images["animated.gif"]).convert("L"), dtype=float).ravel()
    same = np.corrcoef(got, np.asarray(base, dtype=float).ravel())[0, 1]
    rotated = np.corrcoef(got, np.asarray(base.rotate(90), dtype=float).ravel())[0, 1]
    assert same > 0.9 and same > rotated + 0.2


def test_alpha_is_composited_on_white():
    rgba = np.zeros((20, 20, 4), np.uint8)  # fully transparent black
    img = load_image(rgba)
    assert (np.asarray(img) == 255).all()


@pytest.mark.parametrize("source", ["bytes", "pil", "array", "array_chw", "float_array"])
def test_input_kinds(painting, source):
    pil = Image.open(painting)
    value = {
        "bytes": painting.read_bytes(),
        "pil": pil,
        "array": np.asarray(pil),
        "array_chw": np.asarray(pil).transpose(2, 0, 1),
        "float_array": np.asarray(pil) / 255.0,
    }[source]
    img = load_image(value)
    assert img.size == pil.size and img.mode == "RGB"


@pytest.mark.parametrize("name, message", [
    ("empty.jpg", "empty"),
    ("notes.txt", "not an image"),
    ("truncated.jpg", "truncated"),
    ("fake.png", "not an image"),
])
def test_bad_files_give_human_messages(bad_files, name, message):
    with pytest.raises(ValueError, match=message):
        load_image(bad_files[name])


def test_missing_file():
    with pytest.raises(ValueError, match="No such image file"):
        load_image("/nonexistent/painting.jpg")


def test_decompression_bomb_is_refused_before_decoding():
    # A 12000×10000 PNG is tiny on disk (one colour) but would need 360 MB decoded.
    buf = io.BytesIO()
    Image.new("L", (12000, 10000)).save(buf, format="PNG")
    with pytest.raises(ValueError, match="megapixels"):
        load_image(buf.getvalue())


def test_absurd_aspect_ratio_is_refused():
    with pytest.raises(ValueError, match="aspect ratio"):
        load_image(np.zeros((4, 400, 3), np.uint8))


def test_draft_decodes_large_jpeg_smaller(odd_images):
    full = load_image(odd_images["big.jpg"])
    small = load_image(odd_images["big.jpg"], draft_size=320)
    assert full.size == (1024, 768)
    assert 320 <= min(small.size) < min(full.size)


def test_exif_orientation_is_applied_once(odd_images):
    """The app sends the upright picture to its model process, which loads it again."""
    upright = load_image(odd_images["rotated.jpg"], draft_size=160)
    assert load_image(upright).size == upright.size
