"""The model process behind the app: same answers as in-process, clear errors, survives its own death."""

from __future__ import annotations

import os
import re
import signal
import threading

import numpy as np
import pytest

import artattr
from artattr.hub import DEFAULT_DIR
from artattr.worker import ModelWorker


@pytest.fixture(scope="module")
def worker():
    worker = ModelWorker(preload=[DEFAULT_DIR])
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def image(painting, predictor):
    return predictor.load(painting)


def test_answers_match_the_library(worker, predictor, painting_paths):
    for path in painting_paths[:4]:
        image = predictor.load(path)
        got, want = worker.call("run", DEFAULT_DIR, image), predictor.run(image)
        for task in want.probs:
            np.testing.assert_allclose(got.probs[task], want.probs[task], atol=1e-5)
        np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-5)


def test_heatmaps_report_progress_and_match_the_library(worker, predictor, image):
    seen = []
    got = worker.call("explain", DEFAULT_DIR, image, "occlusion", "style", None,
                      progress=lambda fraction, desc: seen.append(fraction))
    from artattr.explain import explain

    want = explain(predictor, image, "occlusion", "style")
    assert got.shape == (image.height, image.width)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99
    assert len(seen) > 1 and seen == sorted(seen)


def test_bad_requests_come_back_as_value_errors(worker, image, tmp_path):
    with pytest.raises(ValueError, match="Unknown explanation method 'nope'"):
        worker.call("explain", DEFAULT_DIR, image, "nope", "style", None)
    (tmp_path / "config.json").write_text('{"architecture": "efficientnet_lite0", "tasks": {"style": ["a"]}}')
    with pytest.raises(ValueError, match="model.safetensors: not found"):
        worker.call("load", tmp_path)
    assert worker.call("run", DEFAULT_DIR, image).probs["style"].shape == (len(artattr.read_config(DEFAULT_DIR).tasks["style"]),)


def test_concurrent_calls_get_their_own_answers(worker, predictor, painting_paths):
    images = [predictor.load(p) for p in painting_paths[:8]]
    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, worker.call("run", DEFAULT_DIR, images[i])))
               for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, image in enumerate(images):
        np.testing.assert_allclose(results[i].probs["style"], predictor.run(image).probs["style"], atol=1e-5)


def test_a_dead_model_process_fails_its_calls_clearly_and_is_replaced(worker, image):
    worker.call("load", DEFAULT_DIR)
    pid = worker.pid()

    def kill_midway(fraction, desc):
        if fraction > 0.2:
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(RuntimeError, match=r"model process stopped \(exit code -9\).*try again"):
        worker.call("explain", DEFAULT_DIR, image, "occlusion", "style", None, progress=kill_midway)
    assert worker.call("run", DEFAULT_DIR, image).probs["style"].sum() == pytest.approx(1.0, abs=1e-4)
    assert worker.pid() != pid


def test_model_process_imports_captum_only_for_heatmaps(monkeypatch, capfd, image):
    """The model process inherits our stderr, so ``PYTHONPROFILEIMPORTTIME`` shows what it imported."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    worker = ModelWorker(preload=[DEFAULT_DIR])
    capfd.readouterr()

    def imported() -> set[str]:
        log = capfd.readouterr().err
        return {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s+([\w.]+)$", log, re.M)}

    worker.call("run", DEFAULT_DIR, image)
    first = imported()
    assert {"torch", "timm", "artattr"} <= first
    assert not first & {"gradio", "captum", "umap", "numba"}
    worker.call("explain", DEFAULT_DIR, image, "gradcam", "style", None)
    assert "captum" in imported()
    worker.close()
