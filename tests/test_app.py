"""The Gradio app through its public API: a real server on loopback, real paintings, real bad files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import artattr
from artattr.config import TASKS

from app_server import ROOT, as_upload, checkpoint_with_gallery, free_port, running_app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def extra_models(tmp_path_factory) -> list[str]:
    """Offered in the picker, all unloadable: a Hub id (HF_HUB_OFFLINE=1 fails it like a dead
    network), a checkpoint folder with a corrupt config.json (found by the UI process) and one with
    truncated weights (found by the model process)."""
    broken = tmp_path_factory.mktemp("broken-checkpoint")
    (broken / "config.json").write_text("{not json")
    truncated = tmp_path_factory.mktemp("truncated-weights")
    shutil.copy(ROOT / "checkpoints" / "default" / "config.json", truncated)
    weights = (ROOT / "checkpoints" / "default" / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    return ["hf-hub:nobody/not-cached", str(broken), str(truncated)]


@pytest.fixture(scope="module")
def gallery_model(tmp_path_factory, val_rows, data_dir) -> str:
    return str(checkpoint_with_gallery(tmp_path_factory.mktemp("models") / "with-gallery", val_rows[:40], data_dir))


@pytest.fixture(scope="module")
def no_gallery_model(tmp_path_factory) -> str:
    dest = tmp_path_factory.mktemp("models") / "no-gallery"
    shutil.copytree(ROOT / "checkpoints" / "default", dest, ignore=shutil.ignore_patterns("gallery"))
    return str(dest)


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, extra_models, gallery_model, no_gallery_model):
    """(url, every module the server imported up to answering: ``-X importtime`` output)."""
    log = tmp_path_factory.mktemp("app") / "app.log"
    models = ",".join([*extra_models, gallery_model, no_gallery_model])
    with running_app(log, python_flags=("-X", "importtime"), ARTATTR_MODEL=models) as url:
        yield url, log.read_text()


@pytest.fixture(scope="module")
def app_url(app_server) -> str:
    return app_server[0]


@pytest.fixture()
def client(app_url) -> Client:
    """A fresh client is a fresh browser session: its own cached upload state."""
    return Client(app_url, verbose=False, analytics_enabled=False)


def _norm(label: str) -> str:
    """Compare names loosely ('Pop Art' == 'Pop  art')."""
    return re.sub(r"[\W_]", "", label.lower())


def _answers(result) -> dict[str, list[tuple[str, float]]]:
    *labels, _note, _classes = result
    return {task: [(_norm(c["label"]), c["confidence"]) for c in label["confidences"]]
            for task, label in zip(("artist", "style", "genre"), labels) if label and label.get("confidences")}


def _expected(predictor, path) -> dict[str, list[tuple[str, float]]]:
    """The library's answers the app shows as bars: not those it flags (shown as words instead)."""
    answers = predictor.predict(path, 5)
    flags = answers.flags
    hidden = set(answers) if flags["not_artwork"] else {*flags["uncertain"], *(["artist"] if flags["unknown_artist"] else [])}
    return {task: [(_norm(predictor.config.name(task, label)), p) for label, p in top]  # the names the app shows
            for task, top in answers.items() if task not in hidden}


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for task in want:
        assert [label for label, _ in got[task]] == [label for label, _ in want[task]], task
        np.testing.assert_allclose([p for _, p in got[task]], [p for _, p in want[task]], atol=1e-4)


def _predict(client: Client, path, model: str = "default", task: str = "style"):
    return client.predict(handle_file(str(path)), model, task, api_name="/predict")


def _huge_png(path: Path, side: int = 10_001) -> Path:
    """A PNG whose header claims side² pixels (> 100 MP): the app must refuse it before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_public_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/predict", "/explain", "/explore", "/similar", "/classes"} <= names


def test_predict_matches_library(client, predictor, painting_paths):
    for path in painting_paths[:3]:
        result = _predict(client, path)
        _assert_same(_answers(result), _expected(predictor, path))
        note, classes = result[-2], result[-1]
        assert note.strip()
        top_style = predictor.predict(path, 1)["style"][0][0]
        assert classes["value"] == top_style, "the heatmap class defaults to the top prediction"
        assert [c[1] for c in classes["choices"]][0] == top_style


def test_uncertain_note_is_honest(client, predictor, painting_paths):
    """The note flags exactly the tasks the library flags: uncertain, or an unknown artist."""
    for path in painting_paths[:4]:
        note = _predict(client, path)[-2]
        flags = predictor.flags(predictor.run(path))
        assert not flags["not_artwork"]
        for task in TASKS:
            flagged = f"**{task}**" in note
            assert flagged == (task in flags["uncertain"] or (task == "artist" and flags["unknown_artist"])), (task, note)


def test_odd_but_valid_images_work(client, predictor, odd_images):
    """CMYK, 16-bit, alpha, palette, animated GIF, EXIF-rotated: the app sees the original bytes."""
    for name, path in odd_images.items():
        _assert_same(_answers(_predict(client, path)), _expected(predictor, path))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_inputs_give_the_loader_message_and_the_app_keeps_working(client, predictor, bad_files, painting, tmp_path):
    files = {**bad_files, "huge.png": _huge_png(tmp_path / "huge.png")}
    for name, path in files.items():
        with pytest.raises(ValueError) as expected:
            predictor.load(path)
        with pytest.raises(AppError) as got:
            _predict(client, path)
        assert str(expected.value) in str(got.value), name
    _assert_same(_answers(_predict(client, painting)), _expected(predictor, painting))


def test_failed_models_fall_back_to_default(client, predictor, painting, extra_models):
    """Unloadable offered models, and ids the picker does not offer, all answer with the default."""
    want = _expected(predictor, painting)
    for model_id in [*extra_models, str(ROOT / "checkpoints" / "default"), "hf-hub:someone/else"]:
        result = _predict(client, painting, model=model_id)
        assert f"Could not load model {model_id!r}" in result[-2] and "default model" in result[-2]
        _assert_same(_answers(result), want)


def test_explain_every_method_from_cached_upload(client, predictor, painting):
    from artattr.explain import METHODS

    _predict(client, painting)
    classes = predictor.labels["style"]
    for method in METHODS:
        path, note = client.predict(method, "style", None, 0.5, api_name="/explain")
        img = Image.open(path)
        assert min(img.size) >= 160 and img.mode == "RGB", method
        assert "style" in note
        assert ("random weights" in note) == (method == "ig")  # the failed sanity check is said where it matters
    # Any class, not only the top one; the note names it.
    other = classes[int(predictor.run(painting).probs["style"].argmin())]
    path, note = client.predict("gradcam", "style", other, 0.8, api_name="/explain")
    assert Image.open(path).size == img.size
    assert _norm(predictor.config.name("style", other)) in _norm(note)


def test_heatmaps_are_drawn_on_a_sharp_copy_of_a_big_jpeg(client, tmp_path):
    """The model decodes a JPEG at its input size; the picture under the heatmap must not be that coarse copy."""
    # Grey 8-px blocks: detail a 256 px decode loses, and nothing JPEG's colour subsampling blurs anyway.
    blocks = np.random.default_rng(0).integers(0, 256, (96, 128), dtype=np.uint8)
    photo = Image.fromarray(blocks).resize((1024, 768), Image.NEAREST).convert("RGB")
    path = tmp_path / "photo.jpg"
    photo.save(path, quality=95)
    _predict(client, path)
    shown, _ = client.predict("gradcam", "style", None, 0.0, api_name="/explain")  # opacity 0: the picture alone
    shown = np.asarray(Image.open(shown).convert("RGB"), dtype=float)
    sharp = photo.copy()
    sharp.thumbnail((448, 448), Image.BILINEAR)
    model_copy = artattr.load_image(path, draft_size=160).resize(sharp.size, Image.BICUBIC)  # what it must not be
    assert shown.shape[:2] == (sharp.height, sharp.width)
    assert np.abs(shown - np.asarray(sharp)).mean() < 0.75 * np.abs(shown - np.asarray(model_copy)).mean()


def test_explain_needs_an_upload(client):
    path, note = client.predict("gradcam", "style", None, 0.5, api_name="/explain")
    assert path is None and "Upload" in note


def test_classes_follow_the_task(client, predictor, painting):
    _predict(client, painting)
    genre = client.predict("default", "genre", api_name="/classes")
    probs = predictor.run(painting).probs["genre"]
    assert [c[1] for c in genre["choices"]] == [predictor.labels["genre"][i] for i in np.argsort(-probs)]


def test_explorer_highlights_the_upload_in_both_views(client, app_url, gallery_model, painting):
    for view in ("sphere", "umap"):
        plot, note = Client(app_url, verbose=False, analytics_enabled=False).predict(
            gallery_model, view, "style", api_name="/explore")
        assert plot["type"] == "plotly" and "your painting" not in plot["plot"] and "Upload" in note
    _predict(client, painting, model=gallery_model)
    for view in ("sphere", "umap"):
        for color_by in TASKS:
            plot, note = client.predict(gallery_model, view, color_by, api_name="/explore")
            fig = json.loads(plot["plot"])
            assert fig["layout"]["height"] > 0, "gr.Plot collapses without an explicit height"
            assert [t["name"] for t in fig["data"]][-1] == "your painting", (view, color_by)


def test_similar_works_are_ranked_and_captioned(client, gallery_model, painting):
    _predict(client, painting, model=gallery_model)
    items = client.predict(gallery_model, api_name="/similar")
    assert len(items) == 8
    sims = [float(re.search(r"similarity (-?[\d.]+)", item["caption"]).group(1)) for item in items]
    assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)
    assert all(Image.open(item["image"]).size == (256, 256) for item in items)  # 64 px thumbnails, enlarged 4x


def test_a_model_without_gallery_says_so(client, no_gallery_model, painting):
    result = _predict(client, painting, model=no_gallery_model)
    assert "Could not load" not in result[-2]
    plot, note = client.predict(no_gallery_model, "sphere", "style", api_name="/explore")
    assert plot is None and "No gallery in this model" in note
    assert client.predict(no_gallery_model, api_name="/similar") == []


def test_eight_parallel_clients_get_their_own_answers(app_url, predictor, painting_paths):
    paths = painting_paths[:8]

    def one(path):
        return _answers(_predict(Client(app_url, verbose=False, analytics_enabled=False), path))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, paths))
    for path, got in zip(paths, results):
        _assert_same(got, _expected(predictor, path))


def test_ui_process_never_imports_torch(app_server):
    """The server process imports gradio while its model process imports torch (cold start); it must
    import neither torch nor what only heatmaps or gallery building need (``-X importtime`` is not
    passed on to the model process, so the log is the UI process's alone)."""
    _url, startup_log = app_server
    imported = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+([\w.]+)$", startup_log, re.M)}
    assert {"gradio", "artattr"} <= imported, "the -X importtime log is missing"
    assert not imported & {"torch", "timm", "captum", "umap", "numba"}


def test_method_names_cover_every_explanation_method():
    import app
    from artattr.explain import METHODS

    assert list(app.METHOD_NAMES) == list(METHODS)


def test_a_dead_model_process_costs_one_message_not_the_app(painting):
    """In-process handlers: a model process killed mid-heatmap is a UI message, and the next request
    gets answers from a new one."""
    import gradio as gr

    import app

    app.build_app()
    upload = {"path": str(as_upload(painting))}
    try:
        state = app.predict(upload, "default", "style")[0]
        pid = app.models.pid()

        def kill_midway(fraction, desc=None):
            if fraction > 0.2:
                os.kill(pid, signal.SIGKILL)

        with pytest.raises(gr.Error, match="model process stopped"):
            app.explain_heatmap(state, "occlusion", "style", None, 0.5, progress=kill_midway)
        again = app.predict(upload, "default", "style")[0]
        np.testing.assert_allclose(again.output.probs["style"], state.output.probs["style"], atol=1e-5)
        assert app.models.pid() != pid
    finally:
        app.models.close()


def test_ctrl_c_reaches_only_the_ui_and_the_model_process_follows():
    """Ctrl-C in a terminal signals the whole foreground group. The model process has its own session,
    so it never sees the signal (no KeyboardInterrupt traceback from it, whatever it was doing), and
    it exits once the UI process is gone and its socket closes."""
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(free_port()),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    output = []
    for line in proc.stdout:  # the server says when it is up
        output.append(line)
        if "Running on local URL" in line:
            break
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1, children  # the model process, started before gradio was imported
    os.killpg(proc.pid, signal.SIGINT)
    output += proc.stdout.readlines()
    proc.wait(timeout=60)
    assert "artattr/worker.py" not in "".join(output), "".join(output)
    status = Path(f"/proc/{children[0]}/status")
    deadline = time.monotonic() + 60
    while status.exists() and "(zombie)" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # polling for the exit, not timing it
    assert not status.exists() or "(zombie)" in status.read_text()
