"""Heatmaps (artattr.explain): they point at the evidence a model really uses, and leave no trace.

Faithfulness is tested on hand-built models whose evidence is known: they respond only to red
in the top-left quadrant, and every image also holds a red decoy in the bottom-right one.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import artattr
from artattr import ModelConfig, Predictor
from artattr.explain import METHODS, attribute, explain, overlay
from artattr.explain.evaluate import auc, centre_map, curve, main, random_map, randomise, sanity_check
from artattr.models import MultiTaskModel
from artattr.models.vit import tokens_to_grid

LABELS = {"style": ["red", "plain"], "genre": ["a", "b", "c"]}
SIZE = 64  # model input
UPLOAD = (96, 64)  # W, H: not square, so the map must be resized back, not just returned
EVIDENCE = (10, 8, 30, 24)  # box (left, top, right, bottom) in upload pixels, top-left quadrant
DECOY = (62, 40, 84, 56)  # the same red in the bottom-right quadrant, which the model ignores


def _redness(conv: nn.Conv2d) -> nn.Conv2d:
    """Channel 0 fires on red (R above G and B, inputs normalised to [-1, 1]); channel 1 on brightness."""
    with torch.no_grad():
        conv.weight.zero_()
        k = conv.weight.shape[-1] ** 2
        conv.weight[0, 0] = 1.0 / k
        conv.weight[0, 1:] = -0.5 / k
        conv.weight[1] = 1.0 / (3 * k)
        conv.bias.copy_(torch.tensor([-0.5, 0.0]))
    return conv


class TopLeft(nn.Module):
    """Zero everything outside the top-left quadrant of a (B, C, H, W) map or a token sequence."""

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(f)
        if f.dim() == 4:
            mask[..., : f.shape[-2] // 2, : f.shape[-1] // 2] = 1
        else:
            grid = tokens_to_grid(mask)
            grid[..., : grid.shape[-2] // 2, : grid.shape[-1] // 2] = 1
        return f * mask


class ConvEvidence(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _redness(nn.Conv2d(3, 2, 3, padding=1))
        self.relu = nn.ReLU(inplace=True)
        self.gate = TopLeft()

    def forward(self, x):
        return self.gate(self.relu(self.conv(x))).mean((2, 3))


class TokenEvidence(nn.Module):
    """ViT-shaped: 8-px patch tokens plus a CLS token, like the transformers backbone."""

    def __init__(self):
        super().__init__()
        self.patches = _redness(nn.Conv2d(3, 2, 8, stride=8))
        self.gate = TopLeft()

    def forward(self, x):
        patches = torch.relu(self.patches(x)).flatten(2).transpose(1, 2)
        tokens = torch.cat([torch.zeros_like(patches[:, :1]), patches], dim=1)
        return self.gate(tokens)[:, 1:].mean(1)


def _evidence_predictor(kind: str, resize: str = "squash") -> Predictor:
    backbone, reshape = (ConvEvidence(), None) if kind == "conv" else (TokenEvidence(), tokens_to_grid)
    model = MultiTaskModel(backbone, 2, {t: len(v) for t, v in LABELS.items()}, cam_layer="backbone.gate",
                           cam_reshape=reshape, embed_dim=0, sphere=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    with torch.no_grad():  # "red" logit grows with the red evidence, "plain" stays put
        model.heads["style"].weight.copy_(torch.tensor([[50.0, 0.0], [0.0, 0.0]]))
        model.heads["style"].bias.copy_(torch.tensor([0.0, 1.0]))
    config = ModelConfig(architecture=f"evidence_{kind}", tasks=LABELS, input_size=SIZE, resize=resize,
                         mean=[0.5] * 3, std=[0.5] * 3)
    return Predictor(model, config)


def _red_patches(size=UPLOAD, boxes=(EVIDENCE, DECOY), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.clip(128 + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    for left, top, right, bottom in boxes:
        arr[top:bottom, left:right] = (230, 20, 20)
    return Image.fromarray(arr)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module", params=["conv", "tokens"])
def evidence(request) -> Predictor:
    return _evidence_predictor(request.param)


@pytest.mark.parametrize("method", list(METHODS))
def test_peak_lies_on_the_evidence_not_the_decoy(evidence, method):
    image = _red_patches()
    assert evidence.predict(image)["style"][0][0] == "red"
    heat = explain(evidence, image, method, target="red")
    assert heat.shape == (UPLOAD[1], UPLOAD[0]) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert row < UPLOAD[1] // 2 and col < UPLOAD[0] // 2, f"{method} peaks at {(row, col)}, outside the top-left quadrant"
    left, top, right, bottom = DECOY
    assert heat[top:bottom, left:right].max() < 0.5 * heat.max(), f"{method} lights up the decoy the model ignores"


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("kind", ["conv", "tokens"])
def test_model_leaves_as_it_came(kind, method):
    predictor = _evidence_predictor(kind)
    model = predictor.model
    model.heads["genre"].weight.requires_grad_(False)  # a mixed state must come back exactly
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    state = copy.deepcopy(model.state_dict())
    image = _red_patches()
    before = predictor.run(image).probs["style"]

    explain(predictor, image, method)
    assert _hooks(model) == 0
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters()), "gradients leaked into the weights"
    assert not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    np.testing.assert_array_equal(predictor.run(image).probs["style"], before)

    def boom(*_):
        raise RuntimeError("interrupted")

    handle = model.heads["style"].register_forward_hook(boom)  # fail half-way through the method
    with pytest.raises(RuntimeError, match="interrupted"):
        explain(predictor, image, method, target=0)
    handle.remove()
    assert _hooks(model) == 0
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_inplace_relus_do_not_change_attributions():
    """timm's EfficientNet-Lite uses ReLU6(inplace=True); Captum must see the same maps without it."""
    torch.manual_seed(0)
    model = artattr.create_model("efficientnet_lite0", tasks={"style": 3}).eval()
    assert any(getattr(m, "inplace", False) for m in model.modules())
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    x = torch.randn(1, 3, 64, 64)
    for method in METHODS:
        np.testing.assert_allclose(attribute(model, x, "style", 1, method), attribute(plain, x, "style", 1, method), atol=1e-6)


@pytest.fixture(scope="module")
def registered() -> dict[str, Predictor]:
    """Every registered architecture, randomly initialised, at a tiny input size."""
    tasks = {"style": ["a", "b", "c"], "genre": ["x", "y"]}
    out = {}
    for name in artattr.list_models():
        torch.manual_seed(0)
        model = artattr.create_model(name, tasks=tasks)
        out[name] = Predictor(model, ModelConfig(architecture=name, tasks=tasks, input_size=SIZE, mean=model.mean, std=model.std))
    return out


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", artattr.list_models())
def test_every_registered_model_and_method(registered, name, method, painting):
    predictor = registered[name]
    upload = Image.open(painting).convert("RGB").resize((90, 70))
    options = {"steps": 8} if method == "ig" else {}
    heat = explain(predictor, upload, method, task="genre", target="y", **options)
    assert heat.shape == (70, 90) and np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert _hooks(predictor.model) == 0


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_occlusion_finds_the_evidence_in_either_precision(evidence, precision):
    heat = explain(evidence, _red_patches(), "occlusion", target="red", precision=precision)
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert row < UPLOAD[1] // 2 and col < UPLOAD[0] // 2


def test_bfloat16_occlusion_keeps_the_float32_map(predictor, painting):
    """"auto" precision runs occlusion in bfloat16 where the CPU does it natively: same map, half the time."""
    from scipy.stats import spearmanr

    maps = [explain(predictor, painting, "occlusion", precision=p) for p in ("float32", "bfloat16")]
    assert spearmanr(maps[0].ravel(), maps[1].ravel())[0] > 0.9


@pytest.mark.parametrize("name", ["gray.png", "rgba.png", "cmyk.jpg", "gray16.png", "palette.gif", "animated.gif", "rotated.jpg", "big.jpg"])
def test_odd_uploads_get_maps_at_their_own_size(odd_images, name):
    predictor = _evidence_predictor("conv")
    heat = explain(predictor, odd_images[name], "occlusion", target="red")
    w, h = artattr.load_image(odd_images[name]).size
    assert heat.shape == (h, w) and np.isfinite(heat).all()


def test_center_crop_models_map_only_the_square_they_saw():
    predictor = _evidence_predictor("conv", resize="center_crop")
    # Evidence in the crop's top-left quadrant, a decoy in its bottom-right, red the crop cuts off.
    image = _red_patches((128, 64), boxes=[(40, 8, 56, 24), (72, 40, 90, 56), (4, 8, 24, 24)])
    heat = explain(predictor, image, "gradcam", target="red")
    assert heat.shape == (64, 128)
    assert heat[:, :32].max() == 0 and heat[:, 96:].max() == 0  # outside the central 64×64
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert 32 <= col < 64 and row < 32  # the crop's top-left quadrant


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "lime"}, "Unknown explanation method 'lime'"),
    ({"task": "artist"}, "Unknown task 'artist'"),
    ({"target": "blue"}, "Unknown style label 'blue'"),
    ({"target": 7}, r"index in \[0, 2\)"),
    ({"method": "occlusion", "baseline": "grey"}, "Unknown baseline"),
    ({"method": "occlusion", "precision": "fp16"}, "Unknown precision"),
])
def test_bad_requests_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        explain(_evidence_predictor("conv"), _red_patches(), **kwargs)


def test_bad_upload_is_a_value_error(bad_files):
    with pytest.raises(ValueError, match="truncated|corrupt"):
        explain(_evidence_predictor("conv"), bad_files["truncated.jpg"])


def test_deletion_ranks_a_faithful_map_above_blind_ones():
    predictor = _evidence_predictor("conv")
    x = predictor.to_tensor(_red_patches())[None]
    model = predictor.model
    score = lambda b: torch.softmax(model(b)["style"], -1)[:, 0]  # noqa: E731
    aucs = {}
    for name, method in {"gradcam": "gradcam", "random": random_map, "centre": centre_map}.items():
        heat = attribute(model, x, "style", 0, method)
        aucs[name] = auc(curve(score, x, heat)), auc(curve(score, x, heat, insertion=True))
    assert aucs["gradcam"][0] < min(aucs["random"][0], aucs["centre"][0])
    assert aucs["gradcam"][1] > max(aucs["random"][1], aucs["centre"][1])


def test_sanity_check_fails_a_map_that_ignores_the_model():
    predictor = _evidence_predictor("conv")
    inputs = [predictor.to_tensor(_red_patches(seed=s))[None] for s in range(3)]
    randomised = randomise(predictor.model, "all")

    def constant(target, x, progress=None):
        return torch.ones(x.shape[-2:])

    assert not sanity_check(constant, predictor.model, randomised, inputs, "style").passed
    assert not sanity_check(centre_map, predictor.model, randomised, inputs, "style").passed
    assert sanity_check("gradcam", predictor.model, randomised, inputs, "style").passed


def test_overlay_blends_the_colormap_over_the_upload():
    image = _red_patches()
    heat = np.zeros((8, 12), dtype=np.float32)  # smaller than the upload: resized to fit
    heat[:4, :6] = 1.0
    assert overlay(image, heat, alpha=0.0).tobytes() == image.tobytes()
    full = np.asarray(overlay(image, heat, alpha=1.0, cmap="viridis"))
    assert full.shape == (UPLOAD[1], UPLOAD[0], 3)
    np.testing.assert_allclose(full[2, 2], [253, 231, 37], atol=2)  # viridis(1.0), yellow
    np.testing.assert_allclose(full[-2, -2], [68, 1, 84], atol=2)  # viridis(0.0), purple
    half = np.asarray(overlay(image, heat))
    assert half.shape == full.shape and not np.array_equal(half, np.asarray(image))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, alpha=1.5)
    with pytest.raises(ValueError, match="colormap"):
        overlay(image, heat, cmap="no-such-map")


def test_default_checkpoint_every_method_with_progress(predictor, painting):
    upload = Image.open(painting).convert("RGB").resize((200, 150))
    hooks = _hooks(predictor.model)  # the model's own: the artwork head's tap
    for method in METHODS:
        reports = []
        heat = explain(predictor, upload, method, progress=lambda f, desc: reports.append(f))
        assert heat.shape == (150, 200) and np.isfinite(heat).all() and 0 <= heat.min() <= heat.max() <= 1
        assert heat.max() - heat.min() > 0.5, f"{method}: a flat map explains nothing"
        if method != "gradcam":  # the slow ones report progress, ending at 1
            assert reports and reports == sorted(reports) and reports[-1] == 1.0
    assert overlay(upload, heat).size == upload.size
    assert _hooks(predictor.model) == hooks


def test_evaluate_cli_reports_methods_and_baselines(data_dir, capsys):
    report = main(["default", "--data", str(data_dir), "-n", "2", "--methods", "gradcam", "--steps", "4", "--sanity-images", "1"])
    out = capsys.readouterr().out
    for name in ("gradcam", "random", "centre"):
        assert name in report["methods"] and name in report["sanity"] and name in out
        assert 0 <= report["methods"][name]["deletion_auc"] <= 1


def test_import_stays_light():
    code = "import sys, artattr.explain; assert 'captum' not in sys.modules and 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent, timeout=120)
