"""The image loader: every odd but valid upload works, every bad one gives a readable ValueError."""

from __future__ import annotations

import io
import warnings

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
    buf = io.BytesIO()  # an animated picture handed over open at its second frame: still the first
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buf, format="GIF", save_all=True,
                                                append_images=[Image.new("RGB", (4, 4), (0, 0, 255))])
    two = Image.open(buf)
    two.seek(1)
    assert tuple(np.asarray(load_image(two))[0, 0]) == (255, 0, 0)


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


def test_a_header_claiming_billions_of_pixels_is_refused_in_words():
    """Pillow refuses a 60000×60000 header itself (a decompression bomb: over 2 × 89,478,485 pixels, its
    default limit); the message is ours, in words."""
    from app_server import png

    bomb = png(60000, 60000, pixels=False)
    with pytest.raises(ValueError, match=r"^the uploaded data has far too many pixels to open safely \(over 179 megapixels\)"):
        load_image(bomb)


def test_a_refusal_names_the_file_or_says_it_was_uploaded_data(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"^'notes.txt' is not an image file"):
        load_image(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"^the uploaded data is not an image file"):
        load_image(b"not an image")
    for empty in ((0, 5), (5, 0)):  # no width, or no height: no pixels (not a division by zero)
        with pytest.raises(ValueError, match="no pixels"):
            load_image(Image.new("RGB", empty))


@pytest.mark.parametrize("error, message", [
    (OSError("Premature end of JPEG file"), "The image file is truncated or corrupt"),
    (OSError(), "The image could not be decoded: OSError$"),  # no text of its own: its type names it
])
def test_a_decoder_error_is_reported_in_words(error, message):
    img = Image.new("RGB", (4, 4))

    def fail():
        raise error

    img.load = fail
    with pytest.raises(ValueError, match=message):
        load_image(img)


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


# ---------------------------------------------------------------------- exact values, worked out by hand

def test_16bit_and_float_images_are_stretched_to_their_own_range():
    """(v - min) / (max - min) * 255, truncated: 1000..5000 -> 0, 63, 127, 255; a flat image is black."""
    arr16 = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    orders = [Image.frombytes(m, (2, 2), arr16.astype(d).tobytes()) for m, d in (("I;16B", ">u2"), ("I;16L", "<u2"), ("I;16N", "=u2"))]
    for img in (Image.fromarray(arr16), Image.fromarray(arr16.astype(np.int32)), Image.fromarray(arr16.astype(np.float32)),
                *orders):  # 16-bit TIFFs come big- or little-endian
        assert img.mode in ("I;16", "I", "F", "I;16B", "I;16L", "I;16N")
        got = np.asarray(load_image(img))
        np.testing.assert_array_equal(got[..., 0], [[0, 63], [127, 255]], err_msg=img.mode)
        assert (got == got[..., :1]).all()  # grey
    nan = Image.fromarray(np.array([[np.nan, 1.0], [3.0, 5.0]], dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(load_image(nan))[..., 0], [[0, 51], [153, 255]])  # NaN counts as 0
    for flat in (np.full((2, 2), 7, np.uint16), np.full((2, 2), 7, np.float32)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # black without computing 0 / 0
            assert not np.asarray(load_image(Image.fromarray(flat))).any()


def test_arrays_in_every_layout_and_range():
    """HWC, CHW, one channel; floats in [0, 1] scaled by 255, other numbers clipped to 0..255."""
    unit = np.array([[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_array_equal(np.asarray(load_image(unit))[..., 1], [[0, 127], [255, 63]])
    np.testing.assert_array_equal(np.asarray(load_image(np.array([[-1.0, 0.5], [2.0, 300.0]])))[..., 2], [[0, 0], [2, 255]])
    np.testing.assert_array_equal(np.asarray(load_image(np.array([[0.0, 1.5]])))[..., 0], [[0, 1]])  # not [0, 1]: clipped
    np.testing.assert_array_equal(np.asarray(load_image(np.array([[7, 300], [0, 1]], dtype=np.int32)))[..., 0],
                                  [[7, 255], [0, 1]])
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(np.asarray(load_image(rgb.transpose(2, 0, 1))), rgb)  # CHW -> HWC
    rgba = np.concatenate([rgb, np.full((4, 5, 1), 255, np.uint8)], axis=2)  # opaque
    np.testing.assert_array_equal(np.asarray(load_image(rgba.transpose(2, 0, 1))), rgb)  # 4×H×W -> H×W×4
    np.testing.assert_array_equal(np.asarray(load_image(rgb[..., :1])), np.repeat(rgb[..., :1], 3, axis=2))  # H×W×1
    np.testing.assert_array_equal(np.asarray(load_image(rgb[..., 0][None])), np.repeat(rgb[..., :1], 3, axis=2))  # 1×H×W
    three = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)  # already H×W×3 with H = 3: left as it is
    np.testing.assert_array_equal(np.asarray(load_image(three)), three)
    for bad in (np.zeros((5, 5, 2), np.uint8), np.zeros((2, 2, 2, 3), np.uint8), np.zeros(5, np.uint8)):
        with pytest.raises(ValueError, match="Expected an H×W"):
            load_image(bad)
    with pytest.raises(ValueError, match="empty"):
        load_image(np.zeros((0, 4, 3), np.uint8))


def test_transparency_is_paper_white():
    """Half-transparent red (alpha 128) over white: green and blue 255 * (1 - 128 / 255) = 127; LA, palette
    and palette + alpha too."""
    red = np.zeros((2, 2, 4), np.uint8)
    red[...] = (255, 0, 0, 128)
    np.testing.assert_allclose(np.asarray(load_image(red))[0, 0], [255, 127, 127], atol=1)
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), "LA")  # transparent black, opaque black
    np.testing.assert_array_equal(np.asarray(load_image(la))[0], [[255] * 3, [0] * 3])
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0  # palette entry 0 is see-through
    np.testing.assert_array_equal(np.asarray(load_image(pal))[0], [[255, 255, 255], [0, 0, 255]])
    pa = Image.new("PA", (2, 1))
    pa.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pa.putpixel((0, 0), (1, 0))  # red, fully transparent
    pa.putpixel((1, 0), (1, 255))  # red, opaque
    np.testing.assert_array_equal(np.asarray(load_image(pa))[0], [[255, 255, 255], [255, 0, 0]])


@pytest.mark.parametrize("mode, key, pixels", [("L", 100, [[100, 30]]), ("RGB", (10, 20, 30), [[(10, 20, 30), (10, 20, 31)]])])
def test_a_png_colour_key_is_paper_white_too(mode, key, pixels):
    """A grey or RGB PNG whose tRNS chunk makes one value see-through: that value is white, a value
    one step off keeps its colour (grey 30 -> (30, 30, 30))."""
    buf = io.BytesIO()
    Image.fromarray(np.array(pixels, np.uint8), mode).save(buf, "PNG", transparency=key)
    assert "transparency" in Image.open(io.BytesIO(buf.getvalue())).info
    kept = [30, 30, 30] if mode == "L" else [10, 20, 31]
    np.testing.assert_array_equal(np.asarray(load_image(buf.getvalue()))[0], [[255, 255, 255], kept])


@pytest.mark.parametrize("orientation, upright", [
    (2, lambda a: a[:, ::-1]), (3, lambda a: a[::-1, ::-1]), (4, lambda a: a[::-1]),
    (5, lambda a: a.transpose(1, 0, 2)), (6, lambda a: np.rot90(a, -1)), (7, lambda a: a[::-1, ::-1].transpose(1, 0, 2)),
    (8, lambda a: np.rot90(a, 1)), (1, lambda a: a)])
def test_each_exif_orientation_is_turned_upright(orientation, upright):
    """The EXIF orientation tag as the standard defines it, written with numpy flips and rotations."""
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", exif=exif.tobytes())
    img = load_image(buf.getvalue())
    np.testing.assert_array_equal(np.asarray(img), upright(arr))
    if orientation != 1:
        assert img.info == {}  # upright now: the tag must not turn it again


def test_size_limits_are_inclusive_and_per_call():
    assert load_image(np.zeros((10, 10, 3), np.uint8), max_pixels=100).size == (10, 10)
    with pytest.raises(ValueError, match="the limit is 0 MP"):
        load_image(np.zeros((10, 11, 3), np.uint8), max_pixels=100)
    assert load_image(np.zeros((1, 20, 3), np.uint8)).size == (20, 1)  # 20:1 is still allowed
    with pytest.raises(ValueError, match="aspect ratio"):
        load_image(np.zeros((21, 1, 3), np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "P", "1"])
def test_draft_size_reduces_by_the_largest_whole_factor_with_box_means(mode):
    """Short side 11 for an input size of 4: factor 11 // 4 = 2, each output pixel the mean of a 2×2 box."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (11, 12, 3), dtype=np.uint8)
    img = {"RGB": Image.fromarray(rgb), "P": Image.fromarray(rgb).quantize(16), "1": Image.fromarray(rgb).convert("1")}[mode]
    full = np.asarray(load_image(img), dtype=float)
    small = np.asarray(load_image(img, draft_size=4), dtype=float)
    assert small.shape == (6, 6, 3)  # the last, half box is kept
    assert np.abs(small[:5] - full[:10].reshape(5, 2, 6, 2, 3).mean((1, 3))).max() <= 1.5
    assert load_image(img, draft_size=6).size == img.size  # 11 // 6 = 1: nothing to reduce


def test_a_pil_image_comes_back_as_a_copy():
    """Callers draw on what they get: the caller's own picture must not change."""
    src = Image.new("RGB", (4, 4), (1, 2, 3))
    out = load_image(src)
    out.putpixel((0, 0), (9, 9, 9))
    assert out is not src and src.getpixel((0, 0)) == (1, 2, 3)
    assert np.asarray(load_image(bytearray(png_bytes(src)))).shape == (4, 4, 3)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_draft_is_libjpegs_own_scaled_decode(odd_images, mode):
    """With a draft size a JPEG is decoded at libjpeg's DCT scale (Pillow's ``draft``), not decoded in
    full and shrunk afterwards: the pixels are exactly Pillow's."""
    path = odd_images["big.jpg"]
    if mode == "L":
        Image.open(path).convert("L").save(path.with_name("big_gray.jpg"), quality=90)
        path = path.with_name("big_gray.jpg")
    want = Image.open(path)
    want.draft(mode, (320, 320))
    want = np.asarray(want.convert("RGB"))
    got = np.asarray(load_image(path, draft_size=320))
    assert want.shape == (384, 512, 3)
    np.testing.assert_array_equal(got, want)


def test_a_truncated_or_damaged_file_is_called_that(bad_files):
    """Cut short (libjpeg: "truncated") or damaged inside (zlib: "broken data stream"): one message."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    damaged = bytearray(buf.getvalue())
    damaged[len(damaged) // 2:len(damaged) // 2 + 20] = bytes(20)
    for source in (bad_files["truncated.jpg"], bytes(damaged)):
        with pytest.raises(ValueError, match=r"truncated or corrupt \(it may not have finished uploading\)"):
            load_image(source)
