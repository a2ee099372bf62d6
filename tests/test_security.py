"""What ArtAttr promises a public deployment. Each test is one promise, tried the way an attacker would.

1. The web API opens only files Gradio received as uploads (or the bundled examples); anything else
   is refused unread, with one message whether or not the path exists.
2. Decoding is safe from many threads at once (no process-wide warning filters), refuses more than
   100 megapixels before decoding, and reduces big pictures once, right after decoding, so only a
   small copy travels to the model process and stays in a session.
3. Every model-process call has a deadline: a hung (stopped) process costs its callers a message,
   and the next request is answered by a new process.
4. Checkpoints are untrusted: config.json is checked field by field, weights are safetensors (no
   pickle), non-finite weights or outputs are refused, Hub revisions cannot name local paths, and
   ``train fit --resume`` unpickles nothing but tensors and plain values.
5. Checkpoints and trainer states are replaced atomically: killing the writer at any moment leaves
   the last good one loadable, and the next save cleans up after it.
6. Bad library input is a ValueError with a message, never a TypeError.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import random
import re
import shutil
import signal
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artattr
from artattr.checkpoint import load_checkpoint, save_checkpoint
from artattr.config import CheckpointError
from artattr.hub import DEFAULT_DIR
from artattr.images import load_image
from artattr.worker import ModelWorker

from app_server import as_upload, png, running_app


@pytest.fixture(scope="module")
def png_99mp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "99mp.png"
    path.write_bytes(png(9950, 9950))
    return path


# ---------------------------------------------------------------------------------------------------
# 1 + 2 (app): server files, simultaneous huge uploads — through gradio_client against a real server.


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("app") / "app.log") as url:
        yield url


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_api_opens_only_uploaded_files(app_url, painting, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False, analytics_enabled=False)
    server_file = tmp_path / "private.jpg"  # a readable image on the server that nobody uploaded
    shutil.copy(painting, server_file)
    from gradio.utils import get_upload_folder

    link = Path(get_upload_folder()) / "test-security-link" / "x.jpg"  # inside the upload folder, pointing out
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(server_file)
    messages, served = set(), 0
    # A dict without "meta" is not uploaded by gradio_client: the server gets the path as sent.
    for path in [server_file, "/etc/passwd", "/nonexistent/painting.jpg", link,
                 f"{tmp_path}/../{tmp_path.name}/private.jpg", str(DEFAULT_DIR / "README.md")]:
        try:
            client.predict({"path": str(path)}, "default", "style", api_name="/predict")
            served += 1
        except AppError as err:
            messages.add(str(err))
    shutil.rmtree(link.parent)
    assert served == 0
    assert len(messages) == 1 and "Only images uploaded to this app" in messages.pop()
    # The same picture, uploaded, is answered.
    labels = client.predict(handle_file(str(server_file)), "default", "style", api_name="/predict")[1]
    assert labels["label"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_simultaneous_99_megapixel_uploads_all_get_an_answer(app_url, png_99mp, painting):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    def one(path):
        client = Client(app_url, verbose=False, analytics_enabled=False)
        try:
            return client.predict(handle_file(str(path)), "default", "style", api_name="/predict")[1]["label"]
        except AppError as err:  # a clear message is an answer too; Gradio's generic one is not
            assert "exception" not in str(err).lower(), str(err)
            return str(err)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, [png_99mp] * 4))
    assert len(answers) == 4 and all(answers)
    answers = artattr.load("default").predict(painting, 1)
    top = "Not sure" if "style" in answers.flags["uncertain"] else answers["style"][0][0]  # the app's headline
    assert re.sub(r"[^a-z]", "", one(painting).lower()) == re.sub(r"[^a-z]", "", top.lower())


# ---------------------------------------------------------------------------------------------------
# 2 (library): thread-safe, per-call limits; reduced once, early.


def test_decoding_is_safe_from_many_threads(painting):
    """Four threads decode 96-megapixel PNGs (above Pillow's own bomb-warning threshold) and real
    paintings at once; every call succeeds and the process's warning filters are untouched."""
    huge = png(9800, 9800, colour=False)
    small = painting.read_bytes()
    filters = list(warnings.filters)
    errors = []

    def work(i):
        for source in ([huge, small, small] if i % 2 else [small, huge, small]):
            try:
                with warnings.catch_warnings(record=True):  # only to keep pytest's log quiet
                    img = load_image(source, draft_size=160)
                assert img.mode == "RGB" and min(img.size) >= 160
            except Exception as err:  # noqa: BLE001 (the promise is: nothing at all goes wrong)
                errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert warnings.filters == filters


def test_limits_are_checked_per_call_before_decoding():
    with pytest.raises(ValueError, match="101 megapixels; the limit is 100 MP"):
        load_image(png(10_050, 10_050, pixels=False))
    with pytest.raises(ValueError, match="megapixels; the limit is 1 MP"):
        load_image(png(1100, 1000), max_pixels=1_000_000)


def test_only_photo_formats_are_opened(tmp_path, painting):
    for fmt in ("PPM", "TGA", "PCX"):
        path = tmp_path / f"x.{fmt.lower()}"
        Image.open(painting).save(path, format=fmt)
        with pytest.raises(ValueError, match="not an image file ArtAttr can open"):
            load_image(path)


def test_big_images_are_reduced_right_after_decoding(png_99mp):
    assert 160 <= min(load_image(png_99mp, draft_size=160).size) < 2 * 160  # 9950 px / 62: 161 px, not 300 MB
    source = png(4000, 3000)
    small = np.asarray(load_image(source, draft_size=160), dtype=float)  # reduced by 3000 // 160 = 18
    full = np.asarray(load_image(source), dtype=float)[:18 * 166, :18 * 222]
    np.testing.assert_allclose(small[:166, :222], full.reshape(166, 18, 222, 18, 3).mean((1, 3)), atol=1)


def test_sessions_keep_small_copies_and_few_heatmaps(png_99mp, painting):
    """In-process handlers: a 99 MP upload sends a small picture to the model process, the session
    keeps a display-size copy, and at most HEATMAPS_KEPT heatmaps (the most recent)."""
    import app

    app.build_app()
    sent = []
    call = app.models.call

    def spy(name, model_dir, *args, **kw):
        sent.extend(a for a in args if isinstance(a, Image.Image))
        return call(name, model_dir, *args, **kw)

    upload = as_upload(png_99mp)
    try:
        app.models.call = spy
        with warnings.catch_warnings(record=True):
            state = app.predict({"path": str(upload)}, "default", "style")[0]
        assert max(state.image.size) <= app.DISPLAY_SIZE
        decoded = max(app.DECODE_SIZE, 160)  # the model's input size, or more to find the painting in a photo
        assert min(sent[0].size) < 2 * decoded and all(max(img.size) <= app.DISPLAY_SIZE for img in sent[1:])
        labels = app.get_model("default").labels["style"]
        for label in labels[:7]:
            app.explain_heatmap(state, "gradcam", "style", label, 0.5, progress=lambda *a, **k: None)
        kept = [labels.index(label) for label in labels[3:7]]
        assert list(state.heatmaps) == [("gradcam", "style", i) for i in kept]
    finally:
        app.models.call = call
        app.models.close()
        shutil.rmtree(upload.parent, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# 3: deadlines. A stopped process (SIGSTOP) neither answers nor dies.


def test_a_stopped_model_process_costs_a_message_and_is_replaced(painting):
    """Three requests wait on a stopped process: a prediction, and two heatmaps whose display-size
    pictures do not fit in the socket's buffer (so sending them blocks too)."""
    deadline = 4.0
    worker = ModelWorker(preload=[DEFAULT_DIR], deadlines={"run": deadline, "explain": deadline})
    image = load_image(painting, draft_size=160)
    display = image.resize((448, 448))
    try:
        want = worker.call("run", DEFAULT_DIR, image).probs["style"]
        stopped = worker.pid()
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.monotonic()
        calls = [("run", image), ("explain", display, "gradcam", "style", None), ("explain", display, "occlusion", "style", None)]
        with ThreadPoolExecutor(3) as pool:
            outcomes = list(pool.map(lambda call: _outcome(worker, call, t0), calls))
        messages = time.monotonic() - t0
        got = worker.call("run", DEFAULT_DIR, image).probs["style"]
        recovery = time.monotonic() - t0
        print(f"SIGSTOP: 3 waiting calls got a message after {messages:.1f} s, a new process answered after {recovery:.1f} s")
        assert all(isinstance(o, tuple) for o in outcomes), outcomes
        assert all(elapsed < deadline + 10 for _, elapsed in outcomes)
        assert any("did not answer within 4 s" in message for message, _ in outcomes)
        assert all("try again" in message for message, _ in outcomes)
        assert worker.pid() != stopped
        np.testing.assert_allclose(got, want, atol=1e-5)
    finally:
        worker.close()


def _outcome(worker: ModelWorker, call: tuple, t0: float):
    try:
        return worker.call(call[0], DEFAULT_DIR, *call[1:])
    except RuntimeError as err:
        return str(err), time.monotonic() - t0


# ---------------------------------------------------------------------------------------------------
# 4: untrusted checkpoints and ids.


class _Payload:
    """What a hostile pickle does: run code (here: create a file) when it is loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _config(**changes) -> str:
    return json.dumps({**json.loads((DEFAULT_DIR / "config.json").read_text()), **changes})


def _model_args(**changes) -> dict:
    return {**json.loads((DEFAULT_DIR / "config.json").read_text())["model_args"], **changes}


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def _weights(fill: float):
    def damage(folder: Path):
        from safetensors.torch import load_file, save_file

        state = load_file(str(DEFAULT_DIR / "model.safetensors"))
        for key in ("heads.style.bias", "heads.style.weight"):
            state[key] = torch.full(state[key].shape, fill)  # float32: 3e38 is finite there
        save_file(state, str(folder / "model.safetensors"))
    return damage


def _pickle_only(folder: Path):
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(folder / "PWNED")))


def _text(text: str):
    return lambda folder: (folder / "config.json").write_text(text)


#: (name, how the checkpoint is damaged, what the message must say). Each is a file a stranger could
#: publish; each must give one clear error, no traceback, no output.
BAD_CHECKPOINTS = [
    ("architecture not a string", _text(_config(architecture=42)), "'architecture' must be a model name"),
    ("architecture path-like", _text(_config(architecture="../../evil")), "'architecture' must be a model name"),
    ("tasks a list", _text(_config(tasks=["style"])), "'tasks' must be a map"),
    ("labels a string", _text(_config(tasks={"style": "Baroque"})), "'tasks' must be a map"),
    ("no labels", _text(_config(tasks={"style": []})), "'tasks' must be a map"),
    ("duplicate labels", _text(_config(tasks={"style": ["a", "a"]})), "distinct label names"),
    ("a million labels", _text(_config(tasks={"style": [str(i) for i in range(1_000_000)]})), "larger than 5 MB"),
    ("20 000 labels", _text(_config(tasks={"style": [str(i) for i in range(20_000)]})), "'tasks' must be a map"),
    ("task named like an output", _text(_config(tasks={"embedding": ["a", "b"]})), "not embedding or sphere"),
    ("input_size a string", _text(_config(input_size="160")), "'input_size' must be an integer"),
    ("input_size zero", _text(_config(input_size=0)), "'input_size' must be an integer from 16 to 1024"),
    ("input_size huge", _text(_config(input_size=100_000)), "'input_size' must be an integer from 16 to 1024"),
    ("input_size boolean", _text(_config(input_size=True)), "'input_size' must be an integer"),
    ("resize unknown", _text(_config(resize="stretch")), "'resize' must be 'squash' or 'center_crop'"),
    ("mean of two", _text(_config(mean=[0.5, 0.5])), "'mean' must be a list of 3"),
    ("std zero", _text(_config(std=[0, 0, 0])), "'std' must be a list of 3 numbers from 0.001"),
    ("std NaN", _text(_config(std=[float("nan")] * 3)), "'std' must be"),
    ("temperature zero", _text(_config(temperature={"style": 0})), "'temperature' must be"),
    ("temperature NaN", _text(_config(temperature={"style": float("nan")})), "'temperature' must be"),
    ("temperature negative", _text(_config(temperature={"style": -1.0})), "'temperature' must be"),
    ("temperature a string", _text(_config(temperature="hot")), "'temperature' must be"),
    ("embed_dim huge", _text(_config(model_args=_model_args(embed_dim=10**9))), "embed_dim up to 4096"),
    ("embed_dim a string", _text(_config(model_args=_model_args(embed_dim="big"))), "'model_args' must be"),
    ("model argument out of range", _text(_config(model_args=_model_args(dropout=1e12))), "'model_args' must be"),
    ("unknown model argument", _text(_config(model_args=_model_args(evil=1))), "cannot be built from these settings"),
    ("arcface on no task", _text(_config(model_args=_model_args(arcface_task="nope"))), "arcface_task one of the tasks"),
    ("unknown_label a number", _text(_config(unknown_label={"artist": 5})), "'unknown_label' must be"),
    ("format_version a string", _text(_config(format_version="one")), "'format_version' must be an integer"),
    ("nested 50 deep", _text(_config(metrics=_nested(50))), "nested more than 6 levels"),
    ("nested 100 000 deep", _text("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    ("NaN weights", _weights(float("nan")), "contains NaN or infinite values"),
    ("overflowing weights", _weights(3e38), "outputs are not finite"),
    ("pickle-only weights", _pickle_only, "model.safetensors: not found"),
]


def test_every_config_field_is_checked():
    """A field added to ModelConfig needs its row in SCHEMA (what it must be, and the check)."""
    from dataclasses import fields

    from artattr.config import SCHEMA, ModelConfig

    assert {f.name for f in fields(ModelConfig)} == set(SCHEMA)


@pytest.mark.parametrize("name, damage, message", BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_bad_checkpoints_give_one_clear_message(name, damage, message, tmp_path, painting, capsys):
    from artattr.cli import main

    folder = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_DIR, folder, ignore=shutil.ignore_patterns("gallery", "*.png"))
    damage(folder)
    with pytest.raises(CheckpointError) as err:
        artattr.load(folder)
    assert message in str(err.value) and str(folder) in str(err.value)
    capsys.readouterr()
    assert main(["predict", str(painting), "--model", str(folder), "--json"]) != 0
    out, errors = capsys.readouterr()
    assert out == "" and errors.startswith("error: ") and message in errors and "Traceback" not in errors
    assert not (folder / "PWNED").exists()


@pytest.mark.parametrize("model_id", ["hf-hub:a/b@../../../../x", "hf-hub:a/b@refs/../../x", "hf-hub:../../etc",
                                      "hf-hub:a/b@/etc/passwd", "hf-hub:a/b@" + "x" * 500])
def test_hub_ids_cannot_name_local_paths(model_id, monkeypatch, capsys, painting):
    from artattr.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="not a Hub model id|revision must be a branch, tag or commit"):
        artattr.load(model_id)
    assert main(["predict", str(painting), "--model", model_id]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_resume_unpickles_no_code(tmp_path):
    from train.fit import ConfigError, load_state

    state = tmp_path / "trainer_state.pt"
    torch.save({"epoch": 0, "rng": _Payload(tmp_path / "PWNED")}, state)
    with pytest.raises(ConfigError, match="not a trainer state this version can read safely"):
        load_state(state)
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------------------------------------
# 5: atomic replacement, tried by killing a real writer process.


def _marked_model(version: int):
    model = artattr.create_model("onelayer_cnn", tasks={"style": ["a", "b"]})
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(version / 1000)
    return model


def _writer(out: Path, first: int, started) -> None:
    """Forever: a checkpoint and a trainer state per version, as ``train fit`` writes them each epoch."""
    from train.fit import _atomic_save

    torch.set_num_threads(1)
    for version in range(first, first + 10_000):
        model = _marked_model(version)
        config = artattr.ModelConfig("onelayer_cnn", {"style": ["a", "b"]}, input_size=64, metrics={"version": version})
        started.set()
        save_checkpoint(model, config, out / "last")
        _atomic_save({"epoch": version, "model": model.state_dict()}, out / "trainer_state.pt")


def _check_last_good(out: Path, seen: tuple[int, int]) -> tuple[int, int]:
    """The checkpoint and the state load, each is one whole version (weights match config), neither is
    older than before, and the state (written after its checkpoint) is not ahead of it."""
    from train.fit import load_state

    model, config = load_checkpoint(out / "last")
    version = config.metrics["version"]
    assert all(torch.all(p == version / 1000) for p in model.parameters())
    state = load_state(out / "trainer_state.pt")
    epoch = state["epoch"]
    assert all(torch.all(t == epoch / 1000) for t in state["model"].values())
    assert version >= seen[0] and seen[1] <= epoch <= version
    return version, epoch


def test_killing_the_writer_at_any_moment_keeps_the_last_good_checkpoint(tmp_path):
    from train.fit import _atomic_save

    out = tmp_path / "run"
    save_checkpoint(_marked_model(0), artattr.ModelConfig("onelayer_cnn", {"style": ["a", "b"]}, input_size=64,
                                                          metrics={"version": 0}), out / "last")
    _atomic_save({"epoch": 0, "model": _marked_model(0).state_dict()}, out / "trainer_state.pt")
    context, rng, seen, kills = multiprocessing.get_context("fork"), random.Random(0), (0, 0), 0
    for _ in range(16):
        started = context.Event()
        proc = context.Process(target=_writer, args=(out, seen[0] + 1, started))
        proc.start()
        started.wait(60)
        time.sleep(rng.uniform(0.0, 0.3))  # the moment of the kill: random, anywhere in a save
        proc.kill()
        proc.join()
        kills += proc.exitcode == -signal.SIGKILL
        seen = _check_last_good(out, seen)
    version = seen[0]
    print(f"{kills} kills; the last good checkpoint loaded every time (up to version {version})")
    assert kills >= 14 and version > 0
    save_checkpoint(_marked_model(version + 1), artattr.ModelConfig("onelayer_cnn", {"style": ["a", "b"]}, input_size=64,
                                                                    metrics={"version": version + 1}), out / "last")
    _atomic_save({"epoch": version + 1, "model": _marked_model(version + 1).state_dict()}, out / "trainer_state.pt")
    assert _check_last_good(out, seen) == (version + 1, version + 1)
    assert sorted(p.name for p in out.iterdir()) == sorted(["last", os.readlink(out / "last"), "trainer_state.pt"])
    assert {oct(p.stat().st_mode & 0o777) for p in (out / "last").iterdir()} == {"0o644"}


def test_a_plain_checkpoint_folder_is_swapped_for_a_version_atomically(tmp_path):
    plain = tmp_path / "default"
    shutil.copytree(DEFAULT_DIR, plain)
    model, config = load_checkpoint(plain)
    save_checkpoint(model, config, plain)
    assert plain.is_symlink() and (plain / "gallery").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["default", os.readlink(plain)])
    assert load_checkpoint(plain)[1] == config


# ---------------------------------------------------------------------------------------------------
# 6: library input.


@pytest.mark.parametrize("value", [None, 3, 2.5, object(), ["a.jpg"]])
def test_predict_of_a_non_image_is_a_value_error(predictor, value):
    with pytest.raises(ValueError, match="Expected an image file path, bytes, a PIL image or an array"):
        predictor.predict(value)
