"""The app in a real headless Chromium: upload a painting, read the answers, see the heatmap and
the 3-D map render, upload a corrupt file and read the error. A screenshot goes to artifacts/."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_server import ROOT, checkpoint_with_gallery, running_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000  # the first heatmap imports captum on a shared 2-core runner

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed at /usr/bin/chromium "
                       "(`apt-get install chromium`; ./run test installs it)"),
]


def _loose(label: str) -> re.Pattern:
    """Match a raw label ('Abstract_Expressionism') against its display form ('Abstract Expressionism')."""
    return re.compile(r"[\s_-]+".join(map(re.escape, re.split(r"[\s_-]+", label))), re.IGNORECASE)


def _drawn(element) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom, px) of what is drawn in ``element``: its pixels that
    are not white background (the sphere's grey wireframe counts), from a screenshot; None if blank."""
    edge = 4  # the panel's border may fall inside the element's box
    pixels = np.asarray(Image.open(io.BytesIO(element.screenshot())).convert("RGB")).min(axis=2)[edge:-edge, edge:-edge] < 235
    cols, rows = np.flatnonzero(pixels.any(axis=0)) + edge, np.flatnonzero(pixels.any(axis=1)) + edge
    return (cols[0], rows[0], cols[-1], rows[-1]) if len(cols) else None


def test_upload_answers_heatmap_explorer_and_error(tmp_path, predictor, painting, bad_files, val_rows, data_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    answers = predictor.predict(painting, 1)
    top_style = "Not sure" if "style" in answers.flags["uncertain"] else answers["style"][0][0]  # as the app words it
    # The explorer needs a gallery: a second model (the default's weights plus a small gallery) is
    # picked in the UI, which also drives the model picker in a real browser.
    gallery_model = str(checkpoint_with_gallery(tmp_path / "with-gallery", val_rows[:40], data_dir))

    with running_app(tmp_path / "app.log", ARTATTR_MODEL=gallery_model) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            expect = sync_api.expect
            page.goto(url)
            upload = page.locator("#upload input[type=file]")

            upload.set_input_files(str(painting))
            expect(page.locator("#label-style [data-testid=label-output-value]")).to_have_text(_loose(top_style), timeout=TIMEOUT_MS)

            heatmap = page.locator("#heatmap img")
            expect(heatmap).to_be_visible(timeout=TIMEOUT_MS)
            page.wait_for_function("img => img.complete && img.naturalWidth >= 160", arg=heatmap.element_handle())

            page.locator("#model input").click()
            page.get_by_role("option", name=gallery_model).click()
            page.get_by_role("tab", name="3D explorer").click()
            canvas = page.locator("#explorer canvas").first
            expect(canvas).to_be_visible(timeout=TIMEOUT_MS)
            assert canvas.bounding_box()["height"] > 100, "the 3-D plot rendered with no height"

            expect(page.locator("#similar img").first).to_be_visible(timeout=TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "app-browser.png"), full_page=True)

            upload.set_input_files(str(bad_files["truncated.jpg"]))
            expect(page.get_by_text(re.compile("truncated or corrupt")).first).to_be_visible(timeout=TIMEOUT_MS)
            # the app's title for it heads the toast (gradio's own heading is "Error"), the message below it
            expect(page.locator("[data-testid=toast-body] .toast-title")).to_have_text(["Unusable image"])
            expect(page.locator("[data-testid=toast-text]")).to_have_text([re.compile(r"^\s*The image file is truncated")])
            expect(page.locator("#label-style [data-testid=label-output-value]")).to_have_count(0)
            page.screenshot(path=str(artifacts / "app-browser-error.png"), full_page=True)
        finally:
            browser.close()


def test_a_photo_is_called_not_a_painting(tmp_path):
    """An everyday photo (photos500, a tiger cat) is answered in words first and gets no bars."""
    sync_api = pytest.importorskip("playwright.sync_api")
    photo = ROOT.parent / "shared" / "data" / "photos500" / "images" / "n02123159.jpg"
    if not photo.is_file():
        pytest.skip(f"photos500 not found at {photo.parent.parent}")
    with running_app(tmp_path / "app.log") as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            page.locator("#upload input[type=file]").set_input_files(str(photo))
            note = page.locator("#note")
            sync_api.expect(note).to_contain_text("This does not look like a painting", timeout=TIMEOUT_MS)
            assert note.inner_text().strip().startswith("This does not look like a painting")
            sync_api.expect(page.locator("#label-style [data-testid=label-output-value]")).to_have_text("Not a painting")
            page.screenshot(path=str(ROOT / "artifacts" / "app-browser-photo.png"), full_page=True)
        finally:
            browser.close()


def test_names_about_explorer_and_phone_layout(tmp_path, predictor, val_rows, data_dir):
    """What an art historian reads: an accented artist name, the "About this model" panel, an explorer
    whose drawn sphere spans >= 70 % of its panel's width with the legend below it, full similar-works
    captions, and a 390 px phone page that never scrolls sideways.
    Screenshots of both widths go to artifacts/."""
    sync_api = pytest.importorskip("playwright.sync_api")
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    def named(path) -> bool:  # the app names the artist only when it is neither unsure nor "unknown"
        answers = predictor.predict(path, 1)
        return (answers["artist"][0][0] == "joaqu-n-sorolla" and "artist" not in answers.flags["uncertain"]
                and not answers.flags["unknown_artist"])

    sorolla = next(data_dir / r["path"] for r in val_rows if r["artist"] == "joaqu-n-sorolla" and named(data_dir / r["path"]))
    gallery_model = str(checkpoint_with_gallery(tmp_path / "with-gallery", val_rows[:40], data_dir))
    expect = sync_api.expect

    with running_app(tmp_path / "app.log", ARTATTR_MODEL=gallery_model) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for name, (width, height) in {"desktop": (1440, 900), "phone": (390, 844)}.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(url)
                page.get_by_text("About this model").click()
                about = page.locator("#about")
                expect(about).to_contain_text("108 artists", timeout=TIMEOUT_MS)
                expect(about).to_contain_text("11 movements", timeout=TIMEOUT_MS)
                expect(about).to_contain_text("held back from training", timeout=TIMEOUT_MS)
                expect(about).to_contain_text("15th–20th century", timeout=TIMEOUT_MS)
                # the model first: the default has a gallery too, and its captions re-rendering after a switch
                # would race the caption checks below
                page.locator("#model input").click()
                page.get_by_role("option", name=gallery_model).click()
                page.locator("#upload input[type=file]").set_input_files(str(sorolla))
                expect(page.locator("#label-artist [data-testid=label-output-value]")).to_have_text("Joaquín Sorolla", timeout=TIMEOUT_MS)
                expect(page.locator("#similar .caption-label").first).to_contain_text("similarity", timeout=TIMEOUT_MS)
                caption = page.locator("#similar .caption-label").first.bounding_box()
                assert caption["height"] > 20, "similar-works captions are cut to one line"

                page.get_by_role("tab", name="3D explorer").click()
                scene = page.locator("#explorer .gl-container > div").first  # plotly's 3-D scene
                expect(scene).to_be_visible(timeout=TIMEOUT_MS)
                panel = page.locator("#explorer").bounding_box()
                for _ in range(100):  # WebGL draws after the element appears: wait for the picture
                    if (drawn := _drawn(scene)) is not None:
                        break
                assert drawn is not None, "the 3-D scene stayed blank"
                box = scene.bounding_box()
                assert drawn[2] - drawn[0] >= 0.7 * panel["width"], (drawn, panel)
                legend = page.locator("#explorer .legend").first.bounding_box()
                assert legend["y"] >= box["y"] + drawn[3] - 2, "the legend covers the sphere"
                scene.hover()  # plotly shows its toolbar while the pointer is over the plot
                toolbar = page.locator("#explorer .modebar").first
                expect(toolbar).to_be_visible(timeout=TIMEOUT_MS)
                bar = toolbar.bounding_box()
                assert bar["y"] + bar["height"] <= box["y"] + drawn[1] + 2, "plotly's toolbar covers the sphere"
                if name == "phone":
                    assert page.evaluate("() => document.documentElement.scrollWidth") <= width, "horizontal overflow"
                page.screenshot(path=str(artifacts / f"app-{name}.png"), full_page=True)
                if name == "desktop":  # a captioned example is an upload too (the Seurat is not a Sorolla)
                    expect(page.locator("#examples .caption-label").nth(1)).to_contain_text("Georges Seurat")
                    page.locator("#examples .thumbnail-item").nth(1).click()
                    expect(page.locator("#label-artist [data-testid=label-output-value]")).not_to_have_text(
                        "Joaquín Sorolla", timeout=TIMEOUT_MS)
                page.close()
        finally:
            browser.close()
