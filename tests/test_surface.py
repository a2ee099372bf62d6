"""The learned painting localiser (artattr.surface): its mask-to-quad geometry on hand-drawn masks, and the
fitted net on real clean scans and real everyday photos it never saw (on a hand-drawn brick wall:
test_locate.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from artattr.surface import SIDE, mask_quad, surface_mask, surface_quad

PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "photos500"


@pytest.fixture(scope="module")
def val_paths(data_dir, val_rows) -> list[Path]:
    return [data_dir / r["path"] for r in val_rows[:100]]


@pytest.fixture(scope="module")
def photo_paths() -> list[Path]:
    paths = sorted((PHOTOS / "images").glob("*.jpg"))[::5]
    if not paths:
        pytest.skip(f"photos500 not found at {PHOTOS}")
    return paths


def _mask(polygon: list[tuple[float, float]]) -> np.ndarray:
    mask = Image.new("F", (SIDE, SIDE), 0.0)
    ImageDraw.Draw(mask).polygon(polygon, fill=1.0)
    return np.asarray(mask)


def test_a_drawn_rectangle_comes_back_as_its_corners():
    """Pixels 30..89 x 20..99 filled: the region spans 30..90 and 20..100 (pixel edges), as fractions of 128."""
    mask = np.zeros((SIDE, SIDE), np.float32)
    mask[20:100, 30:90] = 0.9
    quad = mask_quad(mask)
    assert quad is not None
    np.testing.assert_allclose(quad * SIDE, [[30, 20], [90, 20], [90, 100], [30, 100]], atol=0.01)


def test_a_tilted_quad_keeps_its_corners_in_order():
    corners = [(40, 30), (100, 36), (96, 110), (34, 104)]  # TL, TR, BR, BL, a few degrees off square
    quad = mask_quad(_mask(corners))
    assert quad is not None
    assert np.abs(quad * SIDE - np.array(corners)).max() <= 1.5


@pytest.mark.parametrize("polygon, why", [
    ([(60, 60), (66, 60), (66, 66), (60, 66)], "a label: 0.2 % of the image"),
    ([(0, 0), (127, 0), (127, 127), (0, 127)], "the whole image: a clean scan"),
    ([(20, 20), (100, 20), (100, 50), (50, 50), (50, 100), (20, 100)], "an L: fills 55 % of its box"),
])
def test_no_quad_from_a_region_that_is_no_painting(polygon, why):
    assert mask_quad(_mask(polygon)) is None, why


def test_an_empty_mask_has_no_quad():
    assert mask_quad(np.zeros((SIDE, SIDE), np.float32)) is None


@pytest.mark.parametrize("mode, size", [("RGB", (300, 170)), ("L", (90, 400)), ("RGBA", (128, 128))])
def test_the_net_maps_any_image_to_a_mask_of_the_input_side(mode, size):
    mask = surface_mask(Image.new(mode, size, 120))
    assert mask.shape == (SIDE, SIDE) and 0 <= mask.min() and mask.max() <= 1


def test_the_net_finds_no_painting_inside_clean_scans_or_everyday_photos(val_paths, photo_paths):
    """A clean scan is all painting and an everyday photo none: of 100 val scans and 100 photos500 images,
    at most 5 of each give a quad."""
    scans = sum(surface_quad(Image.open(p).convert("RGB")) is not None for p in val_paths[:100])
    photos = sum(surface_quad(Image.open(p).convert("RGB")) is not None for p in photo_paths[:100])
    assert scans <= 5 and photos <= 5, (scans, photos)


def test_train_surface_writes_a_net_opencv_runs(data_dir, photo_paths, tmp_path, monkeypatch):
    """``python -m train surface`` end to end on a few examples: the ONNX file it writes is what
    artattr.surface loads, and says how it was fitted."""
    import json

    import onnx

    import artattr.surface as surface
    from train.fit_surface import main

    out = tmp_path / "surface.onnx"
    assert main(["--examples", "320", "--held-out", "24", "--epochs", "1", "--batch", "16", "--out", str(out)]) == 0
    fitted = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["fitted_on"])
    assert fitted["examples"] == 320 and 0 <= fitted["held_out"]["wall_mask_iou"] <= 1
    monkeypatch.setattr(surface, "WEIGHTS_FILE", out)
    surface._fitted.cache_clear()
    try:
        assert surface.surface_mask(Image.open(photo_paths[0])).shape == (SIDE, SIDE)
    finally:
        surface._fitted.cache_clear()
