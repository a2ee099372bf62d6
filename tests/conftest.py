"""Shared fixtures: real paintings from the shared WikiArt-11 folder and generated bad files."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("ARTATTR_DATA", ROOT.parent / "shared" / "data" / "wikiart11"))


def _rows() -> list[dict]:
    with (DATA_DIR / "metadata.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under ``./run mutate``, quickest tests first: pytest stops at a mutant's first failing test, so
    most mutants then cost a fraction of a second instead of their slowest test (timings: mutmut's own)."""
    stats = Path("mutmut-stats.json")
    if "MUTANT_UNDER_TEST" in os.environ and stats.is_file():
        seconds = json.loads(stats.read_text())["duration_by_test"]
        items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "metadata.csv").is_file():
        pytest.skip(f"WikiArt-11 data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def val_rows(data_dir) -> list[dict]:
    """Validation rows (never trained on), one per style first so small samples cover every class."""
    rows = [r for r in _rows() if r["split"] == "val"]
    first = {}
    for r in rows:
        first.setdefault(r["style"], r)
    return list(first.values()) + [r for r in rows if r not in first.values()]


@pytest.fixture(scope="session")
def painting_paths(data_dir, val_rows) -> list[Path]:
    """Eleven real val paintings, one per style."""
    return [data_dir / r["path"] for r in val_rows[:11]]


@pytest.fixture(scope="session")
def painting(painting_paths) -> Path:
    return painting_paths[0]


@pytest.fixture(scope="session")
def predictor():
    """The embedded default model, loaded once per test session."""
    import artattr

    return artattr.load("default")


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, painting) -> dict[str, Path]:
    """Files users really upload by mistake; each must give a clear ValueError, never a crash."""
    d = tmp_path_factory.mktemp("bad")
    jpeg = painting.read_bytes()
    files = {
        "empty.jpg": b"",
        "notes.txt": b"this is not an image\n" * 20,
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "fake.png": b"\x89PNG\r\n\x1a\n" + os.urandom(200),
    }
    out = {}
    for name, data in files.items():
        (d / name).write_bytes(data)
        out[name] = d / name
    return out


@pytest.fixture(scope="session")
def odd_images(tmp_path_factory, painting) -> dict[str, Path]:
    """Valid but unusual images (modes, bit depths, animation, EXIF rotation) that must all work."""
    d = tmp_path_factory.mktemp("odd")
    base = Image.open(painting).convert("RGB")
    out = {}

    def save(name, img, **kw):
        out[name] = d / name
        img.save(out[name], **kw)

    save("cmyk.jpg", base.convert("CMYK"))
    save("gray.png", base.convert("L"))
    save("rgba.png", base.convert("RGBA"))
    save("palette.gif", base.convert("P"))
    arr16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    save("gray16.png", Image.fromarray(arr16))
    frames = [base, base.rotate(90), base.rotate(180)]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW on display
    save("rotated.jpg", base.resize((base.width * 2, base.height)), exif=exif.tobytes())
    save("big.jpg", base.resize((1024, 768)), quality=90)
    return out


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()
