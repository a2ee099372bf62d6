"""Registry, checkpoint format, model-id resolver, Predictor and CLI of the `artattr` library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artattr
from artattr.checkpoint import CheckpointError, ModelConfig, load_checkpoint, read_config, save_checkpoint
from artattr.hub import parse_hub_id, resolve

ROOT = Path(__file__).resolve().parent.parent
TASKS = {"style": ["Baroque", "Cubism", "Impressionism"], "genre": ["landscape", "portrait"], "artist": ["a", "b", "other"]}


def _lite0_imagenet():
    import timm

    from artattr.models.efficientnet import load_lite_imagenet

    net = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    load_lite_imagenet(net, 0)
    return net.eval()


def test_packaged_imagenet_weights_see_a_cat():
    """The positional weight mapping is right only if a real cat photo comes out as a cat."""
    from skimage import data

    net = _lite0_imagenet()
    img = Image.fromarray(data.chelsea()).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
    with torch.no_grad():
        top5 = net(x[None]).softmax(-1)[0].topk(5).indices.tolist()
    assert top5[0] in range(281, 286), f"ImageNet classes 281-285 are domestic cats, got {top5}"


def test_registry_pretrained_trunk_matches_imagenet_model():
    model = artattr.create_model("efficientnet_lite0", tasks=TASKS, pretrained=True).eval()
    net = _lite0_imagenet()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ref = net.forward_head(net.forward_features(x), pre_logits=True)
        assert torch.allclose(model.forward_features(x), ref, atol=1e-5)


def test_registry_lists_and_rejects():
    names = artattr.list_models()
    assert {"efficientnet_lite0", "efficientnet_lite2", "resnet50", "vit_base_patch16_224"} <= set(names)
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        artattr.create_model("nope", tasks=TASKS)


def test_outputs_per_task_and_unit_embeddings():
    model = artattr.create_model("efficientnet_lite0", tasks=TASKS).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert {t: out[t].shape for t in TASKS} == {t: (2, len(v)) for t, v in TASKS.items()}
    for key, dim in (("embedding", 128), ("sphere", 3)):
        assert out[key].shape == (2, dim)
        assert torch.allclose(out[key].norm(dim=-1), torch.ones(2), atol=1e-5)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = artattr.create_model("efficientnet_lite0", tasks=TASKS, arcface_task="style").eval()
    config = ModelConfig(architecture="efficientnet_lite0", tasks=TASKS, input_size=64, mean=[0.5] * 3, std=[0.5] * 3,
                         model_args={"arcface_task": "style"}, unknown_label={"artist": "other"},
                         metrics={"style": {"top1": 0.5, "n": 10}})
    return save_checkpoint(model, config, tmp_path / "ckpt", extra_files={"notes.txt": __file__}), model


def test_checkpoint_round_trip_is_exact(tiny_checkpoint):
    folder, model = tiny_checkpoint
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md", "notes.txt"}
    loaded, config = load_checkpoint(folder)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert config.tasks == TASKS and config.unknown_label == {"artist": "other"}
    card = (folder / "README.md").read_text()
    assert "| style |" in card and "limitations" in card.lower()


def test_resave_keeps_extra_files_and_half_precision(tiny_checkpoint):
    from safetensors.torch import load_file

    folder, model = tiny_checkpoint
    save_checkpoint(model, read_config(folder), folder, half=True)
    assert (folder / "notes.txt").is_file()
    stored = load_file(str(folder / "model.safetensors"))  # the dtypes in the file, before our loader casts
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    loaded, _ = load_checkpoint(folder)
    assert next(loaded.parameters()).dtype == torch.float32


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]), "model.safetensors"),
    (lambda f: (f / "model.safetensors").write_bytes(b"not safetensors at all"), "model.safetensors"),
    (lambda f: (f / "model.safetensors").unlink(), "model.safetensors: not found"),
    (lambda f: (f / "config.json").write_text("{broken"), "config.json: not valid JSON"),
    (lambda f: (f / "config.json").write_text('{"model_type": "bert"}'), "missing required key"),
    (lambda f: (f / "config.json").write_text(json.dumps({**json.loads((f / "config.json").read_text()), "architecture": "nope"})), "Unknown model"),
    (lambda f: (f / "config.json").write_text(json.dumps({**json.loads((f / "config.json").read_text()), "tasks": {**TASKS, "style": ["x"]}})), "shape"),
    (lambda f: (f / "config.json").write_text(json.dumps({**json.loads((f / "config.json").read_text()), "format_version": 99})), "newer"),
])
def test_damaged_checkpoints_name_the_file(tiny_checkpoint, damage, message):
    folder, _ = tiny_checkpoint
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        artattr.load(str(folder))


def test_resolver():
    assert resolve("default") == ROOT / "checkpoints" / "default"
    assert parse_hub_id("hf-hub:org/name@v1.0") == ("org/name", "v1.0")
    assert parse_hub_id("hf-hub:org/name") == ("org/name", None)
    for bad in ("hf-hub:noslash", "hf-hub:a/b/c", "hf-hub:/x", "hf-hub:a b/c"):
        with pytest.raises(ValueError, match="not a Hub model id"):
            resolve(bad)
    with pytest.raises(ValueError, match="Unknown model"):
        resolve("/definitely/not/here")


def test_hub_offline_gives_clear_error(tmp_path, monkeypatch):
    """Offline and not cached: a message saying so, not a traceback from deep in the client."""
    code = ("import artattr\n"
            "try:\n    artattr.load('hf-hub:artattr/does-not-exist')\n"
            "except ValueError as e:\n    print('ERR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert "ERR hf-hub:artattr/does-not-exist" in out.stdout and "offline" in out.stdout, out.stdout + out.stderr


def test_predictor_on_real_paintings(predictor, painting_paths):
    result = predictor.predict(painting_paths[0], top_k=3)
    assert set(result) == set(predictor.config.tasks)
    for task, ranked in result.items():
        probs = [p for _, p in ranked]
        assert len(ranked) == min(3, len(predictor.labels[task]))
        assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
        assert all(label in predictor.labels[task] for label, _ in ranked)
    full = predictor.run(painting_paths[0])
    for p in full.probs.values():
        assert abs(p.sum() - 1) < 1e-4
    assert abs(np.linalg.norm(full.embedding) - 1) < 1e-3 and abs(np.linalg.norm(full.sphere) - 1) < 1e-3


def test_predictor_input_kinds_agree(predictor, painting):
    ref = predictor.run(painting).probs["style"]
    pil = Image.open(painting)
    for value in (str(painting), painting.read_bytes(), pil, np.asarray(pil)):
        assert np.allclose(predictor.run(value).probs["style"], ref, atol=1e-5)


def test_batch_equals_single(predictor, painting_paths):
    batch = predictor.run_batch(painting_paths[:5], batch_size=2)
    for path, out in zip(painting_paths[:5], batch):
        assert np.allclose(out.probs["style"], predictor.run(path).probs["style"], atol=1e-4)
    assert len(predictor.predict_batch(painting_paths[:3], top_k=1)) == 3


def test_batch_names_the_bad_image(predictor, painting, bad_files):
    with pytest.raises(ValueError, match="image 1 .*empty"):
        predictor.run_batch([painting, bad_files["empty.jpg"]])


def test_odd_uploads_predict(predictor, odd_images, painting):
    """Odd encodings of the same painting get the painting's answer (gray, rotated and 256-colour GIFs
    change the picture: a valid distribution)."""
    ref = predictor.run(painting).probs["style"]
    for name, path in odd_images.items():
        probs = predictor.run(path).probs["style"]
        assert abs(probs.sum() - 1) < 1e-4 and probs.min() >= 0, name
        if name == "rgba.png":  # opaque: the very same pixels
            np.testing.assert_allclose(probs, ref, atol=1e-5)
        if name == "cmyk.jpg":  # re-encoded: the same top answer
            assert probs.argmax() == ref.argmax(), name
        if name == "big.jpg":  # resampled 1024 x 768 and back: among its top two (here a near tie of two styles)
            assert ref.argmax() in np.argsort(probs)[-2:], name


def test_cli_predict_json_and_errors(painting, bad_files):
    out = subprocess.run([sys.executable, "-m", "artattr", "predict", str(painting), str(bad_files["notes.txt"]), "--json", "--top-k", "2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 1  # one of the two images was bad
    record = json.loads(out.stdout.strip().splitlines()[0])
    assert len(record["predictions"]["style"]) == 2
    assert "notes.txt: skipped:" in out.stderr and "Traceback" not in out.stderr
    bad_model = subprocess.run([sys.executable, "-m", "artattr", "predict", str(painting), "--model", "/no/such/dir"],
                               capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad_model.returncode == 2 and "Unknown model" in bad_model.stderr


def test_installed_command_works_from_any_directory(painting, tmp_path):
    """`pip install -e .` (as ./run and .ci/run do) gives an `artattr` command that runs outside the repo
    and ends with the CLI's exit code (it leaves through exit_now, skipping the interpreter's finalisation)."""
    command = Path(sys.executable).with_name("artattr")
    if not command.exists():
        pytest.skip("the project is not pip-installed in this venv (./run and .ci/run install it)")
    out = subprocess.run([str(command), "predict", str(painting), str(tmp_path / "missing.jpg"), "--json", "--top-k", "1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 1, out.stderr  # the missing file was skipped
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(painting)] and len(records[0]["predictions"]["style"]) == 1
    assert out.stderr.rstrip().endswith("start-up included") and "1 of 2 images done, 1 skipped" in out.stderr


@pytest.mark.parametrize("code, heavy", [
    # what the app's UI process uses: configs, images, outputs, overlays, the explorer, the worker client
    ("import artattr, artattr.embed, artattr.hub, artattr.overlay, artattr.worker; artattr.read_config(artattr.hub.DEFAULT_DIR)",
     ("torch", "timm", "gradio", "captum", "umap", "numba")),
    # what the model process and the CLI use
    ("import artattr; artattr.load('default')", ("gradio", "captum", "umap", "numba")),
])
def test_import_is_light(code, heavy):
    code += f"; import sys; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
